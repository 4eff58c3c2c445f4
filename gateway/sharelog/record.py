"""What the gateway tells the share log: a record per decision, an outcome per forwarded share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, get_args

Decision = Literal["shared", "denied", "error"]
Outcome = Literal["pending", "delivered", "timeout", "error", "possibly_delivered", "unknown"]

DECISIONS: frozenset[str] = frozenset(get_args(Decision))
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))

# A subject reference is a keyed HMAC-SHA256 in hex. Anything else is refused, so a raw subject id
# handed over by mistake never reaches the disk.
_SUBJECT_REF = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """The gateway's decision on one request, written before anything is forwarded."""

    share_id: str
    ts: datetime  # timezone-aware; stored in UTC
    partner: str | None
    contract_id: str | None
    contract_version: int | None
    contract_sha256: str | None
    caller: str | None
    purpose: str | None
    method: str
    route: str | None  # the route template, e.g. "POST /v1/assess"
    decision: Decision
    reason: str  # "shared", or the error code of the refusal
    fields_sent: tuple[str, ...] = ()
    fields_stripped: tuple[str, ...] = ()
    fields_transformed: tuple[str, ...] = ()
    categories_sent: tuple[str, ...] = ()
    pii_redactions: Mapping[str, int] = field(default_factory=dict)
    records: int = 0
    subject_refs: tuple[str, ...] = ()  # keyed hashes (keys.subject_ref_key), never raw ids
    bytes_sent: int = 0
    upstream_location: str | None = None
    cross_border_mechanism: str | None = None
    consent_basis: tuple[str, ...] = ()  # consent registry references or consent token jti

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None or self.ts.utcoffset() is None:
            raise ValueError("ShareRecord.ts must be timezone-aware")
        if self.decision not in DECISIONS:
            raise ValueError(f"ShareRecord.decision must be one of {sorted(DECISIONS)}")
        for ref in self.subject_refs:
            if not isinstance(ref, str) or _SUBJECT_REF.fullmatch(ref) is None:
                raise ValueError("ShareRecord.subject_refs must be keyed hashes (64 hex digits)")


@dataclass(frozen=True, slots=True)
class ShareOutcome:
    """What became of a forwarded share; linked to its record by `share_id`."""

    share_id: str
    outcome: Outcome
    upstream_status: int | None
    bytes_received: int
    latency_ms: float

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"ShareOutcome.outcome must be one of {sorted(OUTCOMES)}")


class ShareSink(Protocol):
    """Where the gateway records its decisions; the request waits for each call."""

    async def record(self, record: ShareRecord) -> None:
        """Return once the record is durable per the log's mode; raise ShareLogUnavailable."""
        ...

    async def record_outcome(self, outcome: ShareOutcome) -> None:
        """Append the outcome of a share, with the same durability as `record`."""
        ...

    def submit_outcome(self, outcome: ShareOutcome) -> None:
        """Hand an outcome to the log without waiting: the log owns it until it is written.

        The caller's answer need not wait for it: a share whose outcome a crash lost is closed
        as `unknown` when the log is opened again. Raises ShareLogUnavailable when closed.
        """
        ...

    def writable(self) -> bool:
        """False while the last write failed (for `/_gateway/ready`)."""
        ...
