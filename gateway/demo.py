"""`share-gateway demo`: the gateway on the bundled contracts, stand-in partners on loopback."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import tempfile
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.app import build_runtime, close_runtime, make_app, make_runner
from gateway.contractset import contract_files
from gateway.settings import Settings
from gateway.yamlfile import read_yaml_file

ISSUER = "https://idp.demo.invalid"
AUDIENCE = "share-gateway"
CONSENT_ISSUER = "https://consent.demo.invalid"


@dataclass(slots=True)
class StandIn:
    """A stand-in partner: answers like the real one would and remembers what it received."""

    partner: str
    answer: Mapping[str, Any]
    received: list[tuple[str, str, bytes, Mapping[str, str]]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.method, request.raw_path, body, dict(request.headers)))
        return web.json_response(dict(self.answer))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = _bound_port(site)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


STAND_INS: dict[str, dict[str, Any]] = {
    "acme-credit": {
        "score": 712,
        "band": "B",
        "reasons": [{"code": "R12", "detail": "internal model note"}],
        "analyst": "zhang.wei@acme-credit.example",
    },
    "fixit": {"case_id": "FX-20931", "status": "open", "engineer": "li.na"},
    "cloudvault": {"object_id": "obj-7f3a", "version": 4, "stored_at": "2026-11-30T10:00:00Z"},
}


@dataclass(frozen=True, slots=True)
class Sample:
    title: str
    partner: str
    method: str
    path: str
    purpose: str
    body: bytes | None = None
    content_type: str = "application/json"
    scope: str | None = None  # default: share:<partner>:<purpose>
    consent_for: str | None = None  # subject id the consent token is minted for
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bool = False  # show the caller's bytes as sent (e.g. a body a parser would change)


def _json(value: object) -> bytes:
    return orjson.dumps(value)


APPLICANT = {
    "user_id": "u-100234",
    "name": "王小明",
    "id_number": "11010519880605271X",
    "phone": "13800138000",
    "email": "xiaoming.wang@example.com",
    "birth_date": "1988-06-05",
    "monthly_income": 18000,
    "religion": "none",
    "home_address": "北京市朝阳区建国路88号",
}

SAMPLES = (
    Sample(
        "diagnostics: device data kept, ids hashed, IP masked, a phone number in free text hidden",
        "fixit",
        "POST",
        "/v1/diagnostics",
        "technical_maintenance",
        _json(
            {
                "ticket_id": "T-88121",
                "user_id": "u-100234",
                "user_name": "王小明",
                "email": "xiaoming.wang@example.com",
                "device": {
                    "device_id": "dev-5c2e91",
                    "model": "ThinkPad X1",
                    "os": "Windows",
                    "os_version": "11 23H2",
                    "ip": "203.0.113.42",
                    "wifi_ssid": "Wang-Home",
                },
                "app_version": "5.4.1",
                "events": [
                    {
                        "at": "2026-11-30T09:12:03+08:00",
                        "code": "E_SYNC_TIMEOUT",
                        "message": "同步超时，用户留言：请回电13800138000",
                        "stack": "at sync()...",
                    },
                ],
            }
        ),
    ),
    Sample(
        "credit assessment with the applicant's consent: only the agreed scope, transformed",
        "acme-credit",
        "POST",
        "/v1/assess",
        "credit_assessment",
        _json({"applicant": APPLICANT, "loan_amount": 50000, "internal_risk_note": "VIP"}),
        consent_for="u-100234",
    ),
    Sample(
        "file upload: the bytes pass unchanged, only with a listed content type",
        "cloudvault",
        "PUT",
        "/v1/objects/obj-7f3a?owner_user_id=u-100234",
        "service_delivery",
        b"%PDF-1.7\n% meeting minutes, 2026-11-30\n%%EOF\n",
        content_type="application/pdf",
    ),
    Sample(
        "denied: no consent from the applicant",
        "acme-credit",
        "POST",
        "/v1/assess",
        "credit_assessment",
        _json({"applicant": APPLICANT, "loan_amount": 50000}),
    ),
    Sample(
        "denied: the applicant is a child under 14",
        "acme-credit",
        "POST",
        "/v1/assess",
        "credit_assessment",
        _json(
            {
                "applicant": {**APPLICANT, "user_id": "u-300871", "birth_date": "2016-02-10"},
                "loan_amount": 800,
            }
        ),
        consent_for="u-300871",
    ),
    Sample(
        "denied: the calling service's token does not grant this purpose",
        "fixit",
        "POST",
        "/v1/incidents",
        "security_monitoring",
        _json({"incident_type": "login_anomaly", "user_id": "u-100234"}),
        scope="share:fixit:technical_maintenance",
    ),
    Sample(
        "denied: a route the contract does not declare",
        "acme-credit",
        "POST",
        "/v1/export",
        "credit_assessment",
        _json({"all_users": True}),
    ),
    Sample(
        "denied: an ambiguous body (the same key twice)",
        "fixit",
        "POST",
        "/v1/diagnostics",
        "technical_maintenance",
        b'{"ticket_id": "T-1", "user_id": "u-1", "user_id": "u-2"}',
        raw=True,
    ),
    Sample(
        "denied: a content type the upload route does not list",
        "cloudvault",
        "PUT",
        "/v1/objects/obj-7f3b?owner_user_id=u-100234",
        "service_delivery",
        b"PK\x03\x04 user export archive",
        content_type="application/zip",
    ),
)


def _bound_port(site: web.TCPSite) -> int:
    # asyncio's and uvloop's servers both expose `sockets`; the abstract type does not.
    sockets = getattr(site._server, "sockets", None)
    if not sockets:
        raise RuntimeError("the server did not start")
    port: int = sockets[0].getsockname()[1]
    return port


def _bundled_contracts() -> Path:
    for candidate in (
        Path.cwd() / "contracts",
        Path(__file__).resolve().parent.parent / "contracts",
    ):
        if candidate.is_dir():
            return candidate
    raise SystemExit("demo: no contracts/ folder found (run it from the repository)")


def _secret_env_names(document: object) -> set[str]:
    auth = document.get("upstream", {}).get("auth", {}) if isinstance(document, dict) else {}
    return {v for k, v in auth.items() if k.endswith("_env") and isinstance(v, str)}


class Demo:
    """Everything the demo starts, owned in one place so it is closed in one place."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.idp_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.consent_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.stand_ins = {pid: StandIn(pid, answer) for pid, answer in STAND_INS.items()}
        self.environ: dict[str, str] = dict(os.environ)
        self.environ["SHARE_GATEWAY_HASH_KEY"] = secrets.token_urlsafe(48)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.settings: Settings | None = None

    def token(self, scope: str, ttl_s: int = 300) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "svc-office-backend",
            "iat": now,
            "exp": now + ttl_s,
            "scope": scope,
        }
        return jwt.encode(claims, self.idp_key, algorithm="RS256")

    def consent_token(self, subject: str, partner: str, purpose: str) -> str:
        now = int(time.time())
        claims = {
            "iss": CONSENT_ISSUER,
            "sub": subject,
            "partner": partner,
            "purposes": [purpose],
            "iat": now,
            "exp": now + 300,
            "jti": f"consent-{secrets.token_hex(4)}",
        }
        return jwt.encode(claims, self.consent_key, algorithm="RS256")

    def _write_keys(self) -> tuple[Path, Path]:
        idp = self.workdir / "idp.pem"
        consent = self.workdir / "consent.pem"
        for path, key in ((idp, self.idp_key), (consent, self.consent_key)):
            path.write_bytes(
                key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            )
        return idp, consent

    def _copy_contracts(self) -> Path:
        """The bundled contracts, pointed at the stand-ins on loopback."""
        target = self.workdir / "contracts"
        target.mkdir()
        source = _bundled_contracts()
        taxonomy = source / "_taxonomy.yaml"
        if taxonomy.is_file():
            (target / taxonomy.name).write_bytes(taxonomy.read_bytes())
        for path in contract_files(source):
            document, _raw = read_yaml_file(path)
            if not isinstance(document, dict):
                continue
            partner = document["partner"]["id"]
            stand_in = self.stand_ins.get(partner)
            if stand_in is not None:
                document["upstream"]["base_url"] = f"http://127.0.0.1:{stand_in.port}"
            for name in _secret_env_names(document):
                self.environ.setdefault(name, f"demo-{name.lower()}")
            (target / path.name).write_text(
                yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8"
            )
        return target

    async def start(self, port: int) -> None:
        for stand_in in self.stand_ins.values():
            await stand_in.start()
        idp, consent = self._write_keys()
        self.settings = Settings.model_validate(
            {
                "listen": {"host": "127.0.0.1", "port": port},
                "contracts_dir": self._copy_contracts(),
                "allow_insecure_upstreams": True,
                "auth": {
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "algorithms": ["RS256"],
                    "public_key_file": idp,
                },
                "consent": {
                    "issuer": CONSENT_ISSUER,
                    "algorithms": ["RS256"],
                    "public_key_file": consent,
                },
                "registry": {"path": self.workdir / "consent.sqlite"},
                "share_log": {"path": self.workdir / "share-log.sqlite", "stdout": False},
            }
        )
        runtime = await build_runtime(self.settings, environ=self.environ)
        self.runner = make_runner(make_app(runtime), self.settings)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = _bound_port(site)
        self._runtime = runtime

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            await close_runtime(self._runtime)
        for stand_in in self.stand_ins.values():
            await stand_in.close()

    async def send(self, session: aiohttp.ClientSession, sample: Sample) -> tuple[int, bytes]:
        headers = {
            "Authorization": "Bearer "
            + self.token(sample.scope or f"share:{sample.partner}:{sample.purpose}"),
            "X-Share-Purpose": sample.purpose,
            "Content-Type": sample.content_type,
            **sample.headers,
        }
        if sample.consent_for is not None:
            headers["X-Consent-Token"] = self.consent_token(
                sample.consent_for, sample.partner, sample.purpose
            )
        url = f"http://127.0.0.1:{self.port}/{sample.partner}{sample.path}"
        async with session.request(
            sample.method, url, data=sample.body, headers=headers
        ) as response:
            return response.status, await response.read()


