"""The server's own limits over raw sockets: connections, head and body deadlines, pending shares.

`make_gateway` serves the gateway with the production server (`gateway.app.make_runner`); other
test modules import the raw-socket helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from conftest import HASH_KEY, PARTNER_TOKEN, Gateway, GatewayFactory, RawResponse
from partners import Reply

from gateway import heap
from gateway.app import serve
from gateway.server import CANCEL_GRACE_S, GatewayRunner, GatewayServer, ServerLimits

ASSESS = "/acme/v1/assess"
GOOD_BODY = orjson.dumps({"applicant": {"user_id": "u-1", "name": "Wang"}, "loan_amount": 5000})
GOOD_FORWARDED = b'{"applicant":{"name":"Wang"},"loan_amount":5000}'
# Every wait on a socket is bounded by this; the deadlines under test are far shorter.
BOUND_S = 5.0


def server_of(gateway: Gateway) -> GatewayServer:
    runner = gateway.client.server.runner
    server = runner.server if runner is not None else None
    if not isinstance(server, GatewayServer):
        raise TypeError("the gateway is not served by the production server")
    return server


# --- raw sockets ----------------------------------------------------------------------------------


def share_request(
    gateway: Gateway,
    *,
    body: bytes = GOOD_BODY,
    target: str = ASSESS,
    keep_alive: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A complete, valid share request as bytes (`extra` holds more header lines)."""
    port = gateway.client.server.port
    return (
        (
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {gateway.token()}\r\nX-Share-Purpose: credit_assessment\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        ).encode()
        + extra
        + b"\r\n"
        + body
    )


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def connection_to(port: int | None) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        await close(writer)


def connection(gateway: Gateway) -> contextlib.AbstractAsyncContextManager[Connection]:
    """A raw connection to the gateway, closed on leaving."""
    return connection_to(gateway.client.server.port)


