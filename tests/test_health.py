"""`share-gateway health`: the probe asks the gateway where its settings put it."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from conftest import GatewayFactory

from gateway.cli import main
from gateway.probe import probe_address, url_host
from gateway.settings import ListenSettings

# A fake gateway's handler: the status it answers.
Answer = Callable[[web.Request], Awaitable[web.Response]]


@pytest.fixture(autouse=True)
def no_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings only as each test writes them: no gateway.yaml here, no variable from outside."""
    monkeypatch.chdir(tmp_path)
    for variable in list(os.environ):
        if variable.startswith("SHARE_GATEWAY_"):
            monkeypatch.delenv(variable)


@asynccontextmanager
async def fake_gateway(status: int = 200) -> AsyncIterator[tuple[int, list[str]]]:
    """An HTTP server on 127.0.0.1 alone answering `status` to its health and ready paths: its
    port, and the paths it was asked."""
    asked: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({}, status=status)

    app = web.Application()
    app.router.add_get("/_gateway/health", answer)
    app.router.add_get("/_gateway/ready", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        [(_, port, *_)] = runner.addresses
        yield port, asked
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A port nothing listens on (it was free a moment ago, on 127.0.0.1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def health(*argv: str) -> int:
    # The probe blocks on its socket: run aside, so that this loop's server can answer it.
    return await asyncio.to_thread(main, ["health", *argv])


def write_settings(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def test_a_gateway_that_answers_200_is_healthy_and_nothing_is_printed(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await make_gateway()
    port = gateway.client.server.port
    assert port is not None
    assert await health("--port", str(port)) == 0
    assert await health("--port", str(port), "--ready") == 0
    assert capsys.readouterr() == ("", "")


async def test_a_gateway_not_ready_fails_the_ready_probe_with_its_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with fake_gateway(503) as (port, asked):
        assert await health("--port", str(port), "--ready") == 1
    assert asked == ["/_gateway/ready"]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"share-gateway health: http://127.0.0.1:{port}/_gateway/ready answered 503\n"
    )


async def test_nothing_listening_fails_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert await health("--port", str(port)) == 1
    assert capsys.readouterr().err == (
        f"share-gateway health: http://127.0.0.1:{port}/_gateway/health could not connect: "
        "Connection refused\n"
    )


@asynccontextmanager
async def raw_server(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A bare TCP server on 127.0.0.1 running `script` on each connection: its port, and the
    connections it took (closed on the way out)."""
    taken: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        taken.append(writer)
        await script(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], taken
    finally:
        for writer in taken:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(30)
async def test_a_server_that_never_answers_fails_at_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass  # accepted, read from never, answered never

    async with raw_server(hold) as (port, held):
        assert await health("--port", str(port), "--timeout", "0.3") == 1
    assert held  # it was connected to, then gave up
    assert capsys.readouterr().err == (
        f"share-gateway health: http://127.0.0.1:{port}/_gateway/health no answer within 0.3 s\n"
    )


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# What a server on the gateway's port did, as its script; what the probe says of it.
BROKEN_SERVERS: dict[str, tuple[Callable[[asyncio.StreamWriter], None], str]] = {
    "closed": (lambda writer: writer.close(), "closed the connection without answering"),
    "reset": (_reset, "connection lost: Connection reset by peer"),
    "not_http": (
        lambda writer: writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        "answered, but not in HTTP",
    ),
    # A status line that never ends: read up to its bound, not until the deadline.
    "endless_line": (
        lambda writer: writer.write(b"HTTP/1.1 200 " + b"O" * 65536),
        "answered, but not in HTTP",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN_SERVERS))
async def test_a_server_that_is_no_working_gateway_fails_in_one_line(
    capsys: pytest.CaptureFixture[str], name: str
) -> None:
    script, said = BROKEN_SERVERS[name]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the whole request, then the script
        script(writer)

    async with raw_server(serve) as (port, served):
        # Far above what any of them takes: reaching it means the probe waited in vain.
        assert await health("--port", str(port), "--timeout", "10") == 1
    assert len(served) == 1
    assert capsys.readouterr().err == (
        f"share-gateway health: http://127.0.0.1:{port}/_gateway/health {said}\n"
    )


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "Name or service not known",
        ),
        ([], "no address"),
    ],
    ids=["not_found", "no_address"],
)
async def test_a_host_name_that_resolves_to_nothing_fails_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: object,
    said: str,
) -> None:
    def getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        if isinstance(answer, OSError):
            raise answer
        return answer

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    config = write_settings(
        tmp_path / "gateway.yaml", "listen:\n  host: gateway.internal\n  port: 8080\n"
    )
    assert await health("--config", str(config)) == 1
    assert capsys.readouterr().err == (
        "share-gateway health: http://gateway.internal:8080/_gateway/health "
        f"could not resolve gateway.internal: {said}\n"
    )


async def test_the_port_in_gateway_yaml_is_asked(tmp_path: Path) -> None:
    async with fake_gateway() as (port, asked):
        config = write_settings(tmp_path / "gateway.yaml", f"listen: {{port: {port}}}\n")
        assert await health("--config", str(config)) == 0
        # Found as `serve` finds it, in the working folder, as well.
        assert await health() == 0
    assert asked == ["/_gateway/health"] * 2


async def test_the_port_variable_overrides_the_file_and_the_option_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_settings(tmp_path / "elsewhere.yaml", f"listen: {{port: {free_port()}}}\n")
    async with fake_gateway() as (by_variable, asked_there), fake_gateway() as (by_option, asked):
        monkeypatch.setenv("SHARE_GATEWAY_LISTEN_PORT", str(by_variable))
        assert await health("--config", str(config)) == 0
        assert await health("--config", str(config), "--port", str(by_option)) == 0
    assert (asked_there, asked) == (["/_gateway/health"], ["/_gateway/health"])


async def test_a_gateway_on_every_interface_is_asked_on_loopback(tmp_path: Path) -> None:
    async with fake_gateway() as (port, asked):  # bound to 127.0.0.1 alone
        config = write_settings(
            tmp_path / "gateway.yaml", f"listen: {{host: 0.0.0.0, port: {port}}}\n"
        )
        assert await health("--config", str(config), "--ready") == 0
    assert asked == ["/_gateway/ready"]


@pytest.mark.parametrize(
    ("host", "asked", "in_url"),
    [
        ("0.0.0.0", "127.0.0.1", "127.0.0.1"),
        ("::", "::1", "[::1]"),
        ("10.1.2.3", "10.1.2.3", "10.1.2.3"),
        ("fd00::5", "fd00::5", "[fd00::5]"),
        ("gateway.internal", "gateway.internal", "gateway.internal"),
    ],
)
def test_a_wildcard_is_asked_on_loopback_of_its_family_and_ipv6_goes_in_brackets(
    host: str, asked: str, in_url: str
) -> None:
    assert probe_address(ListenSettings(host=host, port=9000)) == (asked, 9000)
    assert url_host(asked) == in_url


async def test_any_free_port_cannot_be_probed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_settings(tmp_path / "gateway.yaml", "listen: {port: 0}\n")
    assert await health("--config", str(config)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "listen.port: 0" in err


@pytest.mark.parametrize("timeout", ["0", "-1", "abc", "0.0", "inf", "nan", "1e3", "301"])
def test_a_timeout_that_is_no_positive_number_of_seconds_is_a_usage_error(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["health", "--port", "1", "--timeout", timeout])
    assert exited.value.code == 2
    assert "argument --timeout" in capsys.readouterr().err


async def test_a_missing_settings_file_stops_health_as_it_stops_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "gateway.yaml")
    assert main(["serve", "--config", missing]) == 2  # refused before anything is served
    refused = capsys.readouterr().err
    assert await health("--config", missing) == 2
    assert capsys.readouterr().err == refused
    assert "cannot read: No such file or directory" in refused


async def test_the_probe_needs_no_secret_key_or_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Settings that name a key file, a contracts folder and a secret's variable, none of which
    # exists here: `serve` would refuse to start; the probe reads only where to ask.
    async with fake_gateway() as (port, asked):
        config = write_settings(
            tmp_path / "gateway.yaml",
            f"listen: {{port: {port}}}\n"
            "contracts_dir: no-such-folder\n"
            "auth: {issuer: i, audience: a, public_key_file: keys/none.pem}\n"
            "secrets: {hash_key_env: NO_SUCH_HASH_KEY}\n",
        )
        assert await health("--config", str(config)) == 0
    assert asked == ["/_gateway/health"]
    assert capsys.readouterr() == ("", "")


async def health_process(*argv: str) -> tuple[int | None, bytes, bytes]:
    """`python -m gateway health ARGV` as its own process: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "health",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, out, err


@pytest.mark.timeout(60)
async def test_python_m_gateway_health_probes_as_a_process(tmp_path: Path) -> None:
    async with fake_gateway() as (port, asked):
        config = write_settings(tmp_path / "gateway.yaml", f"listen: {{port: {port}}}\n")
        assert await health_process("--config", str(config)) == (0, b"", b"")
        code, out, err = await health_process("--config", str(config), "--port", str(free_port()))
        assert (code, out) == (1, b"")
        assert b"could not connect: Connection refused\n" in err
    assert asked == ["/_gateway/health"]


def test_the_probe_loads_no_server_event_loop_database_or_contract_code() -> None:
    # It runs every few seconds for as long as the gateway runs, on the gateway's CPU. The
    # contract models are built as they are imported; orjson and logging serve other commands.
    # Only what the probe loads counts: a coverage run has loaded SQLite before it.
    program = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from gateway.__main__ import main\n"
        "sys.argv[0] = 'share-gateway'\n"
        "code = main()\n"
        "heavy = ('aiohttp', 'asyncio', 'sqlite3', 'gateway.pii', 'gateway.sharelog.commands',"
        " 'gateway.consent', 'gateway.contract', 'gateway.contractset', 'gateway.policy',"
        " 'orjson', 'logging')\n"
        "print(code, *(m for m in heavy if m in sys.modules and m not in before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "health", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["1"]  # refused, having loaded none of them
