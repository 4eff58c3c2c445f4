"""Tests for gateway.sharelog.exportfile: an export file checked without the share log."""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.settings import ShareLogSettings
from gateway.sharelog import ShareOutcome, ShareRecord
from gateway.sharelog.chain import (
    GENESIS_HASH,
    Entry,
    checkpoint_entry,
    entry_hash,
    head_mac,
    header_mac,
    outcome_entry,
    seal,
    seal_key,
    share_entry,
    unsealed,
)
from gateway.sharelog.exportfile import _Checker, _Lines, check_export
from gateway.sharelog.ledger import Ledger
from gateway.sharelog.review import export, verify
from gateway.sharelog.store import ShareLog

KEY = b"exportfile-master-key-" * 2
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _line(fields: Entry) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS) + b"\n"


Header = Literal["sealed", "unsealed"]


def _shared(share_id: str, ts: datetime, decision: str = "shared") -> ShareRecord:
    """A share as the gateway records it; a denied one sends nothing."""
    sent = decision == "shared"
    return ShareRecord(
        share_id=share_id,
        ts=ts,
        partner="acme",
        contract_id="DPA-1",
        contract_version=3,
        contract_sha256="c0" * 32,
        caller="billing",
        purpose="credit_assessment",
        method="POST",
        route="POST /v1/assess",
        decision=decision,  # type: ignore[arg-type]
        reason="shared" if sent else "scope_denied",
        fields_sent=("applicant.name",) if sent else (),
        pii_redactions={"phone": 1} if sent else {},
        records=1 if sent else 0,
        subject_refs=("ab" * 32,),
        bytes_sent=40 if sent else 0,
    )


@functools.cache
def _export(first: int, header_as: Header = "sealed") -> tuple[bytes, ...]:
    """The lines of an export of a chain of five entries from seq `first`, as `logs export`
    writes them: header, entries (an open checkpoint, a share, its outcome, a denied share, a
    close checkpoint), the signed head. The header sealed (exported with the key), or unsealed
    (without it)."""
    key = seal_key(KEY)
    prev = GENESIS_HASH if first == 1 else "cd" * 32
    entries: list[Entry] = []
    outcome = ShareOutcome("s-1", "delivered", 200, 12, 31.4)
    for seq in range(first, first + 5):
        step = seq - first
        if step == 1:
            entry = share_entry(_shared("s-1", T0), seq, prev)
        elif step == 2:
            entry = outcome_entry(outcome, first + 1, T0, seq, prev)
        elif step == 3:
            entry = share_entry(_shared("s-2", T0, "denied"), seq, prev)
        else:
            entry = checkpoint_entry("open" if step == 0 else "close", T0, seq, prev)
        entries.append(seal(entry, key))
        prev = entries[-1]["hash"]
    last = first + len(entries) - 1
    header = {
        "kind": "export",
        "exported_at": "2025-03-02T00:00:00.000000Z",
        "since": None,
        "until": None,
        "from_seq": first,
        "to_seq": last,
        "hash_rule": "hash = SHA-256 (hex) of the entry without `hash` and `mac`",
    }
    header["to_hash"] = prev
    header["mac"] = header_mac(key, header) if header_as == "sealed" else None
    head = {"kind": "head", "seq": last, "hash": prev, "mac": head_mac(key, last, prev)}
    return (_line(header), *(_line(entry) for entry in entries), _line(head))


@pytest.mark.parametrize("header_as", ["sealed", "unsealed"])
@pytest.mark.parametrize("first", [1, 40])
@pytest.mark.parametrize("key", [KEY, None], ids=["key", "no-key"])
def test_an_export_as_written_verifies(first: int, key: bytes | None, header_as: Header) -> None:
    check = check_export(_export(first, header_as), key)
    assert check.problem is None
    assert (check.entries, check.first_seq, check.last_seq, check.head_seq) == (
        5,
        first,
        first + 4,
        first + 4,
    )
    assert check.macs_checked is (key is not None)
    # The first entry's link is taken as given: it is reported, for comparing elsewhere.
    assert check.anchor == (GENESIS_HASH if first == 1 else "cd" * 32)
    assert check.to_json()["first_prev_hash"] == check.anchor
    # Its seal checked with the key; none, in an export made without it. The export reaches the
    # head, which proves its end with the key in any case.
    sealed = header_as == "sealed" if key is not None or header_as != "sealed" else None
    assert check.header_sealed is sealed
    assert check.end_proven is (key is not None)
    assert (check.to_json()["header_sealed"], check.to_json()["end_proven"]) == (
        sealed,
        key is not None,
    )


