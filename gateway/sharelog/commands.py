"""The `share-gateway logs` commands: query, summary, subject, verify, export and prune."""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import functools
import heapq
import itertools
import os
import re
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar
from zoneinfo import ZoneInfo

import orjson

from gateway.arguments import TIME_HELP
from gateway.keys import subject_id_problem, subject_ref, subject_ref_key
from gateway.settings import Settings
from gateway.sharelog import cursor, exportfile, review
from gateway.sharelog.chain import format_ts
from gateway.sharelog.ledger import Ledger, LedgerError, PruneRefused
from gateway.sharelog.schema import (
    COMPANION_SUFFIXES,
    SQLITE_INT_MAX,
    EmptyLog,
    NewerSchema,
    SchemaError,
    connect_ro,
)
from gateway.wallclock import UnclearWallTime, day_start, wall_time

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace, Settings], int]

# ASCII: `\d` would also read "７d" and other scripts' digits as an age.
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class UsageError(Exception):
    """A bad argument or a missing prerequisite: exit 2 with this one line."""


class _Unreadable(Exception):
    """A log that cannot be read, said of that file: with several `--log`, not always the one
    at `share_log.path`."""

    def __init__(self, shown: str, cause: SchemaError | sqlite3.DatabaseError) -> None:
        super().__init__(shown)
        self.shown = shown
        self.cause = cause


def parse_time(text: str, zone: ZoneInfo, now: datetime, *, end_of_day: bool = False) -> datetime:
    """`2024-05-01`, `2024-05-01T12:00`, `2024-05-01T12:00:00+08:00`, `now`, `24h`, `7d`.

    With `end_of_day`, a bare date means the end of that day, so `--until 2024-05-01` includes
    the whole of 1 May.
    """
    text = text.strip()
    try:
        moment = _parse_time(text, zone, now, end_of_day=end_of_day)
        # The log is searched in UTC and shown in the configured zone: the instant must exist
        # in both.
        moment.astimezone(UTC)
        moment.astimezone(zone)
    except (OverflowError, ValueError) as exc:  # ValueError: an age of over 4,300 digits
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UsageError(f"{shown!r} is out of the range of dates the log can hold") from exc
    return moment


_WEEK = re.compile(r"\d{4}-?W\d{2}")


