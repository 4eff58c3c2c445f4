"""Hostile callers end to end, over raw sockets to the production server: every case checks the
answer, what the partner received, the share record, and that the next share still goes through.

Complements tests/test_pipeline.py (strict JSON bodies, path dot-segments and encodings, the usual
token forgeries), whose cases are not repeated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web, web_protocol
from aiohttp.http_parser import HttpRequestParserPy
from conftest import PARTNER_HEADERS, PARTNER_TOKEN, Gateway, GatewayFactory, RawResponse
from partners import Reply
from test_server import (
    BOUND_S,
    GOOD_BODY,
    GOOD_FORWARDED,
    assert_still_serving,
    closed_by_peer,
    connection,
    eventually,
    read_response,
    server_of,
    trickle,
)
from tokens import SigningKey, claims, mint, rsa_key, sign_raw

from gateway.auth import MAX_TOKEN_CHARS
from gateway.logconfig import ScrubbedHandler
from gateway.server import LimitedRequestHandler

ASSESS = "/acme/v1/assess"
SMALL_BODY_LIMIT = {"limits": {"max_body_bytes": 1000}}
ATTACKER = rsa_key(kid="idp-1")  # claims the trusted key's id, signs with its own key


# --- expectations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerRefuses:
    """The HTTP parser refuses, before any check of the gateway's: a fixed error, no record."""

    status: int = 400
    code: str = "malformed_request"


# What the server answers for each status it refuses with itself.
SERVER_ANSWERS = {
    400: "the request is not HTTP/1.1 the gateway can read unambiguously",
    413: "the request is too large",
    431: "the request's header fields are too large",
}


@dataclass(frozen=True)
class Refused:
    """The gateway refuses with `status` and `code`, and records the refusal."""

    status: int
    code: str


@dataclass(frozen=True)
class Shared:
    """The partner receives exactly `body` at `target`, and the share is recorded."""

    body: bytes = GOOD_FORWARDED
    target: str = "/v1/assess"
    method: str = "POST"


Expectation = ServerRefuses | Refused | Shared


async def check(gw: Gateway, response: RawResponse, expected: Expectation) -> None:
    """The answer and the partner's view match `expected`; then a good share still works."""
    if isinstance(expected, ServerRefuses):
        assert response.status == expected.status, response.body
        # A fixed answer: the parser's message quoted the offending bytes.
        message = SERVER_ANSWERS[expected.status]
        assert response.json() == {"error": {"code": expected.code, "message": message}}
        assert response.headers["server"] == "share-gateway"
        assert "x-share-id" not in response.headers
        assert gw.partner.received == []
        assert gw.log.records == []
    elif isinstance(expected, Refused):
        error = response.json()["error"]
        assert (response.status, error["code"]) == (expected.status, expected.code), error
        assert response.headers["x-share-id"] == error["share_id"]
        assert gw.partner.received == []
        record = gw.log.records[-1]
        assert (record.share_id, record.decision, record.reason) == (
            error["share_id"],
            "denied",
            expected.code,
        )
        assert (record.bytes_sent, record.records) == (0, 0)
        assert gw.log.outcome_of(error["share_id"]) is None
    else:
        assert response.status == 200, response.body
        [seen] = gw.partner.received
        assert (seen.method, seen.target, seen.body) == (
            expected.method,
            expected.target,
            expected.body,
        )
        assert {name.lower() for name in seen.headers} <= PARTNER_HEADERS, seen.headers
        # Whatever the caller sent, only the gateway's credentials and share id travel on.
        assert seen.headers.getall("Authorization") == [f"Bearer {PARTNER_TOKEN}"]
        assert seen.headers.getall("X-Share-Id") == [response.headers["x-share-id"]]
        assert seen.headers.getall("X-Share-Purpose") == ["credit_assessment"]
        record = gw.log.records[-1]
        assert (record.share_id, record.decision) == (response.headers["x-share-id"], "shared")
    await assert_still_serving(gw)
    gw.partner.received.clear()
    gw.log.records.clear()


# --- requests as bytes ----------------------------------------------------------------------------

# Placeholders filled in per gateway: its address and a valid caller token.
HOST = "$HOST"
TOKEN = "$TOKEN"


def request(
    *headers: str,
    body: bytes = GOOD_BODY,
    method: str = "POST",
    target: str = ASSESS,
    version: str = "HTTP/1.1",
    host: bool = True,
    auth: bool = True,
    purpose: bool = True,
    json: bool = True,
    length: bool = True,
    close: bool = True,
) -> bytes:
    """A share request as bytes, valid unless told otherwise; `headers` are raw header lines."""
    lines = [f"{method} {target} {version}"]
    lines += [f"Host: {HOST}"] if host else []
    lines += [f"Authorization: Bearer {TOKEN}"] if auth else []
    lines += ["X-Share-Purpose: credit_assessment"] if purpose else []
    lines += ["Content-Type: application/json"] if json else []
    lines += [f"Content-Length: {len(body)}"] if length else []
    lines += headers
    lines += ["Connection: close"] if close else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int = 16, *, trailer: bytes = b"") -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailer + b"\r\n"


def fill(gw: Gateway, template: bytes, token: str | None = None) -> bytes:
    host = f"127.0.0.1:{gw.client.server.port}".encode()
    return template.replace(HOST.encode(), host).replace(
        TOKEN.encode(), (token or gw.token()).encode()
    )


async def send(gw: Gateway, data: bytes) -> RawResponse:
    async with connection(gw) as (reader, writer):
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await read_response(reader)


def applicant_doc(**extra: Any) -> bytes:
    return orjson.dumps({"applicant": {"user_id": "u-1", "name": "Wang"}, **extra})


# --- 1. request framing and smuggling shapes ------------------------------------------------------

CHUNKED = "Transfer-Encoding: chunked"
INNER_REQUEST = (
    b"POST /acme/v1/assess HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer forged\r\n"
    b"X-Share-Purpose: credit_assessment\r\nContent-Length: 2\r\n\r\n{}"
)

