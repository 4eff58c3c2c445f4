"""Reading the share log for people and auditors: query, summary, verify, export (read-only)."""

from __future__ import annotations

import functools
import heapq
import sqlite3
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Literal, NoReturn, TypedDict, Unpack

import orjson

from gateway.sharelog.chain import (
    GENESIS_HASH,
    LIST_FIELDS,
    MAP_FIELDS,
    SHARE_FIELDS,
    Entry,
    EntryKind,
    EntryTally,
    entry_hash,
    entry_mac,
    format_ts,
    head_mac,
    header_mac,
    macs_equal,
    seal_key,
)
from gateway.sharelog.outcomes import OutcomeLinks, describe
from gateway.sharelog.schema import (
    MIGRATIONS,
    as_stored,
    columns,
    connect_ro,
    entries_between,
    row_entry,
    select_sql,
    subject_key,
    user_version,
)

# The order of a share's fields in `query` results (and CSV columns).
QUERY_FIELDS: tuple[str, ...] = (
    "seq",
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
    "outcome",
    "upstream_status",
    "latency_ms",
    "bytes_received",
    "outcome_ts",
    "fields_sent",
    "fields_stripped",
    "fields_transformed",
    "categories_sent",
    "pii_redactions",
    "records",
    "subject_refs",
    "bytes_sent",
    "upstream_location",
    "cross_border_mechanism",
    "consent_basis",
    "prev_hash",
    "hash",
)
_SHARE_SELECT = (
    ", ".join(f"s.{name}" for name in ("seq", *SHARE_FIELDS, "prev_hash", "hash"))
    + ", o.outcome, o.upstream_status, o.latency_ms, o.bytes_received, o.ts"
)
# The latest outcome of each share (a share has one; a second would be a caller's mistake).
_OUTCOME_JOIN = (
    "LEFT JOIN outcomes o ON o.seq = "
    "(SELECT MAX(o2.seq) FROM outcomes o2 WHERE o2.share_seq = s.seq)"
)


class ShareFilters(TypedDict, total=False):
    """The filters `query` and `count` share; each one given narrows the result."""

    partner: str | None
    purpose: str | None
    decision: str | None
    reason: str | None
    caller: str | None
    since: datetime | None  # inclusive
    until: datetime | None  # exclusive
    subject_ref: str | None  # keys.subject_ref(subject_ref_key(master), subject_id)
    share_id: str | None


def _where(**filters: Unpack[ShareFilters]) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("partner", "purpose", "decision", "reason", "caller", "share_id"):
        value = filters.get(column)
        if value is not None:
            clauses.append(f"s.{column} = ?")
            params.append(value)
    since, until = filters.get("since"), filters.get("until")
    subject_ref = filters.get("subject_ref")
    if since is not None:
        clauses.append("s.ts >= ?")
        params.append(format_ts(since))
    if until is not None:
        clauses.append("s.ts < ?")
        params.append(format_ts(until))
    if subject_ref is not None:
        try:
            key = subject_key(subject_ref)
        except ValueError:
            clauses.append("0")  # not a keyed hash: no share can carry it
        else:
            # The side table narrows by 64 bits of the hash; the record itself confirms all 256.
            clauses.append(
                "s.seq IN (SELECT share_seq FROM share_subjects WHERE subject_key = ?)"
                " AND EXISTS (SELECT 1 FROM json_each(s.subject_refs) WHERE value = ?)"
            )
            params += (key, subject_ref)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _share_row(row: Sequence[Any]) -> dict[str, Any]:
    names = ("seq", *SHARE_FIELDS, "prev_hash", "hash")
    if any(isinstance(value, bytes) for value in row):
        # No entry is written with a blob: one there was put there since.
        raise UnreadableEntry(
            f"the share at seq {row[0]!r} holds a value no share is written with: "
            "run `share-gateway logs verify`"
        )
    out: dict[str, Any] = {}
    for name, value in zip(names, row, strict=False):
        if name in LIST_FIELDS or name in MAP_FIELDS:
            try:
                value = orjson.loads(value)
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise UnreadableEntry(
                    f"the share at seq {row[0]} cannot be read ({name} is not JSON): "
                    "run `share-gateway logs verify`"
                ) from exc
        out[name] = value
    outcome, status, latency, received, outcome_ts = row[len(names) :]
    if outcome is None and out["decision"] == "shared":
        outcome = "pending"
    out.update(
        outcome=outcome,
        upstream_status=status,
        latency_ms=latency,
        bytes_received=received,
        outcome_ts=outcome_ts,
    )
    return {name: out[name] for name in QUERY_FIELDS}


def query(
    path: Path,
    *,
    limit: int | None = 100,
    offset: int = 0,
    **filters: Unpack[ShareFilters],
) -> list[dict[str, Any]]:
    """Share records matching every given filter, oldest first, each with its outcome joined.

    `limit=None` returns everything.
    """
    return list(iter_query(path, limit=limit, offset=offset, **filters))


def iter_query(
    path: Path,
    *,
    limit: int | None = 100,
    offset: int = 0,
    **filters: Unpack[ShareFilters],
) -> Iterator[dict[str, Any]]:
    """`query`, one row at a time: an export of millions of records never sits in memory.

    Read a page at a time, each in its own short snapshot, from the records there were when
    it began: a reader that pauses (`| less`) must not keep the log's write-ahead file from
    being reset meanwhile, which one long snapshot would, however long it paused.
    """
    if limit is None or limit > 0:
        yield from iter_page(path, limit=limit, offset=offset, **filters)


def iter_page(
    path: Path,
    *,
    limit: int | None,
    offset: int = 0,
    after: PagePosition | None = None,
    **filters: Unpack[ShareFilters],
) -> Generator[dict[str, Any], None, PagePosition | None]:
    """`iter_query` from where an earlier page ended (`after`), or past its first `offset`
    rows; the generator returns where the next page starts (None after the last row).

    As `page`, a read that continues one before covers the shares there were when its first
    page was read, and raises LogChanged if a prune since then may have taken rows not read
    yet.
    """
    if limit is not None and limit < 1:
        raise ValueError("a page holds at least one row")
    where, params = _where(**filters)
    if after is None:
        with _reader(path) as conn:
            first, top = conn.execute(_ENDS).fetchone()
        if top is None:
            return None
        resume = None
        changed = "the share log was pruned while it was read: run it again"
    else:
        first, top, resume = after.first, after.top, (after.ts, after.seq)
        changed = (
            "the share log was pruned since the first page was read, and rows not read yet "
            "may be gone: start again from the first page"
        )
    remaining, skip = limit, offset
    while True:
        size = _PAGE if remaining is None else min(_PAGE, remaining)
        # The last part of a page asks for one row more: whether a next page exists.
        last = remaining is not None and remaining <= _PAGE
        sql, args = _page_sql(where, params, top, resume, size + 1 if last else size)
        with _reader(path) as conn:
            if resume is not None and _pruned_past(conn, first, resume):
                raise LogChanged(changed)
            rows = conn.execute(f"{sql} OFFSET ?", [*args, skip]).fetchall()
        for row in rows[:size]:
            shared = _share_row(row)
            resume = (shared["ts"], shared["seq"])
            yield shared
        if len(rows) > size and resume is not None:
            return PagePosition(str(resume[0]), int(resume[1]), int(first), int(top))
        if last or len(rows) < size:
            return None
        skip = 0
        if remaining is not None:
            remaining -= size


