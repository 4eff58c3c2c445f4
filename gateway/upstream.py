"""The one seam to the network of partners: send a filtered request, get a bounded response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiohttp
from multidict import CIMultiDict
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
    body: bytes  # decoded (no content coding), complete, within the cap
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


class HttpUpstream:
    """Partners over HTTP(S) through one pooled client session; redirects are never followed."""

    def __init__(self, *, connections: int = 256) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=60)
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
                    headers=CIMultiDict(request.headers),
                    data=request.body,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as response:
                    status = response.status
                    coding = content_coding(response.headers.get("Content-Encoding"))
                    limit = request.max_response_bytes
                    raw = await read_capped(
                        response.content,
                        declared_length=response.content_length,
                        limit=limit,
                        timeout_s=request.timeout_s,
                        too_large=_too_large,
                        stalled=_stalled,
                    )
                    body = decode(raw, coding, limit=limit, too_large=_too_large)
                    headers = {
                        k: v for k, v in response.headers.items() if k.lower() != "content-encoding"
                    }
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
    # A reset or a bad status line arrives after the request was written: the partner may have it.
    return isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError)


def _too_large(message: str) -> GatewayError:
    return UpstreamError(f"the partner's answer is too large: {message}")


def _stalled(message: str) -> GatewayError:
    return UpstreamTimeout(f"the partner's answer stalled: {message}")
