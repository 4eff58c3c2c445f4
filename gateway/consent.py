"""The consent registry: grants and withdrawals per data subject, partner and purpose."""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Literal

import orjson

from gateway.arguments import CONSENT_CSV_HEADER
from gateway.files import OrphanedJournal, create_whole, remove_leftovers, resolved
from gateway.keys import subject_id_problem, subject_ref
from gateway.wallclock import UnclearWallTime, day_start, wall_time

if TYPE_CHECKING:
    from gateway.settings import Settings


SCHEMA_VERSION = 1
# The columns `consent import --help` names: one list, which the command line holds.
CSV_HEADER = CONSENT_CSV_HEADER
MAX_FIELD_CHARS = 256
MIN_SUBJECT_KEY_BYTES = 32
BUSY_TIMEOUT_S = 5.0
# The byte of a WAL index every connection to its file holds a shared lock on while open.
_SHM_DMS_BYTE = 128

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# The same shapes the contract validator accepts for partner ids and purposes, so a grant can
# only name something a contract could.
_PARTNER_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_PURPOSE = re.compile(r"[a-z][a-z0-9_]*")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Times are stored as integer microseconds since the Unix epoch (UTC): exact, comparable in SQL.
_SCHEMA = """
CREATE TABLE grants (
    id           INTEGER PRIMARY KEY,
    subject_ref  TEXT    NOT NULL,
    partner      TEXT    NOT NULL,
    purpose      TEXT    NOT NULL,
    reference    TEXT    NOT NULL,
    granted_at   INTEGER NOT NULL,
    withdrawn_at INTEGER,
    recorded_at  INTEGER NOT NULL,
    UNIQUE (subject_ref, partner, purpose, reference)
);
CREATE INDEX grants_in_force ON grants (subject_ref, partner, purpose, granted_at);
CREATE TABLE withdrawals (
    id           INTEGER PRIMARY KEY,
    subject_ref  TEXT    NOT NULL,
    partner      TEXT    NOT NULL,
    purpose      TEXT    NOT NULL,
    withdrawn_at INTEGER NOT NULL,
    reference    TEXT    NOT NULL,
    recorded_at  INTEGER NOT NULL,
    UNIQUE (subject_ref, partner, purpose, withdrawn_at, reference)
);
"""

_TABLES = frozenset({"grants", "withdrawals"})

_COVERING_SQL = """
SELECT subject_ref, partner, purpose, granted_at, withdrawn_at, reference FROM grants
WHERE subject_ref = ? AND partner = ? AND purpose = ? AND granted_at <= ?
  AND (withdrawn_at IS NULL OR withdrawn_at > ?)
ORDER BY granted_at DESC, id DESC
LIMIT 1
"""

_WITHDRAWN_BETWEEN_SQL = """
SELECT 1 FROM withdrawals
WHERE subject_ref = ? AND partner = ? AND purpose = ? AND withdrawn_at >= ? AND withdrawn_at <= ?
LIMIT 1
"""
_MIN_MICROS = -(2**63)


@dataclass(frozen=True, slots=True)
class Grant:
    """One consent given by a data subject (known only by its keyed reference)."""

    subject_ref: str
    partner: str
    purpose: str
    granted_at: datetime
    withdrawn_at: datetime | None
    reference: str

    def in_force(self, at: datetime) -> bool:
        at = _aware(at)
        return self.granted_at <= at and (self.withdrawn_at is None or at < self.withdrawn_at)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did; with any error, nothing was applied and the counts are zero."""

    granted: int = 0
    withdrawn: int = 0
    unchanged: int = 0
    errors: tuple[str, ...] = ()  # the first MAX_LISTED, then one line counting the rest
    # Rows no loaded contract consults (when the import was given the contracts' purposes).
    warnings: tuple[str, ...] = ()
    problems: int = 0  # every problem, listed or not

    @property
    def ok(self) -> bool:
        return not self.errors


class RegistryError(Exception):
    """The registry file cannot be used (not a database, or a newer schema)."""


class RegistryReplaced(RegistryError):
    """The registry's file was replaced or removed while this process had it open."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path}: the consent registry file was replaced or removed while the gateway ran: "
            "once a whole registry file is in its place, reload the gateway (SIGHUP or POST "
            "/_gateway/reload) to open it"
        )


class RegistryBusy(RegistryError):
    """Another writer (an import in another process) held the registry past the busy timeout."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: the consent registry is busy (another import?); try again")


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether another connection held the file past the busy timeout (extended codes too)."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class ConsentInputError(ValueError):
    """Grants or withdrawals that cannot be recorded; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class _Row:
    subject: str
    partner: str
    purpose: str
    granted_at: datetime
    withdrawn_at: datetime | None
    reference: str


class _Conflict(Exception):
    """A row contradicts what is already recorded."""


class _Rollback(Exception):
    """Leave the import transaction without applying anything."""


