"""Tests of the consent registry, its CSV import, admin JSON handlers and CLI commands."""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import HASH_KEY, GatewayFactory, killed_at, tamper
from hypothesis import given
from hypothesis import strategies as st

from gateway import consent as consent_module
from gateway.arguments import add_consent
from gateway.consent import (
    _COVERING_SQL,
    MAX_FIELD_CHARS,
    ConsentInputError,
    ConsentRegistry,
    Grant,
    ImportReport,
    RegistryBusy,
    RegistryError,
    RegistryReplaced,
    _byte_lines,
    apply_json,
    grants_json,
    import_csv,
    read_csv,
    registry_path,
)
from gateway.errors import StartupError
from gateway.keys import keyed_hash, subject_ref_key
from gateway.settings import RegistrySettings, Settings, ShareLogSettings

MASTER = b"m" * 32
KEY = subject_ref_key(MASTER)
EXAMPLE_CONTRACTS = Path(__file__).parent.parent / "contracts"
HASH_KEY_ENV = "SHARE_GATEWAY_HASH_KEY"
HEADER = "subject,partner,purpose,granted_at,withdrawn_at,reference\n"

ALICE = "subject-alice-7731"
BOB = "subject-bob-4402"
PARTNER = "acme-credit"
PURPOSE = "credit_assessment"

JAN = datetime(2025, 1, 1, tzinfo=UTC)
MAR = datetime(2025, 3, 1, tzinfo=UTC)
JUN = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ConsentRegistry]:
    reg = ConsentRegistry(tmp_path / "var" / "consent.sqlite", KEY)
    yield reg
    reg.close()


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


# -- covering -------------------------------------------------------------------------------


def test_grant_is_found_and_keyed_by_subject_ref(registry: ConsentRegistry) -> None:
    granted = registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    expected = Grant(keyed_hash(KEY, ALICE), PARTNER, PURPOSE, JAN, None, "C-1")
    assert granted == expected
    assert registry.covering(ALICE, PARTNER, PURPOSE, MAR) == expected


def test_withdrawn_then_regranted(registry: ConsentRegistry) -> None:
    registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    assert registry.withdraw(ALICE, PARTNER, PURPOSE, MAR, "C-1") == 1
    assert registry.covering(ALICE, PARTNER, PURPOSE, MAR + timedelta(seconds=1)) is None
    # Before the withdrawal the old grant still covered.
    before = registry.covering(ALICE, PARTNER, PURPOSE, MAR - timedelta(microseconds=1))
    assert before is not None
    assert before.reference == "C-1"
    assert before.withdrawn_at == MAR

    registry.grant(ALICE, PARTNER, PURPOSE, JUN, "C-2")
    found = registry.covering(ALICE, PARTNER, PURPOSE, JUN)
    assert found is not None
    assert found.reference == "C-2"
    assert found.withdrawn_at is None


def test_boundaries(registry: ConsentRegistry) -> None:
    registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    registry.withdraw(ALICE, PARTNER, PURPOSE, MAR, "C-1")
    assert registry.covering(ALICE, PARTNER, PURPOSE, JAN) is not None
    assert registry.covering(ALICE, PARTNER, PURPOSE, JAN - timedelta(microseconds=1)) is None
    assert registry.covering(ALICE, PARTNER, PURPOSE, MAR) is None
    # As the admin API and `consent show` say it: no longer in force at the withdrawal's instant.
    in_force = [
        grant["in_force"]
        for at in (MAR - timedelta(microseconds=1), MAR)
        for grant in grants_json(registry, ALICE, at=at)
    ]
    assert in_force == [True, False]
    # And in force from the very instant it was granted, not before.
    in_force = [
        grant["in_force"]
        for at in (JAN - timedelta(microseconds=1), JAN)
        for grant in grants_json(registry, ALICE, at=at)
    ]
    assert in_force == [False, True]
    # A withdrawal at the very instant of a grant ends it.
    registry.grant(BOB, PARTNER, PURPOSE, JUN, "C-2")
    assert registry.withdraw(BOB, PARTNER, PURPOSE, JUN, "C-2") == 1
    assert registry.covering(BOB, PARTNER, PURPOSE, JUN) is None


def test_other_partner_purpose_or_subject_not_covered(registry: ConsentRegistry) -> None:
    registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    assert registry.covering(ALICE, "other-partner", PURPOSE, MAR) is None
    assert registry.covering(ALICE, PARTNER, "marketing", MAR) is None
    assert registry.covering(BOB, PARTNER, PURPOSE, MAR) is None


def test_latest_granted_wins(registry: ConsentRegistry) -> None:
    registry.grant(ALICE, PARTNER, PURPOSE, MAR, "C-late")
    registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-early")
    found = registry.covering(ALICE, PARTNER, PURPOSE, JUN)
    assert found is not None
    assert found.reference == "C-late"
    early = registry.covering(ALICE, PARTNER, PURPOSE, JAN + timedelta(days=1))
    assert early is not None
    assert early.reference == "C-early"


def test_times_in_other_zones_and_naive_times_are_compared_as_instants(
    registry: ConsentRegistry,
) -> None:
    registry.grant(ALICE, PARTNER, PURPOSE, datetime(2025, 1, 1, 8, 0), "C-1")  # naive: UTC
    shanghai = timezone(timedelta(hours=8))
    assert registry.covering(ALICE, PARTNER, PURPOSE, datetime(2025, 1, 1, 16, 0, tzinfo=shanghai))
    assert (
        registry.covering(
            ALICE, PARTNER, PURPOSE, datetime(2025, 1, 1, 15, 59, 59, 999999, tzinfo=shanghai)
        )
        is None
    )


def test_imported_dates_and_naive_times_are_in_the_configured_zone(tmp_path: Path) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    with ConsentRegistry(tmp_path / "c.sqlite", KEY, zone=shanghai) as registry:
        report = registry.import_rows(
            [
                {
                    "subject": ALICE,
                    "partner": PARTNER,
                    "purpose": PURPOSE,
                    "granted_at": "2025-01-01",
                    "withdrawn_at": "2025-03-01",
                    "reference": "C-1",
                },
                {
                    "subject": BOB,
                    "partner": PARTNER,
                    "purpose": PURPOSE,
                    "granted_at": "2025-01-01T09:00",
                    "withdrawn_at": "",
                    "reference": "C-2",
                },
            ]
        )
        assert report.ok, report.errors
        # Withdrawn from the first moment of 1 March in Shanghai, not eight hours later.
        assert registry.covering(
            ALICE, PARTNER, PURPOSE, datetime(2025, 2, 28, 23, 59, tzinfo=shanghai)
        )
        assert (
            registry.covering(ALICE, PARTNER, PURPOSE, datetime(2025, 3, 1, 0, 0, tzinfo=shanghai))
            is None
        )
        assert (
            registry.covering(BOB, PARTNER, PURPOSE, datetime(2025, 1, 1, 8, 59, tzinfo=shanghai))
            is None
        )
        assert registry.covering(BOB, PARTNER, PURPOSE, datetime(2025, 1, 1, 9, 0, tzinfo=shanghai))


def test_withdrawal_closes_every_earlier_grant_but_not_a_later_one(
    registry: ConsentRegistry,
) -> None:
    registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    registry.grant(ALICE, PARTNER, PURPOSE, JAN + timedelta(days=1), "C-2")
    registry.grant(ALICE, PARTNER, PURPOSE, JUN, "C-3")
    assert registry.withdraw(ALICE, PARTNER, PURPOSE, MAR, "W-1") == 2
    assert registry.covering(ALICE, PARTNER, PURPOSE, MAR) is None
    after = registry.covering(ALICE, PARTNER, PURPOSE, JUN)
    assert after is not None
    assert after.reference == "C-3"
    # Withdrawing again at a later time neither reopens nor extends anything.
    assert registry.withdraw(ALICE, PARTNER, PURPOSE, MAR + timedelta(days=1), "W-2") == 0
    assert [g.withdrawn_at for g in registry.show(ALICE)] == [MAR, MAR, None]
    # An earlier withdrawal brings forward the end of the grants given before it.
    assert registry.withdraw(ALICE, PARTNER, PURPOSE, JAN + timedelta(hours=1), "W-0") == 1
    assert [g.withdrawn_at for g in registry.show(ALICE)] == [JAN + timedelta(hours=1), MAR, None]


def test_grant_recorded_after_a_withdrawal_it_precedes_is_closed(
    registry: ConsentRegistry,
) -> None:
    registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    registry.withdraw(ALICE, PARTNER, PURPOSE, MAR, "C-1")
    registry.withdraw(ALICE, PARTNER, PURPOSE, JUN, "W-2")
    late = registry.grant(ALICE, PARTNER, PURPOSE, JAN + timedelta(days=5), "C-2")
    assert late.withdrawn_at == MAR  # the first withdrawal after it, not the last
    assert registry.covering(ALICE, PARTNER, PURPOSE, MAR) is None
    # One given at the very instant of a withdrawal on record is ended by it.
    at_once = registry.grant(ALICE, PARTNER, PURPOSE, JUN, "C-3")
    assert at_once.withdrawn_at == JUN
    assert registry.covering(ALICE, PARTNER, PURPOSE, JUN) is None


def test_withdrawal_from_another_connection_applies_on_next_call(tmp_path: Path) -> None:
    path = tmp_path / "consent.sqlite"
    serving = ConsentRegistry(path, KEY)
    admin = ConsentRegistry(path, KEY)
    try:
        admin.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
        assert serving.covering(ALICE, PARTNER, PURPOSE, MAR) is not None
        admin.withdraw(ALICE, PARTNER, PURPOSE, MAR - timedelta(days=1), "C-1")
        assert serving.covering(ALICE, PARTNER, PURPOSE, MAR) is None
    finally:
        admin.close()
        serving.close()


@pytest.mark.parametrize("how", ["replaced", "removed"])
def test_a_registry_file_replaced_or_removed_under_the_gateway_is_never_read(
    tmp_path: Path, how: str
) -> None:
    # A backup restored with `mv` while the gateway runs: its connections held the old file,
    # and a withdrawal imported into the new one did not take effect.
    path = tmp_path / "consent.sqlite"
    serving = ConsentRegistry(path, KEY)
    try:
        serving.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
        assert serving.covering(ALICE, PARTNER, PURPOSE, MAR) is not None
        if how == "replaced":
            restored = tmp_path / "restored.sqlite"
            with ConsentRegistry(restored, KEY) as admin:
                admin.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
                admin.withdraw(ALICE, PARTNER, PURPOSE, MAR - timedelta(days=1), "C-1")
            restored.replace(path)
        else:
            path.unlink()
        calls: list[Callable[[], object]] = [
            lambda: serving.covering(ALICE, PARTNER, PURPOSE, MAR),
            lambda: serving.withdrawn_between(ALICE, PARTNER, PURPOSE, None, MAR),
            lambda: serving.show(ALICE),
            lambda: serving.grant(BOB, PARTNER, PURPOSE, JAN, "C-2"),
        ]
        for call in calls:
            with pytest.raises(RegistryReplaced, match="reload the gateway"):
                call()
    finally:
        serving.close()


def _serving_with_unmerged_grant(path: Path) -> ConsentRegistry:
    """A registry whose last grant (ALICE's) is still in its write-ahead log only: what a
    connection to another file at the path would read as that file's own."""
    serving = ConsentRegistry(path, KEY)
    serving.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    assert Path(f"{path}-wal").stat().st_size > 0
    return serving


def _restore_in_place(path: Path, tmp_path: Path) -> Path:
    """Move the registry aside and put a copy holding BOB's grant only in its place."""
    restored = tmp_path / "restored.sqlite"
    with ConsentRegistry(restored, KEY) as copy:
        copy.grant(BOB, PARTNER, PURPOSE, JAN, "C-2")
    aside = tmp_path / "consent.sqlite.old"
    path.rename(aside)
    restored.rename(path)
    return aside


def test_a_registry_replaced_under_the_gateway_is_read_again_once_reopened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "consent.sqlite"
    serving = _serving_with_unmerged_grant(path)
    try:
        aside = _restore_in_place(path, tmp_path)
        assert not serving.readable()
        assert serving.reopen() is True
        assert serving.readable()
        # The restored file as it is: not ALICE's grant from the old file's log.
        assert serving.show(ALICE) == []
        assert serving.covering(BOB, PARTNER, PURPOSE, MAR) is not None
        serving.grant(BOB, PARTNER, PURPOSE, MAR, "C-3")
        assert serving.reopen() is False  # the file is the one open: nothing to do
    finally:
        serving.close()
    # The file moved aside kept its last grant, merged in from the log left at the path.
    with ConsentRegistry(aside, KEY) as old:
        assert [g.reference for g in old.show(ALICE)] == ["C-1"]
    with ConsentRegistry(path, KEY) as again:
        assert [g.reference for g in again.show(BOB)] == ["C-2", "C-3"]


def test_a_registry_replaced_under_a_stopped_gateway_is_read_as_it_is_at_the_next_start(
    tmp_path: Path,
) -> None:
    # Its log was left at the path, and the next start read the old file's last grant into
    # the restored one.
    path = tmp_path / "consent.sqlite"
    serving = _serving_with_unmerged_grant(path)
    _restore_in_place(path, tmp_path)
    serving.close()
    with ConsentRegistry(path, KEY) as restarted:
        assert restarted.show(ALICE) == []
        assert [g.reference for g in restarted.show(BOB)] == ["C-2"]


def test_a_registry_that_cannot_be_reopened_stays_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "consent.sqlite"
    serving = _serving_with_unmerged_grant(path)
    try:
        path.unlink()
        # Created empty, it would hold no withdrawal: the file is not made up.
        with pytest.raises(RegistryError, match="no consent registry file"):
            serving.reopen()
        assert not path.exists()
        path.write_bytes(b"not a database, or half a copy" * 200)
        with pytest.raises(RegistryError, match="not a usable consent registry"):
            serving.reopen()
        with pytest.raises(RegistryReplaced):
            serving.show(ALICE)
        with pytest.raises(RegistryReplaced):
            serving.grant(BOB, PARTNER, PURPOSE, JAN, "C-2")
        assert not serving.readable()
        path.unlink()
        with ConsentRegistry(tmp_path / "restored.sqlite", KEY) as copy:
            copy.grant(BOB, PARTNER, PURPOSE, JAN, "C-2")
        (tmp_path / "restored.sqlite").rename(path)
        assert serving.reopen() is True
        assert [g.reference for g in serving.show(BOB)] == ["C-2"]
    finally:
        serving.close()


def _files_open_at(path: Path) -> list[str]:
    """This process's open files that are `path`, its log or its index."""
    opened = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            opened.append(os.readlink(fd))
    return [name for name in opened if name.startswith(str(path))]


def test_a_registry_removed_with_its_log_and_index_is_reopened_once_a_usable_copy_is_there(
    tmp_path: Path,
) -> None:
    # `rm consent.sqlite*`, then a copy put in place: first one of a newer gateway, then one
    # made with `VACUUM INTO` (a backup), which is in rollback mode.
    path = tmp_path / "consent.sqlite"
    serving = _serving_with_unmerged_grant(path)
    try:
        for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
            (tmp_path / name).unlink()
        newer = tmp_path / "newer.sqlite"
        ConsentRegistry(newer, KEY).close()
        with contextlib.closing(sqlite3.connect(newer)) as db:
            db.execute("PRAGMA user_version = 7")
        newer.rename(path)
        with pytest.raises(RegistryError) as refused:
            serving.reopen()
        assert str(refused.value) == f"{path}: schema version 7, this gateway reads 1"
        with pytest.raises(RegistryReplaced):
            serving.show(BOB)
        assert _files_open_at(path) == []  # nothing held on the file refused

        path.unlink()
        with ConsentRegistry(tmp_path / "live.sqlite", KEY) as live:
            live.grant(BOB, PARTNER, PURPOSE, JAN, "C-2")
        with contextlib.closing(sqlite3.connect(tmp_path / "live.sqlite")) as db:
            db.execute("VACUUM INTO ?", (str(tmp_path / "backup.sqlite"),))
        (tmp_path / "backup.sqlite").rename(path)
        assert serving.reopen() is True
        assert [g.reference for g in serving.show(BOB)] == ["C-2"]
        serving.grant(ALICE, PARTNER, PURPOSE, MAR, "C-3")  # written ahead, readers not locked
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        serving.close()