async def read_response(reader: asyncio.StreamReader, within: float = BOUND_S) -> RawResponse:
    """One HTTP answer off the socket (interim 1xx answers skipped), read `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
            status = int(status_line.split(" ")[1])
            if status >= 200:
                break
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        body = await reader.readexactly(int(length)) if length is not None else await reader.read()
    return RawResponse(status, headers, body)


async def closed_by_peer(reader: asyncio.StreamReader, within: float = BOUND_S) -> bool:
    """True when the peer closes the connection (EOF or reset) `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def exchange(gateway: Gateway, request: bytes, within: float = BOUND_S) -> RawResponse:
    """Send `request` on a new connection and read one answer."""
    async with connection(gateway) as (reader, writer):
        writer.write(request)
        await writer.drain()
        return await read_response(reader, within)


async def assert_still_serving(gateway: Gateway) -> None:
    """One good share goes through, and the partner receives exactly its filtered document."""
    before = len(gateway.partner.received)
    response = await exchange(gateway, share_request(gateway))
    assert response.status == 200, response.body
    assert len(gateway.partner.received) == before + 1
    assert gateway.partner.received[-1].body == GOOD_FORWARDED
    record = gateway.log.records[-1]
    assert (record.share_id, record.decision) == (response.headers["x-share-id"], "shared")


async def eventually(condition: Callable[[], bool], within: float = BOUND_S) -> None:
    """Wait until `condition()` holds, polling; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


async def trickle(writer: asyncio.StreamWriter, data: bytes, interval_s: float) -> None:
    """Write `data` one byte at a time until done or the peer goes away."""
    with contextlib.suppress(ConnectionError):
        for index in range(len(data)):
            writer.write(data[index : index + 1])
            await writer.drain()
            await asyncio.sleep(interval_s)


# --- connections ----------------------------------------------------------------------------------


async def test_connections_beyond_the_cap_are_closed_at_once(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings={"limits": {"max_connections": 3}})
    server = server_of(gw)
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(connection(gw)) for _ in range(3)]
        await eventually(lambda: server.open_connections == 3)

        async with connection(gw) as (reader, writer):
            writer.write(share_request(gw))  # never read: closed before the first byte
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            assert await closed_by_peer(reader)
        assert server.refused.total == 1
        assert gw.partner.received == []
        assert gw.log.records == []

        # The connections inside the cap were never disturbed and still work, keep-alive too.
        for held_reader, held_writer in held:
            held_writer.write(share_request(gw, keep_alive=True))
            response = await read_response(held_reader)
            assert response.status == 200, response.body
        assert len(gw.partner.received) == 3
        assert server.open_connections == 3

        # A place freed by a closed connection goes to the next one.
        await close(held[0][1])
        await eventually(lambda: server.open_connections == 2)
        await assert_still_serving(gw)
    await eventually(lambda: server.open_connections == 0)
    assert server.refused.total == 1


async def test_a_burst_of_connections_never_exceeds_the_cap(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings={"limits": {"max_connections": 4}})
    server = server_of(gw)
    async with contextlib.AsyncExitStack() as stack:
        opened = await asyncio.gather(
            *(stack.enter_async_context(connection(gw)) for _ in range(12))
        )
        await eventually(lambda: server.refused.total == 8)
        assert server.open_connections == 4
        closed = await asyncio.gather(*(closed_by_peer(reader, 0.5) for reader, _ in opened))
        assert sorted(closed) == [False] * 4 + [True] * 8
    await eventually(lambda: server.open_connections == 0)
    await assert_still_serving(gw)


# --- request head deadline ------------------------------------------------------------------------

HEAD_DEADLINE = {"limits": {"header_read_timeout_s": 0.5, "keepalive_timeout_s": 30}}


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /acme/v1/assess HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",  # obs-fold
        b"GET /acme/v1/assess HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"BREW /acme HTTP/1.1\r\n\r\n" + b"A" * 9000,  # a request line past the limit
    ],
    ids=["obs_fold", "negative_length", "long_line"],
)
async def test_what_the_parser_refuses_names_no_server_software(
    make_gateway: GatewayFactory, request_bytes: bytes
) -> None:
    gw = await make_gateway()
    response = await exchange(gw, request_bytes)
    assert 400 <= response.status < 500
    assert response.headers["server"] == "share-gateway"
    assert b"aiohttp" not in response.body.lower()
    assert gw.partner.received == []
    await assert_still_serving(gw)


@pytest.mark.parametrize(
    "partial",
    [
        b"",
        b"POST /acme/v1/assess HT",
        b"POST /acme/v1/assess HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer x",
        b"POST /acme/v1/assess HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    ],
    ids=["nothing", "half_a_request_line", "half_a_header", "headers_without_end"],
)
async def test_a_request_head_that_stalls_is_closed(
    make_gateway: GatewayFactory, partial: bytes
) -> None:
    gw = await make_gateway(settings=HEAD_DEADLINE)
    async with connection(gw) as (reader, writer):
        writer.write(partial)
        await writer.drain()
        # Closed by the head deadline, long before the keep-alive timeout of 30 s would.
        assert await closed_by_peer(reader)
    assert server_of(gw).timed_out.total == 1
    assert gw.partner.received == []
    assert gw.log.records == []
    await assert_still_serving(gw)


async def test_a_trickled_request_head_gains_no_time(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=HEAD_DEADLINE)
    async with connection(gw) as (reader, writer):
        # Forty bytes, one every 0.05 s, would take 2 s: each arrives, none extends the deadline.
        sender = asyncio.create_task(trickle(writer, share_request(gw)[:40], 0.05))
        assert await closed_by_peer(reader)
        await sender
    assert server_of(gw).timed_out.total == 1
    assert gw.partner.received == []
    await assert_still_serving(gw)


async def test_the_head_deadline_holds_without_a_keepalive_timeout(
    make_gateway: GatewayFactory,
) -> None:
    # With keepalive_timeout 0 aiohttp arms no timer at all on a new connection.
    gw = await make_gateway(
        settings={"limits": {"header_read_timeout_s": 0.5, "keepalive_timeout_s": 0}}
    )
    async with connection(gw) as (reader, writer):
        writer.write(b"POST /acme/v1/assess HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        assert await closed_by_peer(reader)
    assert server_of(gw).timed_out.total == 1
    await assert_still_serving(gw)


async def test_keep_alive_idle_time_is_not_head_time(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings=HEAD_DEADLINE)
    async with connection(gw) as (reader, writer):
        writer.write(share_request(gw, keep_alive=True))
        assert (await read_response(reader)).status == 200
        # Idle longer than the head deadline: the keep-alive timeout (30 s) governs idleness.
        assert not await closed_by_peer(reader, within=1.0)
        writer.write(share_request(gw, keep_alive=True))
        assert (await read_response(reader)).status == 200
        # The next request head starts and stalls: its own deadline closes the connection.
        writer.write(b"POST /acme/v1/assess HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await closed_by_peer(reader)
    assert len(gw.partner.received) == 2
    assert server_of(gw).timed_out.total == 1


async def test_a_slow_handler_is_not_cut_by_the_head_deadline(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings=HEAD_DEADLINE)
    gw.partner.reply = Reply(delay_s=1.0)
    response = await exchange(gw, share_request(gw))
    assert response.status == 200
    assert server_of(gw).timed_out.total == 0


async def test_idle_keep_alive_connections_are_closed(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        settings={"limits": {"keepalive_timeout_s": 0.3, "header_read_timeout_s": 30}}
    )
    async with connection(gw) as (reader, writer):
        writer.write(share_request(gw, keep_alive=True))
        assert (await read_response(reader)).status == 200
        assert await closed_by_peer(reader)
    assert server_of(gw).timed_out.total == 0


# --- body deadline --------------------------------------------------------------------------------


async def test_a_trickled_body_is_cut_off_with_408(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        settings={"limits": {"body_read_timeout_s": 0.5, "header_read_timeout_s": 0.3}}
    )
    body = b'{"applicant": {"user_id": "u-1", "name": "' + b"W" * 200 + b'"}}'
    head, _, _ = share_request(gw, body=body).partition(b"\r\n\r\n")
    async with connection(gw) as (reader, writer):
        writer.write(head + b"\r\n\r\n")
        # One byte every 0.02 s: the body keeps coming, and would take 4 s in all. Neither the
        # head deadline (0.3 s; the head is complete) nor a stall decides: the body deadline does.
        sender = asyncio.create_task(trickle(writer, body, 0.02))
        try:
            response = await read_response(reader)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    assert response.status == 408
    assert response.json()["error"]["code"] == "request_timeout"
    assert gw.partner.received == []
    record = gw.log.records[-1]
    assert (record.decision, record.reason) == ("denied", "request_timeout")
    assert record.share_id == response.headers["x-share-id"]
    assert server_of(gw).timed_out.total == 0
    await assert_still_serving(gw)


async def test_a_body_of_exactly_the_cap_arriving_in_pieces_is_shared(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(settings={"limits": {"max_body_bytes": 1000}})
    body = b'{"applicant": {"user_id": "u-1", "name": "' + b"W" * 955 + b'"}}'
    assert len(body) == 1000
    request = share_request(gw, body=body)
    async with connection(gw) as (reader, writer):
        # The rest arrives once the share is reading its body: it is counted as it comes.
        writer.write(request[:-500])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(request[-500:])
        response = await read_response(reader)
    assert response.status == 200, response.body
    assert gw.partner.received[-1].body == b'{"applicant":{"name":"' + b"W" * 955 + b'"}}'


# --- shares in progress ---------------------------------------------------------------------------


async def test_shares_beyond_the_pending_cap_are_503(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings={"limits": {"max_pending_requests": 2}})
    gw.partner.reply = Reply(delay_s=1.0)
    held = [asyncio.create_task(exchange(gw, share_request(gw))) for _ in range(2)]
    await eventually(lambda: len(gw.partner.received) == 2)
    assert gw.runtime.shares_in_progress == 2

    response = await exchange(gw, share_request(gw))
    assert response.status == 503
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == "overloaded"
    assert error["share_id"] == response.headers["x-share-id"]
    record = gw.log.records[-1]
    assert (record.share_id, record.decision, record.reason) == (
        error["share_id"],
        "denied",
        "overloaded",
    )
    assert (record.bytes_sent, record.records) == (0, 0)
    assert gw.log.outcome_of(error["share_id"]) is None
    assert len(gw.partner.received) == 2

    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    assert gw.runtime.shares_in_progress == 0
    gw.partner.reply = Reply()
    await assert_still_serving(gw)
    assert [r.reason for r in gw.log.records] == ["shared", "shared", "overloaded", "shared"]


async def test_refused_shares_free_their_place(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(settings={"limits": {"max_pending_requests": 1}})
    for _ in range(3):
        response = await exchange(gw, share_request(gw, target="/nobody/v1/assess"))
        assert response.json()["error"]["code"] == "unknown_partner"
    assert gw.runtime.shares_in_progress == 0
    await assert_still_serving(gw)


# --- the runner on its own, and under uvloop ------------------------------------------------------


async def _hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="hello")


async def _exercise_runner() -> tuple[int, bool, bool, int]:
    """Cap 2, head deadline 0.3 s: (status of a request inside the cap, third connection
    closed, stalled head closed, requests served)."""
    app = web.Application()
    app.router.add_get("/", _hello)
    runner = GatewayRunner(
        app, ServerLimits(max_connections=2, header_read_timeout_s=0.3), access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(connection_to(site.port))
            second = await stack.enter_async_context(connection_to(site.port))
            first[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status = (await read_response(first[0])).status
            third = await stack.enter_async_context(connection_to(site.port))
            third_closed = await closed_by_peer(third[0])
            second[1].write(b"GET / HTTP/1.1\r\nHo")
            stalled_closed = await closed_by_peer(second[0])
        server = runner.server
        served = server.requests_count if server is not None else -1
    finally:
        await runner.cleanup()
    return status, third_closed, stalled_closed, served


async def test_the_runner_enforces_its_limits_on_any_app() -> None:
    assert await _exercise_runner() == (200, True, True, 1)


def test_the_runner_enforces_its_limits_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert uvloop.run(_exercise_runner()) == (200, True, True, 1)


async def _slow_then_big(request: web.Request) -> web.StreamResponse:
    await request.read()
    if request.query.get("big"):
        # An answer its client never reads: the handler blocks in the write.
        return web.Response(body=b"x" * (16 * 1024 * 1024))
    await asyncio.sleep(60)
    return web.Response(text="late")


@pytest.mark.parametrize("target", ["/", "/?big=1"], ids=["slow_handler", "unread_answer"])
async def test_the_drain_is_bounded_by_its_time_and_a_short_grace(target: str) -> None:
    # However long the request in progress would take, cleanup() ends soon after the drain:
    # the request is cancelled, and the process may exit before the kubelet kills it.
    app = web.Application()
    app.router.add_get("/", _slow_then_big)
    runner = GatewayRunner(app, ServerLimits(max_connections=8, header_read_timeout_s=5.0))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    async with connection_to(site.port) as (_reader, writer):
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await asyncio.sleep(0.3)  # in progress: sleeping, or blocked writing its answer
        runner.drain_within(0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(runner.cleanup(), timeout=20)
        took = loop.time() - started
    # aiohttp spends the grace twice: waiting for the request, then for it to be cancelled.
    assert took < 0.5 + 2 * CANCEL_GRACE_S + 1.0, took


# --- serve() listens with the limited server ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """The garbage collector as it was, after a test that runs `serve` (which sets it)."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


async def test_serve_listens_with_the_limited_server(
    make_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    restored_collector: None,
) -> None:
    # make_gateway only lends its validated settings (contracts, keys, paths); serve() builds
    # its own runtime from them and the environment.
    settings = (await make_gateway()).runtime.settings
    port = _free_port()
    settings = settings.model_copy(
        update={
            "listen": settings.listen.model_copy(update={"port": port}),
            "limits": settings.limits.model_copy(
                update={"max_connections": 1, "header_read_timeout_s": 0.5}
            ),
            "share_log": settings.share_log.model_copy(
                update={"path": tmp_path / "serve-log.sqlite"}
            ),
        }
    )
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)
    monkeypatch.setenv("ACME_TOKEN", PARTNER_TOKEN)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(settings, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), BOUND_S)
        # Serving, with what it loaded out of the collector's walks.
        assert gc.get_threshold() == heap.THRESHOLDS
        assert gc.get_freeze_count() > 0
        async with connection_to(port) as first, connection_to(port) as second:
            assert await closed_by_peer(second[0])  # beyond max_connections: 1
            assert await closed_by_peer(first[0])  # sent nothing: the head deadline closes it
    finally:
        if ready.is_set():
            signal.raise_signal(signal.SIGTERM)  # serve's own handler: a clean stop
            await asyncio.wait_for(task, BOUND_S)
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
