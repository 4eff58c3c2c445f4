"""The share log's chain: canonical entries, their hashes, and seals that need the master key."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

from gateway.keys import derive_key, hmac_sha256
from gateway.sharelog.record import ShareOutcome, ShareRecord

# An entry is a JSON object: `kind` ("share", "outcome" or "checkpoint"), `seq`, `prev_hash` and
# the kind's fields. Its `hash` is the SHA-256 (hex) of the entry serialised as compact JSON with
# sorted keys (UTF-8, without `hash` and `mac`): anyone holding an export can recompute it and
# follow the `prev_hash` links. Its `mac` is HMAC-SHA256 over the hash with a sub-key of the
# master key, so rewriting a record and re-forging every later hash still fails at that very
# record. The sealed `head` (seq and hash of the last entry) is what shows a truncated tail; an
# export's sealed header (its `to_seq` and `to_hash`) does so for a window that stops before it.
Entry = dict[str, Any]
EntryKind = Literal["share", "outcome", "checkpoint"]
CheckpointReason = Literal["open", "periodic", "close", "prune", "resume"]

GENESIS_HASH = "0" * 64
CHECKPOINT_KEY_LABEL = "share-log-checkpoint"

SHARE_FIELDS = (
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
)
OUTCOME_FIELDS = (
    "share_id",
    "share_seq",
    "ts",
    "outcome",
    "upstream_status",
    "bytes_received",
    "latency_ms",
)
CHECKPOINT_FIELDS = ("ts", "reason", "cut_seq", "cut_prev_hash")
LIST_FIELDS = frozenset(
    {
        "fields_sent",
        "fields_stripped",
        "fields_transformed",
        "categories_sent",
        "subject_refs",
        "consent_basis",
    }
)
MAP_FIELDS = frozenset({"pii_redactions"})

_INT64 = 1 << 63
# SHARE_FIELDS, each with whether its column holds JSON text (a list or a map).
_SHARE_COLUMNS = tuple((name, name in LIST_FIELDS or name in MAP_FIELDS) for name in SHARE_FIELDS)


def seal_key(master_key: bytes) -> bytes:
    """The key that seals entries, checkpoints, the head and export headers; used for nothing
    else."""
    return derive_key(master_key, CHECKPOINT_KEY_LABEL)


def format_ts(ts: datetime) -> str:
    """Fixed-width UTC text, so that ordering the text orders the instants."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return ts.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def canonical(entry: Mapping[str, Any]) -> bytes:
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)


def entry_hash(entry: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def entry_mac(key: bytes, digest: str) -> str:
    return hmac_sha256(key, b"entry:" + digest.encode("ascii")).hex()


def head_mac(key: bytes, seq: int, digest: str) -> str:
    return hmac_sha256(key, f"head:{seq}:{digest}".encode("ascii")).hex()


def header_mac(key: bytes, header: Mapping[str, Any]) -> str:
    """The seal of an export's header: its canonical JSON without `mac`. The `export:` prefix
    keeps it apart from an entry's and the head's, so no seal can stand in for another."""
    fields = {k: v for k, v in header.items() if k != "mac"}
    return hmac_sha256(key, b"export:" + canonical(fields)).hex()


def macs_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


def seal(entry: Entry, key: bytes) -> Entry:
    """Add `hash` and `mac` to an entry (in place) and return it."""
    digest = entry_hash(entry)
    entry["hash"] = digest
    entry["mac"] = entry_mac(key, digest)
    return entry


def unsealed(entry: Mapping[str, Any]) -> Entry:
    """The entry as it was hashed: without its `hash` and `mac`."""
    return {k: v for k, v in entry.items() if k not in ("hash", "mac")}


# The scalar fields of each kind and the types they may hold. SQLite's column affinity would turn a
# wrong type into another value (1.0 -> 1, 5 -> '5'), and the stored row would no longer hash to the
# sealed hash, so wrong types are refused up front. Lists and maps round-trip as JSON text.
_SHARE_SCALARS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("share_id", (str,)),
    ("partner", (str, type(None))),
    ("contract_id", (str, type(None))),
    ("contract_version", (int, type(None))),
    ("contract_sha256", (str, type(None))),
    ("caller", (str, type(None))),
    ("purpose", (str, type(None))),
    ("method", (str,)),
    ("route", (str, type(None))),
    ("decision", (str,)),
    ("reason", (str,)),
    ("records", (int,)),
    ("bytes_sent", (int,)),
    ("upstream_location", (str, type(None))),
    ("cross_border_mechanism", (str, type(None))),
)
_OUTCOME_SCALARS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("share_id", (str,)),
    ("outcome", (str,)),
    ("upstream_status", (int, type(None))),
    ("bytes_received", (int,)),
)


def _check(entry: Entry, scalars: tuple[tuple[str, tuple[type, ...]], ...]) -> None:
    for name, types in scalars:
        value = entry[name]
        if type(value) not in types:
            raise TypeError(f"{name} must be {' or '.join(t.__name__ for t in types)}")
        if type(value) is int and not -_INT64 <= value < _INT64:
            raise ValueError(f"{name} is out of range")


def share_entry(record: ShareRecord, seq: int, prev_hash: str) -> Entry:
    """The canonical entry of a share record; wrong field types raise TypeError."""
    r = record
    entry: Entry = {
        "kind": "share",
        "seq": seq,
        "prev_hash": prev_hash,
        "share_id": r.share_id,
        "ts": format_ts(r.ts),
        "partner": r.partner,
        "contract_id": r.contract_id,
        "contract_version": r.contract_version,
        "contract_sha256": r.contract_sha256,
        "caller": r.caller,
        "purpose": r.purpose,
        "method": r.method,
        "route": r.route,
        "decision": r.decision,
        "reason": r.reason,
        "fields_sent": list(r.fields_sent),
        "fields_stripped": list(r.fields_stripped),
        "fields_transformed": list(r.fields_transformed),
        "categories_sent": list(r.categories_sent),
        "pii_redactions": dict(r.pii_redactions),
        "records": r.records,
        "subject_refs": list(r.subject_refs),
        "bytes_sent": r.bytes_sent,
        "upstream_location": r.upstream_location,
        "cross_border_mechanism": r.cross_border_mechanism,
        "consent_basis": list(r.consent_basis),
    }
    _check(entry, _SHARE_SCALARS)
    return entry


