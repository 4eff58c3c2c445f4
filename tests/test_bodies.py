"""Capped body reading and content decoding."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib
from unittest import mock

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import TransferEncodingError
from aiohttp.web_protocol import RequestPayloadError

from gateway.bodies import content_coding, decode, read_capped
from gateway.errors import BodyTooLarge, MalformedBody, RequestTimeout, UnsupportedMediaType


def _stream(*chunks: bytes, eof: bool = True) -> StreamReader:
    loop = asyncio.get_running_loop()
    stream = StreamReader(mock.Mock(spec=BaseProtocol), 2**16, loop=loop)
    for chunk in chunks:
        stream.feed_data(chunk)
    if eof:
        stream.feed_eof()
    return stream


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "identity"),
        ("", "identity"),
        ("identity", "identity"),
        ("GZIP", "gzip"),
        (" deflate ", "deflate"),
    ],
)
def test_content_coding_accepts_known(header: str | None, expected: str) -> None:
    assert content_coding(header) == expected


@pytest.mark.parametrize("header", ["br", "zstd", "gzip, gzip", "compress", "gzip;q=1"])
def test_content_coding_refuses_others(header: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        content_coding(header)


def test_decode_gzip_and_deflate() -> None:
    data = b'{"a": 1}' * 10
    assert decode(gzip.compress(data), "gzip", limit=1000, too_large=BodyTooLarge) == data
    assert decode(zlib.compress(data), "deflate", limit=1000, too_large=BodyTooLarge) == data


def test_decode_stops_a_bomb_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            decode(bomb, "gzip", limit=1_000_000, too_large=BodyTooLarge)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Never inflated whole: the 50 MB it holds would be refused only once in memory.
    assert peak < 5_000_000


@pytest.mark.parametrize(
    "payload",
    [
        gzip.compress(b"{}")[:-5],  # truncated
        gzip.compress(b"{}") + b"junk",  # trailing data
        gzip.compress(b"{}") + gzip.compress(b"{}"),  # a second member
        b"not gzip at all",
    ],
)
def test_decode_refuses_broken_streams(payload: bytes) -> None:
    with pytest.raises(MalformedBody):
        decode(payload, "gzip", limit=1000, too_large=BodyTooLarge)


async def test_read_capped_reads_everything_within_the_limit() -> None:
    body = await read_capped(_stream(b"ab", b"cd"), declared_length=None, limit=4, timeout_s=1)
    assert body == b"abcd"


async def test_read_capped_refuses_by_declared_length_without_reading() -> None:
    stream = _stream(b"x")
    with pytest.raises(BodyTooLarge):
        await read_capped(stream, declared_length=5, limit=4, timeout_s=1)
    assert not stream.at_eof()  # the byte is still unread


async def test_read_capped_refuses_a_chunked_body_over_the_limit() -> None:
    with pytest.raises(BodyTooLarge):
        await read_capped(_stream(b"abc", b"de"), declared_length=None, limit=4, timeout_s=1)


async def _read_arriving(first: bytes, *rest: bytes, limit: int) -> bytes:
    """`read_capped` of a body whose `rest` arrives once its `first` bytes are taken."""
    stream = _stream(first, eof=False)
    reading = asyncio.create_task(
        read_capped(stream, declared_length=None, limit=limit, timeout_s=5)
    )
    await asyncio.sleep(0)  # the first bytes are taken: it waits for the rest
    for chunk in rest:
        stream.feed_data(chunk)
    stream.feed_eof()
    return await reading


async def test_read_capped_takes_a_body_of_exactly_the_limit_that_arrives_in_pieces() -> None:
    assert await _read_arriving(b"ab", b"c", b"d", limit=4) == b"abcd"


async def test_read_capped_refuses_a_body_one_byte_over_the_limit_that_arrives_in_pieces() -> None:
    with pytest.raises(BodyTooLarge):
        await _read_arriving(b"ab", b"c", b"de", limit=4)


async def test_read_capped_cuts_off_a_stalled_body() -> None:
    with pytest.raises(RequestTimeout):
        await read_capped(_stream(b"ab", eof=False), declared_length=None, limit=4, timeout_s=0.05)


@pytest.mark.parametrize(
    "error",
    [RequestPayloadError("broken"), TransferEncodingError("broken")],
    ids=["failed_by_the_server", "failed_by_the_python_parser"],
)
async def test_read_capped_refuses_a_body_the_parser_broke_off_in(error: Exception) -> None:
    stream = _stream(b'{"a', eof=False)
    reading = asyncio.create_task(read_capped(stream, declared_length=None, limit=100, timeout_s=5))
    await asyncio.sleep(0)  # the first bytes are read: it waits for more
    stream.set_exception(error)
    with pytest.raises(MalformedBody):
        await reading


async def test_read_capped_refuses_a_body_failed_as_its_bytes_are_taken() -> None:
    # Taking bytes makes aiohttp read on, and the server may find the framing broken in what
    # it reads then: the body fails and ends while the bytes already taken look like all of it.
    loop = asyncio.get_running_loop()
    protocol = mock.Mock(spec=BaseProtocol)
    stream = StreamReader(protocol, 2**16, loop=loop)

    def reads_on(*args: object, **kwargs: object) -> None:
        if not stream.is_eof():
            stream.set_exception(RequestPayloadError("broken"))
            stream.feed_eof()

    protocol.resume_reading.side_effect = reads_on
    stream.feed_data(b'{"a": 1}')
    with pytest.raises(MalformedBody):
        await read_capped(stream, declared_length=None, limit=100, timeout_s=1)