FRAMING: dict[str, tuple[bytes, Expectation]] = {
    "cl_and_te": (request(CHUNKED, body=chunked(GOOD_BODY)), ServerRefuses()),
    "te_and_cl_te_first": (
        request(CHUNKED, f"Content-Length: {len(GOOD_BODY)}", body=GOOD_BODY, length=False),
        ServerRefuses(),
    ),
    "duplicate_cl_same_value": (
        request(f"Content-Length: {len(GOOD_BODY)}", body=GOOD_BODY),
        ServerRefuses(),
    ),
    "duplicate_cl_different_values": (
        request(f"Content-Length: {len(GOOD_BODY) - 5}", body=GOOD_BODY),
        ServerRefuses(),
    ),
    "cl_list": (
        request(f"Content-Length: {len(GOOD_BODY)}, {len(GOOD_BODY)}", length=False),
        ServerRefuses(),
    ),
    "negative_cl": (request("Content-Length: -1", length=False), ServerRefuses()),
    "plus_signed_cl": (
        request(f"Content-Length: +{len(GOOD_BODY)}", length=False),
        ServerRefuses(),
    ),
    "hex_cl": (request(f"Content-Length: 0x{len(GOOD_BODY):x}", length=False), ServerRefuses()),
    "te_chunked_identity": (
        request("Transfer-Encoding: chunked, identity", body=chunked(GOOD_BODY), length=False),
        ServerRefuses(),
    ),
    "te_xchunked": (
        request("Transfer-Encoding: xchunked", body=chunked(GOOD_BODY), length=False),
        ServerRefuses(),
    ),
    "te_repeated": (
        request(CHUNKED, CHUNKED, body=chunked(GOOD_BODY), length=False),
        ServerRefuses(),
    ),
    "te_space_before_colon": (
        request("Transfer-Encoding : chunked", body=chunked(GOOD_BODY), length=False),
        ServerRefuses(),
    ),
    "te_obs_folded": (
        request("Transfer-Encoding:\r\n chunked", body=chunked(GOOD_BODY), length=False),
        ServerRefuses(),
    ),
    "obs_fold_purpose": (
        request("X-Share-Purpose: credit\r\n _assessment", purpose=False),
        ServerRefuses(),
    ),
    "obs_fold_tab_authorization": (
        request(f"Authorization: Bearer\r\n\t{TOKEN}", auth=False),
        ServerRefuses(),
    ),
    "bare_lf_line_endings": (
        request().replace(b"\r\n", b"\n"),
        ServerRefuses(),
    ),
    "bare_lf_after_one_header": (
        request().replace(b"X-Share-Purpose: credit_assessment\r\n", b"X-Share-Purpose: x\n"),
        ServerRefuses(),
    ),
    "bare_cr_line_ending": (
        request().replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r", 1),
        ServerRefuses(),
    ),
    "nul_in_header_value": (request("X-Note: a\x00b"), ServerRefuses()),
    "empty_header_name": (request(": nameless"), ServerRefuses()),
    "space_in_header_name": (request("X Share Purpose: marketing"), ServerRefuses()),
    "bad_http_version": (request(version="HTTP/1.x"), ServerRefuses()),
    "http2_preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ServerRefuses()),
    "double_space_after_method": (request().replace(b"POST /", b"POST  /", 1), Shared()),
    "chunk_size_with_junk": (
        request(CHUNKED, body=b"2x\r\n{}\r\n0\r\n\r\n", length=False),
        ServerRefuses(),
    ),
    "chunk_size_overflow": (
        request(CHUNKED, body=b"1" + b"0" * 16 + b"\r\n{}\r\n0\r\n\r\n", length=False),
        ServerRefuses(),
    ),
    "chunk_lf_only": (
        request(CHUNKED, body=chunked(GOOD_BODY).replace(b"\r\n", b"\n"), length=False),
        ServerRefuses(),
    ),
    "chunk_negative_size": (
        request(CHUNKED, body=b"-2\r\n{}\r\n0\r\n\r\n", length=False),
        ServerRefuses(),
    ),
    # Framings aiohttp accepts: the gateway still forwards only its own re-serialisation.
    # A blank to Python's `str.strip`, which the gateway's own check of the codings uses: the
    # parser refuses it first.
    "te_chunked_then_a_no_break_space": (
        request("Transfer-Encoding: chunked\xc2\xa0", body=chunked(GOOD_BODY), length=False),
        ServerRefuses(),
    ),
    "te_upper_case": (
        request("Transfer-Encoding: CHUNKED", body=chunked(GOOD_BODY), length=False),
        Shared(),
    ),
    "te_identity_then_chunked": (
        request("Transfer-Encoding: identity, chunked", body=chunked(GOOD_BODY), length=False),
        Refused(400, "malformed_request"),
    ),
    "te_chunked_on_http_1_0": (
        request(CHUNKED, body=chunked(GOOD_BODY), length=False, version="HTTP/1.0"),
        Shared(),
    ),
    "chunk_extensions": (
        request(
            CHUNKED,
            body=b"%x;name=value\r\n%s\r\n0;x\r\n\r\n" % (len(GOOD_BODY), GOOD_BODY),
            length=False,
        ),
        Shared(),
    ),
    "chunked_trailer_headers_ignored": (
        request(
            CHUNKED,
            body=chunked(
                GOOD_BODY,
                trailer=b"X-Share-Purpose: marketing\r\nAuthorization: Bearer forged\r\n",
            ),
            length=False,
        ),
        Shared(),
    ),
    # A gzip transfer coding is not decoded by aiohttp: the bytes are read as they are.
    "te_gzip_chunked_plain_body": (
        request("Transfer-Encoding: gzip, chunked", body=chunked(GOOD_BODY), length=False),
        Refused(400, "malformed_request"),
    ),
    "te_gzip_chunked_gzip_body": (
        request(
            "Transfer-Encoding: gzip, chunked", body=chunked(gzip.compress(GOOD_BODY)), length=False
        ),
        Refused(400, "malformed_request"),
    ),
    "request_inside_the_body": (request(body=INNER_REQUEST), Refused(400, "malformed_body")),
    "chunked_body_on_a_get_route": (
        request(
            CHUNKED, method="GET", target="/acme/v1/reports/r-1", body=chunked(b"{}"), length=False
        ),
        Refused(400, "malformed_body"),
    ),
    "http_0_9_request": (b"GET /acme/v1/reports/r-1\r\n\r\n", Refused(401, "invalid_token")),
}


@pytest.mark.parametrize(("data", "expected"), FRAMING.values(), ids=FRAMING.keys())
async def test_request_framing(
    make_gateway: GatewayFactory, data: bytes, expected: Expectation
) -> None:
    gw = await make_gateway()
    if not isinstance(expected, ServerRefuses):
        await check(gw, await send(gw, fill(gw, data)), expected)
        return
    # A valid share pipelined behind a refused framing is never read as a request of its own:
    # the connection ends with the one 400.
    data = data.replace(b"Connection: close\r\n", b"") + request()
    async with connection(gw) as (reader, writer):
        writer.write(fill(gw, data))
        response = await read_response(reader)
        assert await closed_by_peer(reader)
    await check(gw, response, expected)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/0.9"])
async def test_a_request_line_naming_another_http_version_is_refused(
    make_gateway: GatewayFactory, version: str
) -> None:
    # The parser reads these versions with HTTP/1.1 framing, and the answer's status line would
    # name them (`HTTP/2.0 200 OK`), which an HTTP/1.1 client cannot read: the share must not
    # go out, as for `HTTP/1.x`.
    gw = await make_gateway()
    await check(gw, await send(gw, fill(gw, request(version=version))), ServerRefuses())


# Chunk framing that breaks in a later packet than the head, while the share reads its body.
# (Broken in the head's own packet, the parser refuses it before any share begins: above.)
BROKEN_CHUNKS = {
    "bad_chunk_size": b"13800138000Z\r\n",
    "chunk_data_without_crlf": b"5\r\nhelloXX",
    "bare_lf_after_chunk_size": b"5\nhello\r\n",
}


