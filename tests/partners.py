"""Fake partners on loopback that record every byte they receive: aiohttp servers, and bare
asyncio servers whose scripts answer however brokenly a test needs."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

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


# --- partners on bare sockets ---------------------------------------------------------------

# A well-formed answer: what a raw partner says unless its script says otherwise.
OK_ANSWER = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"score": 7}'
)

# A partner's script gets the connection after one whole request was read; it writes what it
# likes and says whether the connection stays open for the next request.
Script = Callable[["RawPartner", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class RawRequest:
    head: bytes  # request line and headers, exactly as received, up to the blank line
    body: bytes

    def header_names(self) -> list[str]:
        lines = self.head.split(b"\r\n")[1:]
        return sorted(line.partition(b":")[0].decode("latin-1").lower() for line in lines if line)

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [
            value.strip().decode("latin-1")
            for key, _, value in (line.partition(b":") for line in self.head.split(b"\r\n")[1:])
            if key.lower() == wanted
        ]


def writes(answer: bytes) -> Script:
    """A script that writes `answer` to every request and keeps the connection open."""

    async def script(
        partner: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(answer)
        await writer.drain()
        return True

    return script


answer_ok = writes(OK_ANSWER)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, not a FIN: what a crashed partner or a middlebox does."""
    sock: socket.socket = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class RawPartner(FakePartner):
    """A partner on a bare asyncio server: it reads each request byte for byte (head, then a
    Content-Length body) and lets `script` write the answer, however broken."""

    def __init__(self) -> None:
        super().__init__()
        self.script: Script = answer_ok
        self.requests: list[RawRequest] = []
        self.connections = 0
        self.written = 0  # bytes a trickling script has written
        self.release = asyncio.Event()  # a hanging script waits for it; close() sets it
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def open_connections(self) -> int:
        """Connections the gateway has not closed yet."""
        return len(self._writers)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> RawPartner:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop_listening(self) -> None:
        """Close the listening socket: connections to the port are refused from now on."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request = RawRequest(head, b"")
                lengths = request.header_values("Content-Length")
                body = await reader.readexactly(int(lengths[0])) if lengths else b""
                self.requests.append(RawRequest(head, body))
                if not await self.script(self, reader, writer):
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the gateway hung up: nothing more to serve on this connection
        except asyncio.CancelledError:
            # Returning instead of re-raising keeps asyncio's stream callback from logging a
            # cancelled handler as an error when the test ends.
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        self.release.set()
        await self.stop_listening()
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


# --- a partner that speaks TLS itself -------------------------------------------------------


class TlsPartner(FakePartner):
    """A partner over TLS that does the handshake itself, as an OpenSSL server does: one it
    refuses ends with the alert that says why (asyncio's own TLS server closes without it).
    Records each request it read, and the subject of each client certificate it accepted."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.context = context
        self.subjects: list[str | None] = []  # the client certificate's common name, per handshake
        self.refused = 0  # handshakes refused
        self.bytes_read = 0  # application bytes read after any handshake
        self.closed_cleanly = 0  # connections the client ended with TLS's close_notify
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> TlsPartner:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.context.wrap_bio(incoming, outgoing, server_side=True)

        async def flush() -> None:
            data = outgoing.read()
            if data:
                writer.write(data)
                await writer.drain()

        async def fill() -> bool:
            await flush()
            data = await reader.read(65536)
            if not data:
                return False
            incoming.write(data)
            return True

        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if not await fill():
                        return
                except ssl.SSLError:
                    self.refused += 1
                    await flush()  # the alert
                    return
            await flush()
            peer = tls.getpeercert()
            Names = tuple[tuple[tuple[str, str], ...], ...]
            names = cast(Names, peer.get("subject", ())) if peer else ()
            # ((("commonName", "gateway-one"),),): one tuple per relative distinguished name.
            common = [value for rdn in names for key, value in rdn if key == "commonName"]
            self.subjects.append(common[0] if common else None)
            buffer = b""
            while True:
                try:
                    chunk = tls.read(65536)
                except ssl.SSLWantReadError:
                    if not await fill():
                        return
                    continue
                except ssl.SSLError:
                    return
                if not chunk:
                    self.closed_cleanly += 1
                    return
                self.bytes_read += len(chunk)
                buffer += chunk
                while (request := _one_request(buffer)) is not None:
                    received, buffer = request
                    self.received.append(received)
                    reply = self.reply
                    head = f"HTTP/1.1 {reply.status} OK\r\nContent-Length: {len(reply.body)}\r\n"
                    head += "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                    tls.write(head.encode("latin-1") + b"\r\n" + reply.body)
                    await flush()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)


def _one_request(buffer: bytes) -> tuple[Received, bytes] | None:
    """The first whole request in `buffer` (a Content-Length body, if any) and what follows."""
    head, found, rest = buffer.partition(b"\r\n\r\n")
    if not found:
        return None
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers: CIMultiDict[str] = CIMultiDict(
        (name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines)
    )
    length = int(headers.get("Content-Length", "0"))
    if len(rest) < length:
        return None
    received = Received(method, target, CIMultiDictProxy(headers), rest[:length])
    return received, rest[length:]
