"""A mixed, seeded run against three partners that fail in every way, reconciled afterwards: what
each partner received is what the share log says it was sent, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from conftest import BASE_CONTRACT, HASH_KEY, Gateway, GatewayFactory, contract
from partners import FakePartner, RawPartner, RawRequest, Script, reset
from tokens import mint

from gateway.app import close_runtime
from gateway.cli import build_parser
from gateway.consent import ConsentRegistry
from gateway.keys import subject_ref
from gateway.sharelog import review

SEEDS = (11, 23, 47, 89)
REQUESTS = 80  # per seed
AT_ONCE = 6
TIMEOUT_S = 0.3  # each contract's `upstream.timeout_s`: a hanging partner costs this much
DAILY_CAP = 6  # bureau's `terms.max_records_per_day`, below the shares a run sends it

ASSESS = "/v1/assess"
ACME, BUREAU, BROKER, OFFLINE = "acme", "bureau", "broker", "offline"
PARTNERS = (ACME, BUREAU, BROKER, OFFLINE)  # offline's port refuses connections
SUBJECTS = tuple(f"u-{n}" for n in range(1, 7))
CONSENTED = frozenset({"u-1", "u-2", "u-3"})  # granted to broker in its registry
SCOPE = " ".join(f"share:{p}:*" for p in PARTNERS)

Behaviour = Literal["ok", "fails_500", "busy_429", "reset", "hang", "truncated"]
BEHAVIOURS: tuple[Behaviour, ...] = ("ok", "fails_500", "busy_429", "reset", "hang", "truncated")
Kind = Literal["good", "deep", "unknown_purpose", "bad_token", "expired_token", "unknown_partner"]
Client = Literal["waits", "gone_early", "gone_after_forward"]
# How often each is drawn.
KINDS: dict[Kind, int] = {
    "good": 5,
    "deep": 4,
    "unknown_purpose": 1,
    "bad_token": 1,
    "expired_token": 1,
    "unknown_partner": 1,
}
CLIENTS: dict[Client, int] = {"waits": 6, "gone_early": 1, "gone_after_forward": 1}

# The partners' answer bodies, each behaviour its own (filtered by `response.fields` on the way).
ANSWERS: dict[Behaviour, tuple[str, bytes]] = {
    "ok": ("200 OK", b'{"score": 7, "reasons": [{"code": "A", "text": "t"}], "secret": 1}'),
    "fails_500": ("500 Internal Server Error", b'{"reasons": [{"code": "E"}]}'),
    "busy_429": ("429 Too Many Requests", b'{"reasons": [{"code": "slow down"}]}'),
}
# What the share log says became of a share, by what its partner did: (outcome, status).
OUTCOMES: dict[Behaviour, tuple[str, int | None]] = {
    "ok": ("delivered", 200),
    "fails_500": ("delivered", 500),
    "busy_429": ("delivered", 429),
    "reset": ("possibly_delivered", None),  # no status line was read
    "hang": ("timeout", None),
    "truncated": ("possibly_delivered", 200),
}
# What a caller still connected is answered: the partner's status, or the gateway's error.
ANSWERED: dict[Behaviour, tuple[int, str | None]] = {
    "ok": (200, None),
    "fails_500": (500, None),
    "busy_429": (429, None),
    "reset": (502, "upstream_error"),
    "hang": (504, "upstream_timeout"),
    "truncated": (502, "upstream_error"),
}


@dataclass(slots=True)
class Planned:
    """One request of the run, and what became of it on the caller's side."""

    tag: str  # in `meta.tag`, which every contract sends: the partner knows the plan by it
    partner: str  # the path's first segment
    subject: str
    kind: Kind
    behaviour: Behaviour
    client: Client
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None  # None: the caller did not wait for the answer
    code: str | None = None
    share_id: str | None = None
    retry_after: str | None = None

    def refusal(self) -> tuple[int, str] | None:
        """The refusal the plan alone decides; None where the share may go out (a bureau share
        may still find the day's cap used up)."""
        if self.kind == "unknown_purpose":
            return 403, "purpose_denied"
        if self.kind in ("bad_token", "expired_token"):
            return 401, "invalid_token"
        if self.kind == "unknown_partner":
            return 404, "unknown_partner"
        if self.partner == BROKER and self.subject not in CONSENTED:
            return 403, "consent_required"
        return None


