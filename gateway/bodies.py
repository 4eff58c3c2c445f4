"""Reading bodies under a byte cap and a deadline, and decoding gzip/deflate without bombs."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Final

from aiohttp import ClientPayloadError, HttpVersion11, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    MalformedBody,
    RequestTimeout,
    UnsupportedMediaType,
)

# Set on a request once its caller was told `100 Continue`.
_CONTINUED: Final = web.RequestKey("continued", bool)

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def content_coding(header: str | None) -> str:
    """The single content coding of a body: identity, gzip or deflate; anything else is refused."""
    if header is None:
        return "identity"
    coding = header.strip().lower()
    if coding in {"", "identity"}:
        return "identity"
    if coding in _WBITS:
        return coding
    # Stacked codings ("gzip, gzip"), br, zstd, compress: not decoded, so never accepted.
    raise UnsupportedMediaType("the content encoding is not supported (gzip or deflate)")


def decode(
    data: bytes, coding: str, *, limit: int, too_large: Callable[[str], GatewayError]
) -> bytes:
    """Decode `data` producing at most `limit` bytes; a truncated or padded stream is malformed."""
    if coding == "identity":
        return data
    decoder = zlib.decompressobj(_WBITS[coding])
    try:
        out = decoder.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MalformedBody(f"the {coding} body cannot be decoded") from exc
    if len(out) > limit or decoder.unconsumed_tail:
        raise too_large(f"the decoded body exceeds {limit} bytes")
    if not decoder.eof:
        raise MalformedBody(f"the {coding} body is truncated")
    if decoder.unused_data:
        raise MalformedBody(f"the {coding} body has trailing data")
    return out


def awaits_continue(request: web.BaseRequest) -> bool:
    """The caller asked, as HTTP/1.1 lets it, to be told `100 Continue` before it sends its body.

    Any other expectation is ignored (RFC 9110 10.1.1 allows it), and so is this one over
    HTTP/1.0, which has no interim answers.
    """
    expect = request.headers.get("Expect", "")
    return request.version == HttpVersion11 and expect.lower() == "100-continue"


async def send_continue(request: web.BaseRequest) -> None:
    """Tell a caller that waits for it to send its body: once, when the body is about to be
    read. A request refused on its head alone is answered without it, so its caller never
    sends a body only to have it thrown away."""
    if request.get(_CONTINUED) or not awaits_continue(request) or not request.body_exists:
        return
    request[_CONTINUED] = True
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # An interim answer is not the answer: the server's error page may still follow it.
    request.writer.output_size = 0


def body_withheld(request: web.BaseRequest) -> bool:
    """The caller may still hold its body back: it waits for a `100 Continue` it was not sent."""
    return awaits_continue(request) and request.body_exists and not request.get(_CONTINUED)


async def read_capped(
    stream: StreamReader,
    *,
    declared_length: int | None,
    limit: int,
    timeout_s: float | None,
    too_large: Callable[[str], GatewayError] = BodyTooLarge,
    stalled: Callable[[str], GatewayError] = RequestTimeout,
) -> bytes:
    """Read a whole body, refusing it as soon as it passes `limit` bytes or `timeout_s` seconds.

    `timeout_s=None` sets no deadline of its own, for a caller that holds one already.
    """
    if declared_length is not None and declared_length > limit:
        raise too_large(f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        # A small body has usually arrived whole with the headers: it is taken without the cost
        # of arming a deadline, which only a body still on its way needs.
        if chunk := stream.read_nowait():
            size = len(chunk)
            if size > limit:
                raise too_large(f"the body exceeds {limit} bytes")
            chunks.append(chunk)
        if stream.at_eof():
            # Taking bytes makes aiohttp read on (`resume_reading`): the server may find the
            # body's framing broken then, and fail it as the bytes taken were its last.
            if (error := stream.exception()) is not None:
                raise error
            return chunk
        async with asyncio.timeout(timeout_s):
            while chunk := await stream.readany():
                size += len(chunk)
                if size > limit:
                    raise too_large(f"the body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise stalled(f"the body was not received within {timeout_s:g} s") from exc
    except (ConnectionError, ClientPayloadError) as exc:
        raise MalformedBody("the connection closed before the body was complete") from exc
    except (RequestPayloadError, HttpProcessingError) as exc:
        # The server's parser failed in the body (its chunk framing): it cannot be complete.
        # aiohttp's C parser fails it as the first, `gateway.server` too; its Python parser
        # may pass its own error on as the second.
        raise MalformedBody("the body's chunked framing is broken") from exc
    return b"".join(chunks)
