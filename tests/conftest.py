"""Shared fixtures: real signing keys, fake partners, and a running gateway in front of them."""

from __future__ import annotations

import copy
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from partners import FakePartner
from tokens import AUDIENCE, ISSUER, SigningKey, mint, rsa_key

from gateway.app import build_runtime, close_runtime, make_app, make_runner
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.sharelog.memory import MemoryShareLog

HASH_KEY = "k" * 48
PARTNER_TOKEN = "partner-secret-token"


def stopped_clock(instant: datetime) -> type[datetime]:
    """A `datetime` whose `now()` is `instant`, in the zone asked for: patched into a module
    as its `datetime`, it makes that module read the time as of `instant`."""

    class Stopped(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Stopped:
            return cls.fromtimestamp(instant.timestamp(), tz)

    return Stopped


# A credit-assessment contract shaped like SPEC 3.1, pointed at a fake partner.
BASE_CONTRACT: dict[str, Any] = {
    "partner": {
        "id": "acme",
        "name": "ACME Credit",
        "kind": "credit_assessment",
        "relationship": "entrusted",
    },
    "contract": {
        "id": "DPA-1",
        "version": 3,
        "effective": "2025-01-01",
        "expires": "2099-12-31",
        "status": "active",
        "pia_ref": "PIA-1",
    },
    "upstream": {
        "base_url": "http://127.0.0.1:1",
        "location": "CN",
        "timeout_s": 5,
        "auth": {"type": "bearer", "token_env": "ACME_TOKEN"},
    },
    "purposes": ["credit_assessment", "service_delivery"],
    "categories": ["identity.name", "identity.id_number", "contact.phone", "financial.income"],
    "terms": {
        "retention_days": 30,
        "onward_transfer": False,
        "cross_border": {"allowed": False},
        "sensitive": {"allowed": ["identity.id_number"], "consent_required": False},
        "minors": "allow",
    },
    "routes": [
        {
            "method": "POST",
            "path": "/v1/assess",
            "purpose": "credit_assessment",
            "subject": "applicant.user_id",
            "fields": [
                {"path": "applicant.name", "category": "identity.name"},
                {
                    "path": "applicant.id_number",
                    "category": "identity.id_number",
                    "transform": "hash",
                },
                {
                    "path": "applicant.phone",
                    "category": "contact.phone",
                    "transform": {"mask": {"keep_last": 4}},
                },
                {"path": "applicant.monthly_income", "category": "financial.income"},
                {"path": "loan_amount", "category": "business.transaction"},
                {"path": "items[].amount", "category": "business.transaction"},
                {"path": "tags[]", "category": "business.note"},
                {"path": "meta.**", "category": "business.note"},
                {"path": "query.page", "category": "business.reference"},
            ],
            "response": {"fields": [{"path": "score"}, {"path": "reasons[].code"}]},
        },
        {
            "method": "GET",
            "path": "/v1/reports/{report_id}",
            "purpose": "credit_assessment",
            "fields": [{"path": "query.format", "category": "business.reference"}],
        },
        {
            "method": "PUT",
            "path": "/v1/documents/{doc_id}",
            "purpose": "credit_assessment",
            "content_types": ["application/pdf"],
        },
        {
            "method": "POST",
            "path": "/v1/notes",
            "purpose": "service_delivery",
            "fields": [{"path": "note", "category": "business.note"}],
        },
    ],
}


# Every header a partner may see: what the gateway sets and the allow-list SPEC 4 names
# (Accept, User-Agent); anything else a caller sent is dropped on the way.
PARTNER_HEADERS = frozenset(
    {
        "host",
        "accept",
        "user-agent",
        "content-type",
        "content-length",
        "authorization",
        "x-share-id",
        "x-share-purpose",
        "x-data-retention-days",
        "x-data-onward-transfer",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`FUZZ_SCALE=N` runs every property-based test with N times the examples it names: a long
    campaign outside CI, on the same targets. Unset, the counts are CI's."""
    scale = int(os.environ.get("FUZZ_SCALE", "1"))
    if scale == 1:
        return
    for item in items:
        test = getattr(item, "obj", None)
        # Where @settings put them; hypothesis reads them when the test runs.
        named = getattr(test, "_hypothesis_internal_use_settings", None)
        if isinstance(named, hypothesis.settings):
            scaled = hypothesis.settings(named, max_examples=named.max_examples * scale)
            setattr(test, "_hypothesis_internal_use_settings", scaled)  # noqa: B010


def contract(**changes: Any) -> dict[str, Any]:
    """The base contract with top-level sections replaced or, for dicts, merged."""
    doc = copy.deepcopy(BASE_CONTRACT)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


@pytest.fixture(scope="session")
def idp_key() -> SigningKey:
    return rsa_key(kid="idp-1")


@pytest.fixture
async def partner() -> AsyncIterator[FakePartner]:
    fake = await FakePartner().start()
    yield fake
    await fake.close()


class GatewayTestServer(TestServer):
    """aiohttp's test server, served by the gateway's own runner, as production is: its server
    options (no automatic decompression, header limits, a caller hanging up does not cancel its
    share) and the limits its request handler enforces (connection cap, header deadline)."""

    def __init__(self, app: web.Application, settings: Settings) -> None:
        super().__init__(app)
        self.settings = settings

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        # The test server's own options are dropped: `start_server` always asks for handler
        # cancellation, so a test's caller hanging up would cancel a share production finishes.
        # A share a test leaves running is given 2 s at teardown, then cancelled, rather than
        # the drain of up to a minute production gives it.
        return make_runner(self.app, self.settings, shutdown_timeout=2)


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    partner: FakePartner
    log: MemoryShareLog
    runtime: Runtime
    key: SigningKey

    def token(self, scope: str = "share:acme:*", **claims: Any) -> str:
        return mint(self.key, scope=scope, **claims)

    async def share(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        purpose: str | None = "credit_assessment",
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        scope: str = "share:acme:*",
    ) -> ClientResponse:
        sent: dict[str, str] = {"Authorization": f"Bearer {token or self.token(scope)}"}
        if purpose is not None:
            sent["X-Share-Purpose"] = purpose
        if json is not None:
            import orjson

            data = orjson.dumps(json)
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        return await self.client.request(method, path, data=data, headers=sent)


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    tmp_path: Path, partner: FakePartner, idp_key: SigningKey
) -> AsyncIterator[GatewayFactory]:
    started: list[Gateway] = []

    async def factory(
        contracts: list[dict[str, Any]] | None = None,
        *,
        settings: Mapping[str, Any] | None = None,
        share_log: MemoryShareLog | None = None,
        environ: Mapping[str, str] | None = None,
        durable_log: bool = False,
        files: Mapping[str, bytes] | None = None,
        upstreams: Mapping[str, FakePartner] | None = None,
    ) -> Gateway:
        """A gateway in front of `partner`; `durable_log` uses the real SQLite share log
        (then `Gateway.log` stays empty: read the file with gateway.sharelog.review); `files`
        are written into the contracts folder beside the contracts, by name; `upstreams` puts
        the contracts of the partner ids it names in front of partners of their own."""
        folder = tmp_path / f"contracts{len(started)}"
        folder.mkdir()
        for name, content in (files or {}).items():
            (folder / name).write_bytes(content)
        for doc in contracts or [contract()]:
            doc = copy.deepcopy(doc)
            upstream = (upstreams or {}).get(doc["partner"]["id"], partner)
            doc["upstream"]["base_url"] = upstream.base_url
            (folder / f"{doc['partner']['id']}.yaml").write_text(yaml.safe_dump(doc))
        pem = idp_key.write_pem(tmp_path / "idp.pem")
        raw: dict[str, Any] = {
            "contracts_dir": folder,
            "allow_insecure_upstreams": True,
            "auth": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "algorithms": ["RS256"],
                "public_key_file": pem,
            },
            "registry": {"path": tmp_path / "consent.sqlite"},
            "share_log": {"path": tmp_path / "share-log.sqlite", "stdout": False},
        }
        for key, value in (settings or {}).items():
            raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
        env = {"SHARE_GATEWAY_HASH_KEY": HASH_KEY, "ACME_TOKEN": PARTNER_TOKEN, **(environ or {})}
        log = share_log or MemoryShareLog()
        config = Settings.model_validate(raw)
        runtime = await build_runtime(config, environ=env, share_log=None if durable_log else log)
        server = GatewayTestServer(make_app(runtime), config)
        client = TestClient(server)
        await client.start_server()
        gateway = Gateway(client, partner, log, runtime, idp_key)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        await gateway.client.close()
        await close_runtime(gateway.runtime)


# --- helpers for end-to-end assertions (appended; the fixtures above are unchanged) ----------


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer read off the socket: status, headers (lower-case names) and body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.body)


