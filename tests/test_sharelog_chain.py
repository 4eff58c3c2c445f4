"""Tests for gateway.sharelog.chain: the canonical form, hashes, seals, and field types."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.keys import derive_key
from gateway.sharelog.chain import (
    GENESIS_HASH,
    checkpoint_entry,
    draft_hash,
    draft_share,
    entry_hash,
    format_ts,
    head_mac,
    header_mac,
    outcome_entry,
    seal,
    seal_key,
    share_entry,
    unsealed,
)
from gateway.sharelog.record import ShareOutcome, ShareRecord

KEY = b"chain-master-key-" * 2


def record(**overrides: Any) -> ShareRecord:
    values: dict[str, Any] = {
        "share_id": "s-1",
        "ts": datetime(2025, 3, 1, 17, 0, tzinfo=timezone(timedelta(hours=8))),
        "partner": "acme",
        "contract_id": "DPA-1",
        "contract_version": 3,
        "contract_sha256": None,
        "caller": "billing",
        "purpose": "credit_assessment",
        "method": "POST",
        "route": "POST /v1/assess",
        "decision": "shared",
        "reason": "shared",
        "fields_sent": ("applicant.name", "申请人.收入"),
        "pii_redactions": {"phone": 2, "email": 1},
    }
    values.update(overrides)
    return ShareRecord(**values)


def test_the_hash_is_sha256_of_sorted_compact_utf8_json() -> None:
    entry = share_entry(record(), 7, GENESIS_HASH)
    text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert entry_hash(entry) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_a_seal_is_an_hmac_with_the_checkpoint_sub_key() -> None:
    entry = seal(share_entry(record(), 7, GENESIS_HASH), seal_key(KEY))
    key = derive_key(KEY, "share-log-checkpoint")
    expected = hmac.new(key, b"entry:" + entry["hash"].encode(), hashlib.sha256).hexdigest()
    assert entry["mac"] == expected
    assert entry["hash"] == entry_hash(unsealed(entry))
    assert head_mac(seal_key(KEY), 7, entry["hash"]) != entry["mac"]


def test_an_export_header_seal_is_an_hmac_of_its_json_without_mac() -> None:
    # Sealed export files outlive the gateway version that wrote them: the rule cannot drift.
    header = {"kind": "export", "from_seq": 40, "to_seq": 44, "to_hash": "ab" * 32, "mac": None}
    key = derive_key(KEY, "share-log-checkpoint")
    text = json.dumps(
        {k: v for k, v in header.items() if k != "mac"}, sort_keys=True, separators=(",", ":")
    )
    expected = hmac.new(key, b"export:" + text.encode(), hashlib.sha256).hexdigest()
    assert header_mac(seal_key(KEY), header) == expected
    assert header_mac(seal_key(KEY), {**header, "mac": expected}) == expected


def test_the_share_entry_holds_every_field_in_canonical_form() -> None:
    entry = share_entry(record(), 7, "ab" * 32)
    assert entry["kind"] == "share"
    assert (entry["seq"], entry["prev_hash"]) == (7, "ab" * 32)
    assert entry["ts"] == "2025-03-01T09:00:00.000000Z"
    assert entry["fields_sent"] == ["applicant.name", "申请人.收入"]
    assert entry["pii_redactions"] == {"phone": 2, "email": 1}
    assert entry["subject_refs"] == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"records": 1.0},  # would be read back as the integer 1 and no longer match its hash
        {"records": True},
        {"partner": 5},
        {"contract_version": "3"},
        {"bytes_sent": 2**63},
    ],
)
def test_values_that_would_not_round_trip_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        share_entry(record(**overrides), 1, GENESIS_HASH)


def test_outcome_latency_is_always_a_float() -> None:
    outcome = ShareOutcome("s-1", "delivered", 200, 10, 12)
    entry = outcome_entry(outcome, 7, datetime(2025, 3, 1, tzinfo=UTC), 8, GENESIS_HASH)
    assert entry["latency_ms"] == 12.0
    assert isinstance(entry["latency_ms"], float)
    assert entry["share_seq"] == 7


def test_a_prune_checkpoint_names_the_cut() -> None:
    entry = checkpoint_entry(
        "prune",
        datetime(2025, 3, 1, tzinfo=UTC),
        90,
        "cd" * 32,
        cut_seq=40,
        cut_prev_hash="ef" * 32,
    )
    assert (entry["reason"], entry["cut_seq"], entry["cut_prev_hash"]) == ("prune", 40, "ef" * 32)


def test_timestamps_are_fixed_width_utc_so_text_order_is_time_order() -> None:
    early = datetime(2025, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
    late = datetime(2025, 3, 2, 8, 0, tzinfo=timezone(timedelta(hours=8)))  # 00:00 UTC
    assert format_ts(early) == "2025-03-01T23:59:59.999999Z"
    assert format_ts(late) == "2025-03-02T00:00:00.000000Z"
    assert format_ts(early) < format_ts(late)
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(datetime(2025, 3, 1))


# Strings that try to look like the draft's slots, plus anything at all.
tricky = st.sampled_from(
    ['"prev_hash":"\\u0000prev"', '","seq":"\x00seq', "\x00prev", "\x00seq", "prev_hash", "seq"]
)
texts = st.one_of(tricky, st.text(max_size=30))
maybe = st.one_of(st.none(), texts)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(
    share_id=texts,
    partner=maybe,
    caller=maybe,
    route=maybe,
    fields=st.lists(texts, max_size=4),
    redactions=st.dictionaries(texts, ints, max_size=3),
    records=ints,
    version=st.one_of(st.none(), ints),
    seq=st.integers(min_value=1, max_value=2**62),
)
@settings(max_examples=300, deadline=None)
def test_a_drafted_share_hashes_exactly_like_the_entry(
    share_id: str,
    partner: str | None,
    caller: str | None,
    route: str | None,
    fields: list[str],
    redactions: dict[str, int],
    records: int,
    version: int | None,
    seq: int,
) -> None:
    shared = record(
        share_id=share_id,
        partner=partner,
        caller=caller,
        route=route,
        fields_sent=tuple(fields),
        fields_stripped=tuple(reversed(fields)),
        pii_redactions=redactions,
        records=records,
        contract_version=version,
    )
    draft = draft_share(shared)
    prev = "ab" * 32
    assert draft_hash(draft, seq, prev) == entry_hash(share_entry(shared, seq, prev))
