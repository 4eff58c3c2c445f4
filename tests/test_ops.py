"""Operations endpoints: health, readiness, metrics, and the admin API behind `gateway:admin`."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import gzip
import sqlite3
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import structlog
import yaml
from conftest import HASH_KEY, Gateway, GatewayFactory, contract, raw_request, stopped_clock, tamper
from tokens import SigningKey, mint, rsa_key, write_jwks

from gateway import app as app_module
from gateway import ops as ops_module
from gateway import runtime as runtime_module
from gateway.app import (
    DRAIN_MARGIN_S,
    build_runtime,
    close_runtime,
    drain_seconds,
    records_shared_since,
)
from gateway.auth import JWKS_FETCH_TIMEOUT_S
from gateway.consent import ConsentRegistry
from gateway.errors import StartupError
from gateway.keys import keyed_hash
from gateway.settings import ConsentSettings
from gateway.sharelog import review
from gateway.sharelog.ledger import Ledger
from gateway.sharelog.record import ShareOutcome, ShareRecord
from gateway.sharelog.store import ShareLog

ADMIN = "gateway:admin"


async def test_health_and_readiness(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    health = await gw.client.get("/_gateway/health")
    assert health.status == 200
    assert health.headers["Server"] == "share-gateway"  # no software name or version
    assert (await health.json()) == {"status": "ok"}
    ready = await gw.client.get("/_gateway/ready")
    assert ready.status == 200
    assert (await ready.json())["share_log_writable"] is True
    gw.log.available = False
    not_ready = await gw.client.get("/_gateway/ready")
    assert not_ready.status == 503
    assert (await not_ready.json())["share_log_writable"] is False
    assert gw.partner.received == []


async def test_a_consent_registry_replaced_under_the_gateway_makes_it_not_ready(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway()
    ready = await gw.client.get("/_gateway/ready")
    assert (ready.status, (await ready.json())["consent_registry_readable"]) == (200, True)
    registry = gw.runtime.terms.registry
    assert registry is not None
    restored = tmp_path / "restored.sqlite"
    restored.write_bytes(registry.path.read_bytes())
    restored.replace(registry.path)
    not_ready = await gw.client.get("/_gateway/ready")
    assert not_ready.status == 503
    assert (await not_ready.json())["consent_registry_readable"] is False


async def test_ops_paths_are_never_forwarded(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.client.get("/_gateway/anything")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    wrong_method = await gw.client.post("/_gateway/health")
    assert wrong_method.status == 405
    assert gw.partner.received == []


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("health", "GET, HEAD"),
        ("ready", "GET, HEAD"),
        ("metrics", "GET, HEAD"),
        ("contracts", "GET, HEAD"),
        ("reload", "POST"),
        ("consent", "GET, POST, HEAD"),
        ("shares", "GET, HEAD"),
    ],
)
async def test_a_wrong_method_is_told_the_methods_the_endpoint_takes(
    make_gateway: GatewayFactory, name: str, allowed: str
) -> None:
    gw = await make_gateway()
    wrong = [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS") if m not in allowed]
    for method in wrong:
        answer = await raw_request(gw, method, f"/_gateway/{name}", purpose=None)
        assert answer.status == 405, method
        assert answer.json()["error"]["code"] == "method_not_allowed"
        assert answer.headers["allow"] == allowed  # RFC 9110: a 405 says what would do


@pytest.mark.parametrize(
    "target",
    [
        "/_gateway/health",
        "/_gateway/ready",
        "/_gateway/metrics",
        "/_gateway/contracts",
        "/_gateway/shares?limit=1",
        "/_gateway/consent?subject=u-77",
    ],
)
async def test_head_answers_as_get_without_the_body(
    make_gateway: GatewayFactory, target: str
) -> None:
    gw = await make_gateway(durable_log=True)
    # A refusal: a record that no outcome changes between the two requests.
    assert (await gw.share("POST", "/acme/v1/nope", json={})).status == 403
    admin = [("Authorization", f"Bearer {gw.token(ADMIN)}")]
    get = await raw_request(gw, "GET", target, headers=admin, authorized=False, purpose=None)
    head = await raw_request(gw, "HEAD", target, headers=admin, authorized=False, purpose=None)
    assert get.status == head.status == 200
    assert head.body == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if not target.endswith("metrics"):  # the metrics change between two scrapes
        assert head.headers["content-length"] == get.headers["content-length"] != "0"
    # Refused as a GET would be: the admin endpoints are no way around the admin scope.
    if "health" not in target and "ready" not in target and "metrics" not in target:
        refused = await raw_request(gw, "HEAD", target, purpose=None)
        assert (refused.status, refused.body) == (403, b"")


def _sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    wanted = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    )
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_include_the_process_and_its_garbage_collector(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    text = await (await gw.client.get("/_gateway/metrics")).text()
    assert _sample(text, "process_resident_memory_bytes") > 0
    before = _sample(text, "python_gc_collections_total", generation="2")
    gc.collect()
    text = await (await gw.client.get("/_gateway/metrics")).text()
    # At least the one asked for: the collector may have run one of its own in between.
    assert _sample(text, "python_gc_collections_total", generation="2") >= before + 1


async def test_metrics_count_decisions_by_partner_and_reason(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()

    async def counts() -> tuple[float, float, float, float, float]:
        text = await (await gw.client.get("/_gateway/metrics")).text()
        decisions = "share_gateway_decisions_total"
        return (
            _sample(text, decisions, partner="acme", reason="shared"),
            _sample(text, decisions, partner="acme", reason="route_denied"),
            _sample(text, "share_gateway_fields_stripped_total", partner="acme"),
            _sample(text, "share_gateway_upstream_latency_seconds_count", partner="acme"),
            _sample(
                text, "share_gateway_pii_redactions_total", category="contact.email", partner="acme"
            ),
        )

    # The registry is the process's: earlier tests counted too, so only the change is ours.
    before = await counts()
    # An e-mail address in the name, which the scanner redacts (the route shares no e-mail):
    # counted per partner and category.
    name = "Wang wang@example.com"
    body = {"applicant": {"user_id": "u-1", "name": name, "phone": "1", "pet": "cat"}}
    for _ in range(3):
        assert (await gw.share("POST", "/acme/v1/assess", json=body)).status == 200
        assert (await gw.share("POST", "/acme/v1/nope", json={})).status == 403
    after = await counts()
    stripped_each = len(gw.log.records[-2].fields_stripped)  # the last share's
    assert stripped_each >= 2
    assert tuple(b - a for a, b in zip(before, after, strict=True)) == (
        3,
        3,
        3 * stripped_each,
        3,
        3,
    )


async def test_admin_endpoints_need_the_admin_scope(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    for method, path in (
        ("GET", "/_gateway/contracts"),
        ("POST", "/_gateway/reload"),
        ("GET", "/_gateway/shares"),
        ("GET", "/_gateway/shares?subject=u-1"),
        ("GET", "/_gateway/consent?subject=u-1"),
        ("POST", "/_gateway/consent"),
    ):
        anonymous = await gw.client.request(method, path)
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        # The scope exactly: another one that starts with it grants nothing here.
        for scope in ("share:acme:*", "gateway:admin-readonly", "gateway:administrator"):
            not_admin = await gw.client.request(
                method, path, headers={"Authorization": f"Bearer {gw.token(scope)}"}
            )
            assert not_admin.status == 403
            assert (await not_admin.json())["error"]["code"] == "forbidden"


async def test_contracts_lists_versions_and_hashes(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    response = await gw.client.get(
        "/_gateway/contracts", headers={"Authorization": f"Bearer {gw.token(ADMIN)}"}
    )
    assert response.status == 200
    [listed] = (await response.json())["contracts"]
    loaded = gw.runtime.policy.partners["acme"].loaded
    assert listed["partner"] == "acme"
    assert listed["version"] == 3
    assert listed["sha256"] == loaded.sha256
    assert listed["in_force"] is True
    assert "POST /v1/assess (credit_assessment)" in listed["routes"]


async def test_reload_swaps_a_good_set_and_keeps_the_last_good_one(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    folder = gw.runtime.settings.contracts_dir
    changed = contract(contract={"version": 4})
    changed["upstream"]["base_url"] = gw.partner.base_url
    changed["routes"] = [r for r in changed["routes"] if r["path"] != "/v1/notes"]
    (folder / "acme.yaml").write_text(yaml.safe_dump(changed))
    response = await gw.client.post("/_gateway/reload", headers=admin)
    assert response.status == 200, await response.text()
    assert (await response.json())["contracts"]["acme"]["version"] == 4
    gone = await gw.share("POST", "/acme/v1/notes", json={"note": "x"}, purpose="service_delivery")
    assert gone.status == 403
    assert (await gone.json())["error"]["code"] == "route_denied"

    for broken in ("partner: {id: acme\n", "contract: {expires: 2027-02-30}\n"):
        (folder / "acme.yaml").write_text(broken)  # not YAML; a day no calendar has
        refused = await gw.client.post("/_gateway/reload", headers=admin)
        assert refused.status == 422
        assert (await refused.json())["error"]["problems"]
    assert gw.runtime.policy.partners["acme"].contract.contract.version == 4
    still = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-1"}})
    assert still.status == 200


async def test_a_refused_reload_lists_fifty_problems_of_a_file_and_counts_the_rest(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    broken = contract()
    broken["routes"] = [
        {"method": "POST", "path": f"/v1/r{n}", "purpose": "nobody_agreed", "fields": []}
        for n in range(80)
    ]
    path = gw.runtime.settings.contracts_dir / "acme.yaml"
    path.write_text(yaml.safe_dump(broken))
    refused = await gw.client.post("/_gateway/reload", headers=admin)
    assert refused.status == 422
    problems = (await refused.json())["error"]["problems"]
    assert len(problems) == 51
    assert problems[-1] == f"{path}: and 30 more problem(s) in this file"


# --- a reload reads the key files again -------------------------------------------------------


BODY = {"applicant": {"user_id": "u-1"}}


def write_keys(path: Path, source: str, *keys: SigningKey) -> Path:
    if source == "jwks_file":
        return write_jwks(path, *keys)
    [key] = keys
    return key.write_pem(path)


async def keys_gateway(
    make_gateway: GatewayFactory, path: Path, source: str, key: SigningKey
) -> Gateway:
    """A gateway whose caller keys come from the file at `path`: a PEM key or a JWKS."""
    write_keys(path, source, key)
    return await make_gateway(settings={"auth": {"public_key_file": None, source: path}})


async def reloads_counted(gw: Gateway, result: str) -> float:
    text = await (await gw.client.get("/_gateway/metrics")).text()
    name = f'share_gateway_contract_reloads_total{{result="{result}"}}'
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)), 0)


@pytest.mark.parametrize("source", ["public_key_file", "jwks_file"])
async def test_a_reload_withdraws_a_caller_key_taken_out_of_its_file_and_takes_one_put_in(
    make_gateway: GatewayFactory, idp_key: SigningKey, tmp_path: Path, source: str
) -> None:
    path = tmp_path / "caller-keys"
    gw = await keys_gateway(make_gateway, path, source, idp_key)
    token = gw.token()
    shared = await gw.share("POST", "/acme/v1/assess", json=BODY, token=token)
    assert shared.status == 200, await shared.text()
    assert gw.runtime.verifier.cached_tokens == 1  # verified once, then taken from the cache
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}

    rotated = rsa_key(kid="idp-2")
    write_keys(path, source, rotated)
    reloaded = await gw.client.post("/_gateway/reload", headers=admin)
    assert reloaded.status == 200, await reloaded.text()

    refused = await gw.share("POST", "/acme/v1/assess", json=BODY, token=token)
    assert (refused.status, (await refused.json())["error"]["code"]) == (401, "invalid_token")
    assert len(gw.partner.received) == 1
    record = gw.log.records[-1]
    assert (record.decision, record.reason) == ("denied", "invalid_token")
    taken = mint(rotated, scope="share:acme:*")
    shared = await gw.share("POST", "/acme/v1/assess", json=BODY, token=taken)
    assert shared.status == 200, await shared.text()
    assert len(gw.partner.received) == 2


@pytest.mark.parametrize(
    ("source", "content", "problem"),
    [
        ("public_key_file", b"", "is not a PEM public key"),
        ("public_key_file", b"-----BEGIN PRIVATE KEY-----\n...", "holds a private key"),
        ("jwks_file", None, "cannot read"),
        # A set left with no usable key is refused at start, and so at a reload.
        ("jwks_file", b'{"keys": []}', "no usable signature key"),
    ],
)
async def test_a_reload_with_a_key_file_it_cannot_use_is_refused_and_swaps_nothing(
    make_gateway: GatewayFactory,
    idp_key: SigningKey,
    tmp_path: Path,
    source: str,
    content: bytes | None,
    problem: str,
) -> None:
    path = tmp_path / "caller-keys"
    gw = await keys_gateway(make_gateway, path, source, idp_key)
    token = gw.token()
    shared = await gw.share("POST", "/acme/v1/assess", json=BODY, token=token)
    assert shared.status == 200, await shared.text()
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    changed = contract(contract={"version": 4})
    changed["upstream"]["base_url"] = gw.partner.base_url
    (gw.runtime.settings.contracts_dir / "acme.yaml").write_text(yaml.safe_dump(changed))
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    failed_before = await reloads_counted(gw, "failed")

    with structlog.testing.capture_logs() as logs:
        refused = await gw.client.post("/_gateway/reload", headers=admin)

    assert refused.status == 422
    [listed] = (await refused.json())["error"]["problems"]
    assert listed.startswith(f"auth.{source}: ")
    assert problem in listed
    assert await reloads_counted(gw, "failed") == failed_before + 1
    [failed] = [event for event in logs if event["event"] == "contracts_reload_failed"]
    assert failed["problems"] == [listed]
    # All or nothing: the good contract file waits for the key file to be good too.
    assert gw.runtime.policy.partners["acme"].contract.contract.version == 3
    for kept in (token, gw.token(subject="svc-other")):
        shared = await gw.share("POST", "/acme/v1/assess", json=BODY, token=kept)
        assert shared.status == 200, await shared.text()
    assert len(gw.partner.received) == 3


GRANT = {
    "subject": "u-77",
    "partner": "acme",
    "purpose": "credit_assessment",
    "granted_at": "2025-01-01T00:00:00Z",
    "reference": "app-consent-1",
}


async def test_consent_endpoint_grants_and_withdraws(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    grant = dict(GRANT)
    posted = await gw.client.post("/_gateway/consent", json={"grants": [grant]}, headers=admin)
    assert posted.status == 200, await posted.text()
    shown = await (await gw.client.get("/_gateway/consent?subject=u-77", headers=admin)).json()
    assert shown["subject_ref"] == keyed_hash(gw.runtime.subject_key, "u-77")
    assert [g["reference"] for g in shown["grants"]] == ["app-consent-1"]
    bad = await gw.client.post(
        "/_gateway/consent", json={"grants": [{**grant, "granted_at": "yesterday"}]}, headers=admin
    )
    assert bad.status == 422
    typo = await gw.client.post(
        "/_gateway/consent", json={"grants": [{**grant, "partner": "acme-credt"}]}, headers=admin
    )
    assert (await typo.json())["warnings"] == [
        "grants[0]: no contract has this row's partner; no share consults this row"
    ]


async def test_admin_writes_and_subject_lookups_leave_one_event_each(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(durable_log=True)
    shared = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-77"}})
    assert shared.status == 200
    admin = {"Authorization": f"Bearer {gw.token(ADMIN, sub='ops-alice')}"}
    ref = keyed_hash(gw.runtime.subject_key, "u-77")
    withdrawn = {**GRANT, "withdrawn_at": "2025-06-01T00:00:00Z"}
    with structlog.testing.capture_logs() as logs:
        for grants in ([GRANT], [withdrawn], [{**GRANT, "granted_at": "never"}]):
            await gw.client.post("/_gateway/consent", json={"grants": grants}, headers=admin)
        assert (await gw.client.get("/_gateway/consent?subject=u-77", headers=admin)).ok
        assert (await gw.client.get("/_gateway/shares?subject=u-77", headers=admin)).ok
        assert (await gw.client.post("/_gateway/reload", headers=admin)).ok
        # Reads of no one in particular are not admin actions.
        assert (await gw.client.get("/_gateway/shares", headers=admin)).ok
        assert (await gw.client.get("/_gateway/contracts", headers=admin)).ok
    actions = [e for e in logs if e["event"] == "admin_action"]
    for event in actions:
        assert (event["caller"], event["log_level"]) == ("ops-alice", "info")
        del event["caller"], event["log_level"], event["event"]
    assert actions == [
        {
            "method": "POST",
            "endpoint": "/_gateway/consent",
            "result": "applied",
            "granted": 1,
            "withdrawn": 0,
            "unchanged": 0,
        },
        {
            "method": "POST",
            "endpoint": "/_gateway/consent",
            "result": "applied",
            "granted": 0,
            "withdrawn": 1,
            "unchanged": 0,
        },
        {"method": "POST", "endpoint": "/_gateway/consent", "result": "refused", "problems": 1},
        {"method": "GET", "endpoint": "/_gateway/consent", "subject_ref": ref, "grants": 1},
        {
            "method": "GET",
            "endpoint": "/_gateway/shares",
            "subject_ref": ref,
            "rows": 1,
            "continued": False,
        },
        {"method": "POST", "endpoint": "/_gateway/reload", "result": "reloaded", "partners": 1},
    ]
    assert "u-77" not in repr(logs)  # the subject only as its keyed reference


@pytest.mark.parametrize(
    "query",
    [
        "subject=u-1&subject=u-2",
        "subject=u-1&partner=acme",
        "",
        "subject=u-%FF",  # not UTF-8: u-%FE would be the same subject
        "subject=%EF%BF%BD",
    ],
)
async def test_consent_endpoint_takes_exactly_one_subject(
    make_gateway: GatewayFactory, query: str
) -> None:
    gw = await make_gateway()
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    response = await gw.client.get(f"/_gateway/consent?{query}", headers=admin)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "malformed_request"


@pytest.mark.parametrize(
    ("codings", "compress", "status", "code"),
    [
        (["gzip"], True, 200, None),
        (["deflate"], True, 200, None),
        (["br"], False, 415, "unsupported_media_type"),
        (["gzip, gzip"], False, 415, "unsupported_media_type"),
        (["gzip"], False, 400, "malformed_body"),  # said to be gzip, and is not
        (["identity", "br"], False, 400, "malformed_request"),
    ],
    ids=["gzip", "deflate", "br", "gzip-twice", "plain-said-gzip", "repeated"],
)
async def test_consent_endpoint_reads_the_body_in_its_content_coding(
    make_gateway: GatewayFactory, codings: list[str], compress: bool, status: int, code: str | None
) -> None:
    # As a share's body: a withdrawal sent compressed is applied, and one whose coding the
    # gateway cannot undo is never read as if it had none.
    gw = await make_gateway()
    registry = gw.runtime.terms.registry
    assert registry is not None
    body = orjson.dumps({"grants": [GRANT]})
    if compress:
        body = gzip.compress(body) if codings == ["gzip"] else zlib.compress(body)
    headers = [
        ("Authorization", f"Bearer {gw.token(ADMIN)}"),
        ("Content-Type", "application/json"),
        *(("Content-Encoding", coding) for coding in codings),
    ]
    answer = await raw_request(
        gw, "POST", "/_gateway/consent", headers=headers, body=body, authorized=False, purpose=None
    )
    assert answer.status == status, answer.body
    if code is None:
        assert answer.json()["granted"] == 1
        assert [g.reference for g in registry.show("u-77")] == ["app-consent-1"]
    else:
        assert answer.json()["error"]["code"] == code
        assert registry.show("u-77") == []


async def test_consent_endpoint_refuses_a_transfer_coding_it_does_not_undo(
    make_gateway: GatewayFactory,
) -> None:
    # aiohttp takes the chunks off and leaves the gzip on: the body read is not the one sent.
    gw = await make_gateway()
    registry = gw.runtime.terms.registry
    assert registry is not None
    body = orjson.dumps({"grants": [GRANT]})
    head = (
        "POST /_gateway/consent HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{gw.client.server.port}\r\n"
        f"Authorization: Bearer {gw.token(ADMIN)}\r\n"
        "Content-Type: application/json\r\n"
        "Transfer-Encoding: gzip, chunked\r\n"
        "Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.server.port)
    try:
        writer.write(head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split(b" ")[1] == b"400", answer
    assert orjson.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "malformed_request"
    assert registry.show("u-77") == []


async def _post_consent(gw: Gateway, headers: list[tuple[str, str]], body: bytes) -> int:
    """The status of a POST written byte for byte: `body` may be shorter than announced."""
    port = gw.client.server.port
    head = (
        f"POST /_gateway/consent HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {gw.token(ADMIN, sub='ops-alice')}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers)
        + "Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        # The server may linger to drain a body announced longer: the status line is enough.
        status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split(b" ")[1])


_GRANTS = orjson.dumps({"grants": [GRANT]})
_JSON_TYPE = ("Content-Type", "application/json")


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ([_JSON_TYPE, ("Content-Length", "12")], b'{"grants": [', 400, "malformed_body"),
        (
            [_JSON_TYPE, ("Transfer-Encoding", "gzip, chunked")],
            b"0\r\n\r\n",
            400,
            "malformed_request",
        ),
        ([_JSON_TYPE, ("Content-Length", "500")], _GRANTS[:20], 408, "request_timeout"),
        ([_JSON_TYPE, ("Content-Length", "4096")], b" " * 4096, 413, "body_too_large"),
        (
            [("Content-Type", "text/plain"), ("Content-Length", str(len(_GRANTS)))],
            _GRANTS,
            415,
            "unsupported_media_type",
        ),
        (
            [_JSON_TYPE, ("Content-Encoding", "br"), ("Content-Length", str(len(_GRANTS)))],
            _GRANTS,
            415,
            "unsupported_media_type",
        ),
    ],
    ids=["malformed", "transfer-coding", "deadline", "too-large", "type", "coding"],
)
async def test_a_consent_write_refused_for_its_body_leaves_an_admin_action(
    make_gateway: GatewayFactory,
    headers: list[tuple[str, str]],
    body: bytes,
    status: int,
    code: str,
) -> None:
    # An attempt to change the registry is on record whatever stopped it, as a 422 is.
    gw = await make_gateway(
        settings={"limits": {"body_read_timeout_s": 0.2, "max_body_bytes": 1024}}
    )
    registry = gw.runtime.terms.registry
    assert registry is not None
    with structlog.testing.capture_logs() as logs:
        assert await _post_consent(gw, headers, body) == status
    actions = [e for e in logs if e["event"] == "admin_action"]
    assert actions == [
        {
            "event": "admin_action",
            "log_level": "info",
            "caller": "ops-alice",
            "method": "POST",
            "endpoint": "/_gateway/consent",
            "result": "refused",
            "code": code,
        }
    ]
    assert registry.show("u-77") == []


async def test_an_admin_write_the_gateway_fails_leaves_an_admin_action(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway()
    admin = {"Authorization": f"Bearer {gw.token(ADMIN, sub='ops-alice')}"}

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gw.runtime.terms.registry, "_import", broken)
    monkeypatch.setattr(runtime_module, "load_policy", broken)
    with structlog.testing.capture_logs() as logs:
        posted = await gw.client.post("/_gateway/consent", json={"grants": [GRANT]}, headers=admin)
        reloaded = await gw.client.post("/_gateway/reload", headers=admin)
    assert (posted.status, reloaded.status) == (500, 500)
    actions = [(e["endpoint"], e["result"]) for e in logs if e["event"] == "admin_action"]
    assert actions == [("/_gateway/consent", "failed"), ("/_gateway/reload", "failed")]


async def test_consent_endpoint_answers_503_while_another_writer_holds_the_registry(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    registry = gw.runtime.terms.registry
    assert registry is not None
    registry._writer.execute("PRAGMA busy_timeout = 50")
    grant = dict(GRANT)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    other = sqlite3.connect(registry.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a `consent import` in another process
        busy = await gw.client.post("/_gateway/consent", json={"grants": [grant]}, headers=admin)
        assert busy.status == 503
        assert (await busy.json())["error"]["code"] == "registry_busy"
        assert busy.headers["Retry-After"] == "1"
        other.execute("ROLLBACK")
    finally:
        other.close()
    posted = await gw.client.post("/_gateway/consent", json={"grants": [grant]}, headers=admin)
    assert posted.status == 200, await posted.text()


async def test_consent_endpoint_answers_503_for_a_write_once_the_registry_file_was_replaced(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway()
    registry = gw.runtime.terms.registry
    assert registry is not None
    # A copy restored with `mv`: a grant applied to the file still open would be lost with it.
    restored = tmp_path / "restored.sqlite"
    ConsentRegistry(restored, gw.runtime.subject_key).close()
    restored.replace(registry.path)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN, sub='ops-alice')}"}
    with structlog.testing.capture_logs() as logs:
        posted = await gw.client.post("/_gateway/consent", json={"grants": [GRANT]}, headers=admin)
    assert posted.status == 503
    assert (await posted.json())["error"] == {
        "code": "registry_unavailable",
        "message": "the consent registry's file was replaced or removed: reload the gateway "
        "once a whole registry file is in its place",
    }
    actions = [(e["endpoint"], e["result"]) for e in logs if e["event"] == "admin_action"]
    assert actions == [("/_gateway/consent", "unavailable")]
    with ConsentRegistry(registry.path, gw.runtime.subject_key) as now_in_place:
        assert now_in_place.show("u-77") == []


async def test_shares_endpoint_filters_the_durable_log(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(durable_log=True)
    ok = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-9"}})
    assert ok.status == 200
    denied = await gw.share("POST", "/acme/v1/nope", json={})
    assert denied.status == 403
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    listed = await gw.client.get("/_gateway/shares?decision=denied", headers=admin)
    assert listed.status == 200, await listed.text()
    rows = (await listed.json())["shares"]
    assert [r["reason"] for r in rows] == ["route_denied"]
    about = await gw.client.get("/_gateway/shares?subject=u-9", headers=admin)
    [row] = (await about.json())["shares"]
    assert row["share_id"] == ok.headers["X-Share-Id"]
    assert "u-9" not in await about.text()
    bad = await gw.client.get("/_gateway/shares?colour=red", headers=admin)
    assert bad.status == 400


async def test_shares_endpoint_finds_one_share_by_its_id_as_logs_query_does(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(durable_log=True)
    answers = [
        await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": user}})
        for user in ("u-1", "u-2", "u-3")
    ]
    assert [a.status for a in answers] == [200, 200, 200]
    wanted = answers[1].headers["X-Share-Id"]
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    found = await gw.client.get(f"/_gateway/shares?share_id={wanted}", headers=admin)
    assert found.status == 200, await found.text()
    body = await found.json()
    assert [row["share_id"] for row in body["shares"]] == [wanted]
    assert body["next"] is None
    none = await gw.client.get("/_gateway/shares?share_id=no-such-share", headers=admin)
    assert (await none.json())["shares"] == []


def _share_record(share_id: str, ts: datetime, **fields: Any) -> ShareRecord:
    """A share to acme under DPA-1 version 3, refused, unless `fields` say otherwise."""
    values: dict[str, Any] = {
        "share_id": share_id,
        "ts": ts,
        "partner": "acme",
        "contract_id": "DPA-1",
        "contract_version": 3,
        "contract_sha256": "0" * 64,
        "caller": "svc",
        "purpose": "credit_assessment",
        "method": "POST",
        "route": "POST /v1/assess",
        "decision": "denied",
        "reason": "route_denied",
    }
    return ShareRecord(**(values | fields))


def _old_and_recent(path: Path, old: int, recent: int, *, same_ts: int = 1) -> None:
    """A share log with `old` shares past retention, then `recent` ones; `same_ts` shares in a
    row share a timestamp, so that pages also break between rows of one instant."""
    ledger = Ledger.open(path, HASH_KEY.encode())
    now = datetime.now(UTC)
    ledger.begin()
    for i in range(old + recent):
        age = timedelta(days=4 * 365 if i < old else 1)
        ledger.add_share(
            _share_record(
                f"row-{i:04d}",
                now - age + timedelta(milliseconds=i // same_ts),
                partner="acme" if i % 3 else "other",
            )
        )
    ledger.commit(now)
    ledger.close()


async def _pages(gw: Gateway, query: str) -> tuple[list[dict[str, Any]], int]:
    """Every row of a paged query, following `next`, and how many pages it took."""
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = query if cursor is None else f"{query}&cursor={cursor}"
        answer = await gw.client.get(f"/_gateway/shares?{params}", headers=admin)
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        rows += body["shares"]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            return rows, pages
        assert len(body["shares"]) == body["limit"]


@pytest.mark.parametrize(
    "query",
    [
        "partner=other",
        "purpose=marketing",
        "decision=shared",
        "reason=shared",
        "caller=svc-b",
        "share_id=row-b",
    ],
)
async def test_shares_endpoint_applies_each_filter(
    make_gateway: GatewayFactory, tmp_path: Path, query: str
) -> None:
    # Two shares differing in every filtered column: a filter ignored would list both.
    ledger = Ledger.open(tmp_path / "share-log.sqlite", HASH_KEY.encode())
    now = datetime.now(UTC)
    ledger.begin()
    ledger.add_share(_share_record("row-a", now - timedelta(minutes=2)))
    ledger.add_share(
        _share_record(
            "row-b",
            now - timedelta(minutes=1),
            partner="other",
            purpose="marketing",
            decision="shared",
            reason="shared",
            caller="svc-b",
        )
    )
    ledger.commit(now)
    ledger.close()
    gw = await make_gateway(durable_log=True)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    listed = await gw.client.get(f"/_gateway/shares?{query}", headers=admin)
    assert listed.status == 200, await listed.text()
    assert [row["share_id"] for row in (await listed.json())["shares"]] == ["row-b"]


async def test_shares_pages_keep_the_window_of_the_first_page(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # `until=2d` ends before the recent shares on every page, not on the first one only.
    _old_and_recent(tmp_path / "share-log.sqlite", 25, 10)
    gw = await make_gateway(durable_log=True)
    older = review.query(gw.runtime.settings.share_log.path, limit=None)[:25]
    assert (await _pages(gw, "limit=10&until=2d")) == (older, 3)


async def test_shares_of_a_log_removed_under_the_gateway_is_unavailable(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await make_gateway(durable_log=True)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    assert (await gw.client.get("/_gateway/shares", headers=admin)).status == 200
    (tmp_path / "share-log.sqlite").rename(tmp_path / "moved-away.sqlite")
    with structlog.testing.capture_logs() as logs:
        listed = await gw.client.get("/_gateway/shares", headers=admin)
    assert listed.status == 503  # the service's condition, not a fault of the gateway's code
    assert (await listed.json())["error"]["code"] == "share_log_unavailable"
    # The error itself no longer names the file: the line does, for whoever reads the logs.
    [line] = [line for line in logs if line["event"] == "share_log_unreadable"]
    assert line["path"] == str(tmp_path / "share-log.sqlite")


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE shares SET fields_sent = '[oops'",
        "UPDATE shares SET caller = CAST(x'ff41' AS TEXT)",
        "UPDATE shares SET caller = CAST(caller AS BLOB)",
    ],
    ids=["json", "utf8", "blob"],
)
async def test_shares_of_a_damaged_entry_is_unavailable(
    make_gateway: GatewayFactory, tmp_path: Path, change: str
) -> None:
    gw = await make_gateway(durable_log=True)
    shared = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-9"}})
    assert shared.status == 200
    tamper(tmp_path / "share-log.sqlite", change)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    listed = await gw.client.get("/_gateway/shares?subject=u-9", headers=admin)
    assert listed.status == 503
    assert (await listed.json())["error"]["code"] == "share_log_unavailable"


async def test_shares_pages_by_cursor_are_the_whole_query(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    _old_and_recent(tmp_path / "share-log.sqlite", 0, 25, same_ts=4)
    gw = await make_gateway(durable_log=True)
    path = gw.runtime.settings.share_log.path
    whole = review.query(path, limit=None)
    assert (await _pages(gw, "limit=10")) == (whole, 3)
    assert (await _pages(gw, "limit=5&partner=acme")) == (
        review.query(path, limit=None, partner="acme"),
        4,  # 16 rows: no empty fourth page after a full third one
    )
    assert (await _pages(gw, "limit=1000")) == (whole, 1)
    # A share recorded after the first page is not part of that read.
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    first = await (await gw.client.get("/_gateway/shares?limit=20", headers=admin)).json()
    shared = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-1"}})
    assert shared.status == 200
    rest = await gw.client.get(f"/_gateway/shares?limit=20&cursor={first['next']}", headers=admin)
    assert [r["share_id"] for r in (await rest.json())["shares"]] == [
        r["share_id"] for r in whole[20:]
    ]


async def test_shares_pages_never_skip_rows_a_prune_left(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # An access request answered from pages must be whole: a prune between two pages either
    # took only rows read already, or the next page says the read must start again.
    _old_and_recent(tmp_path / "share-log.sqlite", 30, 30)
    gw = await make_gateway(durable_log=True)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    path = gw.runtime.settings.share_log.path
    surviving = review.query(path, limit=None)[30:]

    async def page(query: str) -> tuple[int, Any]:
        answer = await gw.client.get(f"/_gateway/shares?{query}", headers=admin)
        return answer.status, await answer.json()

    _, short = await page("limit=10")  # rows 0-9: the prune takes 10-29, not read yet
    _, long = await page("limit=40")  # rows 0-39: the prune takes only rows read
    cutoff = datetime.now(UTC) - timedelta(days=3 * 365 + 200)
    share_log = gw.runtime.share_log
    assert isinstance(share_log, ShareLog)
    assert (await share_log.prune(cutoff)).shares == 30  # as `logs prune` does
    status, refused = await page(f"limit=10&cursor={short['next']}")
    assert (status, refused["error"]["code"]) == (409, "log_changed")
    status, rest = await page(f"limit=40&cursor={long['next']}")
    assert status == 200
    assert long["shares"][30:] + rest["shares"] == surviving
    assert rest["next"] is None


async def test_shares_cursor_is_refused_altered_or_with_other_filters(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    _old_and_recent(tmp_path / "share-log.sqlite", 0, 10)
    gw = await make_gateway(durable_log=True)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    first = await gw.client.get("/_gateway/shares?limit=2&since=30d", headers=admin)
    cursor = (await first.json())["next"]
    payload, _, mac = cursor.partition(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    for query in (
        f"limit=2&since=30d&cursor={flipped}.{mac}",  # another position, the same MAC
        f"limit=2&since=30d&cursor={payload}.{mac[:-2]}",
        f"limit=2&since=30d&cursor={payload}",
        f"limit=2&since=30d&cursor={payload}.{mac}.{mac}",
        f"limit=2&since=30d&cursor={cursor}%20",
        f"limit=2&since=29d&cursor={cursor}",  # other filters than the first page's
        f"limit=2&since=30d&partner=acme&cursor={cursor}",
        f"limit=2&since=30d&subject=u-1&cursor={cursor}",
    ):
        answer = await gw.client.get(f"/_gateway/shares?{query}", headers=admin)
        assert answer.status == 400, query
        error = (await answer.json())["error"]
        assert error["code"] == "malformed_request"
        assert payload not in error["message"]
    # The same filters with any limit continue it.
    more = await gw.client.get(f"/_gateway/shares?limit=8&since=30d&cursor={cursor}", headers=admin)
    assert more.status == 200
    assert len((await more.json())["shares"]) == 8


@pytest.mark.parametrize(
    "query",
    [
        "subject=",  # would have listed every share as that subject's
        "limit=0",
        "since=99999999d",
        "since=0001-01-01",
        "until=9999-12-31",
        "since=2025-03-02&until=2025-03-01",
        "decision=denials",  # a typo would read as "there were none"
        "decision=Denied",
        "partner=acme&partner=other",  # which one is meant?
        "subject=u-9&subject=u-1",
        "offset=0",  # no longer: a prune between two pages made it skip rows
        "cursor=",
        "cursor=e30.AAAAAAAAAAAAAAAAAAAAAA",
        # Digits 0-9 only, which int() is not strict about:
        "limit=%EF%BC%91%EF%BC%90",  # fullwidth 10
        "limit=%D9%A1",  # Arabic-Indic 1
        "limit=1_0",
        "limit=%205",
        "limit=5%20",
        "limit=+5",
        "limit=",
        "since=%EF%BC%97d",  # fullwidth 7, then d
        "since=%207d",
        "until=2025-03-01%0A",
        "subject=u-%FF",  # not UTF-8: u-%FE would be the same subject
        "subject=u-%EF%BF%BD",
    ],
)
async def test_shares_endpoint_refuses_what_it_cannot_answer_exactly(
    make_gateway: GatewayFactory, query: str
) -> None:
    gw = await make_gateway(durable_log=True)
    assert (await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-9"}})).ok
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    response = await gw.client.get(f"/_gateway/shares?{query}", headers=admin)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["code"] == "malformed_request"


@pytest.mark.parametrize(
    "query",
    ["since=2025-03-09T02:30", "until=2025-11-02T01:30"],  # skipped, then shown twice
)
async def test_shares_endpoint_asks_for_the_offset_of_a_time_the_clocks_skip_or_repeat(
    make_gateway: GatewayFactory, query: str
) -> None:
    gw = await make_gateway(durable_log=True, settings={"timezone": "America/New_York"})
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    response = await gw.client.get(f"/_gateway/shares?{query}", headers=admin)
    assert response.status == 400
    name = query.split("=")[0]
    assert (await response.json())["error"] == {
        "code": "malformed_request",
        "message": f"{name} is a time the clocks of America/New_York skip or show twice: "
        "give its offset",
    }
    exact = query.replace("T02:30", "T02:30-05:00").replace("T01:30", "T01:30-04:00")
    assert (await gw.client.get(f"/_gateway/shares?{exact}", headers=admin)).status == 200


async def test_shares_endpoint_tells_a_client_paging_by_offset_to_use_the_cursor(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(durable_log=True)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    response = await gw.client.get("/_gateway/shares?limit=10&offset=10", headers=admin)
    assert response.status == 400
    assert (await response.json())["error"]["message"] == (
        "offset is not supported: continue with cursor=<next of the page>"
    )


async def test_shares_endpoint_reads_limit_in_plain_digits(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(durable_log=True)
    for user in ("u-1", "u-2"):
        assert (await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": user}})).ok
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    for limit, expected in (("0001", 1), ("1" + "0" * 5000, 1000)):
        answer = await gw.client.get(f"/_gateway/shares?limit={limit}", headers=admin)
        assert answer.status == 200
        assert (await answer.json())["limit"] == expected


@pytest.mark.parametrize("name", ["since", "until", "limit", "cursor"])
async def test_shares_endpoint_refusals_echo_no_value(
    make_gateway: GatewayFactory, name: str
) -> None:
    gw = await make_gateway(durable_log=True)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    marker = "u-4711-li.lei@example.com"
    answer = await gw.client.get(f"/_gateway/shares?{name}={marker}", headers=admin)
    assert answer.status == 400
    assert (await answer.json())["error"]["code"] == "malformed_request"
    assert "4711" not in await answer.text()


async def test_daily_record_counts_survive_a_restart(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(durable_log=True)
    for user in ("u-1", "u-2", "u-3"):
        response = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": user}})
        assert response.status == 200
    settings = gw.runtime.settings
    environ = gw.runtime.environ
    await gw.client.close()
    await close_runtime(gw.runtime)
    today = datetime.now(settings.zone).date()
    assert records_shared_since(settings, today) == {"acme": 3}
    restarted = await build_runtime(settings, environ=environ)
    try:
        quota = restarted.terms.quota
        assert await quota.take("acme", today, 8, 10) is None  # 3 + 8 > 10
        assert await quota.take("acme", today, 7, 10) == today
    finally:
        await close_runtime(restarted)


async def test_shares_that_never_reached_the_partner_count_against_no_cap(
    make_gateway: GatewayFactory,
) -> None:
    # A partner outage that callers retry through must not use up the day or the hour.
    capped = contract(terms={"max_records_per_day": 2, "rate_limit_per_s": 1 / 3600})
    gw = await make_gateway([capped], durable_log=True)
    await gw.partner.close()  # connections are refused: no byte reaches the partner
    for user in ("u-1", "u-2", "u-3"):
        response = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": user}})
        assert response.status == 502
    settings, environ = gw.runtime.settings, gw.runtime.environ
    await gw.client.close()
    await close_runtime(gw.runtime)
    rows = review.query(settings.share_log.path, limit=None)
    assert [(r["decision"], r["outcome"]) for r in rows] == [("shared", "error")] * 3
    assert records_shared_since(settings, datetime.now(settings.zone).date()) == {}
    restarted = await build_runtime(settings, environ=environ)
    try:
        assert await restarted.terms.limiter.acquire("acme", 1 / 3600, "after-restart") is None
    finally:
        await close_runtime(restarted)


async def test_the_rate_window_survives_a_restart(make_gateway: GatewayFactory) -> None:
    # One share an hour: a restart must not let a second one through within that hour.
    hourly = contract(terms={"rate_limit_per_s": 1 / 3600})
    gw = await make_gateway([hourly], durable_log=True)
    share = {"applicant": {"user_id": "u-1"}}
    assert (await gw.share("POST", "/acme/v1/assess", json=share)).status == 200
    assert (await gw.share("POST", "/acme/v1/assess", json=share)).status == 429
    settings, environ = gw.runtime.settings, gw.runtime.environ
    await gw.client.close()
    await close_runtime(gw.runtime)
    restarted = await build_runtime(settings, environ=environ)
    try:
        limiter = restarted.terms.limiter
        wait = await limiter.acquire("acme", 1 / 3600, "after-restart")
        assert wait is not None
        assert 3500 < wait <= 3600
    finally:
        await close_runtime(restarted)


def _late_share(path: Path, decided_ago_s: float, outcome_ago_s: float | None) -> None:
    """A log holding one share to acme decided `decided_ago_s` ago whose outcome (delivered)
    was recorded `outcome_ago_s` ago; None: none was, as when a crash cut it."""
    now = datetime.now(UTC)
    ledger = Ledger.open(path, HASH_KEY.encode())
    try:
        ledger.begin()
        ledger.add_share(
            _share_record(
                "late-1",
                now - timedelta(seconds=decided_ago_s),
                decision="shared",
                reason="shared",
                records=1,
            )
        )
        if outcome_ago_s is not None:
            ledger.add_outcome(
                ShareOutcome("late-1", "delivered", 200, 12, 1.0),
                now - timedelta(seconds=outcome_ago_s),
            )
        ledger.commit(now)
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("outcome_ago_s", "timeout_s"),
    [
        # It waited 280 s (for a connection, a handshake, its turn) and went out then.
        (420, 300),
        # A crash cut it: nothing says when it went out before the gateway stopped.
        (None, 300),
        # As the first, under a contract whose `timeout_s` a reload has shortened since.
        (420, 10),
    ],
)
async def test_a_restart_counts_a_share_in_the_rate_window_from_when_it_went_out(
    make_gateway: GatewayFactory, tmp_path: Path, outcome_ago_s: float | None, timeout_s: float
) -> None:
    # One share per 600 s. Decided 700 s before the restart, the share may have reached the
    # partner up to `timeout_s` later: counted from its decision, the next one would follow it
    # too soon.
    _late_share(tmp_path / "share-log.sqlite", 700, outcome_ago_s)
    slow = contract(upstream={"timeout_s": timeout_s}, terms={"rate_limit_per_s": 1 / 600})
    gw = await make_gateway([slow], durable_log=True)
    answer = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-1"}})
    assert answer.status == 429, await answer.text()
    assert (await answer.json())["error"]["code"] == "rate_limited"
    assert gw.partner.received == []


@pytest.mark.parametrize("reader", ["records_shared_since", "recent_shares"])
async def test_a_start_that_cannot_read_back_the_caps_counts_is_refused_in_one_line(
    make_gateway: GatewayFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reader: str,
) -> None:
    # As SQLite fails a sort too large for memory with nowhere to write it ("disk I/O error").
    def fails(*_: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(app_module, reader, fails)
    with pytest.raises(StartupError) as refused:
        await make_gateway(durable_log=True)
    log = tmp_path / "share-log.sqlite"
    assert refused.value.problems == [
        f"share log {log}: cannot read back the caps' counts: disk I/O error"
    ]


async def test_a_share_in_flight_during_a_reload_keeps_its_contract(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(durable_log=True)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    gw.partner.reply.delay_s = 0.5
    in_flight = asyncio.ensure_future(
        gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-1"}})
    )
    for _ in range(200):  # bounded: the share reaches the partner well within 2 s
        if gw.partner.received:
            break
        await asyncio.sleep(0.01)
    assert len(gw.partner.received) == 1
    newer = contract(contract={"version": 4})
    newer["upstream"]["base_url"] = gw.partner.base_url
    (gw.runtime.settings.contracts_dir / "acme.yaml").write_text(yaml.safe_dump(newer))
    reloaded = await gw.client.post("/_gateway/reload", headers=admin)
    assert reloaded.status == 200
    first = await in_flight
    assert first.status == 200
    gw.partner.reply.delay_s = 0
    second = await gw.share("POST", "/acme/v1/assess", json={"applicant": {"user_id": "u-2"}})
    assert second.status == 200
    rows = review.query(gw.runtime.settings.share_log.path, decision="shared")
    versions = {row["share_id"]: row["contract_version"] for row in rows}
    assert versions[first.headers["X-Share-Id"]] == 3
    assert versions[second.headers["X-Share-Id"]] == 4


PERSONAL: dict[str, str | int] = {
    "user_id": "u-subject-4711",
    "name": "李雷",
    "id_number": "110105198806052719",
    "phone": "13912345678",
    "email": "li.lei@example.com",
    "monthly_income": 23456,
}


async def test_the_share_log_files_hold_no_personal_values(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(durable_log=True)
    shared = await gw.share(
        "POST", "/acme/v1/assess", json={"applicant": PERSONAL, "note": PERSONAL["email"]}
    )
    assert shared.status == 200
    denied = await gw.share("POST", "/acme/v1/nope", json={"applicant": PERSONAL})
    assert denied.status == 403
    bad_token = await gw.share(
        "POST", "/acme/v1/assess", json={"applicant": PERSONAL}, token="not-a-token"
    )
    assert bad_token.status == 401
    await close_runtime(gw.runtime)  # flush and checkpoint everything to the files
    path = gw.runtime.settings.share_log.path
    stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())
    assert len(stored) > 0
    for value in PERSONAL.values():
        assert str(value).encode() not in stored
    assert b"not-a-token" not in stored
    [row] = review.query(path, decision="shared")
    assert row["subject_refs"] == [keyed_hash(gw.runtime.subject_key, str(PERSONAL["user_id"]))]


async def test_admin_endpoints_refuse_two_authorization_headers(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    admin = f"Bearer {gw.token(ADMIN)}"
    response = await gw.client.get(
        "/_gateway/contracts", headers=[("Authorization", admin), ("Authorization", admin)]
    )
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_token"


async def test_an_admin_token_whose_sub_holds_a_line_break_changes_nothing(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    # Its `caller` would start a second line in whatever shows the admin_action event.
    token = gw.token(ADMIN, sub="ops-alice\nops-bob")
    admin = {"Authorization": f"Bearer {token}"}
    with structlog.testing.capture_logs() as logs:
        response = await gw.client.post(
            "/_gateway/consent", json={"grants": [GRANT]}, headers=admin
        )
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_token"
    assert [e for e in logs if e["event"] == "admin_action"] == []
    lookup = await gw.client.get(
        "/_gateway/consent?subject=u-77", headers={"Authorization": f"Bearer {gw.token(ADMIN)}"}
    )
    assert (await lookup.json())["grants"] == []


async def test_a_stop_also_waits_for_the_key_fetches_a_share_may_make(
    make_gateway: GatewayFactory,
) -> None:
    # A caller token and a consent token may each name a key rotated in since the last fetch.
    gw = await make_gateway()
    settings = gw.runtime.settings
    before = drain_seconds(gw.runtime)
    assert settings.auth is not None
    assert settings.auth.jwks_url is None
    keys = {"algorithms": ["RS256"], "jwks_url": "https://idp.example/jwks"}
    gw.runtime.settings = settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={"jwks_url": keys["jwks_url"], "public_key_file": None}
            ),
            "consent": ConsentSettings.model_validate(keys),
        }
    )
    assert drain_seconds(gw.runtime) == before + 2 * JWKS_FETCH_TIMEOUT_S


async def test_a_failing_operations_endpoint_answers_as_the_gateway(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway(durable_log=True)

    def broken(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(review, "page", broken)
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    response = await gw.client.get("/_gateway/shares", headers=admin)
    assert response.status == 500
    assert response.headers["Server"] == "share-gateway"  # not the server software's page
    assert (await response.json())["error"]["code"] == "internal_error"


async def test_a_stop_waits_for_the_slowest_share_a_contract_allows(
    make_gateway: GatewayFactory,
) -> None:
    slow = contract(upstream={"timeout_s": 120})
    slow["upstream"]["base_url"] = "http://127.0.0.1:9"
    gw = await make_gateway([slow])
    limits = gw.runtime.settings.limits
    # aiohttp's own default (30 s here before) would cut such a share off mid-way.
    assert drain_seconds(gw.runtime) == limits.body_read_timeout_s + 120 + DRAIN_MARGIN_S
    # A share started before a reload shortened the timeout keeps its contract: still waited for.
    quick = contract(upstream={"timeout_s": 5})
    quick["upstream"]["base_url"] = "http://127.0.0.1:9"
    (gw.runtime.settings.contracts_dir / "acme.yaml").write_text(yaml.safe_dump(quick))
    policy = await gw.runtime.reload()
    assert policy.partners["acme"].timeout_s == 5
    assert drain_seconds(gw.runtime) == limits.body_read_timeout_s + 120 + DRAIN_MARGIN_S


async def test_contracts_show_each_cap_as_agreed_and_as_this_gateway_enforces_it(
    make_gateway: GatewayFactory,
) -> None:
    capped = contract(terms={"rate_limit_per_s": 10, "max_records_per_day": 10})
    other = contract(partner={"id": "other", "name": "Other"}, terms={"max_records_per_day": 7})
    gw = await make_gateway([capped, other], settings={"cap_shares": {"acme": "1/3"}})
    response = await gw.client.get(
        "/_gateway/contracts", headers={"Authorization": f"Bearer {gw.token(ADMIN)}"}
    )
    listed = {c["partner"]: c for c in (await response.json())["contracts"]}
    assert listed["acme"]["caps"] == {
        "share": "1/3",
        "rate_limit_per_s": {"agreed": 10, "this_gateway": pytest.approx(10 / 3)},
        "max_records_per_day": {"agreed": 10, "this_gateway": 3},
    }
    assert listed["acme"]["caps"]["rate_limit_per_s"]["this_gateway"] <= 10 / 3
    assert listed["other"]["caps"] == {
        "share": "1",
        "rate_limit_per_s": None,
        "max_records_per_day": {"agreed": 7, "this_gateway": 7},
    }
    # The contract as agreed: its own id, version and file hash.
    assert (listed["acme"]["contract_id"], listed["acme"]["version"]) == ("DPA-1", 3)


UPLOAD_WARNING = {
    "partner": "acme",
    "path": "routes.2.subject",  # PUT /v1/documents/{doc_id}: an upload about no one named
    "message": (
        "an upload may hold any personal category of the contract (contact.phone, "
        "financial.income, identity.id_number, identity.name) but the route names no subject: "
        "`logs subject` cannot find its shares; name the person it is about with "
        "subject: query.<name> or path.<name>"
    ),
}


def _warning_events(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {key: e[key] for key in ("partner", "path", "message", "file", "log_level")}
        for e in events
        if e["event"] == "contract_warning"
    ]


async def test_contract_warnings_are_logged_at_reload_and_answered_by_the_admin_api(
    make_gateway: GatewayFactory,
) -> None:
    # At start they are logged once the gateway has started (tests/test_process.py).
    gw = await make_gateway()
    file = str(gw.runtime.settings.contracts_dir / "acme.yaml")
    logged = {**UPLOAD_WARNING, "file": file, "log_level": "warning"}
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    listing = await gw.client.get("/_gateway/contracts", headers=admin)
    assert [c["warnings"] for c in (await listing.json())["contracts"]] == [[UPLOAD_WARNING]]

    with structlog.testing.capture_logs() as events:
        reloaded = await gw.client.post("/_gateway/reload", headers=admin)
    assert reloaded.status == 200
    assert (await reloaded.json())["warnings"] == [UPLOAD_WARNING]
    assert _warning_events(events) == [logged]

    # A refused reload changes nothing: its set's warnings are not said.
    folder = gw.runtime.settings.contracts_dir
    (folder / "acme.yaml").write_text("partner: {id: acme\n")
    with structlog.testing.capture_logs() as events:
        refused = await gw.client.post("/_gateway/reload", headers=admin)
    assert refused.status == 422
    assert _warning_events(events) == []

    fixed = contract()
    fixed["upstream"]["base_url"] = gw.partner.base_url
    fixed["routes"][2]["subject"] = "path.doc_id"
    (folder / "acme.yaml").write_text(yaml.safe_dump(fixed))
    with structlog.testing.capture_logs() as events:
        reloaded = await gw.client.post("/_gateway/reload", headers=admin)
    assert (await reloaded.json())["warnings"] == []
    assert _warning_events(events) == []


async def test_the_contracts_listing_shows_each_partner_only_its_own_warnings(
    make_gateway: GatewayFactory,
) -> None:
    quiet = contract(partner={"id": "quiet", "name": "Quiet"})
    quiet["routes"][2]["subject"] = "path.doc_id"
    gw = await make_gateway([contract(), quiet])
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    listing = await gw.client.get("/_gateway/contracts", headers=admin)
    listed = {c["partner"]: c["warnings"] for c in (await listing.json())["contracts"]}
    assert listed == {"acme": [UPLOAD_WARNING], "quiet": []}


async def test_the_contracts_listing_judges_a_contracts_end_on_the_day_in_the_settings_zone(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked_at = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)  # 2030-06-02 02:00 in Kiritimati (UTC+14)

    ending = contract(contract={"expires": "2030-06-02"})
    ending["routes"] = [r for r in ending["routes"] if r["method"] != "PUT"]
    gw = await make_gateway([ending], settings={"timezone": "Pacific/Kiritimati"})
    monkeypatch.setattr(ops_module, "datetime", stopped_clock(asked_at))
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    listing = await gw.client.get("/_gateway/contracts", headers=admin)
    [listed] = (await listing.json())["contracts"]
    [shown] = listed["warnings"]
    assert shown["message"].startswith("the contract's last day is 2030-06-02, today: ")


async def test_the_contracts_listing_judges_a_contracts_end_as_of_the_day_it_is_asked(
    make_gateway: GatewayFactory,
) -> None:
    expires = datetime.now(ZoneInfo("Asia/Shanghai")).date() + timedelta(days=10)
    ending = contract(contract={"expires": expires.isoformat()})
    ending["routes"] = [r for r in ending["routes"] if r["method"] != "PUT"]
    gw = await make_gateway([ending])
    assert [w.path for w in gw.runtime.policy.warnings] == ["contract.expires"]
    # As a gateway loaded when the end was more than 30 days away finds it weeks later.
    gw.runtime.policy = dataclasses.replace(gw.runtime.policy, warnings=())
    admin = {"Authorization": f"Bearer {gw.token(ADMIN)}"}
    listing = await gw.client.get("/_gateway/contracts", headers=admin)
    [listed] = (await listing.json())["contracts"]
    [shown] = listed["warnings"]
    assert shown["path"] == "contract.expires"
    assert f"every share is refused from {expires + timedelta(days=1)}" in shown["message"]
