"""The share log: the durable, tamper-evident, pseudonymous record of every decision."""

from __future__ import annotations

from gateway.sharelog.memory import MemoryShareLog
from gateway.sharelog.record import Decision, Outcome, ShareOutcome, ShareRecord, ShareSink
from gateway.sharelog.store import ShareLog

__all__ = [
    "Decision",
    "MemoryShareLog",
    "Outcome",
    "ShareLog",
    "ShareOutcome",
    "ShareRecord",
    "ShareSink",
]
