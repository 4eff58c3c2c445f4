"""The real `share-gateway serve` process: start-up refusals, signals, reload, memory, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, web
from conftest import HASH_KEY, PARTNER_TOKEN, contract
from partners import FakePartner, Received
from tokens import AUDIENCE, ISSUER, SigningKey, mint, rsa_key

from gateway.sharelog import review

PYTHON = sys.executable
ASSESS = "/acme/v1/assess"
NOTES = "/acme/v1/notes"
BODY = {"applicant": {"user_id": "u-1", "name": "Wang"}, "loan_amount": 5000}
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
MIB = 1024 * 1024


class HoldingPartner(FakePartner):
    """A fake partner that holds each answer for `hold_s` seconds, or until `close()`."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_s = 0.0
        self.release = asyncio.Event()
        self.arrived = asyncio.Condition()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.raw_path, request.headers, body))
        async with self.arrived:
            self.arrived.notify_all()
        if self.hold_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hold_s)
        reply = self.reply
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        """Until the partner has received `count` requests."""
        async with asyncio.timeout(timeout_s), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)

    async def close(self) -> None:
        self.release.set()
        await super().close()


@pytest.fixture
async def partner() -> AsyncIterator[HoldingPartner]:
    fake = HoldingPartner()
    await fake.start()
    fake.answer(200, {"score": 640, "private": "partner-only"})
    yield fake
    await fake.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Setup:
    """A gateway.yaml, its contracts folder and environment, all under one tmp_path."""

    root: Path
    partner: FakePartner
    key: SigningKey
    port: int = field(default_factory=free_port)
    limits: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "gateway.yaml"

    @property
    def contracts(self) -> Path:
        return self.root / "contracts"

    @property
    def share_log(self) -> Path:
        return self.root / "var" / "share-log.sqlite"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, **contract_changes: Any) -> None:
        self.contracts.mkdir(exist_ok=True)
        self.write_contract(**contract_changes)
        self.key.write_pem(self.root / "idp.pem")
        settings = {
            "listen": {"host": "127.0.0.1", "port": self.port},
            "contracts_dir": "contracts",
            "allow_insecure_upstreams": True,
            "auth": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "algorithms": ["RS256"],
                "public_key_file": "idp.pem",
            },
            "registry": {"path": "var/consent.sqlite"},
            "share_log": {"path": "var/share-log.sqlite", "stdout": False},
            "limits": self.limits,
        }
        self.config.write_text(yaml.safe_dump(settings), encoding="utf-8")

    def write_contract(self, **changes: Any) -> None:
        doc = contract(**changes)
        doc["upstream"]["base_url"] = self.partner.base_url
        doc["upstream"]["timeout_s"] = 10
        (self.contracts / "acme.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")

    def env(self, **changes: str | None) -> dict[str, str]:
        # The test runner's own SHARE_GATEWAY_* variables must not override this config.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARE_GATEWAY_")}
        env.update(SHARE_GATEWAY_HASH_KEY=HASH_KEY, ACME_TOKEN=PARTNER_TOKEN)
        for name, value in changes.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def token(self, scope: str = "share:acme:*") -> str:
        return mint(self.key, scope=scope)

    def headers(self, purpose: str = "credit_assessment") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", "X-Share-Purpose": purpose}

    def cli(self, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "gateway", *args, "--config", str(self.config)],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.root,
        )


@pytest.fixture
def setup(tmp_path: Path, partner: HoldingPartner, idp_key: SigningKey) -> Setup:
    made = Setup(tmp_path, partner, idp_key)
    made.write()
    return made


