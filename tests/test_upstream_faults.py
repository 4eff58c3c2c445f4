"""Broken partners on bare sockets: each fault is answered cleanly, recorded, and forgotten."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from conftest import PARTNER_TOKEN, Gateway, GatewayFactory, contract
from multidict import CIMultiDict
from partners import FakePartner, RawPartner, Script, answer_ok, reset

from gateway.sharelog.record import ShareOutcome
from gateway.upstream import UpstreamRequest

ASSESS = "/acme/v1/assess"  # has a response plan: only `score` and `reasons[].code` come back
NOTES = "/acme/v1/notes"  # no response plan: the answer passes unchanged
BODY = {"applicant": {"user_id": "u-1", "name": "Wang"}, "loan_amount": 5000}
SENT = b'{"applicant":{"name":"Wang"},"loan_amount":5000}'
MARKER = b"partner-private-marker"
FAST = {"timeout_s": 0.3}
CAP = 65_536
CAPPED = {"limits": {"max_response_bytes": CAP}}
# Far above any deadline in these tests: reaching it means a deadline did not apply.
BOUND_S = 5.0


def sends(data: bytes, *, then: str = "close") -> Script:
    """A script writing `data`, then closing (`close`), resetting (`reset`) or hanging (`hang`)."""

    async def script(
        partner: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if data:
            writer.write(data)
            await writer.drain()
        if then == "reset":
            await asyncio.sleep(0.05)  # let the bytes leave before the reset discards them
            reset(writer)
        elif then == "hang":
            await partner.release.wait()
        return False

    return script


@pytest.fixture
async def partner() -> AsyncIterator[FakePartner]:
    fake = await RawPartner().start()
    yield fake
    await fake.close()


def raw(gw: Gateway) -> RawPartner:
    assert isinstance(gw.partner, RawPartner)
    return gw.partner


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    # Case-insensitive, as header names are: a test of `"ETag" not in` must see an `Etag`.
    headers: CIMultiDict[str]
    body: bytes
    elapsed_s: float

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = orjson.loads(self.body)["error"]
        return error


async def share(gw: Gateway, path: str = ASSESS, **headers: str) -> Answer:
    purpose = "service_delivery" if path == NOTES else "credit_assessment"
    body: dict[str, Any] = {"note": "n"} if path == NOTES else BODY
    started = time.monotonic()
    response = await gw.share("POST", path, json=body, purpose=purpose, headers=headers)
    data = await response.read()
    return Answer(response.status, CIMultiDict(response.headers), data, time.monotonic() - started)


def outcome_of(gw: Gateway, answer: Answer) -> ShareOutcome:
    """The one outcome recorded for the share that produced `answer`, checked against its record."""
    share_id = answer.headers["X-Share-Id"]
    records = [r for r in gw.log.records if r.share_id == share_id]
    outcomes = [o for o in gw.log.outcomes if o.share_id == share_id]
    assert [r.decision for r in records] == ["shared"]  # recorded before the attempt
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def assert_failed_cleanly(answer: Answer, status: int, code: str) -> None:
    """The caller got the gateway's own error, and not one byte of what the partner sent."""
    assert (answer.status, answer.error()["code"]) == (status, code), answer.body
    assert set(orjson.loads(answer.body)) == {"error"}
    assert set(answer.error()) == {"code", "message", "share_id"}
    assert answer.error()["share_id"] == answer.headers["X-Share-Id"]
    assert MARKER not in answer.body
    assert answer.headers["Content-Type"] == "application/json"
    assert not [
        h for h in ("Retry-After", "ETag", "Cache-Control", "Last-Modified") if h in answer.headers
    ]


async def assert_serves_next(gw: Gateway) -> None:
    """After the fault, a well-behaved partner is reached again and the share is delivered."""
    partner = raw(gw)
    partner.script = answer_ok
    before = len(partner.requests)
    answer = await share(gw)
    assert (answer.status, answer.body) == (200, b'{"score":7}')
    outcome = outcome_of(gw, answer)
    assert (outcome.outcome, outcome.upstream_status) == ("delivered", 200)
    assert len(partner.requests) == before + 1
    assert partner.requests[-1].body == SENT