def plan_run(seed: int) -> list[Planned]:
    rng = random.Random(seed)
    plans = [
        Planned(
            tag=f"s{seed}-r{n}",
            partner=rng.choice(PARTNERS),
            subject=rng.choice(SUBJECTS),
            kind=rng.choices(list(KINDS), weights=list(KINDS.values()))[0],
            behaviour=rng.choice(BEHAVIOURS),
            client=rng.choices(list(CLIENTS), weights=list(CLIENTS.values()))[0],
        )
        for n in range(REQUESTS)
    ]
    # Enough bureau shares that wait for their answer for the day's cap to be reached whatever
    # the draw: the rest of its day is refused.
    for n in range(DAILY_CAP + 3):
        plans.append(
            Planned(
                f"s{seed}-cap{n}",
                BUREAU,
                rng.choice(SUBJECTS),
                "good",
                rng.choice(BEHAVIOURS),
                "waits",
            )
        )
    rng.shuffle(plans)
    for plan in plans:
        if plan.kind == "unknown_partner":
            plan.partner = "nobody"
    return plans


def body_of(plan: Planned) -> dict[str, Any]:
    applicant: dict[str, Any] = {
        "user_id": plan.subject,
        "name": "Wang",
        "phone": "13800138000",
        "id_number": "110105198806052715",
        "monthly_income": 12000,
    }
    doc: dict[str, Any] = {"applicant": applicant, "loan_amount": 5000, "meta": {"tag": plan.tag}}
    if plan.kind == "deep":
        # Kept and stripped side by side, at every depth the contract's paths reach.
        applicant["employer"] = {"name": "ACME", "address": {"city": "Shanghai"}}
        doc["items"] = [{"amount": 1, "sku": "a-1"}, {"amount": 2, "note": {"x": [1, 2]}}]
        doc["tags"] = ["blue", {"not": "a scalar"}, 7]
        doc["meta"]["trace"] = {"hops": [1, {"at": "edge"}], "empty": None}
        doc["internal"] = {"score": 3}
    return doc


def target_of(plan: Planned) -> str:
    # `query.page` is allowed, `debug` is not.
    query = "?page=2&debug=1" if plan.kind == "deep" else ""
    return f"/{plan.partner}{ASSESS}{query}"


def partner_contract(partner: str) -> dict[str, Any]:
    route = {**BASE_CONTRACT["routes"][0]}
    doc = contract(
        partner={"id": partner, "name": partner.title()},
        contract={"id": f"DPA-{partner}"},
        upstream={"timeout_s": TIMEOUT_S},
        routes=[route],
    )
    if partner == BUREAU:
        doc["terms"] = {**doc["terms"], "max_records_per_day": DAILY_CAP}
    if partner == BROKER:
        # A third party: every share needs its subject's consent.
        doc["partner"]["relationship"] = "third_party"
        sensitive = {"allowed": ["identity.id_number"], "consent_required": True}
        doc["terms"] = {**doc["terms"], "sensitive": sensitive}
    return doc


# --- the partners ---------------------------------------------------------------------------


def _head(status: str, body: bytes, *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *extra]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def acting_on(plans: dict[str, Planned]) -> Script:
    """A partner's script doing, to each request, what the plan its `meta.tag` names says."""

    async def script(
        partner: RawPartner, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        # The request this connection just read: the partner appended it, and nothing ran
        # in between, so no other connection's request can have come after it.
        request = partner.requests[-1]
        plan = plans[orjson.loads(request.body)["meta"]["tag"]]
        plan.arrived.set()
        behaviour = plan.behaviour
        if behaviour in ANSWERS:
            status, body = ANSWERS[behaviour]
            extra = ("Retry-After: 1",) if behaviour == "busy_429" else ()
            writer.write(_head(status, body, *extra) + body)
            await writer.drain()
            return True
        if behaviour == "reset":
            reset(writer)  # before a byte of an answer
        elif behaviour == "hang":
            await reader.read()  # until the gateway gives up and closes
        elif behaviour == "truncated":
            writer.write(_head("200 OK", b"x" * 200) + b'{"score": 1, ')
            await writer.drain()
        return False

    return script


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, RawPartner]]:
    started = {partner: await RawPartner().start() for partner in PARTNERS}
    await started[OFFLINE].stop_listening()
    yield started
    for fake in started.values():
        await fake.close()


@pytest.fixture(autouse=True)
def hash_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The `logs` commands read the hash key as the gateway does: from the environment.
    monkeypatch.setenv("SHARE_GATEWAY_HASH_KEY", HASH_KEY)


# --- the callers ----------------------------------------------------------------------------


def headers_of(gw: Gateway, plan: Planned) -> dict[str, str]:
    if plan.kind == "bad_token":
        token = "not-a-token"
    elif plan.kind == "expired_token":
        token = mint(gw.key, scope=SCOPE, now=time.time() - 3600)
    else:
        token = gw.token(SCOPE)
    purpose = "marketing" if plan.kind == "unknown_purpose" else "credit_assessment"
    return {
        "Authorization": f"Bearer {token}",
        "X-Share-Purpose": purpose,
        "Content-Type": "application/json",
    }


