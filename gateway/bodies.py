"""Reading bodies under a byte cap and a deadline, and decoding gzip/deflate without bombs."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

from aiohttp import ClientPayloadError, StreamReader
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    MalformedBody,
    RequestTimeout,
    UnsupportedMediaType,
)

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