@dataclass(frozen=True, slots=True)
class PagePosition:
    """Where a paged read stands: after the row (`ts`, `seq`) of a read that began when the
    log's first share was `first` and its last `top`."""

    ts: str
    seq: int
    first: int
    top: int


def page(
    path: Path,
    *,
    limit: int,
    after: PagePosition | None = None,
    **filters: Unpack[ShareFilters],
) -> tuple[list[dict[str, Any]], PagePosition | None]:
    """One page of `query` and where the next one starts (None after the last row).

    A page continues from the sort key of the last row read, not by counting rows: a page
    costs its own rows however deep it is, and rows a prune removed cannot shift it. The read
    covers the shares there were when its first page was read. Raises LogChanged if a prune
    since then may have taken rows not read yet.
    """
    # The admin API's pages hold at most `_PAGE` rows: each is read in one snapshot.
    rows: list[dict[str, Any]] = []
    read = iter_page(path, limit=limit, after=after, **filters)
    while True:
        try:
            rows.append(next(read))
        except StopIteration as end:
            return rows, end.value


def _page_sql(
    where: str, params: list[Any], top: int, after: tuple[str, int] | None, size: int
) -> tuple[str, list[Any]]:
    """The page of rows sorted after `after`, among shares up to seq `top`.

    The row value comparison starts a range scan of the (ts, partner) index, which also
    gives the order, so a page reads its own rows only. The unary `+` keeps the planner
    from walking the primary key up to `top` and sorting everything it finds instead
    (which it chose for a filter on an unindexed column such as `reason`).
    """
    clauses = [where or " WHERE 1", " AND +s.seq <= ?"]
    args = [*params, top]
    if after is not None:
        clauses.append(" AND (s.ts, s.seq) > (?, ?)")
        args += after
    sql = (
        f"SELECT {_SHARE_SELECT} FROM shares s {_OUTCOME_JOIN}{''.join(clauses)}"  # noqa: S608
        " ORDER BY s.ts, s.seq LIMIT ?"
    )
    return sql, [*args, size]


def _pruned_past(conn: sqlite3.Connection, first: int, after: tuple[str, int]) -> bool:
    """Whether `logs prune` may have taken rows sorted after `after` since the read began.

    A prune removes the oldest shares by date, each one older than the first it keeps: only
    when that one sorts after the last row read may rows not read yet be gone, and a silent
    gap is worse than no answer (an access request must be whole).
    """
    kept = conn.execute(_FIRST_SHARE).fetchone()
    if kept is None:
        return True
    seq, ts = int(kept[0]), str(kept[1])
    return seq != first and (ts, seq) > after


_PAGE = 1000
_FIRST_SHARE = "SELECT seq, ts FROM shares ORDER BY seq LIMIT 1"
# Two subqueries: SQLite reads MIN or MAX off the end of the primary key only when a query
# asks for one of them; both in one SELECT scan the whole table (0.1 s per million shares).
_ENDS = "SELECT (SELECT MIN(seq) FROM shares), (SELECT MAX(seq) FROM shares)"


class LogChanged(Exception):
    """The share log lost rows (a prune) while a paged read was going through it."""


def read_counts(
    path: Path, position: PagePosition, **filters: Unpack[ShareFilters]
) -> tuple[int, int]:
    """Of the paged read `position` stands in: how many of its rows sort up to `position`
    (those read), and how many it holds in all. A row a prune took since is in neither."""
    where, params = _where(**filters)
    sql = (
        "SELECT TOTAL((s.ts, s.seq) <= (?, ?)), COUNT(*) FROM shares s"  # noqa: S608 - constants
        f"{where or ' WHERE 1'} AND +s.seq <= ?"
    )
    with _reader(path) as conn:
        read, total = conn.execute(
            sql, [position.ts, position.seq, *params, position.top]
        ).fetchone()
    return int(read), int(total)


def count(path: Path, **filters: Unpack[ShareFilters]) -> int:
    """How many share records `query` would return without a limit."""
    where, params = _where(**filters)
    sql = f"SELECT COUNT(*) FROM shares s{where}"  # noqa: S608 - constants
    with _reader(path) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


# Of a share joined to its latest outcome: it may have reached the partner unless that outcome
# is `error` (no byte left). No outcome yet, `unknown`, `possibly_delivered`, a timeout: in doubt,
# it counts as sent, as it does for the partner's daily cap.
_MAY_HAVE_REACHED = "(o.outcome IS NULL OR o.outcome != 'error')"
_TOTALS = (
    "s.partner, s.decision, s.reason, COUNT(*),"
    f" SUM(s.records) FILTER (WHERE {_MAY_HAVE_REACHED}),"
    f" SUM(s.bytes_sent) FILTER (WHERE {_MAY_HAVE_REACHED})"
    f" FROM shares s {_OUTCOME_JOIN}"
)
_OUTCOMES = f"s.partner, COALESCE(o.outcome, 'pending'), COUNT(*) FROM shares s {_OUTCOME_JOIN}"
# The outcome is joined before the JSON array is walked: looked up once per share, not per item.
_SUBJECTS = (
    f"s.partner, COUNT(DISTINCT j.value) FROM shares s {_OUTCOME_JOIN}, json_each(s.subject_refs) j"
)
_EACH = f"s.partner, j.value, COUNT(*) FROM shares s {_OUTCOME_JOIN}, json_each(s.{{}}) j"