def test_a_registry_put_in_place_while_another_process_writes_it_is_busy_not_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.consent.BUSY_TIMEOUT_S", 0.05)
    path = tmp_path / "consent.sqlite"
    serving = _serving_with_unmerged_grant(path)
    # A backup made with `VACUUM INTO` is in rollback mode: a writer there locks out readers.
    with ConsentRegistry(tmp_path / "live.sqlite", KEY) as live:
        live.grant(BOB, PARTNER, PURPOSE, JAN, "C-2")
    with contextlib.closing(sqlite3.connect(tmp_path / "live.sqlite")) as db:
        db.execute("VACUUM INTO ?", (str(tmp_path / "backup.sqlite"),))
    writing = sqlite3.connect(tmp_path / "backup.sqlite", isolation_level=None)
    try:
        writing.execute("BEGIN EXCLUSIVE")
        path.rename(tmp_path / "consent.sqlite.old")
        (tmp_path / "backup.sqlite").rename(path)
        with pytest.raises(RegistryBusy):
            serving.reopen()
        writing.execute("ROLLBACK")
        assert serving.reopen() is True
        assert [g.reference for g in serving.show(BOB)] == ["C-2"]
    finally:
        writing.close()
        serving.close()


def test_a_replaced_registry_another_process_still_reads_is_not_reopened_yet(
    tmp_path: Path,
) -> None:
    path = tmp_path / "consent.sqlite"
    serving = _serving_with_unmerged_grant(path)
    serving._writer.execute("PRAGMA busy_timeout = 50")
    reading = sqlite3.connect(path, isolation_level=None)  # `consent show`, say
    try:
        reading.execute("BEGIN")
        reading.execute("SELECT COUNT(*) FROM grants").fetchall()
        _restore_in_place(path, tmp_path)
        # The old log cannot be emptied while it is read: opened now, the new file would be
        # read with it.
        with pytest.raises(RegistryBusy):
            serving.reopen()
        with pytest.raises(RegistryReplaced):
            serving.show(BOB)
        reading.execute("COMMIT")
        reading.close()  # the other process ends: its last connection removes the old log
        assert serving.reopen() is True
        assert serving.show(ALICE) == []
        assert [g.reference for g in serving.show(BOB)] == ["C-2"]
    finally:
        reading.close()
        serving.close()


# Another process with the registry open, idle: it reads its grants once opened and again
# after each line on its standard input.
_OTHER_PROCESS = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
for _ in iter(lambda: sys.stdin.readline(), ""):
    print(db.execute("SELECT reference FROM grants ORDER BY reference").fetchall(), flush=True)
