"""The HTTP server's own limits around aiohttp: a connection cap and a request-header deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiohttp import HttpVersion, HttpVersion10, HttpVersion11, StreamReader, web
from aiohttp.http_exceptions import BadHttpMethod, BadStatusLine
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestPayloadError, _ErrInfo

from gateway.logconfig import error_location
from gateway.settings import LimitsSettings

# The `Server` header of every answer, instead of aiohttp's, which names its version.
SERVER_NAME = "share-gateway"
# The server's own refusals, before any check of the gateway's could run (no share record).
_ERROR_ANSWERS = {
    400: ("malformed_request", "the request is not HTTP/1.1 the gateway can read unambiguously"),
    413: ("body_too_large", "the request is too large"),
    431: ("malformed_request", "the request's header fields are too large"),
    500: ("internal_error", "the request could not be handled"),
}

log = structlog.get_logger("gateway")

# The versions HTTP/1.1 framing serves (RFC 9112 2.3).
_HTTP_1 = frozenset({HttpVersion10, HttpVersion11})
_HTTP_0_9 = HttpVersion(0, 9)

# A caller hanging up does not cancel its request's handler (aiohttp's own default, named so
# that every server of the gateway, the tests' included, is built alike): a share sent whole is
# still judged, recorded, forwarded and its outcome recorded, so the log never lacks the
# outcome of data that may have gone out. Only the drain at shutdown cancels a share.
HANDLER_CANCELLATION = False

# After the drain, a request still in progress is given this long again, then cancelled and
# given this long to wind up (aiohttp's two steps).
CANCEL_GRACE_S = 1.0

# How often a flood of refused or timed-out connections is logged: once per interval, with a
# count, so an attack cannot turn the log into a second attack.
LOG_INTERVAL_S = 10.0

# What aiohttp offers and what this module adds (aiohttp 3.14):
# - `keepalive_timeout` closes a connection idle between requests, and also one that sends
#   nothing complete after connecting, but only when it is > 0, and never sooner than it.
# - `lingering_time` bounds how long an unread body is drained after an early answer.
# - Nothing caps the number of connections, and nothing bounds the time to a complete
#   request head: `GatewayServer` and `LimitedRequestHandler` below do.
#
# The aiohttp internals relied on, kept to these few:
# - `BaseRunner._make_server`, the hook that builds the protocol factory a site listens with,
#   and `Server._kwargs`, the options aiohttp passes to each of its handlers;
# - `RequestHandler._waiter`, pending exactly while the handler waits for the next request
#   (aiohttp's own keep-alive check reads it the same way);
# - `RequestHandler._request_count`, incremented once per request head the parser completes,
#   and once per parse error (aiohttp queues an error as a message of its own; one count is
#   taken back where a request and the error in its body become one refusal);
# - `RequestHandler._current_request`, the request whose handler is running;
# - `BaseRunner._shutdown_timeout`, read by `cleanup()`: set when the drain begins;
# - `RequestHandler._close` (set by `close()`: `data_received` reads nothing more),
#   `_request_in_progress` and `_handler_waiter` (resolved when the request in progress ends),
#   used the way `RequestHandler.shutdown` uses them;
# - `RequestHandler._messages`, the parsed requests (head and body stream) not yet handled,
#   `_handle_request`, which handles one of them, and `finish_response`, which writes its
#   answer; `eof_received`, which aiohttp leaves to close the connection;
# - `web_protocol._ErrInfo`, how `data_received` queues a request the parser refused.


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The limits aiohttp has no setting for."""

    max_connections: int
    header_read_timeout_s: float

    @classmethod
    def from_settings(cls, limits: LimitsSettings) -> ServerLimits:
        return cls(
            max_connections=limits.max_connections,
            header_read_timeout_s=limits.header_read_timeout_s,
        )


