"""Tests for gateway.sharelog.commands: `share-gateway logs ...` output and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import dataclasses
import hmac
import io
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Self
from zoneinfo import ZoneInfo

import orjson
import pytest
from conftest import tamper

from gateway.arguments import add_logs
from gateway.cli import build_parser
from gateway.keys import keyed_hash, subject_ref_key
from gateway.settings import Settings, ShareLogSettings
from gateway.sharelog import ShareOutcome, ShareRecord
from gateway.sharelog.chain import (
    EntryKind,
    entry_hash,
    head_mac,
    header_mac,
    seal_key,
    unsealed,
)
from gateway.sharelog.commands import (
    _CURSOR_KEY,
    UsageError,
    _export_to,
    _write_json,
    parse_time,
)
from gateway.sharelog.cursor import binding
from gateway.sharelog.ledger import Ledger
from gateway.sharelog.review import QUERY_FIELDS, query, summary, verify
from gateway.sharelog.schema import COMPANION_SUFFIXES, row_entry, select_sql
from gateway.sharelog.store import ShareLog

HASH_KEY = "cli-master-key-" * 3
KEY_ENV = "SHARE_GATEWAY_HASH_KEY"
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)  # 17:00 in Shanghai


def ref(subject_id: str) -> str:
    return keyed_hash(subject_ref_key(HASH_KEY.encode()), subject_id)


def share(
    share_id: str,
    ts: datetime,
    *,
    partner: str = "acme",
    decision: str = "shared",
    reason: str = "shared",
    subjects: tuple[str, ...] = ("alice",),
) -> ShareRecord:
    shared = decision == "shared"
    return ShareRecord(
        share_id=share_id,
        ts=ts,
        partner=partner,
        contract_id="DPA-1",
        contract_version=3,
        contract_sha256="c0" * 32,
        caller="billing",
        purpose="credit_assessment",
        method="POST",
        route="POST /v1/assess",
        decision=decision,  # type: ignore[arg-type]
        reason=reason,
        fields_sent=("applicant.name", "applicant.income") if shared else (),
        fields_stripped=("applicant.phone",) if shared else (),
        categories_sent=("identity.name", "financial.income") if shared else (),
        pii_redactions={"phone": 1} if shared else {},
        records=1 if shared else 0,
        subject_refs=tuple(ref(s) for s in subjects),
        bytes_sent=40 if shared else 0,
    )


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(KEY_ENV, HASH_KEY)
    return Settings(share_log=ShareLogSettings(path=tmp_path / "share-log.sqlite", stdout=False))


@pytest.fixture
async def logged(settings: Settings) -> Settings:
    """acme: two shares and a denial about alice/bob; cloudstore: one share about carol."""
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    try:
        await share_log.record(share("s-1", T0))
        await share_log.record_outcome(ShareOutcome("s-1", "delivered", 200, 12, 31.4))
        await share_log.record(
            share("s-2", T0 + timedelta(minutes=5), decision="denied", reason="scope_denied")
        )
        await share_log.record(share("s-3", T0 + timedelta(hours=1), subjects=("bob",)))
        await share_log.record_outcome(ShareOutcome("s-3", "timeout", None, 0, 5000.0))
        await share_log.record(
            share("s-4", T0 + timedelta(days=1), partner="cloudstore", subjects=("carol",))
        )
        await share_log.record_outcome(ShareOutcome("s-4", "delivered", 204, 0, 9.0))
    finally:
        await share_log.close()
    return settings


def run(
    argv: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="share-gateway")
    parser.add_argument("--config", type=Path, default=None)
    add_logs(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.handler(args, settings)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def verify_problem(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> tuple[str, int | None, str | None]:
    """`logs verify --format json` of a log that fails: the problem's kind, seq and share id."""
    code, out, _ = run(["logs", "verify", "--format", "json"], settings, capsys)
    assert code == 1
    problem: dict[str, Any] = json.loads(out)["problem"]
    return problem["kind"], problem["seq"], problem["share_id"]


def cursor_of(note: str) -> str:
    """The cursor a page note names for the next page."""
    found = re.search(r"next page: --cursor (\S+) with the same filters", note)
    assert found is not None, note
    return found.group(1)


def columns_of(table: str) -> tuple[str, list[str]]:
    header, rule, *rows = table.splitlines()
    assert set(rule.replace(" ", "")) == {"-"}
    return header, rows


# --- times ----------------------------------------------------------------------------------

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01", datetime(2025, 2, 28, 16, 0, tzinfo=UTC)),
        ("2025-03-01T08:30", datetime(2025, 3, 1, 0, 30, tzinfo=UTC)),
        ("2025-03-01T08:30:00+00:00", datetime(2025, 3, 1, 8, 30, tzinfo=UTC)),
        ("2025-03-01T08:30:00Z", datetime(2025, 3, 1, 8, 30, tzinfo=UTC)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        ("now", NOW),
    ],
)
def test_times_are_dates_datetimes_or_ages(text: str, expected: datetime) -> None:
    assert parse_time(text, SHANGHAI, NOW) == expected


@pytest.mark.parametrize("text", ["2025-03-01", "20250301", "2025-W09-6", "2025W096"])
def test_a_bare_date_as_an_end_includes_the_whole_day(text: str) -> None:
    # Every ISO form of the date: read as a date-time, it was the day's first instant.
    assert parse_time(text, SHANGHAI, NOW, end_of_day=True) == datetime(
        2025, 3, 1, 16, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2025-13-01",
        "5y",
        "-3d",
        "2025-W09",
        "2025W09",
        "\uff17d",  # a fullwidth 7: an age is written in the digits 0-9
        "\u0667d",  # an Arabic-Indic 7
    ],
)
def test_other_times_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_time(text, SHANGHAI, NOW)


NEW_YORK = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        # 2025-03-09 the clocks went from 02:00 to 03:00; 2025-11-02 from 02:00 back to 01:00.
        (
            "2025-03-09T02:30",
            "2025-03-09T02:30 does not exist in America/New_York: its clocks skip it; write it "
            "with an offset (-05:00 or -04:00)",
        ),
        (
            "2025-11-02T01:30:15",
            "2025-11-02T01:30:15 happens twice in America/New_York: its clocks go back over it; "
            "write it with an offset (-04:00 or -05:00)",
        ),
    ],
)
def test_a_local_time_the_clocks_skip_or_repeat_is_a_usage_error(text: str, says: str) -> None:
    # Taken as one of its readings, `--since` would leave out up to an hour of shares.
    with pytest.raises(UsageError) as refused:
        parse_time(text, NEW_YORK, NOW)
    assert str(refused.value) == says


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-09T02:30-05:00", datetime(2025, 3, 9, 7, 30, tzinfo=UTC)),
        ("2025-11-02T01:30-04:00", datetime(2025, 11, 2, 5, 30, tzinfo=UTC)),
        ("2025-11-02T01:30-05:00", datetime(2025, 11, 2, 6, 30, tzinfo=UTC)),
        ("2025-03-09T03:00", datetime(2025, 3, 9, 7, 0, tzinfo=UTC)),  # the first hour after
        ("2025-11-02T02:00", datetime(2025, 11, 2, 7, 0, tzinfo=UTC)),
    ],
)
def test_local_times_around_a_clock_change_with_an_offset_or_outside_it_are_read(
    text: str, expected: datetime
) -> None:
    assert parse_time(text, NEW_YORK, NOW) == expected


def test_a_date_whose_midnight_the_clocks_skip_starts_at_its_first_instant() -> None:
    # In Santiago the clocks went from 2025-09-07T00:00 to 01:00: the day began at 04:00 UTC.
    assert parse_time("2025-09-07", SANTIAGO, NOW) == datetime(2025, 9, 7, 4, 0, tzinfo=UTC)
    assert parse_time("2025-09-06", SANTIAGO, NOW, end_of_day=True) == datetime(
        2025, 9, 7, 4, 0, tzinfo=UTC
    )


# --- logs query -----------------------------------------------------------------------------


async def test_query_table_is_aligned_in_local_time(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "query"], logged, capsys)
    assert code == 0
    table, footer = out.rstrip("\n").rsplit("\n", 1)
    header, rows = columns_of(table)
    assert header.startswith("time (Asia/Shanghai)")
    assert len(rows) == 4
    first = rows[0]
    assert first.startswith("2025-03-01 17:00:00")
    for column, value in (
        ("share_id", "s-1"),
        ("partner", "acme"),
        ("decision", "shared"),
        ("outcome", "delivered 200"),
    ):
        assert first[header.index(column) :].startswith(value)
    denied = rows[1]
    assert denied[header.index("decision") :].startswith("denied: scope_denied")
    assert rows[2][header.index("outcome") :].startswith("timeout")
    assert footer == "rows 1-4 of 4"


async def test_query_table_pages(logged: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["logs", "query", "--limit", "2"], logged, capsys)
    assert code == 0
    note = out.rstrip().rsplit("\n", 1)[1]
    assert note.startswith("rows 1-2 of 4; next page: --cursor ")
    assert note.endswith(" with the same filters")
    code, out, _ = run(
        ["logs", "query", "--limit", "2", "--cursor", cursor_of(note)], logged, capsys
    )
    assert out.rstrip().endswith("rows 3-4 of 4")
    assert "s-3" in out
    assert "s-1" not in out


async def test_an_offset_still_pages_and_its_note_points_to_a_cursor(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "query", "--limit", "1", "--offset", "1"], logged, capsys)
    assert code == 0
    note = out.rstrip().rsplit("\n", 1)[1]
    assert note.startswith("rows 2-2 of 4; next page: --cursor ")
    assert note.endswith(" with the same filters, in place of --offset")
    assert "s-2" in out
    code, out, _ = run(
        ["logs", "query", "--limit", "5", "--cursor", cursor_of(note)], logged, capsys
    )
    assert (code, _ids("table", out)) == (0, (["s-3", "s-4"], "rows 3-4 of 4"))


async def test_query_json_is_exactly_the_records(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "query", "--format", "json", "--partner", "acme"], logged, capsys)
    assert code == 0
    rows = json.loads(out)
    assert rows == query(logged.share_log.path, partner="acme")
    assert [r["share_id"] for r in rows] == ["s-1", "s-2", "s-3"]
    assert rows[0]["latency_ms"] == 31.4


async def test_query_csv_has_a_header_and_one_row_per_record(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        ["logs", "query", "--format", "csv", "--decision", "shared", "--since", "2025-03-02"],
        logged,
        capsys,
    )
    assert code == 0
    reader = csv.DictReader(io.StringIO(out))
    assert tuple(reader.fieldnames or ()) == QUERY_FIELDS
    [row] = list(reader)
    assert (row["share_id"], row["partner"], row["upstream_status"]) == ("s-4", "cloudstore", "204")
    assert row["fields_sent"] == "applicant.name;applicant.income"
    assert row["pii_redactions"] == "phone=1"
    assert row["cross_border_mechanism"] == ""


async def test_query_csv_with_nothing_matching_is_the_header_alone(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "query", "--format", "csv", "--partner", "nobody"], logged, capsys)
    assert (code, out) == (0, ",".join(QUERY_FIELDS) + "\n")


async def test_query_by_subject_hashes_the_id_with_the_key(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "query", "--subject", "bob", "--format", "json"], logged, capsys)
    assert code == 0
    assert [r["share_id"] for r in json.loads(out)] == ["s-3"]


async def test_query_with_nothing_matching_says_so(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "query", "--partner", "nobody"], logged, capsys)
    assert (code, out) == (0, "no share records match\n")


# --- logs subject ---------------------------------------------------------------------------


async def test_subject_lists_the_shares_about_one_person(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "subject", "alice", "--format", "json"], logged, capsys)
    assert code == 0
    assert [r["share_id"] for r in json.loads(out)] == ["s-1"]  # s-2 about alice was denied
    code, out, _ = run(
        ["logs", "subject", "alice", "--include-denied", "--format", "json"], logged, capsys
    )
    assert [r["share_id"] for r in json.loads(out)] == ["s-1", "s-2"]
    code, out, _ = run(["logs", "subject", "carol"], logged, capsys)
    header, rows = columns_of(out.rstrip("\n").rsplit("\n", 1)[0])
    assert len(rows) == 1
    assert rows[0][header.index("partner") :].startswith("cloudstore")
    code, out, _ = run(["logs", "subject", "carol", "--format", "csv"], logged, capsys)
    assert len(list(csv.DictReader(io.StringIO(out)))) == 1


async def test_subject_without_the_key_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    code, out, err = run(["logs", "subject", "alice"], logged, capsys)
    assert (code, out) == (2, "")
    assert KEY_ENV in err


@pytest.mark.parametrize(
    "argv", [["logs", "subject", "alice"], ["logs", "query", "--subject", "alice"]]
)
async def test_a_subject_lookup_under_another_hash_key_is_refused_not_answered_empty(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    # The id would be hashed to no one's reference: "no share records match" would answer a
    # person asking for their records falsely.
    monkeypatch.setenv(KEY_ENV, "another-deployments-key-" * 2)
    code, out, err = run(argv, logged, capsys)
    assert (code, out) == (2, "")
    assert f"is not signed with this hash key: is {KEY_ENV} the gateway's?" in err


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM head",
        "UPDATE head SET seq = 'x'",
        "UPDATE head SET mac = CAST(mac AS BLOB)",
    ],
    ids=["removed", "seq_altered", "mac_a_blob"],
)
async def test_a_subject_lookup_in_a_log_without_its_head_is_refused(
    logged: Settings, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    tamper(logged.share_log.path, change)
    code, out, err = run(["logs", "subject", "alice"], logged, capsys)
    assert (code, out) == (2, "")
    assert "has no signed head it can read: run `share-gateway logs verify`" in err


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE shares SET fields_sent = '[oops' WHERE share_id = 's-1'",
        "UPDATE shares SET caller = CAST(x'ff41' AS TEXT) WHERE share_id = 's-1'",
        "UPDATE shares SET ts = 12 WHERE share_id = 's-1'",
        "UPDATE outcomes SET latency_ms = 'slow' WHERE share_id = 's-1'",
        "UPDATE shares SET caller = CAST(caller AS BLOB) WHERE share_id = 's-1'",
    ],
    ids=["json", "utf8", "ts_number", "latency_text", "blob"],
)
@pytest.mark.parametrize(
    "argv",
    [
        ["logs", "query"],
        ["logs", "query", "--format", "json"],
        ["logs", "query", "--format", "csv"],
        ["logs", "subject", "alice"],
        ["logs", "summary"],
        ["logs", "export"],
    ],
)
async def test_a_damaged_entry_is_a_clean_answer_not_a_traceback(
    logged: Settings, capsys: pytest.CaptureFixture[str], change: str, argv: list[str]
) -> None:
    tamper(logged.share_log.path, change)
    code, _, err = run(argv, logged, capsys)  # an exception would fail the test here
    if code:
        assert code == 1
        assert "run `share-gateway logs verify`" in err


# --- paging by cursor -----------------------------------------------------------------------


async def _recorded(settings: Settings, records: list[ShareRecord]) -> None:
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    try:
        for record in records:
            await share_log.record(record)
    finally:
        await share_log.close()


def _ids(fmt: str, out: str) -> tuple[list[str], str | None]:
    """The share ids a page printed, and the note it ended with in a table."""
    if fmt == "json":
        return [row["share_id"] for row in json.loads(out)], None
    if fmt == "csv":
        return [row["share_id"] for row in csv.DictReader(io.StringIO(out))], None
    *table, note = out.rstrip("\n").split("\n")
    if not table:
        return [], note
    header, rows = columns_of("\n".join(table))
    return [row[header.index("share_id") :].split()[0] for row in rows], note


