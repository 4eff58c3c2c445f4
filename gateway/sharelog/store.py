"""The share log the gateway writes through: one writer thread, group commit, a future per write."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from gateway.errors import ShareLogUnavailable
from gateway.files import remove_leftovers, resolved
from gateway.logconfig import STDOUT, write_json_lines
from gateway.metrics import SHARE_LOG_QUEUE_DEPTH, SHARE_LOG_WRITE_LATENCY
from gateway.settings import ShareLogSettings
from gateway.sharelog.chain import Entry, ShareDraft, draft_share
from gateway.sharelog.ledger import Ledger, PruneResult, PruneUnverified
from gateway.sharelog.printer import Printer
from gateway.sharelog.record import ShareOutcome, ShareRecord
from gateway.sharelog.schema import LOCK_SUFFIX, Connect

T = TypeVar("T")

_EVENTS = {
    "share": "share_recorded",
    "outcome": "share_outcome_recorded",
    "checkpoint": "share_log_checkpointed",
}
_UNAVAILABLE = "the share log cannot be written"


class EventLogger(Protocol):
    """The part of a structlog bound logger the share log uses."""

    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def error(self, event: str, *args: Any, **kw: Any) -> Any: ...


@dataclass(slots=True)
class _Write:
    payload: ShareDraft | ShareOutcome
    ts: datetime | None  # when an outcome was reported (records carry their own time)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None] | None  # None: nobody waits (a submitted outcome)
    enqueued: float


@dataclass(slots=True)
class _Control:
    run: Callable[[], Any]  # runs in the writer thread, in queue order with the writes
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Any] | None = None  # None: nobody waits for the result
    stop: bool = False
    ledger: bool = True  # uses the ledger, so runs holding the lock


# Makes the writer look at the log's state again: a write on the event loop failed.
_WAKE = _Control(lambda: None, ledger=False)
# How often the writer copies the WAL into the file in batched mode, where commits on the event
# loop must not do it themselves (SQLite would, and sync, in the commit that crosses its limit).
_CHECKPOINT_INTERVAL_S = 1.0
# Below this much free space beside the log, the gateway reports itself not ready: the next
# commit that needs a new page would fail, and readiness would only say so after shares failed.
# A few hundred commits' worth of WAL pages; a disk this full needs attention whatever happens.
MIN_FREE_BYTES = 4 * 1024 * 1024
# How long entries committed on the event loop wait before they go to the printer thread.
_PRINT_INTERVAL_S = 0.05
# How long closing the log waits for the printer to print what is left.
_PRINT_DRAIN_S = 5.0
# Outcomes a failed commit could not write wait for the next one that succeeds; at most this
# many (a share whose outcome is lost is closed as `unknown` on the next start).
_HELD_OUTCOMES_MAX = 100_000


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _resolve(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.done():  # the waiting request was cancelled; its record stands regardless
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def _settle(
    loop: asyncio.AbstractEventLoop,
    results: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
) -> None:
    # A closed loop raises RuntimeError: nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_resolve, results)


class ShareLog:
    """The durable, hash-chained, pseudonymous share log (a `ShareSink`).

    A record is committed before `record()` returns in both modes ("no share without a record");
    concurrent records share one commit.

    In `batched` mode the event loop commits itself: the records of one loop iteration are
    appended in one transaction after it, with no thread hand-off on a share's path (a commit
    without a sync is a few tens of microseconds). In `strict` mode every commit is synced to
    disk (`synchronous=FULL`), which the loop must not wait on: records go on a queue to the
    writer thread, which takes whatever is queued (up to `batch_max_records`, or what keeps
    arriving within `batch_interval_ms`), commits, and resolves every waiter of that batch.

    The writer thread also does everything else: opening, closing, pruning, checkpointing the
    WAL, and retrying after a failed write. A lock makes the two take turns on the connection;
    the loop never waits for it: when the writer holds it, the loop queues its batch instead.
    """

    def __init__(
        self,
        settings: ShareLogSettings,
        master_key: bytes,
        *,
        logger: EventLogger | None = None,
        busy_timeout_s: float = 5.0,
        retry_interval_s: float = 1.0,
        connect: Connect | None = None,
    ) -> None:
        """Use `await ShareLog.open(...)`; the constructor starts nothing."""
        if not master_key:
            raise ValueError("the share log needs the master key to seal its entries")
        self.settings = settings
        self._master_key = master_key
        self._log: EventLogger = logger if logger is not None else structlog.get_logger("share_log")
        self._logger_given = logger is not None  # else entries go straight to stdout as JSON
        self._busy_timeout_s = busy_timeout_s
        self._retry_interval_s = retry_interval_s
        self._connect = connect
        self._queue: queue.SimpleQueue[_Write | _Control] = queue.SimpleQueue()
        self._ledger: Ledger | None = None
        self._lock_fd: int | None = None
        self._writable = False
        self._closing = False
        self._interval_s = settings.batch_interval_ms / 1000
        self._max_batch = settings.batch_max_records
        self._thread = threading.Thread(target=self._main, name="share-log-writer", daemon=True)
        self._started: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._inline = settings.durability == "batched"
        self._lock = threading.Lock()  # held by whoever uses the ledger
        self._pending: list[_Write] = []  # this loop iteration's writes, committed after it
        self._flush_soon = False  # a record waits: _flush runs at the end of this turn
        self._flush_later: asyncio.TimerHandle | None = None  # only outcomes wait
        self._uncheckpointed = False
        self._checkpointer: sqlite3.Connection | None = None  # the writer thread's own
        self._checkpoint_due = 0.0
        self._to_print: list[Entry] = []  # committed on the loop, for the printer
        self._printer: Printer | None = None  # with `stdout`, from open() to close()
        self._held: list[_Write] = []  # outcomes for the next commit (under the lock)
        self._identity: tuple[int, int] | None = None  # the file's (device, inode) at start
        self._replaced = False  # the file was removed or replaced: nothing more is written
        self._disk_low = False  # under MIN_FREE_BYTES free beside the log at the last look

    @classmethod
    async def open(
        cls,
        settings: ShareLogSettings,
        master_key: bytes,
        *,
        logger: EventLogger | None = None,
        busy_timeout_s: float = 5.0,
        retry_interval_s: float = 1.0,
        connect: Connect | None = None,
    ) -> ShareLog:
        """Open (or create) the log, close shares a crash left open as `unknown`, start the writer.

        Raises ShareLogUnavailable when the file cannot be opened, is used by another gateway,
        or its signed head does not match its last entry. After a failed write, the writer
        tries again every `retry_interval_s` even when no request comes (a gateway reported
        not ready gets none). `connect` replaces `sqlite3.connect` (fault injection in tests).
        """
        log = cls(
            settings,
            master_key,
            logger=logger,
            busy_timeout_s=busy_timeout_s,
            retry_interval_s=retry_interval_s,
            connect=connect,
        )
        log._loop = asyncio.get_running_loop()
        log._loop_thread = threading.get_ident()
        log._started = log._loop.create_future()
        if settings.stdout:
            log._printer = Printer(log._print, log._lose_lines)
        log._thread.start()
        try:
            await log._started
        except BaseException:
            await log._stop_printer()
            raise
        return log

    @property
    def path(self) -> Path:
        return self.settings.path

    # -- the ShareSink API (event-loop side) ---------------------------------------------------

    async def record(self, record: ShareRecord) -> None:
        if not isinstance(record, ShareRecord):
            raise TypeError("record() takes a ShareRecord")
        try:
            # Checked and serialised here, so the single writer thread only chains and stores.
            draft = draft_share(record)
        except (TypeError, ValueError) as exc:
            self._log.error("share_record_invalid", share_id=record.share_id, error=str(exc))
            raise ShareLogUnavailable("the share record is invalid") from exc
        await self._submit(draft, None)

    async def record_outcome(self, outcome: ShareOutcome) -> None:
        if not isinstance(outcome, ShareOutcome):
            raise TypeError("record_outcome() takes a ShareOutcome")
        await self._submit(outcome, datetime.now(UTC))

    def submit_outcome(self, outcome: ShareOutcome) -> None:
        if not isinstance(outcome, ShareOutcome):
            raise TypeError("submit_outcome() takes a ShareOutcome")
        if self._closing or not self._thread.is_alive():
            raise ShareLogUnavailable("the share log is closed")
        loop = asyncio.get_running_loop()
        self._put(_Write(outcome, datetime.now(UTC), loop, None, time.perf_counter()))

    def writable(self) -> bool:
        return self._writable and not self._closing and not self._disk_low

    async def prune(self, before: datetime, *, dry_run: bool = False) -> PruneResult:
        """Remove entries older than `before` (refused inside `retention_days`); sealed cut.

        Raises PruneUnverified when the entries it would remove do not verify.
        """
        return await self._call(lambda: self._prune(before, dry_run))

    async def close(self) -> None:
        """Drain the queue, close shares left open as `unknown`, write the final checkpoint."""
        if self._closing:
            return
        self._flush()  # what was recorded before close() is written, not refused
        self._hand_over_printing()
        self._closing = True
        if self._thread.is_alive():
            await self._call(self._close, stop=True)
            # The writer has resolved its last future and is returning; this join is immediate.
            self._thread.join()
        await self._stop_printer()

    async def _stop_printer(self) -> None:
        printer, self._printer = self._printer, None
        if printer is not None:
            # Off the loop: a stdout nobody reads holds this up to `_PRINT_DRAIN_S`.
            await asyncio.to_thread(printer.close, _PRINT_DRAIN_S)

    async def _submit(self, payload: ShareDraft | ShareOutcome, ts: datetime | None) -> None:
        if self._closing or not self._thread.is_alive():
            raise ShareLogUnavailable("the share log is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._put(_Write(payload, ts, loop, future, time.perf_counter()))
        await future

    def _put(self, write: _Write) -> None:
        if not self._inline:
            SHARE_LOG_QUEUE_DEPTH.inc()
            self._queue.put(write)
            return
        self._pending.append(write)
        if write.future is not None:
            if not self._flush_soon:
                self._flush_soon = True
                write.loop.call_soon(self._flush)
        elif self._flush_later is None and not self._flush_soon:
            # Nobody waits for an outcome: it rides with the next record's commit, or goes on
            # its own after `batch_interval_ms`. Committed at once, it would delay the answer
            # it belongs to (the commit would run before aiohttp writes that answer).
            self._flush_later = write.loop.call_later(self._interval_s, self._flush)

    def _flush(self) -> None:
        """Commit this loop turn's writes here, or queue them for the writer thread when it (or
        another process) holds the log."""
        batch, self._pending = self._pending, []
        self._flush_soon = False
        if self._flush_later is not None:
            self._flush_later.cancel()
            self._flush_later = None
        if not batch:
            return
        written = False
        if self._lock.acquire(blocking=False):
            try:
                # After a failure, the writer thread owns the retries and the `resume` seal.
                if self._writable and not self._closing:
                    try:
                        written = self._write(batch, inline=True)
                    except Exception:
                        # A fault in the writing code itself: nobody may wait forever.
                        written = True
                        self._writable = False
                        self._log.error("share_log_write_failed", records=len(batch))
                        self._fail(batch)
                    self._uncheckpointed = True
            finally:
                self._lock.release()
        if written:
            if not self._writable:
                self._queue.put(_WAKE)  # the write failed: the writer starts retrying
            return
        if not self._thread.is_alive():
            self._fail(batch)  # a writer that died answers nothing queued to it
            return
        SHARE_LOG_QUEUE_DEPTH.inc(len(batch))
        for write in batch:
            self._queue.put(write)

    async def _call(self, run: Callable[[], T], *, stop: bool = False) -> T:
        # Nothing may queue up behind the closing call: the writer stops after it.
        if (self._closing and not stop) or not self._thread.is_alive():
            raise ShareLogUnavailable("the share log is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Control(run, loop, future, stop))
        return await future

    # -- the writer thread ---------------------------------------------------------------------

    def _main(self) -> None:
        loop, started = self._loop, self._started
        if loop is None or started is None:  # pragma: no cover - only open() starts the thread
            return
        try:
            with self._lock:
                self._start()
        except Exception as exc:
            self._drop_ledger()
            self._release()
            error = ShareLogUnavailable(f"share log {self.settings.path}: {exc}")
            error.__cause__ = exc
            _settle(loop, [(started, None, error)])
            return
        _settle(loop, [(started, None, None)])
        try:
            self._serve()
        except BaseException as exc:  # pragma: no cover - a bug in the writer itself
            self._writable = False
            self._log.error("share_log_writer_crashed", error=repr(exc))
            self._fail_queued()
            self._release()
            raise

    def _start(self) -> None:
        path = self.settings.path
        # Beside the file itself, not the name it was given: a second gateway opening the same
        # file through a symlink must meet the same lock. Its folder is made there too, as a
        # new log is (`create_whole`): `path.parent` may be a symlink to a folder not made yet.
        real = resolved(path)
        real.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(real.with_name(real.name + LOCK_SUFFIX), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            # Two writers would close each other's open shares as `unknown` on start.
            raise ShareLogUnavailable("in use by another gateway process") from exc
        self._lock_fd = fd
        # A start killed while it built a new log left this; it never held a record.
        for leftover in remove_leftovers(real):
            self._log.info("share_log_leftover_removed", path=str(leftover))
        ledger = self._open_ledger()
        self._identity = _identity(path)
        now = datetime.now(UTC)
        try:
            ledger.begin()
            unknown = ledger.add_unknown_outcomes(now)
            ledger.add_checkpoint("open", now)
            entries = ledger.commit(now)
        except BaseException:
            ledger.rollback()
            raise
        self._emit(entries)
        if ledger.created and self.settings.stdout:
            # Once per deployment, and otherwise the only sign outside the file that a log was
            # deleted: the gateway cannot tell a first start from a deleted log (an emptied one
            # is refused). It goes with the checkpoint lines, the log's anchor outside the file
            # (none without `stdout`). Said again by the next start if this one is killed
            # before its first checkpoint: the log is new until a start is written in it.
            self._log.warning("share_log_created", path=str(path))
        if unknown:
            self._log.warning(
                "share_outcomes_unknown",
                count=len(unknown),
                share_ids=[e["share_id"] for e in unknown],
            )
        self._writable = True

    def _open_ledger(self) -> Ledger:
        # Opened again after a failed write: the file must still be the one opened at start.
        # A retry would otherwise start a new, empty log where one was removed meanwhile.
        if self._identity is not None and not self._replaced:
            try:
                self._replaced = _identity(self.settings.path) != self._identity
            except OSError:
                self._replaced = True
            if self._replaced:
                self._log.error("share_log_file_replaced", path=str(self.settings.path))
        if self._replaced:
            raise ShareLogUnavailable(
                "the share log file was removed or replaced while the gateway ran; "
                "restart the gateway"
            )
        ledger = Ledger.open(
            self.settings.path,
            self._master_key,
            durability=self.settings.durability,
            checkpoint_every=self.settings.checkpoint_every,
            busy_timeout_s=self._busy_timeout_s,
            connect=self._connect,
        )
        if self._inline:
            # A commit that crossed the threshold would checkpoint (and sync) on the event loop.
            ledger.conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._ledger = ledger
        return ledger

    def _current_ledger(self) -> Ledger:
        """The open ledger; after a failed write, a fresh connection (the disk may be back)."""
        if self._ledger is not None:
            return self._ledger
        return self._open_ledger()

    def _drop_ledger(self) -> None:
        ledger, self._ledger = self._ledger, None
        if ledger is None:
            return
        # The connection is discarded after a failure; its own errors add nothing.
        with contextlib.suppress(Exception):
            ledger.rollback()
        with contextlib.suppress(Exception):
            ledger.close()

    def _next(self) -> _Write | _Control:
        while True:
            writable = self._writable
            if writable:
                # Due whether or not the writer has work: the loop's commits may keep it busy.
                now = time.monotonic()
                if now >= self._checkpoint_due:
                    self._check_file()
                    self._check_space()
                    self._checkpoint()
                    self._checkpoint_due = now + _CHECKPOINT_INTERVAL_S
                timeout = self._checkpoint_due - now
            else:
                timeout = self._retry_interval_s
            try:
                return self._queue.get(timeout=timeout)
            except queue.Empty:
                if not writable:
                    with self._lock:
                        self._resume()

    def _check_file(self) -> None:
        """Stop writing when the log's file was removed or replaced under the open connection.

        Records would go on into a file nobody can read again, and be lost at exit. Nothing is
        written until the gateway restarts (and starts a log there, or opens the one put back).
        """
        try:
            same = _identity(self.settings.path) == self._identity
        except OSError:
            same = False
        if same:
            return
        with self._lock:
            self._replaced = True
            self._writable = False
            self._drop_ledger()
        self._log.error("share_log_file_replaced", path=str(self.settings.path))

    def _check_space(self) -> None:
        try:
            found = os.statvfs(self.settings.path.parent)
        except OSError:
            return  # the file check reports a folder that went away
        free = found.f_bavail * found.f_frsize
        low = free < MIN_FREE_BYTES
        if low == self._disk_low:
            return
        self._disk_low = low
        if low:
            self._log.error("share_log_disk_low", free_bytes=free, path=str(self.settings.path))
        else:
            self._log.info("share_log_disk_ok", free_bytes=free)

    def _checkpoint(self) -> None:
        if not self._uncheckpointed:
            return
        self._uncheckpointed = False
        try:
            # First on a connection of its own, so the loop goes on committing while the bulk
            # of the WAL is copied and the file synced (milliseconds; on the ledger's connection
            # the loop would queue its records behind it). PASSIVE never waits for anyone.
            if self._checkpointer is None:
                # `mode=rw`: never creates the file (a log removed under it stays removed).
                uri = f"file:{urllib.parse.quote(str(self.settings.path.resolve()))}?mode=rw"
                self._checkpointer = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            # That copy never catches up with a loop that keeps committing, and SQLite starts
            # the WAL over only after a checkpoint that did: without this, the WAL and its index
            # (mapped into memory, searched on every read) would grow as long as the load lasts.
            # Then on the writer's own connection, holding the lock, for the few new pages.
            with self._lock:
                if self._ledger is not None:
                    self._ledger.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:
            self._log.warning("share_log_checkpoint_failed", error=str(exc))

    def _resume(self) -> None:
        """Try the store again; when it takes a write, seal a `resume` checkpoint."""
        held: list[_Write] = []
        try:
            ledger = self._current_ledger()
            now = datetime.now(UTC)
            ledger.begin()
            held = self._add_held(ledger, now)
            ledger.add_checkpoint("resume", now)
            entries = ledger.commit(now)
        except Exception:
            self._drop_ledger()
            self._hold(held)
            return
        self._writable = True
        self._log.info("share_log_writable_again")
        self._emit(entries)

    def _serve(self) -> None:
        get_nowait = self._queue.get_nowait
        while True:
            item = self._next()
            if isinstance(item, _Control):
                if self._locked_control(item):
                    return
                continue
            batch = [item]
            control: _Control | None = None
            deadline = time.monotonic() + self._interval_s
            while len(batch) < self._max_batch:
                try:
                    nxt = get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, _Control):
                    control = nxt  # runs after the writes queued before it
                    break
                batch.append(nxt)
                if time.monotonic() >= deadline:
                    break
            if control is None and all(w.future is None for w in batch):
                control = self._await_company(batch)
            SHARE_LOG_QUEUE_DEPTH.dec(len(batch))
            with self._lock:
                self._write(batch)
            if control is not None and self._locked_control(control):
                return

    def _await_company(self, batch: list[_Write]) -> _Control | None:
        """Hold a batch nobody waits for (outcomes) until a waited record joins, or briefly.

        The next share's record then shares the commit with the previous share's outcome
        instead of queueing behind it. Returns a control item that arrived meanwhile.
        """
        deadline = time.monotonic() + self._interval_s
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                nxt = self._queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if isinstance(nxt, _Control):
                return nxt
            batch.append(nxt)
            if nxt.future is not None:
                return None
        return None

    def _write(self, batch: list[_Write], *, inline: bool = False) -> bool:
        """Append and commit `batch`, then answer its waiters (refusals too); True once done.

        `inline` (on the event loop): False, having done nothing, when another connection
        (`logs prune` from the command line) holds the write lock, which the loop must not wait
        for; the writer thread, which may wait, takes the batch instead.
        """
        now = datetime.now(UTC)
        accepted: list[_Write] = []
        invalid: list[tuple[_Write, Exception]] = []
        held: list[_Write] = []
        try:
            if inline:
                # Opening a connection (after a failure) may wait on SQLite: the writer does it.
                if self._ledger is None or not self._ledger.try_begin():
                    return False
                ledger = self._ledger
            else:
                ledger = self._current_ledger()
                ledger.begin()
            held = self._add_held(ledger, now)
            for write in batch:
                try:
                    if isinstance(write.payload, ShareDraft):
                        ledger.add_share(write.payload)
                    else:
                        ledger.add_outcome(write.payload, write.ts or now)
                except (TypeError, ValueError) as exc:
                    invalid.append((write, exc))
                    continue
                accepted.append(write)
            if not self._writable:  # the first batch after a failure marks the resumption
                ledger.add_checkpoint("resume", now)
            entries = ledger.commit(now)
        except Exception as exc:
            # Disk full, read-only, locked, I/O error, a tampered head: nothing of this batch
            # is recorded, so none of its shares may go ahead.
            self._drop_ledger()
            self._writable = False
            self._log.error("share_log_write_failed", error=str(exc), records=len(batch))
            self._hold([*held, *batch])
            self._fail(batch)
            return True
        self._writable = True
        done = time.perf_counter()
        for write in accepted:
            if write.future is not None:  # outcomes wait by design, and no request for them
                SHARE_LOG_WRITE_LATENCY.observe(done - write.enqueued)
        self._finish(accepted, None)
        for _, problem in invalid:
            self._log.error("share_record_invalid", error=str(problem))
        self._fail([w for w, _ in invalid], "the share record is invalid")
        self._emit(entries)
        return True

    def _finish(self, writes: list[_Write], message: str | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for write in writes:
            if write.future is None:
                continue  # a submitted outcome: its loss is logged, nobody is waiting
            error = None if message is None else ShareLogUnavailable(message)
            by_loop.setdefault(write.loop, []).append((write.future, None, error))
        on_loop = threading.get_ident() == self._loop_thread
        for loop, results in by_loop.items():
            if on_loop and loop is self._loop:
                _resolve(results)  # a batch the loop committed itself
            else:
                _settle(loop, results)

    def _fail(self, writes: list[_Write], message: str = _UNAVAILABLE) -> None:
        if writes:
            self._finish(writes, message)

    def _hold(self, writes: list[_Write]) -> None:
        """Keep the submitted outcomes of a failed commit for the next commit that succeeds.

        Nobody waits for them, and their shares went ahead: dropped, a delivered share would be
        closed as `unknown`. Records are not kept: their requests were refused.
        """
        self._held.extend(w for w in writes if w.future is None)
        excess = len(self._held) - _HELD_OUTCOMES_MAX
        if excess > 0:
            del self._held[:excess]
            self._log.error("share_outcomes_dropped", count=excess)

    def _add_held(self, ledger: Ledger, now: datetime) -> list[_Write]:
        """Append the held outcomes to the open transaction; return them (to hold them again
        should it fail)."""
        if not self._held:  # the usual case, on every commit: nothing to add
            return []
        held, self._held = self._held, []
        added = []
        try:
            for write in held:
                if not isinstance(write.payload, ShareOutcome):
                    continue
                try:
                    ledger.add_outcome(write.payload, write.ts or now)
                except (TypeError, ValueError) as exc:  # never checked if its batch failed early
                    self._log.error("share_record_invalid", error=str(exc))
                    continue
                added.append(write)
        except BaseException:
            self._held = held + self._held  # the transaction fails: all of them wait again
            raise
        return added

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Write):
                SHARE_LOG_QUEUE_DEPTH.dec()
                self._fail([item])
            elif item.future is None:
                item.run()  # a wake-up: never refused
            elif item.loop is not None:
                _settle(item.loop, [(item.future, None, ShareLogUnavailable(_UNAVAILABLE))])

    def _locked_control(self, item: _Control) -> bool:
        if not item.ledger:
            return self._control(item)
        with self._lock:
            return self._control(item)

    def _control(self, item: _Control) -> bool:
        try:
            value = item.run()
        except Exception as exc:
            if item.future is None or item.loop is None:
                raise
            _settle(item.loop, [(item.future, None, exc)])
        else:
            if item.future is not None and item.loop is not None:
                _settle(item.loop, [(item.future, value, None)])
        return item.stop

    def _prune(self, before: datetime, dry_run: bool) -> PruneResult:
        try:
            ledger = self._current_ledger()
            result, entries = ledger.prune(
                before,
                now=datetime.now(UTC),
                retention_days=self.settings.retention_days,
                dry_run=dry_run,
            )
        except (ValueError, PruneUnverified):
            raise  # refused, nothing written: the connection is as good as before
        except Exception as exc:
            self._drop_ledger()
            raise ShareLogUnavailable(f"{_UNAVAILABLE}: {exc}") from exc
        self._emit(entries)
        if result.checkpoint_seq is not None:
            self._log.info(
                "share_log_pruned",
                before=result.before.isoformat(),
                cut_seq=result.cut_seq,
                shares=result.shares,
                outcomes=result.outcomes,
                checkpoints=result.checkpoints,
            )
        return result

    def _close(self) -> None:
        self._writable = False
        held: list[_Write] = []
        try:
            ledger = self._current_ledger()
            now = datetime.now(UTC)
            ledger.begin()
            # What became of those shares is known: they are not `unknown`.
            held = self._add_held(ledger, now)
            unknown = ledger.add_unknown_outcomes(now)
            ledger.add_checkpoint("close", now)
            entries = ledger.commit(now)
            self._emit(entries)
            if unknown:
                self._log.warning("share_outcomes_unknown", count=len(unknown))
        except Exception as exc:
            # Held outcomes go with the process; the next start closes their shares as
            # `unknown`. Say how many.
            lost = len(held) + len(self._held)
            self._log.error("share_log_close_failed", error=str(exc), outcomes_lost=lost)
        finally:
            self._drop_ledger()
            self._fail_queued()
            self._release()

    def _release(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def _hand_over_printing(self) -> None:
        entries, self._to_print = self._to_print, []
        if entries and self._printer is not None:
            self._printer.put(entries)

    def _emit(self, entries: list[Entry]) -> None:
        if self._printer is None:
            return
        if threading.get_ident() == self._loop_thread:
            # Committed on the event loop: handed over a few times a second, not once per
            # commit, since every hand-off makes the threads trade the interpreter lock.
            if not self._to_print and self._loop is not None:
                self._loop.call_later(_PRINT_INTERVAL_S, self._hand_over_printing)
            self._to_print.extend(entries)
            return
        self._printer.put(entries)

    def _print(self, entries: list[Entry]) -> None:
        """On the printer thread: one line per entry, on stdout or to the given logger."""
        events = [
            (
                _EVENTS[entry["kind"]],
                # The mac is kept for checkpoints only: a signed anchor held outside the file.
                {
                    k: v
                    for k, v in entry.items()
                    if k != "kind" and (k != "mac" or entry["kind"] == "checkpoint")
                },
            )
            for entry in entries
        ]
        if self._logger_given:
            for event, fields in events:
                self._log.info(event, **fields)
            return
        write_json_lines(events, STDOUT)  # a stdout that fails loses lines, not the log

    def _lose_lines(self, count: int) -> None:
        if self._logger_given:
            self._log.error("share_log_lines_lost", count=count)
        else:
            STDOUT.lose(count, "the share log's lines waited too long for stdout")
