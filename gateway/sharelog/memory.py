"""An in-memory share sink for other modules' tests: keeps what it is given, refuses on demand."""

from __future__ import annotations

from gateway.errors import ShareLogUnavailable
from gateway.sharelog.record import ShareOutcome, ShareRecord


class MemoryShareLog:
    """A `ShareSink` that appends to lists; set `available = False` to make every write fail."""

    def __init__(self) -> None:
        self.records: list[ShareRecord] = []
        self.outcomes: list[ShareOutcome] = []
        self.available = True
        self.closed = False

    async def record(self, record: ShareRecord) -> None:
        self._check()
        self.records.append(record)

    async def record_outcome(self, outcome: ShareOutcome) -> None:
        self._check()
        self.outcomes.append(outcome)

    def submit_outcome(self, outcome: ShareOutcome) -> None:
        self._check()
        self.outcomes.append(outcome)

    def writable(self) -> bool:
        return self.available and not self.closed

    async def close(self) -> None:
        self.closed = True

    def outcome_of(self, share_id: str) -> ShareOutcome | None:
        """The last outcome recorded for a share, if any."""
        for outcome in reversed(self.outcomes):
            if outcome.share_id == share_id:
                return outcome
        return None

    def _check(self) -> None:
        if not self.writable():
            raise ShareLogUnavailable("the share log cannot be written")