def test_seq_1_must_link_to_the_genesis_hash() -> None:
    lines = list(_export(1))
    entry = orjson.loads(lines[1])
    lines[1] = _line({**entry, "prev_hash": "cd" * 32})
    problem = check_export(lines, None).problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("changed", 2, 1)


def _joined(first: int) -> bytes:
    return b"".join(_export(first))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_byte_changed_fails_cleanly(data: st.DataObject) -> None:
    text = _joined(40)
    # The header is sealed too, its dates and prose with it: only the final newline is left.
    at = data.draw(st.integers(0, len(text) - 2), label="at")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != text[at]), label="byte")
    changed = text[:at] + bytes([byte]) + text[at + 1 :]
    check = check_export(changed.splitlines(keepends=True), KEY)
    assert not check.ok
    assert check.problem is not None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_byte_changed_anywhere_is_a_verdict_never_an_exception(data: st.DataObject) -> None:
    header_as = data.draw(st.sampled_from(["sealed", "unsealed", "old"]), label="header_as")
    text = b"".join(_export(1, header_as))
    at = data.draw(st.integers(0, len(text) - 1), label="at")
    byte = data.draw(st.integers(0, 255), label="byte")
    changed = text[:at] + bytes([byte]) + text[at + 1 :]
    key = data.draw(st.sampled_from([KEY, None]), label="key")
    check = check_export(changed.splitlines(keepends=True), key)
    assert check.ok is (check.problem is None)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_line_dropped_repeated_or_moved_fails(data: st.DataObject) -> None:
    lines = list(_export(40))
    how = data.draw(st.sampled_from(["drop", "repeat", "swap"]), label="how")
    i = data.draw(st.integers(0, len(lines) - 1), label="i")
    if how == "drop":
        del lines[i]
    elif how == "repeat":
        lines.insert(data.draw(st.integers(0, len(lines)), label="to"), lines[i])
    else:
        j = data.draw(st.integers(0, len(lines) - 1).filter(lambda j: j != i), label="j")
        lines[i], lines[j] = lines[j], lines[i]
    key = data.draw(st.sampled_from([KEY, None]), label="key")
    assert not check_export(lines, key).ok


