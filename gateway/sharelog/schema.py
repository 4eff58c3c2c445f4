"""The share log's SQLite schema: tables, forward migrations, connections, row <-> entry mapping."""

from __future__ import annotations

import heapq
import math
import operator
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from gateway.sharelog.chain import (
    CHECKPOINT_FIELDS,
    LIST_FIELDS,
    MAP_FIELDS,
    OUTCOME_FIELDS,
    SHARE_FIELDS,
    Entry,
    EntryKind,
)

Durability = Literal["batched", "strict"]
SQLITE_INT_MAX = 2**63 - 1  # the largest integer SQLite takes (LIMIT, OFFSET, a seq)
# Opens the share log; the connection must be usable from any thread (`check_same_thread=False`).
Connect = Callable[[Path], sqlite3.Connection]

# Every entry kind has its own table; one `seq` runs across all three and orders the chain.
TABLES: dict[EntryKind, tuple[str, tuple[str, ...]]] = {
    "share": ("shares", SHARE_FIELDS),
    "outcome": ("outcomes", OUTCOME_FIELDS),
    "checkpoint": ("checkpoints", CHECKPOINT_FIELDS),
}


def columns(kind: EntryKind) -> tuple[str, ...]:
    return ("seq", *TABLES[kind][1], "prev_hash", "hash", "mac")


def insert_sql(kind: EntryKind) -> str:
    table, _ = TABLES[kind]
    cols = columns(kind)
    marks = ", ".join("?" * len(cols))
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})"  # noqa: S608 - constants


def select_sql(kind: EntryKind) -> str:
    table, _ = TABLES[kind]
    return f"SELECT {', '.join(columns(kind))} FROM {table}"  # noqa: S608 - constants


_V1: tuple[str, ...] = (
    """
    CREATE TABLE shares (
        seq INTEGER PRIMARY KEY,
        share_id TEXT NOT NULL,
        ts TEXT NOT NULL,
        partner TEXT,
        contract_id TEXT,
        contract_version INTEGER,
        contract_sha256 TEXT,
        caller TEXT,
        purpose TEXT,
        method TEXT NOT NULL,
        route TEXT,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        fields_sent TEXT NOT NULL,
        fields_stripped TEXT NOT NULL,
        fields_transformed TEXT NOT NULL,
        categories_sent TEXT NOT NULL,
        pii_redactions TEXT NOT NULL,
        records INTEGER NOT NULL,
        subject_refs TEXT NOT NULL,
        bytes_sent INTEGER NOT NULL,
        upstream_location TEXT,
        cross_border_mechanism TEXT,
        consent_basis TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL
    )
    """,
    # One index answers `logs query --since/--until [--partner P]`: a day of (ts, partner) keys is
    # scanned in the index and only the partner's rows are read. Every new key lands at the
    # right-hand end, so a commit dirties one page of it. (partner, ts) would dirty a page per
    # partner per commit, and an index on a random key (a UUID share id, a keyed hash) a page per
    # row: either costs the writer a third or more of its speed.
    "CREATE INDEX shares_ts_partner ON shares (ts, partner)",
    """
    CREATE TABLE outcomes (
        seq INTEGER PRIMARY KEY,
        share_id TEXT NOT NULL,
        share_seq INTEGER,
        ts TEXT NOT NULL,
        outcome TEXT NOT NULL,
        upstream_status INTEGER,
        bytes_received INTEGER NOT NULL,
        latency_ms REAL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL
    )
    """,
    "CREATE INDEX outcomes_share_seq ON outcomes (share_seq)",
    """
    CREATE TABLE checkpoints (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        reason TEXT NOT NULL,
        cut_seq INTEGER,
        cut_prev_hash TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL
    )
    """,
    # Derived from shares.subject_refs (which the chain covers), for `logs subject`: the first 64
    # bits of each keyed hash, in share order. Appends stay sequential, and a lookup scans ~20
    # bytes per subject (about 70 ms per 2 million) before the full hash is matched on the share.
    # `logs verify` checks that it agrees with the records.
    """
    CREATE TABLE share_subjects (
        share_seq INTEGER NOT NULL,
        subject_key INTEGER NOT NULL,
        PRIMARY KEY (share_seq, subject_key)
    ) WITHOUT ROWID
    """,
    # Shares forwarded whose outcome is not written yet; what is left here after a crash is closed
    # as `unknown` on the next start.
    """
    CREATE TABLE pending_outcomes (
        share_id TEXT PRIMARY KEY,
        share_seq INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL,
        checkpoint_seq INTEGER NOT NULL
    )
    """,
)