@dataclass(slots=True)
class _Tally:
    """Counts an event and logs it at most once per `LOG_INTERVAL_S`."""

    event: str
    limit_name: str
    limit: float
    total: int = 0
    _unlogged: int = 0
    _logged_at: float = field(default=-LOG_INTERVAL_S)

    def add(self) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            log.warning(self.event, count=self._unlogged, **{self.limit_name: self.limit})
            self._unlogged = 0
            self._logged_at = now


class GatewayServer(web.Server):
    """aiohttp's protocol factory, making handlers that enforce `ServerLimits`."""

    def __init__(self, base: web.Server, limits: ServerLimits) -> None:
        # The handler options are exactly those aiohttp gave its own server.
        handler_options: dict[str, Any] = dict(base._kwargs)
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            **handler_options,
        )
        self.limits = limits
        self._handler_options = handler_options
        self.open_connections = 0
        self.refused = _Tally("connection_refused", "max_connections", limits.max_connections)
        self.timed_out = _Tally(
            "request_head_timed_out", "header_read_timeout_s", limits.header_read_timeout_s
        )

    def __call__(self) -> LimitedRequestHandler:
        return LimitedRequestHandler(self, loop=asyncio.get_running_loop(), **self._handler_options)

    def admit(self) -> bool:
        if self.open_connections >= self.limits.max_connections:
            self.refused.add()
            return False
        self.open_connections += 1
        return True

    def release(self) -> None:
        self.open_connections -= 1