@pytest.mark.parametrize("parser", ["default", "python"], ids=["default_parser", "python_parser"])
@pytest.mark.parametrize("broken", BROKEN_CHUNKS.values(), ids=BROKEN_CHUNKS.keys())
async def test_chunk_framing_that_breaks_mid_body_is_refused_at_once(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, broken: bytes, parser: str
) -> None:
    if parser == "python":
        # The parser aiohttp runs without its C extensions.
        monkeypatch.setattr(web_protocol, "HttpRequestParser", HttpRequestParserPy)
    # aiohttp's own log records, routed as `serve` routes them.
    monkeypatch.setattr(logging.getLogger("aiohttp"), "handlers", [ScrubbedHandler()])
    monkeypatch.setattr(logging.getLogger("aiohttp"), "propagate", False)
    # One share in progress at most: a share still waiting for its body refuses the next one.
    gw = await make_gateway(settings={"limits": {"max_pending_requests": 1}})
    head = fill(gw, request(CHUNKED, body=b"", length=False, close=False))
    with structlog.testing.capture_logs() as logs:
        async with connection(gw) as (reader, writer):
            writer.write(head + b'5\r\n{"app\r\n')
            await writer.drain()
            await eventually(lambda: gw.runtime.shares_in_progress == 1)
            writer.write(broken)
            await writer.drain()
            # Answered within the read's bound (5 s), not at `body_read_timeout_s` (15 s).
            response = await read_response(reader)
            # Nothing after the break can be read as a request: the connection, kept alive
            # otherwise, ends after this one answer (none follows for the parser's error).
            async with asyncio.timeout(BOUND_S):
                assert await reader.read() == b""
    assert b"13800138000" not in response.body
    # A caller's fault, not the server's: nothing is logged as an error.
    assert [entry for entry in logs if entry["log_level"] == "error"] == []
    await check(gw, response, Refused(400, "malformed_body"))


# A whole document's chunks, then a break: what came before the break must not pass for the body.
WHOLE_THEN_BROKEN = b"%x\r\n%s\r\n" % (len(GOOD_BODY), GOOD_BODY) + BROKEN_CHUNKS["bad_chunk_size"]


@pytest.mark.parametrize("parser", ["default", "python"], ids=["default_parser", "python_parser"])
@pytest.mark.parametrize(
    "broken",
    [BROKEN_CHUNKS["bad_chunk_size"], WHOLE_THEN_BROKEN],
    ids=["bad_chunk_size", "whole_document_then_bad_chunk_size"],
)
async def test_chunk_framing_that_breaks_behind_a_share_in_progress_is_refused_in_its_turn(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, broken: bytes, parser: str
) -> None:
    if parser == "python":
        monkeypatch.setattr(web_protocol, "HttpRequestParser", HttpRequestParserPy)
    gw = await make_gateway()
    gw.partner.reply = Reply(delay_s=0.5)  # the first share is still in progress at the break
    first = fill(gw, request(close=False))
    second = fill(gw, request(CHUNKED, body=b"", length=False, close=False))
    third = fill(gw, request(close=False))
    async with connection(gw) as (reader, writer):
        writer.write(first + second)
        await writer.drain()
        await eventually(lambda: len(gw.partner.received) == 1)
        writer.write(broken + third)
        await writer.drain()
        # The second share waited for a body that could never come (408 after
        # `body_read_timeout_s`), or took what came before the break for its body.
        answers = [await read_response(reader), await read_response(reader)]
        # Nothing after the break is read: the third request is never answered.
        assert await closed_by_peer(reader)
    assert [answer.status for answer in answers] == [200, 400]
    assert answers[1].json() == {
        "error": {"code": "malformed_request", "message": SERVER_ANSWERS[400]}
    }
    assert "x-share-id" not in answers[1].headers
    assert [seen.body for seen in gw.partner.received] == [GOOD_FORWARDED]
    assert [(r.share_id, r.decision) for r in gw.log.records] == [
        (answers[0].headers["x-share-id"], "shared")
    ]
    gw.partner.reply = Reply()
    gw.partner.received.clear()
    await assert_still_serving(gw)