class GatewayProcess:
    """`python -m gateway serve` as a child process; output goes to files under the setup root."""

    def __init__(
        self,
        setup: Setup,
        name: str = "gateway",
        *,
        config_first: bool = False,
        **env: str | None,
    ) -> None:
        self.setup = setup
        self.stdout_path = setup.root / f"{name}.stdout"
        self.stderr_path = setup.root / f"{name}.stderr"
        config = ["--config", str(setup.config)]
        args = [*config, "serve"] if config_first else ["serve", *config]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "gateway", *args],
                env=setup.env(**env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=setup.root,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    async def wait_ready(self, session: ClientSession) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the gateway exited with {self.proc.returncode}: {self.stderr()}")
            with contextlib.suppress(ClientError, TimeoutError):
                async with session.get(f"{self.setup.base}/_gateway/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
        pytest.fail(f"the gateway was not ready within {START_TIMEOUT_S} s: {self.stderr()}")

    async def wait_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"the gateway did not exit within {timeout_s} s: {self.stderr()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def running(
    setup: Setup, name: str = "gateway", *, config_first: bool = False
) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(setup, name, config_first=config_first)
    try:
        yield gateway
    finally:
        gateway.kill()


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=ClientTimeout(total=30)) as client:
        yield client


async def post_share(
    session: ClientSession, setup: Setup, path: str = ASSESS, body: Any = BODY
) -> tuple[int, str, bytes]:
    purpose = "service_delivery" if path == NOTES else "credit_assessment"
    async with session.post(
        setup.base + path,
        data=orjson.dumps(body),
        headers={
            **setup.headers(purpose),
            "Content-Type": "application/json",
        },
    ) as response:
        return response.status, response.headers.get("X-Share-Id", ""), await response.read()


def logs_verify(setup: Setup) -> subprocess.CompletedProcess[str]:
    return setup.cli("logs", "verify")


def shares(setup: Setup) -> dict[str, dict[str, Any]]:
    return {row["share_id"]: row for row in review.query(setup.share_log, limit=None)}