class LimitedRequestHandler(web.RequestHandler):
    """One connection: refused at once beyond the cap, closed if its request head stalls.

    The head deadline runs from the moment the connection is made, and again from the first
    byte of each following request (the idle time before that byte is the keep-alive
    timeout's). It is cancelled as soon as the parser completes a request head, so a body is
    never timed by it (`limits.body_read_timeout_s` does that). A request head sent partly
    behind a complete request, while that one is still being handled, is bounded by the
    keep-alive timeout instead.
    """

    __slots__ = (
        "_admitted",
        "_answered",
        "_caller_done",
        "_drain_body",
        "_head_deadline",
        "_last_body",
        "_limited_by",
        "_unframed",
    )

    def __init__(self, server: GatewayServer, **options: Any) -> None:
        super().__init__(server, **options)
        self._limited_by = server
        self._admitted = False
        self._head_deadline: asyncio.TimerHandle | None = None
        self._drain_body = False  # closing, but the request in progress still reads its body
        self._answered = 0  # requests whose handling ended (`_request_count` counts those read)
        self._last_body: StreamReader | None = None  # of the request read last
        self._caller_done = False  # the caller closed its side: it sends nothing more
        self._unframed = False  # a body's framing broke: no byte after it is read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._limited_by.admit():
            # Closed before aiohttp sees the connection: nothing is read, no task is started.
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._limited_by.release()
        self._disarm_head_deadline()
        # The body refers back to this handler: kept, the pair would wait for the cyclic
        # collector (rare here, see `heap`) instead of going with the connection.
        self._last_body = None
        super().connection_lost(exc)

    def close(self) -> None:
        """Take no further request; one in progress keeps receiving its body.

        aiohttp stops reading a connection at once when the drain begins, so a share whose
        body was still arriving could never finish (it timed out after `body_read_timeout_s`,
        refused). The connection still closes after that share's answer.
        """
        self._drain_body = self._request_in_progress
        super().close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - the override
        # aiohttp's own shutdown also stops reading first, then waits for the handler: the
        # request in progress is waited for here, its body still read, within the same time.
        if self._request_in_progress and timeout:
            loop = asyncio.get_running_loop()
            started = loop.time()
            self._handler_waiter = loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._handler_waiter
            except TimeoutError:
                pass
            finally:
                self._handler_waiter = None
            # Not 0 once the drain is spent: aiohttp reads 0 as no limit at all. What is left
            # (or a short grace) goes to cancelling the request and letting it wind up.
            timeout = max(CANCEL_GRACE_S, timeout - (loop.time() - started))
        self._drain_body = False
        await super().shutdown(timeout)

    # asyncio reads the answer (True keeps our side open); aiohttp declares it returns None.
    def eof_received(self) -> bool:  # type: ignore[override]
        """The caller closed its side (a FIN): keep ours open while an answer is owed.

        aiohttp closes the connection on the caller's FIN, so a caller that half-closes after
        sending its request whole (`nc -N`, a `shutdown(SHUT_WR)`) got no answer, although
        its share was decided, recorded and forwarded: a caller retrying it shared it twice.
        A request whose body is still incomplete is cut short, as before (`malformed_body`).
        """
        if self._force_close or not self._answer_owed():
            return False  # asyncio closes the connection
        self._caller_done = True
        return True

    def _answer_owed(self) -> bool:
        """A request was read, its body whole, and its handling has not ended."""
        if self._answered >= self._request_count:
            return False
        # Bodies arrive in order: only the last request read may still be waiting for its own.
        return self._last_body is None or self._last_body.is_eof()

    async def _handle_request(
        self,
        request: web.BaseRequest,
        start_time: float | None,
        request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._answered += 1

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if "Transfer-Encoding" in request.headers:
            # aiohttp's C parser keeps the last trailer field of a chunked body and gives it to
            # the next request on the connection as a header of its own: a trailer
            # `Authorization` authenticated a next request that had none. Nothing behind such a
            # body is read, whatever answered it (an exception's answer included).
            resp.force_close()
        answered = await super().finish_response(request, resp, start_time)
        if self._messages:  # read after a declined upgrade, from the bytes behind it
            self._last_body = self._messages[-1][1]
        if self._caller_done and not self._messages:
            # Nothing more can arrive: the connection ends with this answer, not after the
            # keep-alive timeout.
            self._close = True
        return answered

    def data_received(self, data: bytes) -> None:
        if self._unframed:
            return
        if self._drain_body and self._close and not self._force_close:
            if not self._request_in_progress:
                self._drain_body = False  # answered: the rest is not read
                return
            self._close = False  # aiohttp reads nothing on a closing connection
            try:
                self._receive(data)
            finally:
                self._close = True
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        waiting = self._waiter is not None and not self._waiter.done()
        heads_before = self._request_count
        reading = self._last_body  # the body the parser may be in the middle of
        super().data_received(data)
        if self._request_count != heads_before:
            self._refuse_other_versions(self._request_count - heads_before)
            self._last_body = self._messages[-1][1] if self._messages else None
            self._disarm_head_deadline()
            self._fail_broken_body(reading)
        elif waiting and data and self._head_deadline is None:
            # Bytes while the handler waits for a request: the first of a new request head.
            self._arm_head_deadline()

    def _refuse_other_versions(self, read: int) -> None:
        """Refuse, as the parser refuses what it cannot read, the requests just read whose
        request line names a version other than HTTP/1.0 or 1.1.

        The C parser reads `HTTP/2.0` and `HTTP/0.9` with HTTP/1.1 framing and aiohttp answers
        in the version asked (`HTTP/2.0 200 OK`), which an HTTP/1.1 client cannot read: the
        share went out and its caller saw a broken answer. A bare `GET /path` (HTTP/0.9's
        own form, read as 0.9) has no header field, so no credentials, and is still refused
        by the gateway's checks.
        """
        queued = len(self._messages)
        for index in range(max(0, queued - read), queued):
            message = self._messages[index][0]
            if not isinstance(message, RawRequestMessage) or message.version in _HTTP_1:
                continue
            if message.version != _HTTP_0_9 or message.raw_headers:
                refused = BadStatusLine("an HTTP version other than 1.0 and 1.1")
                self._messages[index] = (_ErrInfo(400, refused, refused.message), EMPTY_PAYLOAD)

    def _fail_broken_body(self, body: StreamReader | None) -> None:
        """Fail at once the body the parser broke off in: `body`, the one read last, if it is
        still incomplete.

        aiohttp's C parser drops a body whose chunk framing breaks (a bad chunk size, chunk
        data without its CRLF) without a word to it, and queues the error as a request of its
        own: the share reading the body waited `body_read_timeout_s` for bytes that could never
        come, holding its place among the pending shares, and was refused `408` for a `400`.
        Only a share already running was told: one queued behind another, or whose task had
        not started yet, waited so too or, when aiohttp handed the error on again as it read
        the bytes before the break, took them for its whole body (and forwarded a document
        complete by then).
        """
        if body is None or body.is_eof():
            return
        # While a body is incomplete the parser emits no further request, only its error:
        # a message just emitted is that error, and this body is where it broke off. Nothing
        # after the break can be framed: no byte more is read.
        self._unframed = True
        queued = self._messages
        if len(queued) >= 2 and queued[-2][1] is body and isinstance(queued[-1][0], _ErrInfo):
            # Its share has not begun (a request before it is still being handled): it is the
            # parser's refusal, answered in its turn, as if the break had come with its head;
            # the connection ends with it (`handle_error`).
            refusal = queued.pop()
            queued[-1] = refusal
            self._request_count -= 1  # one request, refused: not a request and an error
            return
        body.set_exception(RequestPayloadError("the body's chunked framing is broken"))
        # Ended as well, after the failure (so a reader waiting on it fails, and is not woken
        # with an empty read as if the body were complete): otherwise aiohttp, once the share
        # is answered, would try to read the rest and log the failure as a fault of its own.
        body.feed_eof()
        # The connection ends after the share's answer (aiohttp would also answer its queued
        # error, a second answer to one request). aiohttp's own `close()`: this class's keeps
        # reading a body still in progress during the drain.
        super().close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # What the parser cannot read (400, 413, 431) and a fault in a handler (500). aiohttp's
        # own answer quotes the parser's message, which holds the offending bytes (a header, a
        # token, a piece of body), logs it the same, and names its version in `Server`. The
        # gateway answers a fixed error, logs only its kind and place, and names no software.
        # Not HTTP at all as a connection's first bytes (TLS to a plain port, a scanner) is
        # everyday noise, as aiohttp judges it too: logged at debug only.
        noise = self._request_count == 1 and isinstance(exc, BadHttpMethod)
        (log.debug if noise else log.warning)(
            "request_unreadable" if status != 500 else "request_failed",
            status=status,
            error=type(exc).__name__ if exc is not None else None,
            error_at=error_location(exc) if exc is not None else None,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has begun: no error answer can follow")
        code, text = _ERROR_ANSWERS.get(status) or _ERROR_ANSWERS[400 if status < 500 else 500]
        response = web.Response(
            status=status,
            body=orjson.dumps({"error": {"code": code, "message": text}}),
            content_type="application/json",
            headers={"Server": SERVER_NAME},
        )
        response.force_close()
        return response

    def _arm_head_deadline(self) -> None:
        self._head_deadline = asyncio.get_running_loop().call_later(
            self._limited_by.limits.header_read_timeout_s, self._head_deadline_passed
        )

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        if self._waiter is not None and not self._waiter.done():
            self._limited_by.timed_out.add()
            self.force_close()
        else:
            # Not waiting for a request (its task has not started yet): never cut a connection
            # that may be handling one, look again after another period instead.
            self._arm_head_deadline()


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose sites listen with a `GatewayServer`."""

    def __init__(self, app: web.Application, limits: ServerLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.limits = limits

    def drain_within(self, seconds: float) -> None:
        """How long `cleanup()` waits for requests in flight (aiohttp's `shutdown_timeout`)."""
        self._shutdown_timeout = seconds

    async def _make_server(self) -> web.Server:
        # The base runs the app's start-up hooks and builds aiohttp's own server; its handler,
        # request factory and options are kept, its protocol factory replaced.
        base = await super()._make_server()
        return GatewayServer(base, self.limits)