# --- the fault catalogue -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    script: Script
    status: int  # what the caller gets
    code: str
    outcome: str  # what the share log says became of the share
    upstream_status: int | None  # the partner's status, when its status line arrived
    upstream: dict[str, Any] | None = None  # contract `upstream` changes
    settings: dict[str, Any] | None = None


def _head(status: str = "200 OK", *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_BOMB = gzip.compress(MARKER + b"0" * (CAP * 200))
_FIRST = _head("200 OK", "Content-Length: 12") + b'{"score": 1}'
_STRAY_BODY = b'{"score": 666, "note": "' + MARKER + b'"}'
_STRAY = _head("200 OK", f"Content-Length: {len(_STRAY_BODY)}") + _STRAY_BODY

FAULTS: dict[str, Fault] = {
    "reset_before_headers": Fault(
        sends(b"", then="reset"), 502, "upstream_error", "possibly_delivered", None
    ),
    "reset_after_headers": Fault(
        sends(
            _head("200 OK", "Content-Length: 200") + b'{"score": 1, "x": "' + MARKER, then="reset"
        ),
        502,
        "upstream_error",
        "possibly_delivered",
        200,
    ),
    "truncated_body": Fault(
        sends(_head("200 OK", "Content-Length: 200") + b'{"score": 1, "x": "' + MARKER),
        502,
        "upstream_error",
        "possibly_delivered",
        200,
    ),
    "truncated_chunked_body": Fault(
        sends(_head("200 OK", "Transfer-Encoding: chunked") + b"20\r\n" + MARKER),
        502,
        "upstream_error",
        "possibly_delivered",
        200,
    ),
    "closed_before_headers": Fault(sends(b""), 502, "upstream_error", "possibly_delivered", None),
    "hang_before_headers": Fault(
        sends(b"", then="hang"), 504, "upstream_timeout", "timeout", None, upstream=FAST
    ),
    "hang_after_status_line": Fault(
        sends(b"HTTP/1.1 200 OK\r\n", then="hang"),
        504,
        "upstream_timeout",
        "timeout",
        None,
        upstream=FAST,
    ),
    "hang_mid_body": Fault(
        sends(
            _head("200 OK", "Content-Length: 200") + b'{"score": 1, "x": "' + MARKER, then="hang"
        ),
        504,
        "upstream_timeout",
        "timeout",
        200,
        upstream=FAST,
    ),
    "garbage_status_line": Fault(
        sends(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}"),
        502,
        "upstream_error",
        "possibly_delivered",
        None,
    ),
    # Read with HTTP/1.1 framing by the parser: no telling what such a partner framed.
    **{
        f"status_line_in_http_{version}": Fault(
            sends(
                _head("200 OK", "Content-Length: 12").replace(
                    b"HTTP/1.1", f"HTTP/{version}".encode(), 1
                )
                + b'{"score": 1}'
            ),
            502,
            "upstream_error",
            "possibly_delivered",
            None,
        )
        for version in ("2.0", "0.9", "1.2")
    },
    # A partner's server that took the share for a protocol switch: what follows its head is
    # no HTTP answer, and none of it reaches the caller.
    "switching_protocols": Fault(
        sends(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n" + MARKER,
            then="hang",
        ),
        502,
        "upstream_error",
        "possibly_delivered",
        None,
        upstream=FAST,  # refused when the head arrives, not held until the deadline
    ),
    "not_http_at_all": Fault(
        sends(b"SSH-2.0-OpenSSH_9.6\r\n" + MARKER + b"\r\n\r\n"),
        502,
        "upstream_error",
        "possibly_delivered",
        None,
    ),
    "duplicate_content_length": Fault(
        sends(_head("200 OK", "Content-Length: 12", "Content-Length: 40") + b'{"score": 7}'),
        502,
        "upstream_error",
        "possibly_delivered",
        None,
    ),
    "content_length_and_chunked": Fault(
        sends(
            _head("200 OK", "Content-Length: 12", "Transfer-Encoding: chunked")
            + b'c\r\n{"score": 7}\r\n0\r\n\r\n'
        ),
        502,
        "upstream_error",
        "possibly_delivered",
        None,
    ),
    "negative_content_length": Fault(
        sends(_head("200 OK", "Content-Length: -1") + b'{"score": 7}'),
        502,
        "upstream_error",
        "possibly_delivered",
        None,
    ),
    "gzip_bomb": Fault(
        sends(_head("200 OK", "Content-Encoding: gzip", f"Content-Length: {len(_BOMB)}") + _BOMB),
        502,
        "upstream_error",
        "possibly_delivered",
        200,
        settings=CAPPED,
    ),
    "oversized_by_content_length": Fault(
        sends(_head("200 OK", f"Content-Length: {CAP * 4}") + MARKER * (CAP * 4 // len(MARKER))),
        502,
        "upstream_error",
        "possibly_delivered",
        200,
        settings=CAPPED,
    ),
    # A size that could never be taken, and then nothing: refused as the declared length is,
    # not held until the deadline (FAST) and answered as a timeout.
    "oversized_by_content_length_then_stall": Fault(
        sends(_head("200 OK", f"Content-Length: {CAP * 4}") + MARKER, then="hang"),
        502,
        "upstream_error",
        "possibly_delivered",
        200,
        upstream=FAST,
        settings=CAPPED,
    ),
    "oversized_by_chunk_size_then_stall": Fault(
        sends(
            _head("200 OK", "Transfer-Encoding: chunked") + f"{CAP * 4:x}\r\n".encode() + MARKER,
            then="hang",
        ),
        502,
        "upstream_error",
        "possibly_delivered",
        200,
        upstream=FAST,
        settings=CAPPED,
    ),
    "oversized_until_close": Fault(
        # No length and no chunking: the body runs until the partner closes, past the cap.
        sends(_head("200 OK", "Connection: close") + MARKER * (CAP * 4 // len(MARKER))),
        502,
        "upstream_error",
        "possibly_delivered",
        200,
        settings=CAPPED,
    ),
    # No content in a 205 (RFC 9110 15.3.6), none in a 204: what the partner sent there anyway
    # went to the caller (a 205's body), or was dropped with the answer passed on (a 204's).
    **{
        f"{name}_{how}": Fault(
            sends(_head(status, *framing) + body),
            502,
            "upstream_error",
            "possibly_delivered",
            int(status[:3]),
        )
        for name, status in (
            ("reset_content", "205 Reset Content"),
            ("no_content", "204 No Content"),
        )
        for how, framing, body in (
            ("with_a_length", [f"Content-Length: {len(MARKER)}"], MARKER),
            (
                "in_chunks",
                ["Transfer-Encoding: chunked"],
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(MARKER), MARKER),
            ),
        )
    },
    # An interim answer ends with its head (RFC 9110 15.2): the 200 after it is the answer, and
    # the second 200 is one nobody asked for. Read with a body, the 104 swallowed the first 200
    # and the second, the partner's stray answer, went to the caller as the share's.
    "interim_answer_with_a_length": Fault(
        sends(
            f"HTTP/1.1 104 Checking\r\nContent-Length: {len(_FIRST)}\r\n\r\n".encode()
            + _FIRST
            + _STRAY
        ),
        502,
        "upstream_error",
        "possibly_delivered",
        None,
    ),
    "interim_answer_in_chunks": Fault(
        sends(
            b"HTTP/1.1 199 Checking\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(_FIRST):x}\r\n".encode()
            + _FIRST
            + b"\r\n0\r\n\r\n"
            + _STRAY
        ),
        502,
        "upstream_error",
        "possibly_delivered",
        None,
    ),
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_a_broken_partner_is_answered_recorded_and_forgotten(
    make_gateway: GatewayFactory, name: str
) -> None:
    fault = FAULTS[name]
    gw = await make_gateway(
        [contract(upstream=fault.upstream)] if fault.upstream else None,
        settings=fault.settings,
    )
    partner = raw(gw)
    partner.script = fault.script
    answer = await share(gw)
    assert_failed_cleanly(answer, fault.status, fault.code)
    assert answer.elapsed_s < BOUND_S
    outcome = outcome_of(gw, answer)
    assert (outcome.outcome, outcome.upstream_status) == (fault.outcome, fault.upstream_status)
    assert outcome.bytes_received == 0  # nothing of a broken answer counts as received
    # The partner got the filtered share exactly once: a broken answer is never retried.
    assert [r.body for r in partner.requests] == [SENT]
    await assert_serves_next(gw)


async def test_a_hanging_partner_is_cut_at_the_contracts_timeout(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway([contract(upstream=FAST)])
    raw(gw).script = sends(b"", then="hang")
    answer = await share(gw)
    assert_failed_cleanly(answer, 504, "upstream_timeout")
    assert "0.3 s" in answer.error()["message"]
    outcome = outcome_of(gw, answer)
    assert outcome.latency_ms >= 300  # not before the contract's deadline
    assert answer.elapsed_s < BOUND_S  # and not at any longer default


async def test_refused_connection_is_an_error_and_the_gateway_recovers(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    partner = raw(gw)
    await partner.stop_listening()
    answer = await share(gw)
    assert_failed_cleanly(answer, 502, "upstream_error")
    outcome = outcome_of(gw, answer)
    # Nothing was ever connected, so the partner certainly has nothing.
    assert (outcome.outcome, outcome.upstream_status, outcome.bytes_received) == ("error", None, 0)
    assert partner.requests == []
    await partner.start()  # the partner comes back on the same port
    await assert_serves_next(gw)


async def test_a_trickling_partner_is_cut_at_the_total_deadline(
    make_gateway: GatewayFactory,
) -> None:
    # Each byte comes well within the deadline; only a deadline on the whole answer ends it.
    gw = await make_gateway([contract(upstream={"timeout_s": 1.2})])
    partner = raw(gw)

    async def trickle(
        partner: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(_head("200 OK", "Content-Length: 100"))
        for byte in b'{"score": 1, "x": "' + MARKER + b'"}' + b" " * 100:
            if reader.at_eof():  # the gateway hung up
                return False
            writer.write(bytes([byte]))
            await writer.drain()
            partner.written += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(partner.release.wait(), 0.5)
            if partner.release.is_set():
                return False
        return False

    partner.script = trickle
    answer = await share(gw)
    assert_failed_cleanly(answer, 504, "upstream_timeout")
    assert answer.elapsed_s < BOUND_S  # a trickle of 100 bytes would last 50 s
    assert partner.written >= 2  # the partner was still sending when it was cut
    outcome = outcome_of(gw, answer)
    assert (outcome.outcome, outcome.upstream_status) == ("timeout", 200)
    await assert_serves_next(gw)


@pytest.mark.parametrize(
    ("status", "path", "extra", "body", "expected"),
    [
        (
            "503 Service Unavailable",
            ASSESS,
            (),
            b'{"score": 0, "debug": "' + MARKER + b'"}',
            b'{"score":0}',  # filtered like any answer on this route
        ),
        ("500 Internal Server Error", ASSESS, (), b"Traceback: " + MARKER, b""),
        ("502 Bad Gateway", NOTES, (), b'{"error": "upstream"}', b'{"error": "upstream"}'),
        (
            "429 Too Many Requests",
            NOTES,
            ("Retry-After: 17",),
            b'{"error": "slow down"}',
            b'{"error": "slow down"}',
        ),
    ],
    ids=["503_filtered", "500_unfilterable", "502_passed", "429_retry_after"],
)
async def test_partner_errors_come_back_with_their_status_and_are_delivered(
    make_gateway: GatewayFactory,
    status: str,
    path: str,
    extra: tuple[str, ...],
    body: bytes,
    expected: bytes,
) -> None:
    gw = await make_gateway()
    partner = raw(gw)
    content_type = "text/plain" if body.startswith(b"Traceback") else "application/json"
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{line}\r\n" for line in extra) + "\r\n"
    partner.script = sends(head.encode("latin-1") + body)
    answer = await share(gw, path)
    code = int(status.split()[0])
    assert (answer.status, answer.body) == (code, expected)
    assert MARKER not in answer.body
    assert answer.headers["X-Share-Id"] == gw.log.records[-1].share_id
    if code == 429:
        assert answer.headers["Retry-After"] == "17"
    outcome = outcome_of(gw, answer)
    assert (outcome.outcome, outcome.upstream_status) == ("delivered", code)
    assert outcome.bytes_received == len(body)
    assert len(partner.requests) == 1  # an error answer is the partner's word: no retry
    await assert_serves_next(gw)


async def test_a_post_is_never_resent_on_a_reused_connection_that_died(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    partner = raw(gw)
    await assert_serves_next(gw)  # leaves a kept-alive connection in the gateway's pool

    async def die(
        partner: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        reset(writer)  # it read the share, then died without a word
        return False

    partner.script = die
    answer = await share(gw)
    assert_failed_cleanly(answer, 502, "upstream_error")
    # The second POST went over the pooled connection, once; nothing reconnected to send it again.
    assert (partner.connections, len(partner.requests)) == (1, 2)
    outcome = outcome_of(gw, answer)
    assert (outcome.outcome, outcome.upstream_status) == ("possibly_delivered", None)
    await assert_serves_next(gw)
    assert (partner.connections, len(partner.requests)) == (2, 3)


async def test_a_post_is_never_resent_after_a_fresh_connection_closed(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    partner = raw(gw)
    partner.script = sends(b"")
    answer = await share(gw)
    assert_failed_cleanly(answer, 502, "upstream_error")
    assert (partner.connections, len(partner.requests)) == (1, 1)


async def test_the_partner_sees_exactly_the_gateways_headers(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    partner = raw(gw)
    caller_only = {
        "Cookie": "session=caller-cookie",
        "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Host": "internal.example",
        "X-Forwarded-Proto": "https",
        "X-Real-IP": "10.1.2.3",
        "Forwarded": "for=10.1.2.3",
        "Via": "1.1 internal-proxy",
        "X-Share-Id": "forged-share-id",
        "X-Data-Onward-Transfer": "allowed",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Accept-Encoding": "gzip",
    }
    caller_token = gw.token()
    answer = await share(gw, Authorization=f"Bearer {caller_token}", **caller_only)
    assert answer.status == 200
    [request] = partner.requests
    request_line = request.head.split(b"\r\n", 1)[0]
    assert request_line == b"POST /v1/assess HTTP/1.1"
    assert request.header_names() == sorted(
        [
            "accept",
            "authorization",
            "content-length",
            "content-type",
            "host",
            "x-data-onward-transfer",
            "x-data-retention-days",
            "x-share-id",
            "x-share-purpose",
            "user-agent",
        ]
    )
    assert request.header_values("Authorization") == [f"Bearer {PARTNER_TOKEN}"]
    assert request.header_values("Host") == [f"127.0.0.1:{partner.port}"]
    assert request.header_values("X-Share-Id") == [answer.headers["X-Share-Id"]]
    assert request.header_values("X-Share-Purpose") == ["credit_assessment"]
    assert request.header_values("X-Data-Onward-Transfer") == ["prohibited"]
    assert request.header_values("X-Data-Retention-Days") == ["30"]
    assert request.header_values("Content-Type") == ["application/json"]
    assert request.header_values("Content-Length") == [str(len(SENT))]
    assert request.body == SENT
    for leaked in (b"caller-cookie", b"10.1.2.3", b"internal", b"forged", b"Basic", b"gzip"):
        assert leaked not in request.head
    # The caller's own token never travels, not even in part.
    for segment in caller_token.split("."):
        assert segment.encode() not in request.head


LOWER_CASE_ANSWER = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 9\r\n"
    b"x-partner-trace: t-1\r\nCACHE-CONTROL: no-store\r\ncontent-length: 35\r\n\r\n"
    b'{"score": 7, "debug": "' + MARKER[:10] + b'"}'
)


async def test_answer_headers_are_found_whatever_case_the_partner_wrote(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    partner = raw(gw)
    partner.script = sends(LOWER_CASE_ANSWER)
    upstream = gw.runtime.upstream
    response = await upstream.send(
        UpstreamRequest(
            "POST",
            f"{partner.base_url}/v1/assess",
            (("Content-Type", "application/json"),),
            b"{}",
            timeout_s=2,
            max_response_bytes=CAP,
        )
    )
    for name in ("Content-Type", "content-type", "CONTENT-TYPE"):
        assert response.headers.get(name) == "application/json"
    assert response.headers.get("Retry-After") == "9"
    assert response.headers.get("X-Partner-Trace") == "t-1"
    assert response.headers.get("Cache-Control") == "no-store"


async def test_a_lower_case_answer_is_filtered_and_keeps_its_retry_after(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    raw(gw).script = sends(LOWER_CASE_ANSWER)
    answer = await share(gw)
    assert (answer.status, answer.body) == (429, b'{"score":7}')
    assert answer.headers["Retry-After"] == "9"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "X-Partner-Trace" not in answer.headers


@pytest.mark.parametrize("path", [ASSESS, NOTES], ids=["filtered", "unfiltered"])
async def test_answer_headers_carry_no_text_outside_their_grammar(
    make_gateway: GatewayFactory, path: str
) -> None:
    gw = await make_gateway()
    raw(gw).script = sends(
        "HTTP/1.1 503 Busy\r\n"
        'Content-Type: text/html; name="Zhang San 110101199003077777"\r\n'
        "Retry-After: 张三 13800138000\r\n"
        'Cache-Control: private, x="13800138000", max-age=60, max-age=1380013800x\r\n'
        "Content-Length: 5\r\n\r\nhello".encode()
    )
    answer = await share(gw, path)
    assert answer.status == 503
    assert "Retry-After" not in answer.headers
    # A directive it does not know: never more cacheable than the partner meant.
    assert answer.headers["Cache-Control"] == "no-store"
    if path == ASSESS:
        # The body could not be filtered, so it was dropped, and its type with it.
        assert (answer.body, "Content-Type" in answer.headers) == (b"", False)
    else:  # passed on as the partner sent it, body and type alike
        assert answer.body == b"hello"
        assert answer.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "field",
    [
        b'ETag: "v1\xff"',
        'ETag: "v1-中"'.encode(),
        b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\xa0",
        b"Content-Type: text/plain; name=\xd5\xc5",
        "Content-Type: text/plain; name=张三".encode(),
    ],
    ids=["etag_not_utf8", "etag_utf8", "date_not_utf8", "type_not_utf8", "type_utf8"],
)
async def test_answer_headers_beyond_visible_ascii_are_not_passed_on(
    make_gateway: GatewayFactory, field: bytes
) -> None:
    # Written on as UTF-8, a byte that is not UTF-8 was left out: `"v1\xff"` and `"v1\xfe"`
    # both reached the caller as the ETag `"v1"`, a validator the partner never sent.
    gw = await make_gateway()
    partner = raw(gw)
    partner.script = sends(
        b"HTTP/1.1 200 OK\r\n" + field + b'\r\nContent-Length: 12\r\n\r\n{"score": 7}'
    )
    answer = await share(gw, NOTES)
    assert (answer.status, answer.body) == (200, b'{"score": 7}')
    assert all(value.isascii() for value in answer.headers.values())
    headers = {name.lower(): value for name, value in answer.headers.items()}
    name = field.partition(b":")[0].decode().lower()
    if name == "content-type":  # none passed on: aiohttp's own for a body of no known type
        assert headers[name] == "application/octet-stream"
    else:
        assert name not in headers
    assert [r.body for r in partner.requests] == [b'{"note":"n"}']
    outcome = outcome_of(gw, answer)
    assert (outcome.outcome, outcome.upstream_status, outcome.bytes_received) == (
        "delivered",
        200,
        12,
    )


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (503, "text/html;", b"<h1>down</h1>"),  # an error page the route cannot filter
        (500, "garbage", b"Traceback ..."),
        (202, "nonsense", b""),
        (204, "text/plain; charset", b""),
    ],
)
async def test_the_partners_status_comes_back_whatever_its_content_type(
    make_gateway: GatewayFactory, status: int, content_type: str, body: bytes
) -> None:
    gw = await make_gateway()
    raw(gw).script = sends(
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = await share(gw)
    # The body was dropped or empty: nothing of the partner's type is left to pass on.
    assert (answer.status, answer.body) == (status, b"")
    assert "Content-Type" not in answer.headers
    outcome = outcome_of(gw, answer)
    assert (outcome.outcome, outcome.upstream_status) == ("delivered", status)


@pytest.mark.parametrize("path", [ASSESS, NOTES], ids=["filtered", "unfiltered"])
async def test_cache_control_lines_are_one_list(make_gateway: GatewayFactory, path: str) -> None:
    gw = await make_gateway()
    body = b'{"score": 7}'
    raw(gw).script = sends(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Cache-Control: public, max-age=3600\r\nCache-Control: no-store\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    answer = await share(gw, path)
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "public, max-age=3600, no-store"


@pytest.mark.parametrize(
    "retry_after", ["120", "Wed, 21 Oct 2026 07:28:00 GMT"], ids=["seconds", "http_date"]
)
async def test_a_well_formed_retry_after_and_a_filtered_json_type_pass(
    make_gateway: GatewayFactory, retry_after: str
) -> None:
    gw = await make_gateway()
    body = b'{"score": 7, "secret": 1}'
    raw(gw).script = sends(
        b"HTTP/1.1 429 Slow Down\r\n"
        b"Content-Type: application/problem+json; charset=utf-8\r\n"
        + f"Retry-After: {retry_after}\r\n".encode()
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    answer = await share(gw)
    assert (answer.status, answer.body) == (429, b'{"score":7}')
    assert answer.headers["Retry-After"] == retry_after
    assert answer.headers["Content-Type"].startswith("application/problem+json")


async def test_a_filtered_answer_carries_none_of_the_partners_validators(
    make_gateway: GatewayFactory,
) -> None:
    # They name the partner's whole answer: a cache revalidating the filtered one with them
    # would be told the partner's fuller answer is the one it holds.
    gw = await make_gateway()
    body = b'{"score": 7, "secret": 1}'
    raw(gw).script = sends(
        _head(
            "200 OK",
            'ETag: "v1"',
            "Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT",
            "Cache-Control: max-age=60",
            f"Content-Length: {len(body)}",
        )
        + body
    )
    answer = await share(gw)
    assert (answer.status, answer.body) == (200, b'{"score":7}')
    assert answer.headers["Cache-Control"] == "max-age=60"
    assert "ETag" not in answer.headers
    assert "Last-Modified" not in answer.headers


@pytest.mark.parametrize(
    "header",
    [
        "Content-Type: application/wang-wei.13812345678+json",
        "Cache-Control: max-age=13812345678",
        "Cache-Control: private, stale-if-error=13812345678",
    ],
)
async def test_a_filtered_answers_headers_carry_no_number_of_the_partners(
    make_gateway: GatewayFactory, header: str
) -> None:
    # A vendor subtype is free text, and a "duration" as long as a phone number is none.
    gw = await make_gateway()
    lines = ["HTTP/1.1 200 OK", "Content-Length: 13", header]
    if not header.startswith("Content-Type"):
        lines.append("Content-Type: application/json")
    raw(gw).script = sends(("\r\n".join(lines) + "\r\n\r\n").encode() + b'{"score": 7} ')
    answer = await share(gw)
    assert (answer.status, answer.body) == (200, b'{"score":7}')
    assert not any("13812345678" in value for value in answer.headers.values())
    assert answer.headers["Content-Type"] == "application/json"


def numbered_answer(number: int) -> bytes:
    body = b'{"score": %d}' % number
    return _head("200 OK", f"Content-Length: {len(body)}") + body


async def test_an_answer_nobody_asked_for_never_reaches_the_next_share(
    make_gateway: GatewayFactory,
) -> None:
    # A partner answers its first request twice (a framework writing an error page after the
    # response, say). The stray answer must not become the answer to the next share, nor shift
    # every later answer onto the share after it.
    gw = await make_gateway()
    partner = raw(gw)
    strayed = asyncio.Event()

    async def numbered(
        partner: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        number = len(partner.requests)
        writer.write(numbered_answer(number))
        await writer.drain()
        if number == 1:
            await asyncio.sleep(0.05)  # after the gateway took the first answer
            writer.write(numbered_answer(666))
            await writer.drain()
            strayed.set()
        return True

    partner.script = numbered
    answers = [await share(gw)]
    await asyncio.wait_for(strayed.wait(), BOUND_S)
    await asyncio.sleep(0.05)  # the stray bytes reach the idle pooled connection
    answers += [await share(gw), await share(gw)]
    assert [(a.status, a.body) for a in answers] == [
        (200, b'{"score":1}'),
        (200, b'{"score":2}'),
        (200, b'{"score":3}'),
    ]
    assert [r.body for r in partner.requests] == [SENT] * 3
    assert partner.connections == 2  # the connection that carried the stray answer was dropped


async def test_a_partner_that_reuses_no_connection_gets_each_share_on_its_own(
    make_gateway: GatewayFactory,
) -> None:
    # `reuse_connections: false`: a second answer that comes late, once the next share is on
    # its way, has no share to reach.
    gw = await make_gateway([contract(upstream={"reuse_connections": False})])
    partner = raw(gw)

    async def twice(
        partner: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        number = len(partner.requests)
        writer.write(numbered_answer(number))
        await writer.drain()
        if number == 1:
            with contextlib.suppress(ConnectionError):
                await asyncio.sleep(0.02)  # the next share has gone out by now
                writer.write(numbered_answer(666))
                await writer.drain()
        return True

    partner.script = twice
    answers = [await share(gw), await share(gw)]
    assert [(a.status, a.body) for a in answers] == [(200, b'{"score":1}'), (200, b'{"score":2}')]
    assert partner.connections == 2
    assert [r.header_values("Connection") for r in partner.requests] == [["close"]] * 2


def _samples(text: str, name: str) -> dict[str, float]:
    """The acme samples of one metric in Prometheus text, by their other labels."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{") and 'partner="acme"' in series:
            labels = series[len(name) + 1 : -1].replace('partner="acme"', "").strip(",")
            found[labels] = float(value)
    return found


async def test_every_outcome_of_a_forwarded_share_shows_in_the_metrics(
    make_gateway: GatewayFactory,
) -> None:
    # A partner that times out or fails is what an operator must see first; as a plain
    # `shared` decision, with no latency observed, it did not show at all.
    gw = await make_gateway([contract(upstream=FAST)])
    partner = raw(gw)

    async def scrape() -> str:
        return await (await gw.client.get("/_gateway/metrics")).text()

    before = await scrape()
    partner.script = answer_ok
    assert (await share(gw)).status == 200
    partner.script = sends(b"", then="hang")
    assert (await share(gw)).status == 504
    partner.script = sends(b"")  # closed after the share went out, before an answer
    assert (await share(gw)).status == 502
    await partner.stop_listening()
    assert (await share(gw)).status == 502
    after = await scrape()

    def change(name: str) -> dict[str, float]:
        old = _samples(before, name)
        return {k: v - old.get(k, 0.0) for k, v in _samples(after, name).items()}

    assert change("share_gateway_share_outcomes_total") == {
        'outcome="delivered"': 1,
        'outcome="timeout"': 1,
        'outcome="possibly_delivered"': 1,
        'outcome="error"': 1,
    }
    assert change("share_gateway_decisions_total")['reason="shared"'] == 4
    # The delivered answer and the timeout (at least the contract's 0.3 s); no error.
    assert change("share_gateway_upstream_latency_seconds_count") == {"": 2}
    assert change("share_gateway_upstream_latency_seconds_sum")[""] >= 0.3