def _show(body: bytes | None, content_type: str, *, raw: bool = False) -> list[str]:
    if body is None:
        return ["(nothing)"]
    if raw:
        return body.decode("utf-8", "replace").splitlines()
    if content_type.endswith("json"):
        try:
            return (
                orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode().splitlines()
            )
        except orjson.JSONDecodeError:
            pass
    return [repr(body)]


def _width(text: str) -> int:
    # Chinese characters take two terminal columns.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _side_by_side(left: list[str], right: list[str], width: int = 58) -> list[str]:
    rows = []
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        while _width(a) > width:
            a = a[:-1]
        rows.append(f"  {a}{' ' * (width - _width(a))} │ {b}")
    return rows


async def run_demo(*, keep_serving: bool = False, port: int = 0) -> int:
    with tempfile.TemporaryDirectory(prefix="share-gateway-demo-") as tmp:
        demo = Demo(Path(tmp))
        await demo.start(port if keep_serving else 0)
        try:
            await _tour(demo)
            if keep_serving:
                await _serve_forever(demo)
        finally:
            await demo.close()
    return 0


async def _tour(demo: Demo) -> None:
    print(
        f"Share Gateway demo — gateway on 127.0.0.1:{demo.port}, stand-in partners: "
        + ", ".join(f"{p} (:{s.port})" for p, s in demo.stand_ins.items())
    )
    async with aiohttp.ClientSession() as session:
        for n, sample in enumerate(SAMPLES, start=1):
            stand_in = demo.stand_ins[sample.partner]
            before = len(stand_in.received)
            status, answer = await demo.send(session, sample)
            got = stand_in.received[before:]
            print()
            print(f"[{n}] {sample.title}")
            print(
                f"    {sample.method} /{sample.partner}{sample.path}"
                f"  purpose={sample.purpose}  →  {status}"
            )
            left = ["caller sent:", *_show(sample.body, sample.content_type, raw=sample.raw)]
            if got:
                method, target, body, headers = got[0]
                right = [
                    f"{sample.partner} received: {method} {target}",
                    *_show(body, headers.get("Content-Type", "")),
                ]
                right.append(
                    "headers: "
                    + ", ".join(f"{k}={v}" for k, v in headers.items() if k.startswith("X-"))
                )
            else:
                right = [f"{sample.partner} received: nothing"]
            for line in _side_by_side(left, right):
                print(line)
            print("    caller got back: " + answer.decode("utf-8", "replace"))
    await _print_summary(demo)