@given(st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_any_bytes_at_all_are_a_verdict(data: bytes) -> None:
    check = check_export(data.splitlines(keepends=True), KEY)
    assert not check.ok


def _edited(line: bytes, drop: str = "", **values: Any) -> bytes:
    fields = {k: v for k, v in orjson.loads(line).items() if k != drop}
    return _line({**fields, **values})


def _relinked(line: bytes) -> bytes:
    """The entry pointed elsewhere, its hash made again: what anyone can do without the key."""
    fields = {**orjson.loads(line), "prev_hash": "ab" * 32}
    return _line({**fields, "hash": entry_hash(unsealed(fields))})


def _swapped(line: bytes, old: bytes, new: bytes) -> bytes:
    assert old in line
    return line.replace(old, new)


# The export of seqs 40-44 (lines 1-7) changed: the problem's kind and line. Each one a file
# that is malformed where it says, or whose lines do not add up, reported as such.
_BROKEN: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str, int]] = {
    "NaN": (lambda ls: [*ls[:2], _swapped(ls[2], b":40,", b":NaN,"), *ls[3:]], "malformed", 3),
    "Infinity": (
        lambda ls: [*ls[:2], _swapped(ls[2], b":40,", b":-Infinity,"), *ls[3:]],
        "malformed",
        3,
    ),
    "a number out of range": (
        lambda ls: [*ls[:2], _swapped(ls[2], b":40,", b":1e999,"), *ls[3:]],
        "malformed",
        3,
    ),
    "a number past 64 bits": (
        lambda ls: [*ls[:2], _swapped(ls[2], b":40,", b":%d," % 2**70), *ls[3:]],
        "malformed",
        3,
    ),
    "nested too deep": (
        lambda ls: [*ls[:2], b"[" * 100_000 + b"]" * 100_000 + b"\n", *ls[3:]],
        "malformed",
        3,
    ),
    "an entry past to_seq": (
        lambda ls: [_edited(ls[0], to_seq=43, mac=None), *ls[1:]],
        "reordered",
        6,
    ),
    "to_seq lowered in a sealed header": (
        lambda ls: [_edited(ls[0], to_seq=43), *ls[1:]],
        "header",
        1,
    ),
    "the exported_at of a sealed header": (
        lambda ls: [_edited(ls[0], exported_at="2025-03-03T00:00:00.000000Z"), *ls[1:]],
        "header",
        1,
    ),
    "the head's seal as the header's": (
        lambda ls: [_edited(ls[0], mac=orjson.loads(ls[-1])["mac"]), *ls[1:]],
        "header",
        1,
    ),
    "a header's to_hash changed": (
        lambda ls: [_edited(ls[0], to_hash="ab" * 32), *ls[1:]],
        "header",
        1,
    ),
    "a header's to_hash changed, its seal dropped": (
        lambda ls: [_edited(ls[0], to_hash="ab" * 32, mac=None), *ls[1:]],
        "header",
        1,
    ),
    "a header's to_hash null": (
        lambda ls: [_edited(ls[0], to_hash=None, mac=None), *ls[1:]],
        "header",
        1,
    ),
    "a header with to_hash and no mac": (
        lambda ls: [_edited(ls[0], drop="mac"), *ls[1:]],
        "header",
        1,
    ),
    "a header with mac and no to_hash": (
        lambda ls: [_edited(ls[0], drop="to_hash"), *ls[1:]],
        "header",
        1,
    ),
    "a header's to_hash as a number": (
        lambda ls: [_edited(ls[0], to_hash=5), *ls[1:]],
        "header",
        1,
    ),
    "a header's seal as a number": (lambda ls: [_edited(ls[0], mac=5), *ls[1:]], "header", 1),
    "a header's seq past 64 bits": (
        lambda ls: [_swapped(ls[0], b'"to_seq":44', b'"to_seq":%d' % 2**70), *ls[1:]],
        "header",
        1,
    ),
    "a header without to_seq": (lambda ls: [_edited(ls[0], drop="to_seq"), *ls[1:]], "header", 1),
    "a header with a key of its own": (lambda ls: [_edited(ls[0], note=1), *ls[1:]], "header", 1),
    "a header's seq as text": (lambda ls: [_edited(ls[0], from_seq="40"), *ls[1:]], "header", 1),
    "a header's seq 0": (lambda ls: [_edited(ls[0], from_seq=0), *ls[1:]], "header", 1),
    "a header's seq as true": (lambda ls: [_edited(ls[0], from_seq=True), *ls[1:]], "header", 1),
    "a header's text as a number": (
        lambda ls: [_edited(ls[0], hash_rule=1), *ls[1:]],
        "header",
        1,
    ),
    "an entry relinked": (lambda ls: [*ls[:2], _relinked(ls[2]), *ls[3:]], "removed", 3),
    "the head's seal changed": (lambda ls: [*ls[:-1], _edited(ls[-1], mac="ab" * 32)], "forged", 7),
    "a head without its seal": (lambda ls: [*ls[:-1], _edited(ls[-1], drop="mac")], "malformed", 7),
    "a seal as a number": (lambda ls: [*ls[:2], _edited(ls[2], mac=5), *ls[3:]], "malformed", 3),
    "a head's seq as text": (lambda ls: [*ls[:-1], _edited(ls[-1], seq="44")], "malformed", 7),
}


@pytest.mark.parametrize("broken", sorted(_BROKEN))
def test_a_broken_export_is_reported_at_its_line(broken: str) -> None:
    change, kind, line = _BROKEN[broken]
    problem = check_export(change(list(_export(40))), KEY).problem
    assert problem is not None
    assert (problem.kind, problem.line) == (kind, line)


@pytest.mark.parametrize("header_as", ["sealed", "unsealed"])
@pytest.mark.parametrize("missing", [("to_hash",), ("mac",), ("mac", "to_hash")])
@pytest.mark.parametrize("key", [KEY, None], ids=["key", "no-key"])
def test_a_header_without_to_hash_or_mac_fails_naming_what_it_lacks(
    header_as: Header, missing: tuple[str, ...], key: bytes | None
) -> None:
    # Stripped of its end and its seal, a window cut at its end would pass for an uncut one.
    header = {k: v for k, v in orjson.loads(_export(40, header_as)[0]).items() if k not in missing}
    problem = check_export([_line(header), *_export(40, header_as)[1:]], key).problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("header", 1, None)
    assert (
        problem.message == f"the header (line 1) lacks {', '.join(missing)}, which an export's has"
    )