def _parse_time(text: str, zone: ZoneInfo, now: datetime, *, end_of_day: bool) -> datetime:
    if text == "now":
        return now
    relative = _RELATIVE.fullmatch(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    if _WEEK.fullmatch(text):
        raise UsageError(f"{text!r} is a week, not a day: name the day ({text}-1 to {text}-7)")
    try:
        # Every ISO 8601 form of a bare date (`2024-05-01`, `20240501`, `2024-W18-3`): a date
        # read as a date-time would be midnight, and `--until` would leave out its day.
        day = date.fromisoformat(text)
    except ValueError as exc:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise UsageError(f"{text!r} is not a valid date") from exc
    else:
        if end_of_day:
            day += timedelta(days=1)
        return day_start(day, zone)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is not a time ({TIME_HELP})") from exc
    if moment.tzinfo is not None:
        return moment
    try:
        return wall_time(moment, zone)
    except UnclearWallTime as exc:
        raise UsageError(str(exc)) from exc


# -- handlers --------------------------------------------------------------------------------


def _handles_errors(handler: Handler) -> Handler:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except UsageError as exc:
            print(f"share-gateway logs {args.logs_command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except _Unreadable as exc:
            problem, code = _unreadable(exc.cause)
            print(f"share-gateway logs {args.logs_command}: {exc.shown} {problem}", file=sys.stderr)
            return code
        except (review.LogChanged, review.UnreadableEntry) as exc:
            print(f"share-gateway logs {args.logs_command}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except (SchemaError, sqlite3.DatabaseError) as exc:
            problem, code = _unreadable(exc)
            path = settings.share_log.path
            print(f"share-gateway logs {args.logs_command}: {path} {problem}", file=sys.stderr)
            return code

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


def _unreadable(exc: SchemaError | sqlite3.DatabaseError) -> tuple[str, int]:
    """What keeps the file at `share_log.path` from being read, worded to follow its path, and
    the exit code every `logs` command gives for it.

    A file there that is not an intact share log (cut short, emptied, overwritten, another
    SQLite file put in its place) is a failed check, as an invalid contract file is: the same
    file may be a log whose records were lost, and `logs verify` must never call that a usage
    error. Usage errors are what the caller can set right: a newer gateway's log, or a file
    this account may not open.
    """
    if isinstance(exc, NewerSchema):
        return f"is not readable by this gateway: {exc}", EXIT_USAGE
    if isinstance(exc, SchemaError):
        return f"is not a readable share log: {exc}", EXIT_FAILED
    # Python's own errors reading a row (text that is not UTF-8) have no SQLite code.
    errorcode = getattr(exc, "sqlite_errorcode", None)
    if errorcode is None or "malformed JSON" in str(exc):
        # SQL's JSON functions (`logs summary`) meet a JSON column that was altered.
        return (
            f"holds an entry that cannot be read: run `share-gateway logs verify`: {exc}",
            EXIT_FAILED,
        )
    primary = errorcode & 0xFF
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return f"is busy (another writer holds it); try again: {exc}", EXIT_FAILED
    if primary in (
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_AUTH,
        sqlite3.SQLITE_READONLY,
    ):
        return f"cannot be opened by this account: {exc}", EXIT_USAGE
    return f"is not a readable share log: {exc}", EXIT_FAILED


def _window(
    args: argparse.Namespace, settings: Settings, now: datetime
) -> tuple[datetime | None, datetime | None]:
    since = until = None
    # `is not None`: an empty value (`--since "$START"` with START unset) is no time, not the
    # whole log.
    if args.since is not None:
        since = parse_time(args.since, settings.zone, now)
    if args.until is not None:
        until = parse_time(args.until, settings.zone, now, end_of_day=True)
    if since is not None and until is not None and until <= since:
        raise UsageError("--until must be later than --since")
    return since, until


def _paging(args: argparse.Namespace) -> tuple[int | None, int]:
    # A table is read on a terminal, a page at a time; json and csv are exports (an access
    # request answered from one must hold every record), so they are whole unless asked.
    limit = args.limit if args.limit is not None else (100 if args.format == "table" else 0)
    offset = args.offset if args.offset is not None else 0
    if args.cursor is not None and args.offset is not None:
        raise UsageError(
            "--cursor and --offset cannot be used together: a cursor names where its page starts"
        )
    if limit < 0 or offset < 0:
        raise UsageError("--limit and --offset must not be negative")
    if max(limit, offset) > SQLITE_INT_MAX:
        raise UsageError(f"--limit and --offset must be at most {SQLITE_INT_MAX}")
    return (limit or None), offset


# Seals the cursors of `logs query` and `logs subject`. Not a secret, and not the hash key:
# whoever runs these commands reads the file itself, from wherever they like, and `logs query`
# must page for an auditor who is not given the gateway's key. The seal makes a cursor altered
# by mistake, or given with other filters, an error rather than a page of some other query.
_CURSOR_KEY = b"share-gateway/logs-cursor"


def _continued(
    text: str, bound: dict[str, object]
) -> tuple[review.PagePosition, datetime | None, datetime | None]:
    """Where `--cursor` continues, and the window its first page resolved: `--since 7d` as it
    was read then, not now."""
    try:
        return cursor.read(_CURSOR_KEY, cursor.binding(bound), text)
    except cursor.CursorRefused:
        raise UsageError(
            "--cursor is not the next page of this query: give it unchanged, with the same "
            "filters as the page that printed it"
        ) from None


def _master_key(settings: Settings) -> bytes:
    from gateway.errors import StartupError
    from gateway.keys import master_key

    try:
        return master_key(settings)
    except StartupError as exc:
        raise UsageError("; ".join(exc.problems)) from exc


def _key_if_given(settings: Settings) -> bytes | None:
    """The hash key as `logs verify` reads it, or None where its variable is unset or empty: an
    export, and an auditor's check of one, can do without the seals. A key given but too short
    is a usage error, as it is for `logs verify`: the seals would go unchecked unawares."""
    if not os.environ.get(settings.secrets.hash_key_env):
        return None
    return _master_key(settings)


@dataclass(frozen=True, slots=True)
class _Log:
    """A share log to read: `share_log.path` (`name` None), or a file `--log` names."""

    path: Path
    name: str | None  # as given to --log: what each row and message calls it

    @property
    def shown(self) -> str:
        return str(self.path) if self.name is None else self.name


def _subject_ref(settings: Settings, subject_id: str, logs: Sequence[_Log]) -> str:
    """The reference a subject's shares are recorded under, whichever way the id is written."""
    if problem := subject_id_problem(subject_id):
        # Its reference would be no one's: "no share records match" would be a false answer.
        raise UsageError(f"the subject id {problem}")
    key = _master_key(settings)
    # Under another key the reference is no one's either, and "no share records match" would
    # answer a person's request for their records falsely: every log is asked, and one
    # sidecar's log under another key stops the whole answer.
    for log in logs:
        with _reading(log):
            signed = review.signed_with(log.path, key)
        if signed is None:
            raise UsageError(
                f"{log.shown} has no signed head it can read: run `share-gateway logs verify`"
            )
        if not signed:
            raise UsageError(
                f"{log.shown} is not signed with this hash key: is "
                f"{settings.secrets.hash_key_env} the gateway's?"
            )
    return subject_ref(subject_ref_key(key), subject_id)


def _log_path(settings: Settings) -> Path:
    path = settings.share_log.path
    if not path.is_file():
        raise UsageError(f"no share log at {path} (share_log.path)")
    return path


def _logs(
    args: argparse.Namespace,
    settings: Settings,
    *,
    alone: str | None = None,
    verifying: bool = False,
) -> list[_Log]:
    """The logs a command reads: those `--log` names, each once, or the settings' own.

    `alone`: why this use of the command reads one log only; several are then refused (exit 2).
    `verifying`: a file that is no share log is left for `logs verify` to report as a failed
    verification of it, among the others; what no file could be verified for (a newer
    schema, a file this account may not open) still stops it before any is.
    """
    if not args.log:
        return [_Log(_log_path(settings), None)]
    logs: list[_Log] = []
    seen: set[tuple[int, int]] = set()
    for name in args.log:
        path = Path(name)
        try:
            if not path.is_file():
                raise UsageError(f"no share log at {name} (--log)")
            found = path.stat()
        except OSError as exc:
            raise UsageError(f"--log {name}: {exc.strerror or exc}") from exc
        # One file under two names (a link, `./`, another mount of its folder) is one log:
        # read twice, each of its shares would be listed twice.
        if (found.st_dev, found.st_ino) not in seen:
            seen.add((found.st_dev, found.st_ino))
            logs.append(_Log(path, name))
    if len(logs) > 1 and alone is not None:
        raise UsageError(alone)
    for log in logs:
        # Each a share log before any is read: an answer from some of them would pass for whole.
        try:
            with _reading(log):
                connect_ro(log.path).close()
        except _Unreadable as exc:
            if not verifying or _unreadable(exc.cause)[1] != EXIT_FAILED:
                raise
    return logs


def _paged_logs(args: argparse.Namespace, settings: Settings) -> list[_Log]:
    paged = args.cursor is not None or args.offset is not None
    return _logs(args, settings, alone=_NOT_PAGED if paged else None)


# A cursor over several logs would have to hold a place in each of them.
_NOT_PAGED = (
    "--cursor and --offset page one log, not several: json and csv give every row of them "
    "all (--limit N the first N)"
)


@contextlib.contextmanager
def _reading(log: _Log) -> Iterator[None]:
    """Whatever keeps `log` from being read, said of it. Of a log `--log` names, a damaged
    entry (whose words name no file) is said of it too: it may be one of several."""
    try:
        yield
    except (SchemaError, sqlite3.DatabaseError) as exc:
        raise _Unreadable(log.shown, exc) from exc
    except (review.LogChanged, review.UnreadableEntry) as exc:
        if log.name is None:
            raise
        raise type(exc)(f"{log.name}: {exc}") from exc


@_handles_errors
def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    """`logs query`: share records matching the filters."""
    window = _window(args, settings, datetime.now(UTC)) if args.cursor is None else None
    limit, offset = _paging(args)
    logs = _paged_logs(args, settings)
    named = ("partner", "purpose", "decision", "reason", "caller", "share_id")
    filters: dict[str, Any] = {name: getattr(args, name) for name in named}
    filters["subject_ref"] = (
        None if args.subject is None else _subject_ref(settings, args.subject, logs)
    )
    # The window as typed (`--since 7d`, not the time it stood for): each page names the same.
    bound = {"command": "query", **filters, "since": args.since, "until": args.until}
    return _print_shares(args, settings, logs, filters, bound, window, limit, offset)


@_handles_errors
def cmd_subject(args: argparse.Namespace, settings: Settings) -> int:
    """`logs subject ID`: every share that carried data about one person."""
    window = _window(args, settings, datetime.now(UTC)) if args.cursor is None else None
    limit, offset = _paging(args)
    logs = _paged_logs(args, settings)
    filters: dict[str, Any] = {
        "subject_ref": _subject_ref(settings, args.id, logs),
        "decision": None if args.include_denied else "shared",
    }
    bound = {"command": "subject", **filters, "since": args.since, "until": args.until}
    return _print_shares(args, settings, logs, filters, bound, window, limit, offset)


def _print_shares(
    args: argparse.Namespace,
    settings: Settings,
    logs: Sequence[_Log],
    filters: dict[str, Any],
    bound: dict[str, object],
    window: tuple[datetime | None, datetime | None] | None,
    limit: int | None,
    offset: int,
) -> int:
    """The rows of one page; `window` is None with `--cursor`, which carries its own."""
    if len(logs) > 1:
        if window is None:
            raise UsageError(_NOT_PAGED)
        return _print_merged(args, settings, logs, filters, window, limit)
    [log] = logs
    if log.name is not None:
        # A cursor continues the log its first page read, and no other file's.
        bound = {**bound, "log": log.name}
    with _reading(log):
        return _print_page(args, settings, log, filters, bound, window, limit, offset)


def _print_page(
    args: argparse.Namespace,
    settings: Settings,
    log: _Log,
    filters: dict[str, Any],
    bound: dict[str, object],
    window: tuple[datetime | None, datetime | None] | None,
    limit: int | None,
    offset: int,
) -> int:
    if window is None:
        after, since, until = _continued(args.cursor, bound)
    else:
        after, (since, until) = None, window
    filters.update(since=since, until=until)
    out = sys.stdout
    path = log.path
    rows = review.iter_page(path, limit=limit, offset=offset, after=after, **filters)
    read = _Paged(rows if log.name is None else _named(log.name, rows))
    if args.format in ("json", "csv"):
        if args.format == "json":
            shown = _write_json(read, out)
        else:
            shown = _write_csv(read, out, _fields(log.name is not None))
        if offset or after is not None or read.next is not None:
            # Never a silent part: what is left out is said where the data does not go.
            print(_page_note(path, filters, bound, shown, offset, after, read), file=sys.stderr)
    else:
        listed = list(read)
        _write_share_table(listed, settings.zone, out)
        out.write(_page_note(path, filters, bound, len(listed), offset, after, read) + "\n")
    return EXIT_OK


def _named(
    name: str, rows: Generator[dict[str, Any], None, review.PagePosition | None]
) -> Generator[dict[str, Any], None, review.PagePosition | None]:
    """The rows of the log `--log` named `name`, each naming it first."""
    while True:
        try:
            row = next(rows)
        except StopIteration as end:
            after: review.PagePosition | None = end.value
            return after
        yield {"log": name, **row}


def _fields(named: bool) -> tuple[str, ...]:
    return ("log", *review.QUERY_FIELDS) if named else review.QUERY_FIELDS


def _print_merged(
    args: argparse.Namespace,
    settings: Settings,
    logs: Sequence[_Log],
    filters: dict[str, Any],
    window: tuple[datetime | None, datetime | None],
    limit: int | None,
) -> int:
    """The rows of several logs in one answer, in time order: no cursor, the first `limit`."""
    since, until = window
    filters.update(since=since, until=until)
    merged = heapq.merge(*(_sorted_rows(log, order, filters) for order, log in enumerate(logs)))
    rows: Iterator[dict[str, Any]] = (row for _, row in merged)
    if limit is not None:
        # One row past the limit says whether any were left out, without counting them all.
        rows = itertools.islice(rows, limit + 1)
    read = _Capped(rows, limit)
    out = sys.stdout
    if args.format in ("json", "csv"):
        shown = (
            _write_json(read, out)
            if args.format == "json"
            else _write_csv(read, out, _fields(True))
        )
        if read.cut:
            note = _merged_note(logs, filters, shown, read.cut, "leave out --limit for every row")
            print(note, file=sys.stderr)
    else:
        listed = list(read)
        _write_share_table(listed, settings.zone, out)
        # With `--limit` given, json or csv keep to it too: the way to every row leaves it out.
        rest = "--format json or csv gives every row"
        if args.limit is not None:
            rest = "--format json or csv without --limit gives every row"
        out.write(_merged_note(logs, filters, len(listed), read.cut, rest) + "\n")
    return EXIT_OK


def _sorted_rows(
    log: _Log, order: int, filters: dict[str, Any]
) -> Iterator[tuple[tuple[str, int, int], dict[str, Any]]]:
    """The rows of one log with the key they are merged by: time, then the order the logs were
    given in, then the log's own order. No two rows share a key, so rows are never compared."""
    with _reading(log):
        for row in review.iter_query(log.path, limit=None, **filters):
            # `ts` is text (NOT NULL, of TEXT affinity), fixed-width UTC: it orders the instants.
            yield (row["ts"], order, row["seq"]), {"log": log.shown, **row}


class _Capped:
    """Rows up to a limit, read one past it: then (once read) whether any were left out."""

    def __init__(self, rows: Iterator[dict[str, Any]], limit: int | None) -> None:
        self._rows = rows
        self._limit = limit
        self.cut = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for shown, row in enumerate(self._rows):
            if self._limit is not None and shown == self._limit:
                self.cut = True
                return
            yield row


def _merged_note(
    logs: Sequence[_Log], filters: dict[str, Any], shown: int, cut: bool, rest: str
) -> str:
    where = f"in {len(logs)} logs"
    if not cut:
        return (
            f"rows 1-{shown:,} of {shown:,} {where}" if shown else f"no share records match {where}"
        )
    total = 0
    for log in logs:
        with _reading(log):
            total += review.count(log.path, **filters)
    # A share recorded since the rows were read is counted; one pruned since is not.
    total = max(total, shown + 1)
    return f"rows 1-{shown:,} of {total:,} {where}; {total - shown:,} more: {rest}"


class _Paged:
    """The rows of a page, then (once they are read) where the next page starts."""

    def __init__(self, rows: Generator[dict[str, Any], None, review.PagePosition | None]) -> None:
        self._rows = rows
        self.next: review.PagePosition | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.next = yield from self._rows


def _page_note(
    path: Path,
    filters: dict[str, Any],
    bound: dict[str, object],
    shown: int,
    offset: int,
    after: review.PagePosition | None,
    read: _Paged,
) -> str:
    # Rows are numbered among those the first page's read covers, as the log holds them now:
    # shares recorded since are not in it, and rows a prune took (all read) no longer count.
    if after is not None:
        before, total = review.read_counts(path, after, **filters)
    elif read.next is not None:
        before, total = offset, review.read_counts(path, read.next, **filters)[1]
    elif shown:
        before, total = offset, offset + shown
    else:
        before, total = offset, review.count(path, **filters)
    if total == 0:
        return "no share records match"
    if shown == 0:
        where = "after the cursor" if after is not None else f"at offset {offset}"
        return f"no rows {where} ({total:,} match)"
    note = f"rows {before + 1:,}-{before + shown:,} of {total:,}"
    if read.next is not None:
        token = cursor.write(
            _CURSOR_KEY, cursor.binding(bound), read.next, filters["since"], filters["until"]
        )
        note += f"; next page: --cursor {token} with the same filters"
        if offset:
            note += ", in place of --offset"
    return note


@_handles_errors
def cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    """`logs summary`: per partner, over a window."""
    now = datetime.now(UTC)
    since, until = _window(args, settings, now)
    logs = _logs(args, settings)
    total = review.Summary(since, until, logs=len(logs))
    for log in logs:
        with _reading(log):
            total.add(log.path)
    rows = total.rows()
    out = sys.stdout
    # Named only with `--log`: a summary of the settings' log reads as it always has.
    named = [log.shown for log in logs if log.name is not None]
    if args.format == "json":
        shown: object = {"logs": named, "partners": rows} if named else rows
        out.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    window = (
        f"{_local(since, settings.zone) if since else 'the beginning'} to "
        f"{_local(until, settings.zone) if until else 'now'}"
    )
    out.write(f"share log summary, {window} ({settings.timezone})\n")
    if named:
        out.write(f"in {_count(len(named), 'log')}: {', '.join(named)}\n")
    out.write("\n")
    if not rows:
        out.write("no share records in this window\n")
        return EXIT_OK
    table = [
        [
            row["partner"] or "(none)",
            row["shares"],
            row["records"],
            row["subjects"],
            row["denied"],
            row["errors"],
            row["bytes_sent"],
            _counts(row["outcomes"], 4),
        ]
        for row in rows
    ]
    headers = ["partner", "shares", "records", "subjects", "denied", "errors", "bytes", "outcomes"]
    out.write(_table(headers, table) + "\n")
    for row in rows:
        out.write(f"\n{row['partner'] or '(none)'}\n")
        details = (
            ("categories sent", _counts(row["categories_sent"], 12)),
            ("fields sent", _counts(row["fields_sent"], 12)),
            ("denials", _counts(row["denials"], 12)),
            ("errors", _counts(row["errors_by_reason"], 12)),
            (
                "top stripped",
                _counts({s["field"]: s["count"] for s in row["top_fields_stripped"]}, 10),
            ),
        )
        for label, text in details:
            out.write(f"  {label:<16} {text or '-'}\n")
    return EXIT_OK


# The lines are one gateway's: they say nothing of another gateway's log.
_ONE_GATEWAYS_LINES = (
    "--checkpoints are one gateway's lines, checked against its own log: give one --log with "
    "them, and verify each other log with its own gateway's lines or without any"
)


@_handles_errors
def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """`logs verify`: exit 0 when the whole chain checks out, 1 naming the first broken record;
    over several `--log`, 0 only when every one of them does."""
    if args.export is not None:
        return _verify_export(args, settings)
    if args.sealed:
        raise UsageError(_SEALED_EXPORT)
    alone = _ONE_GATEWAYS_LINES if args.checkpoints is not None else None
    logs = _logs(args, settings, alone=alone, verifying=True)
    key = _master_key(settings)
    anchors: list[review.Anchor] = []
    unread: _Verdict | None = None
    if args.checkpoints is not None:
        try:
            anchors = _read_anchors(args.checkpoints, key)
        except review.CheckpointLineError as exc:
            where = "standard input" if args.checkpoints == "-" else args.checkpoints
            unread = _failed("checkpoint_line", f"{where}, {exc}", line=exc.line)
    # Each under its name with `--log`, as given: the settings' log reads as it always has.
    named = logs[0].name is not None
    reports: list[dict[str, Any]] = []
    failed: list[str] = []
    for number, log in enumerate(logs):
        verdict = unread or _verified(log, key, anchors)
        if not verdict.ok:
            failed.append(log.shown)
        if args.format == "json":
            reports.append({"log": log.shown, **verdict.report} if named else verdict.report)
            continue
        if named:
            # Printed as each log is verified: a fleet's logs may take a while.
            if number:
                print()
            print(f"{log.shown}:")
        for line in verdict.lines:
            print(line)
    if args.format == "json":
        shown = reports if named else reports[0]
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    elif len(logs) > 1:
        if failed:
            print(
                f"\nverification FAILED for {len(failed):,} of {_count(len(logs), 'log')}: "
                f"{', '.join(failed)}"
            )
        else:
            print(f"\nall {_count(len(logs), 'log')} verified")
    return EXIT_FAILED if failed else EXIT_OK


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What `logs verify` found of one log: in json, and in lines of text."""

    ok: bool
    report: dict[str, Any]
    lines: list[str]


def _verified(log: _Log, key: bytes, anchors: Sequence[review.Anchor]) -> _Verdict:
    try:
        result = review.verify(log.path, key, anchors)
    except Exception as exc:  # a damaged file is a failed check, with the reason it gives
        if isinstance(exc, EmptyLog):
            # Not damage to look into: every record the log held is gone, or none was written.
            return _failed("empty", f"{log.shown}: {exc}")
        if isinstance(exc, SchemaError | sqlite3.DatabaseError):
            reason, code = _unreadable(exc)
            if code != EXIT_FAILED:
                # A usage error, on stderr as every `logs` command says it.
                raise _Unreadable(log.shown, exc) from exc
        else:
            reason = f"cannot be read: {exc}"
        return _failed("unreadable", f"{log.shown} {reason}")
    lines: list[str] = []
    if result.problem is None:
        span = f", seq {result.first_seq}-{result.last_seq}" if result.entries else ""
        lines.append(
            f"share log verified: {_count(result.entries, 'entry', 'entries')} "
            f"({_count(result.shares, 'share')}, {_count(result.outcomes, 'outcome')}, "
            f"{_count(result.checkpoints, 'checkpoint')}){span}; "
            f"signed head at seq {result.head_seq}"
        )
        if result.anchors is not None:
            checked = result.anchors
            pruned = (
                f"; {checked.before_start:,} for entries pruned since, not compared"
                if checked.before_start
                else ""
            )
            lines.append(
                f"checkpoint lines: {checked.compared:,} match the log, the latest at seq "
                f"{checked.latest.seq} ({checked.latest.ts}){pruned}"
            )
    else:
        problem = result.problem
        where = [f"seq {problem.seq}"] if problem.seq is not None else []
        if problem.share_id:
            where.append(f"share {problem.share_id}")
        lines.append(f"share log verification FAILED ({problem.kind}): {problem.message}")
        if where:
            lines.append(f"first broken record: {', '.join(where)}")
        lines.append(f"checked before the failure: {_count(result.entries, 'entry', 'entries')}")
    return _Verdict(result.ok, result.to_json(), lines)


def _failed(kind: str, message: str, **where: int) -> _Verdict:
    """A check that failed before any record was judged: said as a failed verification is."""
    return _Verdict(
        False,
        {"ok": False, "problem": {"kind": kind, **where, "message": message}},
        [f"share log verification FAILED ({kind}): {message}"],
    )


# `--export` checks a file on its own: the log it came from, and lines kept from that log's
# gateway, are another check (`logs verify`, with or without `--checkpoints`).
_EXPORT_ALONE = (
    "--export checks an export file on its own, without the share log: verify the log with "
    "--log or --checkpoints in a command of its own"
)


# A share log's seals, its head's included, are always checked with the key: only an export's
# header may be unsealed.
_SEALED_EXPORT = (
    "--sealed requires an export file's header to be sealed: give it with --export FILE "
    "(a share log's seals are always checked)"
)


def _verify_export(args: argparse.Namespace, settings: Settings) -> int:
    """`logs verify --export FILE`: an export file checked without the share log."""
    if args.log or args.checkpoints is not None:
        raise UsageError(_EXPORT_ALONE)
    key = _key_if_given(settings)
    if args.sealed and key is None:
        # Before the file is read: without the key no seal is checked, so none could pass.
        raise UsageError(
            "--sealed checks the header's seal with the hash key, and "
            f"{settings.secrets.hash_key_env} is unset or empty"
        )
    name = args.export
    check = _read_lines(
        "--export",
        name,
        functools.partial(exportfile.check_export, master_key=key, sealed=args.sealed),
    )
    shown = "standard input" if name == "-" else name
    if args.format == "json":
        print(
            orjson.dumps({"export": shown, **check.to_json()}, option=orjson.OPT_INDENT_2).decode()
        )
    else:
        for line in _export_lines(shown, check, settings.secrets.hash_key_env):
            print(line)
    return EXIT_OK if check.ok else EXIT_FAILED


def _export_lines(shown: str, check: exportfile.ExportCheck, key_env: str) -> list[str]:
    counts = (
        f"{_count(check.entries, 'entry', 'entries')} ({_count(check.shares, 'share')}, "
        f"{_count(check.outcomes, 'outcome')}, {_count(check.checkpoints, 'checkpoint')})"
    )
    problem = check.problem
    if problem is not None:
        where = [f"line {problem.line}"] + (
            [f"seq {problem.seq}"] if problem.seq is not None else []
        )
        if problem.share_id is not None:
            where.append(f"share {problem.share_id}")
        return [
            f"export verification FAILED ({problem.kind}): {shown}: {problem.message}",
            f"first bad line: {', '.join(where)}",
            f"checked before the failure: {_count(check.entries, 'entry', 'entries')}",
        ]
    span = f", seq {check.first_seq}-{check.last_seq}" if check.entries else ""
    lines = [f"export verified: {shown}: {counts}{span}; head at seq {check.head_seq}"]
    if check.first_seq == 1:
        lines.append("first entry: seq 1, linked to the start of the chain")
    elif check.anchor is not None and check.first_seq is not None:
        lines.append(
            f"first entry's prev_hash {check.anchor}: taken as given, it links to seq "
            f"{check.first_seq - 1}, outside the export; compare it with that entry's hash in "
            "the gateway's checkpoint lines or an earlier export"
        )
    if check.last_seq is not None and check.last_seq == check.head_seq:
        lines.append("last entry: the head of the log when it was exported")
    elif check.entries:
        lines.append(f"last entry: seq {check.last_seq}, before the head: the log went on")
    if check.macs_checked:
        lines.append("seals (mac): checked with the hash key")
    else:
        lines.append(
            f"seals (mac): NOT checked, no hash key in {key_env}: the hashes and links show the "
            "file is whole and consistent, not that the gateway wrote it (anyone can recompute "
            "a hash)"
        )
    lines.append(_header_seal_line(check, key_env))
    return lines


def _header_seal_line(check: exportfile.ExportCheck, key_env: str) -> str:
    if check.header_sealed is None:
        return (
            f"header seal (mac): NOT checked, no hash key in {key_env}: the export's end is not "
            "proven"
        )
    if check.header_sealed:
        required = ", as --sealed requires" if check.sealed_required else ""
        return (
            f"header seal (mac): checked with the hash key{required}: the export's end is "
            "proven, no line was cut from it"
        )
    unsealed = (
        "header seal (mac): none, the header is not sealed (it was exported without the hash key)"
    )
    if check.end_proven:
        return f"{unsealed}: the export reaches the signed head, which proves its end"
    return (
        f"{unsealed}: the export's end is NOT proven: lines cut from its end, with to_seq "
        "and to_hash lowered to match, would still check out"
    )


def _read_lines(option: str, name: str, read: Callable[[IO[bytes]], T]) -> T:
    """What `read` makes of the file an option names, read in binary; `-` is standard input."""
    try:
        if name == "-":
            return read(sys.stdin.buffer)
        with open(name, "rb") as lines:
            return read(lines)
    except OSError as exc:
        raise UsageError(f"{option} {name}: {exc.strerror or exc}") from exc


def _read_anchors(name: str, key: bytes) -> list[review.Anchor]:
    anchors = _read_lines(
        "--checkpoints", name, functools.partial(review.read_anchors, master_key=key)
    )
    if not anchors:
        raise UsageError(
            f"--checkpoints {name}: no share_log_checkpointed line in it (the gateway prints "
            "them on stdout, with share_log.stdout: true)"
        )
    return anchors


@_handles_errors
def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """`logs export`: JSON lines with chain evidence."""
    now = datetime.now(UTC)
    since, until = _window(args, settings, now)
    [log] = _logs(args, settings, alone=_ONE_CHAIN)
    path = log.path
    key = _key_if_given(settings)
    try:
        with _reading(log):
            if args.output == "-":
                result = review.export(path, since, until, sys.stdout, key)
                where = "stdout"
            else:
                target = Path(args.output)
                result = _export_to(target, path, since, until, key)
                where = str(target)
    except review.UnreadableEntry as exc:
        print(f"share-gateway logs export: {exc}", file=sys.stderr)
        return EXIT_FAILED
    span = f" (seq {result.first_seq}-{result.last_seq})" if result.entries else ""
    of = "" if log.name is None else f" of {log.name}"
    print(
        f"exported {_count(result.entries, 'entry', 'entries')}{span}{of} to {where}",
        file=sys.stderr,
    )
    if key is None:
        print(
            "hashes and links checked; seals not checked, and the header not sealed (its end "
            f"is not proven): no hash key in {settings.secrets.hash_key_env}",
            file=sys.stderr,
        )
    return EXIT_OK


# An export is checked as one chain, from its first entry to the signed head.
_ONE_CHAIN = (
    "--log names the one log to export: each log is a chain of its own, and an export holds "
    "one; export each log to a file of its own"
)


def _export_to(
    target: Path,
    path: Path,
    since: datetime | None,
    until: datetime | None,
    key: bytes | None = None,
) -> review.ExportResult:
    if _is_log_file(target, path):
        raise UsageError(f"{target} is the share log's own file: export to another file")
    connect_ro(path).close()  # a share log (else SchemaError) before the target is touched
    descriptor = _STANDARD_STREAM.fullmatch(str(target))
    if descriptor is not None:
        # `-o /dev/stdout` (or `/dev/stderr`, a `/dev/fd/N`): the stream as it is, appended to
        # where it was sent (`>> archive`), its offset shared with the summary (`> out 2>&1`).
        return _export_to_stream(target, descriptor, path, since, until, key)
    try:
        if target.exists() and not target.is_file():
            return _export_to_device(target, path, since, until, key)  # through a link too
        real = target.resolve()  # through a link: the file it names is replaced, the link kept
        # Written beside the target and renamed over it only once whole: a failed export
        # leaves no partial file to be taken for a whole one, and an earlier export as it was.
        # Keyed subject references are personal data: the file is the owner's alone (mkstemp).
        fd, temp = tempfile.mkstemp(prefix=f".{real.name}.", dir=real.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from exc
    try:
        with open(fd, "w", encoding="utf-8") as out:
            result = review.export(path, since, until, out, key)
        os.replace(temp, real)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)  # gone once renamed
    return result


# The process's own streams by name: `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`,
# `/proc/self/fd/N`.
_STANDARD_STREAM = re.compile(r"/dev/(stdout|stderr)|/dev/fd/(\d{1,9})|/proc/self/fd/(\d{1,9})")


def _export_to_stream(
    target: Path,
    descriptor: re.Match[str],
    path: Path,
    since: datetime | None,
    until: datetime | None,
    key: bytes | None,
) -> review.ExportResult:
    name, number = descriptor.group(1), descriptor.group(2) or descriptor.group(3)
    fd = int(number) if number is not None else (1 if name == "stdout" else 2)

    def stream() -> IO[str]:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise UsageError(f"cannot write {target}: it is open for reading only")
        return open(os.dup(fd), "w", encoding="utf-8")

    return _export_into(target, stream, path, since, until, key)


def _export_to_device(
    target: Path, path: Path, since: datetime | None, until: datetime | None, key: bytes | None
) -> review.ExportResult:
    """A device or a pipe: written as it is, never truncated, its mode left alone."""

    def opener() -> IO[str]:
        return target.open("w", encoding="utf-8")

    return _export_into(target, opener, path, since, until, key)


def _export_into(
    target: Path,
    opener: Callable[[], IO[str]],
    path: Path,
    since: datetime | None,
    until: datetime | None,
    key: bytes | None,
) -> review.ExportResult:
    try:
        with opener() as out:
            return review.export(path, since, until, out, key)
    except BrokenPipeError:
        raise  # the reader had enough (`| head`): not a usage error, as with `-o -`
    except OSError as exc:  # closed (`>&-`), or a stream that refuses the writes
        raise UsageError(f"cannot write {target}: {exc.strerror}") from exc


def _is_log_file(target: Path, path: Path) -> bool:
    """Whether `target` is the share log or one of the files SQLite and the gateway keep
    beside it: an export there would destroy what it exports."""
    real = path.resolve()
    own = [
        real,
        *(real.with_name(real.name + end) for end in COMPANION_SUFFIXES),
    ]
    resolved = target.resolve()
    if resolved in own:
        return True
    try:
        return any(os.path.samefile(resolved, file) for file in own if file.exists())
    except OSError:
        return False


@_handles_errors
def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    """`logs prune`: remove records older than the retention period; the cut is signed."""
    now = datetime.now(UTC)
    retention = settings.share_log.retention_days
    if args.before is not None:
        before = parse_time(args.before, settings.zone, now)
    else:
        before = now - timedelta(days=retention)
    path = _log_path(settings)
    key = _master_key(settings)
    # What the other commands read, or nothing: opened for writing, an empty file would be
    # made a new share log.
    connect_ro(path).close()
    try:
        if args.dry_run:
            ledger = Ledger.open_read_only(path, key)
        else:
            ledger = Ledger.open(
                path,
                key,
                durability="strict",
                checkpoint_every=settings.share_log.checkpoint_every,
            )
    except LedgerError as exc:
        print(f"share-gateway logs prune: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        result, _ = ledger.prune(before, now=now, retention_days=retention, dry_run=args.dry_run)
    except PruneRefused as exc:
        raise UsageError(str(exc)) from exc
    except LedgerError as exc:  # the log does not verify up to the cut: a failed check
        print(f"share-gateway logs prune: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        ledger.close()
    # Only shares are judged by their date: the chain is cut at the first share dated at or
    # after `before`, and the outcomes and checkpoints before that place go with it, whenever
    # they were written.
    what = (
        f"{_count(result.shares, 'share')} dated before {format_ts(before)}, with the "
        f"{_count(result.outcomes, 'outcome')} and {_count(result.checkpoints, 'checkpoint')} "
        "that precede the first share kept"
    )
    if args.dry_run:
        print(f"would remove {what}")
    elif result.checkpoint_seq is None:
        print(f"nothing to prune before {format_ts(before)}")
    else:
        print(
            f"removed {what}; the chain now starts at seq {result.cut_seq}, "
            f"cut signed at seq {result.checkpoint_seq}"
        )
    return EXIT_OK


# -- output ----------------------------------------------------------------------------------


def _local(moment: datetime | str | None, zone: ZoneInfo) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _counts(counts: dict[str, int], top: int) -> str:
    items = list(counts.items())
    text = ", ".join(f"{name} {n:,}" for name, n in items[:top])
    if len(items) > top:
        text += f", … (+{len(items) - top})"
    return text


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns: numbers to the right, text to the left."""
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] == "-" for r in rows)
        for i in range(len(headers))
    ]
    cells = [[f"{v:,}" if isinstance(v, int | float) else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _outcome_text(row: dict[str, Any]) -> str:
    outcome = row["outcome"]
    if outcome is None:
        return "-"
    if row["upstream_status"] is not None:
        return f"{outcome} {row['upstream_status']}"
    return str(outcome)


def _write_share_table(rows: list[dict[str, Any]], zone: ZoneInfo, out: IO[str]) -> None:
    if not rows:
        return
    named = "log" in rows[0]
    headers = [
        f"time ({zone.key})",
        *(["log"] if named else []),
        "share_id",
        "partner",
        "caller",
        "purpose",
        "route",
        "decision",
        "outcome",
        "ms",
        "records",
        "subjects",
        "sent/stripped",
        "categories",
    ]
    out.write(_table(headers, [_share_cells(row, zone, named) for row in rows]) + "\n")


def _share_cells(row: dict[str, Any], zone: ZoneInfo, named: bool) -> list[object]:
    try:
        return [
            _local(row["ts"], zone),
            # Whole: a path cut short could name another sidecar's log.
            *([row["log"]] if named else []),
            row["share_id"],
            row["partner"] or "-",
            _cut(row["caller"] or "-", 24),
            row["purpose"] or "-",
            _cut(row["route"] or row["method"], 28),
            row["decision"]
            if row["reason"] == row["decision"]
            else f"{row['decision']}: {row['reason']}",
            _outcome_text(row),
            "-" if row["latency_ms"] is None else round(row["latency_ms"]),
            row["records"],
            len(row["subject_refs"]),
            f"{len(row['fields_sent'])}/{len(row['fields_stripped'])}",
            _cut(",".join(row["categories_sent"]) or "-", 40),
        ]
    except (TypeError, ValueError, AttributeError) as exc:
        # A value of a type or form no entry is written with: the entry was altered.
        where = f"{row['log']}: " if named else ""
        raise review.UnreadableEntry(
            f"{where}the share at seq {row['seq']} holds a value no share is written with: "
            "run `share-gateway logs verify`"
        ) from exc


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return value


def _write_json(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """A JSON array written element by element, as `orjson.OPT_INDENT_2` lays out a list."""
    count = 0
    for row in rows:
        item = orjson.dumps(row, option=orjson.OPT_INDENT_2).decode().replace("\n", "\n  ")
        out.write(("[\n  " if count == 0 else ",\n  ") + item)
        count += 1
    out.write("\n]\n" if count else "[]\n")
    return count


def _write_csv(rows: Iterable[dict[str, Any]], out: IO[str], fields: Sequence[str]) -> int:
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    for row in rows:
        # The header only once a row is read: a read refused before its first row (a prune
        # since the first page) leaves nothing to be taken for an answer of no rows.
        if count == 0:
            writer.writerow(fields)
        writer.writerow([_csv_cell(row[name]) for name in fields])
        count += 1
    if count == 0:
        writer.writerow(fields)
    return count
