"""The partner HTTP client on its own: framing, pooling, limits and TLS, against bare sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import os
import resource
import socket
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from certs import self_signed
from partners import RawPartner, Script, writes

from gateway import upstream as upstream_module
from gateway.errors import UpstreamError
from gateway.origins import origin_of
from gateway.upstream import HttpUpstream, UpstreamFailure, UpstreamRequest, _waiting

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"n": 1}'
BOUND_S = 5.0  # far above every wait here: reaching it means something hung


answer_ok = writes(OK)


def url(partner: RawPartner, path: str = "/v1/x", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{partner.port}{path}"


@pytest.fixture
async def partner() -> AsyncIterator[RawPartner]:
    server = await RawPartner().start()
    server.script = answer_ok
    yield server
    await server.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpUpstream]:
    upstream = HttpUpstream(connections=4)
    await upstream.start()
    yield upstream
    await upstream.close()


def request_to(url: str, **changes: Any) -> UpstreamRequest:
    fields: dict[str, Any] = {
        "method": "POST",
        "url": url,
        "headers": (("Content-Type", "application/json"),),
        "body": b'{"a":1}',
        "timeout_s": 2.0,
        "max_response_bytes": 1000,
        **changes,
    }
    return UpstreamRequest(**fields)


async def test_a_connection_that_ended_is_freed_at_once(
    client: HttpUpstream, partner: RawPartner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the cyclic collector, which a running gateway calls rarely (`heap`): a connection
    # and its parser referring to each other stayed in memory after every connection closed.
    made: list[weakref.ref[Any]] = []
    init = upstream_module._Connection.__init__

    def recorded(self: Any, *args: Any) -> None:
        init(self, *args)
        made.append(weakref.ref(self))

    monkeypatch.setattr(upstream_module._Connection, "__init__", recorded)
    gc.disable()
    try:
        for _ in range(3):
            await client.send(request_to(url(partner), reuse_connection=False))
        for _ in range(20):  # the loop's callbacks that end each connection
            await asyncio.sleep(0)
        assert len(made) == 3
        assert [ref() for ref in made] == [None, None, None]
    finally:
        gc.enable()


async def test_the_request_is_exactly_what_the_gateway_built(
    client: HttpUpstream, partner: RawPartner
) -> None:
    await client.send(request_to(url(partner, "/v1/x?page=2"), headers=(("X-Share-Id", "s-1"),)))
    [request] = partner.requests
    head, body = request.head, request.body
    assert head == (
        b"POST /v1/x?page=2 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{partner.port}\r\n".encode()
        + b"X-Share-Id: s-1\r\nContent-Length: 7\r\n\r\n"
    )
    assert body == b'{"a":1}'


async def test_a_header_value_goes_out_as_the_bytes_it_came_from(
    client: HttpUpstream, partner: RawPartner
) -> None:
    # A secret read from the environment holds a byte that is not UTF-8 as a lone surrogate.
    await client.send(request_to(url(partner), headers=(("X-Api-Key", "k\udcffey"),)))
    [request] = partner.requests
    assert b"\r\nX-Api-Key: k\xffey\r\n" in request.head


async def test_a_url_without_a_path_is_sent_to_the_root(
    client: HttpUpstream, partner: RawPartner
) -> None:
    # `GET ?page=2 HTTP/1.1` is no request target: the path is `/` whenever the URL leaves it out.
    await client.send(request_to(url(partner, "?page=2"), method="GET", body=None, headers=()))
    [request] = partner.requests
    assert request.head == (
        b"GET /?page=2 HTTP/1.1\r\n" + f"Host: 127.0.0.1:{partner.port}\r\n\r\n".encode()
    )


@pytest.mark.parametrize(
    ("method", "length"), [("GET", None), ("DELETE", None), ("POST", b"0"), ("PUT", b"0")]
)
async def test_a_bodiless_request_states_a_length_only_where_its_method_has_content(
    client: HttpUpstream, partner: RawPartner, method: str, length: bytes | None
) -> None:
    # A POST without one is a request a partner may refuse (411) or wait on for a body.
    await client.send(request_to(url(partner), method=method, body=None, headers=()))
    [request] = partner.requests
    head, body = request.head, request.body
    assert head.startswith(method.encode() + b" /v1/x HTTP/1.1\r\n")
    stated = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")]
    assert stated == ([] if length is None else [b"content-length: " + length])
    assert body == b""


@pytest.mark.parametrize(
    "header",
    [
        ("X-Note", "a\r\nX-Injected: 1"),
        ("X-Note", "a\nX-Injected: 1"),
        ("X-Note", "a\rX-Injected: 1"),
        ("X-Note", "a\0b"),
        ("X Note", "a"),
        ("X-Note:", "a"),
    ],
    ids=["crlf", "bare_lf", "bare_cr", "nul", "space_in_name", "colon_in_name"],
)
async def test_a_header_that_would_break_the_framing_is_never_sent(
    client: HttpUpstream, partner: RawPartner, header: tuple[str, str]
) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner), headers=(header,)))
    assert caught.value.failure == "error"  # nothing left the gateway
    assert partner.connections == 0
    assert partner.requests == []


async def test_keep_alive_connections_are_reused(client: HttpUpstream, partner: RawPartner) -> None:
    for _ in range(5):
        response = await client.send(request_to(url(partner)))
        assert response.body == b'{"n": 1}'
    assert (partner.connections, len(partner.requests)) == (1, 5)


async def test_a_connection_the_partner_closed_while_a_share_waited_its_turn_is_not_used(
    client: HttpUpstream, partner: RawPartner
) -> None:
    await client.send(request_to(url(partner)))  # leaves a pooled connection

    async def partner_closes_meanwhile() -> bool:
        for writer in list(partner._writers):
            writer.close()
            await writer.wait_closed()
        return True  # the share waited its turn

    response = await client.send(request_to(url(partner), before_send=partner_closes_meanwhile))
    assert response.status == 200
    assert (partner.connections, len(partner.requests)) == (2, 2)


async def test_an_http_1_0_answer_in_chunks_is_read_and_its_connection_not_reused(
    client: HttpUpstream, partner: RawPartner
) -> None:
    # HTTP/1.0 knows no chunks: such framing is faulty, and the connection ends after the
    # answer (RFC 9112 6.1), whatever it says of keep-alive.
    partner.script = writes(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'8\r\n{"n": 1}\r\n0\r\n\r\n'
    )
    for _ in range(2):
        response = await client.send(request_to(url(partner)))
        assert response.body == b'{"n": 1}'
    assert (partner.connections, len(partner.requests)) == (2, 2)


async def test_a_share_that_ends_after_the_client_closed_leaves_no_connection(
    partner: RawPartner,
) -> None:
    async def slow(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await asyncio.sleep(0.2)
        return await answer_ok(raw, reader, writer)

    partner.script = slow
    upstream = HttpUpstream()
    await upstream.start()
    sending = asyncio.ensure_future(upstream.send(request_to(url(partner))))
    await asyncio.sleep(0.05)
    await upstream.close()  # shutting down, with that share still in flight
    response = await asyncio.wait_for(sending, BOUND_S)
    assert response.status == 200
    async with asyncio.timeout(BOUND_S):
        while partner.open_connections:  # noqa: ASYNC110 - closed, not parked in a dead pool
            await asyncio.sleep(0.01)


async def test_an_idle_connection_is_closed_before_the_partner_would(
    partner: RawPartner,
) -> None:
    upstream = HttpUpstream(idle_timeout_s=0.2)
    await upstream.start()
    try:
        await upstream.send(request_to(url(partner)))
        await asyncio.sleep(0.5)  # past the idle timeout: the sweeper closed it
        await upstream.send(request_to(url(partner)))
    finally:
        await upstream.close()
    assert (partner.connections, len(partner.requests)) == (2, 2)


async def test_no_more_than_the_connection_limit_is_in_use(partner: RawPartner) -> None:
    release, two_arrived = asyncio.Event(), asyncio.Event()
    in_flight = most_in_flight = 0

    async def slow(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        if len(partner.requests) == 2:
            two_arrived.set()
        await release.wait()
        in_flight -= 1
        return await answer_ok(raw, reader, writer)

    partner.script = slow
    upstream = HttpUpstream(connections=2, connections_per_origin=2)
    await upstream.start()
    try:
        sends = [asyncio.create_task(upstream.send(request_to(url(partner)))) for _ in range(5)]
        await asyncio.wait_for(two_arrived.wait(), BOUND_S)
        await asyncio.sleep(0.1)  # a third request would have arrived by now
        assert len(partner.requests) == 2
        release.set()
        responses = await asyncio.wait_for(asyncio.gather(*sends), BOUND_S)
    finally:
        await upstream.close()
    assert [r.status for r in responses] == [200] * 5
    assert most_in_flight == 2
    assert partner.connections == 2


async def hang(raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    await raw.release.wait()
    return False


@pytest.fixture
async def hanging() -> AsyncIterator[RawPartner]:
    server = await RawPartner().start()
    server.script = hang
    yield server
    await server.close()


async def test_a_hanging_partner_holds_only_its_own_connections(
    partner: RawPartner, hanging: RawPartner
) -> None:
    upstream = HttpUpstream(connections=4)  # at most 1 in use to one origin
    await upstream.start()
    stuck = [
        asyncio.create_task(upstream.send(request_to(url(hanging), timeout_s=BOUND_S)))
        for _ in range(4)
    ]
    try:
        async with asyncio.timeout(BOUND_S):
            while not hanging.requests:  # noqa: ASYNC110 - the hanging partner's cap reached
                await asyncio.sleep(0.01)
        # Three shares to the hanging partner wait for its one connection; the healthy
        # partner is reached at once, well within its deadline.
        response = await upstream.send(request_to(url(partner), timeout_s=BOUND_S / 2))
        assert response.status == 200
        assert hanging.connections == 1
        assert not any(task.done() for task in stuck)
    finally:
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        await upstream.close()


async def test_a_pooled_connection_the_partner_closed_makes_no_room(
    partner: RawPartner, hanging: RawPartner
) -> None:
    # `hanging` answers and hangs up (as a partner with a short keep-alive does): its place
    # was given back, so closing it frees nothing; `partner`'s live idle connection must go.
    async def answer_then_hang_up(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await answer_ok(raw, reader, writer)
        return False

    hanging.script = answer_then_hang_up
    other = await RawPartner().start()
    upstream = HttpUpstream(connections=1, connections_per_origin=1)
    await upstream.start()
    try:
        await upstream.send(request_to(url(hanging)))
        async with asyncio.timeout(BOUND_S):
            while hanging.open_connections:  # noqa: ASYNC110 - until it hung up
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # and the client has seen it
        await upstream.send(request_to(url(partner)))  # holds the only place, idle
        response = await upstream.send(request_to(url(other), timeout_s=BOUND_S / 2))
        assert response.status == 200
    finally:
        await upstream.close()
        await other.close()


async def test_connections_kept_idle_make_room_for_another_partner(
    partner: RawPartner, hanging: RawPartner
) -> None:
    # Both places under the ceiling are held by idle connections to `partner`: a share to
    # another partner closes one of them rather than wait for its deadline.
    release = asyncio.Event()
    partner.script = answers_once(release)
    other = await RawPartner().start()
    upstream = HttpUpstream(connections=2, connections_per_origin=2)
    await upstream.start()
    try:
        two = [asyncio.create_task(upstream.send(request_to(url(partner)))) for _ in range(2)]
        async with asyncio.timeout(BOUND_S):
            while len(partner.requests) < 2:  # noqa: ASYNC110 - both connections open
                await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*two)  # both connections now idle, in the pool
        response = await upstream.send(request_to(url(other), timeout_s=BOUND_S / 2))
        assert response.status == 200
        # One idle connection was closed for it; the other still serves `partner`.
        await upstream.send(request_to(url(partner)))
        assert (partner.connections, other.connections) == (2, 1)
    finally:
        await upstream.close()
        await other.close()


async def test_a_place_freed_while_another_partner_waits_for_one_goes_to_it(
    partner: RawPartner,
) -> None:
    # The only place is in use when a share to another partner asks for one: the connection,
    # once answered, is closed for it rather than kept idle until the idle timeout (4 s).
    release = asyncio.Event()
    partner.script = answers_once(release)
    other = await RawPartner().start()
    other.script = answer_ok
    upstream = HttpUpstream(connections=1, connections_per_origin=1)
    await upstream.start()
    try:
        first = asyncio.create_task(upstream.send(request_to(url(partner))))
        async with asyncio.timeout(BOUND_S):
            while not partner.requests:  # noqa: ASYNC110 - the only place is in use
                await asyncio.sleep(0.01)
        waiting = asyncio.create_task(upstream.send(request_to(url(other), timeout_s=2.0)))
        await asyncio.sleep(0.05)  # it is waiting for the place by now
        release.set()
        assert (await first).status == 200
        assert (await waiting).status == 200
        assert (partner.connections, other.connections) == (1, 1)
        async with asyncio.timeout(BOUND_S):
            while partner.open_connections:  # noqa: ASYNC110 - closed, not kept idle
                await asyncio.sleep(0.01)
    finally:
        await upstream.close()
        await other.close()


async def test_the_ceiling_counts_every_open_connection(hanging: RawPartner) -> None:
    others = [await RawPartner().start() for _ in range(2)]
    for other in others:
        other.script = hang
    upstream = HttpUpstream(connections=2, connections_per_origin=1)
    await upstream.start()
    stuck = [
        asyncio.create_task(upstream.send(request_to(url(server), timeout_s=BOUND_S)))
        for server in (hanging, others[0])
    ]
    try:
        async with asyncio.timeout(BOUND_S):
            while hanging.connections + others[0].connections < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        # Both places are in use: a third partner waits for one, and nothing reaches it.
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send(request_to(url(others[1]), timeout_s=0.2))
        assert (caught.value.failure, caught.value.error.status) == ("error", 504)
        assert others[1].connections == 0
    finally:
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
        await upstream.close()
        for other in others:
            await other.close()


@pytest.mark.parametrize(("connections", "per_origin"), [(4, 5), (4, 0)])
def test_the_cap_per_origin_lies_between_one_and_the_ceiling(
    connections: int, per_origin: int
) -> None:
    with pytest.raises(ValueError, match="connections_per_origin"):
        HttpUpstream(connections=connections, connections_per_origin=per_origin)


async def test_one_origin_written_two_ways_has_one_cap(hanging: RawPartner) -> None:
    upstream = HttpUpstream(connections=8, connections_per_origin=1)
    await upstream.start()
    first = asyncio.create_task(
        upstream.send(request_to(f"http://localhost:{hanging.port}/v1/x", timeout_s=BOUND_S))
    )
    try:
        async with asyncio.timeout(BOUND_S):
            while not hanging.requests:  # noqa: ASYNC110 - the origin's one connection in use
                await asyncio.sleep(0.01)
        # The same origin with its host in capitals: it waits for that connection, and
        # nothing reaches the partner.
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send(request_to(f"http://LOCALHOST:{hanging.port}/v1/x", timeout_s=0.2))
        assert (caught.value.failure, caught.value.error.status) == ("error", 504)
        assert (hanging.connections, len(hanging.requests)) == (1, 1)
        assert not first.done()
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await upstream.close()


async def test_an_idle_connection_serves_its_origin_however_written(
    client: HttpUpstream, partner: RawPartner
) -> None:
    hosts = ["localhost", "LOCALHOST", "LocalHost"]
    for host in hosts:
        response = await client.send(request_to(f"http://{host}:{partner.port}/v1/x"))
        assert response.status == 200
    assert partner.connections == 1
    # Each share still names the partner as its URL wrote it.
    assert [r.header_values("Host") for r in partner.requests] == [
        [f"{host}:{partner.port}"] for host in hosts
    ]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST"])
async def test_no_method_is_resent_when_a_reused_connection_dies(
    client: HttpUpstream, partner: RawPartner, method: str
) -> None:
    async def once_then_die(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if len(partner.requests) == 1:
            return await answer_ok(raw, reader, writer)
        writer.transport.abort()  # read the share, then died without a word
        return False

    partner.script = once_then_die
    body = None if method in {"GET", "DELETE"} else b"{}"
    await client.send(request_to(url(partner), method=method, body=body))
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner), method=method, body=body))
    assert (caught.value.failure, caught.value.status) == ("possibly_delivered", None)
    assert (partner.connections, len(partner.requests)) == (1, 2)


async def test_interim_answers_are_skipped(client: HttpUpstream, partner: RawPartner) -> None:
    async def early_hints(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        return await answer_ok(raw, reader, writer)

    partner.script = early_hints
    response = await client.send(request_to(url(partner)))
    assert (response.status, response.body) == (200, b'{"n": 1}')
    assert "Link" not in response.headers


async def test_an_answer_without_a_length_ends_when_the_partner_closes(
    client: HttpUpstream, partner: RawPartner
) -> None:
    async def until_close(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        writer.write(b'{"whole": true}')
        await writer.drain()
        return False

    partner.script = until_close
    response = await client.send(request_to(url(partner)))
    assert (response.status, response.body) == (200, b'{"whole": true}')
    # That connection is gone; the next share opens another.
    partner.script = answer_ok
    await client.send(request_to(url(partner)))
    assert partner.connections == 2


async def test_a_second_answer_in_the_same_packet_drops_the_connection(
    client: HttpUpstream, partner: RawPartner
) -> None:
    partner.script = writes(OK + OK.replace(b"1}", b"2}"))
    first = await client.send(request_to(url(partner)))
    partner.script = answer_ok
    second = await client.send(request_to(url(partner)))
    assert (first.body, second.body) == (b'{"n": 1}', b'{"n": 1}')
    assert partner.connections == 2


def numbered(n: int) -> bytes:
    body = b'{"n": %d}' % n
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def answers_once(release: asyncio.Event) -> Script:
    """A partner that answers each request once `release` is set."""

    async def slow(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await release.wait()
        return await answer_ok(raw, reader, writer)

    return slow


def counting(writers: list[asyncio.StreamWriter]) -> Script:
    """Answers each request with its number, keeping each connection's writer in `writers`."""

    async def script(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writers.append(writer)
        writer.write(numbered(len(raw.requests)))
        await writer.drain()
        return True

    return script


@pytest.mark.parametrize("after", ["second_answer", "close"])
async def test_a_pooled_connection_with_anything_waiting_on_it_is_not_reused(
    client: HttpUpstream, partner: RawPartner, after: str
) -> None:
    writers: list[asyncio.StreamWriter] = []
    partner.script = counting(writers)
    first = await client.send(request_to(url(partner)))
    # What the partner sends after the first answer, on the now idle connection: written to
    # the socket at once, and not yet read by the gateway, which has not yielded since.
    if after == "second_answer":
        writers[0].write(numbered(1))  # the first share answered twice
    else:
        writers[0].get_extra_info("socket").shutdown(socket.SHUT_WR)  # the partner hangs up
    second = await client.send(request_to(url(partner)))
    assert (first.body, second.body) == (b'{"n": 1}', b'{"n": 2}')
    assert partner.connections == 2  # the second share went over a new connection


async def test_a_late_second_answer_never_reaches_a_share_on_a_connection_of_its_own(
    client: HttpUpstream, partner: RawPartner
) -> None:
    # The residual race of keep-alive: a second answer that comes after the next share went
    # out on the same connection. Without reuse, there is no next share on that connection.
    async def twice(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(numbered(len(raw.requests)))
        await writer.drain()
        if len(raw.requests) == 1:
            with contextlib.suppress(ConnectionError):
                await asyncio.sleep(0.02)
                writer.write(numbered(1))
                await writer.drain()
        return True

    partner.script = twice
    first = await client.send(request_to(url(partner), reuse_connection=False))
    second = await client.send(request_to(url(partner), reuse_connection=False))
    assert (first.body, second.body) == (b'{"n": 1}', b'{"n": 2}')
    assert partner.connections == 2
    assert [r.header_values("Connection") for r in partner.requests] == [["close"]] * 2


@pytest.mark.parametrize(
    ("first", "second", "body"),
    [(b"gzip", b"gzip", b"xx"), (b"identity", b"gzip", b"{}"), (b"gzip", b"identity", b"{}")],
    ids=["twice_gzip", "identity_then_gzip", "gzip_then_identity"],
)
async def test_two_content_codings_are_refused(
    client: HttpUpstream, partner: RawPartner, first: bytes, second: bytes, body: bytes
) -> None:
    # Whichever one the body is in, reading it by the first would be a guess.
    partner.script = writes(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: "
        + first
        + b"\r\nContent-Encoding: "
        + second
        + b"\r\nContent-Length: 2\r\n\r\n"
        + body
    )
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner)))
    assert (caught.value.failure, caught.value.status) == ("possibly_delivered", 200)
    assert isinstance(caught.value.error, UpstreamError)
    assert caught.value.error.message == "the partner's answer has two content codings"


CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_trailer_fields_never_become_header_fields(
    client: HttpUpstream, partner: RawPartner
) -> None:
    body = gzip.compress(b'{"n": 1}')
    partner.script = writes(
        CHUNKED
        + f"{len(body):x}\r\n".encode()
        + body
        + b'\r\n0\r\nContent-Encoding: gzip\r\nETag: "t"\r\nCache-Control: public\r\n\r\n'
    )
    response = await client.send(request_to(url(partner)))
    assert (response.status, response.body) == (200, body)  # not decoded on a trailer's word
    assert {"ETag", "Cache-Control", "Content-Encoding"}.isdisjoint(response.headers)


@pytest.mark.parametrize("codings", [b"gzip, chunked", b"deflate,chunked", b"x-custom, chunked"])
async def test_a_transfer_coding_besides_chunked_is_refused(
    client: HttpUpstream, partner: RawPartner, codings: bytes
) -> None:
    body = gzip.compress(b'{"n": 1}')
    partner.script = writes(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: "
        + codings
        + b"\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner)))
    assert (caught.value.failure, caught.value.status) == ("possibly_delivered", 200)
    assert isinstance(caught.value.error, UpstreamError)


async def test_a_head_past_its_cap_is_refused_as_it_arrives(
    client: HttpUpstream, partner: RawPartner
) -> None:
    async def endless_header(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        # One header value that never ends, sent bit by bit: no field is ever complete, so
        # only what arrived can be counted. Endless: until the gateway closes the connection
        # (or the deadline passes).
        with contextlib.suppress(ConnectionError):
            writer.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
            deadline = time.monotonic() + BOUND_S
            while time.monotonic() < deadline:
                writer.write(b"a" * 4096)
                await writer.drain()
                await asyncio.sleep(0.001)
        return True

    partner.script = endless_header
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner), timeout_s=BOUND_S))
    # Refused as too large, not timed out.
    assert (caught.value.failure, caught.value.error.code) == (
        "possibly_delivered",
        "upstream_error",
    )
    assert caught.value.error.message.endswith(
        f"its head exceeds {upstream_module.MAX_ANSWER_HEAD_BYTES} bytes"
    )