@pytest.mark.parametrize("line", [3, 7], ids=["entry", "head"])
def test_an_export_that_fails_does_not_say_its_end_is_proven(line: int) -> None:
    # Its sealed header checked out, and it reaches the head: neither stands for a file that
    # fails further on.
    lines = list(_export(40))
    lines[line - 1] = _edited(lines[line - 1], mac="ab" * 32)
    check = check_export(lines, KEY)
    assert check.problem is not None
    assert (check.problem.kind, check.problem.line) == ("forged", line)
    assert (check.header_sealed, check.last_seq, check.head_seq) == (
        (True, 44, 44) if line == 7 else (True, 40, None)
    )
    assert (check.end_proven, check.to_json()["end_proven"]) == (False, False)


def test_a_relinked_entry_fails_without_the_key_too() -> None:
    lines = list(_export(40))
    problem = check_export([*lines[:2], _relinked(lines[2]), *lines[3:]], None).problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("removed", 3, 41)


def _resealed(line: bytes, **values: Any) -> bytes:
    """The header as `logs export` would have written it with these values, sealed."""
    fields = {**orjson.loads(line), **values}
    return _line({**fields, "mac": header_mac(seal_key(KEY), fields)})


def test_an_export_of_one_entry_or_none_verifies() -> None:
    header, *entries, head = _export(40)
    one = check_export([_resealed(header, from_seq=44), entries[-1], head], KEY)
    assert (one.problem, one.entries, one.first_seq, one.last_seq) == (None, 1, 44, 44)
    # A window without shares: `from_seq` past `to_seq`, no entry between, and no `to_hash`.
    empty = _resealed(header, from_seq=45, to_seq=44, to_hash=None)
    none = check_export([empty, head], KEY)
    assert (none.problem, none.entries, none.head_seq, none.header_sealed) == (None, 0, 44, True)
    assert none.end_proven
    # An empty window's header that names a last entry is a changed one, with or without the key.
    named = _edited(empty, to_hash=orjson.loads(head)["hash"], mac=None)
    for key in (KEY, None):
        problem = check_export([named, head], key).problem
        assert problem is not None
        assert (problem.kind, problem.line) == ("header", 1)
        assert "for a window without entries" in problem.message


def _window(header_as: Header, cut: int) -> list[bytes]:
    """An export of seqs 40-43, before the head at 44, with its last `cut` entries cut away
    and its header's to_seq and to_hash lowered to match, as anyone could."""
    header, *entries, head = _export(40, header_as)
    kept = entries[: 4 - cut]
    last = orjson.loads(kept[-1])
    fields = {**orjson.loads(header), "to_seq": last["seq"], "to_hash": last["hash"]}
    if header_as == "sealed" and not cut:
        fields["mac"] = header_mac(seal_key(KEY), fields)
    return [_line(fields), *kept, head]


@pytest.mark.parametrize("header_as", ["sealed", "unsealed"])
def test_a_window_cut_at_its_end_fails_with_the_key_only_where_its_header_is_sealed(
    header_as: Header,
) -> None:
    whole = check_export(_window(header_as, 0), KEY)
    assert (whole.ok, whole.last_seq, whole.head_seq) == (True, 43, 44)
    assert (whole.header_sealed, whole.end_proven) == (
        (True, True) if header_as == "sealed" else (False, False)
    )
    cut = check_export(_window(header_as, 2), KEY)
    if header_as == "sealed":
        assert cut.problem is not None
        assert (cut.problem.kind, cut.problem.line) == ("header", 1)
        assert cut.problem.message.startswith(
            "the header (line 1) is not signed with this hash key"
        )
    else:
        # What the README warns of: the cut file checks out, and says its end is not proven.
        assert (cut.ok, cut.last_seq, cut.header_sealed, cut.end_proven) == (True, 41, False, False)
    # Without the key nothing proves the end, and the header's seal is not checked.
    unkeyed = check_export(_window(header_as, 2), None)
    assert (unkeyed.ok, unkeyed.end_proven) == (True, False)
    assert unkeyed.header_sealed is (None if header_as == "sealed" else False)