# Applied in order; `PRAGMA user_version` is how many have been applied. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(Exception):
    """The file is not a share log this version of the gateway can use."""


class NewerSchema(SchemaError):
    """A share log written by a newer gateway: intact, as far as this one can tell, but not
    one it can read."""


def _default_connect(path: Path) -> sqlite3.Connection:
    # The share log hands its connection between the event loop and its writer thread (one
    # at a time, under a lock), so it may not be tied to the thread that opened it. `mode=rw`:
    # SQLite would create a missing file, empty; a new log is only ever made whole (`Ledger`).
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=rw"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def connect_rw(
    path: Path,
    *,
    durability: Durability,
    busy_timeout_s: float,
    connect: Connect | None = None,
) -> sqlite3.Connection:
    """Open an existing share log for writing, in WAL mode, migrated forward.

    Raises SchemaError for a file that holds no share log (empty, or SQLite without the
    schema), before anything is written to it: the records it held may have been erased.
    """
    check_not_empty(path)
    conn = (connect or _default_connect)(path)
    try:
        conn.isolation_level = None  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
        conn.execute(f"PRAGMA busy_timeout = {max(0, int(busy_timeout_s * 1000))}")
        # Another SQLite file (with tables of its own) is refused by `migrate`.
        tables = conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
        if user_version(conn) == 0 and not tables:
            raise SchemaError(
                f"the file holds no share log (SQLite, without its tables); {_START_OVER}"
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SchemaError(f"{path}: cannot switch the share log to WAL mode (got {mode})")
        # NORMAL in WAL mode: a commit survives a process crash; FULL also syncs every commit.
        sync = "FULL" if durability == "strict" else "NORMAL"
        conn.execute(f"PRAGMA synchronous = {sync}")
        # Checkpoint the WAL into the file every ~16 MB rather than every 4 MB: a page rewritten
        # by many commits is copied once. The WAL file is cut back to 64 MB after a checkpoint.
        conn.execute("PRAGMA wal_autocheckpoint = 4000")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class EmptyLog(SchemaError):
    """The file at the log's path is empty (0 bytes): erased, or never written."""


_START_OVER = "to start a new share log, remove the file"


def check_not_empty(path: Path) -> None:
    """Raise EmptyLog for a file of 0 bytes, which SQLite would take for a new database."""
    if path.stat().st_size == 0:
        raise EmptyLog(
            "the file is empty (0 bytes): its records were erased, or it was never written; "
            + _START_OVER
        )


# The files beside a share log: SQLite's own, and the lock a running gateway holds.
LOCK_SUFFIX = ".lock"
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal", LOCK_SUFFIX)


def connect_ro(path: Path) -> sqlite3.Connection:
    """Open an existing share log read-only, for review."""
    if not path.is_file():
        raise SchemaError(f"{path}: no share log here")
    if path.stat().st_size == 0:
        raise EmptyLog("the file is empty (0 bytes): the log was erased, or never written")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        try:
            version = user_version(conn)
        except sqlite3.OperationalError as exc:
            # A log closed cleanly has no `-shm`, which a reader of a WAL file must create: in a
            # folder the reader cannot write (a read-only snapshot, an auditor's account) it
            # cannot. Without a `-wal` beside it nobody is writing it (a writer would have
            # made one there), so it is read as the unchanging file it is.
            if not _unwritable_folder(exc) or Path(f"{path}-wal").exists():
                raise
            conn.close()
            conn = sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None)
            version = user_version(conn)
        # Without the path: the commands name it once, in a sentence of their own.
        if version == 0:
            if conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
                raise SchemaError("another SQLite file, not a share log")
            raise SchemaError("an SQLite file without the share log's tables (no schema)")
        if version > SCHEMA_VERSION:
            raise NewerSchema(
                f"share log schema {version} is newer than this gateway "
                f"understands ({SCHEMA_VERSION})"
            )
    except BaseException:
        conn.close()
        raise
    return conn


def _unwritable_folder(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_READONLY_DIRECTORY, sqlite3.SQLITE_CANTOPEN)


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations the file has not seen yet; each in its own transaction."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = user_version(conn)
            if version > SCHEMA_VERSION:
                raise NewerSchema(
                    f"share log schema {version} is newer than this gateway "
                    f"understands ({SCHEMA_VERSION})"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return version
            if version == 0 and conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
                # Another SQLite file (the consent registry, say): never made a share log too.
                raise SchemaError("not a share log (another SQLite file)")
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def entries_between(
    conn: sqlite3.Connection, lo: int, hi: int
) -> Iterator[tuple[int, EntryKind, Any]]:
    """The rows of every entry from seq `lo` to `hi` (inclusive), in seq order, with their kind."""

    def stream(kind: EntryKind) -> Iterator[tuple[int, EntryKind, Any]]:
        sql = f"{select_sql(kind)} WHERE seq BETWEEN ? AND ? ORDER BY seq"
        for row in conn.execute(sql, (lo, hi)):
            yield int(row[0]), kind, row

    return heapq.merge(
        stream("share"), stream("outcome"), stream("checkpoint"), key=lambda item: item[0]
    )


def subject_key(subject_ref: str) -> int:
    """The 64-bit key of a subject reference in `share_subjects`."""
    return int.from_bytes(bytes.fromhex(subject_ref[:16]), "big", signed=True)


# Per kind: a getter of the row's values from an entry, and where the JSON columns are.
_ROW_SPEC: dict[EntryKind, tuple[Callable[[Entry], tuple[Any, ...]], tuple[int, ...]]] = {
    kind: (
        operator.itemgetter(*columns(kind)),
        tuple(
            i for i, name in enumerate(columns(kind)) if name in LIST_FIELDS or name in MAP_FIELDS
        ),
    )
    for kind in TABLES
}


def entry_row(entry: Entry) -> tuple[Any, ...]:
    """The row of a sealed entry, in `columns(kind)` order."""
    getter, json_columns = _ROW_SPEC[entry["kind"]]
    row = list(getter(entry))
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    for i in json_columns:
        row[i] = dumps(row[i], option=sort).decode()
    return tuple(row)


def as_stored(row: Sequence[Any], entry: Entry) -> Entry:
    """`entry` (read from `row` by `row_entry`) with its JSON columns as the text `row` holds.

    Hashed, it matches the entry's sealed hash only if each of those texts is the one the
    gateway wrote, byte for byte. (Each is one whole JSON value, as `row_entry` found, and the
    hashed text has an array or an object there, which ends where its brackets close: no
    column's text can take in part of the next one's.)
    """
    json_columns = _ROW_SPEC[entry["kind"]][1]
    if not json_columns:
        return entry
    stored = dict(entry)
    names = columns(entry["kind"])
    fragment = orjson.Fragment
    for i in json_columns:
        if type(row[i]) is str:
            stored[names[i]] = fragment(row[i])
    return stored


def row_entry(kind: EntryKind, row: Sequence[Any]) -> Entry:
    """The sealed entry a row holds. Raises ValueError if a JSON column does not parse."""
    cols = columns(kind)
    entry: Entry = {"kind": kind}
    for name, value in zip(cols, row, strict=True):
        # Nothing is sealed with these; hashed, infinity would read as JSON null (the value it
        # may have replaced) and bytes not at all.
        if isinstance(value, bytes) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"column {name} holds {value!r}, which no entry is written with")
        if (name in LIST_FIELDS or name in MAP_FIELDS) and value is not None:
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"column {name} does not hold JSON") from exc
        entry[name] = value
    return entry