def _every_page(
    argv: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> tuple[list[str], list[str]]:
    """The share ids of every page, each run with the cursor the page before named, and the
    note of each page (on stderr for json and csv)."""
    fmt = argv[argv.index("--format") + 1] if "--format" in argv else "table"
    ids: list[str] = []
    notes: list[str] = []
    more: list[str] = []
    while True:
        code, out, err = run([*argv, *more], settings, capsys)
        assert code == 0, err
        shown, note = _ids(fmt, out)
        ids += shown
        notes.append(note if note is not None else err.rstrip("\n"))
        if "next page" not in notes[-1]:
            return ids, notes
        more = ["--cursor", cursor_of(notes[-1])]


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
@pytest.mark.parametrize("limit", [1, 3, 4, 7, 10])
async def test_following_the_printed_cursor_gives_every_row_once_in_order(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    limit: int,
) -> None:
    # Read in parts of two rows: a page ends inside a part, at its end, or several parts on.
    monkeypatch.setattr("gateway.sharelog.review._PAGE", 2)
    # Three shares an instant: a page may end between two shares of the same time.
    await _recorded(
        settings,
        [
            share(
                f"s-{n:02d}", T0 + timedelta(seconds=n // 3), partner="other" if n % 4 else "acme"
            )
            for n in range(20)
        ],
    )
    capsys.readouterr()
    for filters in ([], ["--partner", "other"]):
        argv = ["logs", "query", *filters, "--format", fmt, "--limit", str(limit)]
        _, out, _ = run(["logs", "query", *filters, "--format", "json"], settings, capsys)
        whole = [row["share_id"] for row in json.loads(out)]
        ids, notes = _every_page(argv, settings, capsys)
        assert ids == whole
        assert len(notes) == -(-len(whole) // limit)
        for page, note in enumerate(notes):
            first, last = page * limit + 1, min((page + 1) * limit, len(whole))
            assert note.startswith(f"rows {first}-{last} of {len(whole)}")
        # A page that is the whole query leaves nothing out: an export says nothing of it.
        code, _, err = run([*argv[:-1], str(len(whole))], settings, capsys)
        assert (code, err if fmt != "table" else "") == (0, "")


async def test_subject_pages_by_cursor(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        share(
            f"s-{n}",
            T0 + timedelta(minutes=n),
            subjects=("alice",) if n % 3 else ("bob",),
            decision="denied" if n % 5 == 0 else "shared",
            reason="scope_denied" if n % 5 == 0 else "shared",
        )
        for n in range(16)
    ]
    await _recorded(settings, records)
    capsys.readouterr()
    for command in (["logs", "subject", "alice"], ["logs", "subject", "alice", "--include-denied"]):
        _, out, _ = run([*command, "--format", "json"], settings, capsys)
        whole = [row["share_id"] for row in json.loads(out)]
        assert len(whole) > 4
        ids, notes = _every_page([*command, "--limit", "2"], settings, capsys)
        assert ids == whole
        assert notes[-1] == f"rows {len(whole) - 1}-{len(whole)} of {len(whole)}"


async def test_query_pages_by_cursor_without_the_hash_key(
    logged: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `logs query` reads without the gateway's key (an auditor's account): so does its paging.
    monkeypatch.delenv(KEY_ENV)
    ids, notes = _every_page(["logs", "query", "--limit", "3"], logged, capsys)
    assert ids == ["s-1", "s-2", "s-3", "s-4"]
    assert notes[-1] == "rows 4-4 of 4"


async def test_shares_recorded_after_the_first_page_wait_for_a_new_first_page(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "query", "--limit", "2"], logged, capsys)
    assert code == 0
    await _recorded(logged, [share("s-5", T0 + timedelta(days=2))])
    capsys.readouterr()
    code, out, _ = run(["logs", "query", "--cursor", cursor_of(out)], logged, capsys)
    assert _ids("table", out) == (["s-3", "s-4"], "rows 3-4 of 4")
    code, out, _ = run(["logs", "query"], logged, capsys)
    assert _ids("table", out) == (["s-1", "s-2", "s-3", "s-4", "s-5"], "rows 1-5 of 5")


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
async def test_a_prune_between_pages_stops_the_next_page_rather_than_skip_rows(
    settings: Settings, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    # An access request answered from pages must be whole: a prune between two pages either
    # took only rows read already, or the next page says the read must start again.
    now = datetime.now(UTC)
    await _recorded(
        settings,
        [
            *(
                share(f"old-{n}", now - timedelta(days=1100) + timedelta(minutes=n))
                for n in range(6)
            ),
            *(share(f"new-{n}", now - timedelta(days=1) + timedelta(minutes=n)) for n in range(4)),
        ],
    )
    capsys.readouterr()
    argv = ["logs", "query", "--format", fmt]
    pages: dict[int, str] = {}
    for limit in (3, 8):  # 3: the prune takes rows not read yet; 8: only rows read
        code, out, err = run([*argv, "--limit", str(limit)], settings, capsys)
        assert code == 0
        pages[limit] = cursor_of(out if fmt == "table" else err)
    code, out, _ = run(["logs", "prune"], settings, capsys)
    assert (code, out.split(" dated")[0]) == (0, "removed 6 shares")

    code, out, err = run([*argv, "--limit", "3", "--cursor", pages[3]], settings, capsys)
    assert (code, out) == (1, "")
    assert err == (
        "share-gateway logs query: the share log was pruned since the first page was read, "
        "and rows not read yet may be gone: start again from the first page\n"
    )
    code, out, err = run([*argv, "--limit", "3", "--cursor", pages[8]], settings, capsys)
    assert code == 0
    ids, note = _ids(fmt, out)
    assert ids == ["new-2", "new-3"]
    # Numbered among the rows the log still holds: the pruned ones, all read, are gone.
    assert (note if note is not None else err) in ("rows 3-4 of 4", "rows 3-4 of 4\n")


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
async def test_a_prune_that_removed_every_share_stops_the_next_page(
    settings: Settings, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    # No share is left to show where the prune cut: the rows not read yet may be gone.
    now = datetime.now(UTC)
    await _recorded(
        settings,
        [share(f"old-{n}", now - timedelta(days=1100) + timedelta(minutes=n)) for n in range(6)],
    )
    capsys.readouterr()
    argv = ["logs", "query", "--format", fmt, "--limit", "3"]
    code, out, err = run(argv, settings, capsys)
    assert code == 0
    cursor = cursor_of(out if fmt == "table" else err)
    code, out, _ = run(["logs", "prune"], settings, capsys)
    assert (code, out.split(" dated")[0]) == (0, "removed 6 shares")
    assert query(settings.share_log.path) == []

    code, out, err = run([*argv, "--cursor", cursor], settings, capsys)
    assert (code, out) == (1, "")
    assert err == (
        "share-gateway logs query: the share log was pruned since the first page was read, "
        "and rows not read yet may be gone: start again from the first page\n"
    )


def _flipped(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


ACME = ["logs", "query", "--partner", "acme", "--until", "2025-03-03", "--limit", "1"]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(lambda c, m: [*ACME, "--cursor", f"{_flipped(c)}.{m}"], id="payload"),
        pytest.param(lambda c, m: [*ACME, "--cursor", f"{c}.{m[:-2]}"], id="mac_cut"),
        pytest.param(lambda c, m: [*ACME, "--cursor", c], id="no_mac"),
        pytest.param(lambda c, m: [*ACME, "--cursor", f"{c}.{m}.{m}"], id="mac_twice"),
        pytest.param(lambda c, m: [*ACME, "--cursor", f"{c}.{m} "], id="space"),
        pytest.param(lambda c, m: [*ACME, "--cursor", ""], id="empty"),
        pytest.param(
            lambda c, m: [*ACME[:3], "cloudstore", *ACME[4:], "--cursor", f"{c}.{m}"],
            id="other_partner",
        ),
        pytest.param(
            lambda c, m: [*ACME[:5], "2025-03-04", *ACME[6:], "--cursor", f"{c}.{m}"],
            id="other_until",
        ),
        pytest.param(lambda c, m: [*ACME[:2], *ACME[4:], "--cursor", f"{c}.{m}"], id="dropped"),
        pytest.param(
            lambda c, m: [*ACME, "--decision", "shared", "--cursor", f"{c}.{m}"], id="added"
        ),
        pytest.param(
            lambda c, m: [*ACME, "--subject", "alice", "--cursor", f"{c}.{m}"], id="subject"
        ),
        pytest.param(
            lambda c, m: ["logs", "subject", "alice", *ACME[4:], "--cursor", f"{c}.{m}"],
            id="other_command",
        ),
    ],
)
async def test_a_cursor_altered_or_given_with_other_filters_is_a_usage_error(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    argv: Callable[[str, str], list[str]],
) -> None:
    _, out, _ = run(ACME, logged, capsys)
    payload, _, mac = cursor_of(out).partition(".")
    code, out, err = run(argv(payload, mac), logged, capsys)
    assert (code, out) == (2, "")
    assert err.endswith(
        ": --cursor is not the next page of this query: give it unchanged, with the same "
        "filters as the page that printed it\n"
    )
    assert payload not in err
    # The same filters, with any limit and format, continue it.
    code, out, _ = run(
        [*ACME[:-1], "5", "--format", "json", "--cursor", f"{payload}.{mac}"], logged, capsys
    )
    assert (code, [row["share_id"] for row in json.loads(out)]) == (0, ["s-2", "s-3"])


def _resealed(cursor_text: str, change: Callable[[list[Any]], None]) -> str:
    """`cursor_text` with its payload changed and sealed again as `logs query` seals it: what a
    release writing another format would print, with the cursor key every release shares."""
    payload = cursor_text.partition(".")[0]
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    filters = dict.fromkeys(("purpose", "decision", "reason", "caller", "share_id", "subject_ref"))
    bound = {"command": "query", **filters, "partner": "acme", "since": None, "until": "2025-03-03"}

    def sealed(data: list[Any]) -> str:
        text = orjson.dumps(data)
        digest = hmac.digest(_CURSOR_KEY, text + b"\n" + binding(bound), "sha256")[:16]
        return ".".join(base64.urlsafe_b64encode(b).rstrip(b"=").decode() for b in (text, digest))

    assert sealed(fields) == cursor_text  # sealed as the gateway seals it
    change(fields)
    return sealed(fields)


def _set(index: int, value: object) -> Callable[[list[Any]], None]:
    return lambda fields: fields.__setitem__(index, value)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(_set(0, 2), id="version"),
        pytest.param(_set(1, 5), id="ts_not_text"),
        pytest.param(_set(2, 0), id="seq_zero"),
        pytest.param(_set(3, 2**63), id="first_past_sqlite"),
        pytest.param(_set(4, "9"), id="top_text"),
        pytest.param(_set(5, "2025-03-01T00:00:00"), id="since_without_offset"),
        pytest.param(_set(6, "the third of March"), id="until_no_time"),
        pytest.param(_set(6, 20250303), id="until_a_number"),
        pytest.param(lambda fields: fields.pop(), id="field_missing"),
    ],
)
async def test_a_sealed_cursor_of_another_format_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str], change: Callable[[list[Any]], None]
) -> None:
    _, out, _ = run(ACME, logged, capsys)
    code, out, err = run([*ACME, "--cursor", _resealed(cursor_of(out), change)], logged, capsys)
    assert (code, out) == (2, "")
    assert err.endswith(
        ": --cursor is not the next page of this query: give it unchanged, "
        "with the same filters as the page that printed it\n"
    )


async def test_a_cursor_with_an_offset_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(["logs", "query", "--limit", "1"], logged, capsys)
    for offset in ("0", "1"):
        argv = ["logs", "query", "--offset", offset, "--cursor", cursor_of(out)]
        code, printed, err = run(argv, logged, capsys)
        assert (code, printed) == (2, "")
        assert "--cursor and --offset cannot be used together" in err


async def test_a_relative_since_is_held_by_the_cursor(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    week = [share(f"s-{n}", now - timedelta(days=7) + timedelta(minutes=n)) for n in range(1, 5)]
    await _recorded(settings, week)
    capsys.readouterr()
    argv = ["logs", "query", "--since", "7d", "--limit", "2", "--format", "json"]
    code, out, err = run(argv, settings, capsys)
    assert (code, _ids("json", out)[0]) == (0, ["s-1", "s-2"])

    class TenMinutesLater(datetime):  # `--since 7d` read now reaches none of the four
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Self:
            return cls.fromtimestamp(time.time() + 600, tz)

    monkeypatch.setattr("gateway.sharelog.commands.datetime", TenMinutesLater)
    code, out, err = run([*argv, "--cursor", cursor_of(err)], settings, capsys)
    assert (code, _ids("json", out)[0], err) == (0, ["s-3", "s-4"], "rows 3-4 of 4\n")
    code, out, err = run(argv, settings, capsys)  # a first page now: the window has moved on
    assert (code, out, err) == (0, "[]\n", "")


# --- logs summary ---------------------------------------------------------------------------


async def test_summary_table_for_people(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "summary", "--until", "2025-03-01"], logged, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "share log summary, the beginning to 2025-03-02 00:00:00 (Asia/Shanghai)"
    header = lines[2]
    assert header.split() == [
        "partner",
        "shares",
        "records",
        "subjects",
        "denied",
        "errors",
        "bytes",
        "outcomes",
    ]
    acme = lines[4]
    assert acme.split()[:7] == ["acme", "2", "2", "2", "1", "0", "80"]
    assert acme[header.index("outcomes") :] == "delivered 1, timeout 1"
    assert "cloudstore" not in out  # its share is on 2 March
    assert "  denials          scope_denied 1" in lines
    assert "  top stripped     applicant.phone 2" in lines


async def test_summary_of_a_window_without_shares_says_so(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "summary", "--until", "2025-02-01"], logged, capsys)
    assert (code, out) == (
        0,
        "share log summary, the beginning to 2025-02-02 00:00:00 (Asia/Shanghai)\n"
        "\n"
        "no share records in this window\n",
    )


async def test_summary_names_the_first_twelve_fields_and_counts_the_rest(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    many = dataclasses.replace(
        share("s-1", T0), fields_sent=tuple(f"applicant.f{n:02}" for n in range(15))
    )
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    try:
        await share_log.record(many)
    finally:
        await share_log.close()
    code, out, _ = run(["logs", "summary"], settings, capsys)
    assert code == 0
    twelve = ", ".join(f"applicant.f{n:02} 1" for n in range(12))
    assert f"  fields sent      {twelve}, … (+3)" in out.splitlines()


async def test_summary_json_is_exact(logged: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["logs", "summary", "--format", "json"], logged, capsys)
    assert code == 0
    assert json.loads(out) == summary(logged.share_log.path)
    assert [p["partner"] for p in json.loads(out)] == ["acme", "cloudstore"]


# --- logs verify ----------------------------------------------------------------------------


async def test_verify_passes_on_an_untouched_log(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logs", "verify"], logged, capsys)
    assert code == 0
    assert out.startswith("share log verified: 9 entries (4 shares, 3 outcomes, 2 checkpoints)")


async def test_verify_fails_naming_the_first_broken_record(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(logged.share_log.path)
    seq = conn.execute("SELECT seq FROM shares WHERE share_id = 's-3'").fetchone()[0]
    conn.execute("UPDATE shares SET partner = 'elsewhere' WHERE share_id = 's-3'")
    conn.commit()
    conn.close()
    code, out, _ = run(["logs", "verify"], logged, capsys)
    assert code == 1
    assert out.splitlines()[0].startswith("share log verification FAILED (changed)")
    assert f"first broken record: seq {seq}, share s-3" in out
    assert verify_problem(logged, capsys) == ("changed", seq, "s-3")


async def test_verify_fails_on_a_second_outcome_of_a_share_and_names_both(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    path = logged.share_log.path
    with contextlib.closing(sqlite3.connect(path)) as conn:
        [(share_seq, first)] = conn.execute(
            "SELECT share_seq, seq FROM outcomes WHERE share_id = 's-3'"
        ).fetchall()
    # Chained and sealed with the key, as a writer that submits an outcome twice appends it.
    ledger = Ledger.open(path, HASH_KEY.encode())
    try:
        ledger.begin()
        second = ledger.add_outcome(ShareOutcome("s-3", "delivered", 200, 12, 1.0), T0)["seq"]
        ledger.commit(T0)
    finally:
        ledger.close()
    code, out, _ = run(["logs", "verify"], logged, capsys)
    assert code == 1
    assert out.splitlines()[:2] == [
        f"share log verification FAILED (outcome): outcome seq {second} (share s-3) is a "
        f"second, unlinked outcome of seq {share_seq}, whose outcome is at seq {first}: the "
        "gateway writes one per share, and `logs query` shows only the first",
        f"first broken record: seq {second}, share s-3",
    ]
    [shown] = query(path, share_id="s-3")
    assert shown["outcome"] == "timeout"
    assert verify_problem(logged, capsys) == ("outcome", second, "s-3")


async def test_verify_of_a_share_id_recorded_twice_fails_where_the_first_was_left_open(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Through the share log all the same (a caller's slip): 1 open checkpoint | 2 s-1 |
    # 3 s-1 again | 4 the outcome | 5 close checkpoint. The share log keeps one open share per
    # id, so the outcome closes the second, and the first never gets one.
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    try:
        await share_log.record(share("s-1", T0))
        await share_log.record(share("s-1", T0 + timedelta(minutes=1)))
        await share_log.record_outcome(ShareOutcome("s-1", "delivered", 200, 12, 1.0))
    finally:
        await share_log.close()
    assert [r["outcome"] for r in query(settings.share_log.path, share_id="s-1")] == [
        "pending",
        "delivered",
    ]
    code, out, _ = run(["logs", "verify"], settings, capsys)
    assert code == 1
    assert out.splitlines()[:2] == [
        "share log verification FAILED (outcome): seq 2 (share s-1) has no outcome before the "
        "close checkpoint at seq 5, which closes every open share: its row in pending_outcomes "
        "was removed or altered, and the share reads as pending",
        "first broken record: seq 2, share s-1",
    ]
    assert verify_problem(settings, capsys) == ("outcome", 2, "s-1")


async def test_verify_of_a_share_id_recorded_again_after_its_outcome_passes(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each record has its own outcome: nothing in the chain ties a share id to one record.
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    try:
        for minutes in (0, 1):
            await share_log.record(share("s-1", T0 + timedelta(minutes=minutes)))
            await share_log.record_outcome(ShareOutcome("s-1", "delivered", 200, 12, 1.0))
    finally:
        await share_log.close()
    code, out, _ = run(["logs", "verify"], settings, capsys)
    assert code == 0
    assert out.startswith("share log verified: 6 entries (2 shares, 2 outcomes, 2 checkpoints)")


async def test_verify_of_a_file_that_is_not_a_database_fails(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.share_log.path.write_bytes(b"this is not a share log" * 100)
    code, out, _ = run(["logs", "verify"], settings, capsys)
    assert code == 1
    assert out == (
        f"share log verification FAILED (unreadable): {settings.share_log.path} "
        "is not a readable share log: file is not a database\n"
    )


async def _printed_session(
    settings: Settings, capsys: pytest.CaptureFixture[str], *records: ShareRecord
) -> str:
    """One gateway run over the log, printing its lines on stdout: what it printed."""
    printing = Settings(share_log=ShareLogSettings(path=settings.share_log.path, stdout=True))
    share_log = await ShareLog.open(printing.share_log, HASH_KEY.encode())
    try:
        for record in records:
            await share_log.record(record)
    finally:
        await share_log.close()
    return capsys.readouterr().out


def _copy_log(source: Path, target: Path) -> None:
    target.mkdir()
    for suffix in ("", *COMPANION_SUFFIXES):
        if (source.parent / (source.name + suffix)).exists():
            shutil.copy2(source.parent / (source.name + suffix), target / (source.name + suffix))


def _put_back(copy: Path, path: Path) -> None:
    for suffix in ("", *COMPANION_SUFFIXES):
        (path.parent / (path.name + suffix)).unlink(missing_ok=True)
        if (copy / (path.name + suffix)).exists():
            shutil.copy2(copy / (path.name + suffix), path.parent / (path.name + suffix))


async def test_verify_against_the_printed_checkpoints_finds_a_log_put_back(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = settings.share_log.path
    printed = await _printed_session(settings, capsys, share("s-1", T0))
    _copy_log(path, tmp_path / "copy")
    printed += await _printed_session(
        settings, capsys, share("s-2", T0 + timedelta(minutes=1)), share("s-3", T0)
    )
    lines = tmp_path / "stdout.jsonl"
    # The gateway's stdout as kept holds its other lines too, and a line that only names the
    # event: passed over.
    lines.write_text(
        printed + '{"event": "share_log_created", "note": "share_log_checkpointed"}\nplain text\n'
    )
    # Without `configure_logging()` the gateway's own warnings are not JSON.
    events = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    checkpoints = [event for event in events if event["event"] == "share_log_checkpointed"]
    latest = max(c["seq"] for c in checkpoints)

    code, out, _ = run(["logs", "verify", "--checkpoints", str(lines)], settings, capsys)
    assert code == 0, out
    assert out.splitlines()[1] == (
        f"checkpoint lines: {len(checkpoints)} match the log, the latest at seq {latest} "
        f"({checkpoints[-1]['ts']})"
    )
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines.read_bytes())))
        assert run(["logs", "verify", "--checkpoints", "-"], settings, capsys)[:2] == (0, out)

    # An older copy put back verifies against itself, but not against what was printed.
    _put_back(tmp_path / "copy", path)
    code, out, _ = run(["logs", "verify"], settings, capsys)
    assert code == 0
    code, out, _ = run(["logs", "verify", "--checkpoints", str(lines)], settings, capsys)
    assert code == 1
    assert out.startswith("share log verification FAILED (rolled_back): the log ends at seq ")
    assert f"had reached seq {latest}" in out
    code, out, _ = run(
        ["logs", "verify", "--checkpoints", str(lines), "--format", "json"], settings, capsys
    )
    assert (code, json.loads(out)["problem"]["kind"]) == (1, "rolled_back")

    # Written on past where it had reached: the entries there are not the ones printed.
    await _printed_session(
        settings, capsys, *(share(f"t-{n}", T0 + timedelta(hours=n)) for n in range(1, 6))
    )
    code, out, _ = run(["logs", "verify", "--checkpoints", str(lines)], settings, capsys)
    assert code == 1
    assert out.startswith("share log verification FAILED (rolled_back): entry seq ")
    assert "the log was put back to an older copy and written on" in out


async def test_checkpoint_lines_that_disagree_or_are_not_signed_fail_the_check(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = settings.share_log.path
    first = await _printed_session(settings, capsys, share("s-1", T0))
    _copy_log(path, tmp_path / "copy")
    second = await _printed_session(settings, capsys, share("s-2", T0))
    _put_back(tmp_path / "copy", path)
    # Two runs after the same copy: each printed a different entry at the same seq.
    third = await _printed_session(settings, capsys, share("x-2", T0))
    lines = tmp_path / "stdout.jsonl"
    lines.write_text(first + second + third)
    code, out, _ = run(["logs", "verify", "--checkpoints", str(lines)], settings, capsys)
    assert code == 1
    assert "show two different entries at seq" in out

    closing = json.loads(first.splitlines()[-1])  # the run's last line: its close checkpoint
    assert closing["event"] == "share_log_checkpointed"
    for changed in ({**closing, "seq": closing["seq"] + 1}, {**closing, "mac": "0" * 64}):
        lines.write_text(json.dumps(changed) + "\n")
        code, out, _ = run(["logs", "verify", "--checkpoints", str(lines)], settings, capsys)
        assert code == 1
        assert out == (
            f"share log verification FAILED (checkpoint_line): {lines}, line 1: checkpoint seq "
            f"{changed['seq']} is not signed with this key: the line was changed, or it is "
            "another gateway's\n"
        )
    lines.write_text(first.splitlines()[-1][:-5] + "\n")
    code, out, _ = run(
        ["logs", "verify", "--checkpoints", str(lines), "--format", "json"], settings, capsys
    )
    assert code == 1
    assert json.loads(out)["problem"]["line"] == 1
    assert "is not a whole JSON line" in json.loads(out)["problem"]["message"]
    # Lines a log shipper reshaped: nothing in them is taken for a checkpoint, unchecked.
    without_mac = {name: value for name, value in closing.items() if name != "mac"}
    for reshaped, problem in [
        (without_mac, "a checkpoint line without 'mac'"),
        (
            {**closing, "seq": str(closing["seq"])},
            "a checkpoint line with a field of the wrong type",
        ),
        ({**closing, "mac": None}, "a checkpoint line with a field of the wrong type"),
    ]:
        lines.write_text(json.dumps(reshaped) + "\n")
        code, out, _ = run(["logs", "verify", "--checkpoints", str(lines)], settings, capsys)
        assert (code, out) == (
            1,
            f"share log verification FAILED (checkpoint_line): {lines}, line 1: {problem}\n",
        )


async def test_checkpoint_lines_are_required_where_they_are_asked_for(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"event": "share_recorded"}\n')
    code, _, err = run(["logs", "verify", "--checkpoints", str(empty)], logged, capsys)
    assert code == 2
    assert "no share_log_checkpointed line in it" in err
    code, _, err = run(["logs", "verify", "--checkpoints", str(tmp_path / "none")], logged, capsys)
    assert code == 2
    assert "No such file or directory" in err


async def test_checkpoints_a_prune_removed_are_counted_not_compared(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    printed = await _printed_session(settings, capsys, share("old", now - timedelta(days=1100)))
    printed += await _printed_session(settings, capsys, share("new", now - timedelta(days=1)))
    code, _, _ = run(["logs", "prune"], settings, capsys)
    assert code == 0
    lines = tmp_path / "stdout.jsonl"
    lines.write_text(printed)
    code, out, _ = run(
        ["logs", "verify", "--checkpoints", str(lines), "--format", "json"], settings, capsys
    )
    assert code == 0
    counts = json.loads(out)["checkpoint_lines"]
    assert (counts["compared"], counts["before_start"]) == (1, 3)  # the cut is before "new"
    code, out, _ = run(["logs", "verify", "--checkpoints", str(lines)], settings, capsys)
    assert code == 0
    assert "checkpoint lines: 1 match the log, the latest at seq " in out
    assert out.endswith("; 3 for entries pruned since, not compared\n")


# --- logs export ----------------------------------------------------------------------------


async def test_export_writes_json_lines_with_the_chain_evidence(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "audit.jsonl"
    code, out, err = run(
        ["logs", "export", "--until", "2025-03-01", "--output", str(target)], logged, capsys
    )
    assert (code, out) == (0, "")
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    kinds = [line["kind"] for line in lines]
    assert kinds[0] == "export"
    assert kinds[-1] == "head"
    entries = lines[1:-1]
    assert {e.get("share_id") for e in entries if e["kind"] == "share"} == {"s-1", "s-2", "s-3"}
    assert all("hash" in e and "prev_hash" in e and "seq" in e for e in entries)
    assert err == f"exported {len(entries)} entries (seq 1-{entries[-1]['seq']}) to {target}\n"
    # The header says where the window ends, sealed: lines cut from its end would show.
    header = lines[0]
    assert header["to_hash"] == entries[-1]["hash"]
    assert header["mac"] == header_mac(seal_key(HASH_KEY.encode()), header)
    # Keyed subject references are personal data: nobody else on the host reads the export.
    assert oct(target.stat().st_mode & 0o777) == "0o600"

    code, out, err = run(["logs", "export"], logged, capsys)
    assert code == 0
    assert len(out.splitlines()) == 11  # header, 9 entries, head


# --- logs prune -----------------------------------------------------------------------------


async def test_prune_removes_only_records_past_retention(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    await share_log.record(share("old", now - timedelta(days=1100)))
    await share_log.record_outcome(ShareOutcome("old", "delivered", 200, 0, 1.0))
    # The default cut is the retention period to the day: a record just past it goes too.
    await share_log.record(share("just-past", now - timedelta(days=1095, hours=1)))
    await share_log.record(share("new", now - timedelta(days=1)))
    await share_log.close()

    code, out, err = run(["logs", "prune", "--before", "30d"], settings, capsys)
    assert code == 2
    assert "records are kept 1095 days" in err

    code, out, _ = run(["logs", "prune", "--dry-run"], settings, capsys)
    assert code == 0
    assert out.startswith(
        "would remove 2 shares dated before 2"  # the cut-off, then what goes with them:
    )
    assert "with the 1 outcome and 1 checkpoint that precede the first share kept" in out
    assert [r["share_id"] for r in query(settings.share_log.path)] == ["old", "just-past", "new"]

    code, out, _ = run(["logs", "prune"], settings, capsys)
    assert code == 0
    assert out.startswith("removed 2 shares")
    assert [r["share_id"] for r in query(settings.share_log.path)] == ["new"]
    code, out, _ = run(["logs", "verify"], settings, capsys)
    assert code == 0
    # The entry the first one kept links to is gone: what is left still exports.
    code, out, _ = run(["logs", "export"], settings, capsys)
    assert code == 0
    assert json.loads(out.splitlines()[1])["share_id"] == "new"


async def test_a_prune_repeated_with_nothing_left_before_the_cut_says_so_and_seals_nothing(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["logs", "prune", "--before", "2000-01-01"]
    code, out, _ = run(argv, logged, capsys)
    assert code == 0
    assert out.startswith("removed 0 shares dated before 1999-12-31T16:00:00.000000Z, with the ")
    heads = [run(["logs", "export"], logged, capsys)[1].splitlines()[-1]]

    code, out, err = run(argv, logged, capsys)
    assert (code, err) == (0, "")
    assert out == "nothing to prune before 1999-12-31T16:00:00.000000Z\n"
    heads.append(run(["logs", "export"], logged, capsys)[1].splitlines()[-1])
    assert heads[0] == heads[1]  # no prune checkpoint was added
    assert [r["share_id"] for r in query(logged.share_log.path)] == ["s-1", "s-2", "s-3", "s-4"]
    assert run(["logs", "verify"], logged, capsys)[0] == 0


async def test_prune_refuses_a_log_whose_records_before_the_cut_do_not_verify(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    await share_log.record(share("s-1", now - timedelta(days=2)))
    await share_log.record(share("s-2", now - timedelta(days=1)))
    await share_log.close()
    capsys.readouterr()  # the close's own report of the shares it left without an outcome
    # Back-dated past the retention period by someone without the key: a routine prune
    # would take it, and seal a cut after it that verifies.
    conn = sqlite3.connect(settings.share_log.path)
    conn.execute("UPDATE shares SET ts = '2001-01-01T00:00:00.000000Z' WHERE share_id = 's-1'")
    conn.commit()
    conn.close()

    for argv in (["logs", "prune", "--dry-run"], ["logs", "prune"]):
        code, out, err = run(argv, settings, capsys)
        assert (code, out) == (1, "")
        assert err == (
            "share-gateway logs prune: the share log does not verify up to the cut, so nothing "
            "was pruned: entry seq 2 (share s-1) was changed after it was written; "
            "run `share-gateway logs verify`\n"
        )
    assert [r["share_id"] for r in query(settings.share_log.path)] == ["s-1", "s-2"]
    code, out, _ = run(["logs", "verify"], settings, capsys)
    assert code == 1
    assert out.startswith("share log verification FAILED (changed): entry seq 2 (share s-1)")


# --- usage errors ---------------------------------------------------------------------------


async def test_a_missing_log_is_a_usage_error(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["logs", "query"], settings, capsys)
    assert (code, out) == (2, "")
    assert f"no share log at {settings.share_log.path}" in err


async def test_a_log_name_the_system_cannot_look_up_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = str(tmp_path / ("x" * 300))  # longer than a file name may be
    code, out, err = run(["logs", "query", "--log", name], logged, capsys)
    assert (code, out) == (2, "")
    assert err == f"share-gateway logs query: --log {name}: File name too long\n"


@pytest.mark.parametrize("argv", [["--limit", "١٢"], ["--limit", "１２"], ["--offset", "1_0"]])
async def test_a_count_in_other_digits_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    # Python's int() read them as 12 and 10: a page other than the one asked for.
    with pytest.raises(SystemExit) as exited:
        run(["logs", "query", *argv], logged, capsys)
    assert exited.value.code == 2
    assert "not a whole number in the digits 0-9" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["serve", "--port", "٨٠٨٠"], ["demo", "--port", "８０８０"]])
def test_a_port_in_other_digits_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "not a whole number in the digits 0-9" in capsys.readouterr().err


async def test_bad_times_are_usage_errors(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["logs", "query", "--since", "last tuesday"], logged, capsys)
    assert code == 2
    assert "'last tuesday' is not a time" in err
    for since, until in (("1d", "2d"), ("2025-03-01T09:00:00+00:00",) * 2):
        # An empty window (until = since) would answer "nothing" for a window never asked for.
        argv = ["logs", "summary", "--since", since, "--until", until]
        code, _, err = run(argv, logged, capsys)
        assert code == 2
        assert "--until must be later than --since" in err
    # An empty time (`--since "$START"`, START unset) was no window at all: the whole log.
    for argv in (
        ["logs", "query", "--since", ""],
        ["logs", "summary", "--until", ""],
        ["logs", "subject", "u-1", "--since", ""],
        ["logs", "export", "--until", ""],
        ["logs", "prune", "--before", "", "--dry-run"],
    ):
        code, out, err = run(argv, logged, capsys)
        assert (code, out) == (2, ""), argv
        assert "'' is not a time" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["logs", "query", "--since", "1" * 5000 + "d"],  # an age too long for int()
        # an instant the log holds, but not in a zone west of UTC, where it is shown
        ["logs", "summary", "--since", "0001-01-01T00:00:00Z"],
        ["logs", "query", "--until", "0001-01-01T03:00:00Z"],
    ],
)
async def test_times_outside_what_the_log_can_show_are_usage_errors(
    logged: Settings, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    west = logged.model_copy(update={"timezone": "America/New_York"})
    code, out, err = run(argv, west, capsys)
    assert (code, out) == (2, "")
    assert "is out of the range of dates the log can hold" in err
    assert len(err) < 200  # one line, whatever was typed


@pytest.mark.parametrize(
    "argv",
    [
        ["logs", "query", "--partner", "\udcff"],  # argv's byte 0xff, not UTF-8
        ["logs", "query", "--purpose", "p\udcff"],
        ["logs", "query", "--reason", "\udcff"],
        ["logs", "query", "--caller", "\udcff"],
        ["logs", "query", "--share-id", "\udcff"],
        ["logs", "query", "--subject", "\udcff"],
        ["logs", "subject", "\udcff"],
        ["logs", "summary", "--since", "\udcff"],
    ],
)
async def test_arguments_that_are_not_utf8_are_usage_errors(
    logged: Settings, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(argv, logged, capsys)
    assert exited.value.code == 2
    assert "not valid UTF-8" in capsys.readouterr().err


async def test_export_over_an_existing_file_makes_it_the_owners_alone(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "audit.jsonl"
    target.write_text("old\n")
    target.chmod(0o644)
    code, _, _ = run(["logs", "export", "--output", str(target)], logged, capsys)
    assert code == 0
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert not target.read_text().startswith("old")


async def test_export_of_an_entry_that_cannot_be_read_fails_and_leaves_no_file(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with sqlite3.connect(logged.share_log.path) as conn:
        conn.execute("UPDATE outcomes SET latency_ms = 9e999")
    target = tmp_path / "audit.jsonl"
    code, out, err = run(["logs", "export", "--output", str(target)], logged, capsys)
    assert (code, out) == (1, "")
    assert "cannot be read" in err
    assert "logs verify" in err
    assert "Traceback" not in err
    assert not target.exists()  # no partial export to be taken for a whole one


async def test_a_failed_export_leaves_an_earlier_export_as_it_was(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "audit.jsonl"
    assert run(["logs", "export", "--output", str(target)], logged, capsys)[0] == 0
    earlier = target.read_bytes()
    with sqlite3.connect(logged.share_log.path) as conn:
        conn.execute("UPDATE outcomes SET latency_ms = 9e999")
    code, _, err = run(["logs", "export", "--output", str(target)], logged, capsys)
    assert code == 1
    assert "cannot be read" in err
    assert target.read_bytes() == earlier
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


async def test_an_export_into_a_missing_folder_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "audit.jsonl"
    code, out, err = run(["logs", "export", "--output", str(target)], logged, capsys)
    assert (code, out) == (2, "")
    assert err == f"share-gateway logs export: cannot write {target}: No such file or directory\n"
    assert not target.parent.exists()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", ".lock", "<symlink>"])
async def test_an_export_over_the_share_log_itself_is_refused(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    log = logged.share_log.path
    if suffix == "<symlink>":
        target = tmp_path / "link.jsonl"
        target.symlink_to(log)
    else:
        target = log.with_name(log.name + suffix)
    before = log.read_bytes()
    code, out, err = run(["logs", "export", "--output", str(target)], logged, capsys)
    assert (code, out) == (2, "")
    assert "is the share log's own file" in err
    assert log.read_bytes() == before
    assert run(["logs", "verify"], logged, capsys)[0] == 0


async def test_an_export_through_a_link_replaces_the_file_it_names_only_once_whole(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real = tmp_path / "audit.jsonl"
    real.write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    code, _, err = run(["logs", "export", "--output", str(link)], logged, capsys)
    assert code == 0, err
    assert link.is_symlink()
    written = real.read_text()
    assert json.loads(written.splitlines()[0])["kind"] == "export"
    # A failed export leaves that one as it was.
    with sqlite3.connect(logged.share_log.path) as conn:
        conn.execute("UPDATE outcomes SET latency_ms = 9e999")
    assert run(["logs", "export", "--output", str(link)], logged, capsys)[0] == 1
    assert real.read_text() == written
    assert link.is_symlink()


@pytest.mark.parametrize("name", ["/dev/fd/{fd}", "/proc/self/fd/{fd}"])
async def test_an_export_to_an_open_stream_appends_to_it(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    # `-o /dev/stdout >> archive.jsonl`: the stream as the shell opened it, never truncated.
    archive = tmp_path / "archive.jsonl"
    archive.write_text("an earlier line\n")
    fd = os.open(archive, os.O_WRONLY | os.O_APPEND)
    try:
        code, _, err = run(["logs", "export", "--output", name.format(fd=fd)], logged, capsys)
    finally:
        os.close(fd)
    assert code == 0, err
    first, header, *_ = archive.read_text().splitlines()
    assert first == "an earlier line"
    assert json.loads(header)["kind"] == "export"


async def test_an_export_to_a_stream_it_cannot_write_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    readable = os.open(tmp_path / "in.txt", os.O_RDONLY | os.O_CREAT)
    closed = os.dup(readable)
    os.close(closed)
    try:
        for fd, says in ((readable, "open for reading only"), (closed, "Bad file descriptor")):
            code, out, err = run(["logs", "export", "-o", f"/dev/fd/{fd}"], logged, capsys)
            assert (code, out) == (2, ""), err
            assert says in err
            assert "Traceback" not in err
    finally:
        os.close(readable)


async def test_an_export_to_a_stream_whose_reader_left_is_a_broken_pipe(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # `-o /dev/stdout | head`: the reader had enough, as with `-o -`; not a usage error.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with pytest.raises(BrokenPipeError):
            _export_to(Path(f"/dev/fd/{write_end}"), logged.share_log.path, None, None)
    finally:
        os.close(write_end)


async def test_an_export_through_a_link_to_a_pipe_writes_into_the_pipe(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `-o /dev/stderr` with stderr piped is such a link: resolved, its path does not exist.
    read_end, write_end = os.pipe()
    link = tmp_path / "pipe-link"
    link.symlink_to(f"/proc/self/fd/{write_end}")
    try:
        code, _, err = run(["logs", "export", "-o", str(link)], logged, capsys)
        os.close(write_end)
        with os.fdopen(read_end, encoding="utf-8") as received:
            header = json.loads(received.readline())
    finally:
        with contextlib.suppress(OSError):
            os.close(write_end)
    assert code == 0, err
    assert header["kind"] == "export"


async def test_an_export_to_a_device_writes_to_it_and_leaves_it_in_place(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["logs", "export", "--output", "/dev/null"], logged, capsys)
    assert code == 0, err
    assert "exported" in err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # written to, not replaced


async def test_exports_hold_every_record_and_never_cut_one_silently(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # An access request answered from a json or csv export must hold every share about the
    # person: 105 of them, past the table's page of 100.
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    try:
        for n in range(105):
            await share_log.record(share(f"s-{n}", T0 + timedelta(seconds=n)))
    finally:
        await share_log.close()
    capsys.readouterr()  # the log's own JSON lines
    for command in (["logs", "query"], ["logs", "subject", "alice"]):
        code, out, err = run([*command, "--format", "json"], settings, capsys)
        assert (code, len(json.loads(out)), err) == (0, 105, "")
        code, out, err = run([*command, "--format", "csv"], settings, capsys)
        assert (code, len(list(csv.DictReader(io.StringIO(out)))), err) == (0, 105, "")
        code, out, err = run([*command, "--format", "json", "--limit", "10"], settings, capsys)
        assert (code, len(json.loads(out))) == (0, 10)
        assert err.startswith("rows 1-10 of 105; next page: --cursor ")
        code, out, _ = run(command, settings, capsys)  # a table: a page at a time, and says so
        assert "rows 1-100 of 105; next page: --cursor " in out.splitlines()[-1]


@pytest.mark.parametrize(
    "rows", [[], [{"a": 1}], [{"a": 1, "b": [1, {"c": None}], "d": {}}, {"a": "二", "b": []}]]
)
def test_a_streamed_json_export_is_the_array_it_would_be_whole(rows: list[dict[str, Any]]) -> None:
    # Written row by row (an export of millions of records never sits in memory), the bytes
    # are those of the whole list.
    out = io.StringIO()
    assert _write_json(iter(rows), out) == len(rows)
    assert out.getvalue() == orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"


@pytest.mark.parametrize("option", ["--offset", "--limit"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [("99999999999999999999", "must be at most"), ("-1", "must not be negative")],
    ids=["beyond_sqlite", "negative"],
)
async def test_paging_by_a_count_out_of_range_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str], option: str, value: str, problem: str
) -> None:
    # SQLite reads a negative OFFSET as none: the first page, not the one asked for.
    code, out, err = run(["logs", "query", option, value], logged, capsys)
    assert (code, out) == (2, "")
    assert problem in err
    assert "Traceback" not in err


async def test_a_log_another_writer_holds_is_busy_not_broken(
    logged: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    open_ledger = Ledger.open.__func__  # type: ignore[attr-defined]

    def impatient(cls: type[Ledger], *args: Any, **kwargs: Any) -> Ledger:
        return open_ledger(cls, *args, **{**kwargs, "busy_timeout_s": 0.1})  # type: ignore[no-any-return]

    monkeypatch.setattr(Ledger, "open", classmethod(impatient))
    other = sqlite3.connect(logged.share_log.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the running gateway, mid-commit
    try:
        code, _, err = run(["logs", "prune", "--before", "2000-01-01"], logged, capsys)
        # A dry run only reads: it answers while the writer holds the lock.
        dry = run(["logs", "prune", "--before", "2000-01-01", "--dry-run"], logged, capsys)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert code == 1
    assert "is busy (another writer holds it); try again" in err
    assert dry[0] == 0
    assert dry[1].startswith("would remove 0 shares")


@pytest.mark.parametrize("dry_run", [False, True], ids=["prune", "dry_run"])
@pytest.mark.parametrize("content", ["empty", "another_database"])
async def test_prune_refuses_a_file_that_is_not_a_share_log(
    settings: Settings, capsys: pytest.CaptureFixture[str], content: str, dry_run: bool
) -> None:
    path = settings.share_log.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    if content == "another_database":
        tamper(path, "CREATE TABLE customers (name TEXT)")
    before = _files(path.parent)
    argv = ["logs", "prune", "--before", "2000-01-01", *(["--dry-run"] if dry_run else [])]
    code, out, err = run(argv, settings, capsys)
    assert (code, out) == (1, "")
    assert "is not a readable share log" in err
    assert _files(path.parent) == before


async def test_a_dry_run_prune_fails_where_the_prune_fails(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # The last entry removed: the signed head is not the tail any more.
    tamper(
        logged.share_log.path,
        "DELETE FROM checkpoints WHERE seq = (SELECT MAX(seq) FROM checkpoints)",
    )
    for dry_run in ([], ["--dry-run"]):
        code, out, err = run(["logs", "prune", "--before", "2000-01-01", *dry_run], logged, capsys)
        assert (code, out) == (1, "")
        assert "entries were removed or altered" in err


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


async def test_a_dry_run_prune_writes_nothing(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    path = logged.share_log.path
    # A copy restored in rollback-journal mode: opening it for writing would switch it to WAL.
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    conn.close()
    before = _files(path.parent)

    code, out, err = run(["logs", "prune", "--before", "2000-01-01", "--dry-run"], logged, capsys)

    assert (code, err) == (0, "")
    assert out.startswith("would remove 0 shares")
    assert _files(path.parent) == before


# Every `logs` command, as a user types it.
EVERY_COMMAND = [
    ["query"],
    ["summary"],
    ["subject", "alice"],
    ["verify"],
    ["export"],
    ["prune", "--before", "2000-01-01"],
    ["prune", "--before", "2000-01-01", "--dry-run"],
]


def _damage(path: Path, damage: str) -> str:
    """Damage the share log at `path` (written and closed); what SQLite or the gateway says."""
    for companion in path.parent.glob(f"{path.name}?*"):
        companion.unlink()
    if damage == "truncated":  # cut short, as a full disk or an interrupted copy leaves it
        with path.open("r+b") as file:
            file.truncate(path.stat().st_size // 2)
        return "database disk image is malformed"
    if damage == "empty":  # `: > share-log.sqlite`
        path.write_bytes(b"")
        return "the file is empty (0 bytes): the log was erased, or never written"
    if damage == "not_sqlite":
        path.write_bytes(b"not a database, just bytes" * 400)
        return "file is not a database"
    path.unlink()
    if damage == "no_tables":  # an SQLite file whose tables were dropped, or never made
        tamper(path, "CREATE TABLE grants (subject TEXT)", "DROP TABLE grants")
        return "an SQLite file without the share log's tables (no schema)"
    tamper(path, "CREATE TABLE grants (subject TEXT)")  # the consent registry, say
    return "another SQLite file, not a share log"


@pytest.mark.parametrize(
    "damage", ["truncated", "empty", "not_sqlite", "another_database", "no_tables"]
)
@pytest.mark.parametrize("argv", EVERY_COMMAND, ids=" ".join)
async def test_a_file_that_is_not_a_readable_share_log_fails_every_command_alike(
    logged: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], damage: str
) -> None:
    path = logged.share_log.path
    reason = _damage(path, damage)
    code, out, err = run(["logs", *argv], logged, capsys)  # a traceback would fail here
    # A failed check, as `logs verify` has always called it: the same file may be a log whose
    # records were lost, which is never a usage error.
    assert code == 1
    line = f"{path} is not a readable share log: {reason}\n"
    if argv[0] == "verify" and damage == "empty":
        # Said plainly: there is nothing to look into, every record is gone.
        assert (out, err) == (f"share log verification FAILED (empty): {path}: {reason}\n", "")
    elif argv[0] == "verify":
        assert (out, err) == (f"share log verification FAILED (unreadable): {line}", "")
    else:
        assert (out, err) == ("", f"share-gateway logs {argv[0]}: {line}")


@pytest.mark.parametrize("argv", EVERY_COMMAND, ids=" ".join)
async def test_a_log_of_a_newer_schema_is_a_usage_error_for_every_command(
    logged: Settings, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    path = logged.share_log.path
    tamper(path, "PRAGMA user_version = 99")
    code, out, err = run(["logs", *argv], logged, capsys)
    assert (code, out) == (2, "")
    assert err == (
        f"share-gateway logs {argv[0]}: {path} is not readable by this gateway: "
        "share log schema 99 is newer than this gateway understands (1)\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["logs", "query", "--until", "9999-12-31"],
        ["logs", "summary", "--until", "9999-12-31"],
        ["logs", "export", "--until", "9999-12-31"],
        ["logs", "query", "--since", "0001-01-01"],
        ["logs", "query", "--since", "99999999d"],
    ],
)
async def test_times_out_of_range_are_usage_errors(
    logged: Settings, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(argv, logged, capsys)
    assert code == 2
    assert "is out of the range of dates the log can hold" in err


def test_config_may_come_before_or_after_the_command() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    add_logs(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["--config", "a.yaml", "logs", "query"]).config == Path("a.yaml")
    assert parser.parse_args(["logs", "verify", "--config", "b.yaml"]).config == Path("b.yaml")
    assert parser.parse_args(["logs", "summary"]).config is None


def _as_a_reader() -> list[str]:
    """A prefix that runs a command held to file modes, as an auditor's account is."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores file modes, and setpriv is not here to drop that")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


async def _logs_as_a_reader(argv: list[str], config: Path) -> tuple[int | None, str, str]:
    """`share-gateway logs ARGV --config CONFIG` in a process of its own, held to file modes."""
    command = await asyncio.create_subprocess_exec(
        *_as_a_reader(),
        sys.executable,
        "-m",
        "gateway",
        "logs",
        *argv,
        "--config",
        str(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, KEY_ENV: HASH_KEY},
    )
    out, err = await asyncio.wait_for(command.communicate(), timeout=60)
    return command.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["verify"], "share log verified"),
        (["query", "--format", "json"], '"share_id": "s-4"'),
        (["subject", "carol", "--format", "json"], '"share_id": "s-4"'),
    ],
)
async def test_a_log_in_a_folder_the_reader_cannot_write_can_be_reviewed(
    logged: Settings, tmp_path: Path, argv: list[str], shown: str
) -> None:
    # A read-only snapshot of a log closed cleanly: no `-shm` beside it, and none can be made.
    _as_a_reader()  # skips the test, before any file is changed, where modes cannot hold
    folder = logged.share_log.path.parent
    for companion in folder.glob("share-log.sqlite?*"):
        companion.unlink()
    config = tmp_path / "etc" / "gateway.yaml"
    config.parent.mkdir()
    config.write_text(f"share_log: {{path: {logged.share_log.path}, stdout: false}}\n")
    folder.chmod(0o555)
    try:
        code, out, err = await _logs_as_a_reader(argv, config)
    finally:
        folder.chmod(0o755)
    assert (code, err) == (0, "")
    assert shown in out
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["share-log.sqlite"]


@pytest.mark.parametrize("command", ["verify", "query"])
async def test_a_log_this_account_may_not_open_is_a_usage_error(
    logged: Settings, tmp_path: Path, command: str
) -> None:
    # Not a damaged log: the account's permissions, which the caller can set right.
    _as_a_reader()  # skips the test, before any file is changed, where modes cannot hold
    path = logged.share_log.path
    config = tmp_path / "gateway.yaml"
    config.write_text(f"share_log: {{path: {path}, stdout: false}}\n")
    path.chmod(0o000)
    try:
        code, out, err = await _logs_as_a_reader([command], config)
    finally:
        path.chmod(0o600)
    assert (code, out) == (2, "")
    assert err == (
        f"share-gateway logs {command}: {path} cannot be opened by this account: "
        "unable to open database file\n"
    )


# --- several logs (--log) -------------------------------------------------------------------


async def _log_of(
    path: Path, records: list[ShareRecord], key: str = HASH_KEY, *, failed: tuple[str, ...] = ()
) -> None:
    """A sidecar's share log at `path`, closed as its gateway leaves it: the shares in `failed`
    never left, the others' outcomes are `unknown`."""
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), key.encode())
    try:
        for record in records:
            await share_log.record(record)
            if record.share_id in failed:
                await share_log.record_outcome(ShareOutcome(record.share_id, "error", None, 0, 2.0))
    finally:
        await share_log.close()


@pytest.fixture
async def sidecars(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> list[str]:
    """Two sidecars' logs, named as given from their folder, with alice's shares in both
    (interleaved in time, one at the same instant) and other people's."""
    monkeypatch.chdir(tmp_path)
    await _log_of(
        tmp_path / "booking.sqlite",
        [
            share("b-1", T0),
            share("b-2", T0 + timedelta(minutes=10), subjects=("bob",)),
            share("b-3", T0 + timedelta(minutes=20)),
            share("b-4", T0 + timedelta(minutes=25), decision="denied", reason="scope_denied"),
            share("b-5", T0 + timedelta(minutes=30), subjects=("bob", "alice")),
        ],
    )
    await _log_of(
        tmp_path / "billing.sqlite",
        [
            share("p-1", T0 + timedelta(minutes=5), partner="cloudstore"),
            share("p-2", T0 + timedelta(minutes=20), partner="cloudstore"),
            share("p-3", T0 + timedelta(minutes=40), partner="cloudstore", subjects=("carol",)),
        ],
    )
    capsys.readouterr()  # what the gateways logged
    return ["booking.sqlite", "billing.sqlite"]


def _with_logs(names: list[str]) -> list[str]:
    return [option for name in names for option in ("--log", name)]


async def test_subject_over_several_logs_lists_the_persons_shares_from_each_in_time_order(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["logs", "subject", "alice", *_with_logs(sidecars)]
    code, out, err = run([*argv, "--format", "json"], settings, capsys)
    assert (code, err) == (0, "")
    rows = json.loads(out)
    # b-3 and p-2 share an instant: the logs' order on the command line breaks the tie.
    assert [(r["log"], r["share_id"]) for r in rows] == [
        ("booking.sqlite", "b-1"),
        ("billing.sqlite", "p-1"),
        ("booking.sqlite", "b-3"),
        ("billing.sqlite", "p-2"),
        ("booking.sqlite", "b-5"),
    ]
    assert list(rows[0]) == ["log", *QUERY_FIELDS]

    code, out, _ = run([*argv, "--format", "csv"], settings, capsys)
    listed = list(csv.DictReader(io.StringIO(out)))
    assert list(listed[0]) == ["log", *QUERY_FIELDS]
    assert [(r["log"], r["share_id"]) for r in listed] == [(r["log"], r["share_id"]) for r in rows]

    code, out, _ = run(argv, settings, capsys)
    *table, note = out.rstrip("\n").split("\n")
    header, lines = columns_of("\n".join(table))
    assert header.split()[2] == "log"  # after "time (Asia/Shanghai)"
    assert [line.split()[2:4] for line in lines] == [[r["log"], r["share_id"]] for r in rows]
    assert note == "rows 1-5 of 5 in 2 logs"

    code, out, _ = run([*argv, "--include-denied", "--format", "json"], settings, capsys)
    assert [r["share_id"] for r in json.loads(out)] == ["b-1", "p-1", "b-3", "p-2", "b-4", "b-5"]
    code, out, _ = run(
        [*argv, "--since", "2025-03-01T09:10Z", "--until", "2025-03-01T09:30Z", "--format", "json"],
        settings,
        capsys,
    )
    assert [r["share_id"] for r in json.loads(out)] == ["b-3", "p-2"]
    code, out, _ = run(["logs", "subject", "nobody", *_with_logs(sidecars)], settings, capsys)
    assert (code, out) == (0, "no share records match in 2 logs\n")


async def test_query_over_several_logs_merges_them_too(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["logs", "query", *_with_logs(sidecars), "--format", "json"]
    code, out, _ = run([*argv, "--subject", "carol"], settings, capsys)
    assert [(r["log"], r["share_id"]) for r in json.loads(out)] == [("billing.sqlite", "p-3")]
    code, out, err = run([*argv, "--partner", "cloudstore", "--limit", "2"], settings, capsys)
    assert [r["share_id"] for r in json.loads(out)] == ["p-1", "p-2"]
    assert (code, err) == (0, "rows 1-2 of 3 in 2 logs; 1 more: leave out --limit for every row\n")


async def test_a_log_signed_with_another_hash_key_is_refused_naming_it(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its references are of no one this key names: "no share records match" there would be a
    # false answer about that sidecar.
    await _log_of(Path("other.sqlite"), [share("o-1", T0)], key="another-deployments-key-" * 2)
    capsys.readouterr()
    for argv in (["logs", "subject", "alice"], ["logs", "query", "--subject", "alice"]):
        code, out, err = run([*argv, *_with_logs([*sidecars, "other.sqlite"])], settings, capsys)
        assert (code, out) == (2, "")
        assert err.endswith(
            f"other.sqlite is not signed with this hash key: is {KEY_ENV} the gateway's?\n"
        )


@pytest.mark.parametrize("paging", [["--cursor", "x"], ["--offset", "0"], ["--offset", "3"]])
@pytest.mark.parametrize("command", [["subject", "alice"], ["query"]])
async def test_a_cursor_or_an_offset_over_several_logs_is_a_usage_error(
    sidecars: list[str],
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    paging: list[str],
    command: list[str],
) -> None:
    code, out, err = run(["logs", *command, *_with_logs(sidecars), *paging], settings, capsys)
    assert (code, out) == (2, "")
    assert "--cursor and --offset page one log, not several" in err


async def test_each_row_names_its_log_as_it_was_given(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    given = ["./booking.sqlite", "billing.sqlite"]
    argv = ["logs", "subject", "alice", *_with_logs(given), "--format", "json"]
    code, out, _ = run(argv, settings, capsys)
    assert code == 0
    assert {r["log"] for r in json.loads(out)} == set(given)


async def test_a_cursor_over_several_logs_is_refused_before_any_is_read(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a log\n")
    logs = _with_logs([*sidecars, "notes.txt"])
    for argv in (["logs", "subject", "alice"], ["logs", "query"]):
        code, out, err = run([*argv, *logs, "--cursor", "x"], settings, capsys)
        assert (code, out) == (2, "")
        assert "--cursor and --offset page one log, not several" in err


@pytest.mark.parametrize("content", ["text", "another_database", "empty"])
async def test_a_file_that_is_no_share_log_is_refused_naming_it(
    sidecars: list[str],
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: str,
) -> None:
    stray = tmp_path / "notes.txt"
    stray.write_text("" if content == "empty" else "not a log\n" * 100)
    if content == "another_database":
        stray.unlink()
        tamper(stray, "CREATE TABLE customers (name TEXT)")
    for argv in (["logs", "subject", "alice"], ["logs", "query"]):
        code, out, err = run([*argv, *_with_logs([*sidecars, "notes.txt"])], settings, capsys)
        assert (code, out) == (1, "")
        assert err.startswith(
            f"share-gateway logs {argv[1]}: notes.txt is not a readable share log"
        )
    code, out, err = run(["logs", "subject", "alice", "--log", "missing.sqlite"], settings, capsys)
    assert (code, out) == (2, "")
    assert err.endswith(": no share log at missing.sqlite (--log)\n")


async def test_the_same_log_given_twice_is_read_once(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "mounted").symlink_to(tmp_path)
    again = ["booking.sqlite", "./booking.sqlite", str(tmp_path / "mounted" / "booking.sqlite")]
    code, out, _ = run(
        ["logs", "subject", "alice", *_with_logs(again), "--format", "json"], settings, capsys
    )
    assert code == 0
    assert [(r["log"], r["share_id"]) for r in json.loads(out)] == [
        ("booking.sqlite", "b-1"),
        ("booking.sqlite", "b-3"),
        ("booking.sqlite", "b-5"),
    ]
    # One log, however often it is named: it pages as the settings' own log does.
    code, out, _ = run(
        ["logs", "subject", "alice", *_with_logs(again), "--limit", "2"], settings, capsys
    )
    assert out.rstrip("\n").split("\n")[-1].startswith("rows 1-2 of 3; next page: --cursor ")


async def test_one_log_pages_by_cursor_and_its_cursor_continues_no_other_log(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["logs", "subject", "alice", "--include-denied", "--log", "booking.sqlite"]
    ids, notes = _every_page([*argv, "--limit", "2", "--format", "csv"], settings, capsys)
    assert ids == ["b-1", "b-3", "b-4", "b-5"]
    assert notes[0].startswith("rows 1-2 of 4; next page: --cursor ")
    assert notes[1] == "rows 3-4 of 4"
    code, out, _ = run([*argv, "--format", "csv"], settings, capsys)
    assert {row["log"] for row in csv.DictReader(io.StringIO(out))} == {"booking.sqlite"}
    token = cursor_of(notes[0])
    other = [*argv[:-1], "billing.sqlite", "--limit", "2", "--format", "csv", "--cursor", token]
    code, out, err = run(other, settings, capsys)
    assert (code, out) == (2, "")
    assert "--cursor is not the next page of this query" in err


async def test_a_table_over_several_logs_shows_100_rows_and_says_how_many_more(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for side in ("a", "b"):
        await _log_of(
            tmp_path / f"{side}.sqlite",
            [share(f"{side}-{n:02d}", T0 + timedelta(minutes=n)) for n in range(60)],
        )
    capsys.readouterr()
    argv = ["logs", "subject", "alice", *_with_logs([str(tmp_path / "a.sqlite")])]
    argv += _with_logs([str(tmp_path / "b.sqlite")])
    code, out, err = run(argv, settings, capsys)
    *table, note = out.rstrip("\n").split("\n")
    assert (code, err) == (0, "")
    assert len(columns_of("\n".join(table))[1]) == 100
    assert note == "rows 1-100 of 120 in 2 logs; 20 more: --format json or csv gives every row"

    code, out, err = run([*argv, "--format", "json"], settings, capsys)
    rows = json.loads(out)
    assert (len(rows), err) == (120, "")
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    code, out, err = run([*argv, "--format", "csv", "--limit", "110"], settings, capsys)
    assert len(list(csv.DictReader(io.StringIO(out)))) == 110
    assert err == "rows 1-110 of 120 in 2 logs; 10 more: leave out --limit for every row\n"
    code, out, err = run([*argv, "--format", "json", "--limit", "120"], settings, capsys)
    assert (len(json.loads(out)), err) == (120, "")
    # json or csv with the same --limit would give those rows again.
    code, out, err = run([*argv, "--limit", "30"], settings, capsys)
    *table, note = out.rstrip("\n").split("\n")
    assert len(columns_of("\n".join(table))[1]) == 30
    assert note == (
        "rows 1-30 of 120 in 2 logs; 90 more: --format json or csv without --limit gives every row"
    )


async def test_a_damaged_entry_in_one_of_several_logs_is_said_of_that_log(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # One a table cannot show, one no format can read.
    tamper(Path("billing.sqlite"), "UPDATE shares SET ts = 'noon' WHERE share_id = 'p-2'")
    for fmt, log in (("table", "billing"), ("json", "booking")):
        if fmt == "json":
            tamper(
                Path("booking.sqlite"), "UPDATE shares SET fields_sent = '[' WHERE share_id = 'b-5'"
            )
        argv = ["logs", "subject", "alice", *_with_logs(sidecars), "--format", fmt]
        code, _, err = run(argv, settings, capsys)
        assert code == 1
        assert err.startswith(f"share-gateway logs subject: {log}.sqlite: the share at seq ")
        assert err.endswith("run `share-gateway logs verify`\n")


async def test_a_busy_log_among_several_is_read(
    sidecars: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    other = sqlite3.connect("booking.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # its gateway, mid-commit
    try:
        argv = ["logs", "subject", "alice", *_with_logs(sidecars), "--format", "json"]
        code, out, _ = run(argv, settings, capsys)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert code == 0
    assert len(json.loads(out)) == 5


_HEADER = (
    "time (Asia/Shanghai)  share_id  partner  caller   purpose            route            "
    "decision              outcome        ms  records  subjects  sent/stripped  categories\n"
    "--------------------  --------  -------  -------  -----------------  ---------------  "
    "--------------------  -------------  --  -------  --------  -------------  "
    "------------------------------\n"
    "2025-03-01 17:00:00   s-1       acme     billing  credit_assessment  POST /v1/assess  "
    "shared                delivered 200  31        1         1  2/1            "
    "identity.name,financial.income\n"
    "2025-03-01 17:05:00   s-2       acme     billing  credit_assessment  POST /v1/assess  "
    "denied: scope_denied  -               -        0         1  0/0            -\n"
)


async def test_without_log_the_output_is_as_it_was(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # As printed before `--log` existed, cursor included: the settings' log is read as it was.
    subject = run(["logs", "subject", "alice", "--include-denied"], logged, capsys)
    assert subject == (0, _HEADER + "rows 1-2 of 2\n", "")
    assert run(["logs", "query", "--limit", "2"], logged, capsys) == (
        0,
        _HEADER + "rows 1-2 of 4; next page: --cursor WzEsIjIwMjUtMDMtMDFUMDk6MDU6MDAuMDAwMDAwWi"
        "IsNCwyLDcsbnVsbCxudWxsXQ.2cZxr06Tly7osOe-iZOKmg with the same filters\n",
        "",
    )
    assert run(["logs", "subject", "nobody"], logged, capsys) == (0, "no share records match\n", "")
    _, out, _ = run(["logs", "subject", "alice", "--format", "csv"], logged, capsys)
    assert out.split("\n")[0] == ",".join(QUERY_FIELDS)
    _, out, _ = run(["logs", "subject", "alice", "--format", "json"], logged, capsys)
    assert list(json.loads(out)[0]) == list(QUERY_FIELDS)


_SUMMARY = """\
share log summary, the beginning to now (Asia/Shanghai)

partner     shares  records  subjects  denied  errors  bytes  outcomes
----------  ------  -------  --------  ------  ------  -----  ----------------------
acme             2        2         2       1       0     80  delivered 1, timeout 1
cloudstore       1        1         1       0       0     40  delivered 1

acme
  categories sent  financial.income 2, identity.name 2
  fields sent      applicant.income 2, applicant.name 2
  denials          scope_denied 1
  errors           -
  top stripped     applicant.phone 2

cloudstore
  categories sent  financial.income 1, identity.name 1
  fields sent      applicant.income 1, applicant.name 1
  denials          -
  errors           -
  top stripped     applicant.phone 1
"""


async def test_without_log_summary_verify_and_export_are_as_they_were(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # As printed before `--log` was taken by these commands.
    assert run(["logs", "summary"], logged, capsys) == (0, _SUMMARY, "")
    code, out, _ = run(
        ["logs", "summary", "--until", "2025-03-01", "--format", "json"], logged, capsys
    )
    assert out.startswith('[\n  {\n    "partner": "acme",\n    "shares": 2,\n')
    assert out == orjson.dumps(json.loads(out), option=orjson.OPT_INDENT_2).decode() + "\n"
    assert [p["partner"] for p in json.loads(out)] == ["acme"]
    assert run(["logs", "verify"], logged, capsys) == (
        0,
        "share log verified: 9 entries (4 shares, 3 outcomes, 2 checkpoints), seq 1-9; "
        "signed head at seq 9\n",
        "",
    )
    assert run(["logs", "verify", "--format", "json"], logged, capsys) == (
        0,
        '{\n  "ok": true,\n  "entries": 9,\n  "shares": 4,\n  "outcomes": 3,\n'
        '  "checkpoints": 2,\n  "first_seq": 1,\n  "last_seq": 9,\n  "head_seq": 9,\n'
        '  "problem": null\n}\n',
        "",
    )
    code, out, err = run(["logs", "export", "--until", "2025-03-01"], logged, capsys)
    assert (code, len(out.splitlines())) == (0, 8)
    assert err == "exported 6 entries (seq 1-6) to stdout\n"


async def test_a_snapshot_of_a_running_gateways_log_holds_its_latest_shares(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The README's way to copy a sidecar's log: SQLite's backup, not a copy of the file, whose
    # latest commits may still be in its `-wal`.
    live = ShareLogSettings(path=tmp_path / "live" / "share-log.sqlite", stdout=False)
    share_log = await ShareLog.open(live, HASH_KEY.encode())
    try:
        for n in range(3):
            await share_log.record(share(f"s-{n}", T0 + timedelta(minutes=n)))
        source = sqlite3.connect(f"file:{live.path}?mode=ro", uri=True)
        target = sqlite3.connect(tmp_path / "copy.sqlite")
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
    finally:
        await share_log.close()
    capsys.readouterr()
    argv = ["logs", "subject", "alice", "--log", str(tmp_path / "copy.sqlite"), "--format", "json"]
    code, out, _ = run(argv, settings, capsys)
    assert code == 0
    assert [r["share_id"] for r in json.loads(out)] == ["s-0", "s-1", "s-2"]


# --- a fleet's summary, verification and export (--log) -------------------------------------


@pytest.fixture
async def fleet(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> list[str]:
    """Two sidecars' logs sharing with acme, about alice in both; and `one.sqlite`, every share
    of them written to a single log, which their summary must equal."""
    monkeypatch.chdir(tmp_path)
    booking = [
        share("b-1", T0),
        share("b-2", T0 + timedelta(minutes=10), subjects=("bob",)),
        share("b-3", T0 + timedelta(minutes=20), decision="denied", reason="scope_denied"),
    ]
    billing = [
        share("p-1", T0 + timedelta(minutes=5)),
        share("p-2", T0 + timedelta(minutes=15), partner="cloudstore", subjects=("carol",)),
        share("p-3", T0 + timedelta(days=1), decision="denied", reason="purpose_denied"),
        share("p-4", T0 + timedelta(days=1), subjects=("dave",)),
    ]
    await _log_of(tmp_path / "booking.sqlite", booking)
    await _log_of(tmp_path / "billing.sqlite", billing)
    await _log_of(tmp_path / "one.sqlite", sorted([*booking, *billing], key=lambda r: r.ts))
    capsys.readouterr()
    return ["booking.sqlite", "billing.sqlite"]


async def test_summary_over_several_logs_adds_them_up_as_one_log(
    fleet: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["logs", "summary", *_with_logs(fleet), "--format", "json"]
    code, out, err = run(argv, settings, capsys)
    assert (code, err) == (0, "")
    summed = json.loads(out)
    assert summed == {"logs": fleet, "partners": summary(Path("one.sqlite"))}
    acme = summed["partners"][0]
    # alice, shared with by both sidecars, is one subject; bob and dave the others.
    assert (acme["partner"], acme["shares"], acme["records"], acme["subjects"]) == ("acme", 4, 4, 3)
    assert acme["denials"] == {"purpose_denied": 1, "scope_denied": 1}
    assert acme["top_fields_stripped"] == [{"field": "applicant.phone", "count": 4}]
    assert acme["categories_sent"] == {"financial.income": 4, "identity.name": 4}

    code, out, _ = run([*argv, "--until", "2025-03-01"], settings, capsys)
    one_day = summary(Path("one.sqlite"), until=datetime(2025, 3, 1, 16, 0, tzinfo=UTC))
    assert json.loads(out)["partners"] == one_day
    assert one_day[0]["subjects"] == 2  # alice and bob: dave's share is on 2 March

    code, out, _ = run(["logs", "summary", *_with_logs(fleet)], settings, capsys)
    lines = out.splitlines()
    assert lines[:3] == [
        "share log summary, the beginning to now (Asia/Shanghai)",
        "in 2 logs: booking.sqlite, billing.sqlite",
        "",
    ]
    assert lines[5].split()[:7] == ["acme", "4", "4", "3", "2", "0", "160"]
    assert "  top stripped     applicant.phone 4" in lines


async def test_summary_over_one_log_names_it_and_the_same_log_twice_is_read_once(
    fleet: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    twice = _with_logs(["booking.sqlite", "./booking.sqlite"])
    code, out, _ = run(["logs", "summary", *twice, "--format", "json"], settings, capsys)
    assert code == 0
    assert json.loads(out) == {
        "logs": ["booking.sqlite"],
        "partners": summary(Path("booking.sqlite")),
    }
    _, out, _ = run(["logs", "summary", "--log", "booking.sqlite"], settings, capsys)
    assert out.splitlines()[1] == "in 1 log: booking.sqlite"


async def test_summary_over_several_logs_counts_as_sent_only_what_may_have_reached_the_partner(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    await _log_of(tmp_path / "booking.sqlite", [share("b-1", T0)])
    bob = share("p-1", T0 + timedelta(minutes=5), subjects=("bob",))
    await _log_of(tmp_path / "billing.sqlite", [bob], failed=("p-1",))
    capsys.readouterr()
    argv = ["logs", "summary", *_with_logs(["booking.sqlite", "billing.sqlite"])]
    code, out, err = run(argv, settings, capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    header = lines[3]
    # bob's share never left: two shares, but alice's record, subject and bytes alone were sent.
    assert lines[5].split()[:7] == ["acme", "2", "1", "1", "0", "0", "40"]
    assert lines[5][header.index("outcomes") :] == "error 1, unknown 1"
    assert "  categories sent  financial.income 1, identity.name 1" in lines
    assert "  fields sent      applicant.income 1, applicant.name 1" in lines
    assert "  top stripped     applicant.phone 2" in lines

    code, out, _ = run([*argv, "--format", "json"], settings, capsys)
    [acme] = json.loads(out)["partners"]
    assert list(acme) == [
        "partner",
        "shares",
        "records",
        "subjects",
        "bytes_sent",
        "denied",
        "errors",
        "denials",
        "errors_by_reason",
        "outcomes",
        "categories_sent",
        "fields_sent",
        "top_fields_stripped",
    ]
    assert (acme["records"], acme["subjects"], acme["bytes_sent"]) == (1, 1, 40)


async def test_verify_over_several_logs_reports_each_and_fails_naming_the_tampered_one(
    fleet: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["logs", "verify", *_with_logs(fleet)]
    code, out, err = run(argv, settings, capsys)
    assert (code, err) == (0, "")
    assert out.split("\n\n") == [
        "booking.sqlite:\nshare log verified: 7 entries (3 shares, 2 outcomes, 2 checkpoints), "
        "seq 1-7; signed head at seq 7",
        "billing.sqlite:\nshare log verified: 9 entries (4 shares, 3 outcomes, 2 checkpoints), "
        "seq 1-9; signed head at seq 9",
        "all 2 logs verified\n",
    ]

    tamper(Path("billing.sqlite"), "UPDATE shares SET partner = 'elsewhere' WHERE share_id = 'p-2'")
    code, out, err = run(argv, settings, capsys)
    assert (code, err) == (1, "")
    booking, billing, verdict = out.split("\n\n")
    assert booking.startswith("booking.sqlite:\nshare log verified: ")
    assert billing.startswith("billing.sqlite:\nshare log verification FAILED (changed): ")
    assert "first broken record: seq 3, share p-2" in billing
    assert verdict == "verification FAILED for 1 of 2 logs: billing.sqlite\n"

    code, out, _ = run([*argv, "--format", "json"], settings, capsys)
    reports = json.loads(out)
    assert code == 1
    assert [(r["log"], r["ok"]) for r in reports] == [
        ("booking.sqlite", True),
        ("billing.sqlite", False),
    ]
    assert list(reports[1]) == [
        "log",
        *(verify(Path("billing.sqlite"), HASH_KEY.encode()).to_json()),
    ]
    assert (reports[1]["problem"]["kind"], reports[1]["problem"]["share_id"]) == ("changed", "p-2")
    # Given in the other order, the failure is still the one log's.
    code, out, _ = run(["logs", "verify", *_with_logs(fleet[::-1])], settings, capsys)
    assert (code, out.splitlines()[-1]) == (
        1,
        "verification FAILED for 1 of 2 logs: billing.sqlite",
    )


async def test_verify_over_several_logs_reports_a_file_that_is_no_share_log_among_them(
    fleet: list[str], settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "empty.sqlite").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a log\n" * 100)
    argv = ["logs", "verify", *_with_logs([*fleet, "empty.sqlite", "notes.txt"])]
    code, out, err = run(argv, settings, capsys)
    assert (code, err) == (1, "")
    assert out.split("\n\n")[2:] == [
        "empty.sqlite:\nshare log verification FAILED (empty): empty.sqlite: the file is empty "
        "(0 bytes): the log was erased, or never written",
        "notes.txt:\nshare log verification FAILED (unreadable): notes.txt is not a readable "
        "share log: file is not a database",
        "verification FAILED for 2 of 4 logs: empty.sqlite, notes.txt\n",
    ]
    code, out, err = run(["logs", "verify", "--log", "missing.sqlite"], settings, capsys)
    assert (code, out) == (2, "")
    assert err == "share-gateway logs verify: no share log at missing.sqlite (--log)\n"
    tamper(Path("billing.sqlite"), "PRAGMA user_version = 99")
    code, out, err = run(["logs", "verify", *_with_logs(fleet)], settings, capsys)
    assert (code, out) == (2, "")  # nothing verified: no log is reported as if it were whole
    assert err.startswith("share-gateway logs verify: billing.sqlite is not readable by this ")


async def test_verify_over_several_logs_names_each_as_given(
    fleet: list[str], settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tamper(Path("billing.sqlite"), "UPDATE shares SET partner = 'elsewhere' WHERE share_id = 'p-2'")
    argv = ["logs", "verify", "--log", "booking.sqlite", "--log", "./billing.sqlite"]
    code, out, _ = run(argv, settings, capsys)
    assert code == 1
    assert out.splitlines()[-1] == "verification FAILED for 1 of 2 logs: ./billing.sqlite"
    # A folder is no share log: named as such, before any log is verified.
    code, out, err = run([*argv, "--log", str(tmp_path)], settings, capsys)
    assert (code, out) == (2, "")
    assert err == f"share-gateway logs verify: no share log at {tmp_path} (--log)\n"


async def test_verify_needs_the_hash_key_over_several_logs_too(
    fleet: list[str],
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(KEY_ENV)
    code, out, err = run(["logs", "verify", *_with_logs(fleet)], settings, capsys)
    assert (code, out) == (2, "")
    assert KEY_ENV in err


async def test_checkpoint_lines_go_with_one_log_only(
    fleet: list[str], settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    printed = await _printed_session(settings, capsys, share("s-1", T0))
    (tmp_path / "lines.jsonl").write_text(printed)
    argv = ["logs", "verify", "--checkpoints", "lines.jsonl"]
    code, out, err = run([*argv, *_with_logs(fleet)], settings, capsys)
    assert (code, out) == (2, "")
    assert err.startswith("share-gateway logs verify: --checkpoints are one gateway's lines")
    assert len(err.splitlines()) == 1
    # One log with its own gateway's lines: checked as the settings' log is.
    own = str(settings.share_log.path)
    code, out, err = run([*argv, "--log", own, "--log", own], settings, capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{own}:"
    assert out.splitlines()[2].startswith("checkpoint lines: 2 match the log")
    code, out, _ = run([*argv, "--log", "booking.sqlite"], settings, capsys)
    assert code == 1
    # The lines are of another gateway's log: this one is not the log they were printed by.
    assert out.startswith("booking.sqlite:\nshare log verification FAILED (")


async def test_export_of_a_log_named_by_log(
    fleet: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["logs", "export", "--log", "billing.sqlite"], settings, capsys)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["share_id"] for e in lines if e["kind"] == "share"] == ["p-1", "p-2", "p-3", "p-4"]
    assert lines[-1]["kind"] == "head"
    assert err == "exported 9 entries (seq 1-9) of billing.sqlite to stdout\n"
    code, out, err = run(
        ["logs", "export", "--log", "billing.sqlite", "-o", "billing.sqlite"], settings, capsys
    )
    assert (code, out) == (2, "")
    assert err.endswith("billing.sqlite is the share log's own file: export to another file\n")


async def test_an_export_of_several_logs_is_refused(
    fleet: list[str], settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(
        ["logs", "export", *_with_logs(fleet), "-o", "all.jsonl"], settings, capsys
    )
    assert (code, out) == (2, "")
    assert err.startswith("share-gateway logs export: --log names the one log to export")
    assert not (tmp_path / "all.jsonl").exists()
    # One log under two names is one chain.
    code, out, _ = run(
        ["logs", "export", *_with_logs(["billing.sqlite", "./billing.sqlite"])], settings, capsys
    )
    assert (code, len(out.splitlines())) == (0, 11)  # header, 9 entries, head


@pytest.mark.parametrize("command", [["summary"], ["export"]])
async def test_a_named_file_that_is_no_share_log_is_refused_before_anything_is_printed(
    fleet: list[str],
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    tamper(Path("notes.sqlite"), "CREATE TABLE customers (name TEXT)")
    names = fleet if command == ["summary"] else []
    code, out, err = run(
        ["logs", *command, *_with_logs([*names, "notes.sqlite"])], settings, capsys
    )
    assert (code, out) == (1, "")
    assert err == (
        f"share-gateway logs {command[0]}: notes.sqlite is not a readable share log: another "
        "SQLite file, not a share log\n"
    )
    code, out, err = run(["logs", *command, "--log", "missing.sqlite"], settings, capsys)
    assert (code, out) == (2, "")
    assert err == f"share-gateway logs {command[0]}: no share log at missing.sqlite (--log)\n"
    tamper(Path("billing.sqlite"), "UPDATE shares SET fields_stripped = '[' WHERE share_id = 'p-2'")
    code, out, err = run(["logs", "summary", *_with_logs(fleet)], settings, capsys)
    assert (code, out) == (1, "")
    assert err.startswith("share-gateway logs summary: billing.sqlite holds an entry that cannot ")


# --- logs export checks what it exports; logs verify --export checks the file ---------------


def _reforge(path: Path, share_id: str, partner: str) -> int:
    """Change a share and recompute its hash, as someone without the hash key could: its seq."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(f"{select_sql('share')} WHERE share_id = ?", (share_id,)).fetchone()
        entry = {**row_entry("share", row), "partner": partner}
        conn.execute(
            "UPDATE shares SET partner = ?, hash = ? WHERE seq = ?",
            (partner, entry_hash(unsealed(entry)), entry["seq"]),
        )
        conn.commit()
    finally:
        conn.close()
    return int(entry["seq"])


# What each damage does to the `logged` log, and what export says of it.
_DAMAGED = {
    "changed": (
        ["UPDATE shares SET partner = 'elsewhere' WHERE share_id = 's-3'"],
        "entry seq 5 (share s-3) was changed after it was written (its content no longer "
        "matches its hash)",
    ),
    "removed": (
        ["DELETE FROM outcomes WHERE share_id = 's-1'"],
        "entry seq 3 is missing (removed); the next is seq 4 (share s-2)",
    ),
    "relinked": (
        # The link alone, with the hash made again to match: only the link shows it.
        ["UPDATE outcomes SET prev_hash = '" + "ab" * 32 + "' WHERE share_id = 's-1'"],
        "entry seq 3 (share s-1) does not follow the entry before it (its prev_hash is not the "
        "hash of the entry before it): an entry was removed, or its link changed",
    ),
    "truncated": (
        ["DELETE FROM checkpoints WHERE reason = 'close'"],
        "the log ends at seq 8, but its signed head is at seq 9: the entries from seq 9 on "
        "were removed",
    ),
    "head unsigned": (
        ["UPDATE head SET mac = '" + "ab" * 32 + "'"],
        "the log's signed head (seq 9) was altered",
    ),
    "head of the wrong type": (
        ["UPDATE head SET seq = 'nine'"],
        "the log's signed head was altered",
    ),
    "head removed": (["DELETE FROM head"], "the log has no signed head"),
    "repeated": (
        [
            "INSERT INTO checkpoints SELECT 3, ts, reason, cut_seq, cut_prev_hash, prev_hash, hash,"
            " mac FROM checkpoints WHERE seq = 1"
        ],
        "entry seq 3 is a second entry at seq 3",
    ),
}


def _rehash_outcome(path: Path, share_id: str) -> None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(f"{select_sql('outcome')} WHERE share_id = ?", (share_id,)).fetchone()
        entry = row_entry("outcome", row)
        conn.execute(
            "UPDATE outcomes SET hash = ? WHERE seq = ?",
            (entry_hash(unsealed(entry)), entry["seq"]),
        )
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("damage", sorted(_DAMAGED))
@pytest.mark.parametrize("to", ["file", "stdout"])
async def test_an_export_of_a_damaged_log_fails_and_writes_nothing(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str, to: str
) -> None:
    statements, says = _DAMAGED[damage]
    tamper(logged.share_log.path, *statements)
    if damage == "relinked":
        _rehash_outcome(logged.share_log.path, "s-1")
    target = tmp_path / "audit.jsonl"
    code, out, err = run(
        ["logs", "export", *(["-o", str(target)] if to == "file" else [])], logged, capsys
    )
    assert (code, out) == (1, "")
    assert err == f"share-gateway logs export: {says}: run `share-gateway logs verify`\n"
    assert not target.exists()
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


# Every way out checks the seals with the key: a file (written beside it, then renamed), a
# stream by name, a device.
@pytest.mark.parametrize("to", [[], ["-o", "{file}"], ["-o", "/dev/stdout"], ["-o", os.devnull]])
async def test_an_export_of_a_reforged_entry_fails_at_its_seal_or_at_the_next_link(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    to: list[str],
) -> None:
    seq = _reforge(logged.share_log.path, "s-3", "elsewhere")
    output = [o.format(file=tmp_path / "audit.jsonl") for o in to]
    code, out, err = run(["logs", "export", *output], logged, capsys)
    assert (code, out) == (1, "")
    assert err == (
        f"share-gateway logs export: entry seq {seq} (share s-3) was rewritten and its hash "
        "re-forged (the hash is not signed with the log's key): run `share-gateway logs verify`\n"
    )
    # Without the key the seal cannot be checked, but the next entry still links to the old hash.
    monkeypatch.delenv(KEY_ENV)
    code, out, err = run(["logs", "export", *output], logged, capsys)
    assert (code, out) == (1, "")
    assert err.startswith(
        f"share-gateway logs export: entry seq {seq + 1} (share s-3) does not follow the entry "
        "before it"
    )


async def test_an_export_under_another_hash_key_fails_and_without_one_says_seals_went_unchecked(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "another-gateways-key-" * 3)
    code, out, err = run(["logs", "export"], logged, capsys)
    assert (code, out) == (1, "")
    assert err == (
        "share-gateway logs export: neither the log's signed head nor the first entry exported "
        "is signed with this hash key: is it the gateway's?: run `share-gateway logs verify`\n"
    )
    monkeypatch.setenv(KEY_ENV, "short")
    code, out, err = run(["logs", "export"], logged, capsys)
    assert (code, out) == (2, "")
    assert "must hold a secret of at least 32 bytes" in err
    monkeypatch.delenv(KEY_ENV)
    code, out, err = run(["logs", "export"], logged, capsys)
    assert code == 0
    assert len(out.splitlines()) == 11
    assert err == (
        "exported 9 entries (seq 1-9) to stdout\n"
        "hashes and links checked; seals not checked, and the header not sealed (its end is "
        f"not proven): no hash key in {KEY_ENV}\n"
    )


async def test_an_export_checks_the_entries_it_holds_and_the_link_into_them(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper(logged.share_log.path, "UPDATE shares SET partner = 'elsewhere' WHERE share_id = 's-1'")
    code, out, err = run(["logs", "export"], logged, capsys)
    assert (code, out) == (1, "")
    assert err.startswith("share-gateway logs export: entry seq 2 (share s-1) was changed")
    # A window after it holds none of it, and its first entry links to the sound one before.
    code, out, _ = run(["logs", "export", "--since", "2025-03-01T09:30Z"], logged, capsys)
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()[1:-1]] == [5, 6, 7, 8, 9]


def _relink(path: Path, kind: EntryKind, seq: int) -> None:
    """Point an entry at another entry before it and recompute its hash, as someone without
    the hash key could: only its link shows it."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(f"{select_sql(kind)} WHERE seq = ?", (seq,)).fetchone()
        entry = {**row_entry(kind, row), "prev_hash": "ab" * 32}
        conn.execute(
            f"UPDATE {kind}s SET prev_hash = ?, hash = ? WHERE seq = ?",  # noqa: S608 - constants
            (entry["prev_hash"], entry_hash(unsealed(entry)), seq),
        )
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("window", "kind", "seq", "where"),
    [
        ([], "checkpoint", 1, "seq 1"),
        (["--since", "2025-03-01T09:30Z"], "share", 5, "seq 5 (share s-3)"),
    ],
    ids=["from-seq-1", "window"],
)
async def test_an_export_checks_the_link_of_its_first_entry_without_the_key(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    window: list[str],
    kind: EntryKind,
    seq: int,
    where: str,
) -> None:
    # Without the key no seal shows the change: the first entry must still link to the one
    # before it in the log, or to the start of the chain.
    monkeypatch.delenv(KEY_ENV)
    _relink(logged.share_log.path, kind, seq)
    code, out, err = run(["logs", "export", *window], logged, capsys)
    assert (code, out) == (1, "")
    assert err.startswith(
        f"share-gateway logs export: entry {where} does not follow the entry before it"
    )


async def test_an_export_refuses_a_log_holding_the_entry_before_it_twice(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # A second entry at seq 4, the one the window's first entry (seq 5) links to.
    tamper(
        logged.share_log.path,
        "INSERT INTO checkpoints SELECT 4, ts, reason, cut_seq, cut_prev_hash, prev_hash, hash,"
        " mac FROM checkpoints WHERE seq = 1",
    )
    code, out, err = run(["logs", "export", "--since", "2025-03-01T09:30Z"], logged, capsys)
    assert (code, out) == (1, "")
    assert err == (
        "share-gateway logs export: entry seq 4, the one before the first exported, is held "
        "twice: run `share-gateway logs verify`\n"
    )


async def test_an_export_of_a_log_past_its_signed_head_fails(
    logged: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # An older head put back, validly signed: the last entry lies past it.
    conn = sqlite3.connect(logged.share_log.path)
    try:
        (digest,) = conn.execute("SELECT hash FROM outcomes WHERE seq = 8").fetchone()
        mac = head_mac(seal_key(HASH_KEY.encode()), 8, digest)
        conn.execute("UPDATE head SET seq = 8, hash = ?, mac = ?", (digest, mac))
        conn.commit()
    finally:
        conn.close()
    code, out, err = run(["logs", "export"], logged, capsys)
    assert (code, out) == (1, "")
    assert err == (
        "share-gateway logs export: entry seq 9 lies past the log's signed head (seq 8): "
        "run `share-gateway logs verify`\n"
    )


async def test_an_export_without_the_key_refuses_a_head_that_is_not_its_last_entry(
    logged: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the key the head's seal cannot be checked: its hash must still be the last entry's.
    monkeypatch.delenv(KEY_ENV)
    tamper(logged.share_log.path, "UPDATE head SET hash = lower(hex(zeroblob(32)))")
    code, out, err = run(["logs", "export"], logged, capsys)
    assert (code, out) == (1, "")
    assert err == (
        "share-gateway logs export: entry seq 9 is not the log's signed head (seq 9): "
        "run `share-gateway logs verify`\n"
    )


def _export_lines(
    logged: Settings, capsys: pytest.CaptureFixture[str], *window: str
) -> list[bytes]:
    code, out, _ = run(["logs", "export", *window], logged, capsys)
    assert code == 0
    return out.encode().splitlines(keepends=True)


def _verify_export(
    data: bytes,
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    *more: str,
) -> tuple[int, str, str]:
    path = tmp_path / "received.jsonl"
    path.write_bytes(data)
    return run(["logs", "verify", "--export", str(path), *more], logged, capsys)


@pytest.mark.parametrize(
    "window",
    [[], ["--since", "2025-03-01T09:30Z"], ["--until", "2025-03-01T09:30Z"]],
    ids=["whole", "since", "until"],
)
@pytest.mark.parametrize("keyed", [True, False], ids=["key", "no-key"])
async def test_an_export_verifies_as_exported_with_or_without_the_key(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    window: list[str],
    keyed: bool,
) -> None:
    lines = _export_lines(logged, capsys, *window)
    if not keyed:
        monkeypatch.delenv(KEY_ENV)
    code, out, err = _verify_export(b"".join(lines), logged, capsys, tmp_path)
    assert (code, err) == (0, "")
    shown = tmp_path / "received.jsonl"
    first, last = json.loads(lines[1])["seq"], json.loads(lines[-2])["seq"]
    report = out.splitlines()
    assert report[0].startswith(f"export verified: {shown}: {len(lines) - 2} entries (")
    assert report[0].endswith(f"seq {first}-{last}; head at seq 9")
    if first == 1:
        assert report[1] == "first entry: seq 1, linked to the start of the chain"
    else:
        anchor = json.loads(lines[1])["prev_hash"]
        assert report[1].startswith(f"first entry's prev_hash {anchor}: taken as given")
    assert report[-3] == (
        "last entry: the head of the log when it was exported"
        if last == 9
        else f"last entry: seq {last}, before the head: the log went on"
    )
    if keyed:
        assert report[-2] == "seals (mac): checked with the hash key"
        # A window's end too is proven, by its sealed header.
        assert report[-1] == (
            "header seal (mac): checked with the hash key: the export's end is proven, no line "
            "was cut from it"
        )
    else:
        assert report[-2].startswith(f"seals (mac): NOT checked, no hash key in {KEY_ENV}")
        assert report[-1] == (
            f"header seal (mac): NOT checked, no hash key in {KEY_ENV}: the export's end is not "
            "proven"
        )
    code, out, _ = _verify_export(b"".join(lines), logged, capsys, tmp_path, "--format", "json")
    found = json.loads(out)
    assert code == 0
    assert (found["export"], found["ok"], found["macs_checked"]) == (str(shown), True, keyed)
    assert (found["header_sealed"], found["end_proven"]) == (True, True) if keyed else (None, False)
    assert found["problem"] is None
    assert (found["first_seq"], found["last_seq"], found["head_seq"]) == (first, last, 9)


def _edit(line: bytes, **values: Any) -> bytes:
    fields = json.loads(line)
    fields.update(values)
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _forge_from(lines: list[bytes], start: int) -> list[bytes]:
    """The lines with the entry at `start` changed and every hash after it made again, the
    head's and the header's `to_hash` too, its seal dropped: what someone without the key could
    make."""
    out = lines[:start]
    prev = json.loads(lines[start - 1])["hash"] if start > 1 else None
    for line in lines[start:-1]:
        fields = json.loads(line)
        if prev is not None and line is not lines[start]:
            fields["prev_hash"] = prev
        if line is lines[start]:
            fields["records"] = 0
        fields["hash"] = entry_hash(unsealed(fields))
        prev = fields["hash"]
        out.append(json.dumps(fields).encode() + b"\n")
    out.append(_edit(lines[-1], hash=prev))
    out[0] = _edit(out[0], to_hash=prev, mac=None)
    return out


# Each: how the file is changed, the problem's kind and line, and the start of its message.
_TAMPERED: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str, int, str]] = {
    "a field edited": (
        lambda ls: [*ls[:3], _edit(ls[3], outcome="error"), *ls[4:]],
        "changed",
        4,
        "the entry on line 4 (seq 3) does not match its hash",
    ),
    "a hash changed": (
        lambda ls: [*ls[:3], _edit(ls[3], hash="ab" * 32), *ls[4:]],
        "changed",
        4,
        "the entry on line 4 (seq 3) does not match its hash",
    ),
    "a line dropped": (
        lambda ls: [*ls[:3], *ls[4:]],
        "removed",
        4,
        "line 4 holds seq 4 where seq 3 comes next: an entry was removed",
    ),
    "two lines swapped": (
        lambda ls: [*ls[:3], ls[4], ls[3], *ls[5:]],
        "removed",
        4,
        "line 4 holds seq 4 where seq 3 comes next",
    ),
    "a line repeated": (
        lambda ls: [*ls[:4], ls[3], *ls[4:]],
        "reordered",
        5,
        "line 5 holds seq 3 where seq 4 comes next: an entry was repeated",
    ),
    "a link changed": (
        lambda ls: [*ls[:3], _edit(ls[3], prev_hash="ab" * 32), *ls[4:]],
        "changed",
        4,
        "the entry on line 4 (seq 3) does not match its hash",
    ),
    "the head's hash changed": (
        lambda ls: [*ls[:-1], _edit(ls[-1], hash="ab" * 32)],
        "head",
        11,
        "the head line (line 11) is at seq 9, the last entry's, and its hash is not",
    ),
    "the head's seq lowered": (
        lambda ls: [*ls[:-1], _edit(ls[-1], seq=8)],
        "head",
        11,
        "the export runs to seq 9, past its head line (line 11), at seq 8",
    ),
    "the head dropped": (
        lambda ls: ls[:-1],
        "truncated",
        11,
        "the file ends at line 10 without its head line",
    ),
    "the last entry dropped": (
        lambda ls: [*ls[:-2], ls[-1]],
        "removed",
        10,
        "the entries after seq 8 up to seq 9 (to_seq, from the header) are missing",
    ),
    "the header dropped": (
        lambda ls: ls[1:],
        "header",
        1,
        "line 1 is not an export header (kind: export)",
    ),
    "a line after the head": (
        lambda ls: [*ls, ls[1]],
        "malformed",
        12,
        "line 12 follows the head line",
    ),
    "a key given twice": (
        lambda ls: [*ls[:3], b'{"outcome":"error",' + ls[3][1:], *ls[4:]],
        "malformed",
        4,
        "line 4 is not a JSON line: the key 'outcome' appears twice in one object",
    ),
    "a line that is not JSON": (
        lambda ls: [*ls[:3], b"shares: 3\n", *ls[4:]],
        "malformed",
        4,
        "line 4 is not a JSON line",
    ),
    "a seq of the wrong type": (
        lambda ls: [*ls[:3], _edit(ls[3], seq="3"), *ls[4:]],
        "malformed",
        4,
        "line 4 has a field of the wrong type",
    ),
    "a field added": (
        lambda ls: [*ls[:3], _edit(ls[3], note="fine"), *ls[4:]],
        "malformed",
        4,
        "line 4 has note, which an outcome entry does not",
    ),
}


@pytest.mark.parametrize("tampering", sorted(_TAMPERED))
async def test_a_tampered_export_fails_naming_the_line(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, tampering: str
) -> None:
    change, kind, line, says = _TAMPERED[tampering]
    data = b"".join(change(_export_lines(logged, capsys)))
    code, out, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 1
    report = out.splitlines()
    assert report[0].startswith(
        f"export verification FAILED ({kind}): {tmp_path / 'received.jsonl'}: {says}"
    )
    assert report[1].startswith(f"first bad line: line {line}")
    code, out, _ = _verify_export(data, logged, capsys, tmp_path, "--format", "json")
    problem = json.loads(out)["problem"]
    assert (code, problem["kind"], problem["line"]) == (1, kind, line)
    assert problem["message"].startswith(says)


async def test_an_export_forged_without_the_key_fails_only_with_the_key(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    data = b"".join(_forge_from(_export_lines(logged, capsys), 2))
    code, out, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 1
    assert out.splitlines() == [
        f"export verification FAILED (forged): {tmp_path / 'received.jsonl'}: the entry on "
        "line 3 (seq 2) is not signed with this hash key: its hash was re-forged, or the key "
        "is not the gateway's",
        "first bad line: line 3, seq 2",
        "checked before the failure: 1 entry",
    ]
    # Whole and consistent, which is all that can be shown without the key: the output says so.
    monkeypatch.delenv(KEY_ENV)
    code, out, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 0
    assert "seals (mac): NOT checked" in out.splitlines()[-2]


async def test_an_export_verified_under_another_key_fails_at_its_first_seal(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    data = b"".join(_export_lines(logged, capsys))
    monkeypatch.setenv(KEY_ENV, "another-gateways-key-" * 3)
    code, out, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 1
    assert out.splitlines()[1] == "first bad line: line 1"
    assert "the header (line 1) is not signed with this hash key" in out
    # An export whose header is not sealed fails at its first entry's seal.
    header, *rest = data.splitlines(keepends=True)
    code, out, _ = _verify_export(
        b"".join([_edit(header, mac=None), *rest]), logged, capsys, tmp_path
    )
    assert code == 1
    assert out.splitlines()[1] == "first bad line: line 2, seq 1"
    assert "is not signed with this hash key" in out


@pytest.mark.parametrize(
    "content",
    [b"", b"not an export\n", b'{"kind": "share"}\n', b"\xff\xfe\n", b"[1, 2]\n"],
    ids=["empty", "text", "entry-first", "not-utf8", "array"],
)
async def test_a_file_that_is_not_an_export_is_refused_cleanly(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    code, out, err = _verify_export(content, logged, capsys, tmp_path)
    assert (code, err) == (1, "")
    assert out.startswith("export verification FAILED (header): ")
    assert "first bad line: line 1" in out
    # The share log itself is no export either.
    code, out, err = run(["logs", "verify", "--export", str(logged.share_log.path)], logged, capsys)
    assert (code, err) == (1, "")
    assert out.startswith("export verification FAILED (header): ")


async def test_an_export_is_verified_from_standard_input(
    logged: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"".join(_export_lines(logged, capsys))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = run(["logs", "verify", "--export", "-"], logged, capsys)
    assert code == 0
    assert out.startswith("export verified: standard input: 9 entries (4 shares, 3 outcomes, ")


@pytest.fixture
async def second_outcome(settings: Settings) -> Settings:
    """s-1 and two outcomes of it, the second through the share log all the same (a caller's
    slip): 1 open checkpoint | 2 s-1 | 3 its outcome | 4 a second one | 5 close checkpoint."""
    share_log = await ShareLog.open(settings.share_log, HASH_KEY.encode())
    try:
        await share_log.record(share("s-1", T0))
        for outcome in ("delivered", "error"):
            await share_log.record_outcome(ShareOutcome("s-1", outcome, None, 0, 1.0))
    finally:
        await share_log.close()
    return settings


_SECOND = (
    "outcome seq 4 (share s-1) is a second, unlinked outcome of seq 2, whose outcome is at seq "
    "3: the gateway writes one per share, and `logs query` shows only the first"
)


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_an_export_holding_a_second_outcome_fails_as_the_log_does(
    second_outcome: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    source: str,
) -> None:
    code, out, _ = run(["logs", "verify"], second_outcome, capsys)
    assert code == 1
    assert out.splitlines()[:2] == [
        f"share log verification FAILED (outcome): {_SECOND}",
        "first broken record: seq 4, share s-1",
    ]
    # Every hash, link and seal of it holds: the export is written, and its check finds the
    # second outcome as `logs verify` does.
    data = b"".join(_export_lines(second_outcome, capsys))
    if source == "file":
        code, out, _ = _verify_export(data, second_outcome, capsys, tmp_path)
        shown = str(tmp_path / "received.jsonl")
    else:
        # Read once, as a pipe is: the check reads it twice all the same.
        read_end, write_end = os.pipe()
        with open(write_end, "wb") as writer:
            writer.write(data)
        stdin = io.TextIOWrapper(open(read_end, "rb"))  # noqa: SIM115 - closed below
        monkeypatch.setattr(sys, "stdin", stdin)
        code, out, _ = run(["logs", "verify", "--export", "-"], second_outcome, capsys)
        stdin.close()
        shown = "standard input"
    assert code == 1
    assert out.splitlines() == [
        f"export verification FAILED (outcome): {shown}: {_SECOND}",
        "first bad line: line 5, seq 4, share s-1",
        "checked before the failure: 3 entries",
    ]
    if source == "file":
        code, out, _ = _verify_export(data, second_outcome, capsys, tmp_path, "--format", "json")
        assert code == 1
        assert json.loads(out)["problem"] == {
            "kind": "outcome",
            "line": 5,
            "seq": 4,
            "share_id": "s-1",
            "message": _SECOND,
        }


@pytest.mark.parametrize(
    ("more", "says"),
    [
        ([], "--export {missing}: No such file or directory"),
        (["--log", "{log}"], "--export checks an export file on its own"),
        (["--checkpoints", "{log}"], "--export checks an export file on its own"),
    ],
    ids=["missing", "log", "checkpoints"],
)
async def test_verify_export_usage_errors(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    more: list[str],
    says: str,
) -> None:
    names = {"missing": tmp_path / "missing.jsonl", "log": logged.share_log.path}
    target = names["missing"] if not more else tmp_path / "received.jsonl"
    target.write_bytes(b"".join(_export_lines(logged, capsys))) if more else None
    argv = ["logs", "verify", "--export", str(target), *(m.format(**names) for m in more)]
    code, out, err = run(argv, logged, capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"share-gateway logs verify: {says.format(**names)}")


async def test_verify_export_with_a_hash_key_too_short_is_a_usage_error(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The seals would otherwise go unchecked unawares.
    data = b"".join(_export_lines(logged, capsys))
    monkeypatch.setenv(KEY_ENV, "short")
    code, out, err = _verify_export(data, logged, capsys, tmp_path)
    assert (code, out) == (2, "")
    assert "must hold a secret of at least 32 bytes" in err


async def test_a_hash_key_variable_set_empty_is_no_key_for_export_and_its_check(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(KEY_ENV, "")
    code, out, err = run(["logs", "export"], logged, capsys)
    assert code == 0
    assert err.endswith(
        f"the header not sealed (its end is not proven): no hash key in {KEY_ENV}\n"
    )
    code, report, _ = _verify_export(out.encode(), logged, capsys, tmp_path)
    assert code == 0
    assert report.splitlines()[-2].startswith(f"seals (mac): NOT checked, no hash key in {KEY_ENV}")


async def test_an_export_of_a_log_no_gateway_has_started_holds_its_head_and_verifies(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    Ledger.open(settings.share_log.path, HASH_KEY.encode()).close()
    code, out, err = run(["logs", "export"], settings, capsys)
    assert (code, err) == (0, "exported 0 entries to stdout\n")
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["export", "head"]
    assert json.loads(out.splitlines()[0])["to_hash"] is None
    code, report, _ = _verify_export(out.encode(), settings, capsys, tmp_path)
    assert code == 0
    assert report.startswith("export verified: ")


_WINDOW = ("--until", "2025-03-01T09:30Z")  # a window that stops before the head
_UNSEALED = (
    "header seal (mac): none, the header is not sealed (it was exported without the hash key)"
)
_NOT_PROVEN = (
    f"{_UNSEALED}: the export's end is NOT proven: lines cut from its end, with to_seq and "
    "to_hash lowered to match, would still check out"
)


def _cut(lines: list[bytes], entries: int) -> list[bytes]:
    """The export with its entries after the first `entries` cut, and the header's to_seq and
    to_hash lowered to match: all that takes is an editor."""
    kept = lines[1 : 1 + entries]
    last = json.loads(kept[-1])
    return [_edit(lines[0], to_seq=last["seq"], to_hash=last["hash"]), *kept, lines[-1]]


async def test_a_window_export_cut_at_its_end_fails_with_the_key(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    lines = _export_lines(logged, capsys, *_WINDOW)
    head_seq = json.loads(lines[-1])["seq"]
    assert json.loads(lines[-2])["seq"] < head_seq
    data = b"".join(_cut(lines, len(lines) - 4))  # its last two entries gone
    code, out, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 1
    assert out.splitlines()[:2] == [
        f"export verification FAILED (header): {tmp_path / 'received.jsonl'}: the header (line "
        "1) is not signed with this hash key: it was changed (where the export ends, to_seq or "
        "to_hash, or another field), or the key is not the gateway's",
        "first bad line: line 1",
    ]
    # Without the key the cut file is consistent, and the output says its end is not proven.
    monkeypatch.delenv(KEY_ENV)
    code, out, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 0
    assert out.splitlines()[-1] == (
        f"header seal (mac): NOT checked, no hash key in {KEY_ENV}: the export's end is not proven"
    )


@pytest.mark.parametrize(
    ("keyed", "sealed"),
    [(True, True), (True, False), (False, True)],
    ids=["key", "key-seal-dropped", "no-key"],
)
async def test_an_export_whose_to_hash_was_changed_fails_with_or_without_the_key(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    keyed: bool,
    sealed: bool,
) -> None:
    lines = _export_lines(logged, capsys, *_WINDOW)
    if not keyed:
        monkeypatch.delenv(KEY_ENV)
    header = (
        _edit(lines[0], to_hash="ab" * 32)
        if sealed
        else _edit(lines[0], to_hash="ab" * 32, mac=None)
    )
    code, out, _ = _verify_export(b"".join([header, *lines[1:]]), logged, capsys, tmp_path)
    assert code == 1
    last = json.loads(lines[-2])["seq"]
    says = (
        "the header (line 1) is not signed with this hash key"
        if keyed and sealed
        else f"the header (line 1) gives to_hash {'ab' * 32}, and the last entry (line "
        f"{len(lines) - 1}, seq {last}) has another hash: the header was changed, or lines were "
        "cut from the export's end"
    )
    assert out.splitlines()[0].startswith(
        f"export verification FAILED (header): {tmp_path / 'received.jsonl'}: {says}"
    )
    assert out.splitlines()[1] == "first bad line: line 1"


async def test_a_sealed_header_with_its_seal_dropped_is_reported_unsealed(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = _export_lines(logged, capsys, *_WINDOW)
    data = b"".join([_edit(lines[0], mac=None), *lines[1:]])
    code, out, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 0
    assert out.splitlines()[-2:] == ["seals (mac): checked with the hash key", _NOT_PROVEN]
    code, out, _ = _verify_export(data, logged, capsys, tmp_path, "--format", "json")
    found = json.loads(out)
    assert (code, found["ok"], found["macs_checked"]) == (0, True, True)
    assert (found["header_sealed"], found["end_proven"]) == (False, False)


async def test_an_export_without_the_key_verifies_with_its_header_unsealed(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv(KEY_ENV)
    window = _export_lines(logged, capsys, *_WINDOW)
    whole = _export_lines(logged, capsys)
    header = json.loads(window[0])
    assert (header["to_hash"], header["mac"]) == (json.loads(window[-2])["hash"], None)
    code, out, _ = _verify_export(b"".join(window), logged, capsys, tmp_path)
    assert (code, out.splitlines()[-1]) == (0, _NOT_PROVEN)
    # The key at verification checks the entries' and the head's seals, not the header's end.
    monkeypatch.setenv(KEY_ENV, HASH_KEY)
    code, out, _ = _verify_export(b"".join(window), logged, capsys, tmp_path)
    assert (code, out.splitlines()[-1]) == (0, _NOT_PROVEN)
    code, out, _ = _verify_export(b"".join(window), logged, capsys, tmp_path, "--format", "json")
    found = json.loads(out)
    assert (code, found["header_sealed"], found["end_proven"]) == (0, False, False)
    # An export that reaches the signed head has its end proven by the head.
    code, out, _ = _verify_export(b"".join(whole), logged, capsys, tmp_path)
    assert (code, out.splitlines()[-1]) == (
        0,
        f"{_UNSEALED}: the export reaches the signed head, which proves its end",
    )


@pytest.mark.parametrize("missing", [("to_hash",), ("mac", "to_hash")])
@pytest.mark.parametrize("keyed", [True, False], ids=["key", "no-key"])
async def test_an_export_whose_header_lacks_to_hash_fails_at_line_1(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    missing: tuple[str, ...],
    keyed: bool,
) -> None:
    # A window cut at its end, its header's end and seal stripped: no export is written so.
    lines = _cut(_export_lines(logged, capsys, *_WINDOW), 2)
    header = {k: v for k, v in json.loads(lines[0]).items() if k not in missing}
    data = b"".join([json.dumps(header).encode() + b"\n", *lines[1:]])
    if not keyed:
        monkeypatch.delenv(KEY_ENV)
    code, out, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 1
    assert out.splitlines()[:2] == [
        f"export verification FAILED (header): {tmp_path / 'received.jsonl'}: the header (line "
        f"1) lacks {', '.join(missing)}, which an export's has",
        "first bad line: line 1",
    ]
    code, out, _ = _verify_export(data, logged, capsys, tmp_path, "--format", "json")
    found = json.loads(out)
    assert (code, found["ok"], found["header_sealed"], found["end_proven"]) == (
        1,
        False,
        None,
        False,
    )
    assert (found["problem"]["kind"], found["problem"]["line"]) == ("header", 1)


# --- logs verify --export --sealed: the auditor requires the header's seal -------------------

_SEALED_PROVEN = (
    "header seal (mac): checked with the hash key, as --sealed requires: the export's end is "
    "proven, no line was cut from it"
)


@pytest.mark.parametrize("window", [[], list(_WINDOW)], ids=["whole", "until"])
async def test_verify_export_sealed_passes_a_sealed_export_with_the_key(
    logged: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path, window: list[str]
) -> None:
    data = b"".join(_export_lines(logged, capsys, *window))
    code, out, err = _verify_export(data, logged, capsys, tmp_path, "--sealed")
    assert (code, err) == (0, "")
    assert out.splitlines()[-2:] == ["seals (mac): checked with the hash key", _SEALED_PROVEN]
    code, out, _ = _verify_export(data, logged, capsys, tmp_path, "--sealed", "--format", "json")
    found = json.loads(out)
    assert (code, found["ok"], found["problem"]) == (0, True, None)
    assert (found["header_sealed"], found["end_proven"], found["sealed_required"]) == (
        True,
        True,
        True,
    )
    # Without --sealed, the json says it was not required.
    _, out, _ = _verify_export(data, logged, capsys, tmp_path, "--format", "json")
    assert json.loads(out)["sealed_required"] is False


@pytest.mark.parametrize("window", [[], list(_WINDOW)], ids=["whole", "until"])
async def test_verify_export_sealed_fails_a_header_exported_without_the_key(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    window: list[str],
) -> None:
    monkeypatch.delenv(KEY_ENV)
    data = b"".join(_export_lines(logged, capsys, *window))
    assert json.loads(data.splitlines()[0])["mac"] is None
    monkeypatch.setenv(KEY_ENV, HASH_KEY)
    # Verified as before without --sealed; the whole log's export has its end proven by the head.
    code, _, _ = _verify_export(data, logged, capsys, tmp_path)
    assert code == 0
    code, out, err = _verify_export(data, logged, capsys, tmp_path, "--sealed")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"export verification FAILED (unsealed): {tmp_path / 'received.jsonl'}: the header (line "
        "1) is not sealed (its mac is null: it was exported without the hash key), and a sealed "
        "one is required: the export's end is not proven",
        "first bad line: line 1",
        "checked before the failure: 0 entries",
    ]
    code, out, _ = _verify_export(data, logged, capsys, tmp_path, "--sealed", "--format", "json")
    found = json.loads(out)
    assert (code, found["ok"], found["sealed_required"], found["end_proven"]) == (
        1,
        False,
        True,
        False,
    )
    assert (found["problem"]["kind"], found["problem"]["line"]) == ("unsealed", 1)


@pytest.mark.parametrize("unset", [True, False], ids=["unset", "empty"])
async def test_verify_export_sealed_without_the_key_is_a_usage_error(
    logged: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    unset: bool,
) -> None:
    data = b"".join(_export_lines(logged, capsys))
    if unset:
        monkeypatch.delenv(KEY_ENV)
    else:
        monkeypatch.setenv(KEY_ENV, "")
    code, out, err = _verify_export(data, logged, capsys, tmp_path, "--sealed")
    assert (code, out) == (2, "")
    assert err == (
        "share-gateway logs verify: --sealed checks the header's seal with the hash key, and "
        f"{KEY_ENV} is unset or empty\n"
    )


@pytest.mark.parametrize("more", [[], ["--checkpoints", "-"], ["--log", "x.sqlite"]])
async def test_verify_sealed_without_export_is_a_usage_error(
    logged: Settings, capsys: pytest.CaptureFixture[str], more: list[str]
) -> None:
    code, out, err = run(["logs", "verify", "--sealed", *more], logged, capsys)
    assert (code, out) == (2, "")
    assert err == (
        "share-gateway logs verify: --sealed requires an export file's header to be sealed: "
        "give it with --export FILE (a share log's seals are always checked)\n"
    )