# A share entry is mostly known before the writer gives it a place in the chain. A draft holds its
# canonical JSON with two slots, for `prev_hash` and `seq`, so the writer thread only splices them
# in and hashes: the rest of the work is done by the request that makes the record. The slot
# tokens cannot occur anywhere else in the JSON: they need an unescaped quote after a top-level
# key, and every other string is escaped while `pii_redactions` holds integers.
_PREV_SLOT = b'"prev_hash":"\\u0000prev"'
_SEQ_SLOT = b'"seq":"\\u0000seq"'


# Not frozen, as ShareRecord (gateway/sharelog/record.py); `Final` keeps it immutable.
@dataclass(slots=True)
class ShareDraft:
    """A share entry without its place in the chain, serialised up to the two slots."""

    fields: Final[Entry]  # the entry without `seq` and `prev_hash`
    head: Final[bytes]  # canonical JSON before the `prev_hash` slot
    middle: Final[bytes]  # between the `prev_hash` and `seq` slots
    tail: Final[bytes]  # after the `seq` slot
    values: Final[tuple[Any, ...]]  # the row's values for SHARE_FIELDS, JSON columns as text


def draft_share(record: ShareRecord) -> ShareDraft:
    """Check and serialise a share record ahead of the writer; wrong types raise TypeError."""
    fields = share_entry(record, 0, "")
    del fields["seq"], fields["prev_hash"]
    blob = canonical({**fields, "seq": "\x00seq", "prev_hash": "\x00prev"})
    head, prev_slot, rest = blob.partition(_PREV_SLOT)
    middle, seq_slot, tail = rest.partition(_SEQ_SLOT)
    if not prev_slot or not seq_slot:  # pragma: no cover - the tokens are unique by construction
        raise ValueError("the share entry cannot be drafted")
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    values = tuple(
        [
            dumps(fields[name], option=sort).decode() if json_column else fields[name]
            for name, json_column in _SHARE_COLUMNS
        ]
    )
    return ShareDraft(fields, head, middle, tail, values)


def draft_hash(draft: ShareDraft, seq: int, prev_hash: str) -> str:
    """The hash of the drafted entry at `seq` after `prev_hash`: the same as `entry_hash`."""
    body = b"".join(
        (
            draft.head,
            b'"prev_hash":"',
            prev_hash.encode("ascii"),
            b'"',
            draft.middle,
            b'"seq":',
            str(seq).encode("ascii"),
            draft.tail,
        )
    )
    return hashlib.sha256(body).hexdigest()


def outcome_entry(
    outcome: ShareOutcome, share_seq: int | None, ts: datetime, seq: int, prev_hash: str
) -> Entry:
    """The canonical entry of an outcome; `share_seq` is the seq of the share it belongs to."""
    latency = outcome.latency_ms
    if type(latency) not in (int, float):
        raise TypeError("latency_ms must be a number")
    entry: Entry = {
        "kind": "outcome",
        "seq": seq,
        "prev_hash": prev_hash,
        "share_id": outcome.share_id,
        "share_seq": share_seq,
        "ts": format_ts(ts),
        "outcome": outcome.outcome,
        "upstream_status": outcome.upstream_status,
        "bytes_received": outcome.bytes_received,
        # Stored as REAL: a float here keeps the hash stable across the round trip.
        "latency_ms": float(latency),
    }
    _check(entry, _OUTCOME_SCALARS)
    return entry


def unknown_outcome_entry(
    share_id: str, share_seq: int, ts: datetime, seq: int, prev_hash: str
) -> Entry:
    """The outcome of a share whose real outcome was never written (the process died)."""
    return {
        "kind": "outcome",
        "seq": seq,
        "prev_hash": prev_hash,
        "share_id": share_id,
        "share_seq": share_seq,
        "ts": format_ts(ts),
        "outcome": "unknown",
        "upstream_status": None,
        "bytes_received": 0,
        "latency_ms": None,
    }


def checkpoint_entry(
    reason: CheckpointReason,
    ts: datetime,
    seq: int,
    prev_hash: str,
    *,
    cut_seq: int | None = None,
    cut_prev_hash: str | None = None,
) -> Entry:
    """A sealed marker: the log opened, closed, reached `checkpoint_every`, was pruned, or
    became writable again after a failure.

    A prune checkpoint names where the chain now starts (`cut_seq`) and the hash the first kept
    entry links to (`cut_prev_hash`), so the shortened chain still verifies.
    """
    return {
        "kind": "checkpoint",
        "seq": seq,
        "prev_hash": prev_hash,
        "ts": format_ts(ts),
        "reason": reason,
        "cut_seq": cut_seq,
        "cut_prev_hash": cut_prev_hash,
    }


class EntryTally:
    """What a walk along the chain has read so far: the entries of each kind, and the first
    and last seq. `logs verify` walks a log, `logs verify --export` an export file."""

    def __init__(self) -> None:
        self.entries = self.shares = self.outcomes = self.checkpoints = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None

    def _count(self, kind: EntryKind, seq: int) -> None:
        self.entries += 1
        if kind == "share":
            self.shares += 1
        elif kind == "outcome":
            self.outcomes += 1
        else:
            self.checkpoints += 1
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq
