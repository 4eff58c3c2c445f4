"""The network seam to partners: failures, timeouts, redirects, caps and decoding, end to end."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import Gateway, GatewayFactory, contract
from partners import FakePartner

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.upstream import HttpUpstream, UpstreamFailure, UpstreamRequest

ASSESS = "/acme/v1/assess"
NOTES = "/acme/v1/notes"  # a route without a response plan: answers pass through unchanged
BODY = {"applicant": {"user_id": "u-1", "name": "Wang"}, "loan_amount": 5000}
SMALL_ANSWERS = {"limits": {"max_response_bytes": 1000}}
FAST = {"timeout_s": 0.3}
MARKER = b"partner-private-marker"

Script = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ScriptedPartner(FakePartner):
    """A fake partner that can also misbehave: `script` answers instead of the recorded reply.

    A script that must hang waits for `release`, which `close()` sets, so no test waits on it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.script: Script | None = None
        self.release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.script is None:
            return await super()._handle(request)
        return await self.script(request)

    async def close(self) -> None:
        self.release.set()
        await super().close()


@pytest.fixture
async def partner() -> AsyncIterator[FakePartner]:
    fake = await ScriptedPartner().start()
    yield fake
    await fake.close()


def scripted(gw: Gateway) -> ScriptedPartner:
    assert isinstance(gw.partner, ScriptedPartner)
    return gw.partner


async def share(gw: Gateway, path: str = ASSESS) -> tuple[int, dict[str, str], bytes]:
    purpose = "service_delivery" if path == NOTES else "credit_assessment"
    body: dict[str, Any] = {"note": "n"} if path == NOTES else BODY
    response = await gw.share("POST", path, json=body, purpose=purpose)
    return response.status, dict(response.headers), await response.read()


def error_code(body: bytes) -> str:
    code: str = orjson.loads(body)["error"]["code"]
    return code


# --- end to end through the gateway --------------------------------------------------------------


async def test_connection_refused_is_502_and_recorded_as_error(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    await gw.partner.close()  # nothing listens on the partner's port any more
    status, headers, body = await share(gw)
    assert (status, error_code(body)) == (502, "upstream_error")
    [record] = gw.log.records
    assert headers["X-Share-Id"] == record.share_id
    assert record.decision == "shared"  # decided and recorded before the attempt
    [outcome] = gw.log.outcomes
    assert (outcome.share_id, outcome.outcome, outcome.upstream_status) == (
        record.share_id,
        "error",
        None,
    )
    assert outcome.bytes_received == 0
    assert outcome.latency_ms > 0


async def test_a_slow_partner_is_504_and_recorded_as_timeout(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(upstream=FAST)])
    partner = scripted(gw)
    arrived: list[bytes] = []

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.append(await request.read())
        await partner.release.wait()
        return web.Response(body=MARKER)

    partner.script = hang
    status, headers, body = await share(gw)
    assert (status, error_code(body)) == (504, "upstream_timeout")
    assert MARKER not in body
    assert arrived == [b'{"applicant":{"name":"Wang"},"loan_amount":5000}']  # the partner has it
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status) == ("timeout", None)
    assert outcome.share_id == headers["X-Share-Id"]


async def test_a_partner_that_stalls_mid_answer_is_504(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway([contract(upstream=FAST)])
    partner = scripted(gw)

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"score": 1, "private": "' + MARKER)
        await partner.release.wait()
        return response

    partner.script = stall
    status, _headers, body = await share(gw)
    assert (status, error_code(body)) == (504, "upstream_timeout")
    assert MARKER not in body
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status) == ("timeout", 200)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_returned_never_followed(
    make_gateway: GatewayFactory, status: int
) -> None:
    gw = await make_gateway()
    elsewhere = await FakePartner().start()
    try:
        gw.partner.answer(status, b"", Location=f"{elsewhere.base_url}/v1/notes")
        code, headers, body = await share(gw, NOTES)
        assert code == status
        assert body == b""
        assert "Location" not in headers  # the partner's addresses stay behind
        assert elsewhere.received == []
        assert len(gw.partner.received) == 1
        [outcome] = gw.log.outcomes
        assert (outcome.outcome, outcome.upstream_status) == ("delivered", status)
    finally:
        await elsewhere.close()


async def test_an_answer_over_the_cap_is_502_and_none_of_it_reaches_the_caller(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings=SMALL_ANSWERS)
    gw.partner.answer(200, {"score": 1, "pad": (MARKER * 100).decode()})
    status, _headers, body = await share(gw, NOTES)
    assert (status, error_code(body)) == (502, "upstream_error")
    assert MARKER not in body
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status) == ("possibly_delivered", 200)


async def test_a_streamed_answer_over_the_cap_is_502(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=SMALL_ANSWERS)
    partner = scripted(gw)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(50):
                await response.write(MARKER * 10)
            await response.write_eof()
        except ConnectionError:
            pass  # the gateway hung up once it had seen enough
        return response

    partner.script = stream
    status, _headers, body = await share(gw, NOTES)
    assert (status, error_code(body)) == (502, "upstream_error")
    assert MARKER not in body


async def test_an_answer_just_within_the_cap_is_delivered(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=SMALL_ANSWERS)
    answer = b"x" * 1000
    gw.partner.answer(200, answer, **{"Content-Type": "application/octet-stream"})
    status, _headers, body = await share(gw, NOTES)
    assert (status, body) == (200, answer)
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status, outcome.bytes_received) == (
        "delivered",
        200,
        1000,
    )
    assert outcome.latency_ms > 0


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
)
async def test_a_compressed_answer_is_decoded(
    make_gateway: GatewayFactory, coding: str, encode: Callable[[bytes], bytes]
) -> None:
    gw = await make_gateway()
    plain = b'{"note": "stored", "id": 7}'
    gw.partner.answer(200, encode(plain), **{"Content-Encoding": coding})
    status, headers, body = await share(gw, NOTES)
    assert (status, body) == (200, plain)
    assert "Content-Encoding" not in headers


async def test_a_compressed_answer_is_decoded_before_filtering(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    answer = orjson.dumps({"score": 640, "private": MARKER.decode()})
    gw.partner.answer(200, gzip.compress(answer), **{"Content-Encoding": "gzip"})
    status, _headers, body = await share(gw)
    assert (status, body) == (200, b'{"score":640}')


@pytest.mark.parametrize(("status", "coding"), [(204, "br"), (304, "zstd"), (200, "br")])
async def test_an_empty_answer_has_nothing_to_decode_whatever_its_coding(
    make_gateway: GatewayFactory, status: int, coding: str
) -> None:
    gw = await make_gateway()
    gw.partner.answer(status, b"", **{"Content-Encoding": coding})
    got, headers, body = await share(gw, NOTES)
    assert (got, body) == (status, b"")
    assert "Content-Encoding" not in headers
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status) == ("delivered", status)


@pytest.mark.parametrize(
    ("coding", "payload"),
    [
        ("gzip", gzip.compress(b"0" * 200_000)),  # a bomb: decodes far past the cap
        ("gzip", gzip.compress(b'{"score": 1}')[:-6]),  # truncated
        ("gzip", b'{"score": 1}'),  # says gzip, is not
        ("br", b"\x0b\x02\x80{}\x03"),
        ("gzip, gzip", gzip.compress(gzip.compress(b"{}"))),
    ],
    ids=["bomb", "truncated", "not_gzip", "brotli", "stacked"],
)
async def test_an_answer_that_cannot_be_decoded_safely_is_502(
    make_gateway: GatewayFactory, coding: str, payload: bytes
) -> None:
    gw = await make_gateway(settings=SMALL_ANSWERS)
    gw.partner.answer(200, payload, **{"Content-Encoding": coding})
    status, _headers, body = await share(gw, NOTES)
    assert (status, error_code(body)) == (502, "upstream_error")
    [outcome] = gw.log.outcomes
    assert (outcome.outcome, outcome.upstream_status) == ("possibly_delivered", 200)