@pytest.mark.parametrize(
    "start",
    [b"0\r\nX-Trailer: ", b"0\r\nX-Trailer", b"5;ext="],
    ids=["endless_trailer_value", "endless_trailer_name", "endless_chunk_extension"],
)
async def test_bytes_that_bring_no_body_are_capped_like_a_head(
    client: HttpUpstream, partner: RawPartner, start: bytes
) -> None:
    async def endless_framing(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        with contextlib.suppress(ConnectionError):
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b'c\r\n{"score": 7}\r\n'
                + start
            )
            # Endless: until the gateway closes the connection (or the deadline passes).
            deadline = time.monotonic() + BOUND_S
            while time.monotonic() < deadline:
                writer.write(b"a" * 4096)
                await writer.drain()
                await asyncio.sleep(0.001)
        return True

    partner.script = endless_framing
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner), timeout_s=BOUND_S))
    # Refused as it arrives: a deadline would have ended it as a timeout.
    assert (caught.value.failure, caught.value.error.code) == (
        "possibly_delivered",
        "upstream_error",
    )


async def test_many_small_chunks_are_not_mistaken_for_endless_framing(
    client: HttpUpstream, partner: RawPartner
) -> None:
    # One body byte per chunk: five framing bytes for each, far more than the cap in all.
    body = b'{"pad": "' + b"a" * 40_000 + b'"}'
    chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    partner.script = writes(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    answer = await client.send(request_to(url(partner), max_response_bytes=len(body)))
    assert answer.body == body


def written_in(*pieces: bytes, then_hang: bool = False) -> Script:
    """A script writing `pieces` one read apart, then hanging or keeping the connection."""

    async def script(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)  # a read of its own, most likely
        if then_hang:
            await raw.release.wait()
        return True

    return script


CHUNKS_OVER_THE_CAP = {
    # One chunk's size line declares more than the cap of 1000 bytes, and nothing follows it.
    "one_chunk": (CHUNKED, b"3e9\r\n"),
    "with_extensions": (CHUNKED, b"0003E9;name=value\r\n"),
    "with_its_first_bytes": (CHUNKED, b"10000\r\n" + b"x" * 10),
    "line_split_over_reads": (CHUNKED + b"1", b"0", b"000\r", b"\n"),
    # Within the cap each, past it together with what came before.
    "past_what_came_before": (CHUNKED + b"258\r\n" + b"x" * 600 + b"\r\n", b"258\r\n"),
}


@pytest.mark.parametrize("pieces", CHUNKS_OVER_THE_CAP.values(), ids=CHUNKS_OVER_THE_CAP.keys())
async def test_a_chunk_declaring_more_than_the_cap_is_refused_at_once(
    client: HttpUpstream, partner: RawPartner, pieces: tuple[bytes, ...]
) -> None:
    # The partner then stalls: waiting for bytes that could never be taken ended at the
    # deadline as a timeout, and not as the too large answer a declared length is.
    partner.script = written_in(*pieces, then_hang=True)
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner), timeout_s=1.0, max_response_bytes=1000))
    assert (caught.value.failure, caught.value.status) == ("possibly_delivered", 200)
    assert caught.value.error.code == "upstream_error"
    assert caught.value.error.message.endswith("it declares more than 1000 bytes")
    partner.release.set()
    async with asyncio.timeout(BOUND_S):
        while partner.open_connections:  # noqa: ASYNC110 - the client closed it
            await asyncio.sleep(0.01)
    # Not reused: the next share goes on a connection of its own.
    partner.script = answer_ok
    assert (await client.send(request_to(url(partner)))).body == b'{"n": 1}'
    assert partner.connections == 2


