"""Tests for gateway.sharelog.ledger: appends, the signed head, checkpoints, recovery, prune."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import tamper

from gateway.keys import keyed_hash, subject_ref_key
from gateway.sharelog.chain import Entry
from gateway.sharelog.ledger import (
    _OPEN_SHARES,
    _PENDING_SEQ,
    Ledger,
    LedgerError,
    PruneRefused,
    PruneUnverified,
)
from gateway.sharelog.record import ShareOutcome, ShareRecord
from gateway.sharelog.review import query, verify

KEY = b"ledger-master-key-" * 2
NOW = datetime.now(UTC)


def record(share_id: str, ts: datetime = NOW, decision: str = "shared") -> ShareRecord:
    return ShareRecord(
        share_id=share_id,
        ts=ts,
        partner="acme",
        contract_id="DPA-1",
        contract_version=3,
        contract_sha256=None,
        caller="billing",
        purpose="credit_assessment",
        method="POST",
        route="POST /v1/assess",
        decision=decision,  # type: ignore[arg-type]
        reason="shared" if decision == "shared" else "scope_denied",
        subject_refs=(keyed_hash(subject_ref_key(KEY), share_id),),
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(tmp_path / "log.sqlite", KEY, checkpoint_every=4)
    yield opened
    opened.close()


def test_the_file_and_its_write_ahead_log_are_the_owners_alone(tmp_path: Path) -> None:
    # Keyed subject references are personal data: no other account on the host reads them.
    path = tmp_path / "var" / "log.sqlite"
    opened = Ledger.open(path, KEY)
    try:
        opened.begin()
        opened.add_share(record("s-1"))
        opened.commit(NOW)
        made = [path, path.with_name("log.sqlite-wal"), path.with_name("log.sqlite-shm")]
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in made} == {
            p.name: "0o600" for p in made
        }
    finally:
        opened.close()


def test_a_share_and_its_outcome_in_one_transaction_are_linked(ledger: Ledger) -> None:
    ledger.begin()
    share = ledger.add_share(record("s-1"))
    outcome = ledger.add_outcome(ShareOutcome("s-1", "delivered", 200, 1, 2.0), NOW)
    ledger.commit(NOW)
    assert outcome["share_seq"] == share["seq"]
    assert outcome["prev_hash"] == share["hash"]
    pending = ledger.conn.execute("SELECT COUNT(*) FROM pending_outcomes").fetchone()[0]
    assert pending == 0


def test_an_outcome_in_a_later_transaction_is_linked_and_closes_its_share(
    ledger: Ledger, tmp_path: Path
) -> None:
    ledger.begin()
    share = ledger.add_share(record("s-1"))
    ledger.commit(NOW)
    ledger.begin()
    outcome = ledger.add_outcome(ShareOutcome("s-1", "delivered", 200, 1, 2.0), NOW)
    ledger.commit(NOW)
    ledger.begin()
    again = ledger.add_outcome(ShareOutcome("s-1", "delivered", 200, 1, 2.0), NOW)
    ledger.commit(NOW)
    assert (outcome["share_seq"], again["share_seq"]) == (share["seq"], None)
    assert ledger.conn.execute("SELECT COUNT(*) FROM pending_outcomes").fetchone()[0] == 0
    # Written as asked, and found: the gateway itself never submits a second outcome.
    assert_second_outcome(tmp_path / "log.sqlite", again, share, outcome)


@pytest.mark.parametrize("share_in", ["an_earlier_transaction", "the_same_transaction"])
def test_a_second_outcome_in_one_transaction_is_not_linked_again(
    ledger: Ledger, tmp_path: Path, share_in: str
) -> None:
    ledger.begin()
    share = ledger.add_share(record("s-1"))
    if share_in == "an_earlier_transaction":
        ledger.commit(NOW)
        ledger.begin()
    first = ledger.add_outcome(ShareOutcome("s-1", "delivered", 200, 1, 2.0), NOW)
    second = ledger.add_outcome(ShareOutcome("s-1", "delivered", 200, 1, 2.0), NOW)
    ledger.commit(NOW)
    assert (first["share_seq"], second["share_seq"]) == (share["seq"], None)
    assert_second_outcome(tmp_path / "log.sqlite", second, share, first)


def assert_second_outcome(path: Path, second: Entry, share: Entry, first: Entry) -> None:
    problem = verify(path, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("outcome", second["seq"], "s-1")
    assert problem.message.startswith(
        f"outcome seq {second['seq']} (share s-1) is a second, unlinked outcome of seq "
        f"{share['seq']}, whose outcome is at seq {first['seq']}"
    )


def test_an_outcome_after_reopening_finds_its_share_in_the_file(tmp_path: Path) -> None:
    first = Ledger.open(tmp_path / "log.sqlite", KEY)
    first.begin()
    share = first.add_share(record("s-1"))
    first.commit(NOW)
    first.close()
    second = Ledger.open(tmp_path / "log.sqlite", KEY)
    second.begin()
    outcome = second.add_outcome(ShareOutcome("s-1", "delivered", 200, 1, 2.0), NOW)
    second.commit(NOW)
    second.close()
    assert outcome["share_seq"] == share["seq"]


@pytest.mark.parametrize(
    ("change", "share_id"),
    [
        ("UPDATE pending_outcomes SET share_seq = 1 WHERE share_id = 's-3'", "s-3"),
        ("UPDATE pending_outcomes SET share_seq = 3 WHERE share_id = 's-3'", "s-3"),
        ("UPDATE pending_outcomes SET share_seq = 99 WHERE share_id = 's-3'", "s-3"),
        ("INSERT INTO pending_outcomes (share_id, share_seq) VALUES ('s-1', 1)", "s-1"),
    ],
    ids=["another_share", "a_denied_record", "no_record", "a_closed_share"],
)
def test_an_outcome_is_linked_only_through_a_pending_row_naming_its_open_share(
    tmp_path: Path, change: str, share_id: str
) -> None:
    path = tmp_path / "log.sqlite"
    first = Ledger.open(path, KEY)
    first.begin()
    first.add_share(record("s-1"))  # seq 1, closed by its outcome at seq 2
    first.add_outcome(ShareOutcome("s-1", "timeout", None, 0, 1.0), NOW)
    first.add_share(record("s-2", decision="denied"))  # seq 3
    first.add_share(record("s-3"))  # seq 4, in flight
    first.commit(NOW)
    first.close()
    # Someone who can write the file, not the gateway, edits the index of open shares.
    conn = sqlite3.connect(path)
    conn.execute(change)
    conn.commit()
    conn.close()
    second = Ledger.open(path, KEY)
    second.begin()
    outcome = second.add_outcome(ShareOutcome(share_id, "delivered", 200, 1, 2.0), NOW)
    second.commit(NOW)
    second.close()
    assert outcome["share_seq"] is None  # never sealed against a record the row should not name


@pytest.mark.parametrize("pruner", ["same_ledger", "another_connection"])
def test_an_open_share_pruned_away_leaves_its_outcome_unlinked(tmp_path: Path, pruner: str) -> None:
    path = tmp_path / "log.sqlite"
    ledger = Ledger.open(path, KEY)
    ledger.begin()
    ledger.add_share(record("s-old", NOW - timedelta(days=2000)))  # still open
    ledger.add_share(record("s-new", decision="denied"))
    ledger.commit(NOW)
    other = ledger if pruner == "same_ledger" else Ledger.open(path, KEY)
    other.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095)
    ledger.begin()
    outcome = ledger.add_outcome(ShareOutcome("s-old", "delivered", 200, 1, 1.0), NOW)
    ledger.commit(NOW)
    assert outcome["share_seq"] is None  # its share is gone: nothing to link to
    if other is not ledger:
        other.close()
    ledger.close()
    assert verify(path, KEY).ok


def test_only_a_pending_row_of_an_open_share_is_closed_as_unknown(ledger: Ledger) -> None:
    ledger.begin()
    delivered = ledger.add_share(record("s-1"))
    ledger.add_outcome(ShareOutcome("s-1", "delivered", 200, 1, 2.0), NOW)
    denied = ledger.add_share(record("s-2", decision="denied"))
    ledger.add_share(record("s-3"))
    ledger.commit(NOW)
    # Rows the chain does not back: a closed share, a refusal, a share that does not exist.
    ledger.conn.executemany(
        "INSERT INTO pending_outcomes (share_id, share_seq) VALUES (?, ?)",
        [("s-1", delivered["seq"]), ("s-2", denied["seq"]), ("s-9", 99)],
    )
    ledger.begin()
    closed = ledger.add_unknown_outcomes(NOW)
    ledger.commit(NOW)
    assert [(e["share_id"], e["outcome"]) for e in closed] == [("s-3", "unknown")]
    assert ledger.conn.execute("SELECT COUNT(*) FROM pending_outcomes").fetchone()[0] == 0


def test_begin_waits_for_another_writer_and_try_begin_does_not(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    waiting = Ledger.open(path, KEY, busy_timeout_s=5.0)
    other = Ledger.open(path, KEY)
    other.begin()
    assert waiting.try_begin() is False
    releaser = threading.Timer(0.2, lambda: other.rollback())
    releaser.start()
    started = time.monotonic()
    waiting.begin()  # returns once the other writer lets go, well within the busy timeout
    assert 0.1 < time.monotonic() - started < 4.0
    waiting.add_share(record("s-1"))
    waiting.commit(NOW)
    releaser.join()
    waiting.close()
    other.close()
    assert [r["share_id"] for r in query(path)] == ["s-1"]


@pytest.mark.parametrize("decision", [None, "denied", "error"])
def test_an_outcome_for_no_open_share_is_kept_unlinked(
    ledger: Ledger, tmp_path: Path, decision: str | None
) -> None:
    # A refusal or a failed request sent nothing: its record is never open for an outcome.
    if decision is not None:
        ledger.begin()
        ledger.add_share(record("s-1", decision=decision))
        ledger.commit(NOW)
    ledger.begin()
    outcome = ledger.add_outcome(ShareOutcome("s-1", "error", None, 0, 1.0), NOW)
    ledger.commit(NOW)
    assert outcome["share_seq"] is None
    checked = verify(tmp_path / "log.sqlite", KEY)
    assert checked.ok, checked.problem


def test_a_checkpoint_is_sealed_every_n_entries(ledger: Ledger) -> None:
    for i in range(9):
        ledger.begin()
        ledger.add_share(record(f"s-{i}", decision="denied"))
        ledger.commit(NOW)
    reasons = ledger.conn.execute("SELECT seq, reason FROM checkpoints ORDER BY seq").fetchall()
    assert reasons == [(5, "periodic"), (10, "periodic")]


def test_a_head_naming_a_later_checkpoint_does_not_hold_back_the_next_one(
    ledger: Ledger, tmp_path: Path
) -> None:
    ledger.begin()
    ledger.add_checkpoint("open", NOW)
    ledger.commit(NOW)
    # The head's checkpoint_seq is not sealed: someone who can write the file moves it ahead.
    conn = sqlite3.connect(tmp_path / "log.sqlite")
    conn.execute("UPDATE head SET checkpoint_seq = 9000000000000000000")
    conn.commit()
    conn.close()
    for i in range(9):
        ledger.begin()
        ledger.add_share(record(f"s-{i}", decision="denied"))
        ledger.commit(NOW)
    reasons = ledger.conn.execute("SELECT seq, reason FROM checkpoints ORDER BY seq").fetchall()
    assert reasons == [(1, "open"), (6, "periodic"), (11, "periodic")]
    head = ledger.conn.execute("SELECT checkpoint_seq FROM head").fetchone()[0]
    assert head == 11  # and the head says so again


def test_a_rolled_back_transaction_leaves_no_trace(ledger: Ledger, tmp_path: Path) -> None:
    ledger.begin()
    ledger.add_share(record("s-gone"))
    ledger.rollback()
    ledger.begin()
    entry = ledger.add_share(record("s-kept"))
    ledger.commit(NOW)
    assert entry["seq"] == 1
    assert [r["share_id"] for r in query(tmp_path / "log.sqlite")] == ["s-kept"]
    assert verify(tmp_path / "log.sqlite", KEY).ok


def test_unknown_outcomes_close_every_open_share(ledger: Ledger, tmp_path: Path) -> None:
    ledger.begin()
    ledger.add_share(record("s-1"))
    ledger.add_share(record("s-2"))
    ledger.add_share(record("s-3", decision="denied"))
    ledger.add_share(record("s-4", decision="error"))  # nothing left: no outcome to wait for
    ledger.commit(NOW)
    ledger.begin()
    closed = ledger.add_unknown_outcomes(NOW)
    ledger.commit(NOW)
    assert [(e["share_id"], e["outcome"], e["share_seq"]) for e in closed] == [
        ("s-1", "unknown", 1),
        ("s-2", "unknown", 2),
    ]
    ledger.begin()
    assert ledger.add_unknown_outcomes(NOW) == []
    ledger.rollback()
    checked = verify(tmp_path / "log.sqlite", KEY)
    assert checked.ok, checked.problem


def test_an_outcome_added_before_the_unknown_ones_is_the_only_outcome_of_its_share(
    ledger: Ledger, tmp_path: Path
) -> None:
    ledger.begin()
    ledger.add_share(record("s-1"))
    ledger.add_share(record("s-2"))
    ledger.commit(NOW)
    # As a gateway stops: the outcomes it holds first, then every share still open.
    ledger.begin()
    ledger.add_outcome(ShareOutcome("s-1", "delivered", 200, 1, 2.0), NOW)
    closed = ledger.add_unknown_outcomes(NOW)
    ledger.commit(NOW)
    assert [(e["share_id"], e["outcome"]) for e in closed] == [("s-2", "unknown")]
    assert [(r["share_id"], r["outcome"]) for r in query(tmp_path / "log.sqlite")] == [
        ("s-1", "delivered"),
        ("s-2", "unknown"),
    ]
    checked = verify(tmp_path / "log.sqlite", KEY)
    assert checked.ok, checked.problem


def test_finding_the_open_shares_reads_the_pending_rows_not_every_share(ledger: Ledger) -> None:
    # Every start and stop looks for them: on a log of two million shares, walking the shares
    # table took seconds before the gateway was ready, and again when it stopped.
    ledger.begin()
    for n in range(50):
        ledger.add_share(record(f"s-{n}", decision="shared" if n % 10 == 0 else "denied"))
    ledger.commit(NOW)
    for sql in (_OPEN_SHARES, _PENDING_SEQ):
        params = ("s-0",) if sql == _PENDING_SEQ else ()
        plan = [row[3] for row in ledger.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        assert plan[0] in ("SCAN p", "SEARCH p USING PRIMARY KEY (share_id=?)"), plan
        assert "SEARCH s USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
    ledger.begin()
    assert [e["share_id"] for e in ledger.add_unknown_outcomes(NOW)] == [
        "s-0",
        "s-10",
        "s-20",
        "s-30",
        "s-40",
    ]
    ledger.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM shares WHERE seq = 2",
        # The head's seq is still the last entry's, but that entry is not the one sealed there.
        "UPDATE shares SET hash = (SELECT hash FROM shares WHERE seq = 1) WHERE seq = 2",
    ],
    ids=["removed", "altered"],
)
def test_a_log_whose_last_entry_is_not_its_signed_head_is_not_appended_to(
    tmp_path: Path, statement: str
) -> None:
    path = tmp_path / "log.sqlite"
    ledger = Ledger.open(path, KEY)
    ledger.begin()
    ledger.add_share(record("s-1", decision="denied"))
    ledger.add_share(record("s-2", decision="denied"))
    ledger.commit(NOW)
    ledger.close()
    tamper(path, statement)
    with pytest.raises(LedgerError, match=r"last entry \(seq \d\) is not its signed head"):
        Ledger.open(path, KEY)


@pytest.mark.parametrize(
    ("statements", "says"),
    [
        (["DELETE FROM head"], "the share log has entries but no head"),
        (
            ["DELETE FROM head", "DELETE FROM checkpoints", "DELETE FROM shares"],
            "the share log has no head",
        ),
    ],
    ids=["head", "head_and_entries"],
)
def test_a_log_without_its_signed_head_is_neither_appended_to_nor_pruned(
    tmp_path: Path, statements: list[str], says: str
) -> None:
    path = tmp_path / "log.sqlite"
    ledger = Ledger.open(path, KEY)
    ledger.begin()
    ledger.add_share(record("s-1", decision="denied"))
    ledger.commit(NOW)
    ledger.close()
    tamper(path, *statements)
    refusal = f"^{says}: run `share-gateway logs verify`$"
    with pytest.raises(LedgerError, match=refusal):
        Ledger.open(path, KEY)
    with pytest.raises(LedgerError, match=refusal):
        Ledger.open_read_only(path, KEY)  # as a dry-run prune opens it


def test_another_key_cannot_append(tmp_path: Path) -> None:
    Ledger.open(tmp_path / "log.sqlite", KEY).close()
    with pytest.raises(LedgerError, match="not signed by this gateway's key"):
        Ledger.open(tmp_path / "log.sqlite", b"another-key" * 4)


def test_prune_keeps_everything_from_the_first_recent_share(ledger: Ledger, tmp_path: Path) -> None:
    old = NOW - timedelta(days=2000)
    ledger.begin()
    ledger.add_share(record("s-old", old))
    ledger.add_outcome(ShareOutcome("s-old", "delivered", 200, 1, 1.0), old)
    ledger.add_share(record("s-recent", NOW))
    ledger.commit(NOW)
    with pytest.raises(PruneRefused):
        ledger.prune(NOW - timedelta(days=10), now=NOW, retention_days=1095)
    dry, _ = ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095, dry_run=True)
    assert (dry.shares, dry.outcomes, dry.checkpoint_seq) == (1, 1, None)
    result, entries = ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095)
    assert (result.cut_seq, result.shares, result.outcomes) == (3, 1, 1)
    assert [e["reason"] for e in entries] == ["prune"]
    again, _ = ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095)
    assert again.checkpoint_seq is None  # nothing left to remove
    checked = verify(tmp_path / "log.sqlite", KEY)
    assert checked.ok, checked.problem
    assert (checked.first_seq, checked.shares) == (3, 1)


def test_a_prune_that_another_prune_overtook_says_so(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = NOW - timedelta(days=2000)
    ledger.begin()
    ledger.add_share(record("s-old", old))
    ledger.add_share(record("s-recent", NOW))
    ledger.commit(NOW)
    other = Ledger.open(tmp_path / "log.sqlite", KEY, checkpoint_every=4)
    planned = Ledger._plan_prune

    def planned_then_overtaken(self: Ledger, before: str, step: int) -> Any:
        plan = planned(self, before, step)
        if self is ledger:  # `logs prune` run twice at once: the other one cuts first
            other.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095)
        return plan

    monkeypatch.setattr(Ledger, "_plan_prune", planned_then_overtaken)
    try:
        # Not worded as a log that was tampered with: the chain is the one verified.
        with pytest.raises(PruneUnverified, match="another prune ran at the same time"):
            ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095)
    finally:
        other.close()
    checked = verify(tmp_path / "log.sqlite", KEY)
    assert checked.ok, checked.problem


def test_a_prune_whose_chain_changed_after_it_was_verified_removes_nothing(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.sqlite"
    old = NOW - timedelta(days=2000)
    ledger.begin()
    ledger.add_share(record("s-old", old, decision="denied"))
    ledger.add_share(record("s-recent", NOW, decision="denied"))
    ledger.commit(NOW)
    planned = Ledger._plan_prune

    def planned_then_changed(self: Ledger, before: str, step: int) -> Any:
        plan = planned(self, before, step)
        # Between the check and the cut, the first record kept is made to link elsewhere.
        tamper(path, "UPDATE shares SET prev_hash = hash WHERE seq = 2")
        return plan

    monkeypatch.setattr(Ledger, "_plan_prune", planned_then_changed)
    with pytest.raises(PruneUnverified, match=r"changed while it was pruned \(at seq 2\)"):
        ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095)
    assert [r["share_id"] for r in query(path, limit=None)] == ["s-old", "s-recent"]


def test_pruning_everything_leaves_a_chain_that_starts_at_the_cut(
    ledger: Ledger, tmp_path: Path
) -> None:
    old = NOW - timedelta(days=2000)
    ledger.begin()
    ledger.add_share(record("s-old", old, decision="denied"))
    ledger.commit(NOW)
    result, _ = ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095)
    assert result.cut_seq == result.checkpoint_seq == 2
    ledger.begin()
    ledger.add_share(record("s-new"))
    ledger.commit(NOW)
    checked = verify(tmp_path / "log.sqlite", KEY)
    assert checked.ok, checked.problem
    assert (checked.first_seq, checked.last_seq) == (2, 3)


def test_a_long_prune_goes_in_steps_each_sealed(ledger: Ledger, tmp_path: Path) -> None:
    old = NOW - timedelta(days=2000)
    ledger.begin()
    for i in range(7):
        ledger.add_share(record(f"s-old-{i}", old + timedelta(minutes=i), decision="denied"))
    ledger.add_share(record("s-recent", NOW, decision="denied"))
    ledger.commit(NOW)
    result, entries = ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095, step=3)
    assert (result.shares, result.cut_seq) == (7, 8)
    cuts = [(e["cut_seq"]) for e in entries if e["reason"] == "prune"]
    assert cuts == [4, 7, 8]
    assert result.checkpoint_seq == entries[-1]["seq"]
    assert [r["share_id"] for r in query(tmp_path / "log.sqlite")] == ["s-recent"]
    checked = verify(tmp_path / "log.sqlite", KEY)
    assert checked.ok, checked.problem


def through_the_ts_index(path: Path) -> sqlite3.Connection:
    """A `connect` whose prune finds its cut through the index on `ts`, as SQLite's planner
    may choose to (this version scans the table by seq instead)."""

    class Planned(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            through = "FROM shares INDEXED BY shares_ts_partner WHERE ts"
            return super().execute(sql.replace("FROM shares WHERE ts", through), *args)

    return sqlite3.connect(path, factory=Planned, check_same_thread=False)


# Someone who can write the file but not seal: each edit has prune remove recent records.
_UNVERIFIED = {
    # The first recent share back-dated: the cut would come after it.
    "backdated": (
        ("UPDATE shares SET ts = '2001-01-01T00:00:00.000000Z' WHERE share_id = 's-new-1'",),
        "entry seq 3 (share s-new-1) was changed after it was written",
    ),
    # The index on ts rebuilt without that share, its SQL put back: the records are untouched.
    "lying_index": (
        (
            "DROP INDEX shares_ts_partner",
            "CREATE INDEX shares_ts_partner ON shares (ts, partner) WHERE share_id <> 's-new-1'",
            "PRAGMA writable_schema = ON",
            "UPDATE sqlite_master SET sql ="
            " 'CREATE INDEX shares_ts_partner ON shares (ts, partner)'"
            " WHERE name = 'shares_ts_partner'",
            "PRAGMA writable_schema = OFF",
        ),
        "the cut by date does not match the records: entry seq 3 (share s-new-1), dated ",
    ),
    "removed": (("DELETE FROM outcomes WHERE seq = 2",), "no entry has seq 2"),
    # An entry put before the start of the chain: the prune would take it, unexamined.
    "before_the_start": (
        (
            "CREATE TEMP TABLE copied AS SELECT * FROM outcomes WHERE seq = 2",
            "UPDATE copied SET seq = 0",
            "INSERT INTO outcomes SELECT * FROM copied",
        ),
        "the chain starts at seq 1, its first entry is 0",
    ),
    # Only the seal of an old record changed: a prune would take the evidence with it.
    "seal_swapped": (
        ("UPDATE shares SET mac = (SELECT mac FROM shares WHERE seq = 3) WHERE seq = 1",),
        "entry seq 1 (share s-old) is not signed with the log's key",
    ),
    # A sealed record of another copy of the log (written on after a restore) put in place of
    # one of this chain: each entry is genuine, but the next one does not link to it.
    "spliced": (
        ("ATTACH '{fork}' AS fork", "REPLACE INTO shares SELECT * FROM fork.shares WHERE seq = 1"),
        "entry seq 2 (share s-old) does not follow the entry before it",
    ),
    "prune_checkpoint_forged": (
        (
            "INSERT INTO checkpoints"
            " (seq, ts, reason, cut_seq, cut_prev_hash, prev_hash, hash, mac)"
            " SELECT 0, ts, 'prune', 4, prev_hash, prev_hash, hash, mac FROM shares WHERE seq = 4",
        ),
        "the prune checkpoint at seq 0 was changed or forged",
    ),
    # Read back as no entry is ever written: nothing of it can be checked.
    "unreadable": (
        ("UPDATE shares SET fields_sent = 'applicant.name' WHERE seq = 1",),
        "entry seq 1 (share s-old) cannot be read: column fields_sent does not hold JSON",
    ),
    "prune_checkpoint_unreadable": (
        (
            "INSERT INTO checkpoints"
            " (seq, ts, reason, cut_seq, cut_prev_hash, prev_hash, hash, mac)"
            " SELECT 0, ts, 'prune', 4, prev_hash, prev_hash, hash, X'00' FROM shares"
            " WHERE seq = 4",
        ),
        "the prune checkpoint at seq 0 cannot be read: column mac holds b'\\x00'",
    ),
}


@pytest.mark.parametrize("tampering", list(_UNVERIFIED))
@pytest.mark.parametrize("dry_run", [False, True], ids=["prune", "dry_run"])
def test_prune_removes_nothing_from_a_chain_that_does_not_verify_up_to_the_cut(
    ledger: Ledger, tmp_path: Path, tampering: str, dry_run: bool
) -> None:
    path = tmp_path / "log.sqlite"
    old = NOW - timedelta(days=2000)
    ledger.begin()
    ledger.add_share(record("s-old", old))  # seq 1, its outcome seq 2
    ledger.add_outcome(ShareOutcome("s-old", "delivered", 200, 1, 1.0), old)
    ledger.add_share(record("s-new-1", NOW - timedelta(days=2), decision="denied"))  # seq 3
    ledger.add_share(record("s-new-2", NOW - timedelta(days=1), decision="denied"))  # seq 4
    ledger.commit(NOW)
    statements, problem = _UNVERIFIED[tampering]
    fork = tmp_path / "fork.sqlite"
    if any("{fork}" in statement for statement in statements):
        forked = Ledger.open(fork, KEY)
        forked.begin()
        forked.add_share(record("s-old", old, decision="denied"))
        forked.commit(NOW)
        forked.close()
    tamper(path, *(statement.format(fork=fork) for statement in statements))
    pruner = Ledger.open(path, KEY, connect=through_the_ts_index)
    try:
        with pytest.raises(PruneUnverified, match="so nothing was pruned") as refused:
            pruner.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095, dry_run=dry_run)
    finally:
        pruner.close()
    assert problem in str(refused.value)
    conn = sqlite3.connect(path)
    try:
        kept = conn.execute("SELECT share_id FROM shares ORDER BY seq").fetchall()
        prunes = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE reason = 'prune'")
        assert (kept, prunes.fetchone()[0]) == (
            [("s-old",), ("s-new-1",), ("s-new-2",)],
            1 if tampering.startswith("prune_checkpoint") else 0,
        )
    finally:
        conn.close()
    assert not verify(path, KEY).ok  # the evidence is still there to be found


def test_a_prune_of_every_share_refuses_a_tail_cut_off_since_the_log_was_opened(
    ledger: Ledger, tmp_path: Path
) -> None:
    old = NOW - timedelta(days=2000)
    ledger.begin()
    ledger.add_share(record("s-old-1", old, decision="denied"))  # seq 1
    ledger.add_share(record("s-old-2", old, decision="denied"))  # seq 2, the signed head
    ledger.commit(NOW)
    # By someone else, while the gateway that holds the ledger runs.
    tamper(tmp_path / "log.sqlite", "DELETE FROM shares WHERE seq = 2")
    with pytest.raises(
        PruneUnverified, match=r"the log ends at seq 1, not at its signed head; run `share"
    ):
        ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095)
    assert [r["share_id"] for r in query(tmp_path / "log.sqlite")] == ["s-old-1"]


def test_prune_verifies_from_the_cut_of_the_last_prune(ledger: Ledger, tmp_path: Path) -> None:
    old = NOW - timedelta(days=2000)
    ledger.begin()
    for i in range(5):
        ledger.add_share(record(f"s-old-{i}", old + timedelta(days=i), decision="denied"))
    ledger.add_share(record("s-new", NOW, decision="denied"))
    ledger.commit(NOW)
    ledger.prune(old + timedelta(days=2), now=NOW, retention_days=1095)  # s-old-0 and 1 go
    result, _ = ledger.prune(NOW - timedelta(days=1095), now=NOW, retention_days=1095, step=2)
    assert (result.shares, result.cut_seq) == (3, 6)
    checked = verify(tmp_path / "log.sqlite", KEY)
    assert checked.ok, checked.problem
    assert [r["share_id"] for r in query(tmp_path / "log.sqlite")] == ["s-new"]