async def test_a_long_chunked_body_whose_framing_breaks_after_a_whole_document_is_refused(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    # Long enough to arrive in more than one read: the break is read before the share begins
    # reading, and what came before it, a whole document, was forwarded as the body.
    doc = applicant_doc(meta={"pad": "x" * 130_000})
    body = chunked(doc, 60_000).removesuffix(b"0\r\n\r\n") + BROKEN_CHUNKS["bad_chunk_size"]
    response = await send(gw, fill(gw, request(CHUNKED, body=body, length=False)))
    assert response.status == 400
    # Refused as the share reads its body, or by the parser when the break came before the
    # share began: which one depends on when the server's reads fall, never on the bytes.
    code = response.json()["error"]["code"]
    assert code in {"malformed_body", "malformed_request"}
    await check(gw, response, Refused(400, code) if code == "malformed_body" else ServerRefuses())


@pytest.mark.parametrize(
    "data",
    [
        request("User-Agent: app 13800138000\x01"),  # a control character in a header value
        request("Content-Length: 13800138000x", length=False),
        request(method="POST", target="/acme/v1/assess?phone=\xe5\xbc\xa0 13800138000"),
    ],
    ids=["header_value", "content_length", "request_line"],
)
async def test_a_request_the_parser_refuses_is_quoted_nowhere(
    make_gateway: GatewayFactory, data: bytes
) -> None:
    # aiohttp's message for it quotes the offending bytes: it went back in the 400 and to
    # stderr. Neither the answer nor the log holds anything of the request now.
    gw = await make_gateway()
    with structlog.testing.capture_logs() as logs:
        response = await send(gw, fill(gw, data))
    assert response.status == 400
    assert b"13800138000" not in response.body
    assert logs, "the refusal is logged"
    assert "13800138000" not in repr(logs)


async def test_tls_sent_to_the_plain_port_is_logged_at_debug_only(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64
    with structlog.testing.capture_logs() as logs:
        response = await send(gw, client_hello)
    assert response.status == 400
    assert [entry["log_level"] for entry in logs] == ["debug"]


def test_library_records_keep_nothing_of_their_message() -> None:
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, "web_protocol.py", 1, "bad: %r", (b"13800138000",), None
    )
    try:
        raise ValueError("Bearer eyJ.13800138000")
    except ValueError as exc:
        record.exc_info = (ValueError, exc, exc.__traceback__)
    with structlog.testing.capture_logs() as logs:
        ScrubbedHandler().emit(record)
    [event] = logs
    assert event["event"] == "library_log"
    assert (event["logger"], event["error"]) == ("aiohttp.server", "ValueError")
    assert "13800138000" not in repr(logs)


async def test_a_request_pipelined_in_the_body_is_its_own_request(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    # Content-Length ends the first body early: the rest is read as a second request, without
    # the first one's credentials, and decided on its own.
    smuggled = (
        b"POST /acme/v1/assess HTTP/1.1\r\nHost: x\r\nX-Share-Purpose: credit_assessment\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
    ) % (len(GOOD_BODY), GOOD_BODY)
    first = request(close=False)
    async with connection(gw) as (reader, writer):
        writer.write(fill(gw, first) + smuggled)
        answers = [await read_response(reader), await read_response(reader)]
    assert [a.status for a in answers] == [200, 401]
    assert answers[1].json()["error"]["code"] == "invalid_token"
    assert len(gw.partner.received) == 1
    assert gw.partner.received[0].body == GOOD_FORWARDED
    assert [(r.decision, r.reason) for r in gw.log.records] == [
        ("shared", "shared"),
        ("denied", "invalid_token"),
    ]
    await assert_still_serving(gw)


@pytest.mark.parametrize(
    ("trailer", "second"),
    [
        (f"Authorization: Bearer {TOKEN}", request(auth=False)),
        ("X-Share-Purpose: service_delivery", request(purpose=False, target="/acme/v1/notes")),
    ],
    ids=["credentials", "purpose"],
)
async def test_a_trailer_field_never_reaches_the_next_request(
    make_gateway: GatewayFactory, trailer: str, second: bytes
) -> None:
    gw = await make_gateway()
    first = request(
        CHUNKED,
        body=chunked(GOOD_BODY, trailer=f"{trailer}\r\n".encode()),
        length=False,
        close=False,
    )
    async with connection(gw) as (reader, writer):
        writer.write(fill(gw, first) + fill(gw, second))
        answer = await read_response(reader)
        # The request behind a chunked body is never handled: the connection ends instead.
        assert await closed_by_peer(reader, within=1.0)
    # The second request, lacking the credentials or the purpose, reached no partner.
    assert [seen.body for seen in gw.partner.received] == [GOOD_FORWARDED]
    assert (answer.status, answer.headers.get("connection")) == (200, "close")
    assert [(r.share_id, r.decision) for r in gw.log.records] == [
        (answer.headers["x-share-id"], "shared")
    ]
    gw.partner.received.clear()
    await assert_still_serving(gw)


# --- 2. sizes the HTTP parser bounds --------------------------------------------------------------

SIZES: dict[str, tuple[bytes, Expectation]] = {
    "request_line_over_max_line_size": (
        request(target=ASSESS + "?page=" + "1" * 9000),
        ServerRefuses(),
    ),
    "header_over_max_field_size": (request("X-Note: " + "n" * 9000), ServerRefuses()),
    "header_name_over_max_field_size": (request("X-" + "n" * 9000 + ": 1"), ServerRefuses()),
    "more_headers_than_max_headers": (
        request(*(f"X-Note-{i}: {i}" for i in range(80))),
        ServerRefuses(),
    ),
}


@pytest.mark.parametrize(("data", "expected"), SIZES.values(), ids=SIZES.keys())
async def test_oversized_heads(
    make_gateway: GatewayFactory, data: bytes, expected: Expectation
) -> None:
    gw = await make_gateway()
    await check(gw, await send(gw, fill(gw, data)), expected)


async def test_a_token_over_its_size_limit_is_refused_for_its_size(
    make_gateway: GatewayFactory,
) -> None:
    # Header fields are allowed to be longer here, so the token's own cap is what answers.
    gw = await make_gateway(settings={"limits": {"max_field_size": 32768}})
    token = f"{'a' * (MAX_TOKEN_CHARS + 100)}.{'b' * 100}.c"
    response = await send(gw, fill(gw, request(f"Authorization: Bearer {token}", auth=False)))
    await check(gw, response, Refused(401, "invalid_token"))
    assert f"larger than {MAX_TOKEN_CHARS} bytes" in response.json()["error"]["message"]


# --- 3. Host, absolute-form and other targets -----------------------------------------------------

TARGETS: dict[str, tuple[bytes, Expectation]] = {
    "duplicate_host": (request("Host: evil.example"), ServerRefuses()),
    "duplicate_host_case_variant": (request("HOST: evil.example"), ServerRefuses()),
    "missing_host": (request(host=False), ServerRefuses()),
    "absolute_form_with_userinfo": (
        request(target="http://user:pass@127.0.0.1:1/acme/v1/assess"),
        Refused(400, "malformed_request"),
    ),
    "absolute_form_upper_case_scheme": (
        request(target="HTTP://evil.example/acme/v1/assess"),
        Refused(400, "malformed_request"),
    ),
    "authority_form_on_post": (request(target="evil.example:443"), ServerRefuses()),
    # A target no route pattern could match: refused by the gateway, with a record, never by
    # the router (whose 404 named the server software and left no record).
    "asterisk_form_options": (
        request(target="*", method="OPTIONS", body=b"", json=False),
        Refused(400, "malformed_request"),
    ),
    # An expectation the server does not know may be ignored (RFC 9110 10.1.1): no 417 of
    # aiohttp's own, the share is judged like any other.
    "unknown_expectation": (request("Expect: 200-ok"), Shared()),
    "scheme_relative": (
        request(target="//evil.example/acme/v1/assess"),
        Refused(400, "malformed_request"),
    ),
    "three_dots_segment": (request(target="/acme/v1/..."), Refused(403, "route_denied")),
    "leading_dot_segment": (request(target="/./acme/v1/assess"), Refused(400, "malformed_request")),
    "encoded_partner_id": (request(target="/%61cme/v1/assess"), Refused(400, "malformed_request")),
    "encoded_question_mark": (
        request(target="/acme/v1/assess%3Fpage=1"),
        Refused(400, "malformed_request"),
    ),
    "encoded_hash": (request(target="/acme/v1/assess%23x"), Refused(400, "malformed_request")),
    # A decoded line feed in the path: no route pattern is involved, the gateway refuses it.
    "encoded_crlf_in_path": (
        request(target="/acme/v1/assess%0d%0aX-Injected:%201"),
        Refused(400, "malformed_request"),
    ),
    "encoded_cr_in_path": (
        request(target="/acme/v1/assess%0dX-Injected:%201"),
        Refused(400, "malformed_request"),
    ),
    "overlong_utf8_dots": (
        request(target="/acme/%c0%ae%c0%ae/acme/v1/assess"),
        Refused(400, "malformed_request"),
    ),
    "iis_unicode_escape": (
        request(target="/acme/v1/ass%u0065ss"),
        Refused(400, "malformed_request"),
    ),
    "encoded_dots_and_slash": (
        request(target="/acme/v1/reports/..%2f..%2fadmin", method="GET", body=b""),
        Refused(400, "malformed_request"),
    ),
    "ops_prefix_encoded": (
        request(target="/_gateway%2fhealth", method="GET", body=b""),
        Refused(400, "malformed_request"),
    ),
    "raw_del_byte": (request(target="/acme/v1/assess\x7f"), ServerRefuses()),
    # The query is decoded once and re-encoded: the partner reads exactly what was checked.
    "encoded_crlf_in_query_value": (
        request(target="/acme/v1/assess?page=1%0d%0aX-Injected:%201"),
        Shared(target="/v1/assess?page=1%0D%0AX-Injected%3A%201"),
    ),
    "encoded_query_name": (
        request(target="/acme/v1/assess?pag%65=2"),
        Shared(target="/v1/assess?page=2"),
    ),
    "encoded_duplicate_query_name": (
        request(target="/acme/v1/assess?page=1&pag%65=2"),
        Refused(400, "malformed_request"),
    ),
    "semicolon_in_query_value": (
        request(target="/acme/v1/assess?page=1;page=2"),
        Shared(target="/v1/assess?page=1%3Bpage%3D2"),
    ),
    "query_name_case_variant": (request(target="/acme/v1/assess?PAGE=2"), Shared()),
    "brackets_in_query": (
        request(target="/acme/v1/assess?page[]=1"),
        Refused(400, "malformed_request"),
    ),
    "method_override_header": (request("X-HTTP-Method-Override: DELETE"), Shared()),
    "trace_method": (request(method="TRACE", body=b""), Refused(403, "route_denied")),
}


@pytest.mark.parametrize(("data", "expected"), TARGETS.values(), ids=TARGETS.keys())
async def test_hosts_and_targets(
    make_gateway: GatewayFactory, data: bytes, expected: Expectation
) -> None:
    gw = await make_gateway()
    await check(gw, await send(gw, fill(gw, data)), expected)


# --- 4. hop-by-hop abuse and header names with underscores ----------------------------------------

HEADERS: dict[str, tuple[bytes, Expectation]] = {
    "connection_names_share_id_and_authorization": (
        request("Connection: close, X-Share-Id, Authorization", close=False),
        Shared(),
    ),
    "connection_names_purpose_and_content_type": (
        request("Connection: X-Share-Purpose, Content-Type, Content-Length"),
        Shared(),
    ),
    "caller_share_id_with_hop_by_hop": (
        request("X-Share-Id: forged", "Connection: X-Share-Id"),
        Shared(),
    ),
    "keep_alive_te_and_proxy_headers": (
        request("Keep-Alive: timeout=999", "TE: trailers", "Proxy-Connection: keep-alive"),
        Shared(),
    ),
    "websocket_upgrade": (
        request("Connection: Upgrade", "Upgrade: websocket", close=False),
        Shared(),
    ),
    "h2c_upgrade": (
        request(
            "Connection: Upgrade, HTTP2-Settings",
            "Upgrade: h2c",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            close=False,
        ),
        Shared(),
    ),
    "expect_100_continue": (request("Expect: 100-continue"), Shared()),
    "underscore_purpose_only": (
        request("X_Share_Purpose: credit_assessment", purpose=False),
        Refused(403, "purpose_denied"),
    ),
    # UTF-8 for a no-break space and a next line (U+0085): blanks to Python's `str.strip`, not
    # to HTTP. (The parser refuses the ASCII controls `str.strip` takes, a form feed and such.)
    "purpose_with_a_no_break_space": (
        request("X-Share-Purpose: credit_assessment\xc2\xa0", purpose=False),
        Refused(403, "purpose_denied"),
    ),
    "purpose_after_a_next_line": (
        request("X-Share-Purpose: \xc2\x85credit_assessment", purpose=False),
        Refused(403, "purpose_denied"),
    ),
    "purpose_with_a_tab": (
        request("X-Share-Purpose: credit_assessment\t", purpose=False),
        Shared(),
    ),
    "underscore_purpose_beside_the_real_one": (
        request("x_share_purpose: service_delivery"),
        Shared(),
    ),
    "underscore_forwarded_for": (
        request("X_Forwarded_For: 10.0.0.1", "X_Real_IP: 10.0.0.1"),
        Shared(),
    ),
    "underscore_content_type_only": (
        request("Content_Type: application/json", json=False),
        Refused(415, "unsupported_media_type"),
    ),
    "underscore_content_encoding": (request("Content_Encoding: gzip"), Shared()),
    "underscore_authorization_only": (
        request(f"Authorization_: Bearer {TOKEN}", auth=False),
        Refused(401, "invalid_token"),
    ),
    "underscore_transfer_encoding": (request("Transfer_Encoding: chunked"), Shared()),
    "repeated_content_encoding": (
        request("Content-Encoding: gzip", "Content-Encoding: identity"),
        Refused(400, "malformed_request"),
    ),
    "repeated_content_type": (request("Content-Type: text/plain"), ServerRefuses()),
}


@pytest.mark.parametrize(("data", "expected"), HEADERS.values(), ids=HEADERS.keys())
async def test_header_tricks(
    make_gateway: GatewayFactory, data: bytes, expected: Expectation
) -> None:
    gw = await make_gateway()
    token = gw.token()
    response = await send(gw, fill(gw, data, token))
    if isinstance(expected, Shared):
        [seen] = gw.partner.received
        assert token not in str(list(seen.headers.items()))
    await check(gw, response, expected)


# --- 5. caller tokens -----------------------------------------------------------------------------


def _hs256(kid: str, secret: bytes) -> str:
    return sign_raw(
        {"typ": "JWT", "alg": "HS256", "kid": kid}, claims(scope="share:acme:*"), secret=secret
    )


def _with_alg(alg: str) -> Callable[[SigningKey, Path], str]:
    def make(key: SigningKey, _pem: Path) -> str:
        header = {"typ": "JWT", "alg": alg, "kid": key.kid}
        return sign_raw(header, claims(scope="share:acme:*"), key, sign_as="RS256")

    return make


def _in(seconds: int) -> int:
    return int(time.time()) + seconds


def _claims_text(key: SigningKey, text: str) -> str:
    """A token the trusted key signed, its claim set `text`: JSON where "CLAIMS" stands for the
    valid members but `sub`."""
    valid = orjson.dumps(claims(scope="share:acme:*", subject=None)).decode()[1:-1]
    header = {"typ": "JWT", "alg": key.algorithm, "kid": key.kid}
    return sign_raw(header, text.replace("CLAIMS", valid).encode(), key)


TOKENS: dict[str, tuple[Callable[[SigningKey, Path], str], int, str]] = {
    "kid_path_traversal_empty_secret": (
        lambda k, pem: _hs256("../../../../../../dev/null", b""),
        401,
        "invalid_token",
    ),
    "kid_names_the_public_key_file": (
        lambda k, pem: _hs256(str(pem), pem.read_bytes()),
        401,
        "invalid_token",
    ),
    "kid_sql_injection": (
        lambda k, pem: _hs256("x' UNION SELECT 'secret' -- ", b"secret"),
        401,
        "invalid_token",
    ),
    "kid_with_nul": (
        lambda k, pem: mint(ATTACKER, scope="share:acme:*", headers={"kid": "idp-1\x00"}),
        401,
        "invalid_token",
    ),
    "embedded_jwk": (
        lambda k, pem: mint(ATTACKER, scope="share:acme:*", headers={"jwk": ATTACKER.public_jwk()}),
        401,
        "invalid_token",
    ),
    "embedded_x5c": (
        lambda k, pem: mint(ATTACKER, scope="share:acme:*", headers={"x5c": ["MIIBIjANBgkq"]}),
        401,
        "invalid_token",
    ),
    "crit_exp": (
        lambda k, pem: mint(k, scope="share:acme:*", headers={"crit": ["exp"]}),
        401,
        "invalid_token",
    ),
    "crit_b64_false": (
        lambda k, pem: mint(k, scope="share:acme:*", headers={"crit": ["b64"], "b64": False}),
        401,
        "invalid_token",
    ),
    "iat_in_the_future_exp_valid": (
        lambda k, pem: mint(k, scope="share:acme:*", iat=_in(3600), exp=_in(7200)),
        401,
        "invalid_token",
    ),
    "exp_as_string": (
        lambda k, pem: mint(k, scope="share:acme:*", exp=str(_in(300))),
        401,
        "invalid_token",
    ),
    "exp_as_boolean": (
        lambda k, pem: mint(k, scope="share:acme:*", exp=True),
        401,
        "invalid_token",
    ),
    "exp_null": (
        lambda k, pem: mint(k, payload={**claims(scope="share:acme:*"), "exp": None}),
        401,
        "invalid_token",
    ),
    "nbf_as_string": (lambda k, pem: mint(k, scope="share:acme:*", nbf="0"), 401, "invalid_token"),
    "nbf_null": (
        lambda k, pem: mint(k, payload={**claims(scope="share:acme:*"), "nbf": None}),
        401,
        "invalid_token",
    ),
    "audience_with_suffix": (
        lambda k, pem: mint(k, scope="share:acme:*", audience="share-gateway-evil"),
        401,
        "invalid_token",
    ),
    "audience_prefix": (
        lambda k, pem: mint(k, scope="share:acme:*", audience="share-gatewa"),
        401,
        "invalid_token",
    ),
    "issuer_with_suffix": (
        lambda k, pem: mint(k, scope="share:acme:*", issuer="https://idp.test.example.evil"),
        401,
        "invalid_token",
    ),
    "issuer_trailing_slash": (
        lambda k, pem: mint(k, scope="share:acme:*", issuer="https://idp.test.example/"),
        401,
        "invalid_token",
    ),
    "alg_none_capitalised": (
        lambda k, pem: sign_raw({"alg": "None"}, claims(scope="share:acme:*")),
        401,
        "invalid_token",
    ),
    "alg_none_upper_case": (
        lambda k, pem: sign_raw({"alg": "NONE"}, claims(scope="share:acme:*")),
        401,
        "invalid_token",
    ),
    "alg_lower_case": (_with_alg("rs256"), 401, "invalid_token"),
    "alg_with_trailing_space": (_with_alg("RS256 "), 401, "invalid_token"),
    # Last wins for pyjwt; a reader taking the first would see a token for another partner.
    "claims_with_a_scope_twice": (
        lambda k, pem: _claims_text(k, '{"scope": "share:other:*", "sub": "svc", CLAIMS}'),
        401,
        "invalid_token",
    ),
    "sub_with_a_lone_surrogate": (
        lambda k, pem: _claims_text(k, '{"sub": "svc-billing\\udc80", CLAIMS}'),
        401,
        "invalid_token",
    ),
    # The share record's caller: a second line in a `logs query` table.
    "sub_with_a_line_break": (
        lambda k, pem: mint(k, scope="share:acme:*", subject="svc-billing\n2026-01-01  forged"),
        401,
        "invalid_token",
    ),
    "scope_as_list": (
        lambda k, pem: mint(k, payload={**claims(), "scope": ["share:acme:*"]}),
        401,
        "invalid_token",
    ),
    "scope_joined_by_tab": (
        lambda k, pem: mint(k, scope="share:acme:*\tshare:other:*"),
        403,
        "scope_denied",
    ),
    "scope_with_extra_part": (
        lambda k, pem: mint(k, scope="share:acme:credit_assessment:x"),
        403,
        "scope_denied",
    ),
    "scope_case_variant": (lambda k, pem: mint(k, scope="SHARE:acme:*"), 403, "scope_denied"),
    "scope_for_every_partner": (lambda k, pem: mint(k, scope="share:*:*"), 403, "scope_denied"),
}


@pytest.mark.parametrize(("make_token", "status", "code"), TOKENS.values(), ids=TOKENS.keys())
async def test_token_attacks(
    make_gateway: GatewayFactory,
    idp_key: SigningKey,
    tmp_path: Path,
    make_token: Callable[[SigningKey, Path], str],
    status: int,
    code: str,
) -> None:
    gw = await make_gateway()
    token = make_token(idp_key, tmp_path / "idp.pem")  # make_gateway wrote the trusted key there
    response = await send(gw, fill(gw, request(), token))
    await check(gw, response, Refused(status, code))


async def test_a_token_in_the_query_string_is_never_read(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await send(
        gw, fill(gw, request(target=f"{ASSESS}?access_token={TOKEN}", auth=False))
    )
    await check(gw, response, Refused(401, "invalid_token"))


@dataclass
class KeyServer:
    """A loopback server holding the identity provider's JWKS under /idp/ and the attacker's
    everywhere else; it records every path requested."""

    hits: list[str]
    port: int

    @property
    def idp_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/idp/jwks.json"

    def attacker_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/evil/{name}"


@pytest.fixture
async def key_server(idp_key: SigningKey) -> AsyncIterator[KeyServer]:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        key = idp_key if request.path.startswith("/idp/") else ATTACKER
        return web.json_response({"keys": [key.public_jwk()]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield KeyServer(hits, site.port)
    await runner.cleanup()


@pytest.mark.parametrize("key_source", ["public_key_file", "jwks_url"])
async def test_token_key_urls_are_never_fetched(
    make_gateway: GatewayFactory, key_server: KeyServer, key_source: str
) -> None:
    auth = {"public_key_file": None, "jwks_url": key_server.idp_url}
    gw = await make_gateway(settings={"auth": auth} if key_source == "jwks_url" else None)
    for kid in ("idp-1", "attacker-1"):
        for members in (("jku",), ("x5u",), ("jku", "x5u")):
            headers = {name: key_server.attacker_url(name) for name in members}
            token = mint(ATTACKER.with_kid(kid), scope="share:acme:*", headers=headers)
            response = await send(gw, fill(gw, request(), token))
            await check(gw, response, Refused(401, "invalid_token"))
    # Only the configured JWKS is ever read (at start-up, and again for an unknown kid).
    assert [hit for hit in key_server.hits if not hit.startswith("/idp/")] == []
    assert set(key_server.hits) == ({"/idp/jwks.json"} if key_source == "jwks_url" else set())


# --- 6. JSON that parsers read differently --------------------------------------------------------

APPLICANT = b'"applicant": {"user_id": "u-1", "name": "Wang"}'

JSON_CASES: dict[str, tuple[bytes, Expectation]] = {
    "case_variant_keys": (
        b'{"applicant": {"user_id": "u-1", "name": "Wang"}, "Applicant": {"Name": "X"},'
        b' "LOAN_AMOUNT": 1}',
        Shared(b'{"applicant":{"name":"Wang"}}'),
    ),
    "escaped_keys_are_the_same_keys": (
        b'{"applic\\u0061nt": {"user_\\u0069d": "u-1", "n\\u0061me": "Wang"},'
        b' "loan_\\u0061mount": 5000}',
        Shared(),
    ),
    "escaped_slash_key_is_another_key": (
        b"{" + APPLICANT + b', "loan\\/amount": 1}',
        Shared(b'{"applicant":{"name":"Wang"}}'),
    ),
    "nul_in_key": (
        b'{"applicant": {"user_id": "u-1", "name\\u0000": "X", "name": "Wang"}}',
        Shared(b'{"applicant":{"name":"Wang"}}'),
    ),
    "nul_in_a_kept_value": (
        b'{"applicant": {"user_id": "u-1", "name": "Wa\\u0000ng"}}',
        Shared(b'{"applicant":{"name":"Wa\\u0000ng"}}'),
    ),
    "zero_width_space_in_key": (
        b'{"applicant": {"user_id": "u-1", "na\\u200bme": "X", "name": "Wang"}}',
        Shared(b'{"applicant":{"name":"Wang"}}'),
    ),
    "cyrillic_homoglyph_key": (
        '{"applicant": {"user_id": "u-1", "n\u0430me": "X", "name": "Wang"}}'.encode(),
        Shared(b'{"applicant":{"name":"Wang"}}'),
    ),
    "proto_key": (
        b"{" + APPLICANT + b', "__proto__": {"admin": true}, "constructor": {"x": 1}}',
        Shared(b'{"applicant":{"name":"Wang"}}'),
    ),
    "minus_zero": (
        b"{" + APPLICANT + b', "loan_amount": -0}',
        Shared(b'{"applicant":{"name":"Wang"},"loan_amount":0}'),
    ),
    "minus_zero_float": (
        b"{" + APPLICANT + b', "loan_amount": -0.0}',
        Shared(b'{"applicant":{"name":"Wang"},"loan_amount":-0.0}'),
    ),
    "exponent_with_plus": (
        b"{" + APPLICANT + b', "loan_amount": 1.0e+2}',
        Shared(b'{"applicant":{"name":"Wang"},"loan_amount":100.0}'),
    ),
    "upper_case_exponent": (
        b"{" + APPLICANT + b', "loan_amount": 5E3}',
        Shared(b'{"applicant":{"name":"Wang"},"loan_amount":5000.0}'),
    ),
    "largest_unsigned_64_bit_integer": (
        b"{" + APPLICANT + b', "loan_amount": 18446744073709551615}',
        Shared(b'{"applicant":{"name":"Wang"},"loan_amount":18446744073709551615}'),
    ),
    "integer_just_past_64_bits": (
        b"{" + APPLICANT + b', "loan_amount": 18446744073709551616}',
        Refused(400, "malformed_body"),
    ),
    "integer_just_below_signed_64_bits": (
        b"{" + APPLICANT + b', "loan_amount": -9223372036854775809}',
        Refused(400, "malformed_body"),
    ),
    "overflow_in_a_stripped_field": (
        b"{" + APPLICANT + b', "debug": 1e400}',
        Refused(400, "malformed_body"),
    ),
    "float_a_double_reads_as_zero": (
        b"{" + APPLICANT + b', "loan_amount": 1e-400}',
        Refused(400, "malformed_body"),
    ),
    "float_of_more_digits_than_a_double_keeps": (
        b"{" + APPLICANT + b', "loan_amount": 5000.000000000000000001}',
        Refused(400, "malformed_body"),
    ),
    "underflow_in_a_stripped_field": (
        b"{" + APPLICANT + b', "debug": [0.0, -1e-999]}',
        Refused(400, "malformed_body"),
    ),
    "float_written_to_17_digits": (
        b"{" + APPLICANT + b', "loan_amount": 0.10000000000000001}',
        Shared(b'{"applicant":{"name":"Wang"},"loan_amount":0.1}'),
    ),
    "float_with_trailing_zeros": (
        b"{" + APPLICANT + b', "loan_amount": 18500.500000000000000000}',
        Shared(b'{"applicant":{"name":"Wang"},"loan_amount":18500.5}'),
    ),
    "object_nesting_100k_deep": (
        b"{" + APPLICANT + b', "meta": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
        Refused(400, "malformed_body"),
    ),
    "unbalanced_nesting_100k_deep": (
        b"{" + APPLICANT + b', "meta": ' + b"[" * 100_000,
        Refused(400, "malformed_body"),
    ),
    "duplicate_key_in_a_stripped_subtree": (
        b"{" + APPLICANT + b', "debug": {"a": 1, "a": 2}}',
        Refused(400, "malformed_body"),
    ),
    "duplicate_key_by_unicode_escape_case": (
        b'{"applicant": {"user_id": "u-1", "n\\u0061me": "X", "n\\u0061me": "Y"}}',
        Refused(400, "malformed_body"),
    ),
}


@pytest.mark.parametrize(("body", "expected"), JSON_CASES.values(), ids=JSON_CASES.keys())
async def test_json_interoperability(
    make_gateway: GatewayFactory, body: bytes, expected: Expectation
) -> None:
    gw = await make_gateway()
    await check(gw, await send(gw, fill(gw, request(body=body))), expected)


async def test_a_hundred_thousand_tiny_keys_within_the_byte_limit(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings={"limits": {"max_body_bytes": 2_000_000}})
    keys = b",".join(b'"k%x":0' % i for i in range(100_000))
    body = b"{" + APPLICANT + b"," + keys + b"}"
    assert len(body) < 2_000_000
    response = await send(gw, fill(gw, request(body=body)))
    await check(gw, response, Shared(b'{"applicant":{"name":"Wang"}}'))


# --- 7. compression bombs and chunked bodies over the limit ---------------------------------------

BOMB_PLAIN = applicant_doc(meta={"pad": "0" * 5_000_000})


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data, 9)


def _raw_deflate(data: bytes) -> bytes:
    encoder = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return encoder.compress(data) + encoder.flush()


BODIES: dict[str, tuple[bytes, str, dict[str, Any], Expectation]] = {
    "deflate_bomb": (_deflate(BOMB_PLAIN), "deflate", {}, Refused(413, "body_too_large")),
    "gzip_bomb_in_small_chunks": (
        gzip.compress(BOMB_PLAIN),
        "gzip",
        {"chunked": True},
        Refused(413, "body_too_large"),
    ),
    "gzip_in_gzip": (
        gzip.compress(gzip.compress(GOOD_BODY)),
        "gzip",
        {},
        Refused(400, "malformed_body"),
    ),
    "bomb_in_gzip_in_gzip": (
        gzip.compress(gzip.compress(BOMB_PLAIN)),
        "gzip",
        {},
        Refused(400, "malformed_body"),
    ),
    "concatenated_gzip_members": (
        # The first member alone is the good body: only the second one can be refused.
        gzip.compress(GOOD_BODY) + gzip.compress(b" "),
        "gzip",
        {},
        Refused(400, "malformed_body"),
    ),
    "gzip_labelled_deflate": (
        gzip.compress(GOOD_BODY),
        "deflate",
        {},
        Refused(400, "malformed_body"),
    ),
    "raw_deflate_without_zlib_header": (
        _raw_deflate(GOOD_BODY),
        "deflate",
        {},
        Refused(400, "malformed_body"),
    ),
    "gzip_within_the_limit": (gzip.compress(GOOD_BODY), "gzip", {}, Shared()),
    "exactly_the_limit": (
        applicant_doc(meta={"pad": "0" * 937}),  # 1000 bytes, Content-Length: 1000
        "identity",
        SMALL_BODY_LIMIT,
        Shared(b'{"applicant":{"name":"Wang"},"meta":{"pad":"' + b"0" * 937 + b'"}}'),
    ),
    "gzip_decoding_to_exactly_the_limit": (
        gzip.compress(applicant_doc(meta={"pad": "0" * 937})),  # 1000 bytes once decoded
        "gzip",
        SMALL_BODY_LIMIT,
        Shared(b'{"applicant":{"name":"Wang"},"meta":{"pad":"' + b"0" * 937 + b'"}}'),
    ),
    "gzip_bomb_with_a_small_limit": (
        gzip.compress(applicant_doc(meta={"pad": "0" * 2000})),
        "gzip",
        SMALL_BODY_LIMIT,
        Refused(413, "body_too_large"),
    ),
    "one_byte_chunks_over_the_limit": (
        applicant_doc(meta={"pad": "x" * 1200}),
        "identity",
        {"chunked": True, "chunk_size": 1, **SMALL_BODY_LIMIT},
        Refused(413, "body_too_large"),
    ),
}


@pytest.mark.parametrize(
    ("body", "coding", "options", "expected"), BODIES.values(), ids=BODIES.keys()
)
async def test_compressed_and_chunked_bodies(
    make_gateway: GatewayFactory,
    body: bytes,
    coding: str,
    options: dict[str, Any],
    expected: Expectation,
) -> None:
    options = dict(options)
    is_chunked = options.pop("chunked", False)
    chunk_size = options.pop("chunk_size", 512)
    gw = await make_gateway(settings=options or None)
    headers = [f"Content-Encoding: {coding}"] if coding != "identity" else []
    if is_chunked:
        data = request(CHUNKED, *headers, body=chunked(body, chunk_size), length=False)
    else:
        data = request(*headers, body=body)
    await check(gw, await send(gw, fill(gw, data)), expected)


async def test_a_chunk_announcing_more_than_the_limit_is_cut_off(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)
    # One chunk claims 4 GiB; the gateway stops reading once the limit is passed.
    body = b"ffffffff\r\n" + applicant_doc(meta={"pad": "x" * 1500})
    response = await send(gw, fill(gw, request(CHUNKED, body=body, length=False)))
    await check(gw, response, Refused(413, "body_too_large"))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize(
    ("pad", "expected"),
    [
        (937, Shared(b'{"applicant":{"name":"Wang"},"meta":{"pad":"' + b"0" * 937 + b'"}}')),
        (938, Refused(413, "body_too_large")),
    ],
    ids=["exactly_the_limit", "one_byte_over"],
)
async def test_a_chunked_body_still_on_its_way_is_capped_at_its_last_byte(
    make_gateway: GatewayFactory, pad: int, expected: Expectation
) -> None:
    gw = await make_gateway(settings=SMALL_BODY_LIMIT)
    body = applicant_doc(meta={"pad": "0" * pad})
    assert len(body) == 1000 + pad - 937
    async with connection(gw) as (reader, writer):
        # The head and a first chunk, and the rest once those were taken: the bytes still on
        # their way are counted as they come, not only those there at once.
        writer.write(fill(gw, request(CHUNKED, body=b"", length=False)) + _chunk(body[:100]))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(_chunk(body[100:]) + b"0\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        response = await read_response(reader)
    await check(gw, response, expected)


# --- 8. slow and vanishing clients ----------------------------------------------------------------


async def test_a_trickled_chunked_body_is_cut_off_with_408(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings={"limits": {"body_read_timeout_s": 0.5}})
    head, _, _ = fill(gw, request(CHUNKED, body=b"", length=False)).partition(b"\r\n\r\n")
    async with connection(gw) as (reader, writer):
        writer.write(head + b"\r\n\r\n")
        # Valid one-byte chunks, one every 0.02 s: data keeps flowing, the deadline still holds.
        sender = asyncio.create_task(trickle(writer, chunked(GOOD_BODY * 4, 1), 0.02))
        try:
            response = await read_response(reader)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    await check(gw, response, Refused(408, "request_timeout"))


@pytest.mark.parametrize("sent", [0, 1, 30], ids=["headers_only", "one_byte", "half_the_body"])
async def test_a_client_that_vanishes_mid_upload(make_gateway: GatewayFactory, sent: int) -> None:
    gw = await make_gateway()
    body = applicant_doc(meta={"pad": "x" * 100})
    head, _, _ = fill(gw, request(body=body)).partition(b"\r\n\r\n")
    async with connection(gw) as (_, writer):
        writer.write(head + b"\r\n\r\n" + body[:sent])
        await writer.drain()
        await eventually(lambda: server_of(gw).open_connections == 1)
    await eventually(lambda: server_of(gw).open_connections == 0)
    # The lost connection reaches the handler as a failed body read: a body cut short.
    await eventually(lambda: len(gw.log.records) == 1)
    [record] = gw.log.records
    assert (record.decision, record.reason) == ("denied", "malformed_body")
    assert (record.bytes_sent, record.records) == (0, 0)
    assert gw.partner.received == []
    await assert_still_serving(gw)


@pytest.mark.parametrize(
    "sent",
    [b"1", b'1a\r\n{"applicant"', b'5\r\n{"app\r\n'],
    ids=["in_a_chunk_size", "in_chunk_data", "between_chunks"],
)
async def test_a_client_that_vanishes_mid_chunk(make_gateway: GatewayFactory, sent: bytes) -> None:
    gw = await make_gateway()
    async with connection(gw) as (_, writer):
        writer.write(fill(gw, request(CHUNKED, body=b"", length=False)) + sent)
        await writer.drain()
        await eventually(lambda: gw.runtime.shares_in_progress == 1)
    await eventually(lambda: server_of(gw).open_connections == 0)
    # A cut, not broken framing: refused as a body cut short, whatever the parser had read.
    await eventually(lambda: len(gw.log.records) == 1)
    [record] = gw.log.records
    assert (record.decision, record.reason) == ("denied", "malformed_body")
    assert (record.bytes_sent, record.records) == (0, 0)
    assert gw.partner.received == []
    await assert_still_serving(gw)


@pytest.mark.parametrize(
    ("requests", "statuses"),
    [
        ([request(close=False)], [200]),
        ([request(close=False), request(auth=False, close=False)], [200, 401]),
        ([request(auth=False, close=False)], [401]),
    ],
    ids=["one_share", "two_pipelined", "a_refusal"],
)
async def test_a_caller_that_half_closes_after_its_request_gets_every_answer(
    make_gateway: GatewayFactory, requests: list[bytes], statuses: list[int]
) -> None:
    gw = await make_gateway()
    async with connection(gw) as (reader, writer):
        writer.write(b"".join(fill(gw, data) for data in requests))
        # The caller's FIN says it sends nothing more, not that it stopped reading.
        writer.write_eof()
        answers = [await read_response(reader) for _ in requests]
        # Nothing more can arrive: the connection ends with the last answer.
        assert await closed_by_peer(reader, within=1.0)
    assert [a.status for a in answers] == statuses
    shared = [a.headers["x-share-id"] for a in answers if a.status == 200]
    assert [seen.body for seen in gw.partner.received] == [GOOD_FORWARDED] * len(shared)
    assert [seen.headers["X-Share-Id"] for seen in gw.partner.received] == shared
    assert [(r.share_id, r.decision) for r in gw.log.records] == [
        (a.headers["x-share-id"], "shared" if a.status == 200 else "denied") for a in answers
    ]
    gw.partner.received.clear()
    await assert_still_serving(gw)


async def test_a_connection_that_ended_is_freed_at_once(make_gateway: GatewayFactory) -> None:
    # Without the cyclic collector, which a running gateway calls rarely (`heap`): a connection's
    # handler and the body it kept referring to each other stayed in memory after it closed.
    gw = await make_gateway()

    def handlers() -> int:
        return sum(isinstance(o, LimitedRequestHandler) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        before = handlers()
        for close in (False, True):
            async with connection(gw) as (reader, writer):
                writer.write(fill(gw, request(close=close)))
                assert (await read_response(reader)).status == 200
            await eventually(lambda: handlers() == before)
    finally:
        gc.enable()
    assert [seen.body for seen in gw.partner.received] == [GOOD_FORWARDED] * 2


async def test_a_caller_that_half_closes_mid_body_is_cut_short(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    head, _, body = fill(gw, request(close=False)).partition(b"\r\n\r\n")
    async with connection(gw) as (reader, writer):
        writer.write(head + b"\r\n\r\n" + body[:10])
        await writer.drain()
        await eventually(lambda: gw.runtime.shares_in_progress == 1)
        writer.write_eof()
        # No answer can be owed for a body that never came whole: closed at once, as before.
        assert await reader.read() == b""
    await eventually(lambda: len(gw.log.records) == 1)
    [record] = gw.log.records
    assert (record.decision, record.reason) == ("denied", "malformed_body")
    assert gw.partner.received == []
    await assert_still_serving(gw)


async def test_a_client_that_vanishes_while_the_partner_answers(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    gw.partner.reply = Reply(delay_s=0.5)
    async with connection(gw) as (_, writer):
        writer.write(fill(gw, request()))
        await writer.drain()
        await eventually(lambda: len(gw.partner.received) == 1)
    # The share was decided and forwarded before the caller left: its outcome is still recorded.
    share_id = gw.log.records[-1].share_id
    await eventually(lambda: gw.log.outcome_of(share_id) is not None)
    outcome = gw.log.outcome_of(share_id)
    assert outcome is not None
    assert (outcome.outcome, outcome.upstream_status) == ("delivered", 200)
    assert gw.partner.received[0].body == GOOD_FORWARDED
    await eventually(lambda: server_of(gw).open_connections == 0)
    gw.partner.reply = Reply()
    gw.partner.received.clear()
    await assert_still_serving(gw)
