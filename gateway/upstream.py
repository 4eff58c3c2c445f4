"""The one seam to the network of partners: send a filtered request, get a bounded response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiohttp
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.bodies import content_coding, decode, read_capped
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout

Failure = Literal["error", "timeout", "possibly_delivered"]


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str  # already built from the contract's base URL and the matched template
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    timeout_s: float
    max_response_bytes: int


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes  # decoded (whatever Content-Encoding says), complete, within the cap
    latency_ms: float


@dataclass(slots=True)
class UpstreamFailure(Exception):
    """Raised by an `Upstream`: the error to answer with, and whether the partner may have data."""

    error: GatewayError
    failure: Failure
    latency_ms: float = 0.0
    status: int | None = field(default=None)


class Upstream(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...


class _PoolConnector(aiohttp.TCPConnector):
    """A connector that never lends a pooled connection holding an answer nobody asked for."""

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        # An answer arriving on an idle keep-alive connection belongs to no request; aiohttp
        # would hand it to the next share sent on that connection, and each later share the
        # previous one's answer (aio-libs/aiohttp#13656). Such a connection is closed instead.
        while (connection := await super()._get(key, traces)) is not None:
            protocol = connection.protocol
            if protocol is None or not protocol.should_close:
                return connection
            connection.close()
        return None


# One deadline per share (`asyncio.timeout` in `send`) covers connect, request and answer.
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None)


class HttpUpstream:
    """Partners over HTTP(S) through one pooled client session; redirects are never followed."""

    def __init__(self, *, connections: int = 256) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = _PoolConnector(limit=self._connections, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Partner cookies must not flow from one share into the next.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        session = self._session
        if session is None:
            raise RuntimeError("HttpUpstream.start() was not awaited")
        started = time.perf_counter()
        status: int | None = None  # known once the partner's status line has arrived

        def elapsed() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            async with asyncio.timeout(request.timeout_s):
                async with session.request(
                    request.method,
                    URL(request.url, encoded=True),
                    headers=request.headers,
                    data=request.body,
                    allow_redirects=False,
                    timeout=_NO_CLIENT_TIMEOUT,
                ) as response:
                    status = response.status
                    coding = content_coding(response.headers.get("Content-Encoding"))
                    limit = request.max_response_bytes
                    raw = await read_capped(
                        response.content,
                        declared_length=response.content_length,
                        limit=limit,
                        timeout_s=None,  # the share's one deadline above applies
                        too_large=_too_large,
                    )
                    body = decode(raw, coding, limit=limit, too_large=_too_large)
                    # Looked up case-insensitively, whatever case the partner wrote names in.
                    headers: Mapping[str, str] = response.headers
                    if coding != "identity":  # the body is decoded now: its coding is gone
                        decoded = CIMultiDict(headers)
                        decoded.popall("Content-Encoding", None)
                        headers = CIMultiDictProxy(decoded)
                    return UpstreamResponse(response.status, headers, body, elapsed())
        except TimeoutError as exc:
            raise UpstreamFailure(
                UpstreamTimeout(f"the partner did not answer within {request.timeout_s:g} s"),
                "timeout",
                elapsed(),
                status,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamFailure(
                UpstreamError("the partner refused or could not be reached"), "error", elapsed()
            ) from exc
        except (aiohttp.ClientError, GatewayError) as exc:
            error = (
                exc
                if isinstance(exc, UpstreamError)
                else UpstreamError("the partner's answer was broken or incomplete")
            )
            failure: Failure = "possibly_delivered" if status is not None or _sent(exc) else "error"
            raise UpstreamFailure(error, failure, elapsed(), status) from exc


def _sent(exc: BaseException) -> bool:
    # Failing to connect is handled before this; any later failure (a reset, a close, a bad status
    # line) may come after some or all of the request was written: the partner may have it.
    return isinstance(exc, aiohttp.ClientError) and not isinstance(exc, aiohttp.InvalidURL)


def _too_large(message: str) -> GatewayError:
    return UpstreamError(f"the partner's answer is too large: {message}")
