"""The one seam to the network of partners: send a filtered request, get a bounded response.

The client is small on purpose. It speaks HTTP/1.1 over pooled keep-alive connections, parses
answers with llhttp (httptools), which refuses every ambiguous framing (two lengths, a length
with chunking, a bare LF, an obs-fold), and does nothing it was not asked to: no retries, no
redirects, no cookies, no default headers, no decompression beyond what `bodies.decode` allows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import re
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, Protocol, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.bodies import content_coding, decode
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.origins import Origin, origin_of

if TYPE_CHECKING:
    from gateway.partnertls import PartnerTls

Failure = Literal["error", "timeout", "possibly_delivered"]


# Not frozen, as ShareRecord (gateway/sharelog/record.py); `Final` keeps it immutable.
@dataclass(slots=True)
class UpstreamRequest:
    method: Final[str]
    url: Final[str]  # already built from the contract's base URL and the matched template
    headers: Final[tuple[tuple[str, str], ...]]
    body: Final[bytes | None]
    timeout_s: Final[float]
    max_response_bytes: Final[int]
    # False: a new connection, `Connection: close`, and closed after the answer.
    reuse_connection: Final[bool] = True
    # Awaited once a connection is ready, just before the first byte is written (within
    # `timeout_s`): the partner's rate is kept at the moment it receives the share, whatever
    # the share waited for in between (a free connection, a handshake). True: it waited.
    before_send: Final[Callable[[], Awaitable[bool]] | None] = None
    # The partner's own CA and client certificate; None: the system's trust store, no client
    # certificate.
    tls: Final[PartnerTls | None] = None


# Not frozen, as ShareRecord (gateway/sharelog/record.py); `Final` keeps it immutable.
@dataclass(slots=True)
class UpstreamResponse:
    status: Final[int]
    headers: Final[CIMultiDictProxy[str]]  # a name may come more than once
    body: Final[bytes]  # decoded (whatever Content-Encoding says), complete, within the cap
    latency_ms: Final[float]


@dataclass(slots=True)
class UpstreamFailure(Exception):
    """Raised by an `Upstream`: the error to answer with, and whether the partner may have data."""

    error: GatewayError
    failure: Failure
    latency_ms: float = 0.0
    status: int | None = field(default=None)


class Upstream(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...


# What idle times are measured with (tests move it on).
_clock = time.monotonic
# A header that could end its line early would let one value write another header.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_UNSAFE_VALUE = re.compile(r"[\r\n\0]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A partner's status line and header fields together; more is a broken answer, not a big one.
MAX_ANSWER_HEAD_BYTES = 64 * 1024


def _split(url: str) -> tuple[Origin, str]:
    start = url.find("://") + 3
    slash = url.find("/", start)
    query = url.find("?", start)
    cut = min(i for i in (slash, query, len(url)) if i != -1)
    target = url[cut:]
    if target.startswith("?"):
        target = "/" + target
    return origin_of(url[:cut]), target or "/"


def _request_bytes(origin: Origin, target: str, request: UpstreamRequest) -> bytes:
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {origin.authority}"]
    for name, value in request.headers:
        if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
            raise ValueError(f"the partner request's {name!r} header would break its framing")
        lines.append(f"{name}: {value}")
    body = request.body
    if body is not None or request.method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body or b'')}")
    if not request.reuse_connection:
        lines.append("Connection: close")
    head = "\r\n".join(lines)
    # Header values came in as text decoded from bytes; the same bytes go out.
    return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + (body or b"")


# Answers that have no content (RFC 9110 15.3.5, 15.3.6).
_NO_CONTENT = frozenset({204, 205})
_HTTP_1 = frozenset({"1.0", "1.1"})
# The header fields that say where a body ends.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# A chunk-size line: the size in hex, then its extensions or the line's end. A trailer field
# never reads as one: a field name is followed by a colon.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)[;\r]")
# What is kept of a line begun in an earlier read: its hex digits and the byte after them,
# up to this many bytes (llhttp reads no size of more than 16 digits, leading zeros aside).
_LINE_KEPT = 32
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_SIZE_START = re.compile(rb"[0-9A-Fa-f]*[^0-9A-Fa-f]?")


class _Answer(NamedTuple):
    status: int
    headers: CIMultiDict[str]
    body: bytes


class _Broken(Exception):
    """The partner's answer cannot be read as one HTTP response. `refused`: the partner ended
    the TLS handshake, so it never took the request, though its bytes were written."""

    def __init__(self, error: GatewayError, *, refused: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.refused = refused


# The alerts a TLS server sends when it refuses the handshake over certificates (ours missing,
# unknown, expired, or its check of them failing), as OpenSSL names them once received. Under
# TLS 1.3 the client's handshake ends before the server has checked our certificate, so the
# request is written before the refusal arrives: the partner read none of it.
HANDSHAKE_REFUSALS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV1_ALERT_DECRYPT_ERROR",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    }
)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, closed: Callable[[], None]) -> None:
        self._loop = loop
        self._closed = closed  # gives back the connection's place under the client's ceiling
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = False  # set when an answer completed cleanly on a kept-alive connection
        self._waiter: asyncio.Future[_Answer] | None = None
        # One parser for the connection's life: llhttp starts on the next answer by itself.
        # It refers back to this protocol; dropped when the connection ends, so that the pair
        # goes with it rather than waiting for the cyclic collector (rare here, see `heap`).
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._limit = 0
        self._status: int | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._faulty_framing = False  # an HTTP/1.0 answer in chunks: read, then closed
        self._head_bytes = 0  # received while the final answer's head is incomplete
        self._framing = 0  # received after the head since the last body bytes: chunk
        # framing and trailer fields, which no other cap bounds
        self._head_fields = 0  # the status lines' and header fields' bytes, interim answers'
        # included
        self._in_head = True  # header fields after the head are trailers, never headers
        self._chunked = False  # the answer's body comes in chunks
        self._chunk_opened = False  # a chunk's size line arrived in this read, the chunk is open
        self._chunk_read = 0  # that chunk's bytes in this read
        # The start of the line still arriving, of a chunked answer (None: too long to keep).
        self._line: bytes | None = b""
        self._complete = True  # no exchange in progress: any byte that arrives is unasked for
        self._tls = False
        # A certificate alert may end this connection before the partner read a request: a
        # TLS 1.3 connection that has not carried an answer yet (see `HANDSHAKE_REFUSALS`).
        self._refusable = False
        # What ended the connection (None: a close), for `contracts connect`, which waits on
        # a connection it writes nothing to.
        self.ended: asyncio.Future[BaseException | None] = loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._tls = transport.get_extra_info("sslcontext") is not None
        ssl_object = transport.get_extra_info("ssl_object")
        # Under TLS 1.2 the partner checks our certificate before our handshake ends, so its
        # refusal fails the connecting; an alert later is a renegotiation, which a server asks
        # for once it has read the request. TLS 1.3 has none, and the client does not offer to
        # send a certificate after the handshake (`post_handshake_auth` stays off).
        self._refusable = (
            isinstance(ssl_object, ssl.SSLObject) and ssl_object.version() == "TLSv1.3"
        )

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return  # the connection ended
        if self._complete:
            # Bytes nobody asked for (a second answer, an error page written late): whatever
            # comes next on this connection could be taken for the next share's answer.
            self._close()
            return
        in_head = self._in_head
        if in_head:
            self._head_bytes += len(data)
        else:
            self._framing += len(data)
        self._chunk_opened = False
        try:
            parser.feed_data(data)
            if self._chunked:
                self._check_chunk_size(data)
            if in_head and self._in_head and self._head_bytes > MAX_ANSWER_HEAD_BYTES:
                # Checked per read, before llhttp gathers more of one endless header value.
                raise _Broken(_too_large(f"its head exceeds {MAX_ANSWER_HEAD_BYTES} bytes"))
            if not in_head and not self._complete and self._framing > MAX_ANSWER_HEAD_BYTES:
                # An endless trailer field or chunk extension: no body byte comes of it, and
                # llhttp's copy of the growing field costs more with every read.
                raise _Broken(
                    _too_large(f"more than {MAX_ANSWER_HEAD_BYTES} bytes arrived without body")
                )
        except _Broken as broken:
            self._fail(broken)
        except httptools.HttpParserUpgrade:
            self._fail(_Broken(UpstreamError("the partner switched protocols")))
        except httptools.HttpParserError as exc:
            # A callback's own refusal (too large, a second answer) arrives as its context.
            cause = exc.__context__
            self._fail(cause if isinstance(cause, _Broken) else _Broken(_unreadable()))

    def eof_received(self) -> bool:
        # Over TLS a close is not proof of the end: a cut connection looks the same to us.
        if not self._complete and not self._tls and self._ends_at_close():
            self._finish(keep_alive=False)
        else:
            self._fail(_Broken(_unreadable()))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self.transport = None
        self._parser = None
        self._closed()
        if not self.ended.done():
            self.ended.set_result(exc)
        if isinstance(exc, ssl.SSLError) and exc.reason in HANDSHAKE_REFUSALS and self._refusable:
            refusal = UpstreamError(f"the partner refused the TLS handshake ({exc.reason})")
            self._fail(_Broken(refusal, refused=True))
        else:
            self._fail(_Broken(_unreadable()))

    def _reading(self) -> httptools.HttpResponseParser:
        # For llhttp's callbacks, called from within `feed_data`: the parser is there.
        parser = self._parser
        assert parser is not None
        return parser

    # -- llhttp callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            # A second answer to one request: the connection is no longer in step.
            raise _Broken(_unreadable())
        self._headers, self._body, self._size, self._status = [], [], 0, None
        self._in_head = True
        self._chunked = False

    def on_status(self, reason: bytes) -> None:
        # The status line is part of the head: a long reason phrase that arrives in the same
        # read as the end of the head is never caught by the check after each read.
        self._count_head(len(reason) + len(b"HTTP/1.1 200 \r\n"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            # Counted field by field too: a head that arrives whole in one read is never
            # caught by the check after each read.
            self._count_head(len(name) + len(value) + 4)
            self._headers.append((name, value))
        # else a trailer field of a chunked body: discarded, never taken for a header

    def _count_head(self, size: int) -> None:
        self._head_fields += size
        if self._head_fields > MAX_ANSWER_HEAD_BYTES:
            raise _Broken(_too_large(f"its head exceeds {MAX_ANSWER_HEAD_BYTES} bytes"))

    def on_headers_complete(self) -> None:
        parser = self._reading()
        version = parser.get_http_version()
        if version not in _HTTP_1:
            # llhttp reads `HTTP/2.0 200` or `HTTP/0.9 200` with HTTP/1.1 framing: no telling
            # what such a partner framed, as the gateway refuses these versions from callers.
            raise _Broken(UpstreamError(f"the partner answered in HTTP/{version}"))
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            # Not a status code (RFC 9110 15): no telling what the partner meant.
            raise _Broken(UpstreamError(f"the partner answered with status {status}"))
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints) ends with its head, and the real
            # one follows (RFC 9110 15.2). llhttp reads a body after a 1xx it has no name for
            # (104-199) that states a length or chunks: the bytes of the answer that follows
            # would be taken for that body, and the next answer for the share's.
            if any(name.lower() in _FRAMING for name, _ in self._headers):
                raise _Broken(UpstreamError("the partner's interim answer states a body"))
            return
        self._status = status
        self._in_head = False
        if status in _NO_CONTENT:
            # llhttp reads nothing after a 204's head (RFC 9112 6.3) and a 205's body as any
            # answer's: a length over 0 stated for either, chunks stated for a 204 (never read)
            # or a byte of a 205's chunks is content where there is none. Neither passing it on
            # nor dropping it is sure to be what the partner meant.
            self._limit = 0
        codings: list[bytes] = []
        for name, value in self._headers:
            lowered = name.lower()
            # A 304 has no body whatever length it states: it is the resource's (RFC 9110 8.6).
            if lowered == b"content-length" and status != 304 and int(value) > self._limit:
                raise self._past_cap(f"it declares more than {self._limit} bytes")
            if lowered == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
        if codings and codings != [b"chunked"]:
            # llhttp takes the chunks apart, nothing decodes gzip or deflate under them.
            raise _Broken(UpstreamError("the partner's answer has an unknown transfer coding"))
        if codings and status == 204:
            raise self._past_cap("it comes in chunks")
        # HTTP/1.0 knows no transfer coding: such framing is faulty, and the connection ends
        # after the answer whatever it says of keep-alive (RFC 9112 6.1).
        self._faulty_framing = bool(codings) and version == "1.0"
        self._chunked = bool(codings)
        self._line = b""

    def on_body(self, chunk: bytes) -> None:
        self._framing = 0
        self._size += len(chunk)
        self._chunk_read += len(chunk)
        if self._size > self._limit:
            raise self._past_cap(f"the body exceeds {self._limit} bytes")
        self._body.append(chunk)

    def on_chunk_header(self) -> None:
        self._chunk_opened = True
        self._chunk_read = 0

    def on_chunk_complete(self) -> None:
        self._chunk_opened = False

    def on_message_complete(self) -> None:
        if self._status is None:
            return  # the end of an interim answer
        self._finish(keep_alive=self._reading().should_keep_alive() and not self._faulty_framing)

    def _check_chunk_size(self, data: bytes) -> None:
        """Refuse at once a chunk that declares more than the cap allows, as a declared length
        is refused: its bytes could never be taken, and a partner that stalls after its size
        line would otherwise hold the share until its deadline.

        llhttp says when a size line ended, not what it declared: called after each read, when
        a chunk opened in it is still open, its size line is the line just before its bytes of
        this read (the last chunk, of size 0, may be followed by trailer fields instead, which
        never read as a size). A line begun in an earlier read starts with what was kept of it.
        """
        if self._chunk_opened:
            end = len(data) - self._chunk_read
            if data[end - 1 : end] == b"\n":
                start = data.rfind(b"\n", 0, end - 1) + 1
                if start:
                    line = data[start:end]
                elif self._line is not None:
                    line = self._line + data[:end]
                else:
                    line = b""  # too long to have been kept: left to `on_body`
                declared = _CHUNK_SIZE.match(line)
                room = self._limit - (self._size - self._chunk_read)
                if declared is not None and int(declared[1], 16) > room:
                    raise self._past_cap(f"it declares more than {self._limit} bytes")
        last = data.rfind(b"\n")
        if last >= 0:
            self._line = _size_start(b"", data[last + 1 :])
        elif self._line is not None:
            self._line = _size_start(self._line, data)

    def _past_cap(self, how: str) -> _Broken:
        status = self._status
        if status in _NO_CONTENT:
            return _Broken(UpstreamError(f"the partner's {status} answer carries content: {how}"))
        return _Broken(_too_large(how))

    # -- the exchange --------------------------------------------------------------------------

    @property
    def status(self) -> int | None:
        return self._status

    def send(self, data: bytes, limit: int) -> asyncio.Future[_Answer]:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection closed")
        self.reusable = False
        self._limit = limit
        self._complete = False
        self._status = None
        self._head_bytes = 0
        self._head_fields = 0
        self._framing = 0
        self._in_head = True
        self._waiter = waiter = self._loop.create_future()
        transport.write(data)
        return waiter

    def close(self) -> None:
        """End the connection as TLS asks, with the close_notify alert (`abort` sends none)."""
        self._close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
        self._closed()

    def quiet(self) -> bool:
        """Whether nothing is waiting to be read: no byte and no close since the last answer.

        `data_received` closes a connection on bytes nobody asked for, but only once the event
        loop has read them; bytes (or a close) already on the socket would otherwise be read as
        the next share's answer, or fail it.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        # Over TLS, records decrypted and not yet handed over; the socket is checked as well, as
        # any record waiting there (a second answer, the partner's close_notify) is unasked for.
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject) and ssl_object.pending():
            return False
        sock = transport.get_extra_info("socket")
        return sock is None or not _waiting(sock)

    def _ends_at_close(self) -> bool:
        # An answer with neither a length nor chunking runs until the partner closes.
        if self._status is None:
            return False
        names = {name.lower() for name, _ in self._headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _finish(self, *, keep_alive: bool) -> None:
        self._complete = True
        waiter, self._waiter = self._waiter, None
        status = self._status
        if waiter is None or waiter.done() or status is None:
            return
        headers: CIMultiDict[str] = CIMultiDict(
            (
                name.decode("latin-1"),
                value.decode("utf-8", "surrogateescape"),
            )
            for name, value in self._headers
        )
        self.reusable = keep_alive
        self._refusable = False  # the handshake was over for the partner
        waiter.set_result(_Answer(status, headers, b"".join(self._body)))

    def _fail(self, error: BaseException) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self._close()

    def _close(self) -> None:
        self.reusable = False
        self._complete = True
        if self.transport is not None:
            self.transport.close()
        self._closed()


def _size_start(line: bytes, more: bytes) -> bytes | None:
    """`line` continued by `more`, as far as a chunk size is read from it: its hex digits and
    the byte after them. None when the digits run past `_LINE_KEPT` bytes."""
    if line and line[-1] not in _HEX_DIGITS:
        return line  # ended already: the rest of the line says nothing of the size
    digits = _SIZE_START.match(more, 0, _LINE_KEPT + 1)
    line += digits[0] if digits else b""
    return line if len(line) <= _LINE_KEPT else None


class _Socket(Protocol):
    """What asyncio lends out of a transport's socket (`get_extra_info("socket")`)."""

    def fileno(self) -> int: ...


def _waiting(sock: _Socket) -> bool:
    """Whether a byte or the end of the stream waits on `sock`, read without taking it."""
    # Readable at once means a byte nobody asked for, or the partner's close (or a reset):
    # either way the connection is of no use for the next share. poll, not select: a
    # descriptor may be numbered past select's limit of 1024.
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    return bool(poll.poll(0))


# Threads the client looks partners' names up on. Each is held by one name at a time (one
# lookup per host and port), so as many partners' name servers would all have to hang at once
# before a lookup for another partner waits for a thread.
RESOLVER_THREADS = 8

_AddrInfo = tuple[
    socket.AddressFamily,
    socket.SocketKind,
    int,
    str,
    tuple[str, int] | tuple[str, int, int, int],
]


def _look_up(host: str, port: int) -> list[_AddrInfo]:
    """On a resolver thread: `host`'s addresses, in the order the system's resolver gives them."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [info for info in found if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise OSError(f"no address for {host}")
    return cast(list[_AddrInfo], addresses)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Resolver:
    """Partners' host names, looked up on threads of the client's own, one lookup per host and
    port at a time.

    asyncio looks names up on its default executor (libuv's thread pool under uvloop), shared
    with everything else the process runs on threads, and a lookup whose share gave up keeps its
    thread until the name server answers or the system's resolver stops asking. Here a share
    that needs an address while a lookup for it is in flight waits for that lookup, and one that
    gives up leaves it to the others: a partner whose name server hangs holds one thread.

    Answers are not kept once a lookup ended, failures included: getaddrinfo does not say how
    long an address holds, so a kept one could outlive a partner's move to another address.
    Lookups are few anyway, one per new connection, and the system's resolver caches by the
    records' own lifetimes.
    """

    def __init__(self, threads: int) -> None:
        self._threads = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="upstream-resolver"
        )
        self._lookups: dict[tuple[str, int], asyncio.Future[list[_AddrInfo]]] = {}
        self._closed = False

    async def resolve(self, host: str, port: int) -> list[_AddrInfo]:
        if self._closed:
            raise ConnectionAbortedError("the partner client is closed")
        if _is_ip(host):
            # Read, not looked up: no thread, no name server.
            numeric = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
            return cast(list[_AddrInfo], numeric)
        key = (host, port)
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = self._lookups[key] = self._start(key)
        # A share out of time stops waiting; the lookup goes on for the shares still waiting.
        return await asyncio.shield(lookup)

    def _start(self, key: tuple[str, int]) -> asyncio.Future[list[_AddrInfo]]:
        loop = asyncio.get_running_loop()
        lookup: asyncio.Future[list[_AddrInfo]] = loop.create_future()
        # Every share may have given up by the time it fails: nobody is left to read the error.
        lookup.add_done_callback(lambda done: done.cancelled() or done.exception())

        def settle(done: concurrent.futures.Future[list[_AddrInfo]]) -> None:
            if self._lookups.get(key) is lookup:
                del self._lookups[key]  # the next share asks again, whatever the answer was
            if lookup.done():
                return  # failed when the client closed
            if done.cancelled():
                lookup.set_exception(ConnectionAbortedError("the partner client is closed"))
            elif (error := done.exception()) is not None:
                lookup.set_exception(error)
            else:
                lookup.set_result(done.result())

        def answered(done: concurrent.futures.Future[list[_AddrInfo]]) -> None:
            # On the resolver's thread, or at once when the lookup never ran.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, done)

        self._threads.submit(_look_up, *key).add_done_callback(answered)
        return lookup

    def close(self) -> None:
        self._closed = True
        # A thread still waiting on a name server ends when the system's resolver gives up;
        # nothing waits for it, and the shares waiting on it fail now.
        self._threads.shutdown(wait=False, cancel_futures=True)
        lookups, self._lookups = self._lookups, {}
        for lookup in lookups.values():
            if not lookup.done():
                lookup.set_exception(ConnectionAbortedError("the partner client is closed"))


# An origin's `Origin.key` and the `PartnerTls.identity` its connections were made with ("":
# the shared default context).
_PoolKey = tuple[tuple[str, str, int], str]


async def _connect_to_any(
    loop: asyncio.AbstractEventLoop, addresses: list[_AddrInfo]
) -> socket.socket:
    """A socket connected to the first of `addresses` that accepts, tried in order, as
    `create_connection` tries a name's addresses."""
    errors: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        sock: socket.socket | None = None
        try:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if not isinstance(exc, OSError):
                raise
            errors.append(exc)
        else:
            return sock
    if len({str(error) for error in errors}) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(error) for error in errors)}")