async def waits(gw: Gateway, plan: Planned) -> None:
    response = await gw.client.post(
        target_of(plan), data=orjson.dumps(body_of(plan)), headers=headers_of(gw, plan)
    )
    payload = await response.read()
    plan.status = response.status
    plan.share_id = response.headers.get("X-Share-Id")
    plan.retry_after = response.headers.get("Retry-After")
    error = orjson.loads(payload).get("error") if payload.startswith(b'{"error"') else None
    plan.code = error["code"] if error else None


async def leaves(gw: Gateway, plan: Planned) -> None:
    """Send the whole request on a socket of its own, and hang up before the answer: at once,
    or once the partner has the share (or the gateway answered, when it refused it)."""
    body = orjson.dumps(body_of(plan))
    lines = [f"POST {target_of(plan)} HTTP/1.1", f"Host: 127.0.0.1:{gw.client.server.port}"]
    lines += [f"{name}: {value}" for name, value in headers_of(gw, plan).items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.server.port)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    if plan.client == "gone_after_forward":
        forwarded = asyncio.ensure_future(plan.arrived.wait())
        answered = asyncio.ensure_future(reader.read(1))
        _, pending = await asyncio.wait({forwarded, answered}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def run(gw: Gateway, plans: list[Planned]) -> None:
    turns = asyncio.Semaphore(AT_ONCE)

    async def one(plan: Planned) -> None:
        async with turns:
            await (waits(gw, plan) if plan.client == "waits" else leaves(gw, plan))

    await asyncio.gather(*(one(plan) for plan in plans))
    # A caller that left does not wait for its share: the gateway finishes it on its own.
    for _ in range(500):
        if gw.runtime.shares_in_progress == 0:
            break
        await asyncio.sleep(0.02)
    assert gw.runtime.shares_in_progress == 0


# --- the reconciliation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    partner: str
    share_id: str
    plan: Planned
    request: RawRequest


def receipts(upstreams: dict[str, RawPartner], plans: dict[str, Planned]) -> Iterator[Receipt]:
    for partner, fake in upstreams.items():
        for request in fake.requests:
            [share_id] = request.header_values("X-Share-Id")
            tag = orjson.loads(request.body)["meta"]["tag"]
            yield Receipt(partner, share_id, plans[tag], request)


def leaf_paths(value: Any, at: str = "") -> set[str]:
    """The generic paths of every scalar in `value`, as a record names them (`items[].amount`);
    an empty object or array holds none."""
    if isinstance(value, dict):
        return set().union(*(leaf_paths(v, f"{at}.{k}" if at else k) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(leaf_paths(v, f"{at}[]") for v in value))
    return {at}


def fields_received(request: RawRequest) -> set[str]:
    """What the partner got, named as the record names what was sent: `meta.**` is one field
    however much it holds, and each query parameter is `query.<name>`."""
    paths = {
        "meta.**" if p.startswith("meta.") else p for p in leaf_paths(orjson.loads(request.body))
    }
    target = request.head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
    return paths | {f"query.{name}" for name, _ in parse_qsl(urlsplit(target).query)}


def cli(gw: Gateway, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """A `share-gateway` command run in-process, and its JSON output."""
    args = build_parser().parse_args([*argv, "--format", "json"])
    capsys.readouterr()  # the gateway's own log lines so far
    code = args.handler(args, gw.runtime.settings)
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("seed", SEEDS)
async def test_what_partners_received_matches_the_share_log(
    make_gateway: GatewayFactory,
    upstreams: dict[str, RawPartner],
    capsys: pytest.CaptureFixture[str],
    seed: int,
) -> None:
    plans = plan_run(seed)
    by_tag = {plan.tag: plan for plan in plans}
    fakes: dict[str, FakePartner] = dict(upstreams)
    # The production server: callers that leave meet its own connection handling.
    gw = await make_gateway(
        [partner_contract(p) for p in PARTNERS], durable_log=True, upstreams=fakes
    )
    registry = gw.runtime.terms.registry
    assert isinstance(registry, ConsentRegistry)
    granted = datetime.now(UTC) - timedelta(hours=1)
    for subject in sorted(CONSENTED):
        registry.grant(subject, BROKER, "credit_assessment", granted, f"C-{subject}")
    for fake in upstreams.values():
        fake.script = acting_on(by_tag)

    await run(gw, plans)
    # Every outcome is written once the gateway is closed.
    await gw.client.close()
    await close_runtime(gw.runtime)

    rows = {
        row["share_id"]: row for row in review.query(gw.runtime.settings.share_log.path, limit=None)
    }
    got = list(receipts(upstreams, by_tag))
    received = {r.share_id for r in got}
    assert len(received) == len(got), "a share reached its partner twice"

    # No receipt without a record of it as shared, naming that partner, what it got, and whom
    # it was about.
    key = gw.runtime.subject_key
    for receipt in got:
        row = rows.get(receipt.share_id)
        assert row is not None, f"{receipt.plan.tag}: received without a record"
        assert (row["decision"], row["partner"]) == ("shared", receipt.partner)
        assert receipt.plan.partner == receipt.partner
        assert row["fields_sent"] == sorted(fields_received(receipt.request)), receipt.plan.tag
        assert row["bytes_sent"] == len(receipt.request.body)
        assert row["subject_refs"] == [subject_ref(key, receipt.plan.subject)]
        assert receipt.plan.refusal() is None

    # Every request got exactly one record, whether its caller waited for the answer or not.
    assert len(rows) == len(plans)

    # Every share reached its partner once (each partner listens), and its outcome says what the
    # partner did with it; none is left open.
    by_share = {r.share_id: r for r in got}
    for share_id, row in rows.items():
        if row["decision"] != "shared":
            assert row["decision"] == "denied", row
            assert share_id not in received, f"{row['reason']}: refused, yet received"
            assert (row["fields_sent"], row["bytes_sent"]) == ([], 0)
            continue
        if row["partner"] == OFFLINE:
            # Refused before a byte went out: the share log says it never reached the partner.
            assert (row["outcome"], row["upstream_status"], row["bytes_received"]) == (
                "error",
                None,
                0,
            )
            continue
        assert share_id in received, "recorded as shared, never received"
        receipt = by_share[share_id]
        outcome, status = OUTCOMES[receipt.plan.behaviour]
        assert (row["outcome"], row["upstream_status"]) == (outcome, status), receipt.plan
        delivered = ANSWERS.get(receipt.plan.behaviour)
        assert row["bytes_received"] == (len(delivered[1]) if delivered else 0)

    # What each caller that waited was told agrees with the log and the partner.
    for plan in plans:
        if plan.client != "waits":
            continue
        assert plan.share_id is not None
        row = rows[plan.share_id]
        refused = plan.refusal()
        if refused is None and plan.code == "quota_exceeded":
            refused = (429, "quota_exceeded")
            assert plan.retry_after is not None
        if refused is not None:
            assert (plan.status, plan.code) == refused, plan
            assert (row["decision"], row["reason"]) == ("denied", refused[1])
            assert plan.share_id not in received
            # Refused once its body was read, it was about its subject all the same; refused
            # before its route was known, about no one.
            about = refused[1] in ("consent_required", "quota_exceeded")
            assert row["subject_refs"] == ([subject_ref(key, plan.subject)] if about else [])
        else:
            if plan.partner == OFFLINE:
                assert (plan.status, plan.code) == (502, "upstream_error"), plan
            else:
                assert (plan.status, plan.code) == ANSWERED[plan.behaviour], plan
                assert by_share[plan.share_id].plan is plan

    # The day's cap: the bureau was sent no more records than it allows, every share beyond
    # them was refused, and the cap was reached.
    bureau = [row for row in rows.values() if row["partner"] == BUREAU]
    sent = sum(row["records"] for row in bureau if row["decision"] == "shared")
    over = [row for row in bureau if row["reason"] == "quota_exceeded"]
    assert over, "the run never reached the bureau's cap"
    assert sent == DAILY_CAP
    assert all(row["decision"] == "denied" for row in over)

    # Shares to the broker went out on their subjects' grants only.
    for receipt in got:
        if receipt.partner == BROKER:
            basis = rows[receipt.share_id]["consent_basis"]
            assert basis == [f"registry:C-{receipt.plan.subject}"]

    # The log is sound, and holds one outcome for each share.
    code, report = cli(gw, capsys, "logs", "verify")
    assert (code, report["ok"], report["problem"]) == (0, True, None)
    shared = [row for row in rows.values() if row["decision"] == "shared"]
    assert (report["shares"], report["outcomes"]) == (len(rows), len(shared))

    # An access request names exactly the shares, and the partners, that received data about
    # the person; a share listed with the outcome `error` never reached its partner.
    offline = 0
    for subject in SUBJECTS:
        code, listed = cli(gw, capsys, "logs", "subject", subject)
        assert code == 0
        expected = {(r.share_id, r.partner) for r in got if r.plan.subject == subject}
        reached = {(row["share_id"], row["partner"]) for row in listed if row["outcome"] != "error"}
        assert reached == expected
        unreached = [row for row in listed if row["outcome"] == "error"]
        assert {row["partner"] for row in unreached} <= {OFFLINE}
        offline += len(unreached)
    assert offline == sum(row["partner"] == OFFLINE for row in shared)
