"""Tests for gateway.sharelog.store: the writer, durability, failure, recovery, pseudonymity."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import structlog
from conftest import GatewayFactory, killed_at, tamper
from structlog.testing import capture_logs

from gateway.errors import ShareLogUnavailable, StartupError
from gateway.keys import keyed_hash, subject_ref_key
from gateway.logconfig import STDOUT, configure_logging
from gateway.metrics import REGISTRY
from gateway.settings import ShareLogSettings
from gateway.sharelog import MemoryShareLog, ShareOutcome, ShareRecord, ShareSink, schema
from gateway.sharelog import printer as printer_module
from gateway.sharelog import store as store_module
from gateway.sharelog.chain import SHARE_FIELDS, format_ts
from gateway.sharelog.ledger import Ledger, PruneRefused, PruneUnverified
from gateway.sharelog.review import query, verify
from gateway.sharelog.store import ShareLog

KEY = b"test-master-key-" * 3
SUBJECT_KEY = subject_ref_key(KEY)
T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
BOUND_S = 5.0  # far above any wait here: reaching it means something hung


def ref(subject_id: str) -> str:
    return keyed_hash(SUBJECT_KEY, subject_id)


def make_record(
    share_id: str,
    *,
    decision: str = "shared",
    reason: str | None = None,
    partner: str | None = "acme",
    ts: datetime = T0,
    subjects: tuple[str, ...] = ("user-1",),
    **fields: Any,
) -> ShareRecord:
    values: dict[str, Any] = {
        "share_id": share_id,
        "ts": ts,
        "partner": partner,
        "contract_id": "DPA-1" if partner else None,
        "contract_version": 3 if partner else None,
        "contract_sha256": "c0" * 32 if partner else None,
        "caller": "billing",
        "purpose": "credit_assessment",
        "method": "POST",
        "route": "POST /v1/assess",
        "decision": decision,
        "reason": reason or ("shared" if decision == "shared" else "scope_denied"),
        "fields_sent": ("applicant.name", "applicant.income") if decision == "shared" else (),
        "fields_stripped": ("applicant.phone",) if decision == "shared" else (),
        "categories_sent": ("identity.name", "financial.income") if decision == "shared" else (),
        "records": 1 if decision == "shared" else 0,
        "subject_refs": tuple(ref(s) for s in subjects),
        "bytes_sent": 57 if decision == "shared" else 0,
    }
    values.update(fields)
    return ShareRecord(**values)


def delivered(share_id: str, status: int = 200) -> ShareOutcome:
    return ShareOutcome(share_id, "delivered", status, 21, 12.5)


def log_settings(tmp_path: Path, **overrides: Any) -> ShareLogSettings:
    values: dict[str, Any] = {"path": tmp_path / "var" / "share-log.sqlite", "stdout": False}
    values.update(overrides)
    return ShareLogSettings(**values)


class Commits:
    """Counts the COMMITs it is shown (with `watching`)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, sql: str) -> None:
        if sql == "COMMIT":
            self.count += 1