def test_seq_1_relinked_and_rehashed_fails_without_the_key_too() -> None:
    lines = list(_export(1))
    problem = check_export([lines[0], _relinked(lines[1]), *lines[2:]], None).problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq) == ("changed", 2, 1)
    assert "links to the genesis hash (64 zeros), and does not" in problem.message


def test_a_line_that_is_not_utf8_is_said_to_be_so() -> None:
    lines = list(_export(40))
    problem = check_export([*lines[:2], b"\xff\xfe\n", *lines[3:]], KEY).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("malformed", 3)
    assert problem.message == "line 3 is not a JSON line: it is not UTF-8 text"


@pytest.mark.parametrize("first", [1, 40])
def test_a_sealed_header_required_passes_a_sealed_export(first: int) -> None:
    check = check_export(_export(first), KEY, sealed=True)
    assert (check.problem, check.header_sealed, check.end_proven) == (None, True, True)
    assert (check.sealed_required, check.to_json()["sealed_required"]) == (True, True)
    assert check_export(_export(first), KEY).to_json()["sealed_required"] is False


@pytest.mark.parametrize(
    "lines",
    [
        # The export reaches the signed head, which proves its end: the seal is still asked.
        lambda: list(_export(40, "unsealed")),
        lambda: _window("unsealed", 2),
        # The first thing wrong is the header, whatever is wrong further on.
        lambda: [*_export(40, "unsealed")[:2], b"not json\n", *_export(40, "unsealed")[3:]],
    ],
    ids=["reaching-the-head", "cut-window", "broken-further-on"],
)
def test_a_sealed_header_required_fails_an_unsealed_one_at_line_1(
    lines: Callable[[], list[bytes]],
) -> None:
    check = check_export(lines(), KEY, sealed=True)
    assert check.problem is not None
    assert (check.problem.kind, check.problem.line, check.problem.seq) == ("unsealed", 1, None)
    assert check.problem.message == (
        "the header (line 1) is not sealed (its mac is null: it was exported without the hash "
        "key), and a sealed one is required: the export's end is not proven"
    )
    assert (check.ok, check.entries, check.header_sealed, check.end_proven) == (
        False,
        0,
        False,
        False,
    )
    assert check.to_json()["sealed_required"] is True


def test_a_sealed_header_is_not_required_without_the_key_to_check_it() -> None:
    with pytest.raises(ValueError, match="without the hash key none is checked"):
        check_export(_export(40), None, sealed=True)


@pytest.mark.parametrize("sealed", [False, True], ids=["not-required", "required"])
def test_an_emptied_header_seal_fails_as_not_signed_with_the_key(sealed: bool) -> None:
    # Only a null mac says the header was exported without the key: an empty one is a seal,
    # and one that does not hold.
    lines = list(_export(40))
    check = check_export([_edited(lines[0], mac=""), *lines[1:]], KEY, sealed=sealed)
    assert check.problem is not None
    assert (check.problem.kind, check.problem.line, check.header_sealed) == ("header", 1, None)
    assert check.problem.message.startswith("the header (line 1) is not signed with this hash key")


@pytest.mark.parametrize("field", ["to_hash", "mac"])
@pytest.mark.parametrize("key", [KEY, None], ids=["key", "no-key"])
def test_a_header_end_or_seal_of_the_wrong_type_is_said_to_be_so(
    field: str, key: bytes | None
) -> None:
    # Not a hash that differs from the last entry's, nor a seal that fails: no export's header
    # is written with either.
    lines = list(_export(40))
    problem = check_export([_line({**orjson.loads(lines[0]), field: 5}), *lines[1:]], key).problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.message) == (
        "header",
        1,
        "the header (line 1) has a field of the wrong type",
    )


# --- outcomes against their shares -----------------------------------------------------------


def _delivered(share_id: str, outcome: Literal["delivered", "error"] = "delivered") -> ShareOutcome:
    return ShareOutcome(share_id, outcome, 200 if outcome == "delivered" else None, 1, 1.0)


async def _written(path: Path, *entries: ShareRecord | ShareOutcome) -> None:
    """The log at `path` as the gateway's share log writes these, in order, and closes."""
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        for entry in entries:
            if isinstance(entry, ShareRecord):
                await share_log.record(entry)
            else:
                await share_log.record_outcome(entry)
    finally:
        await share_log.close()


def _exported(
    path: Path, since: datetime | None = None, until: datetime | None = None
) -> list[bytes]:
    """The export `logs export` writes of the log at `path`, with the key."""
    out = io.StringIO()
    export(path, since, until, out, KEY)
    return out.getvalue().encode().splitlines(keepends=True)


async def _chain(path: Path) -> None:
    """Written through the gateway's share log, by seq:
    1 open checkpoint | 2 s-0, 3 its outcome | 4 s-1, 5 outcome | 6 s-2, 7 outcome
    8 s-3 (denied)    | 9 s-4, 10 outcome    | 11 close checkpoint"""
    entries: list[ShareRecord | ShareOutcome] = []
    for n in range(5):
        decision = "denied" if n == 3 else "shared"
        entries.append(_shared(f"s-{n}", T0 + timedelta(minutes=n), decision))
        if decision == "shared":
            entries.append(_delivered(f"s-{n}"))
    await _written(path, *entries)


def _resealed_from(lines: list[bytes], seq: int, **values: Any) -> list[bytes]:
    """The export with the entry at `seq` changed as a writer holding the key would write it:
    it and every entry after it hashed, linked and sealed again, the head and the header too.
    Only what is checked beyond hashes, links and seals can tell."""
    key = seal_key(KEY)
    header, *entries, head = (orjson.loads(line) for line in lines)
    prev = ""
    for i, entry in enumerate(entries):
        if entry["seq"] == seq:
            entry.update(values)
        if entry["seq"] >= seq:
            if prev:
                entry["prev_hash"] = prev
            entries[i] = entry = seal(unsealed(entry), key)
        prev = entry["hash"]
    if head["seq"] == entries[-1]["seq"]:
        head.update(hash=prev, mac=head_mac(key, head["seq"], prev))
    header["to_hash"] = prev
    header["mac"] = header_mac(key, header)
    return [_line(header), *(_line(entry) for entry in entries), _line(head)]


def _outcome_problem(lines: list[bytes]) -> tuple[str, int, int | None, str | None, str]:
    check = check_export(lines, KEY)
    assert check.problem is not None, "the export verified"
    problem = check.problem
    return problem.kind, problem.line, problem.seq, problem.share_id, problem.message


async def test_an_export_of_a_log_as_the_gateway_writes_it_verifies(tmp_path: Path) -> None:
    path = tmp_path / "share-log.sqlite"
    await _chain(path)
    check = check_export(_exported(path), KEY)
    assert (check.problem, check.outcomes, check.last_seq) == (None, 4, 11)


async def test_a_second_outcome_written_by_the_share_log_fails_as_logs_verify_fails_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "share-log.sqlite"
    # s-0 at seq 2, its outcomes at 3 and 4: a caller's slip.
    await _written(path, _shared("s-0", T0), _delivered("s-0"), _delivered("s-0", "error"))
    lines = _exported(path)
    logged = verify(path, KEY).problem
    assert logged is not None
    # Written so, the export is sound in every hash, link and seal.
    assert _outcome_problem(lines) == ("outcome", 5, 4, "s-0", logged.message)
    assert logged.message == (
        "outcome seq 4 (share s-0) is a second, unlinked outcome of seq 2, whose outcome is at "
        "seq 3: the gateway writes one per share, and `logs query` shows only the first"
    )


async def _second_outcome_of_an_earlier_share(path: Path) -> None:
    """s-0 on the first day, its outcome and a second one on the next, after s-1: by seq,
    1 open | 2 s-0 | 3 s-1 | 4 s-0's outcome | 5 a second one | 6 s-1's | 7 close."""
    await _written(
        path,
        _shared("s-0", T0),
        _shared("s-1", T0 + timedelta(days=1)),
        _delivered("s-0"),
        _delivered("s-0", "error"),
        _delivered("s-1"),
    )


def test_a_second_outcome_of_a_share_before_the_window_fails_where_both_are_in_it(
    second_outcome: Path,
) -> None:
    path = second_outcome
    # From s-1 (seq 3) on: s-0 is before the window, both its outcomes in it.
    lines = _exported(path, since=T0 + timedelta(hours=12))
    assert orjson.loads(lines[0])["from_seq"] == 3
    logged = verify(path, KEY).problem
    assert logged is not None
    assert _outcome_problem(lines) == ("outcome", 4, 5, "s-0", logged.message)
    assert logged.message.startswith(
        "outcome seq 5 (share s-0) is a second, unlinked outcome of seq 2, whose outcome is at "
        "seq 4: "
    )
    # Without the first outcome nothing in the file shows the second is one: the entries from
    # seq 5 on hold a lone unlinked outcome, as a window of a log that pruned s-0 would.
    header, *entries, head = lines
    later = [_resealed(header, from_seq=5), *entries[2:], head]
    check = check_export(later, KEY)
    assert (check.problem, check.first_seq, check.outcomes) == (None, 5, 2)