async def test_a_connection_reset_after_sending_is_possibly_delivered(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    partner = scripted(gw)

    async def reset(request: web.Request) -> web.StreamResponse:
        await request.read()
        transport = request.transport
        assert transport is not None
        transport.abort()
        await partner.release.wait()
        return web.Response()

    partner.script = reset
    status, _headers, body = await share(gw)
    assert (status, error_code(body)) == (502, "upstream_error")
    [outcome] = gw.log.outcomes
    assert outcome.outcome == "possibly_delivered"


async def test_partner_cookies_are_not_replayed_to_it(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.partner.answer(200, {"score": 1}, **{"Set-Cookie": "sid=partner-session; Path=/"})
    for _ in range(2):
        status, headers, _body = await share(gw)
        assert status == 200
        assert "Set-Cookie" not in headers
    assert [r.headers.get("Cookie") for r in gw.partner.received] == [None, None]


async def test_the_partners_hop_by_hop_headers_stay_behind(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    gw.partner.answer(
        200,
        {"score": 1},
        Connection="keep-alive, X-Partner-Trace",
        **{"Keep-Alive": "timeout=5", "X-Partner-Trace": MARKER.decode()},
    )
    response = await gw.share("POST", ASSESS, json=BODY)
    assert response.status == 200
    assert "X-Partner-Trace" not in response.headers.get("Connection", "")
    assert {"Keep-Alive", "X-Partner-Trace"}.isdisjoint(response.headers)
    assert MARKER.decode() not in str(list(response.headers.items()))


async def test_each_outcome_is_linked_to_its_record(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    for status in (200, 201, 404):
        gw.partner.answer(status, {"score": status})
        await share(gw)
    assert [o.share_id for o in gw.log.outcomes] == [r.share_id for r in gw.log.records]
    assert [(o.outcome, o.upstream_status) for o in gw.log.outcomes] == [
        ("delivered", 200),
        ("delivered", 201),
        ("delivered", 404),
    ]
    assert all(o.bytes_received == len(b'{"score":200}') for o in gw.log.outcomes)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, {"connections": 256, "connections_per_origin": 64}),
        (
            {"max_upstream_connections": 40, "max_upstream_connections_per_origin": 10},
            {"connections": 40, "connections_per_origin": 10},
        ),
        # One origin may have every connection there is: the cap is at most the ceiling.
        (
            {"max_upstream_connections": 10, "max_upstream_connections_per_origin": 10},
            {"connections": 10, "connections_per_origin": 10},
        ),
    ],
)
async def test_the_partner_client_takes_its_connection_limits_from_the_settings(
    make_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    limits: dict[str, int],
    expected: dict[str, int],
) -> None:
    made: list[dict[str, Any]] = []

    class Recorded(HttpUpstream):
        def __init__(self, **options: Any) -> None:
            made.append(options)
            super().__init__(**options)

    monkeypatch.setattr("gateway.app.HttpUpstream", Recorded)
    gw = await make_gateway(settings={"limits": limits})
    assert isinstance(gw.runtime.upstream, Recorded)
    assert made == [expected]


# --- HttpUpstream on its own ---------------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[HttpUpstream]:
    client = HttpUpstream(connections=4)
    await client.start()
    yield client
    await client.close()


def request_to(url: str, **changes: Any) -> UpstreamRequest:
    fields: dict[str, Any] = {
        "method": "POST",
        "url": url,
        "headers": (("Content-Type", "application/json"), ("X-Share-Id", "s-1")),
        "body": b'{"a":1}',
        "timeout_s": 2.0,
        "max_response_bytes": 1000,
        **changes,
    }
    return UpstreamRequest(**fields)


async def test_send_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        await HttpUpstream().send(request_to("http://127.0.0.1:1/"))


async def test_the_partner_receives_exactly_the_given_request(
    upstream: HttpUpstream, partner: FakePartner
) -> None:
    response = await upstream.send(request_to(f"{partner.base_url}/v1/x?page=2"))
    assert (response.status, orjson.loads(response.body)) == (200, {"ok": True})
    [seen] = partner.received
    assert (seen.method, seen.target, seen.body) == ("POST", "/v1/x?page=2", b'{"a":1}')
    assert seen.headers["X-Share-Id"] == "s-1"
    # No client defaults that say more than the gateway chose to.
    assert "User-Agent" not in seen.headers
    assert "Accept-Encoding" not in seen.headers
    assert "Cookie" not in seen.headers


async def test_an_encoded_url_is_sent_as_built(
    upstream: HttpUpstream, partner: FakePartner
) -> None:
    await upstream.send(request_to(f"{partner.base_url}/v1/x?q=a%20b%26c", method="GET", body=None))
    assert partner.received[0].target == "/v1/x?q=a%20b%26c"


async def test_refused_connection_fails_as_error(upstream: HttpUpstream) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamFailure) as caught:
        await upstream.send(request_to(f"http://127.0.0.1:{port}/v1/x"))
    assert caught.value.failure == "error"
    assert isinstance(caught.value.error, UpstreamError)
    assert caught.value.status is None


async def test_a_hanging_partner_fails_as_timeout(upstream: HttpUpstream) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send(request_to(f"http://127.0.0.1:{port}/v1/x", timeout_s=0.3))
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert caught.value.failure == "timeout"
    assert isinstance(caught.value.error, UpstreamTimeout)
    assert caught.value.error.status == 504


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"short": 1}',
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["no_status_line", "short_body", "two_lengths", "bad_chunk"],
)
async def test_a_broken_answer_fails_as_possibly_delivered(
    upstream: HttpUpstream, answer: bytes
) -> None:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send(request_to(f"http://127.0.0.1:{port}/v1/x"))
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.failure == "possibly_delivered"
    assert isinstance(caught.value.error, UpstreamError)
    assert caught.value.error.status == 502


async def test_a_redirect_is_returned_with_its_headers(
    upstream: HttpUpstream, partner: FakePartner
) -> None:
    partner.answer(307, b"", Location="http://127.0.0.1:1/elsewhere")
    response = await upstream.send(request_to(f"{partner.base_url}/v1/x"))
    assert response.status == 307
    assert response.headers["Location"] == "http://127.0.0.1:1/elsewhere"
    assert len(partner.received) == 1


async def test_a_decoded_answer_loses_its_content_encoding(
    upstream: HttpUpstream, partner: FakePartner
) -> None:
    partner.answer(200, gzip.compress(b"hello"), **{"Content-Encoding": "gzip"})
    response = await upstream.send(request_to(f"{partner.base_url}/v1/x"))
    assert response.body == b"hello"
    assert "Content-Encoding" not in response.headers
    assert "content-encoding" not in {name.lower() for name in response.headers}


async def test_an_answer_over_the_cap_fails_with_its_status(
    upstream: HttpUpstream, partner: FakePartner
) -> None:
    partner.answer(200, b"x" * 1001)
    with pytest.raises(UpstreamFailure) as caught:
        await upstream.send(request_to(f"{partner.base_url}/v1/x"))
    assert (caught.value.failure, caught.value.status) == ("possibly_delivered", 200)
    assert isinstance(caught.value.error, UpstreamError)