def watching(before: Callable[[str], None]) -> Callable[[Path], sqlite3.Connection]:
    """A `connect` for the share log whose connections call `before(sql)` first on each
    `execute`: to count statements, or to make one fail."""

    class Watched(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            before(sql)
            return super().execute(sql, *args)

    def connect(path: Path) -> sqlite3.Connection:
        return sqlite3.connect(path, factory=Watched, check_same_thread=False)

    return connect


class Events:
    """A structlog-shaped logger that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append(("warning", event, kw))

    def error(self, event: str, *args: Any, **kw: Any) -> None:
        self.events.append(("error", event, kw))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [kw for _, name, kw in self.events if name == event]


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[ShareLog]:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    yield share_log
    await share_log.close()


# --- one record per decision ----------------------------------------------------------------


async def test_every_decision_type_is_one_record_and_the_outcome_is_joined(
    log: ShareLog,
) -> None:
    await log.record(make_record("s-shared"))
    await log.record_outcome(delivered("s-shared", 201))
    await log.record(make_record("s-denied", decision="denied", reason="purpose_denied"))
    await log.record(
        make_record("s-early", decision="denied", reason="invalid_token", partner=None)
    )
    await log.record(make_record("s-error", decision="error", reason="internal_error"))

    rows = query(log.path, limit=None)
    assert [(r["share_id"], r["decision"], r["reason"]) for r in rows] == [
        ("s-shared", "shared", "shared"),
        ("s-denied", "denied", "purpose_denied"),
        ("s-early", "denied", "invalid_token"),
        ("s-error", "error", "internal_error"),
    ]
    shared = rows[0]
    assert (shared["outcome"], shared["upstream_status"], shared["latency_ms"]) == (
        "delivered",
        201,
        12.5,
    )
    assert shared["bytes_received"] == 21
    assert shared["fields_sent"] == ["applicant.name", "applicant.income"]
    assert shared["subject_refs"] == [ref("user-1")]
    assert [r["outcome"] for r in rows[1:]] == [None, None, None]
    assert rows[2]["partner"] is None


async def test_every_field_of_a_record_reads_back_as_it_was_made(log: ShareLog) -> None:
    # Each field distinct from every other, so none can stand in for another.
    made = make_record(
        "s-1",
        ts=T0 + timedelta(microseconds=123_457),
        partner="acme",
        contract_id="DPA-7",
        contract_version=4,
        contract_sha256="5e" * 32,
        caller="billing-batch",
        purpose="credit_assessment",
        method="PUT",
        route="PUT /v1/assess/{id}",
        fields_sent=("applicant.name",),
        fields_stripped=("applicant.phone",),
        fields_transformed=("applicant.email",),
        categories_sent=("identity.name",),
        pii_redactions={"phone": 2},
        records=3,
        subjects=("user-1", "user-2"),
        bytes_sent=58,
        upstream_location="eu-west-1",
        cross_border_mechanism="scc-2021",
        consent_basis=("consent-9",),
    )
    await log.record(made)
    [row] = query(log.path)
    assert {name: row[name] for name in SHARE_FIELDS} == {
        **{name: getattr(made, name) for name in SHARE_FIELDS},
        "ts": "2025-03-01T09:30:00.123457Z",
        "fields_sent": ["applicant.name"],
        "fields_stripped": ["applicant.phone"],
        "fields_transformed": ["applicant.email"],
        "categories_sent": ["identity.name"],
        "subject_refs": [ref("user-1"), ref("user-2")],
        "consent_basis": ["consent-9"],
    }
    assert verify(log.path, KEY).ok


async def test_a_share_without_an_outcome_yet_reads_as_pending(log: ShareLog) -> None:
    await log.record(make_record("s-1"))
    [row] = query(log.path)
    assert row["outcome"] == "pending"


@pytest.mark.parametrize("durability", ["batched", "strict"])
async def test_record_returns_only_once_the_record_is_committed(
    tmp_path: Path, durability: str
) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path, durability=durability), KEY)
    try:
        await share_log.record(make_record("s-1"))
        # Another connection (another process, in real life) already sees it.
        conn = sqlite3.connect(share_log.path)
        try:
            assert conn.execute("SELECT share_id FROM shares").fetchall() == [("s-1",)]
        finally:
            conn.close()
    finally:
        await share_log.close()


async def test_a_submitted_outcome_shares_the_next_records_commit(tmp_path: Path) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    try:
        await share_log.record(make_record("s-1"))
        share_log.submit_outcome(delivered("s-1"))  # nobody waits for it...
        await share_log.record(make_record("s-2"))  # ...and it is committed with this record
        rows = {r["share_id"]: r for r in query(share_log.path, limit=None)}
        assert rows["s-1"]["outcome"] == "delivered"
        assert rows["s-2"]["outcome"] == "pending"
        share_log.submit_outcome(delivered("s-2"))
    finally:
        await share_log.close()  # drains what was submitted
    rows = {r["share_id"]: r for r in query(share_log.path, limit=None)}
    assert rows["s-2"]["outcome"] == "delivered"
    with pytest.raises(ShareLogUnavailable):
        share_log.submit_outcome(delivered("s-3"))


async def test_the_outcome_is_a_second_entry_linked_to_its_share(log: ShareLog) -> None:
    await log.record(make_record("s-1"))
    await log.record_outcome(ShareOutcome("s-1", "timeout", None, 0, 5000.0))
    conn = sqlite3.connect(log.path)
    try:
        [(share_seq,)] = conn.execute("SELECT seq FROM shares").fetchall()
        [(seq, share_id, linked, outcome)] = conn.execute(
            "SELECT seq, share_id, share_seq, outcome FROM outcomes"
        ).fetchall()
        pending = conn.execute("SELECT COUNT(*) FROM pending_outcomes").fetchone()[0]
    finally:
        conn.close()
    assert (share_id, linked, outcome) == ("s-1", share_seq, "timeout")
    assert seq == share_seq + 1
    assert pending == 0


async def test_concurrent_records_are_group_committed(tmp_path: Path) -> None:
    commits = Commits()
    connect = watching(commits)

    share_log = await ShareLog.open(log_settings(tmp_path), KEY, connect=connect)
    before = commits.count
    await asyncio.gather(*(share_log.record(make_record(f"s-{i}")) for i in range(200)))
    batches = commits.count - before
    await share_log.close()
    assert len(query(share_log.path, limit=None)) == 200
    assert 1 <= batches <= 100
    assert verify(share_log.path, KEY).ok


async def test_a_record_whose_request_was_cancelled_stands_and_its_batch_is_answered(
    log: ShareLog,
) -> None:
    # The client went away while its record waited for the commit it shares with another.
    cancelled = asyncio.ensure_future(log.record(make_record("s-1")))
    answered = asyncio.ensure_future(log.record(make_record("s-2")))
    await asyncio.sleep(0)  # both are queued for one commit
    cancelled.cancel()
    await asyncio.wait_for(answered, BOUND_S)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert [r["share_id"] for r in query(log.path)] == ["s-1", "s-2"]


@pytest.mark.parametrize("held", [False, True], ids=["free", "held-by-another-process"])
@pytest.mark.parametrize("durability", ["batched", "strict"])
async def test_records_made_together_are_chained_in_the_order_they_were_made(
    tmp_path: Path, durability: str, held: bool
) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path, durability=durability), KEY)
    other = sqlite3.connect(share_log.path, isolation_level=None)
    try:
        if held:  # `logs prune`, say: the loop hands its batch to the writer, which waits
            other.execute("BEGIN IMMEDIATE")
        made = asyncio.gather(*(share_log.record(make_record(f"s-{i}")) for i in range(5)))
        if held:
            await asyncio.sleep(0.05)  # the batch is queued meanwhile
            other.execute("COMMIT")
        await made
    finally:
        other.close()
        await share_log.close()
    assert [r["share_id"] for r in query(share_log.path, limit=None)] == [
        f"s-{i}" for i in range(5)
    ]
    assert verify(share_log.path, KEY).ok


async def test_an_outcome_is_dated_when_it_was_reported_not_when_it_was_committed(
    tmp_path: Path,
) -> None:
    # The outcome's date places the share in or out of a cap's window on the next start.
    share_log = await ShareLog.open(log_settings(tmp_path, batch_interval_ms=1000), KEY)
    try:
        await share_log.record(make_record("s-1"))
        before = datetime.now(UTC)
        share_log.submit_outcome(delivered("s-1"))
        after = datetime.now(UTC)
        await asyncio.sleep(0.01)  # the commit that takes it comes strictly later
        await share_log.record(make_record("s-2"))
    finally:
        await share_log.close()
    rows = {r["share_id"]: r for r in query(share_log.path, limit=None)}
    assert rows["s-1"]["outcome"] == "delivered"
    assert format_ts(before) <= rows["s-1"]["outcome_ts"] <= format_ts(after)


async def test_an_outcome_rides_with_the_next_record_or_goes_after_the_batch_interval(
    tmp_path: Path,
) -> None:
    commits = Commits()
    connect = watching(commits)

    settings = log_settings(tmp_path, batch_interval_ms=200)
    share_log = await ShareLog.open(settings, KEY, connect=connect)
    try:
        await share_log.record(make_record("s-1"))
        before = commits.count
        share_log.submit_outcome(ShareOutcome("s-1", "delivered", 200, 10, 1.0))
        await asyncio.sleep(0.02)
        # Not committed on its own at once: that commit would come before the caller's answer.
        assert commits.count == before
        waits = REGISTRY.get_sample_value("share_gateway_share_log_write_seconds_count")
        await share_log.record(make_record("s-2"))
        assert commits.count == before + 1  # the outcome shared s-2's commit
        # Only the record a request waited for counts as a wait, not the outcome riding along.
        after = REGISTRY.get_sample_value("share_gateway_share_log_write_seconds_count")
        assert (after or 0) - (waits or 0) == 1
        rows = {r["share_id"]: r for r in query(share_log.path)}
        assert rows["s-1"]["outcome"] == "delivered"

        share_log.submit_outcome(ShareOutcome("s-2", "delivered", 200, 10, 1.0))
        async with asyncio.timeout(5):
            while commits.count == before + 1:  # noqa: ASYNC110 - waits on a timer, not an event
                await asyncio.sleep(0.02)
        rows = {r["share_id"]: r for r in query(share_log.path)}
        assert rows["s-2"]["outcome"] == "delivered"
    finally:
        await share_log.close()


@pytest.mark.parametrize(("durability", "level"), [("batched", 1), ("strict", 2)])
async def test_durability_mode_sets_how_each_commit_is_synced(
    tmp_path: Path, durability: str, level: int
) -> None:
    connections: list[sqlite3.Connection] = []

    def connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        connections.append(conn)
        return conn

    share_log = await ShareLog.open(
        log_settings(tmp_path, durability=durability), KEY, connect=connect
    )
    try:
        conn = connections[-1]
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await share_log.close()


# --- pseudonymous by construction ------------------------------------------------------------

PERSON: dict[str, Any] = {
    "applicant": {
        "name": "张伟",
        "id_number": "110101199003071234",
        "phone": "13800138000",
        "email": "zhang.wei@example.cn",
        "income": 48213.75,
    }
}
PERSONAL_VALUES = ["张伟", "110101199003071234", "13800138000", "zhang.wei@example.cn", "48213.75"]


def record_for(document: dict[str, Any], share_id: str) -> ShareRecord:
    """What the pipeline derives from a body: paths, categories, counts, keyed hashes."""
    applicant = document["applicant"]
    return make_record(
        share_id,
        fields_sent=tuple(f"applicant.{k}" for k in ("name", "id_number", "income")),
        fields_stripped=("applicant.phone", "applicant.email"),
        fields_transformed=("applicant.id_number",),
        categories_sent=("identity.name", "identity.id_number", "financial.income"),
        pii_redactions={"phone": 1, "email": 1},
        subject_refs=(ref(applicant["id_number"]),),
        consent_basis=("consent-7f3a",),
    )


async def test_the_store_and_its_json_lines_hold_no_personal_values(tmp_path: Path) -> None:
    events = Events()
    settings = log_settings(tmp_path, stdout=True)
    share_log = await ShareLog.open(settings, KEY, logger=events)
    await share_log.record(record_for(PERSON, "s-1"))
    await share_log.record_outcome(delivered("s-1"))
    await share_log.record(record_for(PERSON, "s-2"))  # left open: closed as unknown

    def files() -> bytes:
        return b"".join(p.read_bytes() for p in sorted(settings.path.parent.iterdir()))

    while_open = files()
    assert settings.path.with_name("share-log.sqlite-wal").exists()
    await share_log.close()
    after_close = files()
    lines = repr(events.events).encode()
    for value in PERSONAL_VALUES:
        for blob in (while_open, after_close, lines):
            assert value.encode() not in blob
            assert value.encode("utf-16-le") not in blob
    # ...while what is needed to answer for the share is there.
    assert b"applicant.id_number" in after_close
    assert ref(PERSON["applicant"]["id_number"]).encode() in after_close


def test_a_raw_subject_id_is_refused_before_it_reaches_the_log() -> None:
    with pytest.raises(ValueError, match="keyed hashes"):
        make_record("s-1", subject_refs=("110101199003071234",))


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_record("s-1", ts=datetime(2025, 3, 1, 9, 30))


def test_a_decision_or_outcome_outside_the_known_ones_is_refused() -> None:
    # Recovery closes only `shared` records as `unknown`, and reviews count by these words:
    # one spelled otherwise would be a share the log can no longer account for.
    with pytest.raises(ValueError, match="decision must be one of"):
        make_record("s-1", decision="approved")
    with pytest.raises(ValueError, match="outcome must be one of"):
        ShareOutcome("s-1", "sent", 200, 21, 12.5)  # type: ignore[arg-type]


async def test_each_row_is_one_json_line_event_with_the_same_fields(tmp_path: Path) -> None:
    events = Events()
    share_log = await ShareLog.open(log_settings(tmp_path, stdout=True), KEY, logger=events)
    await share_log.record(make_record("s-1"))
    await share_log.record_outcome(delivered("s-1"))
    await share_log.close()

    [share] = events.named("share_recorded")
    [outcome] = events.named("share_outcome_recorded")
    [row] = query(share_log.path)
    for name in ("share_id", "partner", "purpose", "decision", "reason", "fields_sent"):
        assert share[name] == row[name]
    assert (share["seq"], share["hash"], share["prev_hash"]) == (
        row["seq"],
        row["hash"],
        row["prev_hash"],
    )
    assert (outcome["share_id"], outcome["outcome"], outcome["share_seq"]) == (
        "s-1",
        "delivered",
        row["seq"],
    )
    reasons = [c["reason"] for c in events.named("share_log_checkpointed")]
    assert reasons == ["open", "close"]


async def test_committed_entries_are_printed_soon_in_chain_order(tmp_path: Path) -> None:
    events = Events()
    share_log = await ShareLog.open(log_settings(tmp_path, stdout=True), KEY, logger=events)
    try:
        await asyncio.gather(*(share_log.record(make_record(f"s-{i}")) for i in range(20)))
        # Printed by the writer a moment later, while the log stays open.
        async with asyncio.timeout(BOUND_S):
            while len(events.named("share_recorded")) < 20:  # noqa: ASYNC110 - another thread
                await asyncio.sleep(0.01)
        seqs = [e["seq"] for e in events.named("share_recorded")]
        assert seqs == sorted(seqs)
        assert {e["share_id"] for e in events.named("share_recorded")} == {
            f"s-{i}" for i in range(20)
        }
    finally:
        await share_log.close()


async def test_without_a_logger_entries_are_json_lines_on_stdout(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    with capture_logs() as warnings:  # the gateway's own events, rendered as it configures
        share_log = await ShareLog.open(log_settings(tmp_path, stdout=True), KEY)
        await share_log.record(make_record("s-1"))
        share_log.submit_outcome(ShareOutcome("s-1", "delivered", 200, 12, 3.0))
        await share_log.close()
    assert [w["event"] for w in warnings] == ["share_log_created"]
    lines = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    by_event = {e: [line for line in lines if line["event"] == e] for e in _EVENT_NAMES}
    [share] = by_event["share_recorded"]
    [outcome] = by_event["share_outcome_recorded"]
    assert (share["share_id"], outcome["share_id"], outcome["outcome"]) == ("s-1",) * 2 + (
        "delivered",
    )
    assert outcome["share_seq"] == share["seq"]
    assert share["level"] == "info"
    assert share["timestamp"].endswith("Z")
    # The mac goes out with checkpoints only: a signed anchor to hold outside the file.
    assert "mac" not in share
    assert "kind" not in share
    checkpoints = by_event["share_log_checkpointed"]
    assert [c["reason"] for c in checkpoints] == ["open", "close"]
    assert all(len(c["mac"]) == 64 for c in checkpoints)


_EVENT_NAMES = ("share_recorded", "share_outcome_recorded", "share_log_checkpointed")


class _BrokenBuffer:
    def write(self, data: bytes) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


class _BrokenStdout:
    buffer = _BrokenBuffer()


async def test_a_stdout_that_went_away_loses_lines_not_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost_before = STDOUT.lost_lines
    configure_logging()  # as `serve` does: the gateway's own events go to stdout too
    share_log = await ShareLog.open(log_settings(tmp_path, stdout=True), KEY)
    monkeypatch.setattr(sys, "stdout", _BrokenStdout())  # the log collector went away
    try:
        for share_id in ("s-1", "s-2", "s-3"):
            await share_log.record(make_record(share_id))
            await asyncio.sleep(0.1)  # the writer prints (and fails) between records
        assert share_log.writable()
    finally:
        await share_log.close()
        structlog.reset_defaults()
    assert [r["share_id"] for r in query(share_log.path)] == ["s-1", "s-2", "s-3"]
    assert STDOUT.lost_lines - lost_before >= 3  # counted (and noted on stderr)


async def test_an_outcome_whose_commit_failed_goes_with_the_next_one(tmp_path: Path) -> None:
    share_log = await ShareLog.open(
        log_settings(tmp_path), KEY, busy_timeout_s=0.05, retry_interval_s=0.05
    )
    other = sqlite3.connect(share_log.path, isolation_level=None)
    try:
        await share_log.record(make_record("s-1"))  # committed: the share goes to its partner
        other.execute("BEGIN IMMEDIATE")  # `logs prune` holds the log past the busy timeout
        share_log.submit_outcome(ShareOutcome("s-1", "delivered", 200, 10, 5.0))
        async with asyncio.timeout(BOUND_S):
            while share_log.writable():  # noqa: ASYNC110 - the writer's commit fails
                await asyncio.sleep(0.01)
        other.execute("COMMIT")
        async with asyncio.timeout(BOUND_S):
            while not share_log.writable():  # noqa: ASYNC110 - then it resumes
                await asyncio.sleep(0.01)
    finally:
        other.close()
        await share_log.close()
    [row] = query(share_log.path)
    assert row["outcome"] == "delivered"  # not `unknown` at close
    assert verify(share_log.path, KEY).ok


async def test_a_held_outcome_survives_a_retry_that_fails_while_adding_it(
    tmp_path: Path,
) -> None:
    faults = {"COMMIT": 0, "SELECT p.share_seq FROM pending_outcomes": 0}

    def fail(sql: str) -> None:
        for start, left in faults.items():
            if sql.startswith(start) and left:
                faults[start] -= 1
                raise sqlite3.OperationalError("disk I/O error")

    connect = watching(fail)

    share_log = await ShareLog.open(
        log_settings(tmp_path), KEY, retry_interval_s=0.05, connect=connect
    )
    try:
        await share_log.record(make_record("s-1"))  # committed: the share goes out
        # The outcome's commit fails, and so does the first retry's lookup of its share.
        faults.update({"COMMIT": 1, "SELECT p.share_seq FROM pending_outcomes": 1})
        share_log.submit_outcome(ShareOutcome("s-1", "delivered", 200, 10, 5.0))
        async with asyncio.timeout(BOUND_S):
            while any(faults.values()) or not share_log.writable():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await share_log.close()
    [row] = query(share_log.path)
    assert row["outcome"] == "delivered"


def failing_commits() -> tuple[dict[str, int], Callable[[Path], sqlite3.Connection]]:
    """A `connect` whose next `faults["commits"]` appends fail with an I/O error as they move
    the head (opening the log again, which commits too, is left alone)."""
    faults = {"commits": 0}

    def fail(sql: str) -> None:
        if sql.startswith("UPDATE head") and faults["commits"]:
            faults["commits"] -= 1
            raise sqlite3.OperationalError("disk I/O error")

    return faults, watching(fail)


async def _log_that_never_retries_first(tmp_path: Path) -> tuple[ShareLog, dict[str, int]]:
    """A log whose commits `failing_commits` fails, with no retry of its own within a test."""
    faults, connect = failing_commits()
    share_log = await ShareLog.open(
        log_settings(tmp_path), KEY, retry_interval_s=60.0, connect=connect
    )
    return share_log, faults


async def _fail_an_outcome(share_log: ShareLog, faults: dict[str, int], commits: int) -> None:
    """Record s-1, then have the commit of its submitted outcome fail (and `commits - 1` more)."""
    await share_log.record(make_record("s-1"))  # committed: the share goes to its partner
    faults["commits"] = commits
    share_log.submit_outcome(delivered("s-1"))
    async with asyncio.timeout(BOUND_S):
        while share_log.writable():  # noqa: ASYNC110 - polls state the failed commit sets
            await asyncio.sleep(0.01)


async def test_a_held_outcome_survives_a_record_whose_commit_fails_too(tmp_path: Path) -> None:
    # No retry of its own before the records come: they bring the held outcome along.
    share_log, faults = await _log_that_never_retries_first(tmp_path)
    try:
        await _fail_an_outcome(share_log, faults, commits=2)
        with pytest.raises(ShareLogUnavailable):
            await share_log.record(make_record("s-2"))  # carries the outcome; fails again
        await share_log.record(make_record("s-3"))
        share_log.submit_outcome(delivered("s-3"))
    finally:
        await share_log.close()
    outcomes = {r["share_id"]: r["outcome"] for r in query(share_log.path, limit=None)}
    assert outcomes == {"s-1": "delivered", "s-3": "delivered"}  # s-1 not `unknown`
    assert verify(share_log.path, KEY).ok


async def test_the_commit_that_ends_a_failure_holds_a_resume_checkpoint(tmp_path: Path) -> None:
    share_log, faults = await _log_that_never_retries_first(tmp_path)
    try:
        await _fail_an_outcome(share_log, faults, commits=1)
        await share_log.record(make_record("s-2"))  # the writer takes it: no retry came first
        assert share_log.writable()
    finally:
        await share_log.close()
    conn = sqlite3.connect(share_log.path)
    try:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM checkpoints ORDER BY seq")]
    finally:
        conn.close()
    # The seal that shows where writing stopped and began again, as a retry would have made.
    assert reasons == ["open", "resume", "close"]
    assert verify(share_log.path, KEY).ok


async def test_a_held_outcome_the_log_cannot_store_is_dropped_alone_when_writing_resumes(
    tmp_path: Path,
) -> None:
    events = Events()
    faults, connect = failing_commits()
    share_log = await ShareLog.open(
        log_settings(tmp_path), KEY, logger=events, retry_interval_s=60.0, connect=connect
    )
    try:
        await share_log.record(make_record("s-1"))
        await share_log.record(make_record("s-2"))
        faults["commits"] = 2
        # Submitted together, committed together: the commit fails before the bad one is
        # found out, so both are held.
        share_log.submit_outcome(ShareOutcome("s-1", "delivered", 200, 21, "12.5"))  # type: ignore[arg-type]
        share_log.submit_outcome(delivered("s-2"))
        async with asyncio.timeout(BOUND_S):
            while share_log.writable():  # noqa: ASYNC110 - polls state the failed commit sets
                await asyncio.sleep(0.01)
        with pytest.raises(ShareLogUnavailable):
            await share_log.record(make_record("s-3"))  # carries what was held; fails again
        await share_log.record(make_record("s-4"))
    finally:
        await share_log.close()
    outcomes = {r["share_id"]: r["outcome"] for r in query(share_log.path, limit=None)}
    assert outcomes == {"s-1": "unknown", "s-2": "delivered", "s-4": "unknown"}
    [invalid] = events.named("share_record_invalid")  # dropped once, not held again
    assert "latency_ms" in invalid["error"]
    assert verify(share_log.path, KEY).ok


async def test_outcomes_held_past_the_bound_are_dropped_oldest_first_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_HELD_OUTCOMES_MAX", 2)
    events = Events()
    faults, connect = failing_commits()
    share_log = await ShareLog.open(
        log_settings(tmp_path), KEY, logger=events, retry_interval_s=60.0, connect=connect
    )
    try:
        for share_id in ("s-1", "s-2", "s-3"):
            await share_log.record(make_record(share_id))
        faults["commits"] = 1
        for share_id in ("s-1", "s-2", "s-3"):
            share_log.submit_outcome(delivered(share_id))
        async with asyncio.timeout(BOUND_S):
            while share_log.writable():  # noqa: ASYNC110 - polls state the failed commit sets
                await asyncio.sleep(0.01)
        await share_log.record(make_record("s-4"))  # carries the two kept
    finally:
        await share_log.close()
    outcomes = {r["share_id"]: r["outcome"] for r in query(share_log.path, limit=None)}
    assert outcomes == {"s-1": "unknown", "s-2": "delivered", "s-3": "delivered", "s-4": "unknown"}
    assert events.named("share_outcomes_dropped") == [{"count": 1}]


async def test_an_outcome_held_after_a_failed_commit_is_written_at_close(tmp_path: Path) -> None:
    share_log, faults = await _log_that_never_retries_first(tmp_path)
    try:
        await _fail_an_outcome(share_log, faults, commits=1)
    finally:
        await share_log.close()  # before any retry: the close takes the held outcome
    [row] = query(share_log.path)
    assert row["outcome"] == "delivered"  # what became of it is known: not `unknown`
    assert verify(share_log.path, KEY).ok


async def test_the_loop_never_opens_the_log_itself(tmp_path: Path) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY, busy_timeout_s=1.0)
    other = sqlite3.connect(share_log.path, isolation_level=None)
    try:
        await share_log.record(make_record("s-1"))
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(ShareLogUnavailable):  # a prune that failed dropped the connection
            await share_log.prune(datetime.now(UTC) - timedelta(days=1200))
        recorded = asyncio.ensure_future(share_log.record(make_record("s-2")))
        turns = 0
        async with asyncio.timeout(0.5):  # a loop opening the log would sit out busy_timeout
            while not share_log._queue.qsize() and turns < 100:
                await asyncio.sleep(0)
                turns += 1
        other.execute("COMMIT")
        await asyncio.wait_for(recorded, BOUND_S)  # the writer took it and wrote it
    finally:
        other.close()
        await share_log.close()
    assert [r["share_id"] for r in query(share_log.path)] == ["s-1", "s-2"]


async def test_lines_a_failing_logger_drops_are_counted_and_later_ones_still_printed(
    tmp_path: Path,
) -> None:
    class FailsOnce(Events):
        def info(self, event: str, *args: Any, **kw: Any) -> None:
            if kw.get("share_id") == "s-1":
                raise RuntimeError("the log collector refused the line")
            super().info(event, *args, **kw)

    events = FailsOnce()
    share_log = await ShareLog.open(log_settings(tmp_path, stdout=True), KEY, logger=events)
    try:
        await share_log.record(make_record("s-1"))
        async with asyncio.timeout(BOUND_S):
            while not events.named("share_log_lines_lost"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await share_log.record(make_record("s-2"))
    finally:
        await share_log.close()
    assert [e["share_id"] for e in events.named("share_recorded")] == ["s-2"]
    assert sum(e["count"] for e in events.named("share_log_lines_lost")) >= 1
    assert [r["share_id"] for r in query(share_log.path)] == ["s-1", "s-2"]


@pytest.mark.parametrize("durability", ["batched", "strict"])
async def test_a_stalled_stdout_never_holds_up_a_record(tmp_path: Path, durability: str) -> None:
    release = threading.Event()

    class StalledStdout(Events):
        def info(self, event: str, *args: Any, **kw: Any) -> None:
            if event == "share_recorded":
                release.wait(BOUND_S)  # a log collector that stopped reading
            super().info(event, *args, **kw)

    events = StalledStdout()
    settings = log_settings(tmp_path, stdout=True, durability=durability)
    share_log = await ShareLog.open(settings, KEY, logger=events)
    try:
        for share_id in ("s-1", "s-2", "s-3"):
            # In strict mode the writer thread commits, and once printed what it committed.
            await asyncio.wait_for(share_log.record(make_record(share_id)), BOUND_S / 2)
            await asyncio.sleep(2 * store_module._PRINT_INTERVAL_S)  # the loop's are handed over
        # The writer thread, which also checkpoints the WAL and retries failed writes, is free.
        long_ago = datetime(2000, 1, 1, tzinfo=UTC)
        await asyncio.wait_for(share_log.prune(long_ago, dry_run=True), BOUND_S / 2)
        assert events.named("share_recorded") == []  # still stuck printing the first
    finally:
        release.set()
        await share_log.close()
    assert [e["share_id"] for e in events.named("share_recorded")] == ["s-1", "s-2", "s-3"]


async def test_lines_a_stalled_stdout_cannot_take_are_lost_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(printer_module, "MAX_WAITING", 4)
    monkeypatch.setattr(store_module, "_PRINT_DRAIN_S", 0.2)
    stalled = threading.Event()
    never = threading.Event()

    class StalledStdout(Events):
        def info(self, event: str, *args: Any, **kw: Any) -> None:
            if event == "share_recorded":
                stalled.set()
                never.wait(BOUND_S)  # a log collector that never reads again
            super().info(event, *args, **kw)

        def error(self, event: str, *args: Any, **kw: Any) -> None:
            super().error(event, *args, **kw)
            if lost() >= 3:
                three_lost.set()

    def lost() -> int:
        return sum(e["count"] for e in events.named("share_log_lines_lost"))

    three_lost = threading.Event()
    events = StalledStdout()
    settings = log_settings(tmp_path, stdout=True, durability="strict")
    share_log = await ShareLog.open(settings, KEY, logger=events)
    await asyncio.wait_for(share_log.record(make_record("s-0")), BOUND_S)
    await asyncio.wait_for(asyncio.to_thread(stalled.wait), BOUND_S)  # printing s-0, stuck
    for i in range(1, 7):  # one line each: with s-0's, four wait, three are lost
        await asyncio.wait_for(share_log.record(make_record(f"s-{i}")), BOUND_S)
    # A record is answered before the writer hands its line over: the last may still come.
    assert await asyncio.to_thread(three_lost.wait, BOUND_S)
    assert lost() == 3
    started = time.monotonic()
    await asyncio.wait_for(share_log.close(), BOUND_S / 2)  # waits 0.2 s, not for stdout
    assert time.monotonic() - started < BOUND_S / 2
    # Closing wrote seven `unknown` outcomes and a checkpoint, with no room to wait; the four
    # waiting were lost when the log closed.
    assert lost() == 3 + (7 + 1) + 4
    printing = [t for t in threading.enumerate() if t.name == "share-log-printer"]
    never.set()
    for thread in printing:
        thread.join(BOUND_S)
    # Stdout taking lines again prints none of those counted lost: s-0 was being written.
    assert [e["share_id"] for e in events.named("share_recorded")] == ["s-0"]
    assert lost() == 3 + (7 + 1) + 4
    assert [r["share_id"] for r in query(share_log.path)] == [f"s-{i}" for i in range(7)]


class _StalledBuffer:
    """A stdout whose reader stopped reading: a write waits until `release` is set."""

    def __init__(self) -> None:
        self.writing = threading.Event()
        self.release = threading.Event()
        self.written: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writing.set()
        self.release.wait(BOUND_S)
        self.written.append(data)
        return len(data)

    def flush(self) -> None:
        pass


async def test_lines_a_stalled_stdout_cannot_take_without_a_logger_are_counted_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(printer_module, "MAX_WAITING", 4)
    monkeypatch.setattr(store_module, "_PRINT_DRAIN_S", 0.2)
    monkeypatch.setattr("gateway.logconfig.LOST_NOTE_INTERVAL_S", 0.0)  # every loss is noted
    stalled = _StalledBuffer()
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(buffer=stalled))
    lost_before = STDOUT.lost_lines

    def notes() -> list[str]:
        return capsys.readouterr().err.splitlines()

    def note(lost: int) -> str:
        return (
            f"stdout_failed: {lost_before + lost} log lines lost so far "
            "(the share log's lines waited too long for stdout)"
        )

    with capture_logs():  # the gateway's own events, kept off the stalled stdout
        settings = log_settings(tmp_path, stdout=True, durability="strict")
        share_log = await ShareLog.open(settings, KEY)
        try:
            # The open checkpoint's line is being written, and stuck there.
            assert await asyncio.to_thread(stalled.writing.wait, BOUND_S)
            for i in range(1, 7):  # with the checkpoint's, four wait, three are lost
                await asyncio.wait_for(share_log.record(make_record(f"s-{i}")), BOUND_S)
            # A record is answered before the writer hands its line over: the last may still come.
            async with asyncio.timeout(BOUND_S):
                while STDOUT.lost_lines - lost_before < 3:  # noqa: ASYNC110 - another thread
                    await asyncio.sleep(0.01)
            assert notes() == [note(1), note(2), note(3)]
        finally:
            await asyncio.wait_for(share_log.close(), BOUND_S / 2)  # waits 0.2 s, not for stdout
    # Closing wrote six `unknown` outcomes and a checkpoint, with no room to wait; the four
    # waiting were lost when the log closed.
    assert STDOUT.lost_lines - lost_before == 3 + (6 + 1) + 4
    assert notes() == [note(3 + 7), note(3 + 7 + 4)]
    printing = [t for t in threading.enumerate() if t.name == "share-log-printer"]
    stalled.release.set()
    for thread in printing:
        thread.join(BOUND_S)
    # Stdout taking lines again prints none of those counted lost: the checkpoint was being
    # written.
    [written] = stalled.written
    assert [orjson.loads(line)["event"] for line in written.splitlines()] == [
        "share_log_checkpointed"
    ]
    assert [r["share_id"] for r in query(share_log.path)] == [f"s-{i}" for i in range(1, 7)]


async def test_without_stdout_no_events_are_emitted(tmp_path: Path) -> None:
    events = Events()
    share_log = await ShareLog.open(log_settings(tmp_path, stdout=False), KEY, logger=events)
    await share_log.record(make_record("s-1", decision="denied"))
    await share_log.close()
    assert events.events == []


# --- failures: nothing may be shared without a record ----------------------------------------


async def test_a_locked_store_refuses_the_record_then_recovers(tmp_path: Path) -> None:
    share_log = await ShareLog.open(
        log_settings(tmp_path), KEY, busy_timeout_s=0.05, retry_interval_s=0.05
    )
    blocker = sqlite3.connect(share_log.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(ShareLogUnavailable) as failed:
            await share_log.record(make_record("s-refused"))
        assert failed.value.status == 503
        assert failed.value.code == "share_log_unavailable"
        assert not share_log.writable()
        blocker.execute("ROLLBACK")

        # No request needs to come (a gateway that is not ready gets none): the writer retries.
        for _ in range(200):
            if share_log.writable():
                break
            await asyncio.sleep(0.05)
        assert share_log.writable()
        await share_log.record(make_record("s-after"))
    finally:
        blocker.close()
        await share_log.close()
    assert [r["share_id"] for r in query(share_log.path)] == ["s-after"]
    conn = sqlite3.connect(share_log.path)
    reasons = [r for (r,) in conn.execute("SELECT reason FROM checkpoints ORDER BY seq")]
    conn.close()
    assert reasons == ["open", "resume", "close"]
    assert verify(share_log.path, KEY).ok


def fill_disk(conn: sqlite3.Connection) -> None:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL on the next new page


def make_read_only(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA query_only = 1")  # SQLITE_READONLY on the next write


@pytest.mark.parametrize("fault", [fill_disk, make_read_only], ids=["disk-full", "read-only"])
async def test_a_store_that_cannot_be_written_refuses_then_recovers(
    tmp_path: Path, fault: Callable[[sqlite3.Connection], None]
) -> None:
    connections: list[sqlite3.Connection] = []

    def connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        connections.append(conn)
        return conn

    share_log = await ShareLog.open(log_settings(tmp_path), KEY, connect=connect)
    try:
        await share_log.record(make_record("s-before"))
        fault(connections[-1])
        big = make_record("s-refused", fields_sent=tuple(f"f.{i:05d}" for i in range(3000)))
        with pytest.raises(ShareLogUnavailable):
            await share_log.record(big)
        assert not share_log.writable()

        # The store is back (a new connection has neither fault): the next record works.
        await share_log.record(make_record("s-after"))
        assert share_log.writable()
        assert len(connections) == 2
    finally:
        await share_log.close()
    assert [r["share_id"] for r in query(share_log.path)] == ["s-before", "s-after"]
    assert verify(share_log.path, KEY).ok


async def test_a_head_removed_while_the_log_is_open_refuses_the_record_and_says_why(
    tmp_path: Path,
) -> None:
    events = Events()
    share_log = await ShareLog.open(log_settings(tmp_path), KEY, logger=events)
    try:
        await share_log.record(make_record("s-1"))
        tamper(share_log.path, "DELETE FROM head")  # someone with write access to the file
        with pytest.raises(ShareLogUnavailable):
            await share_log.record(make_record("s-2"))
        assert not share_log.writable()
    finally:
        await share_log.close()
    # The first failure names what is wrong with the file, and what to run.
    assert events.named("share_log_write_failed")[0] == {
        "error": "the share log has no head: run `share-gateway logs verify`",
        "records": 1,
    }
    assert [r["share_id"] for r in query(share_log.path)] == ["s-1"]


async def test_a_failed_write_on_the_loop_sets_the_writer_retrying_without_a_request(
    tmp_path: Path,
) -> None:
    connections: list[sqlite3.Connection] = []

    def connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        connections.append(conn)
        return conn

    events = Events()
    share_log = await ShareLog.open(
        log_settings(tmp_path, stdout=True),
        KEY,
        connect=connect,
        logger=events,
        retry_interval_s=0.02,
    )
    try:
        make_read_only(connections[-1])
        with pytest.raises(ShareLogUnavailable):
            await share_log.record(make_record("s-refused"))
        async with asyncio.timeout(5):
            while not share_log.writable():  # noqa: ASYNC110 - polls state another thread sets
                await asyncio.sleep(0.01)
    finally:
        await share_log.close()
    reasons = [c["reason"] for c in events.named("share_log_checkpointed")]
    assert reasons == ["open", "resume", "close"]
    assert query(share_log.path) == []
    assert verify(share_log.path, KEY).ok


async def test_a_record_made_while_the_writer_holds_the_log_is_answered_once_committed(
    tmp_path: Path,
) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    try:
        # As during a prune or a checkpoint: the loop cannot commit, so it queues the record.
        share_log._lock.acquire()
        try:
            pending = asyncio.ensure_future(share_log.record(make_record("s-queued")))
            await asyncio.sleep(0.05)
            assert not pending.done()
            assert query(share_log.path) == []
        finally:
            share_log._lock.release()
        await asyncio.wait_for(pending, 5)
        assert [r["share_id"] for r in query(share_log.path)] == ["s-queued"]
    finally:
        await share_log.close()
    assert verify(share_log.path, KEY).ok


async def test_another_process_holding_the_log_never_stalls_the_loop(tmp_path: Path) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY, busy_timeout_s=2.0)
    other = sqlite3.connect(share_log.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # as `logs prune` does, a step at a time
        pending = asyncio.ensure_future(share_log.record(make_record("s-1")))
        # The loop keeps turning (a loop stuck in SQLite's busy wait would not run this), and
        # the record waits, with the writer thread, for the other process to let go.
        await asyncio.sleep(0.1)
        assert not pending.done()
        other.execute("COMMIT")
        await asyncio.wait_for(pending, BOUND_S)
    finally:
        other.close()
        await share_log.close()
    assert [r["share_id"] for r in query(share_log.path)] == ["s-1"]
    assert verify(share_log.path, KEY).ok


async def test_the_writer_copies_the_wal_into_the_file_while_the_loop_commits(
    tmp_path: Path,
) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    try:
        size = share_log.path.stat().st_size
        await asyncio.gather(*(share_log.record(make_record(f"s-{i}")) for i in range(300)))
        # The loop's commits never checkpoint themselves; the idle writer does it.
        async with asyncio.timeout(5):
            while share_log.path.stat().st_size == size:  # noqa: ASYNC110 - a file, not an event
                await asyncio.sleep(0.05)
    finally:
        await share_log.close()
    assert len(query(share_log.path, limit=None)) == 300


async def test_a_log_sealed_with_another_key_refuses_to_open(tmp_path: Path) -> None:
    settings = log_settings(tmp_path)
    share_log = await ShareLog.open(settings, KEY)
    await share_log.close()
    with pytest.raises(ShareLogUnavailable, match="not signed by this gateway's key"):
        await ShareLog.open(settings, b"another-master-key" * 2)


async def test_a_record_the_log_cannot_store_fails_alone(log: ShareLog) -> None:
    bad = make_record("s-bad", records="3")  # a str where the column holds an integer
    results = await asyncio.gather(
        log.record(make_record("s-1")), log.record(bad), return_exceptions=True
    )
    assert results[0] is None
    assert isinstance(results[1], ShareLogUnavailable)
    assert [r["share_id"] for r in query(log.path)] == ["s-1"]
    assert log.writable()


async def test_an_outcome_the_log_cannot_store_is_refused_not_reported_written(
    log: ShareLog,
) -> None:
    await log.record(make_record("s-1"))
    bad = ShareOutcome("s-1", "delivered", 200, 21, "12.5")  # type: ignore[arg-type]
    with pytest.raises(ShareLogUnavailable):
        await log.record_outcome(bad)
    [row] = query(log.path)
    assert row["outcome"] == "pending"
    assert log.writable()


async def test_a_path_sqlite_cannot_open_refuses_to_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    settings = ShareLogSettings(path=blocker / "share-log.sqlite", stdout=False)
    with pytest.raises(ShareLogUnavailable, match="share log"):
        await ShareLog.open(settings, KEY)


async def test_another_sqlite_file_is_never_made_a_share_log(tmp_path: Path) -> None:
    path = tmp_path / "consent.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE grants (subject TEXT)")
    conn.commit()
    conn.close()
    settings = ShareLogSettings(path=path, stdout=False)
    with pytest.raises(ShareLogUnavailable, match=r"not a share log \(another SQLite file\)"):
        await ShareLog.open(settings, KEY)
    conn = sqlite3.connect(path)
    tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["grants"]


async def test_a_second_gateway_cannot_open_the_same_log(log: ShareLog) -> None:
    with pytest.raises(ShareLogUnavailable, match="in use by another gateway"):
        await ShareLog.open(log.settings, KEY)


async def test_a_gateway_started_on_a_log_in_use_says_so_in_one_line(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    await make_gateway(durable_log=True)
    with pytest.raises(StartupError) as caught:
        await make_gateway(durable_log=True)
    path = tmp_path / "share-log.sqlite"
    assert caught.value.problems == [f"share log {path}: in use by another gateway process"]


async def test_a_second_gateway_cannot_open_the_same_log_through_a_symlink(
    log: ShareLog, tmp_path: Path
) -> None:
    # It would close the first one's shares in flight as `unknown`.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    alias = elsewhere / "alias.sqlite"
    alias.symlink_to(log.settings.path)
    with pytest.raises(ShareLogUnavailable, match="in use by another gateway"):
        await ShareLog.open(log.settings.model_copy(update={"path": alias}), KEY)


@pytest.mark.parametrize("linked", ["folder", "file"])
async def test_a_log_reached_through_a_symlink_to_a_missing_folder_is_made_there(
    tmp_path: Path, linked: str
) -> None:
    # As the consent registry is: the folder the link leads to is made, and the log in it.
    target = tmp_path / "volume" / "var"
    settings = log_settings(tmp_path)
    if linked == "folder":  # `var` itself links to where the logs go
        settings.path.parent.symlink_to(target, target_is_directory=True)
        real = target / settings.path.name
    else:
        settings.path.parent.mkdir()
        real = target / "log.sqlite"
        settings.path.symlink_to(real)
    share_log = await ShareLog.open(settings, KEY)
    await share_log.record(make_record("s-1"))
    await share_log.close()
    assert [r["share_id"] for r in query(real)] == ["s-1"]
    assert verify(settings.path, KEY).ok
    # Its lock is beside the file itself, where a second gateway through another name meets it.
    assert real.with_name(f"{real.name}.lock").exists()


@pytest.mark.parametrize("durability", ["batched", "strict"])
@pytest.mark.parametrize("how", ["removed", "replaced"])
async def test_a_log_file_removed_or_replaced_under_the_gateway_takes_no_more_records(
    tmp_path: Path, durability: str, how: str
) -> None:
    settings = log_settings(tmp_path, durability=durability)
    path = settings.path
    share_log = await ShareLog.open(settings, KEY, retry_interval_s=0.05)
    try:
        await share_log.record(make_record("s-1"))
        if how == "removed":
            path.unlink()
        else:  # another file moved in under the same name
            other = path.with_name("other.sqlite")
            other.write_bytes(b"")
            other.replace(path)
        # Found within a checkpoint interval (a second): from then on every record is refused,
        # so no share goes out on a record written into a file nobody can read.
        for _ in range(100):  # at most 5 s
            if not share_log.writable():
                break
            await asyncio.sleep(0.05)
        assert not share_log.writable()
        with pytest.raises(ShareLogUnavailable):
            await share_log.record(make_record("s-2"))
        await asyncio.sleep(0.3)  # retries come and go: the file is never made again
        assert path.exists() == (how == "replaced")
        if how == "replaced":
            assert path.stat().st_size == 0
        assert not share_log.writable()
    finally:
        await share_log.close()


@pytest.mark.parametrize("durability", ["batched", "strict"])
async def test_a_log_file_removed_while_writes_fail_is_not_made_again(
    tmp_path: Path, durability: str
) -> None:
    settings = log_settings(tmp_path, durability=durability)
    path = settings.path
    events = Events()
    share_log = await ShareLog.open(
        settings, KEY, logger=events, busy_timeout_s=0.05, retry_interval_s=0.05
    )
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await share_log.record(make_record("s-1"))
        other.execute("BEGIN IMMEDIATE")  # the writes fail: the writer retries
        with pytest.raises(ShareLogUnavailable):
            await share_log.record(make_record("s-2"))
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        other.execute("COMMIT")
        other.close()
        await asyncio.sleep(0.3)  # retries come and go: none starts a new, empty log there
        assert not path.exists()
        assert not share_log.writable()
        assert events.named("share_log_file_replaced") == [{"path": str(path)}]  # said once
        with pytest.raises(ShareLogUnavailable):
            await share_log.record(make_record("s-3"))
    finally:
        other.close()
        await share_log.close()


async def test_a_log_on_a_full_disk_is_not_writable_before_a_share_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = [store_module.MIN_FREE_BYTES * 10]
    real_statvfs = os.statvfs

    def statvfs(path: str | os.PathLike[str]) -> Any:
        found = real_statvfs(path)
        return SimpleNamespace(f_bavail=free[0] // found.f_frsize, f_frsize=found.f_frsize)

    monkeypatch.setattr(os, "statvfs", statvfs)
    events = Events()
    share_log = await ShareLog.open(log_settings(tmp_path), KEY, logger=events)

    async def writable_within_two_intervals(expected: bool) -> None:
        for _ in range(60):  # at most 3 s: the writer looks once a second
            if share_log.writable() == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"writable() never became {expected}")

    try:
        await share_log.record(make_record("s-1"))
        assert share_log.writable()
        free[0] = store_module.MIN_FREE_BYTES - 1
        await writable_within_two_intervals(False)
        unit = real_statvfs(tmp_path).f_frsize
        assert [e["free_bytes"] for e in events.named("share_log_disk_low")] == [
            (store_module.MIN_FREE_BYTES - 1) // unit * unit
        ]
        free[0] = store_module.MIN_FREE_BYTES
        await writable_within_two_intervals(True)
        assert len(events.named("share_log_disk_ok")) == 1
    finally:
        await share_log.close()


async def test_a_closed_log_refuses_records(tmp_path: Path) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    await share_log.close()
    assert not share_log.writable()
    with pytest.raises(ShareLogUnavailable):
        await share_log.record(make_record("s-1"))


async def test_a_closed_log_refuses_a_prune_and_writes_nothing(tmp_path: Path) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    await share_log.record(make_record("s-1", ts=datetime.now(UTC) - timedelta(days=2000)))
    await share_log.close()
    closed = share_log.path.read_bytes()
    for dry_run in (True, False):
        with pytest.raises(ShareLogUnavailable, match=r"^the share log is closed$"):
            await share_log.prune(datetime.now(UTC) - timedelta(days=1200), dry_run=dry_run)
    assert share_log.path.read_bytes() == closed
    assert [r["share_id"] for r in query(share_log.path)] == ["s-1"]


async def test_a_log_whose_tail_was_cut_refuses_to_open(tmp_path: Path) -> None:
    settings = log_settings(tmp_path)
    share_log = await ShareLog.open(settings, KEY)
    await share_log.record(make_record("s-1"))
    await share_log.close()
    conn = sqlite3.connect(settings.path)
    conn.execute("DELETE FROM checkpoints WHERE reason = 'close'")
    conn.commit()
    conn.close()
    # Appending would re-sign the damaged tail and erase the evidence.
    with pytest.raises(ShareLogUnavailable, match="logs verify"):
        await ShareLog.open(settings, KEY)


# --- crash recovery -------------------------------------------------------------------------

CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from gateway.settings import ShareLogSettings
    from gateway.sharelog import ShareOutcome, ShareRecord
    from gateway.sharelog.store import ShareLog

    def record(share_id, decision):
        return ShareRecord(
            share_id=share_id, ts=datetime.now(UTC), partner="acme", contract_id="DPA-1",
            contract_version=3, contract_sha256=None, caller="billing",
            purpose="credit_assessment", method="POST", route="POST /v1/assess",
            decision=decision, reason="shared" if decision == "shared" else "scope_denied",
        )

    async def main():
        settings = ShareLogSettings(path=Path(sys.argv[1]), stdout=False)
        log = await ShareLog.open(settings, sys.argv[2].encode())
        await log.record(record("s-done", "shared"))
        await log.record_outcome(ShareOutcome("s-done", "delivered", 200, 2, 3.0))
        await log.record(record("s-in-flight", "shared"))
        await log.record(record("s-denied", "denied"))
        print("intent written", flush=True)
        time.sleep(60)  # killed here: between the intent and the partner's answer

    asyncio.run(main())
    """
)


def test_a_share_left_open_by_a_kill_is_closed_as_unknown_on_restart(tmp_path: Path) -> None:
    settings = log_settings(tmp_path)
    settings.path.parent.mkdir(parents=True)
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, str(settings.path), KEY.decode()],
        cwd=root,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"intent written\n"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    events = Events()

    async def restart() -> None:
        share_log = await ShareLog.open(settings, KEY, logger=events)
        await share_log.close()

    asyncio.run(restart())
    outcomes = {r["share_id"]: r["outcome"] for r in query(settings.path)}
    assert outcomes == {"s-done": "delivered", "s-in-flight": "unknown", "s-denied": None}
    [warning] = events.named("share_outcomes_unknown")
    assert warning["share_ids"] == ["s-in-flight"]
    assert verify(settings.path, KEY).ok


async def test_close_closes_shares_still_waiting_for_an_outcome(tmp_path: Path) -> None:
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    await share_log.record(make_record("s-1"))
    await share_log.close()
    [row] = query(share_log.path)
    assert row["outcome"] == "unknown"


# --- schema ---------------------------------------------------------------------------------


async def test_a_new_log_is_created_at_the_current_schema_version(log: ShareLog) -> None:
    conn = sqlite3.connect(log.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        plan = " ".join(
            str(row)
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT seq FROM shares WHERE partner = ? AND ts >= ? "
                "AND ts < ? ORDER BY ts, seq",
                ("acme", "2025", "2026"),
            )
        )
    finally:
        conn.close()
    assert "shares_ts_partner" in plan
    # The index delivers the time order; only rows with an identical ts would be sorted by seq.
    assert "USE TEMP B-TREE FOR ORDER BY" not in plan


