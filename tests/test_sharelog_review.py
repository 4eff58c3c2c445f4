"""Tests for gateway.sharelog.review: query, summary, export, and verify against tampering."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import sqlite3
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import tamper

from gateway.keys import keyed_hash, subject_ref_key
from gateway.settings import ShareLogSettings
from gateway.sharelog import ShareOutcome, ShareRecord
from gateway.sharelog.chain import (
    GENESIS_HASH,
    EntryKind,
    draft_share,
    entry_hash,
    entry_mac,
    head_mac,
    seal_key,
)
from gateway.sharelog.ledger import Ledger
from gateway.sharelog.review import (
    LogChanged,
    PagePosition,
    ShareFilters,
    _page_sql,
    _reader,
    _share_seq_sql,
    _Verifier,
    _where,
    count,
    export,
    iter_page,
    iter_query,
    page,
    query,
    read_counts,
    summary,
    verify,
)
from gateway.sharelog.schema import TABLES, columns, entry_row, insert_sql, row_entry
from gateway.sharelog.store import ShareLog

KEY = b"review-master-key-" * 2
SUBJECT_KEY = subject_ref_key(KEY)
DAY1 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def ref(subject_id: str) -> str:
    return keyed_hash(SUBJECT_KEY, subject_id)


def share(
    share_id: str,
    ts: datetime,
    *,
    partner: str | None = "acme",
    decision: str = "shared",
    reason: str = "shared",
    purpose: str = "credit_assessment",
    caller: str = "billing",
    subjects: tuple[str, ...] = ("user-1",),
    sent: tuple[str, ...] = ("applicant.name", "applicant.income"),
    stripped: tuple[str, ...] = ("applicant.phone",),
    categories: tuple[str, ...] = ("identity.name", "financial.income"),
    records: int = 1,
) -> ShareRecord:
    shared = decision == "shared"
    return ShareRecord(
        share_id=share_id,
        ts=ts,
        partner=partner,
        contract_id="DPA-1" if partner else None,
        contract_version=3 if partner else None,
        contract_sha256="c0" * 32 if partner else None,
        caller=caller,
        purpose=purpose,
        method="POST",
        route="POST /v1/assess",
        decision=decision,  # type: ignore[arg-type]
        reason=reason,
        fields_sent=sent if shared else (),
        fields_stripped=stripped if shared else (),
        categories_sent=categories if shared else (),
        records=records if shared else 0,
        subject_refs=tuple(ref(s) for s in subjects),
        bytes_sent=40 if shared else 0,
    )


async def write_log(
    path: Path, shares: list[ShareRecord], outcomes: dict[str, int], *, failed: tuple[str, ...] = ()
) -> None:
    """`outcomes`: the status each share was delivered with; `failed`: shares that never left."""
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        for record in shares:
            await share_log.record(record)
            if record.share_id in outcomes:
                status = outcomes[record.share_id]
                await share_log.record_outcome(
                    ShareOutcome(record.share_id, "delivered", status, 10, 8.0)
                )
            elif record.share_id in failed:
                await share_log.record_outcome(ShareOutcome(record.share_id, "error", None, 0, 3.0))
    finally:
        await share_log.close()


# The chain these tests tamper with, by seq:
#  1 open checkpoint | 2 s-0, 3 its outcome | 4 s-1, 5 outcome | 6 s-2, 7 outcome
#  8 s-3 (denied)    | 9 s-4, 10 outcome    | 11 close checkpoint
CHAIN = [
    share("s-0", DAY1),
    share("s-1", DAY1 + timedelta(minutes=1), subjects=("user-2",)),
    share("s-2", DAY1 + timedelta(minutes=2)),
    share("s-3", DAY1 + timedelta(minutes=3), decision="denied", reason="scope_denied"),
    share("s-4", DAY1 + timedelta(minutes=4)),
]


@pytest.fixture
async def chain(tmp_path: Path) -> Path:
    path = tmp_path / "share-log.sqlite"
    await write_log(path, CHAIN, {"s-0": 200, "s-1": 200, "s-2": 200, "s-4": 200})
    return path


async def test_a_paged_query_is_the_whole_query_and_holds_no_snapshot_between_pages(
    mixed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.sharelog.review._PAGE", 2)
    whole = query(mixed, limit=None)
    assert len(whole) > 4
    assert list(iter_query(mixed, limit=None)) == whole
    assert list(iter_query(mixed, limit=3, offset=1)) == whole[1:4]
    assert list(iter_query(mixed, limit=None, partner="acme")) == query(
        mixed, limit=None, partner="acme"
    )
    # Paused after a row (a reader piping into `less`): the write-ahead file can still be reset.
    rows = iter_query(mixed, limit=None)
    next(rows)
    with sqlite3.connect(mixed) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    assert len([*rows]) == len(whole) - 1


async def test_a_paged_query_says_when_a_prune_took_rows_it_had_not_read(
    mixed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A silent gap is worse than no answer: an access request answered from it must be whole.
    monkeypatch.setattr("gateway.sharelog.review._PAGE", 2)
    whole = query(mixed, limit=None)

    def prune(upto: int) -> None:  # what `logs prune` does: the oldest shares go
        with sqlite3.connect(mixed) as conn:
            conn.execute("DELETE FROM shares WHERE seq <= ?", (whole[upto]["seq"],))

    rows = iter_query(mixed, limit=None)
    read = [next(rows), next(rows), next(rows)]
    prune(0)  # only a row already read: the rest comes whole
    assert [*read, *rows] == whole
    rows = iter_query(mixed, limit=None)
    next(rows)
    prune(3)  # rows not read yet are gone
    with pytest.raises(LogChanged, match="pruned while it was read"):
        list(rows)


async def test_pages_are_the_whole_query_in_its_order(mixed: Path) -> None:
    cases: list[ShareFilters] = [
        {},
        {"partner": "acme"},
        {"subject_ref": ref("bob")},
        {"since": DAY2},
    ]
    for filters in cases:
        whole = query(mixed, limit=None, **filters)
        rows, position = page(mixed, limit=2, **filters)
        while position is not None:
            more, position = page(mixed, limit=2, after=position, **filters)
            assert more
            rows += more
        assert rows == whole


async def test_a_page_says_when_a_prune_took_a_row_of_the_same_instant(tmp_path: Path) -> None:
    # `logs prune` removes a prefix of the chain in steps: a step may cut between two shares
    # of one instant, so a first kept share at the instant of the last row read does not show
    # that every row the prune took had been read.
    path = tmp_path / "share-log.sqlite"
    await write_log(path, [share(f"t-{i}", DAY1) for i in range(6)], {})
    first, position = page(path, limit=2)
    assert position is not None
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM shares WHERE seq <= ?", (first[1]["seq"] + 1,))
    with pytest.raises(LogChanged, match="pruned"):
        page(path, limit=2, after=position)


def _drained(
    rows: Generator[dict[str, Any], None, PagePosition | None],
) -> tuple[list[dict[str, Any]], PagePosition | None]:
    read: list[dict[str, Any]] = []
    while True:
        try:
            read.append(next(rows))
        except StopIteration as done:
            return read, done.value


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
async def test_a_streamed_page_is_the_page_and_ends_where_it_does(
    mixed: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    # Read in parts of two rows: a page ends inside a part, at its end, or parts later.
    monkeypatch.setattr("gateway.sharelog.review._PAGE", 2)
    cases: list[ShareFilters] = [{}, {"partner": "acme"}, {"subject_ref": ref("bob")}]
    for filters in cases:
        expected = page(mixed, limit=limit, **filters)
        assert _drained(iter_page(mixed, limit=limit, **filters)) == expected
        while (position := expected[1]) is not None:
            expected = page(mixed, limit=limit, after=position, **filters)
            assert _drained(iter_page(mixed, limit=limit, after=position, **filters)) == expected
        assert _drained(iter_page(mixed, limit=None, **filters))[1] is None


async def test_a_streamed_page_after_a_prune_says_to_start_from_the_first_page(
    tmp_path: Path,
) -> None:
    path = tmp_path / "share-log.sqlite"
    await write_log(path, [share(f"t-{i}", DAY1 + timedelta(minutes=i)) for i in range(6)], {})
    first, position = page(path, limit=2)
    assert position is not None
    assert read_counts(path, position) == (2, 6)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM shares WHERE seq <= ?", (first[0]["seq"],))
    assert read_counts(path, position) == (1, 5)  # a row read, then pruned, is not counted
    assert _drained(iter_page(path, limit=9, after=position))[0] == page(path, limit=9)[0][1:]
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM shares WHERE seq <= ?", (first[1]["seq"] + 2,))
    with pytest.raises(LogChanged, match="start again from the first page"):
        next(iter_page(path, limit=2, after=position))


@pytest.mark.parametrize(
    "filters",
    [{}, {"partner": "acme"}, {"reason": "shared"}, {"caller": "files"}, {"since": DAY1}],
    ids=["none", "partner", "reason", "caller", "since"],
)
async def test_a_page_reads_its_rows_off_the_time_index(mixed: Path, filters: ShareFilters) -> None:
    # A page deep into the log must cost its own rows, not a scan of those before it (an offset
    # took seconds per page on a million shares), and not a sort of every match.
    where, params = _where(**filters)
    plans = []
    for after in (None, ("2025-03-01T10:00:00.000000Z", 3)):
        sql, args = _page_sql(where, params, 1_000_000, after, 11)
        with sqlite3.connect(mixed) as conn:
            plans.append([row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)])
    first, later = plans
    assert first[0].startswith(
        ("SCAN s USING INDEX shares_ts_partner", "SEARCH s USING INDEX shares_ts_partner")
    )
    assert later[0] == "SEARCH s USING INDEX shares_ts_partner (ts>?)"
    for plan in plans:
        # Only rows of one instant are sorted, as the index orders (ts, partner, seq).
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan


@pytest.fixture
async def mixed(tmp_path: Path) -> Path:
    """Two partners over two days, every decision, three subjects."""
    path = tmp_path / "share-log.sqlite"
    shares = [
        share("a-1", DAY1, subjects=("alice",)),
        share("a-2", DAY1 + timedelta(hours=1), subjects=("alice", "bob"), records=2),
        share(
            "a-3",
            DAY1 + timedelta(hours=2),
            decision="denied",
            reason="purpose_denied",
            purpose="marketing",
            subjects=("bob",),
        ),
        share(
            "b-1",
            DAY1 + timedelta(hours=3),
            partner="cloudstore",
            purpose="service_delivery",
            caller="files",
            sent=("file.name",),
            stripped=("file.owner.phone", "file.owner.email"),
            categories=("content.file",),
            subjects=("carol",),
        ),
        share(
            "x-1",
            DAY1 + timedelta(hours=4),
            partner=None,
            decision="denied",
            reason="invalid_token",
            subjects=(),
        ),
        share("a-4", DAY2, subjects=("alice",)),
        share(
            "a-5",
            DAY2 + timedelta(hours=1),
            decision="denied",
            reason="scope_denied",
            subjects=("carol",),
        ),
    ]
    await write_log(path, shares, {"a-1": 200, "a-2": 201, "b-1": 204})
    return path


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["share_id"] for row in rows]


# --- query ----------------------------------------------------------------------------------


async def test_query_filters_combine_and_rows_come_oldest_first(mixed: Path) -> None:
    assert ids(query(mixed)) == ["a-1", "a-2", "a-3", "b-1", "x-1", "a-4", "a-5"]
    assert ids(query(mixed, partner="acme")) == ["a-1", "a-2", "a-3", "a-4", "a-5"]
    assert ids(query(mixed, partner="acme", since=DAY2)) == ["a-4", "a-5"]
    assert ids(query(mixed, partner="acme", until=DAY2)) == ["a-1", "a-2", "a-3"]
    assert ids(query(mixed, decision="denied")) == ["a-3", "x-1", "a-5"]
    assert ids(query(mixed, reason="scope_denied")) == ["a-5"]
    assert ids(query(mixed, purpose="service_delivery")) == ["b-1"]
    assert ids(query(mixed, caller="files")) == ["b-1"]
    assert ids(query(mixed, share_id="a-2")) == ["a-2"]
    assert ids(query(mixed, partner="nobody")) == []


async def test_query_finds_every_share_about_a_subject(mixed: Path) -> None:
    assert ids(query(mixed, subject_ref=ref("alice"))) == ["a-1", "a-2", "a-4"]
    assert ids(query(mixed, subject_ref=ref("bob"))) == ["a-2", "a-3"]
    assert ids(query(mixed, subject_ref=ref("bob"), decision="shared")) == ["a-2"]
    assert ids(query(mixed, subject_ref=ref("dave"))) == []
    assert ids(query(mixed, subject_ref="not-a-hash")) == []


async def test_a_subject_index_row_naming_another_persons_share_adds_nothing(
    chain: Path,
) -> None:
    # The index narrows by 64 bits of the reference; only the record itself says whose it is.
    tamper(
        chain,
        "INSERT INTO share_subjects (share_seq, subject_key)"
        " SELECT 4, subject_key FROM share_subjects WHERE share_seq = 2",  # s-1 gets s-0's
    )
    assert ids(query(chain, subject_ref=ref("user-1"), limit=None)) == ["s-0", "s-2", "s-3", "s-4"]
    assert count(chain, subject_ref=ref("user-1")) == 4


async def test_query_pages_and_counts(mixed: Path) -> None:
    assert ids(query(mixed, limit=2)) == ["a-1", "a-2"]
    assert ids(query(mixed, limit=2, offset=2)) == ["a-3", "b-1"]
    assert ids(query(mixed, limit=None, offset=5)) == ["a-4", "a-5"]
    assert count(mixed) == 7
    assert count(mixed, partner="acme", decision="shared") == 3
    assert count(mixed, subject_ref=ref("carol")) == 2


async def test_query_rows_carry_every_spec_field_and_the_outcome(mixed: Path) -> None:
    [row] = query(mixed, share_id="a-2")
    assert row["outcome"] == "delivered"
    assert (row["upstream_status"], row["latency_ms"], row["bytes_received"]) == (201, 8.0, 10)
    assert row["ts"] == "2025-03-01T10:00:00.000000Z"
    assert row["subject_refs"] == [ref("alice"), ref("bob")]
    assert row["records"] == 2
    spec_fields = [
        "share_id",
        "ts",
        "partner",
        "contract_id",
        "contract_version",
        "contract_sha256",
        "caller",
        "purpose",
        "method",
        "route",
        "decision",
        "reason",
        "upstream_status",
        "fields_sent",
        "fields_stripped",
        "fields_transformed",
        "categories_sent",
        "pii_redactions",
        "records",
        "subject_refs",
        "bytes_sent",
        "latency_ms",
        "prev_hash",
        "hash",
    ]
    assert set(spec_fields) <= set(row)
    [pending] = query(mixed, share_id="a-4")
    assert pending["outcome"] == "unknown"  # closed without an outcome


# --- summary --------------------------------------------------------------------------------


async def test_summary_per_partner_over_a_window(mixed: Path) -> None:
    rows = summary(mixed, since=DAY1, until=DAY2)
    assert [row["partner"] for row in rows] == ["acme", "cloudstore", None]
    acme, cloudstore, unresolved = rows
    assert acme == {
        "partner": "acme",
        "shares": 2,
        "records": 3,
        "subjects": 2,
        "bytes_sent": 80,
        "denied": 1,
        "errors": 0,
        "denials": {"purpose_denied": 1},
        "errors_by_reason": {},
        "outcomes": {"delivered": 2},
        "categories_sent": {"financial.income": 2, "identity.name": 2},
        "fields_sent": {"applicant.income": 2, "applicant.name": 2},
        "top_fields_stripped": [{"field": "applicant.phone", "count": 2}],
    }
    assert cloudstore["top_fields_stripped"] == [
        {"field": "file.owner.email", "count": 1},
        {"field": "file.owner.phone", "count": 1},
    ]
    assert (unresolved["shares"], unresolved["denials"]) == (0, {"invalid_token": 1})
    everything = summary(mixed)
    assert everything[0]["shares"] == 3
    assert everything[0]["denials"] == {"purpose_denied": 1, "scope_denied": 1}


async def test_summary_over_two_logs_adds_up_each_count_and_ranks_what_they_stripped_overall(
    tmp_path: Path,
) -> None:
    def sidecar(name: str, *subjects: str) -> list[ShareRecord]:
        """Ten fields of its own stripped three times each, and `email` twice: its 11th."""
        own = tuple(f"{name}.field{i}" for i in range(10))
        at = DAY1 + timedelta(minutes=len(name))
        return [
            share(f"{name}-1", at, stripped=(*own, "applicant.email"), subjects=subjects),
            share(f"{name}-2", at, stripped=(*own, "applicant.email"), subjects=subjects),
            share(f"{name}-3", at, stripped=own, subjects=subjects),
            share(f"{name}-4", at, decision="error", reason="upstream_timeout"),
            share(f"{name}-5", at, decision="denied", reason="scope_denied"),
        ]

    logs = [tmp_path / "booking.sqlite", tmp_path / "billing.sqlite"]
    await write_log(logs[0], sidecar("booking", "alice", "bob"), {})
    await write_log(logs[1], sidecar("billing", "alice"), {})
    [acme] = summary(*logs)
    assert (acme["shares"], acme["subjects"]) == (6, 2)  # alice, in both logs, is one subject
    # Stripped four times in all, more often than any other field, though never among the
    # ten a log strips most.
    assert acme["top_fields_stripped"][0] == {"field": "applicant.email", "count": 4}
    assert len(acme["top_fields_stripped"]) == 10
    assert (acme["errors"], acme["errors_by_reason"]) == (2, {"upstream_timeout": 2})
    assert (acme["denied"], acme["denials"]) == (2, {"scope_denied": 2})


# A share that reached acme, and one that never left: other fields, categories and person.
REACHED = share(
    "ok-1", DAY1, subjects=("alice",), sent=("applicant.name",), categories=("identity.name",)
)
NEVER_LEFT = share(
    "lost-1",
    DAY1 + timedelta(minutes=1),
    subjects=("bob",),
    sent=("applicant.income",),
    categories=("financial.income",),
    records=2,
)


@pytest.mark.parametrize("logs", [1, 2])
async def test_summary_counts_as_sent_only_the_shares_that_may_have_reached_the_partner(
    tmp_path: Path, logs: int
) -> None:
    paths = [tmp_path / f"sidecar-{n}.sqlite" for n in range(logs)]
    if logs == 1:
        await write_log(paths[0], [REACHED, NEVER_LEFT], {"ok-1": 200}, failed=("lost-1",))
    else:
        await write_log(paths[0], [REACHED], {"ok-1": 200})
        await write_log(paths[1], [NEVER_LEFT], {}, failed=("lost-1",))
    [acme] = summary(*paths)
    # Both were shared, and the outcomes say which one never left.
    assert (acme["shares"], acme["outcomes"]) == (2, {"delivered": 1, "error": 1})
    assert (acme["records"], acme["subjects"], acme["bytes_sent"]) == (1, 1, 40)
    assert acme["categories_sent"] == {"identity.name": 1}
    assert acme["fields_sent"] == {"applicant.name": 1}
    # What the contract stripped is stripped whether or not the rest left.
    assert acme["top_fields_stripped"] == [{"field": "applicant.phone", "count": 2}]


async def test_a_share_with_no_outcome_yet_counts_as_sent_and_one_that_never_left_does_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "share-log.sqlite"
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        await share_log.record(REACHED)  # in flight: its outcome is not written yet
        await share_log.record(NEVER_LEFT)
        await share_log.record_outcome(ShareOutcome("lost-1", "error", None, 0, 3.0))
        [acme] = summary(path)
    finally:
        await share_log.close()
    assert (acme["shares"], acme["outcomes"]) == (2, {"error": 1, "pending": 1})
    assert (acme["records"], acme["subjects"], acme["bytes_sent"]) == (1, 1, 40)
    assert acme["categories_sent"] == {"identity.name": 1}
    assert acme["fields_sent"] == {"applicant.name": 1}


# --- verify ---------------------------------------------------------------------------------


def reforge(
    path: Path, seq: int, change: Callable[[dict[str, Any]], None], *, key: bytes | None = None
) -> None:
    """What someone with write access but without the key can do: edit, then re-hash onwards.

    With the log's `key`: what the gateway itself writes when the file misleads it.
    """
    conn = sqlite3.connect(path)
    try:
        rows: list[tuple[int, EntryKind, dict[str, Any]]] = []
        for kind, (table, _) in TABLES.items():
            select = f"SELECT {', '.join(columns(kind))} FROM {table} WHERE seq >= ?"  # noqa: S608
            for row in conn.execute(select, (seq,)):
                rows.append((row[0], kind, row_entry(kind, row)))
        rows.sort(key=lambda item: item[0])
        prev = conn.execute(
            "SELECT hash FROM (SELECT seq, hash FROM shares UNION ALL SELECT seq, hash FROM "
            "outcomes UNION ALL SELECT seq, hash FROM checkpoints) WHERE seq = ?",
            (seq - 1,),
        ).fetchone()[0]
        sealing = seal_key(key or b"a guess at the key")
        for _, kind, entry in rows:
            entry.pop("hash")
            entry.pop("mac")
            if entry["seq"] == seq:
                change(entry)
            entry["prev_hash"] = prev
            entry["hash"] = prev = entry_hash(entry)
            entry["mac"] = entry_mac(sealing, entry["hash"])
            replace = insert_sql(kind).replace("INSERT", "INSERT OR REPLACE", 1)
            conn.execute(replace, entry_row(entry))
        conn.execute("UPDATE head SET hash = ?", (prev,))
        if key is not None:
            seq_now = conn.execute("SELECT seq FROM head").fetchone()[0]
            conn.execute("UPDATE head SET mac = ?", (head_mac(sealing, seq_now, prev),))
        conn.commit()
    finally:
        conn.close()


async def test_an_untouched_log_verifies(chain: Path) -> None:
    result = verify(chain, KEY)
    assert result.ok, result.problem
    assert (result.entries, result.shares, result.outcomes, result.checkpoints) == (11, 5, 4, 2)
    assert (result.first_seq, result.last_seq, result.head_seq) == (1, 11, 11)


async def test_a_changed_field_is_found_at_its_record(chain: Path) -> None:
    tamper(chain, "UPDATE shares SET purpose = 'marketing' WHERE share_id = 's-1'")
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("changed", 4, "s-1")


async def test_a_changed_outcome_is_found_at_its_entry(chain: Path) -> None:
    tamper(chain, "UPDATE outcomes SET upstream_status = 500 WHERE seq = 7")
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("changed", 7, "s-2")


@pytest.mark.parametrize(
    ("change", "seq", "share_id"),
    [
        # orjson writes infinity as null: hashed, it would pass for a null it replaced.
        ("UPDATE outcomes SET latency_ms = 9e999 WHERE seq = 7", 7, "s-2"),
        ("UPDATE outcomes SET upstream_status = -9e999 WHERE seq = 7", 7, "s-2"),
        ("UPDATE shares SET partner = CAST(partner AS BLOB) WHERE share_id = 's-1'", 4, "s-1"),
    ],
    ids=["infinity", "minus_infinity", "blob"],
)
async def test_a_value_no_entry_is_written_with_is_found_at_its_record(
    chain: Path, change: str, seq: int, share_id: str
) -> None:
    tamper(chain, change)
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("unreadable", seq, share_id)
    assert "which no entry is written with" in problem.message


def test_infinity_in_place_of_a_null_is_not_read_as_that_null() -> None:
    row: list[object] = list(range(len(columns("outcome"))))
    row[columns("outcome").index("upstream_status")] = float("inf")
    with pytest.raises(ValueError, match="upstream_status holds inf"):
        row_entry("outcome", row)


async def test_a_removed_record_is_named_by_its_seq(chain: Path) -> None:
    tamper(chain, "DELETE FROM shares WHERE share_id = 's-2'")
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("removed", 6)
    assert "seq 5 (share s-1)" in problem.message
    assert "seq 7 (share s-2)" in problem.message  # the orphaned outcome follows the gap


async def test_a_removed_record_with_the_rest_renumbered_is_found(chain: Path) -> None:
    tamper(
        chain,
        "DELETE FROM shares WHERE seq = 6",
        "UPDATE outcomes SET seq = seq - 1 WHERE seq > 6",
        "UPDATE shares SET seq = seq - 1 WHERE seq > 6",
        "UPDATE checkpoints SET seq = seq - 1 WHERE seq > 6",
    )
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("removed", 6, "s-2")


async def test_an_entry_copied_to_the_seq_of_another_is_found_as_inserted(chain: Path) -> None:
    # The open checkpoint, genuine and sealed, given the seq of share s-2 in a table of its own.
    tamper(
        chain,
        "CREATE TEMP TABLE copied AS SELECT * FROM checkpoints WHERE seq = 1",
        "UPDATE copied SET seq = 6",
        "INSERT INTO checkpoints SELECT * FROM copied",
    )
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.message) == ("inserted", 6, "two entries have seq 6")


async def test_two_swapped_records_are_reported_as_reordered(chain: Path) -> None:
    tamper(
        chain,
        "UPDATE shares SET seq = -1 WHERE seq = 4",
        "UPDATE shares SET seq = 4 WHERE seq = 6",
        "UPDATE shares SET seq = 6 WHERE seq = -1",
    )
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("reordered", 4, "s-2")


@pytest.mark.parametrize(
    ("first_removed", "last_kept"),
    [(9, "seq 8 (share s-3)"), (11, "seq 10 (share s-4)")],
    ids=["three_entries", "the_last_entry"],
)
async def test_a_truncated_tail_is_found_through_the_signed_head(
    chain: Path, first_removed: int, last_kept: str
) -> None:
    tamper(
        chain,
        *(
            f"DELETE FROM {table} WHERE seq >= {first_removed}"  # noqa: S608
            for table in ("shares", "outcomes", "checkpoints")
        ),
    )
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("truncated", first_removed)
    assert f"the log ends at {last_kept} but its signed head is at seq 11" in problem.message


async def test_a_truncated_tail_with_a_rewritten_head_fails_the_head_seal(chain: Path) -> None:
    tamper(
        chain,
        "DELETE FROM checkpoints WHERE seq = 11",
        "UPDATE head SET seq = 10, hash = (SELECT hash FROM outcomes WHERE seq = 10)",
    )
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("head", 10)


async def test_a_signed_head_put_back_from_an_older_copy_is_found(chain: Path) -> None:
    conn = sqlite3.connect(chain)
    try:
        [older] = conn.execute("SELECT seq, hash, mac FROM head").fetchall()
    finally:
        conn.close()
    # The gateway runs on (seq 12 open, 13 s-5, 14 its outcome, 15 close); then the head
    # of the earlier copy, genuinely signed, is put back over the current one.
    await write_log(chain, [share("s-5", DAY1 + timedelta(minutes=5))], {"s-5": 200})
    conn = sqlite3.connect(chain)
    try:
        conn.execute("UPDATE head SET seq = ?, hash = ?, mac = ?", older)
        conn.commit()
    finally:
        conn.close()
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.message) == (
        "head",
        15,
        "the log ends at seq 15, which is not its signed head (seq 11)",
    )


async def test_rehashing_without_the_key_is_found_at_the_changed_record(chain: Path) -> None:
    def to_marketing(entry: dict[str, Any]) -> None:
        entry["purpose"] = "marketing"

    reforge(chain, 4, to_marketing)
    # The chain of plain hashes is consistent again...
    conn = sqlite3.connect(chain)
    links = conn.execute("SELECT prev_hash FROM outcomes WHERE seq = 5").fetchone()[0]
    own = conn.execute("SELECT hash FROM shares WHERE seq = 4").fetchone()[0]
    conn.close()
    assert links == own
    # ...but the rewritten record's seal is not the log's.
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("forged", 4, "s-1")


async def test_a_prune_checkpoint_made_without_the_key_is_found_as_forged(chain: Path) -> None:
    # The first records removed, and a prune checkpoint made up that starts the chain after them.
    conn = sqlite3.connect(chain)
    try:
        [(cut_prev,)] = conn.execute("SELECT prev_hash FROM shares WHERE seq = 4").fetchall()
        for table in ("shares", "outcomes", "checkpoints"):
            conn.execute(f"DELETE FROM {table} WHERE seq < 4")  # noqa: S608
        conn.execute("DELETE FROM share_subjects WHERE share_seq < 4")
        made_up: dict[str, Any] = {
            "kind": "checkpoint",
            "seq": 0,
            "prev_hash": GENESIS_HASH,
            "ts": "2025-03-01T09:00:00.000000Z",
            "reason": "prune",
            "cut_seq": 4,
            "cut_prev_hash": cut_prev,
        }
        made_up["hash"] = entry_hash(made_up)
        made_up["mac"] = entry_mac(seal_key(b"a guess at the key"), made_up["hash"])
        conn.execute(insert_sql("checkpoint"), entry_row(made_up))
        conn.commit()
    finally:
        conn.close()
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("forged", 0)
    assert problem.message == "the prune checkpoint at seq 0 was forged"


async def test_a_prune_checkpoint_that_cannot_be_read_is_named_as_unreadable(chain: Path) -> None:
    ledger = Ledger.open(chain, KEY)
    try:
        # s-0 and s-1 go: the chain then starts at the cut the prune checkpoint (seq 12) seals.
        ledger.prune(
            DAY1 + timedelta(minutes=2), now=DAY1 + timedelta(days=1200), retention_days=1095
        )
    finally:
        ledger.close()
    tamper(chain, "UPDATE checkpoints SET mac = X'00' WHERE reason = 'prune'")
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("unreadable", 12)
    assert problem.message == (
        "the prune checkpoint at seq 12 cannot be read: column mac holds b'\\x00', "
        "which no entry is written with"
    )


async def test_verifying_with_another_key_says_so(chain: Path) -> None:
    problem = verify(chain, b"another-key" * 4).problem
    assert problem is not None
    assert problem.kind == "key"


@pytest.mark.parametrize(
    ("statement", "seq", "share_id", "message"),
    [
        (
            "DELETE FROM share_subjects WHERE share_seq = 4",
            4,
            "s-1",
            "the subject index of seq 4 (share s-1) does not match its record",
        ),
        # Seq 3 is an outcome: a lookup by subject would find nothing there, or a share later.
        (
            "INSERT INTO share_subjects SELECT 3, subject_key FROM share_subjects"
            " WHERE share_seq = 2",
            3,
            None,
            "the subject index lists seq 3, which is not a share",
        ),
        # Past the last entry: no entry of the walk meets it.
        (
            "INSERT INTO share_subjects SELECT 99, subject_key FROM share_subjects"
            " WHERE share_seq = 2",
            99,
            None,
            "the subject index lists seq 99, which is not a share",
        ),
    ],
    ids=["hides_a_share", "lists_an_outcome", "lists_a_seq_past_the_end"],
)
async def test_a_subject_index_that_does_not_match_the_shares_fails(
    chain: Path, statement: str, seq: int, share_id: str | None, message: str
) -> None:
    tamper(chain, statement)
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("index", seq, share_id)
    assert problem.message == message


async def test_a_damaged_json_column_is_unreadable_not_a_crash(chain: Path) -> None:
    tamper(chain, "UPDATE shares SET fields_sent = '[oops' WHERE seq = 6")
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("unreadable", 6)


@pytest.mark.parametrize("closed_by", ["open", "close"])
async def test_a_share_left_open_without_its_pending_row_does_not_verify(
    tmp_path: Path, closed_by: str
) -> None:
    path = tmp_path / "share-log.sqlite"
    settings = ShareLogSettings(path=path, stdout=False)
    if closed_by == "open":
        ledger = Ledger.open(path, KEY)  # a gateway that recorded s-1, then died
        ledger.begin()
        ledger.add_checkpoint("open", DAY1)
        ledger.add_share(draft_share(share("s-1", DAY1)))
        ledger.commit(DAY1)
        ledger.close()
        tamper(path, "DELETE FROM pending_outcomes")
        # The restart finds no open share to close as `unknown`.
        await (await ShareLog.open(settings, KEY)).close()
    else:
        share_log = await ShareLog.open(settings, KEY)
        await share_log.record(share("s-1", DAY1))
        tamper(path, "DELETE FROM pending_outcomes")
        await share_log.close()  # finds no open share to close as `unknown` either
    # s-1 reads as pending for good.
    [row] = query(path, limit=None)
    assert row["outcome"] == "pending"
    problem = verify(path, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("outcome", 2, "s-1")
    assert f"no outcome before the {closed_by} checkpoint at seq 3" in problem.message


async def test_text_that_is_not_utf8_is_found_at_its_entry(chain: Path) -> None:
    # Rows are read ahead from three tables at once: the one read last is not the damaged one.
    tamper(chain, "UPDATE shares SET caller = CAST(x'ff41' AS TEXT) WHERE seq = 6")
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == ("unreadable", 6)


@pytest.mark.parametrize(
    ("change", "seq", "share_id"),
    [
        # Text and a blob of the key's digits, which Python's int() reads as the same number,
        # but a lookup by subject compares as stored and misses.
        (
            "UPDATE share_subjects SET subject_key = CASE WHEN subject_key < 0"
            " THEN '-0_' || -subject_key ELSE '0_' || subject_key END WHERE share_seq = 4",
            4,
            "s-1",
        ),
        (
            "UPDATE share_subjects SET subject_key = CAST(CAST(subject_key AS TEXT) AS BLOB)"
            " WHERE share_seq = 4",
            4,
            "s-1",
        ),
        ("UPDATE share_subjects SET share_seq = '0_9' WHERE share_seq = 9", None, None),
        # Past the last entry, where no share is left to compare it with.
        ("INSERT INTO share_subjects VALUES (99, '0_1')", 99, None),
    ],
    ids=["key_as_text", "key_as_blob", "seq_as_text", "key_as_text_past_the_end"],
)
async def test_a_subject_index_value_of_another_type_fails(
    chain: Path, change: str, seq: int | None, share_id: str | None
) -> None:
    tamper(chain, change)
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("index", seq, share_id)
    assert "where the gateway writes an integer" in problem.message


@pytest.mark.parametrize(
    ("column", "text"),
    [
        ("fields_sent", '["applicant.name", "applicant.income"]'),
        ("subject_refs", None),
    ],
    ids=["respaced", "escaped"],
)
async def test_a_json_column_that_only_parses_alike_is_changed(
    chain: Path, column: str, text: str | None
) -> None:
    if text is None:  # the same references, every character escaped
        escaped = "".join(f"\\u{ord(c):04x}" for c in ref("user-2"))
        text = f'["{escaped}"]'
    conn = sqlite3.connect(chain)
    conn.execute(f"UPDATE shares SET {column} = ? WHERE seq = 4", (text,))  # noqa: S608
    conn.commit()
    conn.close()
    assert [r["share_id"] for r in query(chain, subject_ref=ref("user-2"))] == ["s-1"]
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("changed", 4, "s-1")
    assert f"its {column} is not the JSON text the gateway wrote" in problem.message


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        (
            (
                "CREATE TRIGGER share_subjects_ai AFTER INSERT ON share_subjects"
                " BEGIN UPDATE share_subjects SET subject_key = 'x' || NEW.subject_key"
                " WHERE share_seq = NEW.share_seq; END",
            ),
            "the file holds a trigger share_subjects_ai on share_subjects "
            "that the gateway does not create",
        ),
        (
            ("CREATE VIEW recent AS SELECT * FROM shares",),
            "the file holds a view recent that the gateway does not create",
        ),
        (
            ("CREATE INDEX shares_partner ON shares (partner)",),
            "the file holds a index shares_partner on shares that the gateway does not create",
        ),
        (
            ("CREATE TABLE notes (text TEXT)",),
            "the file holds a table notes that the gateway does not create",
        ),
        (
            (
                "DROP INDEX shares_ts_partner",
                "CREATE INDEX shares_ts_partner ON shares (ts, partner) WHERE partner <> 'x'",
            ),
            "the index shares_ts_partner is not as the gateway creates it (its SQL differs)",
        ),
        (
            ("DROP INDEX outcomes_share_seq",),
            "the index outcomes_share_seq the gateway creates is missing",
        ),
        (
            ("CREATE VIEW a AS SELECT 1", "CREATE VIEW b AS SELECT 2"),
            "the file holds a view a that the gateway does not create (and 1 more)",
        ),
    ],
    ids=["trigger", "view", "index", "table", "changed_sql", "missing_index", "two"],
)
async def test_an_object_the_gateway_does_not_create_is_named(
    chain: Path, statements: tuple[str, ...], message: str
) -> None:
    tamper(chain, *statements)
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.message) == ("schema", None, message)


async def test_sqlite_statistics_are_not_a_change_of_schema(chain: Path) -> None:
    tamper(chain, "ANALYZE")  # tells the query planner how big things are; no read changes
    result = verify(chain, KEY)
    assert result.ok, result.problem


async def test_an_index_that_hides_rows_behind_its_own_sql_fails(chain: Path) -> None:
    # Rebuilt partial, its SQL text put back: the schema reads as the gateway's own.
    tamper(
        chain,
        "DROP INDEX shares_ts_partner",
        "CREATE INDEX shares_ts_partner ON shares (ts, partner) WHERE share_id <> 's-1'",
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_master SET sql = 'CREATE INDEX shares_ts_partner ON shares (ts, partner)'"
        " WHERE name = 'shares_ts_partner'",
        "PRAGMA writable_schema = OFF",
    )
    assert "s-1" not in [r["share_id"] for r in query(chain)]  # every read through it misses s-1
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert problem.kind == "integrity"
    assert problem.message.startswith(
        "SQLite's integrity check of the file fails: row 2 missing from index shares_ts_partner"
    )


def relink(share_id: str | None = None, share_seq: int | None = None) -> Any:
    def change(entry: dict[str, Any]) -> None:
        if share_id is not None:
            entry["share_id"] = share_id
        entry["share_seq"] = share_seq

    return change


@pytest.mark.parametrize(
    ("seq", "change", "message"),
    [
        (
            7,
            relink(share_seq=4),
            "outcome seq 7 (share s-2) is linked to seq 4, which is share s-1",
        ),
        (
            7,
            relink(share_seq=None),
            "outcome seq 7 (share s-2) is not linked to its share, which is open at seq 6: its "
            "row in pending_outcomes was removed or altered, and the share reads as pending",
        ),
        (
            10,
            relink(share_seq=8),
            "outcome seq 10 (share s-4) is linked to seq 8, which was not shared (denied)",
        ),
        (
            7,
            relink(share_seq=1),
            "outcome seq 7 (share s-2) is linked to seq 1, which is not a share",
        ),
        (
            7,
            relink(share_seq=9),
            "outcome seq 7 (share s-2) is linked to seq 9, which does not come before it",
        ),
        (
            7,
            relink("s-1", share_seq=4),
            "outcome seq 7 (share s-1) is a second outcome of seq 4, whose outcome is at seq 5",
        ),
    ],
    ids=["another_share", "unlinked", "a_denial", "a_checkpoint", "a_later_share", "second"],
)
async def test_an_outcome_sealed_against_the_wrong_share_fails(
    chain: Path, seq: int, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    # What the gateway seals when the file's pending_outcomes misleads it.
    reforge(chain, seq, change, key=KEY)
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.message) == ("outcome", seq, message)


def outcome_links(path: Path) -> list[tuple[str, int | None]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT share_id, share_seq FROM outcomes ORDER BY seq").fetchall()
    finally:
        conn.close()


async def test_the_outcomes_a_gateway_leaves_unlinked_verify(tmp_path: Path) -> None:
    path = tmp_path / "share-log.sqlite"
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        await share_log.record(share("s-0", DAY1))
        await share_log.record(share("s-1", DAY1, decision="denied", reason="scope_denied"))
        for share_id in ("s-0", "s-1", "never-recorded"):
            await share_log.record_outcome(ShareOutcome(share_id, "delivered", 200, 1, 1.0))
    finally:
        await share_log.close()
    assert outcome_links(path) == [("s-0", 2), ("s-1", None), ("never-recorded", None)]
    result = verify(path, KEY)
    assert result.ok, result.problem


async def test_an_outcome_that_lands_after_its_share_was_pruned_verifies(tmp_path: Path) -> None:
    path = tmp_path / "share-log.sqlite"
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        await share_log.record(share("s-0", DAY1))
        await share_log.record(share("s-1", DAY2))
        # `logs prune` while s-0 is in flight: its record and its pending row go.
        pruner = Ledger.open(path, KEY)
        try:
            pruner.prune(DAY2, now=DAY2 + timedelta(days=1095), retention_days=1095)
        finally:
            pruner.close()
        for share_id in ("s-0", "s-1"):
            await share_log.record_outcome(ShareOutcome(share_id, "delivered", 200, 1, 1.0))
    finally:
        await share_log.close()
    assert outcome_links(path) == [("s-0", None), ("s-1", 3)]
    result = verify(path, KEY)
    assert result.ok, result.problem


async def test_verify_remembers_only_the_closed_shares_an_unlinked_outcome_names(
    chain: Path,
) -> None:
    # Not every share id of a log of millions: those of its few unlinked outcomes.
    ledger = Ledger.open(chain, KEY)
    try:
        ledger.begin()
        ledger.add_outcome(ShareOutcome("never-recorded", "error", None, 0, 1.0), DAY2)
        ledger.commit(DAY2)
    finally:
        ledger.close()
    with _reader(chain) as conn:
        verifier = _Verifier(conn, KEY)
        result = verifier.run()
    assert result.ok, result.problem
    assert verifier.links.unlinked_ids == set(verifier.links.closed) == {"never-recorded"}


async def second_outcome_through_the_share_log(path: Path) -> None:
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        await share_log.record(share("s-0", DAY1))  # seq 2
        for outcome in ("delivered", "error"):  # seqs 3 and 4: a caller's slip
            await share_log.record_outcome(ShareOutcome("s-0", outcome, None, 0, 1.0))
    finally:
        await share_log.close()


def second_outcome_through_the_ledger(path: Path, transactions: int) -> None:
    """A writer that appends two outcomes for s-0, each chained and sealed with the key."""
    ledger = Ledger.open(path, KEY)
    try:
        ledger.begin()
        ledger.add_share(draft_share(share("s-0", DAY1)))  # seq 1
        ledger.add_outcome(ShareOutcome("never-recorded", "error", None, 0, 1.0), DAY1)  # 2
        ledger.commit(DAY1)
        ledger.begin()
        ledger.add_outcome(ShareOutcome("s-0", "delivered", 200, 1, 1.0), DAY1)  # seq 3
        if transactions == 2:
            ledger.commit(DAY1)
            ledger.begin()
        ledger.add_outcome(ShareOutcome("s-0", "delivered", 200, 1, 1.0), DAY1)  # seq 4
        ledger.commit(DAY1)
    finally:
        ledger.close()


async def second_outcome_after_recovery(path: Path) -> None:
    """s-0 left open by a gateway that died; the next start closes it as `unknown`; then an
    outcome for it is appended all the same (a second gateway on the file, say)."""
    died = Ledger.open(path, KEY)
    died.begin()
    died.add_share(draft_share(share("s-0", DAY1)))  # seq 1
    died.commit(DAY1)
    died.close()
    # Its `unknown` outcome at seq 2, the open checkpoint at 3, the close checkpoint at 4.
    await (await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)).close()
    late = Ledger.open(path, KEY)
    late.begin()
    late.add_outcome(ShareOutcome("s-0", "delivered", 200, 1, 1.0), DAY1)  # seq 5
    late.commit(DAY1)
    late.close()


@pytest.mark.parametrize(
    ("written", "second", "share_seq", "first"),
    [
        ("through_the_share_log", 4, 2, 3),
        ("in_the_transaction_of_the_first", 4, 1, 3),
        ("in_a_later_transaction", 4, 1, 3),
        ("after_the_unknown_one_of_a_restart", 5, 1, 2),
    ],
)
async def test_a_second_outcome_of_a_share_the_log_holds_fails(
    tmp_path: Path, written: str, second: int, share_seq: int, first: int
) -> None:
    path = tmp_path / "share-log.sqlite"
    if written == "through_the_share_log":
        await second_outcome_through_the_share_log(path)
    elif written == "after_the_unknown_one_of_a_restart":
        await second_outcome_after_recovery(path)
    else:
        second_outcome_through_the_ledger(path, 1 if "the_first" in written else 2)
    links = outcome_links(path)
    assert links[-1] == ("s-0", None)
    assert ("s-0", share_seq) in links
    problem = verify(path, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.share_id) == ("outcome", second, "s-0")
    assert problem.message == (
        f"outcome seq {second} (share s-0) is a second, unlinked outcome of seq {share_seq}, "
        f"whose outcome is at seq {first}: the gateway writes one per share, and `logs query` "
        "shows only the first"
    )


async def test_a_second_outcome_of_a_pruned_share_fails(tmp_path: Path) -> None:
    path = tmp_path / "share-log.sqlite"
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        await share_log.record(share("s-0", DAY1))  # seq 2, after the open checkpoint
        await share_log.record(share("s-1", DAY2))  # seq 3
        await share_log.record_outcome(ShareOutcome("s-0", "delivered", 200, 1, 1.0))  # seq 4
        pruner = Ledger.open(path, KEY)
        try:
            pruner.prune(DAY2, now=DAY2 + timedelta(days=1095), retention_days=1095)
        finally:
            pruner.close()
        assert verify(path, KEY).ok
        await share_log.record_outcome(ShareOutcome("s-0", "error", None, 0, 1.0))
    finally:
        await share_log.close()
    assert outcome_links(path) == [("s-0", 2), ("s-0", None), ("s-1", 3)]  # s-1: unknown at close
    problem = verify(path, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.share_id) == ("outcome", "s-0")
    assert problem.message == (
        f"outcome seq {problem.seq} (share s-0) is a second, unlinked outcome of seq 2, whose "
        "outcome is at seq 4: the gateway writes one per share, and `logs query` shows only "
        "the first"
    )


async def test_two_outcomes_of_a_share_never_recorded_fail(tmp_path: Path) -> None:
    path = tmp_path / "share-log.sqlite"
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        for outcome in ("delivered", "error"):
            await share_log.record_outcome(ShareOutcome("never-recorded", outcome, None, 0, 1.0))
    finally:
        await share_log.close()
    first, second = (seq for (seq,) in seqs_of_outcomes(path, "never-recorded"))
    problem = verify(path, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.message) == (
        "outcome",
        second,
        f"outcome seq {second} (share never-recorded) is a second, unlinked outcome whose first "
        f"outcome is at seq {first}: the gateway writes one per share, and `logs query` shows "
        "only the first",
    )


def seqs_of_outcomes(path: Path, share_id: str) -> list[tuple[int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT seq FROM outcomes WHERE share_id = ? ORDER BY seq", (share_id,)
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "statements",
    [
        ("UPDATE head SET checkpoint_seq = 9000000000000000000",),
        ("UPDATE head SET checkpoint_seq = 1",),
    ],
    ids=["ahead", "behind"],
)
async def test_a_head_naming_another_last_checkpoint_fails(
    chain: Path, statements: tuple[str, ...]
) -> None:
    tamper(chain, *statements)
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert problem.kind == "head"
    assert "but the last checkpoint of the log is seq 11: the head was altered" in problem.message


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        (
            (
                "DELETE FROM shares",
                "DELETE FROM outcomes",
                "DELETE FROM checkpoints",
                "DELETE FROM share_subjects",
                "DELETE FROM head",
            ),
            "the log has no signed head and no entries: both were removed",
        ),
        (("DELETE FROM head",), "the log has entries but no signed head"),
        (
            (
                "PRAGMA ignore_check_constraints = ON",
                "INSERT INTO head SELECT 2, seq, hash, mac, checkpoint_seq FROM head",
            ),
            "the log has 2 heads; it has one",
        ),
        (
            ("UPDATE head SET seq = CAST(CAST(seq AS TEXT) AS BLOB)",),
            "the head (last seq and hash) was altered",
        ),
        # Moved past the last entry, it would read as entries removed from the tail.
        (("UPDATE head SET seq = seq + 1",), "the head (last seq and hash) was altered"),
    ],
    ids=["no_head_no_entries", "no_head", "two_heads", "seq_as_blob", "seq_moved_on"],
)
async def test_a_log_without_its_one_signed_head_fails(
    chain: Path, statements: tuple[str, ...], message: str
) -> None:
    tamper(chain, *statements)
    result = verify(chain, KEY)
    assert not result.ok
    assert result.problem is not None
    assert (result.problem.kind, result.problem.message) == ("head", message)


# --- export ---------------------------------------------------------------------------------


def independent_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


async def test_an_export_can_be_checked_without_the_gateway(chain: Path) -> None:
    out = io.StringIO()
    result = export(chain, None, None, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    header, entries, head = lines[0], lines[1:-1], lines[-1]
    assert header["kind"] == "export"
    assert (result.entries, result.first_seq, result.last_seq) == (11, 1, 11)
    assert [e["seq"] for e in entries] == list(range(1, 12))
    prev = GENESIS_HASH
    for entry in entries:
        assert entry["prev_hash"] == prev
        assert independent_hash(entry) == entry["hash"]
        prev = entry["hash"]
    assert (head["kind"], head["seq"], head["hash"]) == ("head", 11, prev)
    assert [e["kind"] for e in entries].count("checkpoint") == 2


async def test_an_export_window_is_a_contiguous_run_with_the_outcomes(chain: Path) -> None:
    out = io.StringIO()
    since = DAY1 + timedelta(minutes=1)
    until = DAY1 + timedelta(minutes=3)  # s-1 and s-2
    result = export(chain, since, until, out)
    entries = [json.loads(line) for line in out.getvalue().splitlines()][1:-1]
    assert [e["seq"] for e in entries] == [4, 5, 6, 7]
    assert [e.get("share_id") for e in entries] == ["s-1", "s-1", "s-2", "s-2"]
    assert result.entries == 4
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["hash"]
    # A window of one refusal is that one entry (it has no outcome).
    out = io.StringIO()
    result = export(chain, DAY1 + timedelta(minutes=3), DAY1 + timedelta(minutes=4), out)
    entries = [json.loads(line) for line in out.getvalue().splitlines()][1:-1]
    assert [(e["seq"], e["share_id"]) for e in entries] == [(8, "s-3")]
    assert (result.entries, result.first_seq, result.last_seq) == (1, 8, 8)


@pytest.mark.parametrize(
    ("fn", "bound"),
    [("MIN", {"since": DAY1}), ("MAX", {"until": DAY1})],
    ids=["since", "until"],
)
async def test_an_export_window_finds_its_ends_in_the_time_index(
    chain: Path, fn: Literal["MIN", "MAX"], bound: ShareFilters
) -> None:
    # Walked in seq order, the table was read whole up to the window's first share (or back
    # from the end to its last): minutes on a log of millions of shares not in the cache.
    where, params = _where(**bound)
    with sqlite3.connect(chain) as conn:
        plan = [
            row[3]
            for row in conn.execute(f"EXPLAIN QUERY PLAN {_share_seq_sql(fn, where)}", params)
        ]
    assert plan == [
        "SEARCH s USING COVERING INDEX shares_ts_partner " + ("(ts>?)" if fn == "MIN" else "(ts<?)")
    ]


async def test_a_dropped_table_is_named_not_a_crash(chain: Path) -> None:
    tamper(chain, "DROP TABLE share_subjects")
    problem = verify(chain, KEY).problem
    assert problem is not None
    assert problem.kind == "schema"
    assert problem.message == "the table share_subjects the gateway creates is missing"