async def test_a_chunk_declaring_exactly_the_cap_is_taken(
    client: HttpUpstream, partner: RawPartner
) -> None:
    # Its size line arrives a read before its bytes: the chunk is still open when it is read.
    partner.script = written_in(
        CHUNKED + b"258\r\n" + b"x" * 600 + b"\r\n190\r\n", b"y" * 400 + b"\r\n0\r\n\r\n"
    )
    answer = await client.send(request_to(url(partner), max_response_bytes=1000))
    assert answer.body == b"x" * 600 + b"y" * 400


async def test_chunk_size_lines_split_over_reads_are_read_as_llhttp_reads_them(
    client: HttpUpstream, partner: RawPartner
) -> None:
    # Leading zeros past what is kept of a line, extensions, a size line cut anywhere, a last
    # chunk with trailer fields whose names are hex digits: all within the cap, all taken.
    partner.script = written_in(
        CHUNKED + b"0" * 40,
        b'1f4;ext="a;b"\r',
        b"\n" + b"x" * 500 + b"\r\n0",
        b"0001F4\r\n" + b"y" * 500 + b"\r\n0\r\nabc: 1\r\n",
        b"\r\n",
    )
    answer = await client.send(request_to(url(partner), max_response_bytes=1000))
    assert answer.body == b"x" * 500 + b"y" * 500