async def test_migrations_are_applied_forward_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = log_settings(tmp_path)
    share_log = await ShareLog.open(settings, KEY)
    await share_log.record(make_record("s-1"))
    await share_log.close()

    later = (*schema.MIGRATIONS, ("CREATE TABLE retention_holds (share_seq INTEGER)",))
    monkeypatch.setattr(schema, "MIGRATIONS", later)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(later))
    share_log = await ShareLog.open(settings, KEY)
    await share_log.close()
    conn = sqlite3.connect(settings.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(later)
        assert conn.execute("SELECT COUNT(*) FROM retention_holds").fetchone()[0] == 0
    finally:
        conn.close()
    assert [r["share_id"] for r in query(settings.path)] == ["s-1"]


async def test_a_log_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    settings = log_settings(tmp_path)
    settings.path.parent.mkdir(parents=True)
    conn = sqlite3.connect(settings.path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ShareLogUnavailable, match="newer"):
        await ShareLog.open(settings, KEY)


# --- retention ------------------------------------------------------------------------------


async def test_prune_removes_only_records_past_retention_and_keeps_the_chain(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=1200)
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    try:
        await share_log.record(make_record("s-old-1", ts=old))
        await share_log.record_outcome(delivered("s-old-1"))
        await share_log.record(make_record("s-old-2", ts=old + timedelta(days=1)))
        await share_log.record_outcome(delivered("s-old-2"))
        await share_log.record(make_record("s-new", ts=now - timedelta(days=3)))
        with pytest.raises(PruneRefused, match="1095 days"):
            await share_log.prune(now - timedelta(days=30))
        result = await share_log.prune(now - timedelta(days=1095))
        assert (result.shares, result.outcomes, result.checkpoints) == (2, 2, 1)
        assert result.checkpoint_seq is not None
        await share_log.record(make_record("s-later", ts=now))
    finally:
        await share_log.close()
    assert [r["share_id"] for r in query(share_log.path)] == ["s-new", "s-later"]
    checked = verify(share_log.path, KEY)
    assert checked.ok, checked.problem
    assert checked.first_seq == result.cut_seq


async def test_a_prune_the_chain_does_not_bear_out_is_refused_and_the_log_stays_writable(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    share_log = await ShareLog.open(log_settings(tmp_path), KEY)
    try:
        await share_log.record(make_record("s-1", ts=now - timedelta(days=2)))
        await share_log.record(make_record("s-2", ts=now - timedelta(days=1)))
        other = sqlite3.connect(share_log.path)
        other.execute("UPDATE shares SET ts = '2001-01-01T00:00:00.000000Z' WHERE share_id = 's-1'")
        other.commit()
        other.close()
        with pytest.raises(PruneUnverified, match=r"entry seq 2 \(share s-1\) was changed"):
            await share_log.prune(now - timedelta(days=1095))
        assert share_log.writable()
        await share_log.record(make_record("s-3", ts=now))
    finally:
        await share_log.close()
    assert [r["share_id"] for r in query(share_log.path)] == ["s-1", "s-2", "s-3"]


# --- the in-memory sink ---------------------------------------------------------------------


async def test_the_memory_sink_keeps_records_and_refuses_on_demand() -> None:
    memory = MemoryShareLog()
    sink: ShareSink = memory
    await sink.record(make_record("s-1"))
    await sink.record_outcome(delivered("s-1"))
    assert [r.share_id for r in memory.records] == ["s-1"]
    assert memory.outcome_of("s-1") == delivered("s-1")
    assert memory.outcome_of("s-2") is None
    memory.available = False
    assert not sink.writable()
    with pytest.raises(ShareLogUnavailable):
        await sink.record(make_record("s-2"))
    assert len(memory.records) == 1


async def test_a_new_log_is_announced_and_a_reopened_one_is_not(tmp_path: Path) -> None:
    # A wiped log is started over like a first one; the warning is what a pipeline alerts on.
    settings = log_settings(tmp_path, stdout=True)

    async def start_and_stop() -> list[dict[str, Any]]:
        events = Events()
        share_log = await ShareLog.open(settings, KEY, logger=events)
        await share_log.record(make_record("s-1"))
        await share_log.close()
        return events.named("share_log_created")

    assert await start_and_stop() == [{"path": str(settings.path)}]
    assert await start_and_stop() == []
    settings.path.unlink()
    assert await start_and_stop() == [{"path": str(settings.path)}]
    # Without stdout there is no anchor outside the file for the line to go with.
    quiet = log_settings(tmp_path / "quiet", stdout=False)
    events = Events()
    await (await ShareLog.open(quiet, KEY, logger=events)).close()
    assert events.events == []


# -- a new log is made whole; a file that holds no log is refused ---------------------------


async def test_a_first_start_killed_at_any_step_leaves_no_log_or_a_whole_one(
    tmp_path: Path,
) -> None:
    settings = log_settings(tmp_path, stdout=True)
    path = settings.path
    path.parent.mkdir(parents=True)
    step = 0
    killed = True
    while killed:
        step += 1
        assert step < 200, "the first open never finished"
        for file in path.parent.iterdir():
            file.unlink()
        killed = killed_at(step, lambda: Ledger.open(path, KEY).close())
        # Never a file `logs verify` calls empty or broken: nothing, or a log that verifies.
        assert not path.exists() or verify(path, KEY).ok, step
        events = Events()
        share_log = await ShareLog.open(settings, KEY, logger=events)
        await share_log.close()
        # The next start makes the log, or starts the one made, says so, and leaves nothing
        # else beside it.
        assert events.named("share_log_created") == [{"path": str(path)}], step
        assert verify(path, KEY).ok
        assert [f.name for f in path.parent.iterdir() if ".creating-" in f.name] == [], step
    assert step > 10  # kills inside the making of the file were among those tried


async def test_a_leftover_of_a_killed_creation_is_removed_and_never_taken_for_the_log(
    tmp_path: Path,
) -> None:
    settings = log_settings(tmp_path, stdout=True)
    path = settings.path
    # A log with a record, under the name a start builds a new log under: were that file
    # ever taken for the log, the record would show.
    share_log = await ShareLog.open(settings, KEY)
    await share_log.record(make_record("s-elsewhere"))
    await share_log.close()
    leftover = path.with_name(f"{path.name}.creating-0123abcd")
    path.rename(leftover)
    journal = leftover.with_name(f"{leftover.name}-journal")
    others = [
        path.with_name(f"{path.name}.creating-kept"),
        path.with_name("other.sqlite.creating-0123abcd"),
    ]
    _write({journal: b"journal", **dict.fromkeys(others, b"not ours")})

    events = Events()
    share_log = await ShareLog.open(settings, KEY, logger=events)
    await share_log.record(make_record("s-new"))
    await share_log.close()
    assert events.named("share_log_created") == [{"path": str(path)}]
    assert [r["share_id"] for r in query(path)] == ["s-new"]
    assert _contents([leftover, journal, *others]) == [None, None, b"not ours", b"not ours"]
    assert verify(path, KEY).ok


async def test_a_directory_or_symlink_named_like_a_leftover_is_never_removed_through(
    tmp_path: Path,
) -> None:
    settings = log_settings(tmp_path)
    path = settings.path
    path.parent.mkdir(parents=True)
    # No start ever makes a directory: one of the name is someone else's, and holds their files.
    folder = path.with_name(f"{path.name}.creating-0123abcd")
    folder.mkdir()
    (folder / "kept.txt").write_bytes(b"theirs")
    kept = tmp_path / "kept.sqlite"
    kept.write_bytes(b"not ours")
    link = path.with_name(f"{path.name}.creating-4567cdef")
    link.symlink_to(kept)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "kept.txt").write_bytes(b"theirs too")
    folder_link = path.with_name(f"{path.name}.creating-89abcdef")
    folder_link.symlink_to(theirs, target_is_directory=True)

    share_log = await ShareLog.open(settings, KEY)
    await share_log.record(make_record("s-new"))
    await share_log.close()
    assert [r["share_id"] for r in query(path)] == ["s-new"]
    assert (folder / "kept.txt").read_bytes() == b"theirs"
    # The link goes, as a leftover would; never what it points to.
    assert (link.is_symlink(), kept.read_bytes()) == (False, b"not ours")
    # A link to a folder is a link still, not the folder: it goes, the folder stays whole.
    assert (folder_link.is_symlink(), (theirs / "kept.txt").read_bytes()) == (False, b"theirs too")


def test_a_creation_that_fails_leaves_nothing_at_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "share-log.sqlite"

    def disk_full(source: str | Path, target: str | Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        Ledger.open(path, KEY)
    assert list(tmp_path.iterdir()) == []


def _write(files: dict[Path, bytes]) -> None:
    for path, content in files.items():
        path.write_bytes(content)


def _contents(paths: list[Path]) -> list[bytes | None]:
    return [path.read_bytes() if path.exists() else None for path in paths]


def _without_tables(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE dropped (x)")
    conn.execute("DROP TABLE dropped")
    conn.close()


def _emptied(path: Path) -> None:
    path.write_bytes(b"")  # `: > share-log.sqlite`


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (
            _emptied,
            "the file is empty (0 bytes): its records were erased, or it was never written",
        ),
        (_without_tables, "the file holds no share log (SQLite, without its tables)"),
    ],
    ids=["emptied", "no-schema"],
)
async def test_a_file_at_the_path_that_holds_no_log_is_refused_not_started_afresh(
    tmp_path: Path, make: Callable[[Path], None], problem: str
) -> None:
    settings = log_settings(tmp_path, stdout=True)
    path = settings.path
    path.parent.mkdir(parents=True)
    make(path)
    [before] = _contents([path])
    events = Events()
    with pytest.raises(ShareLogUnavailable) as refused:
        await ShareLog.open(settings, KEY, logger=events)
    assert refused.value.message == (
        f"share log {path}: {problem}; to start a new share log, remove the file"
    )
    assert events.events == []  # no `share_log_created`, no checkpoint
    assert _contents([path, path.with_name(f"{path.name}-wal")]) == [before, None]
    # The operator who means to start over removes the file, as the line says.
    path.unlink()
    share_log = await ShareLog.open(settings, KEY, logger=events)
    await share_log.close()
    assert events.named("share_log_created") == [{"path": str(path)}]


async def test_a_log_removed_without_its_write_ahead_log_is_refused_not_started_over(
    tmp_path: Path,
) -> None:
    settings = log_settings(tmp_path)
    path = settings.path
    path.parent.mkdir(parents=True)
    # A gateway killed with its last records in the `-wal`; then the log file alone removed.
    ledger = Ledger.open(path, KEY)
    ledger.begin()
    ledger.add_share(make_record("s-last"))
    ledger.commit(T0)
    wal = path.with_name(f"{path.name}-wal")
    [frames] = _contents([wal])
    assert frames  # the share's commit is in it
    ledger.close()
    path.unlink()
    _write({wal: frames, path.with_name(f"{path.name}-shm"): b"\xff" * 32768})

    with pytest.raises(ShareLogUnavailable) as refused:
        await ShareLog.open(settings, KEY)
    assert refused.value.message == (
        f"share log {path}: there is no file, but {wal.name} beside it holds what one wrote "
        "(the file was removed without it, which may hold its last writes): put the file "
        f"back, or remove {wal} to start anew"
    )
    # Kept: SQLite would have applied it to a new log at the path as that log's own.
    assert _contents([wal, path]) == [frames, None]
    wal.unlink()
    share_log = await ShareLog.open(settings, KEY)
    await share_log.record(make_record("s-1"))
    await share_log.close()
    assert [r["share_id"] for r in query(path)] == ["s-1"]
    assert verify(path, KEY).ok
