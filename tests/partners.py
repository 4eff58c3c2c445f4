"""Fake partners: real aiohttp servers on loopback that record every byte they receive."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy


@dataclass(frozen=True, slots=True)
class Received:
    """One request exactly as the partner saw it."""

    method: str
    target: str  # the raw request target: path and query as sent
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(slots=True)
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay_s: float = 0.0


class FakePartner:
    """Records each request; answers with `reply` (replace it to change the answer)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.reply = Reply()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, status: int = 200, body: Any = None, **headers: str) -> None:
        payload = (
            body
            if isinstance(body, bytes)
            else orjson.dumps(body if body is not None else {"ok": True})
        )
        self.reply = Reply(
            status=status, body=payload, headers={"Content-Type": "application/json", **headers}
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(
                request.method,
                request.raw_path,
                CIMultiDictProxy(CIMultiDict(request.headers)),
                body,
            )
        )
        reply = self.reply
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    async def start(self) -> FakePartner:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        if server is None or not isinstance(server, asyncio.Server):
            raise RuntimeError("fake partner did not start")
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