async def test_two_outcomes_of_a_share_never_recorded_fail_in_the_export(tmp_path: Path) -> None:
    path = tmp_path / "share-log.sqlite"
    # At seqs 2 and 3.
    await _written(path, _delivered("never-recorded"), _delivered("never-recorded", "error"))
    logged = verify(path, KEY).problem
    assert logged is not None
    assert _outcome_problem(_exported(path)) == (
        "outcome",
        4,
        3,
        "never-recorded",
        logged.message,
    )


async def test_a_window_holds_outcomes_of_shares_before_it_and_shares_open_past_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "share-log.sqlite"
    share_log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    try:
        await share_log.record(_shared("s-0", T0))  # seq 2
        await share_log.record(_shared("s-1", T0 + timedelta(hours=1)))  # 3
        await share_log.record(_shared("s-2", T0 + timedelta(hours=2)))  # 4
        await share_log.record_outcome(_delivered("s-0"))  # 5, linked to 2
        await share_log.record_outcome(_delivered("s-2"))  # 6, linked to 4
        await share_log.record(_shared("s-3", T0 + timedelta(hours=3)))  # 7
        await share_log.record_outcome(_delivered("never-recorded"))  # 8, unlinked
        # Exported while s-1 and s-3 are in flight.
        windows = {
            "whole": _exported(path),
            # From s-1: s-0's outcome is linked to a share before the window.
            "since": _exported(path, since=T0 + timedelta(minutes=30)),
            # Up to s-0, with its outcome: s-1 and s-2 lie between them, s-1 still open and
            # s-2's outcome past the window's end.
            "until": _exported(path, until=T0 + timedelta(minutes=30)),
            # s-1 alone: from seq 3 to seq 3.
            "one": _exported(path, T0 + timedelta(minutes=30), T0 + timedelta(minutes=90)),
        }
    finally:
        await share_log.close()
    spans = {
        name: (orjson.loads(ls[1])["seq"], orjson.loads(ls[-2])["seq"])
        for name, ls in windows.items()
    }
    assert spans == {"whole": (1, 8), "since": (3, 8), "until": (1, 5), "one": (3, 3)}
    for name, lines in windows.items():
        check = check_export(lines, KEY)
        assert check.problem is None, (name, check.problem)
    # The log, closed since (s-1 and s-3 as `unknown`), and its export after it, verify too.
    assert verify(path, KEY).ok
    assert check_export(_exported(path), KEY).ok


# Each sound export of `_chain` changed, as a writer holding the key would write it, at one
# outcome: what `logs verify` says of the log written so (test_sharelog_review), said of the
# export, at the line and seq of the outcome (or of the share left open) and its share id.
_MISLINKED: dict[str, tuple[int, dict[str, Any], int, str, str]] = {
    "another share": (
        7,
        {"share_seq": 4},
        7,
        "s-2",
        "outcome seq 7 (share s-2) is linked to seq 4, which is share s-1",
    ),
    "unlinked, its share open": (
        7,
        {"share_seq": None},
        7,
        "s-2",
        "outcome seq 7 (share s-2) is not linked to its share, which is open at seq 6: its "
        "row in pending_outcomes was removed or altered, and the share reads as pending",
    ),
    "a denial": (
        10,
        {"share_seq": 8},
        10,
        "s-4",
        "outcome seq 10 (share s-4) is linked to seq 8, which was not shared (denied)",
    ),
    "a checkpoint": (
        7,
        {"share_seq": 1},
        7,
        "s-2",
        "outcome seq 7 (share s-2) is linked to seq 1, which is not a share",
    ),
    "an outcome": (
        7,
        {"share_seq": 5},
        7,
        "s-2",
        "outcome seq 7 (share s-2) is linked to seq 5, which is not a share",
    ),
    "a later share": (
        7,
        {"share_seq": 9},
        7,
        "s-2",
        "outcome seq 7 (share s-2) is linked to seq 9, which does not come before it",
    ),
    "itself": (
        7,
        {"share_seq": 7},
        7,
        "s-2",
        "outcome seq 7 (share s-2) is linked to seq 7, which does not come before it",
    ),
    "a second, linked": (
        7,
        {"share_id": "s-1", "share_seq": 4},
        7,
        "s-1",
        "outcome seq 7 (share s-1) is a second outcome of seq 4, whose outcome is at seq 5",
    ),
    "a share left open at the close": (
        10,
        {"share_id": "never-recorded", "share_seq": None},
        9,
        "s-4",
        "seq 9 (share s-4) has no outcome before the close checkpoint at seq 11, which closes "
        "every open share: its row in pending_outcomes was removed or altered, and the share "
        "reads as pending",
    ),
}