@pytest.mark.parametrize("status", [b"000", b"099", b"600", b"999"])
async def test_a_status_outside_100_to_599_is_a_broken_answer(
    client: HttpUpstream, partner: RawPartner, status: bytes
) -> None:
    partner.script = writes(b"HTTP/1.1 " + status + b" X\r\nContent-Length: 5\r\n\r\nhello")
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner), timeout_s=BOUND_S))
    assert (caught.value.failure, caught.value.error.code) == (
        "possibly_delivered",
        "upstream_error",
    )


async def test_a_304_stating_the_resources_length_is_empty(
    client: HttpUpstream, partner: RawPartner
) -> None:
    partner.script = writes(
        b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 999999999\r\n\r\n'
    )
    answer = await client.send(request_to(url(partner), max_response_bytes=1000))
    assert (answer.status, answer.body) == (304, b"")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 205 Reset Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ],
    ids=["205_length_0", "205_no_chunk", "204_length_0", "204"],
)
async def test_an_answer_without_content_that_states_none_is_taken(
    client: HttpUpstream, partner: RawPartner, answer: bytes
) -> None:
    partner.script = writes(answer)
    for _ in range(2):
        response = await client.send(request_to(url(partner)))
        assert (response.status, response.body) == (int(answer[9:12]), b"")
    assert partner.connections == 1  # a clean answer: its connection is used again


