"""The share log: the durable, tamper-evident, pseudonymous record of every decision."""

from __future__ import annotations

# The writer (`gateway.sharelog.store.ShareLog`) is imported from its module: it brings asyncio,
# structlog and the metrics, which the `logs` commands, reading through this package, never use.
from gateway.sharelog.memory import MemoryShareLog
from gateway.sharelog.record import Decision, Outcome, ShareOutcome, ShareRecord, ShareSink

__all__ = [
    "Decision",
    "MemoryShareLog",
    "Outcome",
    "ShareOutcome",
    "ShareRecord",
    "ShareSink",
]