@pytest.mark.parametrize("mislinked", sorted(_MISLINKED))
async def test_an_outcome_sealed_against_the_wrong_share_fails_the_export(
    tmp_path: Path, mislinked: str
) -> None:
    seq, values, at, share_id, message = _MISLINKED[mislinked]
    path = tmp_path / "share-log.sqlite"
    await _chain(path)
    lines = _resealed_from(_exported(path), seq, **values)
    # Every hash, link and seal holds: only the outcome check can tell.
    assert _outcome_problem(lines) == ("outcome", at + 1, at, share_id, message)
    assert check_export(lines, KEY).to_json()["problem"]["share_id"] == share_id


async def test_an_outcome_linked_before_the_export_is_not_judged(tmp_path: Path) -> None:
    path = tmp_path / "share-log.sqlite"
    await _chain(path)
    # s-2 and s-3 (seqs 6-8), s-2's outcome pointed at s-0's record (seq 2), outside the file:
    # s-2 then reads as open at the window's end, which the file does not show wrong either.
    lines = _exported(path, T0 + timedelta(minutes=2), T0 + timedelta(minutes=3, seconds=30))
    assert [orjson.loads(line)["seq"] for line in lines[1:-1]] == [6, 7, 8]
    check = check_export(_resealed_from(lines, 7, share_seq=2), KEY)
    assert check.problem is None, check.problem


@pytest.mark.parametrize(
    "values", [{"share_seq": "6"}, {"share_seq": True}, {"share_id": 6}], ids=["text", "bool", "id"]
)
async def test_an_outcome_link_of_the_wrong_type_is_said_to_be_so(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    path = tmp_path / "share-log.sqlite"
    await _chain(path)
    problem = check_export(_resealed_from(_exported(path), 7, **values), KEY).problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.message) == (
        "malformed",
        8,
        "line 8 has a field of the wrong type",
    )


@pytest.fixture
async def second_outcome(tmp_path: Path) -> Path:
    path = tmp_path / "share-log.sqlite"
    await _second_outcome_of_an_earlier_share(path)
    return path


def test_a_second_outcome_is_found_in_an_export_read_from_a_pipe(
    second_outcome: Path, tmp_path: Path
) -> None:
    data = b"".join(_exported(second_outcome))
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as writer:
        writer.write(data)  # far less than a pipe holds
    with open(read_end, "rb") as reader:
        assert not reader.seekable()
        problem = check_export(reader, KEY).problem
    assert problem is not None
    assert (problem.kind, problem.line, problem.seq, problem.share_id) == ("outcome", 6, 5, "s-0")
    # A file is read in place, from where it is opened.
    exported = tmp_path / "audit.jsonl"
    exported.write_bytes(b"preamble\n" + data)
    with exported.open("rb") as lines:
        lines.readline()
        problem = check_export(lines, KEY).problem
    logged = verify(second_outcome, KEY).problem
    assert problem is not None
    assert logged is not None
    assert (problem.line, problem.seq, problem.message) == (6, 5, logged.message)


async def test_the_check_remembers_only_the_closed_shares_an_unlinked_outcome_names(
    tmp_path: Path,
) -> None:
    # Not every share id of an export of millions: those of its few unlinked outcomes.
    path = tmp_path / "share-log.sqlite"
    await _chain(path)
    ledger = Ledger.open(path, KEY)
    try:
        ledger.begin()
        ledger.add_outcome(_delivered("never-recorded"), T0)
        ledger.commit(T0)
    finally:
        ledger.close()
    checker = _Checker(_Lines(_exported(path)), KEY, sealed=False)
    checker.run()
    links = checker.links
    assert (links.unlinked_ids, set(links.closed), links.open_seqs) == (
        {"never-recorded"},
        {"never-recorded"},
        {},
    )