async def raw_request(
    gateway: Gateway,
    method: str,
    target: str | bytes,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    host: str | None = None,
    authorized: bool = True,
    purpose: str | None = "credit_assessment",
) -> RawResponse:
    """Write one request to the gateway's socket byte for byte, for targets no client would send.

    Adds Host (the gateway's own unless `host` is given), a valid bearer token, X-Share-Purpose,
    Content-Length and `Connection: close`; `headers` are written as given, repeats included.
    """
    import asyncio

    server = gateway.client.server
    port = server.port
    lines: list[tuple[str, str]] = [("Host", host or f"127.0.0.1:{port}")]
    if authorized:
        lines.append(("Authorization", f"Bearer {gateway.token()}"))
    if purpose is not None:
        lines.append(("X-Share-Purpose", purpose))
    lines += headers or []
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(("Content-Length", str(len(body))))
    lines.append(("Connection", "close"))
    raw_target = target if isinstance(target, bytes) else target.encode("latin-1")
    head = method.encode("ascii") + b" " + raw_target + b" HTTP/1.1\r\n"
    head += b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in lines)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    status_and_headers, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = status_and_headers.decode("latin-1").split("\r\n")
    parsed = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    return RawResponse(int(status_line.split(" ")[1]), parsed, payload)


async def assert_refused(
    gateway: Gateway,
    response: ClientResponse | RawResponse,
    status: int,
    code: str,
) -> None:
    """The caller got `status` and `code` with a share id, the partner got nothing, and the
    share log holds a `denied` record of that id with `code` as its reason."""
    if isinstance(response, RawResponse):
        body = response.json()
        echoed = response.headers.get("x-share-id")
        server = response.headers.get("server")
    else:
        body = await response.json()
        echoed = response.headers.get("X-Share-Id")
        server = response.headers.get("Server")
    assert (response.status, body["error"]["code"]) == (status, code), body
    assert server == "share-gateway"
    share_id = body["error"]["share_id"]
    assert echoed == share_id
    assert gateway.partner.received == []
    record = gateway.log.records[-1]
    assert (record.share_id, record.decision, record.reason) == (share_id, "denied", code)
    assert (record.bytes_sent, record.records) == (0, 0)
    # Nothing was sent, so the record names no field as sent, transformed or redacted.
    sent = (record.fields_sent, record.fields_transformed, record.categories_sent)
    assert (sent, record.pii_redactions) == (((), (), ()), {})
    assert gateway.log.outcome_of(share_id) is None


def tamper(path: Path, *statements: str) -> None:
    """Edit a SQLite file as someone with write access to it (not the gateway) would."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


_KILLED = 9


def killed_at(step: int, action: Callable[[], object]) -> bool:
    """Run `action` in a child process that dies at `step`, as a kill there would: each SQLite
    connection and statement, file sync and rename is one step. True if it was killed, False
    if `action` finished in fewer steps than that."""
    pid = os.fork()
    if pid == 0:  # the child: it never returns into the test run
        code = 1
        try:
            taken = 0

            def tick(*_: object) -> None:
                nonlocal taken
                taken += 1
                if taken == step:
                    os._exit(_KILLED)

            connect, fsync, replace = sqlite3.connect, os.fsync, os.replace

            def connecting(*args: Any, **kw: Any) -> sqlite3.Connection:
                tick()
                conn: sqlite3.Connection = connect(*args, **kw)
                conn.set_trace_callback(tick)
                return conn

            def syncing(fd: int) -> None:
                tick()
                fsync(fd)

            def renaming(source: str | Path, target: str | Path) -> None:
                tick()
                replace(source, target)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(sqlite3, "connect", connecting)
                patch.setattr(os, "fsync", syncing)
                patch.setattr(os, "replace", renaming)
                action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, _KILLED)
    return code == _KILLED