@pytest.mark.parametrize("status", [b"205 Reset Content", b"204 No Content"])
async def test_a_chunk_in_an_answer_without_content_is_refused_as_its_size_arrives(
    client: HttpUpstream, partner: RawPartner, status: bytes
) -> None:
    partner.script = written_in(
        b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n", then_hang=True
    )
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner), timeout_s=1.0))
    assert (caught.value.failure, caught.value.status) == ("possibly_delivered", int(status[:3]))
    assert caught.value.error.code == "upstream_error"
    assert "answer carries content" in caught.value.error.message


async def test_a_304_followed_by_bytes_is_empty_and_its_connection_not_reused(
    client: HttpUpstream, partner: RawPartner
) -> None:
    # A 304's length is the resource's and it ends with its head (RFC 9112 6.3): what follows
    # is no body of it but bytes nobody asked for, which end the connection.
    partner.script = writes(
        b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 8\r\n\r\n{"n": 1}'
    )
    answer = await client.send(request_to(url(partner)))
    assert (answer.status, answer.body) == (304, b"")
    partner.script = answer_ok
    assert (await client.send(request_to(url(partner)))).body == b'{"n": 1}'
    assert partner.connections == 2


@pytest.mark.parametrize("headers", [1, 40], ids=["one_field", "many_fields"])
async def test_a_head_past_its_cap_is_refused_when_it_arrives_whole(
    client: HttpUpstream, partner: RawPartner, headers: int
) -> None:
    size = upstream_module.MAX_ANSWER_HEAD_BYTES // headers + 100
    fields = b"".join(b"X-Pad-%d: " % n + b"a" * size + b"\r\n" for n in range(headers))
    partner.script = writes(b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\n{}")
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner)))
    assert caught.value.error.code == "upstream_error"


@pytest.mark.parametrize("interim", [False, True], ids=["final", "interim"])
async def test_a_head_past_its_cap_in_its_reason_phrase_is_refused_when_it_arrives_whole(
    client: HttpUpstream, partner: RawPartner, interim: bool
) -> None:
    reason = b"R" * (upstream_module.MAX_ANSWER_HEAD_BYTES + 100)
    head = b"HTTP/1.1 103 " + reason + b"\r\n\r\n" if interim else b""
    final = b"HTTP/1.1 200 " + (b"OK" if interim else reason)
    partner.script = writes(head + final + b"\r\nContent-Length: 2\r\n\r\n{}")
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner)))
    assert (caught.value.failure, caught.value.error.code) == (
        "possibly_delivered",
        "upstream_error",
    )
    assert "too large" in caught.value.error.message


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_an_empty_answer_with_a_content_coding_is_empty(
    client: HttpUpstream, partner: RawPartner, status: bytes
) -> None:
    partner.script = writes(
        b"HTTP/1.1 " + status + b'\r\nETag: "v1"\r\nContent-Encoding: gzip\r\n\r\n'
    )
    response = await client.send(request_to(url(partner)))
    assert (response.status, response.body) == (int(status[:3]), b"")
    assert "Content-Encoding" not in response.headers


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://Partner.Example", ("http", "partner.example", 80, "Partner.Example")),
        ("https://partner.example", ("https", "partner.example", 443, "partner.example")),
        ("https://10.0.0.1:8443", ("https", "10.0.0.1", 8443, "10.0.0.1:8443")),
        ("http://[::1]:8080", ("http", "::1", 8080, "[::1]:8080")),
        # The Host header is ASCII: an internationalised name goes as its A-label.
        ("https://Bücher.example", ("https", "bücher.example", 443, "xn--bcher-kva.example")),
        ("http://例子.中国:8080", ("http", "例子.中国", 8080, "xn--fsqu00a.xn--fiqs8s:8080")),
    ],
)
def test_origins_are_parsed_once_and_exactly(base: str, expected: tuple[Any, ...]) -> None:
    assert tuple(origin_of(base)) == expected


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://localhost:8080", "http://LOCALHOST:8080"),
        ("https://partner.example", "https://Partner.Example:443"),
        ("http://partner.example:80", "HTTP://partner.example"),
        ("http://[::1]", "http://[::1]:80"),
        ("https://partner.example.", "https://partner.example"),
        ("http://[0:0::1]:8080", "http://[::1]:8080"),
        ("http://[::FFFF:7f00:1]", "http://[::ffff:127.0.0.1]"),
    ],
)
def test_one_origin_written_two_ways_is_pooled_as_one(one: str, other: str) -> None:
    assert origin_of(one).key == origin_of(other).key
    assert origin_of(one).authority != origin_of(other).authority  # each share's Host header