def _aware(moment: datetime) -> datetime:
    """Naive times are UTC (the Python API's); text is made aware in `parse_instant` first."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _micros(moment: datetime) -> int:
    return (_aware(moment) - _EPOCH) // _MICROSECOND


def _instant(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def parse_instant(text: str, zone: tzinfo = UTC) -> datetime:
    """An ISO 8601 date or date-time; a date is midnight in `zone`, and a time without offset is
    in `zone` (the gateway's configured time zone, as everywhere a person writes a time).

    ValueError if it is neither; UnclearWallTime, a ValueError, for a time without offset that
    `zone`'s clocks skip or repeat."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        return _aware(moment if moment.tzinfo is not None else wall_time(moment, zone))
    return _aware(day_start(day, zone))


def _grant_from(row: tuple[str, str, str, int, int | None, str]) -> Grant:
    subject_ref, partner, purpose, granted_at, withdrawn_at, reference = row
    return Grant(
        subject_ref=subject_ref,
        partner=partner,
        purpose=purpose,
        granted_at=_instant(granted_at),
        withdrawn_at=None if withdrawn_at is None else _instant(withdrawn_at),
        reference=reference,
    )


def _text(
    raw: Mapping[str, object], key: str, problems: list[str], *, optional: bool = False
) -> str | None:
    if key not in raw:
        if not optional:
            problems.append(f"{key}: missing")
        return None
    value = raw[key]
    if value is None and optional:
        return None
    if not isinstance(value, str):
        problems.append(f"{key}: must be a string")
        return None
    value = value.strip()
    if not value:
        if not optional:
            problems.append(f"{key}: must not be empty")
        return None
    if len(value) > MAX_FIELD_CHARS:
        problems.append(f"{key}: must be at most {MAX_FIELD_CHARS} characters")
        return None
    if key == "subject":
        # Never shown (its reference is), and in an ID number an invisible character is a
        # separator like a space: only the controls are refused.
        if found := _CONTROL.search(value):
            problems.append(f"{key}: must not contain control characters ({_code_point(found)})")
            return None
    elif problem := _unshowable(value):
        # A reference goes into share records and terminal tables: a line break, an escape
        # sequence or a line separator there would forge a row, and a direction override
        # reorder it.
        problems.append(f"{key}: {problem}")
        return None
    return value


def _code_point(found: re.Match[str]) -> str:
    # The value is not echoed, and the character would not be seen: its code point says where.
    return f"U+{ord(found.group()):04X}"


def _unshowable(value: str) -> str | None:
    """Why `value` cannot be shown as it is: its first control or invisible character."""
    # The scanner's tables are imported with the first grant read, not with the module: the
    # command line imports it for every command, and `consent show` reads no grant in.
    from gateway.pii import UNSHOWABLE

    found = UNSHOWABLE.search(value)
    if found is None:
        return None
    return f"must not contain control or invisible characters ({_code_point(found)})"


def _time(
    raw: Mapping[str, object],
    key: str,
    problems: list[str],
    zone: tzinfo,
    *,
    optional: bool = False,
) -> datetime | None:
    text = _text(raw, key, problems, optional=optional)
    if text is None:
        return None
    try:
        return parse_instant(text, zone)
    except UnclearWallTime as exc:
        problems.append(f"{key}: {exc}")
        return None
    except (ValueError, OverflowError):
        problems.append(f"{key}: not an ISO 8601 date or date-time")
        return None


def _name_problems(partner: str | None, purpose: str | None) -> list[str]:
    from gateway.pii import scan  # as in `_unshowable`

    problems = [
        f"{key}: holds what reads as personal data ({', '.join(sorted(found))}); "
        "are the columns in order?"
        for key, value in (("partner", partner), ("purpose", purpose))
        if value is not None and (found := scan(value, frozenset())[1])
    ]
    # Values are not echoed: in a row with its columns out of order, they are subject ids.
    if partner is not None and not _PARTNER_ID.fullmatch(partner):
        problems.append(
            "partner: must be 1-64 lower-case letters, digits and -, not starting or ending with -"
        )
    if purpose is not None and not _PURPOSE.fullmatch(purpose):
        problems.append("purpose: must match [a-z][a-z0-9_]*")
    return problems


def _unknown_fields(raw: Mapping[str, object], known: tuple[str, ...]) -> list[str]:
    from gateway.fieldfilter import loggable_key  # as the scanner in `_unshowable`

    # A key is named only when it reads like a field name: a body keyed by the subjects
    # themselves ({"13912345678": "credit_assessment"}) must not see them echoed.
    return [f"{loggable_key(key)}: unknown field" for key in raw if key not in known]


def _parse_row(raw: Mapping[str, object], zone: tzinfo) -> _Row | list[str]:
    problems = _unknown_fields(raw, CSV_HEADER)
    if type(raw.get("subject")) is int:
        # A JSON integer names the subject its digits spell, as on the share path (not `true`).
        raw = {**raw, "subject": str(raw["subject"])}
    # The subject id is never echoed back: error lines end up in terminals and logs.
    subject = _text(raw, "subject", problems)
    if subject is not None and (problem := subject_id_problem(subject)):
        problems.append(f"subject: {problem}")
    partner = _text(raw, "partner", problems)
    purpose = _text(raw, "purpose", problems)
    problems += _name_problems(partner, purpose)
    granted_at = _time(raw, "granted_at", problems, zone)
    withdrawn_at = _time(raw, "withdrawn_at", problems, zone, optional=True)
    if granted_at is not None and withdrawn_at is not None and withdrawn_at < granted_at:
        problems.append("withdrawn_at: is before granted_at")
    reference = _text(raw, "reference", problems)
    if problems:
        return problems
    if not (subject and partner and purpose and granted_at and reference):
        raise RuntimeError("a row without problems has every required field")
    return _Row(subject, partner, purpose, granted_at, withdrawn_at, reference)


def _check_call(subject_id: str, partner: str, purpose: str, reference: str) -> None:
    """The checks an imported row gets, for the Python API's arguments."""
    problem = subject_id_problem(subject_id)
    problems = [f"subject: {problem}"] if problem else []
    problems += _name_problems(partner, purpose)
    if not reference or len(reference) > MAX_FIELD_CHARS:
        problems.append(f"reference: must be 1-{MAX_FIELD_CHARS} characters")
    elif problem := _unshowable(reference):
        problems.append(f"reference: {problem}")
    if problems:
        raise ConsentInputError(problems)


Outcome = Literal["granted", "withdrawn", "unchanged"]


_START_OVER = "to start a new consent registry, remove the file"


def _create(path: Path) -> None:
    """Make the registry file whole where there is none (`create_whole`), holding a lock
    beside it: the gateway's start and `consent import` may each be the first to open it."""
    if path.exists():
        return
    real = resolved(path)
    real.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(real.with_name(f"{real.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for the milliseconds a new registry takes
        if path.exists():
            return  # another process made it meanwhile
        # A process killed while it made one left these; they never held a grant.
        remove_leftovers(real)
        try:
            create_whole(real, _build)
        except OrphanedJournal as exc:
            raise RegistryError(f"{path}: {exc}") from exc
    finally:
        os.close(fd)


def _build(building: Path) -> None:
    db = sqlite3.connect(building, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = FULL")
        db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    finally:
        db.close()


class ConsentRegistry:
    """Grants in an embedded SQLite file, keyed by subject reference, never by raw subject id.

    One connection reads (the request path, no caching: every call sees the last committed
    state, also of other processes) and one writes, serialised by a lock. WAL lets the reader
    go on while an import is being written, and never see it half-done.
    """

    def __init__(self, path: Path, subject_key: bytes, *, zone: tzinfo = UTC) -> None:
        if len(subject_key) < MIN_SUBJECT_KEY_BYTES:
            raise ValueError(f"subject_key must be at least {MIN_SUBJECT_KEY_BYTES} bytes")
        self.path = path
        self.zone = zone  # of imported times written without an offset
        self._key = subject_key
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        _create(path)
        if path.stat().st_size == 0:
            # Taken for a new registry, it would hold no withdrawal: consent tokens they
            # ended would count again.
            raise RegistryError(
                f"{path}: the file is empty (0 bytes): its grants and withdrawals were erased, "
                f"or it was never written; {_START_OVER}"
            )
        self._opened = self._file_identity()
        self._closed = False  # let go of a replaced file, and no other opened in its place
        self._writer = self._connect()
        try:
            self._prepare()
            self._reader = self._connect()
            self._reader.execute("PRAGMA query_only = ON")
        except sqlite3.OperationalError as exc:
            self._writer.close()
            # A file in rollback mode that another process writes: turning it to WAL waits for
            # that writer, as a read waits for one holding it whole.
            if _busy(exc):
                raise RegistryBusy(path) from exc
            raise RegistryError(f"{path}: not a usable consent registry: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self._writer.close()
            raise RegistryError(f"{path}: not a usable consent registry: {exc}") from exc
        except BaseException:
            self._writer.close()
            raise

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def readable(self) -> bool:
        """Whether the file the registry opened is still the one at its path."""
        return not self._closed and self._file_identity() == self._opened

    def _check_file(self) -> None:
        """Refuse to go on with a file replaced (a backup restored with `mv`) or removed.

        The connections would go on reading the old file, and a withdrawal imported into the
        new one would not take effect. The file now in its place is opened by `reopen` only.
        """
        if not self.readable():
            raise RegistryReplaced(self.path)

    def _connect(self) -> sqlite3.Connection:
        # An existing file only: SQLite would create a missing one, empty (`_create` makes a
        # new one whole).
        return sqlite3.connect(
            f"{self.path.absolute().as_uri()}?mode=rw",
            timeout=BUSY_TIMEOUT_S,  # how long a write waits for another (an import elsewhere)
            isolation_level=None,
            check_same_thread=False,
            uri=True,
        )

    def reopen(self) -> bool:
        """Open the registry file now at the path in place of one replaced or removed under
        the connections; False if the file is still the one open (nothing is done).

        Raises RegistryError (RegistryBusy when another process reads the old file) when no
        registry can be opened: every call then still raises RegistryReplaced. Called on
        request (a reload) only, never on a failed read: a copy still being written in place
        would be read half-done.
        """
        if self.readable():
            return False  # without waiting for the locks: a reload finds this most times
        with self._write_lock, self._read_lock:
            if self.readable():
                return False
            self._let_go()
            identity = self._file_identity()
            if identity is None:
                # Created empty, it would hold no withdrawal: consent tokens they ended would
                # count again.
                raise RegistryError(f"{self.path}: no consent registry file is there to open")
            if self._old_file_in_use():
                # Another process still has the old file open: an empty log does not make the
                # checkpoint busy, and opened now, the new file would share the log and its
                # index at the path with it, each reading the other's pages as its own.
                raise RegistryBusy(self.path)
            writer = self._connect()
            try:
                self._check_reopened(writer)
                reader = self._connect()
                reader.execute("PRAGMA query_only = ON")
            except sqlite3.OperationalError as exc:
                writer.close()
                if _busy(exc):
                    raise RegistryBusy(self.path) from exc
                raise RegistryError(f"{self.path}: not a usable consent registry: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                writer.close()
                raise RegistryError(f"{self.path}: not a usable consent registry: {exc}") from exc
            except BaseException:
                writer.close()
                raise
            if self._file_identity() != identity:
                reader.close()
                writer.close()
                raise RegistryError(f"{self.path}: replaced again while it was opened")
            self._writer, self._reader = writer, reader
            self._opened, self._closed = identity, False
            return True

    def _let_go(self) -> None:
        """Close the connections to a file replaced or removed, its write-ahead log emptied.

        SQLite leaves the log at the path's `-wal` when its file moved, and a connection to
        the file now at the path would read the frames as that file's own: emptied into the old
        file first, it holds none. Raises RegistryBusy, the connections kept, when another
        process still reads the old file.
        """
        if self._closed:
            return
        try:
            (busy, _, _) = self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise RegistryError(
                f"{self.path}: the replaced file's log cannot be emptied: {exc}"
            ) from exc
        if busy:
            raise RegistryBusy(self.path)
        self._reader.close()
        self._writer.close()
        self._closed = True

    def _old_file_in_use(self) -> bool:
        """Whether another process has the replaced file open, once the gateway let go of it.

        Every connection reading a file in WAL mode holds a shared lock on byte 128 of its
        index (`-shm`, the "DMS" lock of SQLite's WAL-index format) while it is open; the index
        of the file moved away stays at the path. POSIX locks: the gateway's own connections,
        closed by now, hold none to be mistaken for another's.
        """
        try:
            fd = os.open(f"{self.path}-shm", os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:
            return True
        finally:
            os.close(fd)  # lets go of the lock just taken
        return False

    def _check_reopened(self, db: sqlite3.Connection) -> None:
        """`_prepare` for a file put in place of the registry: nothing is created or migrated,
        only a registry of this schema is read."""
        db.execute("PRAGMA synchronous = FULL")
        version = self._schema_version(db)
        if version != SCHEMA_VERSION:
            raise RegistryError(
                f"{self.path}: schema version {version}, this gateway reads {SCHEMA_VERSION}"
            )
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")

    def _prepare(self) -> None:
        db = self._writer
        # A withdrawal, once acknowledged, must survive a power cut.
        db.execute("PRAGMA synchronous = FULL")
        # A registry in use needs only a read to check: the gateway's start and `consent show`
        # must not wait for (or give up on) an import holding the write lock.
        version = self._schema_version(db)
        if version == 0:
            raise RegistryError(
                f"{self.path}: the file holds no consent registry (SQLite, without its "
                f"tables); {_START_OVER}"
            )
        if version != SCHEMA_VERSION:
            raise RegistryError(
                f"{self.path}: schema version {version}, this gateway reads {SCHEMA_VERSION}"
            )
        # A new registry, or a copy restored from `VACUUM INTO`, is in rollback mode, where an
        # import would lock out the readers: WAL (a no-op for a registry in use, which is).
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")

    def _schema_version(self, db: sqlite3.Connection) -> int:
        """The registry's schema version (0: an empty file); refuses another SQLite file."""
        (version,) = db.execute("PRAGMA user_version").fetchone()
        tables = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if (version == 0 and tables) or (version != 0 and not tables >= _TABLES):
            # Another SQLite file (the share log, say): its own version number says nothing.
            raise RegistryError(f"{self.path}: not a consent registry (another SQLite file)")
        return int(version)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            # Under the lock: a reopen may have run while this call waited for it.
            self._check_file()
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    raise RegistryBusy(self.path) from exc
                raise
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def __enter__(self) -> ConsentRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            if self.readable():
                self._reader.close()
                self._writer.close()
                self._closed = True
                return
            # Replaced or removed: a restart would otherwise read the log left at the path as
            # the new file's. Best effort: the process is stopping either way.
            with contextlib.suppress(RegistryError):
                self._let_go()
            self._reader.close()
            self._writer.close()
            self._closed = True

    def subject_ref(self, subject_id: str) -> str:
        """Every grant, withdrawal and lookup is keyed by this: one person's id in any spelling
        (`canonical_subject_id`) finds the same grants, and a withdrawal ends them."""
        return subject_ref(self._key, subject_id)

    # -- reading ---------------------------------------------------------------------------

    def covering(self, subject_id: str, partner: str, purpose: str, at: datetime) -> Grant | None:
        """The grant in force at `at` (granted_at <= at < withdrawn_at); the latest granted wins."""
        moment = _micros(at)
        params = (self.subject_ref(subject_id), partner, purpose, moment, moment)
        with self._read_lock:
            # Under the lock: a reopen may have run while this call waited for it.
            self._check_file()
            # fetchall, not fetchone: the statement must finish so no read snapshot stays open.
            rows = self._reader.execute(_COVERING_SQL, params).fetchall()
        return _grant_from(rows[0]) if rows else None

    def withdrawn_between(
        self,
        subject_id: str,
        partner: str,
        purpose: str,
        since: datetime | None,
        at: datetime,
    ) -> bool:
        """Whether a withdrawal taking effect in [since, at] is on record (any time up to `at`
        when `since` is None)."""
        params = (
            self.subject_ref(subject_id),
            partner,
            purpose,
            _MIN_MICROS if since is None else _micros(since),
            _micros(at),
        )
        with self._read_lock:
            # Under the lock: a reopen may have run while this call waited for it.
            self._check_file()
            rows = self._reader.execute(_WITHDRAWN_BETWEEN_SQL, params).fetchall()
        return bool(rows)

    def show(self, subject_id: str) -> list[Grant]:
        with self._read_lock:
            # Under the lock: a reopen may have run while this call waited for it.
            self._check_file()
            rows = self._reader.execute(
                "SELECT subject_ref, partner, purpose, granted_at, withdrawn_at, reference "
                "FROM grants "
                "WHERE subject_ref = ? "
                "ORDER BY partner, purpose, granted_at, reference",
                (self.subject_ref(subject_id),),
            ).fetchall()
        return [_grant_from(row) for row in rows]

    # -- writing ---------------------------------------------------------------------------

    def grant(
        self, subject_id: str, partner: str, purpose: str, granted_at: datetime, reference: str
    ) -> Grant:
        """Record a grant; recording the same one again is a no-op that returns it."""
        _check_call(subject_id, partner, purpose, reference)
        ref = self.subject_ref(subject_id)
        try:
            with self._transaction() as tx:
                self._record_grant(tx, ref, partner, purpose, _micros(granted_at), reference)
                row = tx.execute(
                    "SELECT subject_ref, partner, purpose, granted_at, withdrawn_at, reference "
                    "FROM grants "
                    "WHERE subject_ref = ? AND partner = ? AND purpose = ? AND reference = ?",
                    (ref, partner, purpose, reference),
                ).fetchone()
        except _Conflict as exc:
            raise ConsentInputError([str(exc)]) from exc
        return _grant_from(row)

    def withdraw(
        self, subject_id: str, partner: str, purpose: str, withdrawn_at: datetime, reference: str
    ) -> int:
        """Withdraw consent from `withdrawn_at` on; returns the number of grants it closed.

        Every grant for this subject, partner and purpose given at or before that moment ends
        then; grants given later (a renewed consent) are not touched. `reference` names the
        withdrawal (usually the grant it answers).
        """
        _check_call(subject_id, partner, purpose, reference)
        with self._transaction() as tx:
            _, closed = self._record_withdrawal(
                tx, self.subject_ref(subject_id), partner, purpose, _micros(withdrawn_at), reference
            )
        return closed

    def import_rows(self, rows: Iterable[Mapping[str, str]]) -> ImportReport:
        """Apply rows shaped like the CSV's (line numbers count as if the header were line 1)."""
        return self._import((f"line {n}", row) for n, row in enumerate(rows, start=2))

    def _import(
        self,
        rows: Iterable[tuple[str, Mapping[str, object] | list[str]]],
        purposes: Mapping[str, Iterable[str]] | None = None,
    ) -> ImportReport:
        """Apply labelled rows in one transaction, all or nothing; a list in place of a row is
        its problems. With the contracts' `purposes` by partner, rows no share consults are
        warned of.

        Rows are read once, as they come: a file of millions of grants is never held in memory.
        After the first problem nothing more is applied, and every row is still checked.
        """
        errors = _Listing("problem(s)")
        warnings = _Listing("row(s) no share consults")
        counts: dict[Outcome, int] = {"granted": 0, "withdrawn": 0, "unchanged": 0}
        try:
            with self._transaction() as tx:
                for label, raw in rows:
                    row = raw if isinstance(raw, list) else _parse_row(raw, self.zone)
                    if isinstance(row, list):
                        errors.extend(f"{label}: {problem}" for problem in row)
                        continue
                    if purposes is not None and (warning := _unconsulted(row, purposes)):
                        warnings.append(f"{label}: {warning}")
                    if errors.count:
                        continue
                    try:
                        counts[self._apply(tx, row)] += 1
                    except _Conflict as exc:
                        errors.append(f"{label}: {exc}")
                if errors.count:
                    # All or nothing: a file with one bad row is sent back whole, to be fixed.
                    raise _Rollback
        except _Rollback:
            return ImportReport(errors=errors.lines(), problems=errors.count)
        return ImportReport(
            counts["granted"], counts["withdrawn"], counts["unchanged"], warnings=warnings.lines()
        )

    def _apply(self, tx: sqlite3.Connection, row: _Row) -> Outcome:
        ref = self.subject_ref(row.subject)
        inserted = self._record_grant(
            tx, ref, row.partner, row.purpose, _micros(row.granted_at), row.reference
        )
        if row.withdrawn_at is None:
            return "granted" if inserted else "unchanged"
        new, closed = self._record_withdrawal(
            tx, ref, row.partner, row.purpose, _micros(row.withdrawn_at), row.reference
        )
        return "withdrawn" if inserted or new or closed else "unchanged"

    @staticmethod
    def _record_grant(
        tx: sqlite3.Connection,
        ref: str,
        partner: str,
        purpose: str,
        granted_at: int,
        reference: str,
    ) -> bool:
        existing = tx.execute(
            "SELECT granted_at FROM grants "
            "WHERE subject_ref = ? AND partner = ? AND purpose = ? AND reference = ?",
            (ref, partner, purpose, reference),
        ).fetchone()
        if existing is not None:
            if existing[0] != granted_at:
                raise _Conflict(
                    f"reference {reference!r} is already recorded for this subject, partner and "
                    f"purpose with granted_at {_instant(existing[0]).isoformat()}"
                )
            return False
        # A withdrawal already on record ends this grant too, whatever order the two arrive in.
        (withdrawn_at,) = tx.execute(
            "SELECT MIN(withdrawn_at) FROM withdrawals "
            "WHERE subject_ref = ? AND partner = ? AND purpose = ? AND withdrawn_at >= ?",
            (ref, partner, purpose, granted_at),
        ).fetchone()
        tx.execute(
            "INSERT INTO grants (subject_ref, partner, purpose, reference, granted_at, "
            "withdrawn_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                ref,
                partner,
                purpose,
                reference,
                granted_at,
                withdrawn_at,
                _micros(datetime.now(UTC)),
            ),
        )
        return True

    @staticmethod
    def _record_withdrawal(
        tx: sqlite3.Connection,
        ref: str,
        partner: str,
        purpose: str,
        withdrawn_at: int,
        reference: str,
    ) -> tuple[bool, int]:
        new = tx.execute(
            "INSERT OR IGNORE INTO withdrawals (subject_ref, partner, purpose, withdrawn_at, "
            "reference, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
            (ref, partner, purpose, withdrawn_at, reference, _micros(datetime.now(UTC))),
        ).rowcount
        # The earliest withdrawal wins: a later one never reopens or extends a grant.
        closed = tx.execute(
            "UPDATE grants SET withdrawn_at = ? "
            "WHERE subject_ref = ? AND partner = ? AND purpose = ? AND granted_at <= ? "
            "AND (withdrawn_at IS NULL OR withdrawn_at > ?)",
            (withdrawn_at, ref, partner, purpose, withdrawn_at, withdrawn_at),
        ).rowcount
        return new == 1, closed


class _Listing:
    """Lines to show, up to MAX_LISTED, and a count of them all: a file of a million bad rows
    answers with a page of them, not a million lines held in memory."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.shown: list[str] = []
        self.count = 0

    def append(self, line: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_LISTED:
            self.shown.append(line)

    def extend(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.append(line)

    def lines(self) -> tuple[str, ...]:
        more = self.count - len(self.shown)
        return (*self.shown, f"and {more} more {self.what}") if more else tuple(self.shown)


MAX_LISTED = 1000


def import_csv(registry: ConsentRegistry, path: Path) -> ImportReport:
    """Import `subject,partner,purpose,granted_at,withdrawn_at,reference` rows (UTF-8).

    Times are ISO 8601 dates or date-times; a date means midnight and a date-time without an
    offset is local time, both in the registry's zone. An empty `withdrawn_at` means not
    withdrawn. Raises OSError if the file
    cannot be read; every problem in its content is a line of the report.
    """
    with path.open("rb") as file:
        return registry._import(read_csv(file))


_Labelled = tuple[str, Mapping[str, object] | list[str]]


def read_csv(file: BinaryIO) -> Iterator[_Labelled]:
    """The file's rows as they are read, labelled by line; a row's problems stand in its place.
    OSError if the file cannot be read."""
    try:
        yield from _read_csv(_utf8_lines(file))
    except _NotUtf8 as exc:
        yield f"line {exc.line}", ["not valid UTF-8"]
    except _LineTooLong as exc:
        yield f"line {exc.line}", [f"longer than {_LINE_MAX >> 20} MiB: not a consent row"]


class _NotUtf8(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _LineTooLong(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


# A physical line of a real consent file is far shorter: the csv module refuses a field of more
# than 131,072 characters anyway. Without a cap, a file with no line break (a JSON export given
# by mistake) would be held whole in memory before being refused.
_LINE_MAX = 4 << 20


def _utf8_lines(file: BinaryIO) -> Iterator[str]:
    # Decoded line by line, so a bad byte is placed on its line; splitting the bytes at line
    # ends is safe, since no byte of a multi-byte UTF-8 sequence is 0x0A or 0x0D.
    number = 0
    try:
        for number, raw in enumerate(_byte_lines(file), start=1):
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
        raise _NotUtf8(number) from None
    except _LineTooLong:
        raise _LineTooLong(number + 1) from None


def _byte_lines(file: BinaryIO, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Lines ending in "\n", "\r\n" or a lone "\r" (a spreadsheet's "CSV (Macintosh)"), each
    with its ending, as the csv module reads them from a file opened with newline="".

    Raises `_LineTooLong` (its line number unknown here) for a line over `_LINE_MAX` bytes.
    """
    pending = bytearray()  # the line not ended yet; appended to in place, never copied whole
    while chunk := file.read(chunk_size):
        if b"\n" not in chunk and b"\r" not in chunk and not pending.endswith(b"\r"):
            pending += chunk
            if len(pending) > _LINE_MAX:
                raise _LineTooLong(0)
            continue
        data = bytes(pending) + chunk
        # A "\r" at the end may be the first half of a "\r\n" the next chunk completes.
        held = b"\r" if data.endswith(b"\r") else b""
        lines = data[: len(data) - len(held)].splitlines(keepends=True)
        rest = lines.pop() if lines and not lines[-1].endswith((b"\n", b"\r")) else b""
        for line in lines:
            if len(line) > _LINE_MAX:
                raise _LineTooLong(0)
            yield line
        pending = bytearray(rest + held)
    if len(pending) > _LINE_MAX:
        raise _LineTooLong(0)
    if pending:
        yield bytes(pending)


def _read_csv(lines: Iterable[str]) -> Iterator[_Labelled]:
    reader = csv.reader(lines, strict=True)
    expected = ",".join(CSV_HEADER)
    try:
        header = next(reader, None)
        if header is None:
            yield "line 1", [f"the file is empty; expected the header {expected}"]
            return
        if tuple(h.strip() for h in header) != CSV_HEADER:
            # What the line holds is not shown: without a header, it is a row of personal data.
            yield "line 1", [f"the header must be exactly {expected}"]
            return
        start = reader.line_num + 1
        for fields in reader:
            label = f"line {start}"
            start = reader.line_num + 1
            if not fields:
                continue
            if len(fields) != len(CSV_HEADER):
                yield label, [f"expected {len(CSV_HEADER)} fields, found {len(fields)}"]
                continue
            yield label, dict(zip(CSV_HEADER, fields, strict=True))
    except csv.Error as exc:
        yield f"line {reader.line_num}", [f"not valid CSV: {exc}"]


# -- admin API (mounted by the HTTP layer) ---------------------------------------------------


def grant_json(grant: Grant, at: datetime | None = None) -> dict[str, object]:
    return {
        "subject_ref": grant.subject_ref,
        "partner": grant.partner,
        "purpose": grant.purpose,
        "granted_at": grant.granted_at.isoformat(),
        "withdrawn_at": grant.withdrawn_at.isoformat() if grant.withdrawn_at else None,
        "reference": grant.reference,
        "in_force": grant.in_force(at or datetime.now(UTC)),
    }


def grants_json(
    registry: ConsentRegistry, subject_id: str, at: datetime | None = None
) -> list[dict[str, object]]:
    """`GET /_gateway/consent?subject=ID`: every grant of one subject, `in_force` as of `at`."""
    at = at or datetime.now(UTC)
    return [grant_json(grant, at) for grant in registry.show(subject_id)]


def apply_json(
    registry: ConsentRegistry,
    payload: object,
    purposes: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, object]:
    """`POST /_gateway/consent` with `{"grants": [{subject, partner, purpose, granted_at,
    withdrawn_at?, reference}, ...]}`; all or nothing, raising ConsentInputError (a ValueError)
    with every problem. With the loaded contracts' `purposes` by partner, the answer also
    warns of grants no share consults, as `consent import` does."""
    if not isinstance(payload, dict):
        raise ConsentInputError(['the body must be an object {"grants": [...]}'])
    problems = _unknown_fields(payload, ("grants",))
    items = payload.get("grants")
    if not isinstance(items, list):
        problems.append("grants: must be a list of grants")
        raise ConsentInputError(problems)
    rows: list[_Labelled] = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            rows.append((f"grants[{index}]", item))
        else:
            problems.append(f"grants[{index}]: must be an object")
    if problems:
        raise ConsentInputError(problems)
    report = registry._import(rows, purposes)
    if not report.ok:
        raise ConsentInputError(list(report.errors))
    return {
        "granted": report.granted,
        "withdrawn": report.withdrawn,
        "unchanged": report.unchanged,
        "warnings": list(report.warnings),
    }


# -- command line ----------------------------------------------------------------------------


def registry_path(settings: Settings) -> Path:
    """Where the registry lives (`registry.path`)."""
    return settings.registry.path


def _master_key(settings: Settings) -> bytes | int:
    """The hash key, or the exit code of a usage error."""
    from gateway.errors import StartupError
    from gateway.keys import master_key

    try:
        return master_key(settings)
    except StartupError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE


def _open(settings: Settings, key: bytes, *, existing: bool = False) -> ConsentRegistry | int:
    """The registry, or the exit code of a usage error. An `existing` registry only is opened,
    never created."""
    from gateway.keys import subject_ref_key

    path = registry_path(settings)
    if existing and not path.is_file():
        # Created now, it would answer "no consent grants recorded": a false answer.
        print(f"no consent registry at {path} (registry.path)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return ConsentRegistry(path, subject_ref_key(key), zone=settings.zone)
    except RegistryBusy as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    except (RegistryError, sqlite3.Error, OSError) as exc:
        print(f"cannot open the consent registry: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.file)
    key = _master_key(settings)
    if isinstance(key, int):
        return key
    try:
        # Opened once, and before the registry is (and, the first time, created): a named pipe
        # opened to be checked and closed again lost its writer, and the second open waited
        # for another one for ever.
        file = path.open("rb")
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    with file:
        registry = _open(settings, key)
        if isinstance(registry, int):
            return registry
        purposes = _contract_purposes(settings)
        with registry:
            try:
                report = registry._import(read_csv(file), purposes)
            except OSError as exc:
                print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
                return EXIT_USAGE
            except RegistryBusy as exc:
                print(exc, file=sys.stderr)
                return EXIT_FAILED
    if not report.ok:
        for error in report.errors:
            print(f"{path}: {error}")
        print(f"{report.problems} problem(s) in {path}; nothing was imported", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{path}: {report.granted} granted, {report.withdrawn} withdrawn, "
        f"{report.unchanged} unchanged"
    )
    for warning in report.warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    if purposes is None:
        # Silence here would read as "every row names a partner and purpose a contract has".
        print(
            f"{path}: warning: the contracts in {settings.contracts_dir} could not be loaded; "
            "rows were not checked against their partners and purposes "
            "(share-gateway contracts validate says why)",
            file=sys.stderr,
        )
    return EXIT_OK


def _contract_purposes(settings: Settings) -> dict[str, tuple[str, ...]] | None:
    """Each partner's purposes in the contracts on disk; None when they cannot be read now
    (nothing to compare the rows with)."""
    from gateway.contractset import load_contract_set

    contract_set, _problems = load_contract_set(settings.contracts_dir, settings)
    if contract_set is None:
        return None
    return {pid: c.contract.purposes for pid, c in contract_set.contracts.items()}


def _unconsulted(row: _Row, purposes: Mapping[str, Iterable[str]]) -> str | None:
    """Why no share consults the row (no contract has its partner or purpose), if so.

    A grant for a partner not onboarded yet is fine; a withdrawal with a typo in its purpose
    leaves the real grant in force, and "1 withdrawn" would not say so.
    """
    approved = purposes.get(row.partner)
    # Only names a contract has are shown: in a row with its columns out of order, the
    # others are subject ids.
    if approved is None:
        return "no contract has this row's partner; no share consults this row"
    if row.purpose not in approved:
        return f"{row.partner!r} has no such purpose; no share consults this row"
    return None


def _status(grant: Grant, now: datetime) -> str:
    if grant.in_force(now):
        return "in force"
    return "not yet in force" if now < grant.granted_at else "withdrawn"


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    if problem := subject_id_problem(args.subject):
        # Its reference would be no one's: "no consent grants recorded" would be a false answer.
        print(f"the subject id {problem}", file=sys.stderr)
        return EXIT_USAGE
    key = _master_key(settings)
    if isinstance(key, int):
        return key
    registry = _open(settings, key, existing=True)
    if isinstance(registry, int):
        return registry
    now = datetime.now(UTC)
    with registry:
        grants = registry.show(args.subject)
        subject_ref = registry.subject_ref(args.subject)
    if args.format == "json":
        print(
            orjson.dumps([grant_json(g, now) for g in grants], option=orjson.OPT_INDENT_2).decode()
        )
        return EXIT_OK
    print(f"subject ref {subject_ref}")
    if not grants:
        print("no consent grants recorded")
        return EXIT_OK
    table = [("PARTNER", "PURPOSE", "GRANTED_AT", "WITHDRAWN_AT", "REFERENCE", "STATUS")]
    table += [
        (
            g.partner,
            g.purpose,
            g.granted_at.astimezone(settings.zone).isoformat(),  # as the operator wrote it
            g.withdrawn_at.astimezone(settings.zone).isoformat() if g.withdrawn_at else "-",
            g.reference,
            _status(g, now),
        )
        for g in grants
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK
