"""The writing side of the share-log file: sealed appends, the signed head, recovery, prune."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.files import create_whole
from gateway.sharelog.chain import (
    GENESIS_HASH,
    CheckpointReason,
    Entry,
    EntryKind,
    ShareDraft,
    checkpoint_entry,
    draft_hash,
    draft_share,
    entry_hash,
    entry_mac,
    format_ts,
    head_mac,
    macs_equal,
    outcome_entry,
    seal,
    seal_key,
    unknown_outcome_entry,
)
from gateway.sharelog.outcomes import describe
from gateway.sharelog.record import ShareOutcome, ShareRecord
from gateway.sharelog.schema import (
    Connect,
    Durability,
    as_stored,
    connect_ro,
    connect_rw,
    entries_between,
    entry_row,
    insert_sql,
    migrate,
    row_entry,
    select_sql,
    subject_key,
)


class LedgerError(Exception):
    """The share log is not in a state the gateway may append to (tampered head, truncated tail)."""


class PruneRefused(ValueError):
    """A prune would remove records younger than the retention period."""


class PruneUnverified(LedgerError):
    """The entries a prune would remove, or the entry at its cut, do not verify."""


@dataclass(frozen=True, slots=True)
class PruneResult:
    before: datetime
    cut_seq: int  # the chain now starts here
    shares: int
    outcomes: int
    checkpoints: int
    checkpoint_seq: int | None  # the signed prune checkpoint; None for a dry run or no-op


@dataclass(frozen=True, slots=True)
class _PrunePlan:
    final_cut: int
    shares: int
    outcomes: int
    checkpoints: int
    cuts: list[tuple[int, str]]  # per step: where the chain is cut, and the hash it links to


_INSERT = {kind: insert_sql(kind) for kind in ("share", "outcome", "checkpoint")}
_CHAIN_TABLES = ("shares", "outcomes", "checkpoints")
_DELETE_BEFORE = (
    *(f"DELETE FROM {t} WHERE seq < ?" for t in _CHAIN_TABLES),  # noqa: S608
    "DELETE FROM share_subjects WHERE share_seq < ?",
    "DELETE FROM pending_outcomes WHERE share_seq < ?",
)
_FIRST_SEQ = (
    "SELECT MIN(seq) FROM (SELECT MIN(seq) AS seq FROM shares"
    " UNION ALL SELECT MIN(seq) FROM outcomes UNION ALL SELECT MIN(seq) FROM checkpoints)"
)
_LAST_PRUNE = f"{select_sql('checkpoint')} WHERE reason = 'prune' ORDER BY seq DESC LIMIT 1"
_PREV_HASH_AT = (
    "SELECT prev_hash FROM shares WHERE seq = ?1"
    " UNION ALL SELECT prev_hash FROM outcomes WHERE seq = ?1"
    " UNION ALL SELECT prev_hash FROM checkpoints WHERE seq = ?1"
)
# Read at every start and stop. CROSS JOIN keeps `pending_outcomes` (the shares in flight) the
# outer loop: left to choose, SQLite walked every share in the log instead (seconds per million).
_OPEN_SHARES = (
    "SELECT p.share_id, p.share_seq FROM pending_outcomes AS p"
    " CROSS JOIN shares AS s ON s.seq = p.share_seq AND s.share_id = p.share_id"
    " WHERE s.decision = 'shared'"
    " AND NOT EXISTS (SELECT 1 FROM outcomes AS o WHERE o.share_seq = p.share_seq)"
    " ORDER BY p.share_seq"
)
# `pending_outcomes` is an index, not part of the chain: a row is taken only where it names
# this share's own open record, as `_OPEN_SHARES` does; a row re-pointed at another share would
# have the outcome sealed against that share.
_PENDING_SEQ = (
    "SELECT p.share_seq FROM pending_outcomes AS p"
    " JOIN shares AS s ON s.seq = p.share_seq AND s.share_id = p.share_id"
    " WHERE p.share_id = ? AND s.decision = 'shared'"
    " AND NOT EXISTS (SELECT 1 FROM outcomes AS o WHERE o.share_seq = p.share_seq)"
)
_LAST_CHECKPOINT = "SELECT MAX(seq) FROM checkpoints WHERE seq <= ?"
_LAST_SEQ = (
    "SELECT seq, hash FROM ("
    " SELECT seq, hash FROM (SELECT seq, hash FROM shares ORDER BY seq DESC LIMIT 1)"
    " UNION ALL SELECT seq, hash FROM (SELECT seq, hash FROM outcomes ORDER BY seq DESC LIMIT 1)"
    " UNION ALL"
    " SELECT seq, hash FROM (SELECT seq, hash FROM checkpoints ORDER BY seq DESC LIMIT 1)"
    ") ORDER BY seq DESC LIMIT 1"
)


# How many open shares a ledger remembers the seq of; far more than are ever in flight at once.
_OPEN_SEQS_KEPT = 65_536


class Ledger:
    """One read-write connection; appends entries in explicit transactions, sealing each one.

    Not thread-safe: the share-log writer thread (or a one-off CLI command) owns it. The head is
    re-read at the start of every transaction, so another process (`logs prune`) may append too.
    """

    def __init__(self, conn: sqlite3.Connection, master_key: bytes, checkpoint_every: int) -> None:
        self.conn = conn
        self._key = seal_key(master_key)
        self._checkpoint_every = checkpoint_every
        self._seq = 0
        self._prev = GENESIS_HASH
        self._checkpoint_seq = 0
        self._data_version: Any = None
        self._busy_timeout_ms = 0  # what `open` set: how long `begin` waits for another writer
        self._rows: dict[EntryKind, list[tuple[Any, ...]]] = {}
        self._subjects: list[tuple[int, int]] = []
        self._opened: dict[str, int] = {}
        self._closed: set[str] = set()  # share ids whose outcome this transaction adds
        self._entries: list[Entry] = []
        # The open shares this connection committed: an outcome finds its share here rather
        # than in `pending_outcomes`. Only a shortcut: whatever is missing is looked up.
        self._open_seqs: dict[str, int] = {}
        # True when the head is the genesis one: a new log, that no gateway has started yet.
        self.created = False
        self._reset()

    @classmethod
    def open(
        cls,
        path: Path,
        master_key: bytes,
        *,
        durability: Durability = "batched",
        checkpoint_every: int = 1000,
        busy_timeout_s: float = 5.0,
        connect: Connect | None = None,
    ) -> Ledger:
        """Open the file, or create it whole where there is none; refuse one that holds no
        share log (SchemaError) or whose signed head does not match its last entry."""
        if not path.exists():
            create(path, master_key)
        conn = connect_rw(
            path, durability=durability, busy_timeout_s=busy_timeout_s, connect=connect
        )
        ledger = cls(conn, master_key, checkpoint_every)
        ledger._busy_timeout_ms = max(0, int(busy_timeout_s * 1000))
        try:
            ledger._check_opened()
            # From here on the connection waits only where `begin` asks it to: an uncontended
            # transaction then costs no statement to switch the wait off and on again.
            conn.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            conn.close()
            raise
        return ledger

    @classmethod
    def open_read_only(cls, path: Path, master_key: bytes) -> Ledger:
        """Open an existing file only to read it (a dry-run prune): nothing is created,
        migrated or switched to WAL, and no lock is taken that a running gateway would wait for.
        Raises SchemaError when it is not a share log this gateway reads, and LedgerError, as
        `open` does, when its signed head is not its last entry."""
        ledger = cls(connect_ro(path), master_key, checkpoint_every=1)
        try:
            ledger._check_head()
        except BaseException:
            ledger.close()
            raise
        return ledger

    def close(self) -> None:
        self.conn.close()

    def _check_head(self) -> None:
        """Check the head against the tail."""
        head = self.conn.execute("SELECT seq, hash FROM head").fetchone()
        last = self.conn.execute(_LAST_SEQ).fetchone()
        if head is None:
            raise LedgerError(
                "the share log has entries but no head: run `share-gateway logs verify`"
                if last is not None
                else "the share log has no head: run `share-gateway logs verify`"
            )
        tail = (0, GENESIS_HASH) if last is None else (int(last[0]), str(last[1]))
        if (int(head[0]), str(head[1])) != tail:
            # Appending now would re-sign the damaged tail and erase the evidence.
            raise LedgerError(
                f"the share log's last entry (seq {tail[0]}) is not its signed head "
                f"(seq {head[0]}): entries were removed or altered; "
                "run `share-gateway logs verify`"
            )

    # -- transactions --------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a write transaction, waiting up to the busy timeout for another writer."""
        if self.try_begin():
            return
        self.conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        try:
            self._begin()
        finally:
            self.conn.execute("PRAGMA busy_timeout = 0")

    def try_begin(self) -> bool:
        """`begin`, or False at once when another connection holds the write lock."""
        try:
            self._begin()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:  # extended codes too
                return False
            raise
        return True

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            # data_version moves only when another connection commits; otherwise the head is
            # the one this connection wrote last and need not be read and checked again.
            version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version:
                self._reset()
                return
            # Another connection wrote (`logs prune` may have removed open shares): what this
            # one remembers of its open shares is looked up again.
            self._open_seqs.clear()
            seq, digest = self._signed_head()
            # The head's `checkpoint_seq` is outside its seal: the last checkpoint is looked up
            # in the chain instead, so that an edited head cannot hold back the periodic
            # checkpoints (the signed lines outside the file that show how far it reached).
            checkpoint_seq = _scalar(self.conn, _LAST_CHECKPOINT, (seq,))
        except BaseException:
            self.rollback()
            raise
        self._seq, self._prev = seq, digest
        self._checkpoint_seq = 0 if checkpoint_seq is None else int(checkpoint_seq)
        self._data_version = version
        self._reset()

    def rollback(self) -> None:
        self._reset()
        self._data_version = None  # appends were undone: read the head again
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def commit(self, now: datetime) -> list[Entry]:
        """Write what was added since `begin`, move the signed head, commit; return the entries."""
        if self._seq - self._checkpoint_seq >= self._checkpoint_every:
            self.add_checkpoint("periodic", now)
        conn = self.conn
        for kind, rows in self._rows.items():
            if rows:
                conn.executemany(_INSERT[kind], rows)
        if self._subjects:
            conn.executemany(
                "INSERT OR IGNORE INTO share_subjects (share_seq, subject_key) VALUES (?, ?)",
                self._subjects,
            )
        if self._opened:
            conn.executemany(
                "INSERT OR REPLACE INTO pending_outcomes (share_id, share_seq) VALUES (?, ?)",
                self._opened.items(),
            )
        if self._closed:
            conn.executemany(
                "DELETE FROM pending_outcomes WHERE share_id = ?", [(s,) for s in self._closed]
            )
        conn.execute(
            "UPDATE head SET seq = ?, hash = ?, mac = ?, checkpoint_seq = ? WHERE id = 1",
            (
                self._seq,
                self._prev,
                head_mac(self._key, self._seq, self._prev),
                self._checkpoint_seq,
            ),
        )
        conn.execute("COMMIT")
        open_seqs = self._open_seqs
        if len(open_seqs) >= _OPEN_SEQS_KEPT:
            open_seqs.clear()  # shares whose outcome never came: forgotten, still in the file
        open_seqs.update(self._opened)
        for share_id in self._closed:
            open_seqs.pop(share_id, None)
        entries = self._entries
        self._reset()
        return entries

    # -- appends (between begin and commit) ----------------------------------------------------

    def add_share(self, record: ShareRecord | ShareDraft) -> Entry:
        """Append a share record (drafted already, or here)."""
        draft = record if isinstance(record, ShareDraft) else draft_share(record)
        seq, prev = self._seq + 1, self._prev
        digest = draft_hash(draft, seq, prev)
        mac = entry_mac(self._key, digest)
        self._rows["share"].append((seq, *draft.values, prev, digest, mac))
        entry = {**draft.fields, "seq": seq, "prev_hash": prev, "hash": digest, "mac": mac}
        self._entries.append(entry)
        self._seq, self._prev = seq, digest
        self._subjects.extend((seq, subject_key(ref)) for ref in entry["subject_refs"])
        if entry["decision"] == "shared":
            self._opened[entry["share_id"]] = seq
        return entry

    def add_outcome(self, outcome: ShareOutcome, ts: datetime) -> Entry:
        """Append an outcome linked to its open share (`share_seq` None if none is open)."""
        share_id = outcome.share_id
        in_batch = self._opened.get(share_id)  # the share is in this very transaction
        share_seq = in_batch
        # A share this transaction already closed keeps that one outcome: its row is still in
        # `pending_outcomes` and its seq in memory until the commit.
        if share_seq is None and share_id not in self._closed:
            share_seq = self._open_seqs.get(share_id)
            if share_seq is None:
                share_seq = self._pending_seq(share_id)
        entry = seal(outcome_entry(outcome, share_seq, ts, self._seq + 1, self._prev), self._key)
        self._append(entry)
        if in_batch is not None:
            del self._opened[share_id]
        elif share_seq is not None:
            self._closed.add(share_id)
        return entry

    def add_unknown_outcomes(self, ts: datetime) -> list[Entry]:
        """Close every share whose outcome was never written (the writing process died)."""
        # `pending_outcomes` is an index, not part of the chain: only a row naming a shared
        # record of the chain that has no outcome yet closes anything. Any other row (written
        # by hand, say) would otherwise have a genuine, sealed `unknown` outcome signed for it.
        rows = self.conn.execute(_OPEN_SHARES).fetchall()
        self.conn.execute("DELETE FROM pending_outcomes")  # every open share is closed below
        added = []
        for share_id, share_seq in rows:
            if share_id in self._closed:
                continue
            entry = seal(
                unknown_outcome_entry(share_id, share_seq, ts, self._seq + 1, self._prev), self._key
            )
            self._append(entry)
            self._closed.add(share_id)
            added.append(entry)
        return added

    def add_checkpoint(
        self,
        reason: CheckpointReason,
        ts: datetime,
        *,
        cut_seq: int | None = None,
        cut_prev_hash: str | None = None,
    ) -> Entry:
        entry = seal(
            checkpoint_entry(
                reason,
                ts,
                self._seq + 1,
                self._prev,
                cut_seq=cut_seq,
                cut_prev_hash=cut_prev_hash,
            ),
            self._key,
        )
        self._append(entry)
        self._checkpoint_seq = entry["seq"]
        return entry

    # -- whole operations ----------------------------------------------------------------------

    def prune(
        self,
        before: datetime,
        *,
        now: datetime,
        retention_days: int,
        dry_run: bool = False,
        step: int = 20_000,
    ) -> tuple[PruneResult, list[Entry]]:
        """Remove the oldest entries (a prefix of the chain) and seal each cut in a checkpoint.

        The cut is the first share dated at or after `before`: it, its outcome and everything
        after it stay (even an older entry that happens to follow it), so no record younger
        than `before` is ever removed. The prefix goes `step` entries per transaction, each
        sealed by its own prune checkpoint, so a running gateway never waits long for the lock.
        """
        earliest = now - timedelta(days=retention_days)
        if before > earliest:
            raise PruneRefused(
                f"records are kept {retention_days} days: prune only before "
                f"{format_ts(earliest)}, not {format_ts(before)}"
            )
        self._open_seqs.clear()  # open shares may go with the prefix: look them up again
        plan = self._plan_prune(format_ts(before), step)
        entries: list[Entry] = []
        last_checkpoint: int | None = None
        for cut_seq, cut_prev in [] if dry_run else plan.cuts:
            self.begin()
            try:
                self._check_cut(cut_seq, cut_prev)
                for sql in _DELETE_BEFORE:
                    self.conn.execute(sql, (cut_seq,))
                checkpoint = self.add_checkpoint(
                    "prune", now, cut_seq=cut_seq, cut_prev_hash=cut_prev
                )
                entries += self.commit(now)
            except BaseException:
                self.rollback()
                raise
            last_checkpoint = checkpoint["seq"]
        result = PruneResult(
            before, plan.final_cut, plan.shares, plan.outcomes, plan.checkpoints, last_checkpoint
        )
        return result, entries

    def _plan_prune(self, before: str, step: int) -> _PrunePlan:
        """Where a prune cuts the chain, after verifying every entry it removes and the first
        it keeps; raises PruneUnverified, having changed nothing, when one does not verify.

        Nothing unverified is trusted: the `ts` column and the index on it only propose the cut,
        a record's sealed date confirms it. Read in one snapshot, not under the write lock,
        which the gateway must not wait for while a long prefix is checked.
        """
        conn = self.conn
        conn.execute("BEGIN")
        try:
            head_seq, head_hash = self._signed_head()
            cut = _scalar(conn, "SELECT MIN(seq) FROM shares WHERE ts >= ?", (before,))
            final_cut = head_seq + 1 if cut is None else int(cut)
            start, prev = self._chain_start()
            counts = {"share": 0, "outcome": 0, "checkpoint": 0}
            cuts: list[tuple[int, str]] = []
            if start >= final_cut:
                return _PrunePlan(final_cut, 0, 0, 0, cuts)
            first = _scalar(conn, _FIRST_SEQ, ())
            if first != start:
                raise _unverified(f"the chain starts at seq {start}, its first entry is {first}")
            boundary = min(final_cut, start + step)
            expected = start
            for seq, kind, row in entries_between(conn, start, final_cut):
                share_id = row[1] if kind != "checkpoint" else None
                where = describe(seq, share_id)
                if seq != expected:
                    found = "two entries have" if seq < expected else "no entry has"
                    raise _unverified(f"{found} seq {min(seq, expected)}")
                try:
                    entry = row_entry(kind, row)
                except ValueError as exc:
                    raise _unverified(f"entry {where} cannot be read: {exc}") from exc
                digest, mac = entry.pop("hash"), entry.pop("mac")
                if entry["prev_hash"] != prev:
                    raise _unverified(f"entry {where} does not follow the entry before it")
                if entry_hash(as_stored(row, entry)) != digest:
                    raise _unverified(f"entry {where} was changed after it was written")
                if not macs_equal(str(mac), entry_mac(self._key, str(digest))):
                    raise _unverified(f"entry {where} is not signed with the log's key")
                if kind == "share" and (entry["ts"] >= before) != (seq == final_cut):
                    # Only an index that does not match its table can propose such a cut.
                    fate = "removed" if seq < final_cut else "the first share kept"
                    raise _unverified(
                        f"the cut by date does not match the records: entry {where}, "
                        f"dated {entry['ts']}, would be {fate}"
                    )
                if seq == boundary:
                    cuts.append((seq, prev))
                    boundary = min(final_cut, seq + step)
                if seq < final_cut:
                    counts[kind] += 1
                expected, prev = seq + 1, str(digest)
            if final_cut <= head_seq:
                if expected != final_cut + 1:
                    raise _unverified(f"no entry has seq {expected}")
            elif (expected, prev) != (head_seq + 1, head_hash):
                raise _unverified(f"the log ends at seq {expected - 1}, not at its signed head")
            else:
                cuts.append((final_cut, prev))  # everything goes: the checkpoint starts the chain
        finally:
            conn.execute("ROLLBACK")
        return _PrunePlan(final_cut, counts["share"], counts["outcome"], counts["checkpoint"], cuts)

    def _chain_start(self) -> tuple[int, str]:
        """Where the chain starts (seq and the hash it links to): after the latest prune."""
        row = self.conn.execute(_LAST_PRUNE).fetchone()
        if row is None:
            return 1, GENESIS_HASH
        seq = int(row[0])
        try:
            entry = row_entry("checkpoint", row)
        except ValueError as exc:
            raise _unverified(f"the prune checkpoint at seq {seq} cannot be read: {exc}") from exc
        digest, mac = entry.pop("hash"), entry.pop("mac")
        if entry_hash(entry) != digest or not macs_equal(
            str(mac), entry_mac(self._key, str(digest))
        ):
            raise _unverified(f"the prune checkpoint at seq {seq} was changed or forged")
        return int(entry["cut_seq"]), str(entry["cut_prev_hash"])

    def _check_cut(self, cut_seq: int, cut_prev: str) -> None:
        """In the step's transaction: the chain is still the one verified for the plan."""
        first = _scalar(self.conn, _FIRST_SEQ, ())
        at_cut = _scalar(self.conn, _PREV_HASH_AT, (cut_seq,))
        if at_cut is None and cut_seq == self._seq + 1:
            at_cut = self._prev  # everything goes: the signed head is what the cut links to
        if first is not None and first >= cut_seq and (at_cut is None or at_cut == cut_prev):
            # The prefix is gone, the chain as verified: another prune took it meanwhile.
            raise PruneUnverified(
                f"the entries before seq {cut_seq} were removed while this prune ran: another "
                "prune ran at the same time (`share-gateway logs verify` checks the chain)"
            )
        if first is None or first >= cut_seq or at_cut != cut_prev:
            raise PruneUnverified(
                f"the share log changed while it was pruned (at seq {cut_seq}): "
                "run `share-gateway logs verify`"
            )

    # -- internals -----------------------------------------------------------------------------

    def _append(self, entry: Entry) -> None:
        self._rows[entry["kind"]].append(entry_row(entry))
        self._entries.append(entry)
        self._seq = entry["seq"]
        self._prev = entry["hash"]

    def _pending_seq(self, share_id: str) -> int | None:
        row = self.conn.execute(_PENDING_SEQ, (share_id,)).fetchone()
        return None if row is None else int(row[0])

    def _signed_head(self) -> tuple[int, str]:
        row = self.conn.execute("SELECT seq, hash, mac FROM head").fetchone()
        if row is None:
            raise LedgerError("the share log has no head: run `share-gateway logs verify`")
        seq, digest, mac = row
        if not macs_equal(str(mac), head_mac(self._key, int(seq), str(digest))):
            raise LedgerError(
                "the share log's head is not signed by this gateway's key: "
                "run `share-gateway logs verify`"
            )
        return int(seq), str(digest)

    def _reset(self) -> None:
        self._rows = {"share": [], "outcome": [], "checkpoint": []}
        self._subjects = []
        self._opened = {}
        self._closed = set()
        self._entries = []

    def _check_opened(self) -> None:
        """Check the head against the tail, then its signature (the first begin() does)."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            self._check_head()
        finally:
            conn.execute("ROLLBACK")
        self.begin()
        self.rollback()
        self.created = self._seq == 0


def create(path: Path, master_key: bytes) -> None:
    """Make a new share log at `path` whole, or nothing (`create_whole`): its schema and
    signed genesis head. The caller holds the log's lock, as the gateway's start does."""

    def build(building: Path) -> None:
        conn = sqlite3.connect(building, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            migrate(conn)
            conn.execute(
                "INSERT INTO head (id, seq, hash, mac, checkpoint_seq) VALUES (1, 0, ?, ?, 0)",
                (GENESIS_HASH, head_mac(seal_key(master_key), 0, GENESIS_HASH)),
            )
        finally:
            conn.close()

    create_whole(path, build)


def _scalar(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def _unverified(problem: str) -> PruneUnverified:
    return PruneUnverified(
        f"the share log does not verify up to the cut, so nothing was pruned: {problem}; "
        "run `share-gateway logs verify`"
    )