"""


def test_a_replaced_registry_another_process_has_open_is_not_reopened_with_an_empty_log(
    tmp_path: Path,
) -> None:
    # With nothing in the old file's log, no reader makes emptying it busy. Opened then, the
    # new file shared the log and its index at the path with the other process's old file:
    # each read the other's pages as its own.
    path = tmp_path / "consent.sqlite"
    with ConsentRegistry(path, KEY) as first:
        first.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    serving = ConsentRegistry(path, KEY)
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None
    assert other.stdout is not None

    def other_reads() -> str:
        assert other.stdin is not None
        assert other.stdout is not None
        other.stdin.write("\n")
        other.stdin.flush()
        return other.stdout.readline().strip()

    try:
        assert other_reads() == "[('C-1',)]"
        _restore_in_place(path, tmp_path)
        with pytest.raises(RegistryBusy):
            serving.reopen()
        assert not serving.readable()
        assert other_reads() == "[('C-1',)]"  # still its own file
        other.stdin.close()  # the other process ends: its connection is closed
        assert other.wait(timeout=10) == 0
        assert serving.reopen() is True
        serving.grant(BOB, PARTNER, PURPOSE, MAR, "C-3")
        assert [g.reference for g in serving.show(BOB)] == ["C-2", "C-3"]
        assert serving.show(ALICE) == []
    finally:
        other.kill()
        other.wait(timeout=10)
        other.stdout.close()
        if not other.stdin.closed:
            other.stdin.close()
        serving.close()
    with ConsentRegistry(tmp_path / "consent.sqlite.old", KEY) as old:
        assert [g.reference for g in old.show(ALICE)] == ["C-1"]
        assert old.show(BOB) == []


def test_grant_is_idempotent_and_conflicts_are_refused(registry: ConsentRegistry) -> None:
    first = registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1")
    assert registry.grant(ALICE, PARTNER, PURPOSE, JAN, "C-1") == first
    with pytest.raises(ConsentInputError, match="'C-1' is already recorded"):
        registry.grant(ALICE, PARTNER, PURPOSE, MAR, "C-1")
    assert len(registry.show(ALICE)) == 1


def test_api_arguments_are_validated(registry: ConsentRegistry) -> None:
    with pytest.raises(ConsentInputError) as caught:
        registry.grant("", "Bad Partner", "Bad-Purpose", JAN, "")
    assert caught.value.problems == [
        "subject: must not be empty",
        "partner: must be 1-64 lower-case letters, digits and -, not starting or ending with -",
        "purpose: must match [a-z][a-z0-9_]*",
        "reference: must be 1-256 characters",
    ]
    # The longest reference an imported row may have is one the Python API takes too.
    longest = "R" * MAX_FIELD_CHARS
    assert registry.grant(ALICE, PARTNER, PURPOSE, JAN, longest).reference == longest
    with pytest.raises(ConsentInputError, match="reference: must be 1-256 characters"):
        registry.withdraw(ALICE, PARTNER, PURPOSE, MAR, longest + "R")


def test_covering_uses_the_index(registry: ConsentRegistry) -> None:
    db = sqlite3.connect(registry.path)
    try:
        plan = db.execute("EXPLAIN QUERY PLAN " + _COVERING_SQL, ("r", "p", "q", 1, 1)).fetchall()
        schema = db.execute("PRAGMA user_version").fetchone()
        journal = db.execute("PRAGMA journal_mode").fetchone()
    finally:
        db.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX grants_in_force" in details
    assert "SCAN" not in details.replace("SCAN USING", "")
    assert schema == (1,)
    assert journal == ("wal",)


def test_short_subject_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        ConsentRegistry(tmp_path / "c.sqlite", b"short")


def test_a_file_that_is_not_a_registry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database file at all, not even close" * 40)
    with pytest.raises(RegistryError, match="not a usable consent registry"):
        ConsentRegistry(path, KEY)


def _registry_state(path: Path) -> str:
    """What is at `path`: nothing, or a whole registry (its tables, its schema version)."""
    if not path.exists():
        return "none"
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    return "whole" if (version, tables) == (1, {"grants", "withdrawals"}) else "partial"


def test_a_first_open_killed_at_any_step_leaves_no_registry_or_a_whole_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "var" / "consent.sqlite"
    step = 0
    killed = True
    while killed:
        step += 1
        assert step < 200, "the first open never finished"
        shutil.rmtree(path.parent, ignore_errors=True)
        killed = killed_at(step, lambda: ConsentRegistry(path, KEY).close())
        # Never a file the next open takes for a new, empty registry: nothing, or a whole one.
        assert _registry_state(path) in ("none", "whole"), step
        registry = ConsentRegistry(path, KEY)
        registry.grant(ALICE, PARTNER, PURPOSE, JAN, "form-1")
        registry.close()
        assert _registry_state(path) == "whole"
        assert [f.name for f in path.parent.iterdir() if ".creating-" in f.name] == [], step
    assert step > 10  # kills inside the making of the file were among those tried


def test_a_leftover_of_a_killed_first_open_is_removed_and_never_taken_for_the_registry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "consent.sqlite"
    # A registry with a grant, under the name a first open builds one under.
    with ConsentRegistry(path, KEY) as old:
        old.grant(ALICE, PARTNER, PURPOSE, JAN, "form-1")
    leftover = path.with_name(f"{path.name}.creating-0123abcd")
    path.rename(leftover)
    with ConsentRegistry(path, KEY) as registry:
        assert registry.show(ALICE) == []
    assert not leftover.exists()


def _waits_for_lock(lock: Path) -> bool:
    # A flock another open is blocked on shows in /proc/locks with `->`, by the file's inode.
    inode = f":{lock.stat().st_ino} "
    return any(
        "->" in line and inode in line for line in Path("/proc/locks").read_text().split("\n")
    )


def test_a_registry_another_process_made_while_this_one_waited_is_opened_not_replaced(
    tmp_path: Path,
) -> None:
    # The gateway's start and `consent import` may both find no registry; the one that waited
    # for the lock must open what the other made (and granted into), never build over it.
    path = tmp_path / "consent.sqlite"
    lock = path.with_name(f"{path.name}.lock")
    other = tmp_path / "made-elsewhere.sqlite"
    with ConsentRegistry(other, KEY) as registry:
        registry.grant(ALICE, PARTNER, PURPOSE, JAN, "form-1")
    opened: list[ConsentRegistry] = []
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting = threading.Thread(target=lambda: opened.append(ConsentRegistry(path, KEY)))
        waiting.start()
        for _ in range(3000):
            if _waits_for_lock(lock):
                break
            threading.Event().wait(0.01)
        assert _waits_for_lock(lock)
        os.replace(other, path)  # the other process's registry, whole
    finally:
        os.close(fd)  # lets the waiting open go on
    waiting.join(timeout=60)
    [registry] = opened
    with registry:
        assert len(registry.show(ALICE)) == 1


def test_a_directory_named_like_a_leftover_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "consent.sqlite"
    folder = path.with_name(f"{path.name}.creating-0123abcd")
    folder.mkdir()
    (folder / "kept.txt").write_bytes(b"theirs")
    with ConsentRegistry(path, KEY) as registry:
        registry.grant(ALICE, PARTNER, PURPOSE, JAN, "form-1")
        assert len(registry.show(ALICE)) == 1
    assert (folder / "kept.txt").read_bytes() == b"theirs"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (
            "emptied",
            "the file is empty (0 bytes): its grants and withdrawals were erased, or it was "
            "never written",
        ),
        ("no_tables", "the file holds no consent registry (SQLite, without its tables)"),
        (
            "emptied_behind_symlink",
            "the file is empty (0 bytes): its grants and withdrawals were erased, or it was "
            "never written",
        ),
    ],
    ids=["emptied", "no-tables", "emptied-behind-symlink"],
)
def test_a_file_that_holds_no_registry_is_refused_not_started_afresh(
    tmp_path: Path, damage: str, problem: str
) -> None:
    # `: > consent.sqlite`: taken for a new registry, it holds no withdrawal, and consent
    # tokens the withdrawals ended would count again.
    path = tmp_path / "consent.sqlite"
    if damage == "emptied":
        path.write_bytes(b"")
    elif damage == "emptied_behind_symlink":
        # A path that is a symlink (a mounted secret, a shared folder) is judged by its file.
        (tmp_path / "real.sqlite").write_bytes(b"")
        path.symlink_to(tmp_path / "real.sqlite")
    else:
        tamper(path, "CREATE TABLE dropped (x)", "DROP TABLE dropped")
    before = path.read_bytes()
    with pytest.raises(RegistryError) as refused:
        ConsentRegistry(path, KEY)
    assert str(refused.value) == (
        f"{path}: {problem}; to start a new consent registry, remove the file"
    )
    assert path.read_bytes() == before


async def test_a_gateway_on_an_emptied_registry_does_not_start(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "consent.sqlite"  # where make_gateway puts the registry
    path.write_bytes(b"")
    with pytest.raises(StartupError) as refused:
        await make_gateway()
    assert refused.value.problems == [
        f"consent registry: {path}: the file is empty (0 bytes): its grants and withdrawals "
        "were erased, or it was never written; to start a new consent registry, remove the file"
    ]
    assert path.read_bytes() == b""


def test_a_registry_removed_without_its_write_ahead_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "consent.sqlite"
    registry = ConsentRegistry(path, KEY)
    registry.grant(ALICE, PARTNER, PURPOSE, JAN, "form-1")
    wal = path.with_name(f"{path.name}-wal")
    frames = wal.read_bytes()  # the grant, not yet copied into the file
    registry.close()
    path.unlink()
    wal.write_bytes(frames)
    with pytest.raises(RegistryError) as refused:
        ConsentRegistry(path, KEY)
    assert str(refused.value).startswith(
        f"{path}: there is no file, but {wal.name} beside it holds what one wrote"
    )
    assert wal.read_bytes() == frames
    assert not path.exists()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    ConsentRegistry(path, KEY).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 7")
    db.close()
    with pytest.raises(RegistryError, match="schema version 7"):
        ConsentRegistry(path, KEY)


# -- CSV import -----------------------------------------------------------------------------


def test_csv_import_is_idempotent(registry: ConsentRegistry, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1",
        f"{BOB},{PARTNER},{PURPOSE},2025-01-02T09:30:00+08:00,2025-03-01T00:00:00Z,C-2",
        f"{ALICE},{PARTNER},marketing,2025-02-01T10:00:00,,C-3",
    )
    assert import_csv(registry, path) == ImportReport(granted=2, withdrawn=1, unchanged=0)
    assert import_csv(registry, path) == ImportReport(granted=0, withdrawn=0, unchanged=3)

    bob = registry.show(BOB)
    assert bob == [
        Grant(
            keyed_hash(KEY, BOB),
            PARTNER,
            PURPOSE,
            datetime(2025, 1, 2, 1, 30, tzinfo=UTC),
            MAR,
            "C-2",
        )
    ]
    marketing = registry.covering(ALICE, PARTNER, "marketing", JUN)
    assert marketing is not None
    assert marketing.granted_at == datetime(2025, 2, 1, 10, 0, tzinfo=UTC)  # naive is UTC


def test_csv_withdrawal_row_closes_an_earlier_imported_grant(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    grants = write_csv(tmp_path / "a.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1")
    assert import_csv(registry, grants) == ImportReport(granted=1)
    withdrawals = write_csv(
        tmp_path / "b.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,2025-03-01,C-1"
    )
    assert import_csv(registry, withdrawals) == ImportReport(withdrawn=1)
    assert import_csv(registry, withdrawals) == ImportReport(unchanged=1)
    # The older file, imported again, does not reopen the grant.
    assert import_csv(registry, grants) == ImportReport(unchanged=1)
    assert registry.covering(ALICE, PARTNER, PURPOSE, MAR) is None


def test_a_grant_withdrawn_the_day_it_was_given_imports(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    # Dates alone: given and withdrawn the same day are the same instant, not a bad row.
    path = write_csv(tmp_path / "c.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-03-01,2025-03-01,C-1")
    assert import_csv(registry, path) == ImportReport(withdrawn=1)
    assert registry.covering(ALICE, PARTNER, PURPOSE, MAR) is None


def test_a_grant_imported_after_its_withdrawal_counts_as_withdrawn(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    # The withdrawal came first (through the admin API, say); the grant's row comes after it.
    registry.withdraw(ALICE, PARTNER, PURPOSE, MAR, "C-1")
    path = write_csv(tmp_path / "c.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,2025-03-01,C-1")
    assert import_csv(registry, path) == ImportReport(withdrawn=1)
    assert import_csv(registry, path) == ImportReport(unchanged=1)
    assert [grant.withdrawn_at for grant in registry.show(ALICE)] == [MAR]


def test_spaces_around_csv_fields_are_not_part_of_them(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    row = f" {ALICE} , {PARTNER} , {PURPOSE} , 2025-01-01 , 2025-03-01 , C-1 "
    assert import_csv(registry, write_csv(tmp_path / "c.csv", row)) == ImportReport(withdrawn=1)
    expected = Grant(keyed_hash(KEY, ALICE), PARTNER, PURPOSE, JAN, MAR, "C-1")
    assert registry.show(ALICE) == [expected]


def test_import_rows_accepts_mappings(registry: ConsentRegistry) -> None:
    report = registry.import_rows(
        [
            {
                "subject": ALICE,
                "partner": PARTNER,
                "purpose": PURPOSE,
                "granted_at": "2025-01-01",
                "withdrawn_at": "",
                "reference": "C-1",
            },
            {"subject": BOB, "partner": PARTNER, "purpose": PURPOSE, "reference": "C-2"},
        ]
    )
    assert report == ImportReport(errors=("line 3: granted_at: missing",), problems=1)
    assert registry.show(ALICE) == []


def _assert_nothing_applied(registry: ConsentRegistry) -> None:
    assert registry.show(ALICE) == []
    assert registry.show(BOB) == []


def test_bad_date_applies_nothing(registry: ConsentRegistry, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1",
        f"{BOB},{PARTNER},{PURPOSE},yesterday,,C-2",
        f"{BOB},{PARTNER},{PURPOSE},2025-02-30,2025-01-01,C-3",
        f"{BOB},{PARTNER},{PURPOSE},2025-03-01,2025-01-01,C-4",
    )
    report = import_csv(registry, path)
    assert report == ImportReport(
        errors=(
            "line 3: granted_at: not an ISO 8601 date or date-time",
            "line 4: granted_at: not an ISO 8601 date or date-time",
            "line 5: withdrawn_at: is before granted_at",
        ),
        problems=3,
    )
    assert not report.ok
    _assert_nothing_applied(registry)


def test_a_local_time_the_clocks_skip_or_repeat_applies_nothing(tmp_path: Path) -> None:
    # Read as one of its instants, a withdrawal could take effect an hour late.
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,2025-03-09T02:30,C-1",
        f"{BOB},{PARTNER},{PURPOSE},2025-11-02T01:30,,C-2",
        f"{BOB},{PARTNER},{PURPOSE},2025-11-02T01:30-05:00,,C-3",  # with its offset: read
    )
    with ConsentRegistry(tmp_path / "c.sqlite", KEY, zone=ZoneInfo("America/New_York")) as reg:
        report = import_csv(reg, path)
        assert report == ImportReport(
            errors=(
                "line 2: withdrawn_at: 2025-03-09T02:30 does not exist in America/New_York: its "
                "clocks skip it; write it with an offset (-05:00 or -04:00)",
                "line 3: granted_at: 2025-11-02T01:30 happens twice in America/New_York: its "
                "clocks go back over it; write it with an offset (-04:00 or -05:00)",
            ),
            problems=2,
        )
        assert reg.show(ALICE) == reg.show(BOB) == []


def test_a_date_whose_midnight_the_clocks_skip_starts_at_its_first_instant(
    tmp_path: Path,
) -> None:
    # In Santiago the clocks went from 2025-09-07T00:00 to 01:00: the day began at 04:00 UTC.
    santiago = ZoneInfo("America/Santiago")
    with ConsentRegistry(tmp_path / "c.sqlite", KEY, zone=santiago) as registry:
        path = write_csv(tmp_path / "consent.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-09-07,,C-1")
        assert import_csv(registry, path).ok
        began = datetime(2025, 9, 7, 4, 0, tzinfo=UTC)
        assert registry.covering(ALICE, PARTNER, PURPOSE, began)
        assert not registry.covering(ALICE, PARTNER, PURPOSE, began - timedelta(microseconds=1))


def test_missing_column_applies_nothing(registry: ConsentRegistry, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1",
        "",
        f"{BOB},{PARTNER},{PURPOSE},2025-01-01,C-2",
        f"{BOB},{PARTNER},,2025-01-01,,",
    )
    assert import_csv(registry, path).errors == (
        "line 4: expected 6 fields, found 5",
        "line 5: purpose: must not be empty",
        "line 5: reference: must not be empty",
    )
    _assert_nothing_applied(registry)


def test_unknown_header_applies_nothing(registry: ConsentRegistry, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1",
        header="subject,partner,purpose,granted,withdrawn_at,reference\n",
    )
    assert import_csv(registry, path).errors == (
        "line 1: the header must be exactly "
        "subject,partner,purpose,granted_at,withdrawn_at,reference",
    )
    _assert_nothing_applied(registry)


def test_no_problem_line_shows_a_subject_id(registry: ConsentRegistry, tmp_path: Path) -> None:
    # A file without its header line, and one with its columns out of order: what would be
    # echoed is a subject id (or a phone number, an e-mail address).
    subject = "zhang.wei@example.com"
    path = tmp_path / "consent.csv"
    path.write_text(f"{subject},{PARTNER},{PURPOSE},2025-01-01,,C-1\n", encoding="utf-8")
    [without_header] = import_csv(registry, path).errors
    path = write_csv(tmp_path / "swapped.csv", f"{PARTNER},{subject},{PURPOSE},{subject},,C-1")
    swapped = import_csv(registry, path).errors
    assert swapped == (
        "line 2: partner: holds what reads as personal data (contact.email); "
        "are the columns in order?",
        "line 2: partner: must be 1-64 lower-case letters, digits and -, "
        "not starting or ending with -",
        "line 2: granted_at: not an ISO 8601 date or date-time",
    )
    # A phone number fits a partner id's shape: it is refused, not stored as a partner.
    path = write_csv(tmp_path / "phone.csv", f"{PARTNER},13800138000,{PURPOSE},2025-01-01,,C-1")
    assert import_csv(registry, path).errors == (
        "line 2: partner: holds what reads as personal data (contact.phone); "
        "are the columns in order?",
    )
    assert subject not in "".join((without_header, *swapped))
    _assert_nothing_applied(registry)


@pytest.mark.parametrize(
    ("value", "code_point"), [("C-1\x1b[2J", "001B"), ("C-1\x00", "0000"), ("C\u00851", "0085")]
)
def test_control_characters_are_refused(
    registry: ConsentRegistry, tmp_path: Path, value: str, code_point: str
) -> None:
    path = write_csv(tmp_path / "consent.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,{value}")
    assert import_csv(registry, path).errors == (
        f"line 2: reference: must not contain control or invisible characters (U+{code_point})",
    )
    _assert_nothing_applied(registry)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        # Only the controls: in an ID number an invisible character is a separator, as a space.
        (
            f"{ALICE}\x00,{PARTNER},{PURPOSE},2025-01-01,,C-1",
            "subject: must not contain control characters (U+0000)",
        ),
        (
            f"{ALICE}\x1b[2J,{PARTNER},{PURPOSE},2025-01-01,,C-1",
            "subject: must not contain control characters (U+001B)",
        ),
        (
            f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,{'R' * (MAX_FIELD_CHARS + 1)}",
            f"reference: must be at most {MAX_FIELD_CHARS} characters",
        ),
        # One problem a field: an overlong value is not looked at further.
        (
            f"{'7' * MAX_FIELD_CHARS}\x00,{PARTNER},{PURPOSE},2025-01-01,,C-1",
            f"subject: must be at most {MAX_FIELD_CHARS} characters",
        ),
    ],
)
def test_a_subject_with_a_control_character_or_an_overlong_field_is_refused(
    registry: ConsentRegistry, tmp_path: Path, row: str, problem: str
) -> None:
    path = write_csv(tmp_path / "consent.csv", row)
    assert import_csv(registry, path).errors == (f"line 2: {problem}",)
    _assert_nothing_applied(registry)


@pytest.mark.parametrize(
    ("value", "code_point"),
    [
        ("C-1\u2028C-2", "U+2028"),  # a line separator: a second row in `consent show`
        ("C-\u20291", "U+2029"),
        ("C-\u202e1-X", "U+202E"),  # a right-to-left override: the row reads backwards
        ("C-\u20661", "U+2066"),
        ("C-\u200b1", "U+200B"),  # a zero-width space: two references that look alike
        ("C-\ufeff1", "U+FEFF"),
        ("C-\u31641", "U+3164"),  # a Hangul filler
    ],
)
def test_invisible_and_direction_characters_are_refused_in_every_way_in(
    registry: ConsentRegistry, tmp_path: Path, value: str, code_point: str
) -> None:
    said = f"reference: must not contain control or invisible characters ({code_point})"
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-0",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,{value}",
    )
    assert import_csv(registry, path).errors == (f"line 3: {said}",)
    row = {"subject": ALICE, "partner": PARTNER, "purpose": PURPOSE, "granted_at": "2025-01-01"}
    with pytest.raises(ConsentInputError) as posted:
        apply_json(registry, {"grants": [{**row, "reference": value}]})
    assert posted.value.problems == [f"grants[0]: {said}"]
    with pytest.raises(ConsentInputError) as called:
        registry.grant(ALICE, PARTNER, PURPOSE, JAN, value)
    assert called.value.problems == [said]
    _assert_nothing_applied(registry)


def test_an_invisible_character_inside_an_id_number_is_still_a_separator(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    # The subject id is never shown, and an ID number's invisible characters are not its own.
    path = write_csv(
        tmp_path / "consent.csv",
        f"110105\u200b19880605\u200b2715,{PARTNER},{PURPOSE},2025-01-01,,C-1",
    )
    assert import_csv(registry, path).granted == 1
    assert [g.reference for g in registry.show("110105198806052715")] == ["C-1"]


def test_another_sqlite_file_is_not_a_registry(tmp_path: Path) -> None:
    # The share log has schema version 1 too: opened as a registry, every consent check was a 500.
    other = tmp_path / "share-log.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE shares (seq INTEGER PRIMARY KEY)")
        conn.execute("PRAGMA user_version = 1")
    unversioned = tmp_path / "other.sqlite"
    with sqlite3.connect(unversioned) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    for path in (other, unversioned):
        with pytest.raises(RegistryError, match="not a consent registry"):
            ConsentRegistry(path, KEY)
        with sqlite3.connect(path) as conn:  # and nothing was added to it
            tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        assert "grants" not in tables


def test_conflicting_reference_applies_nothing(registry: ConsentRegistry, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "consent.csv",
        f"{BOB},{PARTNER},{PURPOSE},2025-01-01,,C-2",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1",
        f"{ALICE},{PARTNER},{PURPOSE},2025-02-01,,C-1",
    )
    assert import_csv(registry, path).errors == (
        "line 4: reference 'C-1' is already recorded for this subject, partner and purpose "
        "with granted_at 2025-01-01T00:00:00+00:00",
    )
    _assert_nothing_applied(registry)


def test_csv_quoting_bom_and_multiline_line_numbers(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "consent.csv"
    path.write_bytes(
        (
            "\ufeff"
            + HEADER
            + f'"{ALICE}",{PARTNER},{PURPOSE},2025-01-01,,"ref, with comma"\r\n'
            + f'{BOB},{PARTNER},{PURPOSE},2025-01-01,,"two\nlines"\r\n'
            + f"{BOB},{PARTNER},{PURPOSE},never,,C-9\r\n"
        ).encode()
    )
    # A line break inside a quoted field is one row over two lines, and the line numbers go on
    # counting; in a reference it is refused (it would split the row in `consent show`).
    assert import_csv(registry, path).errors == (
        "line 3: reference: must not contain control or invisible characters (U+000A)",
        "line 5: granted_at: not an ISO 8601 date or date-time",
    )


def test_invalid_utf8_and_empty_file(registry: ConsentRegistry, tmp_path: Path) -> None:
    path = tmp_path / "consent.csv"
    path.write_bytes(HEADER.encode() + b"caf\xe9,acme-credit,x,2025-01-01,,C\n")
    assert import_csv(registry, path).errors == ("line 2: not valid UTF-8",)
    path.write_bytes(b"")
    assert import_csv(registry, path).errors == (
        "line 1: the file is empty; expected the header "
        "subject,partner,purpose,granted_at,withdrawn_at,reference",
    )


def test_file_never_holds_raw_subject_ids(tmp_path: Path) -> None:
    path = tmp_path / "consent.sqlite"
    reg = ConsentRegistry(path, KEY)
    csv_path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1",
        f"{BOB},{PARTNER},{PURPOSE},2025-01-01,2025-03-01,C-2",
    )
    try:
        assert import_csv(reg, csv_path).ok
        reg.grant(ALICE, PARTNER, "marketing", JAN, "C-3")
        reg.withdraw(ALICE, PARTNER, "marketing", MAR, "W-1")
        # Read while the registry is open, so the WAL file is looked at too.
        stored = [p.read_bytes() for p in tmp_path.glob("consent.sqlite*")]
    finally:
        reg.close()
    stored += [p.read_bytes() for p in tmp_path.glob("consent.sqlite*")]
    assert stored
    assert any(keyed_hash(KEY, ALICE).encode() in data for data in stored)
    for data in stored:
        for subject in (ALICE, BOB):
            assert subject.encode() not in data
            assert subject.encode("utf-16-le") not in data


# -- admin JSON -----------------------------------------------------------------------------


def test_apply_json_and_grants_json(registry: ConsentRegistry) -> None:
    payload = {
        "grants": [
            {
                "subject": ALICE,
                "partner": PARTNER,
                "purpose": PURPOSE,
                "granted_at": "2025-01-01T00:00:00Z",
                "reference": "C-1",
            },
            {
                "subject": ALICE,
                "partner": PARTNER,
                "purpose": "marketing",
                "granted_at": "2025-01-01",
                "withdrawn_at": "2025-03-01",
                "reference": "C-2",
            },
        ]
    }
    assert apply_json(registry, payload) == {
        "granted": 1,
        "withdrawn": 1,
        "unchanged": 0,
        "warnings": [],
    }
    # With the loaded contracts, as `consent import` warns: a row no share consults.
    assert apply_json(registry, payload, {PARTNER: (PURPOSE,)}) == {
        "granted": 0,
        "withdrawn": 0,
        "unchanged": 2,
        "warnings": [f"grants[1]: {PARTNER!r} has no such purpose; no share consults this row"],
    }
    ref = keyed_hash(KEY, ALICE)
    assert grants_json(registry, ALICE, at=JUN) == [
        {
            "subject_ref": ref,
            "partner": PARTNER,
            "purpose": PURPOSE,
            "granted_at": "2025-01-01T00:00:00+00:00",
            "withdrawn_at": None,
            "reference": "C-1",
            "in_force": True,
        },
        {
            "subject_ref": ref,
            "partner": PARTNER,
            "purpose": "marketing",
            "granted_at": "2025-01-01T00:00:00+00:00",
            "withdrawn_at": "2025-03-01T00:00:00+00:00",
            "reference": "C-2",
            "in_force": False,
        },
    ]
    assert grants_json(registry, BOB) == []


@pytest.mark.parametrize(
    ("payload", "problems"),
    [
        ([], ['the body must be an object {"grants": [...]}']),
        ({"grant": []}, ["grant: unknown field", "grants: must be a list of grants"]),
        ({"grants": [1, "x"]}, ["grants[0]: must be an object", "grants[1]: must be an object"]),
        (
            # Keyed by the subjects themselves: they are not echoed.
            {"grants": [{"13912345678": PURPOSE, "li.lei@example.com": PARTNER}]},
            [
                "grants[0]: <key>: unknown field",
                "grants[0]: <key>: unknown field",
                "grants[0]: subject: missing",
                "grants[0]: partner: missing",
                "grants[0]: purpose: missing",
                "grants[0]: granted_at: missing",
                "grants[0]: reference: missing",
            ],
        ),
        ({"13912345678": []}, ["<key>: unknown field", "grants: must be a list of grants"]),
        (
            {
                "grants": [
                    {
                        "subject": ALICE,
                        "partner": PARTNER,
                        "purpose": PURPOSE,
                        "granted_at": "2025-01-01",
                        "reference": "C-1",
                    },
                    {
                        "subject": 4.2,
                        "partner": "ACME",
                        "purpose": PURPOSE,
                        "granted_at": "soon",
                        "withdrawn_at": None,
                        "reference": "C-2",
                        "note": "x",
                    },
                ]
            },
            [
                "grants[1]: note: unknown field",
                "grants[1]: subject: must be a string",
                "grants[1]: partner: must be 1-64 lower-case letters, digits and -, "
                "not starting or ending with -",
                "grants[1]: granted_at: not an ISO 8601 date or date-time",
            ],
        ),
    ],
)
def test_apply_json_validation(
    registry: ConsentRegistry, payload: object, problems: list[str]
) -> None:
    with pytest.raises(ConsentInputError) as caught:
        apply_json(registry, payload)
    assert caught.value.problems == problems
    _assert_nothing_applied(registry)


# -- command line ---------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(HASH_KEY_ENV, MASTER.decode())
    return Settings(
        share_log=ShareLogSettings(path=tmp_path / "var" / "share-log.sqlite"),
        registry=RegistrySettings(path=tmp_path / "var" / "consent.sqlite"),
    )


@pytest.mark.parametrize("subject", [42, "42", " 42 "])
def test_a_json_integer_subject_is_the_subject_its_digits_name(
    registry: ConsentRegistry, subject: object
) -> None:
    # As on the share path, where `{"user_id": 42}` is the subject "42": a platform keyed by
    # integers records consent through the API without quoting them.
    grant = {"partner": PARTNER, "purpose": PURPOSE, "granted_at": "2025-01-01", "reference": "C"}
    assert apply_json(registry, {"grants": [{"subject": subject, **grant}]})["granted"] == 1
    assert [g.reference for g in registry.show("42")] == ["C"]


@pytest.mark.parametrize("subject", [True, 42.0, None, [42]])
def test_other_json_subjects_are_refused(registry: ConsentRegistry, subject: object) -> None:
    grant = {"partner": PARTNER, "purpose": PURPOSE, "granted_at": "2025-01-01", "reference": "C"}
    with pytest.raises(ConsentInputError) as caught:
        apply_json(registry, {"grants": [{"subject": subject, **grant}]})
    assert caught.value.problems == ["grants[0]: subject: must be a string"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=None)
    add_consent(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_an_import_while_another_writer_holds_the_registry_is_busy(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_csv(tmp_path / "consent.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1")
    settings.registry.path.parent.mkdir(parents=True)
    ConsentRegistry(settings.registry.path, KEY).close()
    monkeypatch.setattr("gateway.consent.BUSY_TIMEOUT_S", 0.05)
    other = sqlite3.connect(settings.registry.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another import, in another process
        args = parse("consent", "import", str(path))
        assert args.handler(args, settings) == 1
        err = capsys.readouterr().err
        assert "the consent registry is busy" in err
        assert "Traceback" not in err
        other.execute("ROLLBACK")
        assert args.handler(args, settings) == 0  # once it is free, the same import goes in
    finally:
        other.close()


@pytest.mark.parametrize("lock", ["IMMEDIATE", "EXCLUSIVE"])
@pytest.mark.parametrize("command", ["show", "import"])
def test_a_registry_in_rollback_mode_another_process_writes_is_busy_not_unusable(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    lock: str,
) -> None:
    path = settings.registry.path
    path.parent.mkdir(parents=True)
    ConsentRegistry(path, KEY).close()
    with contextlib.closing(sqlite3.connect(path)) as restored:
        restored.execute("PRAGMA journal_mode = DELETE")  # as a copy from `VACUUM INTO` is
    csv = write_csv(tmp_path / "consent.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1")
    argv = ["show", ALICE] if command == "show" else ["import", str(csv)]
    args = parse("consent", *argv)
    monkeypatch.setattr("gateway.consent.BUSY_TIMEOUT_S", 0.05)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        # Another process writing it: in rollback mode, turning it to WAL needs that lock.
        other.execute(f"BEGIN {lock}")
        other.execute(
            "INSERT INTO withdrawals (subject_ref, partner, purpose, withdrawn_at, reference, "
            "recorded_at) VALUES ('r', ?, ?, 0, 'W-1', 0)",
            (PARTNER, PURPOSE),
        )
        code = args.handler(args, settings)
        assert (code, capsys.readouterr().err) == (
            1,
            f"{path}: the consent registry is busy (another import?); try again\n",
        )
        other.execute("ROLLBACK")
        assert args.handler(args, settings) == 0  # once it is free, the same command runs
    finally:
        other.close()


@pytest.fixture
def held_registry(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The settings' registry, with one grant, while another process holds its write lock."""
    path = settings.registry.path
    path.parent.mkdir(parents=True)
    with ConsentRegistry(path, KEY) as registry:
        registry.import_rows(
            [
                {
                    "subject": ALICE,
                    "partner": PARTNER,
                    "purpose": PURPOSE,
                    "granted_at": "2025-01-01",
                    "withdrawn_at": "",
                    "reference": "C-1",
                }
            ]
        )
    monkeypatch.setattr("gateway.consent.BUSY_TIMEOUT_S", 0.05)
    importer = sqlite3.connect(path, isolation_level=None)
    importer.execute("BEGIN IMMEDIATE")  # `consent import` of a large file, in another process
    try:
        yield path
    finally:
        importer.execute("ROLLBACK")
        importer.close()


def test_a_registry_restored_in_rollback_mode_is_opened_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "consent.sqlite"
    ConsentRegistry(path, KEY).close()
    restored = sqlite3.connect(path)
    restored.execute("PRAGMA journal_mode = DELETE")  # as `VACUUM INTO` leaves a copy
    restored.close()
    with ConsentRegistry(path, KEY):
        check = sqlite3.connect(path)
        try:
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            check.close()


def test_consent_show_reads_while_an_import_holds_the_registry(
    settings: Settings, held_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse("consent", "show", ALICE)
    code = args.handler(args, settings)
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert "C-1" in out


async def test_the_gateway_starts_while_an_import_holds_the_registry(
    make_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.consent.BUSY_TIMEOUT_S", 0.05)
    path = tmp_path / "consent.sqlite"  # where make_gateway puts the registry
    ConsentRegistry(path, subject_ref_key(HASH_KEY.encode())).close()
    importer = sqlite3.connect(path, isolation_level=None)
    importer.execute("BEGIN IMMEDIATE")
    try:
        gateway = await make_gateway()  # a sidecar restarted during an import
        assert (await gateway.client.get("/_gateway/ready")).status == 200
    finally:
        importer.execute("ROLLBACK")
        importer.close()


async def test_a_registry_path_in_a_symlink_loop_stops_the_start_and_an_import_in_one_line(
    make_gateway: GatewayFactory,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "consent.sqlite"  # where make_gateway puts the registry
    looped = tmp_path / "looped.sqlite"
    path.symlink_to(looped)
    looped.symlink_to(path)
    problem = f"[Errno {errno.ELOOP}] {os.strerror(errno.ELOOP)}: '{path}'"
    with pytest.raises(StartupError) as refused:
        await make_gateway()
    assert refused.value.problems == [f"consent registry {path}: {problem}"]

    settings.registry.path.parent.mkdir(parents=True)
    settings.registry.path.symlink_to(path)
    csv = write_csv(tmp_path / "consent.csv", f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1")
    args = parse("consent", "import", str(csv))
    assert args.handler(args, settings) == 2
    assert capsys.readouterr().err == (
        f"cannot open the consent registry: [Errno {errno.ELOOP}] "
        f"{os.strerror(errno.ELOOP)}: '{settings.registry.path}'\n"
    )


def test_registry_path_comes_from_settings(settings: Settings, tmp_path: Path) -> None:
    assert registry_path(settings) == tmp_path / "var" / "consent.sqlite"


def test_top_level_config_is_kept() -> None:
    assert parse("--config", "gw.yaml", "consent", "show", ALICE).config == Path("gw.yaml")
    assert parse("consent", "import", "x.csv", "--config", "c.yaml").config == Path("c.yaml")


def test_cli_import_and_show(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1",
        f"{ALICE},{PARTNER},marketing,2025-01-01,2025-03-01,C-2",
    )
    args = parse("consent", "import", str(path))
    assert args.handler(args, settings) == 0
    assert capsys.readouterr().out == f"{path}: 1 granted, 1 withdrawn, 0 unchanged\n"
    assert args.handler(args, settings) == 0
    assert capsys.readouterr().out == f"{path}: 0 granted, 0 withdrawn, 2 unchanged\n"

    args = parse("consent", "show", ALICE)
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"subject ref {keyed_hash(KEY, ALICE)}"
    assert out[1].split() == [
        "PARTNER",
        "PURPOSE",
        "GRANTED_AT",
        "WITHDRAWN_AT",
        "REFERENCE",
        "STATUS",
    ]
    # Dates are midnight in the configured zone (Asia/Shanghai), and shown in it.
    assert out[2].split() == [
        PARTNER,
        PURPOSE,
        "2025-01-01T00:00:00+08:00",
        "-",
        "C-1",
        "in",
        "force",
    ]
    assert out[3].split() == [
        PARTNER,
        "marketing",
        "2025-01-01T00:00:00+08:00",
        "2025-03-01T00:00:00+08:00",
        "C-2",
        "withdrawn",
    ]

    args = parse("consent", "show", ALICE, "--format", "json")
    assert args.handler(args, settings) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(g["reference"], g["in_force"]) for g in shown] == [("C-1", True), ("C-2", False)]

    args = parse("consent", "show", BOB)
    assert args.handler(args, settings) == 0
    assert capsys.readouterr().out.splitlines()[1] == "no consent grants recorded"


def test_cli_import_reads_a_named_pipe_once(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `mkfifo grants.csv; gzip -dc grants.csv.gz > grants.csv & share-gateway consent import
    # grants.csv`: the file was opened to check it could be read, then again to read it. The
    # check took the writer's one pass (the writer died of a broken pipe), and the second open
    # waited for ever for another writer.
    fifo = tmp_path / "grants.csv"
    os.mkfifo(fifo)
    rows = (HEADER + f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1\n").encode()
    done = threading.Event()

    def writer() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as pipe:
            pipe.write(rows)
        # Should the command wait for a second writer, one that writes nothing ends its wait.
        if not done.wait(5):
            with open(fifo, "wb"):
                pass

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        args = parse("consent", "import", str(fifo))
        assert args.handler(args, settings) == 0
    finally:
        done.set()
        thread.join()
    assert capsys.readouterr().out == f"{fifo}: 1 granted, 0 withdrawn, 0 unchanged\n"


def test_cli_import_warns_of_rows_no_contract_uses(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings.model_copy(update={"contracts_dir": EXAMPLE_CONTRACTS})
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},acme-credit,credit_assessment,2025-01-01,,C-1",
        f"{ALICE},acme-credit,credit_assesment,2025-01-01,2025-03-01,W-1",  # the typo
        f"{ALICE},nobody-yet,credit_assessment,2025-01-01,,C-2",
    )
    args = parse("consent", "import", str(path))
    assert args.handler(args, settings) == 0  # recorded all the same
    captured = capsys.readouterr()
    assert captured.out == f"{path}: 2 granted, 1 withdrawn, 0 unchanged\n"
    assert captured.err.splitlines() == [
        f"{path}: warning: line 3: 'acme-credit' has no such purpose; no share consults this row",
        f"{path}: warning: line 4: no contract has this row's partner; no share consults this row",
    ]


def test_cli_import_says_when_no_contract_could_check_the_rows(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "acme.yaml").write_text("partner: [unfinished\n")
    settings = settings.model_copy(update={"contracts_dir": contracts})
    path = write_csv(tmp_path / "consent.csv", f"{ALICE},acme,credit_assesment,2025-01-01,,C-1")
    args = parse("consent", "import", str(path))
    assert args.handler(args, settings) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{path}: 1 granted, 0 withdrawn, 0 unchanged\n"
    # Silent, it would read as "no row names a partner or purpose no contract has".
    assert captured.err == (
        f"{path}: warning: the contracts in {contracts} could not be loaded; rows were not "
        "checked against their partners and purposes (share-gateway contracts validate says "
        "why)\n"
    )


def test_cli_import_bad_rows_exit_1(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(
        tmp_path / "consent.csv",
        f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1",
        f"{ALICE},{PARTNER},{PURPOSE},2025-13-01,,C-2",
    )
    args = parse("consent", "import", str(path))
    assert args.handler(args, settings) == 1
    captured = capsys.readouterr()
    assert captured.out == (f"{path}: line 3: granted_at: not an ISO 8601 date or date-time\n")
    assert captured.err == f"1 problem(s) in {path}; nothing was imported\n"
    with ConsentRegistry(registry_path(settings), KEY) as reg:
        assert reg.show(ALICE) == []


def test_cli_import_lists_the_first_problems_and_counts_them_all(
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consent_module, "MAX_LISTED", 3)
    path = write_csv(
        tmp_path / "consent.csv",
        *(f"{ALICE},{PARTNER},{PURPOSE},2025-13-0{day},,C-{day}" for day in range(1, 6)),
    )
    args = parse("consent", "import", str(path))
    assert args.handler(args, settings) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        *(f"{path}: line {n}: granted_at: not an ISO 8601 date or date-time" for n in (2, 3, 4)),
        f"{path}: and 2 more problem(s)",
    ]
    assert captured.err == f"5 problem(s) in {path}; nothing was imported\n"


def test_cli_import_lists_the_first_warnings_and_counts_them_all(
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consent_module, "MAX_LISTED", 2)
    settings = settings.model_copy(update={"contracts_dir": EXAMPLE_CONTRACTS})
    path = write_csv(
        tmp_path / "consent.csv",
        *(f"{ALICE},nobody-yet,credit_assessment,2025-01-0{day},,C-{day}" for day in range(1, 5)),
    )
    args = parse("consent", "import", str(path))
    assert args.handler(args, settings) == 0
    assert capsys.readouterr().err.splitlines() == [
        *(
            f"{path}: warning: line {n}: no contract has this row's partner; "
            "no share consults this row"
            for n in (2, 3)
        ),
        f"{path}: warning: and 2 more row(s) no share consults",
    ]


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_import_reads_every_line_ending(
    registry: ConsentRegistry, tmp_path: Path, ending: str
) -> None:
    # A lone "\r" is what a spreadsheet's "CSV (Macintosh)" writes.
    rows = [HEADER.rstrip("\n"), f"{ALICE},{PARTNER},{PURPOSE},2025-01-01,,C-1"]
    rows.append(f"{BOB},{PARTNER},{PURPOSE},2025-13-01,,C-2")
    path = tmp_path / "consent.csv"
    path.write_bytes(ending.join(rows).encode() + ending.encode())
    assert import_csv(registry, path).errors == (
        "line 3: granted_at: not an ISO 8601 date or date-time",
    )
    path.write_bytes(ending.join(rows[:2]).encode())
    assert import_csv(registry, path) == ImportReport(granted=1)


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=8))
def test_the_file_is_cut_into_the_lines_the_csv_module_reads(data: bytes, size: int) -> None:
    assert list(_byte_lines(io.BytesIO(data), size)) == data.splitlines(keepends=True)


@pytest.mark.parametrize("ending", [b"", b"\n"])
def test_a_line_past_the_cap_is_refused_without_holding_the_file(
    registry: ConsentRegistry, ending: bytes
) -> None:
    # A file with no line break (a JSON export given by mistake) was held whole, and joined
    # again with every chunk read: time grew with the square of its size.
    data = HEADER.encode() + b"x" * (8 * consent_module._LINE_MAX) + ending
    tracemalloc.start()
    try:
        report = registry._import(read_csv(io.BytesIO(data)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.errors == ("line 2: longer than 4 MiB: not a consent row",)
    assert peak < 2 * consent_module._LINE_MAX


def test_a_last_line_past_the_cap_ended_by_a_lone_carriage_return_is_refused(
    registry: ConsentRegistry,
) -> None:
    # "CSV (Macintosh)": the "\r" at the end is held back in case a "\n" follows; the file
    # ends instead, with the line still open and over the cap.
    data = HEADER.encode() + b"x" * (consent_module._LINE_MAX + 1) + b"\r"
    report = registry._import(read_csv(io.BytesIO(data)))
    assert report.errors == ("line 2: longer than 4 MiB: not a consent row",)


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=8), st.integers(1, 12))
def test_lines_up_to_the_cap_are_cut_as_before(data: bytes, size: int, cap: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(consent_module, "_LINE_MAX", cap)
        expected = data.splitlines(keepends=True)
        lines = _byte_lines(io.BytesIO(data), size)
        if max(map(len, expected), default=0) <= cap:
            assert list(lines) == expected
        else:
            with pytest.raises(consent_module._LineTooLong):
                list(lines)


def test_import_reads_rows_as_they_come(registry: ConsentRegistry, tmp_path: Path) -> None:
    # A bad byte far down a file is placed on its line, and no more of the file than a line at a
    # time is decoded: the file is never read whole.
    lines = [f"u-{n},{PARTNER},{PURPOSE},2025-01-01,,C-{n}" for n in range(20000)]
    path = write_csv(tmp_path / "consent.csv", *lines)
    with path.open("ab") as file:
        file.write(b"\xff,x\n")
    seen: list[int] = []

    def labelled() -> Iterator[tuple[str, Mapping[str, object] | list[str]]]:
        with path.open("rb") as file:
            for item in read_csv(file):
                seen.append(file.tell())
                yield item

    report = registry._import(labelled())
    assert report.errors == ("line 20002: not valid UTF-8",)
    # The first row came after one chunk of the file was read, not the whole of it.
    assert seen[0] <= 1 << 16 < path.stat().st_size // 4
    assert registry.show("u-0") == []


def test_a_file_that_fails_while_it_is_read_is_an_import_of_nothing_exit_2(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Opened, then a read error (a disk failing, a network share gone): reading this file at
    # its start always fails so.
    args = parse("consent", "import", "/proc/self/mem")
    assert args.handler(args, settings) == 2
    assert capsys.readouterr() == ("", "/proc/self/mem: cannot read: Input/output error\n")
    with ConsentRegistry(settings.registry.path, KEY) as registry:
        _assert_nothing_applied(registry)


def test_cli_usage_errors_exit_2(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parse("consent", "import", str(tmp_path / "missing.csv"))
    assert args.handler(args, settings) == 2
    assert "missing.csv: cannot read" in capsys.readouterr().err
    assert not settings.registry.path.exists()  # nothing created for a file it cannot read

    # Nor to show: an empty registry made there would say "no consent grants recorded".
    args = parse("consent", "show", ALICE)
    assert args.handler(args, settings) == 2
    assert capsys.readouterr() == (
        "",
        f"no consent registry at {settings.registry.path} (registry.path)\n",
    )
    assert not settings.registry.path.exists()

    monkeypatch.setenv(HASH_KEY_ENV, "too short")
    for argv in (("consent", "import", str(tmp_path / "x.csv")), ("consent", "show", ALICE)):
        args = parse(*argv)
        assert args.handler(args, settings) == 2
        assert f"environment variable {HASH_KEY_ENV}" in capsys.readouterr().err