def _ranked(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def records_counted_since(path: Path, since: datetime) -> dict[str, int]:
    """Records per partner that the daily caps count since `since`: shared, and not known to
    have never left (an outcome `error` means no byte reached the partner)."""
    where, params = _where(since=since)
    sql = (
        f"SELECT s.partner, SUM(s.records) FROM shares s {_OUTCOME_JOIN}{where}"  # noqa: S608
        f" AND s.decision = 'shared' AND s.partner IS NOT NULL AND {_MAY_HAVE_REACHED} GROUP BY 1"
    )
    with _reader(path) as conn:
        return {str(partner): int(n or 0) for partner, n in conn.execute(sql, params)}


def sent_by_since(
    path: Path, partner: str, decided_since: datetime, sent_since: datetime
) -> list[str | None]:
    """For the shares to `partner` decided since `decided_since` that may have reached it since
    `sent_since`: when each one's outcome was recorded (None: it has none yet). An outcome is
    recorded once its share went out, so that is the latest it can have reached the partner;
    a share that never left (outcome `error`) is not listed."""
    where, params = _where(partner=partner, decision="shared", since=decided_since)
    sql = (
        f"SELECT o.ts FROM shares s {_OUTCOME_JOIN}{where}"  # noqa: S608
        " AND (o.outcome IS NULL OR (o.outcome != 'error' AND o.ts >= ?))"
    )
    with _reader(path) as conn:
        return [ts for (ts,) in conn.execute(sql, (*params, format_ts(sent_since)))]


def summary(
    *paths: Path, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Per partner over a window: shares, denials by reason, outcomes, and what may have reached
    the partner (records, subjects, bytes, categories and fields of the shares whose outcome is
    not `error`).

    Several logs (a fleet's sidecars) are summed as if they were one log. Partners are sorted
    by id; records whose partner was never resolved (e.g. an unknown partner id) come last with
    `partner: None`.
    """
    total = Summary(since, until, logs=len(paths))
    for path in paths:
        total.add(path)
    return total.rows()


class Summary:
    """The counts of `summary`, added up one log at a time: each log is read in a snapshot of
    its own, and a log that cannot be read is known by the `add` that read it."""

    def __init__(self, since: datetime | None, until: datetime | None, *, logs: int) -> None:
        self._where, self._params = _where(since=since, until=until)
        self._by_partner: dict[str | None, dict[str, Any]] = {}
        self._stripped: dict[str | None, dict[str, int]] = {}
        # Over several logs a person shared with by two sidecars is one subject, as in one
        # log: their references are kept, not a count per log (one log keeps to the count).
        self._subject_refs: dict[str | None, set[str]] | None = {} if logs > 1 else None

    def _partner_row(self, partner: str | None) -> dict[str, Any]:
        if partner not in self._by_partner:
            self._by_partner[partner] = {
                "partner": partner,
                "shares": 0,
                "records": 0,
                "subjects": 0,
                "bytes_sent": 0,
                "denied": 0,
                "errors": 0,
                "denials": {},
                "errors_by_reason": {},
                "outcomes": {},
                "categories_sent": {},
                "fields_sent": {},
                "top_fields_stripped": [],
            }
        return self._by_partner[partner]

    def add(self, path: Path) -> None:
        """Count the log at `path` in."""
        where, params = self._where, self._params
        shared = f"{where} {'AND' if where else 'WHERE'} s.decision = 'shared'"
        # What the partner may have received: `shares` and `outcomes` still count every share,
        # so those that never left show as their `error` outcomes.
        reached = f"{shared} AND {_MAY_HAVE_REACHED}"
        # Only constant SQL fragments are interpolated below; values travel as parameters.
        totals = f"SELECT {_TOTALS}{where} GROUP BY 1, 2, 3"
        outcomes = f"SELECT {_OUTCOMES}{shared} GROUP BY 1, 2"
        subjects = f"SELECT {_SUBJECTS}{reached} GROUP BY 1"
        each_subject = f"SELECT {_EACH.format('subject_refs')}{reached} GROUP BY 1, 2"
        # What the contract kept back, whether or not the rest then reached the partner.
        stripped_sql = f"SELECT {_EACH.format('fields_stripped')}{shared} GROUP BY 1, 2"
        with _reader(path) as conn:
            for partner, decision, reason, n, records, sent in conn.execute(totals, params):
                row = self._partner_row(partner)
                if decision == "shared":
                    row["shares"] += n
                    row["records"] += records or 0
                    row["bytes_sent"] += sent or 0
                elif decision == "denied":
                    row["denied"] += n
                    row["denials"][reason] = row["denials"].get(reason, 0) + n
                else:
                    row["errors"] += n
                    row["errors_by_reason"][reason] = row["errors_by_reason"].get(reason, 0) + n
            for column in ("categories_sent", "fields_sent"):
                sent_sql = f"SELECT {_EACH.format(column)}{reached} GROUP BY 1, 2"
                for partner, value, n in conn.execute(sent_sql, params):
                    counts = self._partner_row(partner)[column]
                    counts[str(value)] = counts.get(str(value), 0) + n
            # Whole counts, ranked only once every log is in: a field each log strips less
            # often than its own top 10 may be among the top 10 of them all.
            for partner, value, n in conn.execute(stripped_sql, params):
                counts = self._stripped.setdefault(partner, {})
                counts[str(value)] = counts.get(str(value), 0) + n
            for partner, outcome, n in conn.execute(outcomes, params):
                counts = self._partner_row(partner)["outcomes"]
                counts[outcome] = counts.get(outcome, 0) + n
            if self._subject_refs is None:
                for partner, n in conn.execute(subjects, params):
                    self._partner_row(partner)["subjects"] = n
            else:
                for partner, value, _ in conn.execute(each_subject, params):
                    self._subject_refs.setdefault(partner, set()).add(str(value))

    def rows(self) -> list[dict[str, Any]]:
        """The summary of the logs added, as `summary` returns it."""
        for partner, counts in self._stripped.items():
            self._partner_row(partner)["top_fields_stripped"] = [
                {"field": field, "count": n} for field, n in list(_ranked(counts).items())[:10]
            ]
        for partner, refs in (self._subject_refs or {}).items():
            self._partner_row(partner)["subjects"] = len(refs)
        rows = []
        for partner in sorted(self._by_partner, key=lambda p: (p is None, p or "")):
            row = self._by_partner[partner]
            for key in (
                "denials",
                "errors_by_reason",
                "outcomes",
                "categories_sent",
                "fields_sent",
            ):
                row[key] = _ranked(row[key])
            rows.append(row)
        return rows


# -- verify ----------------------------------------------------------------------------------

ProblemKind = Literal[
    "changed",
    "forged",
    "removed",
    "reordered",
    "inserted",
    "truncated",
    "unreadable",
    "head",
    "key",
    "index",
    "outcome",
    "schema",
    "integrity",
    "rolled_back",
    "checkpoint_line",
]


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """The first thing wrong with the log; `seq`/`share_id` name the record where it shows."""

    kind: ProblemKind
    seq: int | None
    share_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """A checkpoint as the gateway printed it (`share_log_checkpointed`): signed, and kept
    outside the file, it shows how far the log had reached and what it held there."""

    seq: int
    hash: str
    ts: str
    line: int  # its line in the file it was read from


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    compared: int  # checkpoint lines whose entry the log holds, and matched
    before_start: int  # lines for entries a prune removed since: nothing left to compare
    latest: Anchor

    def to_json(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "before_start": self.before_start,
            "latest_seq": self.latest.seq,
            "latest_ts": self.latest.ts,
        }


class CheckpointLineError(Exception):
    """A line that names a checkpoint but is not one this log's gateway printed."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


_CHECKPOINT_EVENT: Final = "share_log_checkpointed"
_CHECKPOINT_MARK: Final = b'"share_log_checkpointed"'
# A checkpoint entry's fields besides `kind`, as `checkpoint_entry` makes them: the line printed
# for it has them too, with `hash`, `mac` and the logger's own (`event`, `level`, `timestamp`).
_CHECKPOINT_FIELDS: Final = ("seq", "prev_hash", "ts", "reason", "cut_seq", "cut_prev_hash")


def read_anchors(lines: Iterable[bytes], master_key: bytes) -> list[Anchor]:
    """The checkpoints among a gateway's JSON lines (its stdout, as kept), in file order.

    Other lines are passed over. A line that names the checkpoint event but is not a whole JSON
    line, lacks a field, or does not carry the seal of this key raises `CheckpointLineError`:
    an anchor that cannot be trusted must not be passed over in silence.
    """
    key = seal_key(master_key)
    anchors: list[Anchor] = []
    for number, line in enumerate(lines, 1):
        if _CHECKPOINT_MARK not in line:
            continue
        try:
            fields = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise CheckpointLineError(
                number, f"names {_CHECKPOINT_EVENT} but is not a whole JSON line"
            ) from None
        if not isinstance(fields, dict) or fields.get("event") != _CHECKPOINT_EVENT:
            continue  # another event that only mentions it
        try:
            entry = {"kind": "checkpoint", **{name: fields[name] for name in _CHECKPOINT_FIELDS}}
            seq, digest, mac, ts = fields["seq"], fields["hash"], fields["mac"], fields["ts"]
        except KeyError as exc:
            raise CheckpointLineError(number, f"a checkpoint line without {exc}") from None
        if type(seq) is not int or not all(isinstance(v, str) for v in (digest, mac, ts)):
            raise CheckpointLineError(number, "a checkpoint line with a field of the wrong type")
        if entry_hash(entry) != digest or not macs_equal(mac, entry_mac(key, digest)):
            raise CheckpointLineError(
                number,
                f"checkpoint seq {seq} is not signed with this key: the line was changed, "
                "or it is another gateway's",
            )
        anchors.append(Anchor(seq, digest, ts, number))
    return anchors


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int
    shares: int
    outcomes: int
    checkpoints: int
    first_seq: int | None
    last_seq: int | None
    head_seq: int | None
    problem: VerifyProblem | None
    # With checkpoint lines to compare: how many were, and the latest of them.
    anchors: AnchorCheck | None = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "ok": self.ok,
            "entries": self.entries,
            "shares": self.shares,
            "outcomes": self.outcomes,
            "checkpoints": self.checkpoints,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_seq": self.head_seq,
            "problem": None
            if self.problem is None
            else {
                "kind": self.problem.kind,
                "seq": self.problem.seq,
                "share_id": self.problem.share_id,
                "message": self.problem.message,
            },
        }
        if self.anchors is not None:
            result["checkpoint_lines"] = self.anchors.to_json()
        return result


class _Failed(Exception):
    def __init__(self, problem: VerifyProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _merged_entries(conn: sqlite3.Connection) -> Iterator[tuple[int, EntryKind, Any]]:
    def stream(kind: EntryKind) -> Iterator[tuple[int, EntryKind, Any]]:
        for row in conn.execute(f"{select_sql(kind)} ORDER BY seq"):
            yield int(row[0]), kind, row

    return heapq.merge(
        stream("share"), stream("outcome"), stream("checkpoint"), key=lambda item: item[0]
    )


def _seq_of_hash(conn: sqlite3.Connection, digest: str) -> int | None:
    row = conn.execute(
        "SELECT seq FROM shares WHERE hash = ?1 UNION ALL SELECT seq FROM outcomes WHERE hash = ?1"
        " UNION ALL SELECT seq FROM checkpoints WHERE hash = ?1 LIMIT 1",
        (digest,),
    ).fetchone()
    return None if row is None else int(row[0])


class _LogEntries:
    """The log's entries, looked up by seq in the walk's snapshot."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def share_at(self, seq: int) -> tuple[str, str] | None:
        row = self.conn.execute(
            "SELECT share_id, decision FROM shares WHERE seq = ?", (seq,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def first_outcome_of(self, share_seq: int, before: int) -> int | None:
        row = self.conn.execute(
            "SELECT MIN(seq) FROM outcomes WHERE share_seq = ? AND seq < ?", (share_seq, before)
        ).fetchone()
        return None if row[0] is None else int(row[0])


# An object of the file's schema: (type, name) -> (the table it belongs to, its SQL).
_SchemaObjects = dict[tuple[str, str], tuple[str, str | None]]
_SCHEMA_SQL = "SELECT type, name, tbl_name, sql FROM sqlite_master"


@functools.cache
def _gateway_schema(version: int) -> tuple[_SchemaObjects, _SchemaObjects]:
    """What the gateway's migrations up to `version` create, and what SQLite may add itself.

    The second part is SQLite's statistics tables (`ANALYZE`), which steer the query planner
    but never change what a read returns.
    """
    conn = sqlite3.connect(":memory:")
    try:
        for statements in MIGRATIONS[:version]:
            for statement in statements:
                conn.execute(statement)
        created = _schema_objects(conn)
        conn.execute("ANALYZE")
        analyzed = _schema_objects(conn)
    finally:
        conn.close()
    optional = {key: value for key, value in analyzed.items() if key not in created}
    return created, optional


def _schema_objects(conn: sqlite3.Connection) -> _SchemaObjects:
    return {
        (str(kind), str(name)): (str(table), None if sql is None else str(sql))
        for kind, name, table, sql in conn.execute(_SCHEMA_SQL)
    }


def _schema_differences(conn: sqlite3.Connection) -> list[str]:
    """How the file's tables, indexes, views and triggers differ from the gateway's own."""
    created, optional = _gateway_schema(user_version(conn))
    found = _schema_objects(conn)
    problems: list[tuple[str, str]] = []
    for key in sorted(found.keys() | created.keys(), key=lambda k: (k[1], k[0])):
        kind, name = key
        if key not in found:
            problems.append((name, f"the {kind} {name} the gateway creates is missing"))
        elif key in created:
            if found[key] != created[key]:
                problems.append(
                    (name, f"the {kind} {name} is not as the gateway creates it (its SQL differs)")
                )
        elif found[key] != optional.get(key):
            table = found[key][0]
            on = f" on {table}" if table != name else ""
            problems.append(
                (name, f"the file holds a {kind} {name}{on} that the gateway does not create")
            )
    return [message for _, message in problems]


class _Verifier(EntryTally):
    def __init__(
        self, conn: sqlite3.Connection, master_key: bytes, anchors: Sequence[Anchor] = ()
    ) -> None:
        self.conn = conn
        self.key = seal_key(master_key)
        self.given_anchors = anchors
        self.anchors: dict[int, Anchor] = {}
        self.anchor_check: AnchorCheck | None = None
        super().__init__()
        self.head_seq: int | None = None
        self.last_checkpoint = 0  # the seq of the last checkpoint entry; 0 when there is none
        self.start = 1  # the seq the chain starts at
        self.links = OutcomeLinks(_LogEntries(conn), self._outcome_failed)

    def fail(self, kind: ProblemKind, seq: int | None, share_id: str | None, msg: str) -> NoReturn:
        raise _Failed(VerifyProblem(kind, seq, share_id, msg))

    def _outcome_failed(self, seq: int, share_id: str, msg: str) -> NoReturn:
        self.fail("outcome", seq, share_id, msg)

    def run(self) -> VerifyResult:
        try:
            self._check()
        except _Failed as failed:
            return self._result(failed.problem)
        except sqlite3.DatabaseError as exc:  # a damaged file or a dropped table
            # Rows are read ahead, from three tables at once: the failing one is found by name.
            where = _first_undecodable(self.conn)
            message = f"the share log cannot be read: {exc}"
            return self._result(VerifyProblem("unreadable", where, None, message))
        return self._result(None)

    def _result(self, problem: VerifyProblem | None) -> VerifyResult:
        return VerifyResult(
            ok=problem is None,
            entries=self.entries,
            shares=self.shares,
            outcomes=self.outcomes,
            checkpoints=self.checkpoints,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            head_seq=self.head_seq,
            problem=problem,
            anchors=self.anchor_check if problem is None else None,
        )

    def _sealed(self, entry: Entry, row: Sequence[Any] | None = None) -> tuple[bool, bool]:
        """(content matches the stored hash, stored hash carries a valid mac).

        With the entry's `row`, the content is its JSON columns' stored text, not the value it
        parses to: the review commands read that text (SQL's JSON functions), so it must be the
        very text the gateway wrote and hashed, not one that only parses alike.
        """
        digest, mac = entry.pop("hash"), entry.pop("mac")
        if not isinstance(digest, str) or not isinstance(mac, str):
            return False, False
        hashed = entry if row is None else as_stored(row, entry)
        return entry_hash(hashed) == digest, macs_equal(mac, entry_mac(self.key, digest))

    def _signed(self, kind: EntryKind, row: Any) -> bool:
        try:
            return self._sealed(row_entry(kind, row))[1]
        except ValueError:
            return False

    def _head(self) -> tuple[int, str, str, int]:
        """The signed head: seq, hash, mac and the seq it names as the last checkpoint."""
        heads = self.conn.execute(
            "SELECT seq, hash, mac, checkpoint_seq, typeof(seq), typeof(checkpoint_seq) FROM head"
        ).fetchall()
        if not heads:
            first = next(_merged_entries(self.conn), None)
            # A gateway writes the head as it first opens the log, so no log is without one.
            self.fail(
                "head",
                None,
                None,
                "the log has entries but no signed head"
                if first is not None
                else "the log has no signed head and no entries: both were removed",
            )
        if len(heads) > 1:
            self.fail("head", None, None, f"the log has {len(heads)} heads; it has one")
        seq, digest, mac, checkpoint_seq, seq_type, checkpoint_type = heads[0]
        if (seq_type, checkpoint_type) != ("integer", "integer"):
            self.fail("head", None, None, "the head (last seq and hash) was altered")
        return int(seq), str(digest), str(mac), int(checkpoint_seq)

    def _check(self) -> None:
        self._index_anchors()
        conn = self.conn
        head_seq, head_hash, mac, head_checkpoint = self._head()
        self.head_seq = head_seq
        first = next(_merged_entries(conn), None)
        head_signed = macs_equal(mac, head_mac(self.key, head_seq, head_hash))
        if not head_signed and (first is None or not self._signed(first[1], first[2])):
            self.fail(
                "key",
                None,
                None,
                "neither the head nor the first entry is signed with this key: "
                "is this the gateway's hash key?",
            )
        # Before the records: an index, view or trigger that is not the gateway's own changes
        # what every other command reads (or, a trigger, what the gateway writes), while the
        # walk below reads the tables themselves.
        differences = _schema_differences(conn)
        if differences:
            more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
            self.fail("schema", None, None, differences[0] + more)
        # An index that no longer holds every row of its table (rebuilt partial, its SQL put
        # back) is found only here: the walk reads the tables in seq order, not the indexes.
        report = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        if report != ["ok"]:
            more = f" (and {len(report) - 1} more)" if len(report) > 1 else ""
            self.fail(
                "integrity",
                None,
                None,
                f"SQLite's integrity check of the file fails: {report[0]}{more}; "
                "a query through a damaged index misses records or finds ones that are not there",
            )

        expected, prev = self._start()
        self.start = expected
        # Read off the index on share_seq, in the walk's snapshot.
        unlinked = conn.execute("SELECT share_id FROM outcomes WHERE share_seq IS NULL")
        self.links.begin(expected, {str(share_id) for (share_id,) in unlinked})
        subjects = _Peekable(
            conn.execute(
                "SELECT share_seq, subject_key, typeof(share_seq) || ' ' || typeof(subject_key)"
                " FROM share_subjects ORDER BY share_seq, subject_key"
            )
        )
        last: tuple[int, str | None] | None = None
        for seq, kind, row in _merged_entries(conn):
            share_id = row[1] if kind != "checkpoint" else None
            where = describe(seq, share_id)
            if last is not None and seq == last[0]:
                self.fail("inserted", seq, share_id, f"two entries have seq {seq}")
            if seq < expected:
                self.fail(
                    "inserted",
                    seq,
                    share_id,
                    f"entry {where} lies before the start of the chain (seq {expected})",
                )
            if seq > expected:
                after = f", after {describe(*last)}" if last else ""
                missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}-{seq - 1}"
                self.fail(
                    "removed",
                    expected,
                    None,
                    f"entry {missing} is missing (removed){after}; the next entry is {where}",
                )
            try:
                entry = row_entry(kind, row)
            except ValueError as exc:
                self.fail("unreadable", seq, share_id, f"entry {where} cannot be read: {exc}")
            stored_hash = entry["hash"]
            if entry["prev_hash"] != prev:
                belongs = _seq_of_hash(conn, str(entry["prev_hash"]))
                if belongs is not None and belongs != seq - 1:
                    self.fail(
                        "reordered",
                        seq,
                        share_id,
                        f"entry {where} is out of order: it belongs after the entry now at "
                        f"seq {belongs}",
                    )
                self.fail(
                    "removed",
                    seq,
                    share_id,
                    f"entry {where} does not follow the entry before it: an entry between "
                    "them was removed (and the rest renumbered), or its link was changed",
                )
            content_ok, mac_ok = self._sealed(entry, row if kind == "share" else None)
            if not content_ok:
                self.fail(
                    "changed",
                    seq,
                    share_id,
                    f"entry {where} was changed after it was written "
                    f"({_what_changed(row, entry, stored_hash)})",
                )
            if not mac_ok:
                self.fail(
                    "forged",
                    seq,
                    share_id,
                    f"entry {where} was rewritten and its hash re-forged "
                    "(the hash is not signed with the log's key)",
                )
            anchor = self.anchors.get(seq)
            if anchor is not None and anchor.hash != stored_hash:
                self.fail(
                    "rolled_back",
                    seq,
                    share_id,
                    f"entry {where} is not the checkpoint that line {anchor.line} shows at seq "
                    f"{seq} ({anchor.ts}): the log was put back to an older copy and written on",
                )
            if kind == "share":
                self._check_subjects(subjects, seq, share_id, entry["subject_refs"])
                if entry["decision"] == "shared":
                    self.links.shared(seq, str(share_id))
            elif kind == "outcome":
                self.links.outcome(seq, str(share_id), entry["share_seq"])
            else:
                self.last_checkpoint = seq
                self.links.checkpoint(seq, str(entry["reason"]))
            self._count(kind, seq)
            last = (seq, share_id)
            expected, prev = seq + 1, str(stored_hash)

        end = describe(*last) if last else "its start"
        if not head_signed:
            # Reported after the walk: a changed record, if any, is the first broken one.
            self.fail("head", head_seq, None, "the head (last seq and hash) was altered")
        if (last[0] if last else 0) < head_seq:
            self.fail(
                "truncated",
                expected,
                None,
                f"the log ends at {end} but its signed head is at seq {head_seq}: "
                f"the entries from seq {expected} on were removed",
            )
        if last is not None and (last[0], prev) != (head_seq, head_hash):
            self.fail(
                "head",
                last[0],
                last[1],
                f"the log ends at {end}, which is not its signed head (seq {head_seq})",
            )
        if head_checkpoint != self.last_checkpoint:
            # Not covered by the head's seal; a gateway takes it from the chain, but a head that
            # disagrees with the chain was edited.
            at = f"seq {self.last_checkpoint}" if self.last_checkpoint else "none"
            self.fail(
                "head",
                None,
                None,
                f"the head names seq {head_checkpoint} as the last checkpoint, but the last "
                f"checkpoint of the log is {at}: the head was altered",
            )
        leftover = subjects.peek()
        if leftover is not None:
            if leftover[2] != _INTEGERS:
                self._mistyped_subject(leftover, None)
            self.fail(
                "index",
                int(leftover[0]),
                None,
                f"the subject index lists seq {leftover[0]}, which is not a share",
            )
        if self.anchors:
            self._reached_anchors(last[0] if last else self.start - 1, end)

    def _index_anchors(self) -> None:
        for anchor in self.given_anchors:
            seen = self.anchors.setdefault(anchor.seq, anchor)
            if seen.hash != anchor.hash:
                # Both signed with the log's key: the gateway wrote two entries at one seq.
                self.fail(
                    "rolled_back",
                    anchor.seq,
                    None,
                    f"checkpoint lines {seen.line} ({seen.ts}) and {anchor.line} ({anchor.ts}) "
                    f"show two different entries at seq {anchor.seq}: the log was put back to "
                    "an older copy and written on in between",
                )

    def _reached_anchors(self, last_seq: int, end: str) -> None:
        """The log must reach every checkpoint it printed; those a prune removed since are
        not there to compare."""
        latest = max(self.anchors.values(), key=lambda anchor: anchor.seq)
        if latest.seq > last_seq:
            self.fail(
                "rolled_back",
                None,
                None,
                f"the log ends at {end}, but checkpoint line {latest.line} shows it had reached "
                f"seq {latest.seq} ({latest.ts}): the log was put back to an older copy",
            )
        before = sum(1 for seq in self.anchors if seq < self.start)
        self.anchor_check = AnchorCheck(len(self.anchors) - before, before, latest)

    def _start(self) -> tuple[int, str]:
        """Where the chain starts: seq 1, or the cut of the latest (verified) prune checkpoint."""
        cols = columns("checkpoint")
        row = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM checkpoints"  # noqa: S608 - constants
            " WHERE reason = 'prune' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return 1, GENESIS_HASH
        seq = int(row[0])
        try:
            entry = row_entry("checkpoint", row)
        except ValueError as exc:
            where = f"the prune checkpoint at seq {seq}"
            self.fail("unreadable", seq, None, f"{where} cannot be read: {exc}")
        content_ok, mac_ok = self._sealed(entry)
        if not content_ok:
            self.fail("changed", seq, None, f"the prune checkpoint at seq {seq} was changed")
        if not mac_ok:
            self.fail("forged", seq, None, f"the prune checkpoint at seq {seq} was forged")
        return int(entry["cut_seq"]), str(entry["cut_prev_hash"])

    def _mistyped_subject(self, row: Sequence[Any], share_id: str | None) -> NoReturn:
        # `logs subject` compares the stored values as they are: a key kept as text or a blob
        # of the same digits (which Python's int() would read as the number) matches nothing.
        seq_type, key_type = str(row[2]).split(" ")
        column, value, stored = (
            ("seq", row[0], seq_type)
            if seq_type != "integer"
            else ("subject key", row[1], key_type)
        )
        self.fail(
            "index",
            row[0] if seq_type == "integer" else None,
            share_id,
            f"the subject index holds a {column} stored as {stored} ({value!r}) where "
            "the gateway writes an integer: a lookup by subject would miss that share",
        )

    def _check_subjects(
        self, subjects: _Peekable, seq: int, share_id: str | None, refs: list[str]
    ) -> None:
        try:
            want = sorted({subject_key(ref) for ref in refs})
        except (ValueError, TypeError):
            self.fail("unreadable", seq, share_id, f"a subject_ref of {describe(seq, share_id)}")
        have: list[int] = []
        while (row := subjects.peek()) is not None:
            if row[2] != _INTEGERS and not (row[2].startswith("integer ") and row[0] > seq):
                self._mistyped_subject(row, share_id if row[0] == seq else None)
            if row[0] > seq:
                break  # a later share's
            subjects.next()
            if row[0] < seq:
                self.fail(
                    "index",
                    row[0],
                    None,
                    f"the subject index lists seq {row[0]}, which is not a share",
                )
            have.append(row[1])
        if have != want:
            self.fail(
                "index",
                seq,
                share_id,
                f"the subject index of {describe(seq, share_id)} does not match its record",
            )


def _what_changed(row: Sequence[Any], entry: Entry, stored_hash: object) -> str:
    if entry_hash(entry) == stored_hash:  # the values are the ones hashed, one text is not
        for name, text in zip(columns(entry["kind"]), row, strict=False):
            if (name in LIST_FIELDS or name in MAP_FIELDS) and text != orjson.dumps(
                entry[name], option=orjson.OPT_SORT_KEYS
            ).decode():
                return f"its {name} is not the JSON text the gateway wrote"
    return "its content no longer matches its hash"


_INTEGERS = "integer integer"  # the types of a subject index row's seq and key


class _Peekable:
    def __init__(self, rows: Iterator[Any]) -> None:
        self._rows = rows
        self._next: Any = next(rows, None)

    def peek(self) -> Any:
        return self._next

    def next(self) -> Any:
        row, self._next = self._next, next(self._rows, None)
        return row


def verify(path: Path, master_key: bytes, anchors: Sequence[Anchor] = ()) -> VerifyResult:
    """Check the file's schema and integrity, then every entry's hash, link and seal, each
    outcome's link to its share, the signed head, and the subject index.

    With `anchors` (`read_anchors`), the log must also still hold each checkpoint its gateway
    printed, unless a prune removed it since, and reach the latest: a copy of the file put
    back verifies against itself, but not against what was printed after it was taken.
    """
    with _reader(path) as conn:
        return _Verifier(conn, master_key, anchors).run()


# -- export ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportResult:
    entries: int
    first_seq: int | None
    last_seq: int | None


class UnreadableEntry(Exception):
    """An entry holds what no entry is written with: the log was damaged or altered."""


class BrokenChain(UnreadableEntry):
    """An entry to export does not match its hash, its link or its seal, or the head does not
    match the chain: what `logs verify` would fail."""


def export(
    path: Path,
    since: datetime | None,
    until: datetime | None,
    out: IO[str],
    master_key: bytes | None = None,
) -> ExportResult:
    """Write the entries covering a window as JSON lines, with the evidence to check them.

    The lines are a contiguous run of the chain: from the first share at or after `since` to
    the last share before `until`, plus the outcomes of those shares, and every entry in between
    (checkpoints included). Each entry line is the stored entry with its `hash` and `mac`; a
    header line (`kind: export`) states how to recompute a hash and where the run ends
    (`to_seq`, `to_hash`), sealed with `master_key` (`mac`, else null), and a last line
    (`kind: head`) carries the log's signed head at the time of export.

    The run is checked before a line is written (`BrokenChain`, `UnreadableEntry`): each hash
    against its entry, each link against the entry before it, the head against the last entry,
    and with `master_key` every seal. An auditor must never be handed a damaged log as sound.
    """
    with _reader(path) as conn:
        lo = _share_seq(conn, "MIN", since=since) if since is not None else _end_seq(conn, "MIN")
        if until is None:
            hi = _end_seq(conn, "MAX")
        else:
            hi = _share_seq(conn, "MAX", until=until)
            if lo is not None and hi is not None:
                linked = conn.execute(
                    "SELECT MAX(seq) FROM outcomes WHERE share_seq BETWEEN ? AND ?", (lo, hi)
                ).fetchone()[0]
                hi = hi if linked is None else max(hi, int(linked))
        head = conn.execute("SELECT seq, hash, mac FROM head").fetchone()
        run = (lo, hi) if lo is not None and hi is not None and lo <= hi else None
        # A first pass over the same snapshot, so that nothing is written of a run that fails
        # (a stream cannot take back what it was given), without holding the run in memory.
        checker = _ExportCheck(conn, master_key, head, whole=until is None)
        to_hash = checker.run(run)
        header: Entry = {
            "kind": "export",
            "exported_at": format_ts(datetime.now(UTC)),
            "since": None if since is None else format_ts(since),
            "until": None if until is None else format_ts(until),
            "from_seq": lo,
            "to_seq": hi,
            "hash_rule": (
                "hash = SHA-256 (hex) of the entry without `hash` and `mac`, serialised as "
                "compact JSON with sorted keys in UTF-8; prev_hash = hash of the entry before"
            ),
            "to_hash": to_hash,
        }
        # Sealed, the header's end (`to_seq`, `to_hash`) shows lines cut from a window's end,
        # which the head, past the window, cannot.
        header["mac"] = None if checker.key is None else header_mac(checker.key, header)
        out.write(orjson.dumps(header, option=orjson.OPT_SORT_KEYS).decode() + "\n")
        written = 0
        first = last = None
        if run is not None:
            for seq, kind, row in entries_between(conn, *run):
                entry = _exported_entry(seq, kind, row)
                out.write(orjson.dumps(entry, option=orjson.OPT_SORT_KEYS).decode() + "\n")
                written += 1
                first = seq if first is None else first
                last = seq
        if head is not None:
            line = {"kind": "head", "seq": head[0], "hash": head[1], "mac": head[2]}
            out.write(orjson.dumps(line, option=orjson.OPT_SORT_KEYS).decode() + "\n")
    return ExportResult(written, first, last)


def _exported_entry(seq: int, kind: EntryKind, row: Sequence[Any]) -> Entry:
    try:
        return row_entry(kind, row)
    except ValueError as exc:
        raise UnreadableEntry(
            f"entry seq {seq} cannot be read ({exc}): run `share-gateway logs verify`"
        ) from exc


_RUN_VERIFY: Final = "run `share-gateway logs verify`"


class _ExportCheck:
    """The run an export is about to write, checked as `logs verify` checks it: hashes, links,
    seals with the key, and the signed head."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        master_key: bytes | None,
        head: Sequence[Any] | None,
        *,
        whole: bool,
    ) -> None:
        self.conn = conn
        self.key = None if master_key is None else seal_key(master_key)
        self.head = head
        self.whole = whole  # a run to the log's end must reach the signed head

    def fail(self, message: str) -> NoReturn:
        raise BrokenChain(f"{message}: {_RUN_VERIFY}")

    def run(self, run: tuple[int, int] | None) -> str | None:
        """The hash of the run's last entry, once the run checks out; None for no entry."""
        head_seq, head_hash, head_signed = self._head()
        if not head_signed and (run is None or not self._first_signed(run[0])):
            self.fail(
                "neither the log's signed head nor the first entry exported is signed with this "
                "hash key: is it the gateway's?"
            )
        prev: str | None = None
        last = 0
        if run is not None:
            lo, hi = run
            prev = self._link_before(lo)
            expected = lo
            for seq, kind, row in entries_between(self.conn, lo, hi):
                share_id = row[1] if kind != "checkpoint" else None
                where = describe(seq, share_id)
                if seq < expected:
                    self.fail(f"entry {where} is a second entry at seq {seq}")
                if seq > expected:
                    self.fail(f"entry seq {expected} is missing (removed); the next is {where}")
                prev = self._check_entry(where, _exported_entry(seq, kind, row), row, prev)
                expected, last = seq + 1, seq
        if not head_signed:
            # After the entries, as `logs verify` says it: a changed entry is the first broken.
            self.fail(f"the log's signed head (seq {head_seq}) was altered")
        if last > head_seq:
            self.fail(f"entry seq {head_seq + 1} lies past the log's signed head (seq {head_seq})")
        if self.whole and run is not None and last < head_seq:
            self.fail(
                f"the log ends at seq {last}, but its signed head is at seq {head_seq}: the "
                f"entries from seq {last + 1} on were removed"
            )
        if last == head_seq and run is not None and prev != head_hash:
            self.fail(f"entry seq {last} is not the log's signed head (seq {head_seq})")
        return prev if last else None

    def _head(self) -> tuple[int, str, bool]:
        """The signed head: seq, hash, and whether its seal holds (True without the key)."""
        if self.head is None:
            # A gateway writes the head as it first opens the log, so no log is without one.
            self.fail("the log has no signed head")
        seq, digest, mac = self.head
        if type(seq) is not int or not isinstance(digest, str) or not isinstance(mac, str):
            self.fail("the log's signed head was altered")
        signed = self.key is None or macs_equal(mac, head_mac(self.key, seq, digest))
        return seq, digest, signed

    def _first_signed(self, seq: int) -> bool:
        for _, kind, row in entries_between(self.conn, seq, seq):
            try:
                entry = row_entry(kind, row)
            except ValueError:
                return False
            digest = entry["hash"]
            return (
                self.key is not None
                and isinstance(digest, str)
                and isinstance(entry["mac"], str)
                and macs_equal(entry["mac"], entry_mac(self.key, digest))
            )
        return False

    def _link_before(self, lo: int) -> str | None:
        """The hash the run's first entry must link to: the entry before it, where the log
        still holds it; None where a prune took it (the prune checkpoint names it, and `logs
        verify` checks that)."""
        if lo == 1:
            return GENESIS_HASH
        row = self.conn.execute(
            "SELECT hash FROM shares WHERE seq = ?1 UNION ALL SELECT hash FROM outcomes"
            " WHERE seq = ?1 UNION ALL SELECT hash FROM checkpoints WHERE seq = ?1",
            (lo - 1,),
        ).fetchall()
        if not row:
            return None
        if len(row) > 1:
            self.fail(f"entry seq {lo - 1}, the one before the first exported, is held twice")
        return str(row[0][0])

    def _check_entry(self, where: str, entry: Entry, row: Sequence[Any], prev: str | None) -> str:
        digest, mac = entry.pop("hash"), entry.pop("mac")
        if not isinstance(digest, str) or not isinstance(mac, str):
            self.fail(f"entry {where} was changed after it was written (its hash or mac)")
        if entry_hash(as_stored(row, entry)) != digest:
            self.fail(
                f"entry {where} was changed after it was written "
                f"({_what_changed(row, entry, digest)})"
            )
        if prev is not None and entry["prev_hash"] != prev:
            self.fail(
                f"entry {where} does not follow the entry before it (its prev_hash is not the "
                "hash of the entry before it): an entry was removed, or its link changed"
            )
        if self.key is not None and not macs_equal(mac, entry_mac(self.key, digest)):
            self.fail(
                f"entry {where} was rewritten and its hash re-forged (the hash is not signed "
                "with the log's key)"
            )
        return digest


def _share_seq(
    conn: sqlite3.Connection,
    fn: Literal["MIN", "MAX"],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int | None:
    where, params = _where(since=since, until=until)
    row = conn.execute(_share_seq_sql(fn, where), params).fetchone()
    return None if row[0] is None else int(row[0])


def _share_seq_sql(fn: Literal["MIN", "MAX"], where: str) -> str:
    """The first or last seq among the shares of a window, read off the (ts, partner) index.

    On `seq` itself SQLite walks the table in seq order until a row's `ts` is in the window:
    every share before `--since`, or after `--until`, read whole (seconds per million shares,
    minutes where the file is not cached). The unary `+` leaves it the index, about a
    twentieth of the table's size, where only the window's side of the bound is read.
    """
    return f"SELECT {fn}(+s.seq) FROM shares s{where}"  # noqa: S608 - constants


def _end_seq(conn: sqlite3.Connection, fn: Literal["MIN", "MAX"]) -> int | None:
    """The first or last seq of the whole chain."""
    row = conn.execute(
        f"SELECT {fn}(seq) FROM (SELECT {fn}(seq) AS seq FROM shares"  # noqa: S608 - constants
        f" UNION ALL SELECT {fn}(seq) FROM outcomes UNION ALL SELECT {fn}(seq) FROM checkpoints)"
    ).fetchone()
    return None if row[0] is None else int(row[0])


def signed_with(path: Path, master_key: bytes) -> bool | None:
    """Whether the log's signed head is signed with `master_key`; None when it has no head
    that can be read."""
    with _reader(path) as conn:
        row = conn.execute("SELECT seq, hash, mac FROM head").fetchone()
    if row is None:
        return None
    seq, digest, mac = row
    if type(seq) is not int or not isinstance(digest, str) or not isinstance(mac, str):
        return None  # altered: `logs verify` says how
    return macs_equal(mac, head_mac(seal_key(master_key), seq, digest))


def _first_undecodable(conn: sqlite3.Connection) -> int | None:
    """The seq of the first entry holding text that is not UTF-8 (SQLite keeps whatever it is
    given), or None (the file itself is damaged, or a table gone)."""
    found: list[int] = []
    conn.text_factory = bytes
    try:
        for table in ("shares", "outcomes", "checkpoints"):
            for seq, *values in conn.execute(f"SELECT seq, * FROM {table} ORDER BY seq"):  # noqa: S608
                if not all(_utf8(value) for value in values):
                    found.append(int(seq))
                    break
    except (sqlite3.DatabaseError, TypeError, ValueError):
        return None
    finally:
        conn.text_factory = str
    return min(found, default=None)


def _utf8(value: object) -> bool:
    if not isinstance(value, bytes):
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _reader:  # lower case: used like open(), as a context manager
    """A read-only connection with one snapshot for everything read through it."""

    def __init__(self, path: Path) -> None:
        self._conn = connect_ro(path)

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN")
        return self._conn

    def __exit__(self, *exc: object) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        finally:
            self._conn.close()
