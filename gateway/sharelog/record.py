"""What the gateway tells the share log: a record per decision, an outcome per forwarded share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal, Protocol, get_args

Decision = Literal["shared", "denied", "error"]
Outcome = Literal["pending", "delivered", "timeout", "error", "possibly_delivered", "unknown"]

DECISIONS: frozenset[str] = frozenset(get_args(Decision))
OUTCOMES: frozenset[str] = frozenset(get_args(Outcome))

# A subject reference is a keyed HMAC-SHA256 in hex. Anything else is refused, so a raw subject id
# handed over by mistake never reaches the disk.
_SUBJECT_REF = re.compile(r"[0-9a-f]{64}")


# Not frozen: one is built for every share, and a frozen dataclass sets each field through
# `object.__setattr__`, several times the cost of an assignment. Its `Final` fields keep it
# immutable wherever mypy checks.
@dataclass(slots=True)
class ShareRecord:
    """The gateway's decision on one request, written before anything is forwarded."""

    share_id: Final[str]
    ts: Final[datetime]  # timezone-aware; stored in UTC
    partner: Final[str | None]
    contract_id: Final[str | None]
    contract_version: Final[int | None]
    contract_sha256: Final[str | None]
    caller: Final[str | None]
    purpose: Final[str | None]
    method: Final[str]
    route: Final[str | None]  # the route template, e.g. "POST /v1/assess"
    decision: Final[Decision]
    reason: Final[str]  # "shared", or the error code of the refusal
    fields_sent: Final[tuple[str, ...]] = ()
    fields_stripped: Final[tuple[str, ...]] = ()
    fields_transformed: Final[tuple[str, ...]] = ()
    categories_sent: Final[tuple[str, ...]] = ()
    pii_redactions: Final[Mapping[str, int]] = field(default_factory=dict)
    records: Final[int] = 0
    subject_refs: Final[tuple[str, ...]] = ()  # keyed hashes (keys.subject_ref_key), never raw ids
    bytes_sent: Final[int] = 0
    upstream_location: Final[str | None] = None
    cross_border_mechanism: Final[str | None] = None
    consent_basis: Final[tuple[str, ...]] = ()  # consent registry references or consent token jti

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None or self.ts.utcoffset() is None:
            raise ValueError("ShareRecord.ts must be timezone-aware")
        if self.decision not in DECISIONS:
            raise ValueError(f"ShareRecord.decision must be one of {sorted(DECISIONS)}")
        for ref in self.subject_refs:
            if not isinstance(ref, str) or _SUBJECT_REF.fullmatch(ref) is None:
                raise ValueError("ShareRecord.subject_refs must be keyed hashes (64 hex digits)")


# Not frozen, for the reason given at ShareRecord; `Final` keeps it immutable.
@dataclass(slots=True)
class ShareOutcome:
    """What became of a forwarded share; linked to its record by `share_id`."""

    share_id: Final[str]
    outcome: Final[Outcome]
    upstream_status: Final[int | None]
    bytes_received: Final[int]
    latency_ms: Final[float]

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
