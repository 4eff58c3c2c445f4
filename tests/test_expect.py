"""`Expect: 100-continue`: the caller is told to send its body only once the share may go ahead.

Raw sockets to the production server: the request head is written alone, and the test waits
for what the gateway answers before any byte of the body is sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import structlog
from conftest import BASE_CONTRACT, Gateway, GatewayFactory, RawResponse, assert_refused, contract
from test_server import (
    BOUND_S,
    GOOD_BODY,
    GOOD_FORWARDED,
    assert_still_serving,
    closed_by_peer,
    connection,
    share_request,
)

ASSESS = "/acme/v1/assess"
UPLOAD = "/acme/v1/documents/doc-1"
SMALL_BODY_LIMIT = {"limits": {"max_body_bytes": 1000}}
EXPECT = ("Expect", "100-continue")


def head(
    gw: Gateway,
    *,
    method: str = "POST",
    target: str = ASSESS,
    token: str | None = None,
    purpose: str = "credit_assessment",
    content_type: str = "application/json",
    length: int | None = len(GOOD_BODY),
    extra: tuple[tuple[str, str], ...] = (),
    version: str = "HTTP/1.1",
    keep_alive: bool = False,
) -> bytes:
    """A share's request head, ending with its blank line; `Expect: 100-continue` unless
    `extra` says otherwise; no `Content-Length` where `length` is None."""
    lines = [
        ("Host", f"127.0.0.1:{gw.client.server.port}"),
        ("Authorization", f"Bearer {token or gw.token()}"),
        ("X-Share-Purpose", purpose),
        ("Content-Type", content_type),
        *([("Content-Length", str(length))] if length is not None else []),
        *(extra or (EXPECT,)),
        ("Connection", "keep-alive" if keep_alive else "close"),
    ]
    text = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in lines)
    return (text + "\r\n").encode("latin-1")


async def read_answer(reader: asyncio.StreamReader) -> RawResponse:
    """The next answer off the socket, an interim `100 Continue` included."""
    async with asyncio.timeout(BOUND_S):
        raw = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines)
        }
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
    return RawResponse(int(status_line.split(" ")[1]), headers, body)


async def wait_for_answer(gw: Gateway, request_head: bytes) -> RawResponse:
    """Write the head only, as a caller waiting for `100 Continue` does; the first answer."""
    async with connection(gw) as (reader, writer):
        writer.write(request_head)
        await writer.drain()
        return await read_answer(reader)


# --- refused on the head: no `100 Continue`, no body asked for ------------------------------------

SUSPENDED = contract(contract={"status": "suspended"})


def _early(gw: Gateway, case: str) -> bytes:
    heads: dict[str, Any] = {
        "unknown_partner": lambda: head(gw, target="/nobody/v1/assess"),
        "invalid_token": lambda: head(gw, token="not.a.token"),
        "scope_denied": lambda: head(gw, token=gw.token("share:other:*")),
        "route_denied": lambda: head(gw, target="/acme/v1/unknown"),
        "purpose_denied": lambda: head(gw, purpose="marketing"),
        "contract_inactive": lambda: head(gw),
        "body_too_large": lambda: head(gw, length=5000),
        "unsupported_media_type": lambda: head(gw, content_type="text/plain"),
        "upload_type": lambda: head(gw, method="PUT", target=UPLOAD, content_type="text/plain"),
        "content_coding": lambda: head(gw, extra=(EXPECT, ("Content-Encoding", "br"))),
        "bodyless_method": lambda: head(gw, method="GET", target="/acme/v1/reports/r-1"),
    }
    built: bytes = heads[case]()
    return built


EARLY_REFUSALS = {
    "unknown_partner": (404, "unknown_partner"),
    "invalid_token": (401, "invalid_token"),
    "scope_denied": (403, "scope_denied"),
    "route_denied": (403, "route_denied"),
    "purpose_denied": (403, "purpose_denied"),
    "contract_inactive": (403, "contract_inactive"),
    "body_too_large": (413, "body_too_large"),
    "unsupported_media_type": (415, "unsupported_media_type"),
    "upload_type": (415, "unsupported_media_type"),
    "content_coding": (415, "unsupported_media_type"),
    "bodyless_method": (400, "malformed_body"),
}


@pytest.mark.parametrize("case", sorted(EARLY_REFUSALS))
async def test_a_share_refused_on_its_head_is_answered_without_100_continue(
    make_gateway: GatewayFactory, case: str
) -> None:
    gw = await make_gateway(
        [SUSPENDED if case == "contract_inactive" else contract()], settings=SMALL_BODY_LIMIT
    )
    response = await wait_for_answer(gw, _early(gw, case))
    # The first answer is the final one: the caller was never asked for its body.
    await assert_refused(gw, response, *EARLY_REFUSALS[case])
    assert response.headers["connection"] == "close"


async def test_a_refused_admin_write_is_answered_without_100_continue(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    request_head = head(gw, target="/_gateway/consent", token=gw.token("share:acme:*"))
    response = await wait_for_answer(gw, request_head)
    assert (response.status, response.json()["error"]["code"]) == (403, "forbidden")
    assert response.headers["connection"] == "close"


async def test_an_admin_write_declaring_a_body_over_the_cap_is_answered_without_100_continue(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)
    request_head = head(
        gw, target="/_gateway/consent", token=gw.token("gateway:admin"), length=1001
    )
    with structlog.testing.capture_logs() as logs:
        response = await wait_for_answer(gw, request_head)
    assert (response.status, response.json()["error"]["code"]) == (413, "body_too_large")
    assert response.headers["connection"] == "close"
    actions = [(e["result"], e["code"]) for e in logs if e["event"] == "admin_action"]
    assert actions == [("refused", "body_too_large")]


# --- after an early refusal: the connection ends, and no body byte is read as a request -----------


async def test_a_body_sent_after_an_early_refusal_is_never_read_as_a_request(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    # A body that is itself a valid share, and a valid share behind it: neither may be served.
    inner = share_request(gw, keep_alive=True)
    async with connection(gw) as (reader, writer):
        writer.write(head(gw, token="not.a.token", length=len(inner), keep_alive=True))
        await writer.drain()
        refused = await read_answer(reader)
        await assert_refused(gw, refused, 401, "invalid_token")
        assert refused.headers["connection"] == "close"
        # The caller sends its body after all (RFC 9110 10.1.1), then another request.
        writer.write(inner + share_request(gw))
        await writer.drain()
        assert await reader.read() == b""  # no second answer: the connection ended
    assert gw.partner.received == []
    assert [r.reason for r in gw.log.records] == ["invalid_token"]
    await assert_still_serving(gw)


async def test_a_caller_that_never_sends_its_refused_body_is_closed_within_the_body_deadline(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings={"limits": {"body_read_timeout_s": 0.5}})
    async with connection(gw) as (reader, writer):
        writer.write(head(gw, target="/nobody/v1/assess", keep_alive=True))
        await writer.drain()
        await assert_refused(gw, await read_answer(reader), 404, "unknown_partner")
        assert await closed_by_peer(reader)
    assert gw.partner.received == []


# --- allowed: one `100 Continue`, then the body, then the answer ----------------------------------


async def test_an_allowed_share_gets_one_100_continue_then_its_answer(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    async with connection(gw) as (reader, writer):
        writer.write(head(gw))
        await writer.drain()
        assert (await read_answer(reader)).status == 100
        assert gw.partner.received == []
        writer.write(GOOD_BODY)
        await writer.drain()
        response = await read_answer(reader)  # the final answer, no second interim one
        assert await reader.read() == b""
    assert response.status == 200, response.body
    [seen] = gw.partner.received
    assert seen.body == GOOD_FORWARDED
    record = gw.log.records[-1]
    assert (record.share_id, record.decision) == (response.headers["x-share-id"], "shared")


async def test_an_allowed_upload_gets_100_continue(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    pdf = b"%PDF-1.7 a document"
    async with connection(gw) as (reader, writer):
        writer.write(
            head(gw, method="PUT", target=UPLOAD, content_type="application/pdf", length=len(pdf))
        )
        await writer.drain()
        assert (await read_answer(reader)).status == 100
        writer.write(pdf)
        await writer.drain()
        response = await read_answer(reader)
    assert response.status == 200, response.body
    assert [seen.body for seen in gw.partner.received] == [pdf]


# --- refused once the body is in: `100 Continue` first --------------------------------------------

THIRD_PARTY_WITH_CONSENT = contract(
    partner={"relationship": "third_party"},
    terms={"sensitive": {"allowed": ["identity.id_number"], "consent_required": True}},
    routes=BASE_CONTRACT["routes"][:1],
)
LATE_REFUSALS = {
    "malformed_body": (contract(), b'{"applicant": {"user_id": "u-1"}, "applicant": {}}', 400),
    "consent_required": (
        THIRD_PARTY_WITH_CONSENT,
        orjson.dumps({"applicant": {"user_id": "u-1", "name": "Wang"}}),
        403,
    ),
    "body_too_large": (contract(), b'{"pad": "' + b"x" * 2000 + b'"}', 413),
}


@pytest.mark.parametrize("reason", sorted(LATE_REFUSALS))
async def test_a_share_refused_for_its_body_gets_100_continue_first(
    make_gateway: GatewayFactory, reason: str
) -> None:
    doc, body, status = LATE_REFUSALS[reason]
    gw = await make_gateway([doc], settings=SMALL_BODY_LIMIT)
    async with connection(gw) as (reader, writer):
        # Chunked: a body over the cap is only known to be once it is read.
        extra = (EXPECT, ("Transfer-Encoding", "chunked"))
        writer.write(head(gw, length=None, extra=extra))
        await writer.drain()
        assert (await read_answer(reader)).status == 100
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        await writer.drain()
        await assert_refused(gw, await read_answer(reader), status, reason)


async def test_an_admin_write_gets_100_continue_once_the_admin_is_known(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    body = b'{"grants": []}'
    async with connection(gw) as (reader, writer):
        writer.write(
            head(gw, target="/_gateway/consent", token=gw.token("gateway:admin"), length=len(body))
        )
        await writer.drain()
        assert (await read_answer(reader)).status == 100
        writer.write(body)
        await writer.drain()
        response = await read_answer(reader)
    assert response.status == 200, response.body
    assert response.json()["granted"] == 0


# --- unchanged: HTTP/1.0 and other expectations ---------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expect"), [("HTTP/1.0", "100-continue"), ("HTTP/1.1", "200-ok")]
)
async def test_no_interim_answer_where_none_is_owed(
    make_gateway: GatewayFactory, version: str, expect: str
) -> None:
    gw = await make_gateway()
    async with connection(gw) as (reader, writer):
        writer.write(head(gw, version=version, extra=(("Expect", expect),)) + GOOD_BODY)
        await writer.drain()
        response = await read_answer(reader)
    assert response.status == 200, response.body
    assert [seen.body for seen in gw.partner.received] == [GOOD_FORWARDED]