async def _print_summary(demo: Demo) -> None:
    from gateway.sharelog.review import summary

    if demo.settings is None:
        return
    rows = summary(demo.settings.share_log.path, since=None, until=None)
    print()
    print("Share log summary (share-gateway logs summary):")
    for row in rows:
        denials = ", ".join(f"{reason} {n}" for reason, n in row["denials"].items()) or "none"
        print(
            f"  {row['partner']}: {row['shares']} shared ({row['records']} record(s)), "
            f"{row['denied']} denied ({denials})"
        )
        if row["categories_sent"]:
            print(f"    categories sent: {', '.join(row['categories_sent'])}")
        if row["top_fields_stripped"]:
            top = ", ".join(f"{f['field']} ×{f['count']}" for f in row["top_fields_stripped"])
            print(f"    fields stripped: {top}")


async def _serve_forever(demo: Demo) -> None:
    token = demo.token("share:fixit:technical_maintenance", ttl_s=3600)
    body = (
        '{"ticket_id": "T-1", "user_id": "u-1", '
        '"device": {"model": "X1", "ip": "203.0.113.9"}, "email": "a@b.example"}'
    )
    # SIGTERM (`kill`, a container stopping) stops it as Ctrl-C does: through the `finally`
    # blocks that close the gateway and remove the demo's folder. Left to its default, the
    # signal ends the process on the spot and the folder stays behind in the temp directory.
    # Set before the prompt: whoever reads it may stop the demo at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        print()
        print("The gateway keeps serving. Try (token valid for one hour):")
        print(f"  curl -si http://127.0.0.1:{demo.port}/fixit/v1/diagnostics \\")
        print(f"    -H 'Authorization: Bearer {token}' \\")
        print(
            "    -H 'X-Share-Purpose: technical_maintenance' -H 'Content-Type: application/json' \\"
        )
        print(f"    -d '{body}'")
        print("Press Ctrl-C to stop.")
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