class HttpUpstream:
    """Partners over HTTP(S) on pooled keep-alive connections: at most `connections` open at
    once (in use or idle), and at most `connections_per_origin` in use to one origin (default:
    a quarter of `connections`, at least 1), whatever TLS settings each share comes with.

    Idle connections are pooled by origin and TLS settings (`PartnerTls.identity`): a share
    reuses only a connection made with its own CA and client certificate.

    The cap per origin keeps a partner that hangs from holding every connection: shares to the
    others still find one. A share that can reuse an idle connection to its origin takes it at
    once; one that needs a new connection when all are open closes the longest idle one, of any
    origin, or waits for one to close.

    A connection idle for `idle_timeout_s` is closed, before a partner's own keep-alive timeout
    would close it under a share (a share is never sent twice, so that race would fail it).

    Host names are looked up on the client's own threads, one lookup per host and port at a
    time (`_Resolver`): a partner whose name server hangs holds one of them, not the threads
    the other partners' lookups and the rest of the process need.
    """

    def __init__(
        self,
        *,
        connections: int = 256,
        connections_per_origin: int | None = None,
        idle_timeout_s: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        per_origin = connections_per_origin
        if per_origin is None:
            per_origin = max(1, connections // 4)
        if not 1 <= per_origin <= connections:
            raise ValueError("connections_per_origin must be between 1 and connections")
        self._connections = connections
        self._per_origin = per_origin
        self._idle_timeout_s = idle_timeout_s
        self._ssl = ssl_context
        # By `Origin.key`: one origin written two ways (`LOCALHOST`, `:443` on an https URL)
        # is one partner, with one cap and one pool per TLS settings.
        self._idle: dict[_PoolKey, deque[_Connection]] = {}
        # One place per open connection, held from connecting until the connection closes.
        self._slots: asyncio.Semaphore | None = None
        self._waiting_to_open = 0
        # Shares in progress per origin; one entry for each origin ever called, as many as the
        # contracts have named since start.
        self._in_use: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resolver: _Resolver | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self._connections)
        self._resolver = _Resolver(RESOLVER_THREADS)
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        self._sweeper = asyncio.create_task(self._sweep(), name="upstream-idle-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._resolver is not None:
            self._resolver.close()
        for pool in self._idle.values():
            for connection in pool:
                connection.abort()
        self._idle.clear()
        self._slots = None
        self._in_use.clear()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        slots = self._slots
        if slots is None:
            raise RuntimeError("HttpUpstream.start() was not awaited")
        started = time.perf_counter()
        connection: _Connection | None = None
        sent = False  # once any byte may have gone out, the partner may have the share

        def failed(error: GatewayError, failure: Failure) -> UpstreamFailure:
            status = connection.status if connection is not None else None
            latency = (time.perf_counter() - started) * 1000
            return UpstreamFailure(error, failure, latency, status)

        try:
            origin, target = _split(request.url)
            data = _request_bytes(origin, target, request)
        except ValueError as exc:
            raise failed(UpstreamError(str(exc)), "error") from exc
        tls = request.tls
        pool = (origin.key, tls.identity if tls is not None else "")
        in_use = self._in_use.get(origin.key)
        if in_use is None:
            in_use = self._in_use[origin.key] = asyncio.Semaphore(self._per_origin)
        try:
            # Waiting for this origin's own connections only, never behind another partner's.
            async with asyncio.timeout(request.timeout_s), in_use:
                try:
                    connection = await self._connection(
                        origin, pool, tls, slots, request.reuse_connection
                    )
                    waited = request.before_send is not None and await request.before_send()
                    # Looked at again only after a wait: `_pooled` has just looked at it. The
                    # partner closed it (or wrote to it) meanwhile: another, without waiting.
                    if waited and not connection.quiet():
                        connection.abort()
                        connection = await self._connection(
                            origin, pool, tls, slots, request.reuse_connection
                        )
                except (OSError, ValueError) as exc:
                    # ValueError: a host name the resolver cannot encode (an empty label,
                    # one over 63 characters). No connection either way: nothing was sent.
                    raise failed(UpstreamError(_unreached(exc)), "error") from exc
                waiter = connection.send(data, request.max_response_bytes)
                sent = True
                answer = await waiter
                if request.reuse_connection:
                    self._release(pool, connection)
                else:
                    connection.abort()
                encodings = answer.headers.getall("Content-Encoding", [])
                if len(encodings) > 1:
                    raise _Broken(UpstreamError("the partner's answer has two content codings"))
                body = answer.body
                # An empty body (204, 304) has nothing to decode, whatever its coding says.
                if encodings and body:
                    coding = content_coding(encodings[0])
                    body = decode(
                        body, coding, limit=request.max_response_bytes, too_large=_too_large
                    )
                # The body is decoded now (or there was none): its coding is gone.
                answer.headers.popall("Content-Encoding", None)
                latency = (time.perf_counter() - started) * 1000
                return UpstreamResponse(
                    answer.status, CIMultiDictProxy(answer.headers), body, latency
                )
        except TimeoutError as exc:
            if connection is not None:
                connection.abort()
            # Out of time before anything was sent (connecting, or waiting for a free
            # connection): the caller waited in vain, but the partner has nothing.
            raise failed(
                UpstreamTimeout(f"the partner did not answer within {request.timeout_s:g} s"),
                "timeout" if sent else "error",
            ) from exc
        except asyncio.CancelledError:
            if connection is not None:
                connection.abort()  # half an exchange: the connection cannot be trusted
            raise
        except _Broken as exc:
            delivered = sent and not exc.refused
            raise failed(exc.error, "possibly_delivered" if delivered else "error") from exc
        except GatewayError as exc:
            # An unsupported or undecodable content coding: the partner has the share.
            error = exc if isinstance(exc, UpstreamError) else _unreadable()
            raise failed(error, "possibly_delivered") from exc
        except OSError as exc:
            if connection is not None:
                connection.abort()
            raise failed(_unreadable(), "possibly_delivered" if sent else "error") from exc

    async def _connection(
        self,
        origin: Origin,
        pool: _PoolKey,
        tls: PartnerTls | None,
        slots: asyncio.Semaphore,
        reuse: bool,
    ) -> _Connection:
        connection = self._pooled(pool) if reuse else None
        return connection if connection is not None else await self._connect(origin, tls, slots)

    def _pooled(self, key: _PoolKey) -> _Connection | None:
        pool = self._idle.get(key)
        if not pool:
            return None
        # Idle longer than that, a connection is not used again, even before the sweeper ends it.
        fresh_since = _clock() - self._idle_timeout_s
        while pool:
            connection = pool.pop()  # the most recently used: the least likely to be stale
            if connection.reusable and connection.idle_since >= fresh_since and connection.quiet():
                return connection
            connection.abort()
        return None

    async def connect(
        self,
        base_url: str,
        tls: PartnerTls | None,
        reached: Callable[[socket.socket], object] | None = None,
    ) -> _Connection:
        """A new connection to the origin of `base_url`, made as a share's is, with nothing
        written to it: `contracts connect` reports what a share would meet. `reached` is given
        the socket once TCP has connected, before any TLS handshake. The caller closes it."""
        slots = self._slots
        if slots is None:
            raise RuntimeError("HttpUpstream.start() was not awaited")
        origin, _ = _split(base_url)
        return await self._connect(origin, tls, slots, reached)

    async def _connect(
        self,
        origin: Origin,
        tls: PartnerTls | None,
        slots: asyncio.Semaphore,
        reached: Callable[[socket.socket], object] | None = None,
    ) -> _Connection:
        loop, resolver = self._loop, self._resolver
        assert loop is not None
        assert resolver is not None
        # Looked up before a place is taken: a share waiting on a partner's name server holds
        # none of the places the other partners' connections need.
        addresses = await resolver.resolve(origin.host, origin.port)
        if slots.locked():
            # Every connection the ceiling allows is open: an idle one makes room.
            self._close_longest_idle()
        self._waiting_to_open += 1
        try:
            await slots.acquire()
        finally:
            self._waiting_to_open -= 1
        held = True

        def closed() -> None:
            # Called on every way a connection ends (abort, close, lost): the place is given
            # back once.
            nonlocal held
            if held:
                held = False
                slots.release()

        secure = origin.scheme == "https"
        try:
            sock = await _connect_to_any(loop, addresses)
            if reached is not None:
                reached(sock)
            # The loop owns the socket from here, and closes it if this fails.
            _, connection = await loop.create_connection(
                lambda: _Connection(loop, closed),
                sock=sock,
                ssl=(self._ssl if tls is None else tls.context) if secure else None,
                # The certificate is checked against the name, not the address it led to.
                server_hostname=origin.host if secure else None,
            )
        except BaseException:
            closed()  # no connection came of it (or it was closed on the way)
            raise
        return connection

    def _close_longest_idle(self) -> None:
        oldest: deque[_Connection] | None = None
        for pool in self._idle.values():
            # One the partner closed has given its place back already: closing it makes no
            # room, so it is dropped and the next one looked at.
            while pool and (pool[0].transport is None or not pool[0].reusable):
                pool.popleft().abort()
            if pool and (oldest is None or pool[0].idle_since < oldest[0].idle_since):
                oldest = pool
        if oldest is not None:
            oldest.popleft().abort()

    def _release(self, key: _PoolKey, connection: _Connection) -> None:
        # A share waiting for a place to open a connection gets this one's: kept idle, it
        # would hold that place for a partner nobody is calling right now.
        if not connection.reusable or self._slots is None or self._waiting_to_open:
            connection.abort()  # (the client may also have closed meanwhile)
            return
        connection.idle_since = _clock()
        pool = self._idle.get(key)
        if pool is None:
            pool = self._idle[key] = deque()
        pool.append(connection)
        if len(pool) > self._per_origin:
            pool.popleft().abort()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._idle_timeout_s / 2)
            expired = _clock() - self._idle_timeout_s
            for pool in self._idle.values():
                while pool and (pool[0].idle_since < expired or not pool[0].reusable):
                    pool.popleft().abort()


def _unreached(exc: OSError | ValueError) -> str:
    """Why no connection to the partner was made. A TLS failure says which: an `upstream.tls`
    that does not fit the partner (a `ca_file` that did not issue its certificate, a client
    certificate it does not take) fails every share alike, and would pass for a network fault."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the partner's certificate did not verify ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake with the partner failed ({exc.reason or exc})"
    return "the partner refused or could not be reached"


def _unreadable() -> GatewayError:
    return UpstreamError("the partner's answer was broken or incomplete")


def _too_large(message: str) -> GatewayError:
    return UpstreamError(f"the partner's answer is too large: {message}")