# --- 1. start-up refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("contract", "acme.yaml: routes.3.purpose: 'service_delivery' is not one of purposes"),
        ("hash_key", "SHARE_GATEWAY_HASH_KEY"),
        ("upstream_secret", "ACME_TOKEN"),
        ("key_file", "auth.public_key_file: "),
    ],
)
def test_start_up_is_refused_with_a_clear_line(setup: Setup, breakage: str, expected: str) -> None:
    # Exit 1: the settings parse, and what they name cannot be used (exit 2 is for the settings).
    env: dict[str, str | None] = {}
    if breakage == "contract":
        setup.write_contract(purposes=["credit_assessment"])  # the notes route needs another
    elif breakage == "key_file":
        (setup.root / "idp.pem").write_bytes(b"not a key")
    elif breakage == "hash_key":
        env["SHARE_GATEWAY_HASH_KEY"] = None
    else:
        env["ACME_TOKEN"] = None
    result = setup.cli("serve", **env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert any(expected in line for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    assert not setup.share_log.exists()  # nothing was opened, let alone written


def test_a_port_already_taken_is_a_clear_line_and_leaves_the_log_closed(setup: Setup) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", setup.port))
        taken.listen()
        result = setup.cli("serve")
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{setup.port}" in result.stderr
    assert "Traceback" not in result.stderr
    # The log was opened before the port was tried: it was closed again, cleanly.
    assert logs_verify(setup).returncode == 0
    assert not Path(f"{setup.share_log}.lock").exists() or _unlocked(setup.share_log)


async def test_an_emptied_share_log_is_refused_at_start_in_one_line(setup: Setup) -> None:
    # `: > var/share-log.sqlite`: every record erased, which must not pass for a first start.
    _empty(setup.share_log)
    with running(setup) as gateway:
        code = await gateway.wait_exit()
    assert code == 1, gateway.stderr()
    assert gateway.stderr().splitlines() == [
        f"share log {setup.share_log}: the file is empty (0 bytes): its records were erased, "
        "or it was never written; to start a new share log, remove the file"
    ]
    assert _size(gateway.stdout_path) == 0  # no `share_log_created`, no checkpoint line
    assert _size(setup.share_log) == 0
    verified = logs_verify(setup)
    assert (verified.returncode, verified.stderr) == (1, "")
    assert verified.stdout == (
        f"share log verification FAILED (empty): {setup.share_log}: the file is empty "
        "(0 bytes): the log was erased, or never written\n"
    )


def _empty(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def _size(path: Path) -> int:
    return path.stat().st_size


def test_a_port_out_of_range_on_the_command_line_is_a_usage_error(setup: Setup) -> None:
    result = setup.cli("serve", "--port", "70000")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("--port: Input should be less than or equal to 65535")


def _unlocked(share_log: Path) -> bool:
    with open(f"{share_log}.lock", "rb") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


async def test_contract_warnings_are_logged_once_the_start_has_succeeded(
    setup: Setup, session: ClientSession
) -> None:
    # A refused start prints its one line and nothing else (see the emptied share log above).
    with running(setup) as gateway:
        await gateway.wait_ready(session)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "contract_warning" not in _events(gateway.stdout_path):
            assert time.monotonic() < deadline, "no contract_warning was logged"
            await asyncio.sleep(0.05)
        events = _events(gateway.stdout_path)
    assert events.index("gateway_started") < events.index("contract_warning")
    assert events.count("contract_warning") == 1  # the upload route that names no subject


def _events(stdout: Path) -> list[str]:
    lines = stdout.read_bytes().splitlines()
    return [event for line in lines if (event := orjson.loads(line).get("event")) is not None]


# --- 2. SIGTERM drains the shares in flight ------------------------------------------------------


async def test_sigterm_drains_the_shares_in_flight(
    setup: Setup, partner: HoldingPartner, session: ClientSession
) -> None:
    partner.hold_s = 1.0
    with running(setup) as gateway:
        await gateway.wait_ready(session)
        calls = [asyncio.create_task(post_share(session, setup)) for _ in range(5)]
        try:
            await partner.wait_for(5)  # every share is at the partner, waiting for its answer
            gateway.signal(signal.SIGTERM)
            answers = await asyncio.wait_for(asyncio.gather(*calls), timeout=15)
        finally:
            for call in calls:
                call.cancel()
        assert [(status, body) for status, _id, body in answers] == [(200, b'{"score":640}')] * 5
        assert await gateway.wait_exit() == 0, gateway.stderr()
    ids = {share_id for _status, share_id, _body in answers}
    assert len(ids) == 5
    recorded = shares(setup)
    assert set(recorded) == ids
    for row in recorded.values():
        assert (row["decision"], row["reason"], row["route"]) == (
            "shared",
            "shared",
            "POST /v1/assess",
        )
        assert (row["outcome"], row["upstream_status"]) == ("delivered", 200)
    verified = logs_verify(setup)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "share log verified" in verified.stdout


async def test_sigterm_lets_a_body_still_arriving_finish_its_share(
    setup: Setup, partner: HoldingPartner, session: ClientSession
) -> None:
    body = orjson.dumps(BODY)
    head = (
        f"POST {ASSESS} HTTP/1.1\r\nHost: gateway\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in setup.headers("credit_assessment").items())
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with running(setup) as gateway:
        await gateway.wait_ready(session)
        reader, writer = await asyncio.open_connection("127.0.0.1", setup.port)
        try:
            writer.write(head + body[:10])
            await writer.drain()
            await asyncio.sleep(0.3)  # the share is in progress, reading its body
            gateway.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)  # the drain has begun
            writer.write(body[10:])
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=10)
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert reader.at_eof()  # and the connection is closed after it
        assert await gateway.wait_exit() == 0, gateway.stderr()
    [seen] = partner.received
    assert orjson.loads(seen.body) == {"applicant": {"name": "Wang"}, "loan_amount": 5000}
    [row] = shares(setup).values()
    assert (row["decision"], row["outcome"]) == ("shared", "delivered")


# --- 3. SIGHUP reloads the contracts -------------------------------------------------------------


async def _reloads(session: ClientSession, setup: Setup, result: str) -> float:
    async with session.get(f"{setup.base}/_gateway/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(f'share_gateway_contract_reloads_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return 0.0


async def _until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail("the condition did not hold in time")
        await asyncio.sleep(0.05)


async def test_sighup_reloads_and_keeps_the_last_good_set(
    setup: Setup, session: ClientSession
) -> None:
    with running(setup) as gateway:
        await gateway.wait_ready(session)
        status, _id, _body = await post_share(session, setup, NOTES, {"note": "n"})
        assert status == 200

        routes = [r for r in contract()["routes"] if r["path"] != "/v1/notes"]
        setup.write_contract(routes=routes, contract={"version": 4})
        gateway.signal(signal.SIGHUP)

        async def ok_reloaded() -> bool:
            return await _reloads(session, setup, "ok") >= 1

        await _until(ok_reloaded)
        status, _id, body = await post_share(session, setup, NOTES, {"note": "n"})
        assert (status, orjson.loads(body)["error"]["code"]) == (403, "route_denied")

        (setup.contracts / "acme.yaml").write_text("partner: [not, a, contract\n", "utf-8")
        gateway.signal(signal.SIGHUP)

        async def failed_reloaded() -> bool:
            return await _reloads(session, setup, "failed") >= 1

        await _until(failed_reloaded)
        status, _id, body = await post_share(session, setup)
        assert (status, body) == (200, b'{"score":640}')  # the last good set still serves
        status, _id, body = await post_share(session, setup, NOTES, {"note": "n"})
        assert (status, orjson.loads(body)["error"]["code"]) == (403, "route_denied")
        assert gateway.proc.poll() is None
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait_exit() == 0
        # The failed reload is its one `contracts_reload_failed` line, not asyncio's error too.
        logged = [orjson.loads(line) for line in gateway.stdout_path.read_text().splitlines()]
        assert [e["event"] for e in logged if e.get("logger") == "asyncio"] == []
    recorded = list(shares(setup).values())
    assert [row["contract_version"] for row in recorded] == [3, 4, 4, 4]


async def _share_as(session: ClientSession, setup: Setup, token: str) -> int:
    async with session.post(
        setup.base + ASSESS,
        data=orjson.dumps(BODY),
        headers={
            "Authorization": f"Bearer {token}",
            "X-Share-Purpose": "credit_assessment",
            "Content-Type": "application/json",
        },
    ) as response:
        return response.status


async def test_sighup_reads_the_caller_key_file_again(
    setup: Setup, session: ClientSession, partner: HoldingPartner
) -> None:
    with running(setup) as gateway:
        await gateway.wait_ready(session)
        withdrawn = setup.token()
        assert await _share_as(session, setup, withdrawn) == 200

        rotated = rsa_key(kid="idp-2")
        rotated.write_pem(setup.root / "idp.pem")
        gateway.signal(signal.SIGHUP)

        async def ok_reloaded() -> bool:
            return await _reloads(session, setup, "ok") >= 1

        await _until(ok_reloaded)
        assert await _share_as(session, setup, withdrawn) == 401
        assert len(partner.received) == 1
        taken = mint(rotated, scope="share:acme:*")
        assert await _share_as(session, setup, taken) == 200

        (setup.root / "idp.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\ncut off")
        gateway.signal(signal.SIGHUP)

        async def failed_reloaded() -> bool:
            return await _reloads(session, setup, "failed") >= 1

        await _until(failed_reloaded)
        assert await _share_as(session, setup, taken) == 200
        assert await _share_as(session, setup, withdrawn) == 401
        assert len(partner.received) == 3
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait_exit() == 0
    assert "auth.public_key_file" in gateway.stdout_path.read_text()


@pytest.mark.parametrize("config_first", [False, True], ids=["serve_first", "config_first"])
async def test_sighup_while_starting_does_not_end_the_gateway(
    setup: Setup, session: ClientSession, config_first: bool
) -> None:
    # A config reloader signals when the contracts change, also while the gateway starts:
    # from its first imports (the interpreter's own start-up, a few milliseconds, is Python's)
    # to the moment it serves.
    with running(setup, config_first=config_first) as gateway:
        # Ignored from before the imports (a signal then is not lost: the contracts are read
        # later), then caught by the gateway itself.
        assert await _until_sighup_is_handled(gateway) == "ignored"
        with pytest.raises(ClientError):  # handled long before the gateway even listens
            async with session.get(f"{setup.base}/_gateway/ready"):
                pass
        ready = asyncio.create_task(gateway.wait_ready(session))
        try:
            while not ready.done():
                gateway.signal(signal.SIGHUP)
                await asyncio.sleep(0.02)
            await ready
        finally:
            ready.cancel()
        assert gateway.proc.poll() is None, gateway.stderr()

        async def reloaded() -> bool:
            return await _reloads(session, setup, "ok") >= 1

        await _until(reloaded)
        status, _id, body = await post_share(session, setup)
        assert (status, body) == (200, b'{"score":640}')
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait_exit() == 0, gateway.stderr()


def _sighup_disposition(pid: int) -> str | None:
    """ "ignored" or "caught" as /proc tells, or None while Python's default would end it."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    bit = 1 << (signal.SIGHUP - 1)
    if int(masks["SigIgn"], 16) & bit:
        return "ignored"
    return "caught" if int(masks["SigCgt"], 16) & bit else None


async def _until_sighup_is_handled(gateway: GatewayProcess) -> str:
    """Until the process ignores or catches SIGHUP (its code runs); which one came first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and gateway.proc.poll() is None:
        disposition = _sighup_disposition(gateway.pid)
        if disposition is not None:
            return disposition
        await asyncio.sleep(0.001)
    pytest.fail(f"SIGHUP was never handled: {gateway.stderr()}")


# --- 4. memory under 1,000 slow clients ----------------------------------------------------------

SLOW_CLIENTS = 1000


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        pytest.skip(f"needs {needed} open files, the hard limit allows {soft}")


@dataclass
class SlowClient:
    """One connection that sends a request too slowly: headers, or a body, a byte at a time."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    rest: bytes  # what it still means to send, one byte every `pace_s`

    async def trickle(self, pace_s: float, stop: asyncio.Event) -> bytes:
        """Send slowly until the gateway answers or hangs up; return the first bytes it sent."""
        read = asyncio.ensure_future(self.reader.read(65536))
        try:
            for byte in self.rest:
                if read.done() or stop.is_set():
                    break
                with contextlib.suppress(ConnectionError):
                    self.writer.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(read), pace_s)
            return await read
        except ConnectionError:
            return b""
        finally:
            read.cancel()
            self.writer.close()


async def _open_slow(setup: Setup, index: int) -> SlowClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.port)
    if index % 2:
        # Headers that never finish.
        head = f"POST {ASSESS} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{index}: "
        writer.write(head.encode())
        rest = b"a" * 200
    else:
        # Whole headers, then a body that never finishes.
        head = (
            f"POST {ASSESS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {setup.token()}\r\nX-Share-Purpose: credit_assessment\r\n"
            "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
        )
        writer.write(head.encode() + b'{"applicant": {"user_id": "u-1", "name": "')
        rest = b"W" * 300
    await writer.drain()
    return SlowClient(reader, writer, rest)


@pytest.mark.skipif(
    not Path("/proc/self/status").is_file(), reason="reads the gateway's memory from /proc"
)
async def test_memory_stays_bounded_under_a_thousand_slow_clients(
    setup: Setup, session: ClientSession
) -> None:
    _raise_open_files(SLOW_CLIENTS * 2 + 256)
    # Deadlines long enough for all the clients to connect before the first is cut, even on a
    # busy machine (2 s was not: 976 of 1000 were open at once).
    setup.limits = {
        "keepalive_timeout_s": 5,  # also cuts a connection whose first request never completes
        "header_read_timeout_s": 5,
        "body_read_timeout_s": 5,
        "max_connections": SLOW_CLIENTS * 4,
        "max_pending_requests": SLOW_CLIENTS * 4,
    }
    setup.write()
    with running(setup) as gateway:
        await gateway.wait_ready(session)
        status, _id, _body = await post_share(session, setup)
        assert status == 200
        before = gateway.rss_bytes()

        clients: list[SlowClient] = []
        for start in range(0, SLOW_CLIENTS, 100):  # in batches: the listen backlog is finite
            batch = range(start, min(start + 100, SLOW_CLIENTS))
            clients += await asyncio.gather(*(_open_slow(setup, i) for i in batch))
        stop = asyncio.Event()
        trickles = [asyncio.create_task(c.trickle(0.5, stop)) for c in clients]
        peak, most_open = before, 0
        try:
            async with asyncio.timeout(20):
                while not all(task.done() for task in trickles):
                    peak = max(peak, gateway.rss_bytes())
                    most_open = max(most_open, gateway.open_files())
                    assert gateway.proc.poll() is None, gateway.stderr()
                    await asyncio.sleep(0.1)
            answers = [task.result() for task in trickles]
        finally:
            stop.set()
            for task in trickles:
                task.cancel()
            await asyncio.gather(*trickles, return_exceptions=True)
        assert most_open >= SLOW_CLIENTS  # they were all connected to the gateway at once
        grew = f"RSS grew from {before / MIB:.0f} to {peak / MIB:.0f} MiB"
        assert peak < 200 * MIB, grew
        assert peak - before < 100 * MIB, grew
        # Every slow client was cut by the gateway's deadlines, not by the test giving up.
        unfinished_headers = [a for i, a in enumerate(answers) if i % 2]
        unfinished_bodies = [a for i, a in enumerate(answers) if not i % 2]
        assert {a.split(b"\r\n", 1)[0] for a in unfinished_bodies} == {
            b"HTTP/1.1 408 Request Timeout"
        }
        # Unfinished headers are not a request yet: hung up on (or told 408, where the server
        # answers a header deadline).
        assert {a.split(b"\r\n", 1)[0] for a in unfinished_headers} <= {
            b"",
            b"HTTP/1.1 408 Request Timeout",
        }
        status, _id, body = await post_share(session, setup)
        assert (status, body) == (200, b'{"score":640}')
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait_exit() == 0, gateway.stderr()
    # A slow body is a decision (refused): each has its record; unfinished headers are not requests.
    assert review.count(setup.share_log, reason="request_timeout") == SLOW_CLIENTS // 2
    assert review.count(setup.share_log, decision="shared") == 2


# --- 5. a crash between intent and outcome -----------------------------------------------------


async def test_a_share_cut_by_sigkill_is_closed_as_unknown_on_restart(
    setup: Setup, partner: HoldingPartner, session: ClientSession
) -> None:
    partner.hold_s = 10.0
    with running(setup, "first") as gateway:
        await gateway.wait_ready(session)
        call = asyncio.create_task(post_share(session, setup))
        try:
            await partner.wait_for(1)  # recorded as shared, sent, no outcome yet
            gateway.signal(signal.SIGKILL)
            assert await gateway.wait_exit() == -signal.SIGKILL
            with pytest.raises(ClientError):
                await asyncio.wait_for(call, 10)
        finally:
            call.cancel()
    [pending] = shares(setup).values()
    assert (pending["decision"], pending["outcome"]) == ("shared", "pending")
    with running(setup, "second") as gateway:
        await gateway.wait_ready(session)
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait_exit() == 0, gateway.stderr()
    [closed] = shares(setup).values()
    assert closed["share_id"] == pending["share_id"]
    assert (closed["decision"], closed["outcome"], closed["upstream_status"]) == (
        "shared",
        "unknown",
        None,
    )
    verified = logs_verify(setup)
    assert verified.returncode == 0, verified.stdout + verified.stderr
