"""Tests for gateway.sharelog.exportfile: an export file checked without the share log."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from gateway.sharelog.exportfile import check_export

KEY = b"exportfile-master-key-" * 2
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _line(fields: Entry) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS) + b"\n"


Header = Literal["sealed", "unsealed"]


@functools.cache
def _export(first: int, header_as: Header = "sealed") -> tuple[bytes, ...]:
    """The lines of an export of a chain of five entries from seq `first`, as `logs export`
    writes them: header, entries, the signed head. The header sealed (exported with the key),
    or unsealed (without it)."""
    key = seal_key(KEY)
    record = ShareRecord(
        share_id="s-1",
        ts=T0,
        partner="acme",
        contract_id="DPA-1",
        contract_version=3,
        contract_sha256="c0" * 32,
        caller="billing",
        purpose="credit_assessment",
        method="POST",
        route="POST /v1/assess",
        decision="shared",
        reason="shared",
        fields_sent=("applicant.name",),
        pii_redactions={"phone": 1},
        records=1,
        subject_refs=("ab" * 32,),
        bytes_sent=40,
    )
    prev = GENESIS_HASH if first == 1 else "cd" * 32
    entries: list[Entry] = []
    outcome = ShareOutcome("s-1", "delivered", 200, 12, 31.4)
    for seq in range(first, first + 5):
        step = seq - first
        if step in (1, 3):
            entry = share_entry(record, seq, prev)
        elif step == 2:
            entry = outcome_entry(outcome, first + 1, T0, seq, prev)
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
