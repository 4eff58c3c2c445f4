"""The share log's lines on stdout, printed on a thread of their own."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from gateway.sharelog.chain import Entry

# Entries waiting for a stdout that stopped taking lines (a log collector that stopped
# reading): about a kilobyte each. Beyond this many, new lines are lost, never the log's
# memory or its writer's time: the file holds every entry anyway.
MAX_WAITING = 10_000


class Printer:
    """Prints batches of committed entries in the order they are put, on a daemon thread.

    Writing to stdout can block for as long as its reader pleases. Done by the share log's
    writer thread, that stalled strict commits, WAL checkpoints and the retries after a failed
    write with it; here it stalls only this thread, and `put` never waits.
    """

    def __init__(self, print_batch: Callable[[list[Entry]], None], lose: Callable[[int], None]):
        self._print = print_batch
        self._lose = lose
        self._queue: queue.SimpleQueue[list[Entry] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._abandoned = False  # set by a `close` that gave up waiting
        self._thread = threading.Thread(target=self._main, name="share-log-printer", daemon=True)
        self._thread.start()

    def put(self, entries: list[Entry]) -> None:
        """Queue `entries` (the list is the printer's from now on) or, beyond `MAX_WAITING`,
        lose them."""
        with self._lock:
            room = MAX_WAITING - self._waiting
            lost = max(0, len(entries) - room)
            if lost:
                entries = entries[: len(entries) - lost]
            self._waiting += len(entries)
        if lost:
            self._lose(lost)
        if entries:
            self._queue.put(entries)

    def close(self, timeout_s: float) -> None:
        """Print what is waiting, for at most `timeout_s`; what is still waiting then is lost.

        Lines counted lost are never printed afterwards, should stdout take lines again before
        the process ends: the count said on stderr stays true. The batch being written when
        time ran out is counted too, as nothing says it will ever get through.
        """
        self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            with self._lock:
                lost, self._waiting = self._waiting, 0
                self._abandoned = True
            if lost:
                self._lose(lost)

    def _main(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            stop = False
            # Whatever else waits goes in the same write: one syscall, however far behind.
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            try:
                self._print(batch)
            except Exception:  # a logger that failed: these lines are lost, later ones are not
                self._lose(len(batch))
            with self._lock:
                if self._abandoned:
                    return  # what still waits was counted lost
                self._waiting -= len(batch)
            if stop:
                return