@pytest.mark.parametrize(
    "base",
    ["ftp://a", "http://", "http://user@a", "http://a:x", "http://a:0", "http://a:70000", "a"],
)
def test_anything_but_an_http_origin_is_refused(base: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        origin_of(base)


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
async def tls_partner(tmp_path: Path) -> AsyncIterator[tuple[RawPartner, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await RawPartner().start(context)
    server.script = answer_ok
    yield server, cert
    await server.close()


async def test_a_partner_over_tls_is_verified_and_reached(
    tls_partner: tuple[RawPartner, Path],
) -> None:
    partner, cert = tls_partner
    upstream = HttpUpstream(ssl_context=ssl.create_default_context(cafile=str(cert)))
    await upstream.start()
    try:
        for _ in range(2):
            response = await upstream.send(request_to(url(partner, scheme="https")))
            assert (response.status, response.body) == (200, b'{"n": 1}')
    finally:
        await upstream.close()
    assert (partner.connections, len(partner.requests)) == (1, 2)
    assert partner.requests[0].body == b'{"a":1}'


async def test_an_answer_over_tls_that_runs_until_close_is_refused(
    tls_partner: tuple[RawPartner, Path],
) -> None:
    # Cut by a bare FIN or closed properly, the client cannot tell: over TLS an answer must
    # say where it ends.
    partner, cert = tls_partner

    async def cut(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"score": 1')
        await writer.drain()
        writer.get_extra_info("socket").shutdown(socket.SHUT_WR)  # a FIN without close_notify
        await asyncio.sleep(0.2)
        return False

    partner.script = cut
    upstream = HttpUpstream(ssl_context=ssl.create_default_context(cafile=str(cert)))
    await upstream.start()
    try:
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send(request_to(url(partner, scheme="https"), timeout_s=BOUND_S))
    finally:
        await upstream.close()
    assert (caught.value.failure, caught.value.error.code) == (
        "possibly_delivered",
        "upstream_error",
    )


async def test_a_partner_whose_certificate_is_not_trusted_gets_nothing(
    tls_partner: tuple[RawPartner, Path], client: HttpUpstream
) -> None:
    partner, _ = tls_partner
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(url(partner, scheme="https")))
    assert caught.value.failure == "error"
    assert partner.requests == []


async def test_a_share_that_never_got_a_connection_in_time_was_not_delivered(
    partner: RawPartner,
) -> None:
    release, arrived = asyncio.Event(), asyncio.Event()

    async def slow(
        raw: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        arrived.set()
        await release.wait()
        return await answer_ok(raw, reader, writer)

    partner.script = slow
    upstream = HttpUpstream(connections=1)
    await upstream.start()
    try:
        first = asyncio.create_task(upstream.send(request_to(url(partner))))
        await asyncio.wait_for(arrived.wait(), BOUND_S)  # the only connection is in use
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send(request_to(url(partner), timeout_s=0.2))
        release.set()
        assert (await asyncio.wait_for(first, BOUND_S)).status == 200
    finally:
        await upstream.close()
    # Timed out waiting for the only connection: a 504, and an outcome that says nothing left.
    assert (caught.value.failure, caught.value.error.status) == ("error", 504)
    assert len(partner.requests) == 1


async def test_a_connection_idle_past_the_timeout_is_never_used_again(
    client: HttpUpstream, partner: RawPartner, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.send(request_to(url(partner)))
    # Later than the idle timeout, and before the sweeper closed the connection: a share sent
    # now must not go over a connection the partner may be closing.
    later = time.monotonic() + 4.5
    monkeypatch.setattr(upstream_module, "_clock", lambda: later)
    await client.send(request_to(url(partner)))
    assert (partner.connections, len(partner.requests)) == (2, 2)


@pytest.mark.parametrize(
    "host",
    ["api..acme.example", "a" * 64 + ".example", ".acme.example"],
    ids=["empty_label", "label_over_63", "leading_dot"],
)
async def test_a_host_the_resolver_cannot_encode_is_a_failed_connection(
    client: HttpUpstream, host: str
) -> None:
    # getaddrinfo refuses such a name with a UnicodeError, not an OSError: still a share that
    # never left the gateway, not a crash.
    with pytest.raises(UpstreamFailure) as caught:
        await client.send(request_to(f"http://{host}/v1/x"))
    assert (caught.value.failure, caught.value.status) == ("error", None)
    assert caught.value.error.code == "upstream_error"


@pytest.mark.parametrize("after", ["second_answer", "close"])
async def test_a_pooled_tls_connection_with_anything_waiting_on_it_is_not_reused(
    tls_partner: tuple[RawPartner, Path], after: str
) -> None:
    partner, cert = tls_partner
    writers: list[asyncio.StreamWriter] = []
    partner.script = counting(writers)
    upstream = HttpUpstream(ssl_context=ssl.create_default_context(cafile=str(cert)))
    await upstream.start()
    try:
        first = await upstream.send(request_to(url(partner, scheme="https")))
        # As over plain TCP: the record is on the gateway's socket, not yet read.
        if after == "second_answer":
            writers[0].write(numbered(1))
        else:
            writers[0].get_extra_info("socket").shutdown(socket.SHUT_WR)
        second = await upstream.send(request_to(url(partner, scheme="https")))
    finally:
        await upstream.close()
    assert (first.body, second.body) == (b'{"n": 1}', b'{"n": 2}')
    assert partner.connections == 2


def test_a_connection_numbered_past_1024_is_looked_at_too() -> None:
    # select() refuses descriptors from 1024 on; a busy gateway's may be numbered that high.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(soft, hard) <= 1500:
        pytest.skip("descriptors are limited to fewer than 1500 here")
    left, right = socket.socketpair()
    high = os.dup2(left.fileno(), 1500)
    try:
        probe = socket.socket(fileno=high)
        assert _waiting(probe) is False
        right.send(b"x")
        assert _waiting(probe) is True
        probe.detach()
    finally:
        os.close(high)
        left.close()
        right.close()


# --- names --------------------------------------------------------------------------------------


@dataclass
class NameServers:
    """The system's resolver, as the client sees it: names in `addresses` lead to loopback; a
    lookup for a name in `hanging` gets no answer until `answer` is set, then fails as one that
    timed out."""

    real: Callable[..., Any]
    addresses: dict[str, str] = field(default_factory=dict)
    several: dict[str, list[str]] = field(default_factory=dict)  # names with more addresses
    hanging: set[str] = field(default_factory=set)
    answer: threading.Event = field(default_factory=threading.Event)
    asked: list[str] = field(default_factory=list)  # each lookup, as its thread made it

    def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host in self.hanging:
            self.asked.append(host)
            self.answer.wait(BOUND_S)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in self.addresses:
            self.asked.append(host)
            return self.real(self.addresses[host], port, *args, **kwargs)
        if host in self.several:
            self.asked.append(host)
            return [i for a in self.several[host] for i in self.real(a, port, *args, **kwargs)]
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> Iterator[NameServers]:
    servers = NameServers(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", servers.getaddrinfo)
    yield servers
    servers.answer.set()  # no thread left waiting on a name server past the test


async def test_a_partner_whose_name_server_hangs_keeps_no_other_from_being_reached(
    partner: RawPartner, names: NameServers
) -> None:
    names.hanging.add("slow-dns.example")
    names.addresses["partner.example"] = "127.0.0.1"
    upstream = HttpUpstream(connections=256)  # at most 64 in use to one origin
    await upstream.start()
    try:
        # More shares to the partner whose name server does not answer than asyncio's default
        # executor has threads (32 at most); each gives up at its deadline, nothing sent.
        slow = request_to("http://slow-dns.example/v1/x", timeout_s=0.2)
        results = await asyncio.gather(
            *(upstream.send(slow) for _ in range(40)), return_exceptions=True
        )
        assert all(isinstance(r, UpstreamFailure) and r.failure == "error" for r in results)
        # Another partner reached by its name, and the process's other work on threads.
        response = await upstream.send(
            request_to(f"http://partner.example:{partner.port}/v1/x", timeout_s=BOUND_S / 2)
        )
        assert response.status == 200
        assert [r.header_values("Host") for r in partner.requests] == [
            [f"partner.example:{partner.port}"]
        ]
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "ran"), BOUND_S) == "ran"
    finally:
        names.answer.set()
        await upstream.close()


async def test_a_name_whose_first_address_refuses_is_reached_at_the_next(
    partner: RawPartner, names: NameServers
) -> None:
    # The partner listens on 127.0.0.1 only: at 127.0.0.2 its port refuses the connection.
    names.several["partner.example"] = ["127.0.0.2", "127.0.0.1"]
    names.several["gone.example"] = ["127.0.0.2", "127.0.0.3"]
    upstream = HttpUpstream()
    await upstream.start()
    try:
        response = await upstream.send(request_to(f"http://partner.example:{partner.port}/v1/x"))
        assert response.status == 200
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send(request_to(f"http://gone.example:{partner.port}/v1/x"))
        assert caught.value.failure == "error"  # no address took it: nothing was sent
    finally:
        await upstream.close()
    assert len(partner.requests) == 1


async def test_shares_waiting_for_one_name_share_one_lookup_and_no_failure_is_kept(
    partner: RawPartner, names: NameServers
) -> None:
    names.hanging.add("partner.example")
    names.addresses["partner.example"] = "127.0.0.1"
    upstream = HttpUpstream()
    await upstream.start()
    target = f"http://partner.example:{partner.port}/v1/x"
    waiting = [
        asyncio.create_task(upstream.send(request_to(target, timeout_s=BOUND_S))) for _ in range(10)
    ]
    try:
        async with asyncio.timeout(BOUND_S):
            while not names.asked:  # noqa: ASYNC110 - the first lookup made
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # another lookup would have been made by now
        assert names.asked == ["partner.example"]
        # The name server's lookup times out: every share waiting on it fails, nothing sent.
        names.hanging.clear()
        names.answer.set()
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), BOUND_S)
        assert all(isinstance(r, UpstreamFailure) and r.failure == "error" for r in results)
        assert partner.connections == 0
        # The next share asks again, and the name server answers this time.
        response = await upstream.send(request_to(target))
        assert response.status == 200
        assert names.asked == ["partner.example"] * 2
        assert len(partner.requests) == 1
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await upstream.close()


async def test_a_partner_reached_by_name_over_tls_is_verified_against_that_name(
    tmp_path: Path, names: NameServers
) -> None:
    cert, key = self_signed(tmp_path, dns_name="partner.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    partner = await RawPartner().start(context)
    partner.script = answer_ok
    # Both names lead to the partner's address; its certificate names only one of them.
    names.addresses.update({"partner.example": "127.0.0.1", "other.example": "127.0.0.1"})
    upstream = HttpUpstream(ssl_context=ssl.create_default_context(cafile=str(cert)))
    await upstream.start()
    try:
        response = await upstream.send(request_to(f"https://partner.example:{partner.port}/v1/x"))
        assert response.status == 200
        with pytest.raises(UpstreamFailure) as caught:
            await upstream.send(request_to(f"https://other.example:{partner.port}/v1/x"))
        assert caught.value.failure == "error"
    finally:
        await upstream.close()
        await partner.close()
    assert len(partner.requests) == 1
