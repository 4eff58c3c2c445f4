"""Checking a `logs export` file without the share log: its lines, hashes, links and seals."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final, Literal, NoReturn

import orjson

from gateway.sharelog.chain import (
    GENESIS_HASH,
    EntryTally,
    entry_hash,
    entry_mac,
    head_mac,
    header_mac,
    macs_equal,
    seal_key,
    unsealed,
)
from gateway.sharelog.outcomes import OutcomeLinks
from gateway.sharelog.schema import columns

ExportProblemKind = Literal[
    "malformed",
    "header",
    "unsealed",
    "removed",
    "reordered",
    "changed",
    "forged",
    "head",
    "truncated",
    "outcome",
]

# The header as `review.export` writes it: the keys it must have, and those it may. Every
# header has `to_hash` and `mac` (null without the hash key): one with either stripped is no
# export's, or a sealed end hidden to cut entries from a window unseen.
_HEADER_REQUIRED: Final = frozenset({"kind", "from_seq", "to_seq", "hash_rule", "to_hash", "mac"})
_HEADER_KEYS: Final = _HEADER_REQUIRED | {"exported_at", "since", "until"}
_HEAD_KEYS: Final = frozenset({"kind", "seq", "hash", "mac"})
_ENTRY_KEYS: Final[dict[str, frozenset[str]]] = {
    kind: frozenset({"kind", *columns(kind)}) for kind in ("share", "outcome", "checkpoint")
}
# The text fields of each kind that the outcomes are checked by (an outcome's `share_seq` is an
# integer or null): what every entry of the log holds, and no other type.
_TEXT_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "share": ("prev_hash", "hash", "mac", "share_id", "decision"),
    "outcome": ("prev_hash", "hash", "mac", "share_id"),
    "checkpoint": ("prev_hash", "hash", "mac", "reason"),
}


@dataclass(frozen=True, slots=True)
class ExportProblem:
    """The first thing wrong with the file: its line (1 is the header) and the seq there; for
    an outcome that does not belong where it is linked, or a share left open, its share id."""

    kind: ExportProblemKind
    line: int
    seq: int | None
    message: str
    share_id: str | None = None


@dataclass(frozen=True, slots=True)
class ExportCheck:
    ok: bool
    entries: int
    shares: int
    outcomes: int
    checkpoints: int
    first_seq: int | None
    last_seq: int | None
    head_seq: int | None
    # The first entry's `prev_hash`: taken as given, it links the export to the entries before
    # it, which only the operator's checkpoint lines or an earlier export can show.
    anchor: str | None
    macs_checked: bool
    # True: the header's seal holds under the key; False: the header has none (exported
    # without the key); None: not checked (no key) or not read.
    header_sealed: bool | None
    # The header had to be sealed: an unsealed one failed the check.
    sealed_required: bool
    problem: ExportProblem | None

    @property
    def end_proven(self) -> bool:
        """Whether lines cut from the export's end would have been found: with the key, by the
        sealed header, or by the signed head where the export reaches it."""
        reaches_head = self.last_seq is not None and self.last_seq == self.head_seq
        return self.ok and self.macs_checked and (self.header_sealed is True or reaches_head)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "shares": self.shares,
            "outcomes": self.outcomes,
            "checkpoints": self.checkpoints,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_seq": self.head_seq,
            "first_prev_hash": self.anchor,
            "macs_checked": self.macs_checked,
            "header_sealed": self.header_sealed,
            "end_proven": self.end_proven,
            "sealed_required": self.sealed_required,
            "problem": None
            if self.problem is None
            else {
                "kind": self.problem.kind,
                "line": self.problem.line,
                "seq": self.problem.seq,
                "share_id": self.problem.share_id,
                "message": self.problem.message,
            },
        }


class _Failed(Exception):
    def __init__(self, problem: ExportProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _Malformed(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Malformed(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


def _constant(name: str) -> NoReturn:
    raise _Malformed(f"{name} is not JSON")


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Malformed(f"{text} is out of the range of a number")
    return value


def _parsed(line: bytes) -> Any:
    """The line's JSON value. Stricter than most readers: a key given twice would let two
    readers of one line see two different entries, and the hash is of one of them."""
    try:
        text = line.decode("utf-8")
        return json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_number
        )
    except _Malformed:
        raise
    except UnicodeDecodeError as exc:
        raise _Malformed("it is not UTF-8 text") from exc
    except (ValueError, RecursionError) as exc:
        raise _Malformed(f"it is not a JSON value ({exc})") from exc


def _is_int(value: object) -> bool:
    return type(value) is int  # not a bool, which JSON keeps apart


class _Lines:
    """The export's lines, read more than once: a first look for unlinked outcomes, the check,
    and, where a link fails, the entries it points at."""

    def __init__(self, source: Sequence[bytes] | IO[bytes]) -> None:
        self.source = source
        self.begins = None if isinstance(source, Sequence) else source.tell()
        self.from_seq = 1  # the header's, once the check has read it

    def read(self) -> Iterator[bytes]:
        """The lines from the first, the header."""
        if isinstance(self.source, Sequence):
            return iter(self.source)
        self.source.seek(self.begins or 0)
        return iter(self.source)

    def line_of(self, seq: int) -> int:
        """The line of an entry the check has passed: the entries run on from the header."""
        return seq - self.from_seq + 2

    def unlinked_ids(self) -> frozenset[str]:
        """The share ids of the outcomes that are not linked to a share (`share_seq` null).

        A line the check would refuse may be read otherwise here, or not at all: the check
        fails at that line, before anything past it is judged.
        """
        found: set[str] = set()
        for line in self.read():
            if b"null" not in line:  # JSON has no other spelling of null
                continue
            try:
                fields = orjson.loads(line)
            except orjson.JSONDecodeError:
                try:  # what the check reads, orjson does not (a number past 64 bits)
                    fields = _parsed(line.removesuffix(b"\n"))
                except _Malformed:
                    continue
            if (
                isinstance(fields, dict)
                and fields.get("kind") == "outcome"
                and "share_seq" in fields
                and fields["share_seq"] is None
                and isinstance(fields.get("share_id"), str)
            ):
                found.add(fields["share_id"])
        return frozenset(found)

    def _entries(self, first: int, stop: int) -> Iterator[dict[str, Any]]:
        """The entries from seq `first` up to `stop`, which the check has passed already."""
        at = None if isinstance(self.source, Sequence) else self.source.tell()
        try:
            start = self.line_of(first) - 1
            for line in itertools.islice(self.read(), start, start + stop - first):
                yield _parsed(line.removesuffix(b"\n"))
        finally:
            if at is not None and not isinstance(self.source, Sequence):
                self.source.seek(at)  # where the check reads on

    def share_at(self, seq: int) -> tuple[str, str] | None:
        for fields in self._entries(seq, seq + 1):
            if fields["kind"] == "share":
                return str(fields["share_id"]), str(fields["decision"])
        return None

    def first_outcome_of(self, share_seq: int, before: int) -> int | None:
        for fields in self._entries(share_seq + 1, before):
            if fields["kind"] == "outcome" and fields["share_seq"] == share_seq:
                return int(fields["seq"])
        return None


class _Checker(EntryTally):
    def __init__(self, lines: _Lines, master_key: bytes | None, sealed: bool) -> None:
        self.lines = lines
        self.key = None if master_key is None else seal_key(master_key)
        self.sealed = sealed
        self.number = 0  # the line being read
        super().__init__()
        self.head_seq: int | None = None
        self.anchor: str | None = None
        self.header_sealed: bool | None = None
        self.to_hash: str | None = None
        self.links = OutcomeLinks(lines, self._outcome_failed)

    def fail(
        self,
        kind: ExportProblemKind,
        seq: int | None,
        message: str,
        *,
        line: int | None = None,
        share_id: str | None = None,
    ) -> NoReturn:
        number = self.number if line is None else line
        raise _Failed(ExportProblem(kind, number, seq, message, share_id))

    def _outcome_failed(self, seq: int, share_id: str, message: str) -> NoReturn:
        # At the line of the entry named: an open share's, where a checkpoint finds it open.
        self.fail("outcome", seq, message, line=self.lines.line_of(seq), share_id=share_id)

    def result(self, problem: ExportProblem | None) -> ExportCheck:
        return ExportCheck(
            ok=problem is None,
            entries=self.entries,
            shares=self.shares,
            outcomes=self.outcomes,
            checkpoints=self.checkpoints,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            head_seq=self.head_seq,
            anchor=self.anchor,
            macs_checked=self.key is not None,
            header_sealed=self.header_sealed,
            sealed_required=self.sealed,
            problem=problem,
        )

    def read(self, line: bytes) -> dict[str, Any]:
        """The line as a JSON object, or a failure naming it."""
        if line.endswith(b"\n"):
            line = line[:-1]
        try:
            value = _parsed(line)
        except _Malformed as exc:
            self.fail("malformed", None, f"line {self.number} is not a JSON line: {exc}")
        if not isinstance(value, dict):
            self.fail("malformed", None, f"line {self.number} is not a JSON object")
        return value

    def run(self) -> None:
        read = self.lines.read()
        self.number = 1
        first = next(read, None)
        if first is None:
            self.fail("header", None, "the file is empty: it holds no export")
        try:
            header = self.read(first)
        except _Failed as failed:
            # Most often a file that is not an export at all: said as such.
            self.fail("header", None, f"{failed.problem.message}, not an export header")
        from_seq, to_seq = self._header(header)
        # Looked for before the walk, as `logs verify` asks the log: the few shares whose
        # outcome must be remembered once they are closed, to find a second one.
        self.lines.from_seq = from_seq or 1
        self.links.begin(self.lines.from_seq, self.lines.unlinked_ids())
        read = itertools.islice(self.lines.read(), 1, None)
        expected = from_seq
        prev: str | None = None
        for line in read:
            self.number += 1
            fields = self.read(line)
            if fields.get("kind") == "head":
                self._head(fields, to_seq, prev)
                break
            seq = self._entry(fields)
            if expected is None or to_seq is None or seq > to_seq:
                self.fail(
                    "reordered",
                    seq,
                    f"line {self.number} holds seq {seq}, past the export's last entry "
                    f"(to_seq {to_seq}, from the header): it was added, or the header changed",
                )
            if seq != expected:
                how = "removed" if seq > expected else "repeated"
                self.fail(
                    "removed" if seq > expected else "reordered",
                    seq,
                    f"line {self.number} holds seq {seq} where seq {expected} comes next: "
                    f"an entry was {how}, or the lines reordered",
                )
            prev = self._sealed(fields, seq, prev)
            self._link(fields, seq)
            self._count(fields["kind"], seq)
            expected = seq + 1
        else:
            self.number += 1
            self.fail(
                "truncated",
                None,
                f"the file ends at line {self.number - 1} without its head line (kind: head): "
                "it was cut short",
            )
        if next(read, None) is not None:
            self.number += 1
            self.fail("malformed", None, f"line {self.number} follows the head line, the last")

    def _header(self, fields: dict[str, Any]) -> tuple[int | None, int | None]:
        if fields.get("kind") != "export":
            self.fail(
                "header",
                None,
                "line 1 is not an export header (kind: export): the file is not a share log "
                "export, or its first line was removed",
            )
        missing = sorted(_HEADER_REQUIRED - fields.keys())
        unknown = sorted(fields.keys() - _HEADER_KEYS)
        if missing or unknown:
            what = (
                f"lacks {', '.join(missing)}, which an export's has"
                if missing
                else f"has {', '.join(unknown)}, which an export's does not"
            )
            self.fail("header", None, f"the header (line 1) {what}")
        seqs = (fields["from_seq"], fields["to_seq"])
        texts = (
            fields["hash_rule"],
            *(fields.get(k) for k in ("exported_at", "since", "until", "to_hash", "mac")),
        )
        if not all(s is None or (_is_int(s) and s >= 1) for s in seqs) or not all(
            t is None or isinstance(t, str) for t in texts
        ):
            self.fail("header", None, "the header (line 1) has a field of the wrong type")
        self.to_hash = fields["to_hash"]
        self._header_seal(fields)
        from_seq, to_seq = seqs
        if from_seq is None or to_seq is None or from_seq > to_seq:
            return None, None  # a window without entries
        return from_seq, to_seq

    def _header_seal(self, fields: dict[str, Any]) -> None:
        mac = fields["mac"]
        if mac is None:
            self.header_sealed = False
            if self.sealed:
                # Even where the export reaches the signed head: it is the seal that is asked.
                self.fail(
                    "unsealed",
                    None,
                    "the header (line 1) is not sealed (its mac is null: it was exported without "
                    "the hash key), and a sealed one is required: the export's end is not proven",
                )
            return
        if self.key is None:
            return  # not checked: said so in the report
        try:
            expected = header_mac(self.key, fields)
        except orjson.JSONEncodeError:
            # A number past 64 bits, or text no UTF-8 can hold: no export's header is written so.
            expected = None
        if expected is None or not macs_equal(mac, expected):
            self.fail(
                "header",
                None,
                "the header (line 1) is not signed with this hash key: it was changed (where "
                "the export ends, to_seq or to_hash, or another field), or the key is not the "
                "gateway's",
            )
        self.header_sealed = True

    def _ends(self, last: str | None) -> None:
        """The header's `to_hash` against the last entry's hash."""
        to_hash = self.to_hash
        if to_hash == last:
            return
        if last is None:
            why = f"gives to_hash {to_hash} for a window without entries"
        elif to_hash is None:
            why = f"gives no to_hash, and the export holds entries up to seq {self.last_seq}"
        else:
            why = (
                f"gives to_hash {to_hash}, and the last entry (line {self.number - 1}, seq "
                f"{self.last_seq}) has another hash"
            )
        self.fail(
            "header",
            None,
            f"the header (line 1) {why}: the header was changed, or lines were cut from the "
            "export's end",
            line=1,
        )

    def _entry(self, fields: dict[str, Any]) -> int:
        kind = fields.get("kind")
        seq = fields.get("seq")
        at = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        if kind not in _ENTRY_KEYS:
            self.fail("malformed", at, f"line {self.number} is neither an entry nor the head line")
        expected = _ENTRY_KEYS[kind]
        if fields.keys() != expected:
            missing = sorted(expected - fields.keys())
            an = "an" if kind == "outcome" else "a"
            what = (
                f"lacks {', '.join(missing)}, which {an} {kind} entry has"
                if missing
                else f"has {', '.join(sorted(fields.keys() - expected))}, which {an} {kind} "
                "entry does not"
            )
            self.fail("malformed", at, f"line {self.number} {what}")
        share_seq = fields.get("share_seq")
        if (
            at is None
            or not all(isinstance(fields[k], str) for k in _TEXT_KEYS[kind])
            or not (share_seq is None or _is_int(share_seq))
        ):
            self.fail("malformed", at, f"line {self.number} has a field of the wrong type")
        return at

    def _link(self, fields: dict[str, Any], seq: int) -> None:
        """The entry's part in opening and closing shares, checked as `logs verify` checks it."""
        kind = fields["kind"]
        if kind == "share":
            if fields["decision"] == "shared":
                self.links.shared(seq, fields["share_id"])
        elif kind == "outcome":
            self.links.outcome(seq, fields["share_id"], fields["share_seq"])
        else:
            self.links.checkpoint(seq, fields["reason"])

    def _sealed(self, fields: dict[str, Any], seq: int, prev: str | None) -> str:
        """The entry's hash, once it matches its content, its link and its seal."""
        digest = str(fields["hash"])
        try:
            recomputed = entry_hash(unsealed(fields))
        except TypeError:  # a number past 64 bits, text that is not Unicode: no entry's
            self.fail(
                "malformed", seq, f"line {self.number} holds a value no entry is written with"
            )
        if recomputed != digest:
            self.fail(
                "changed",
                seq,
                f"the entry on line {self.number} (seq {seq}) does not match its hash: it was "
                "changed, or its hash",
            )
        link = fields["prev_hash"]
        if prev is None:
            # The first entry: what it links to is outside the file, bar the chain's start.
            if seq == 1 and link != GENESIS_HASH:
                self.fail(
                    "changed",
                    seq,
                    f"the entry on line {self.number} is seq 1, which links to the genesis "
                    "hash (64 zeros), and does not",
                )
            self.anchor = link
        elif link != prev:
            self.fail(
                "removed",
                seq,
                f"the entry on line {self.number} (seq {seq}) does not link to the line before "
                "it: its prev_hash is not that entry's hash",
            )
        if self.key is not None and not macs_equal(str(fields["mac"]), entry_mac(self.key, digest)):
            self.fail(
                "forged",
                seq,
                f"the entry on line {self.number} (seq {seq}) is not signed with this hash "
                "key: its hash was re-forged, or the key is not the gateway's",
            )
        return digest

    def _head(self, fields: dict[str, Any], to_seq: int | None, prev: str | None) -> None:
        if fields.keys() != _HEAD_KEYS:
            self.fail("malformed", None, f"the head line (line {self.number}) is not one")
        seq, digest, mac = fields["seq"], fields["hash"], fields["mac"]
        if not _is_int(seq) or not isinstance(digest, str) or not isinstance(mac, str):
            self.fail(
                "malformed",
                None,
                f"the head line (line {self.number}) has a field of the wrong type",
            )
        self.head_seq = seq
        ended = self.last_seq
        if to_seq is not None and ended != to_seq:
            after = f"seq {ended}" if ended is not None else "the header"
            self.fail(
                "removed",
                None if ended is None else ended + 1,
                f"the entries after {after} up to seq {to_seq} (to_seq, from the header) are "
                f"missing: the head line (line {self.number}) comes instead",
            )
        self._ends(prev)
        if to_seq is not None and to_seq > seq:
            self.fail(
                "head",
                seq,
                f"the export runs to seq {to_seq}, past its head line (line {self.number}), "
                f"at seq {seq}",
            )
        if to_seq == seq and prev != digest:
            self.fail(
                "head",
                seq,
                f"the head line (line {self.number}) is at seq {seq}, the last entry's, and its "
                "hash is not that entry's",
            )
        if self.key is not None and not macs_equal(mac, head_mac(self.key, seq, digest)):
            self.fail(
                "forged",
                seq,
                f"the head line (line {self.number}) is not signed with this hash key: it was "
                "changed, or the key is not the gateway's",
            )


def check_export(
    lines: Sequence[bytes] | IO[bytes], master_key: bytes | None, *, sealed: bool = False
) -> ExportCheck:
    """Check an export's lines, given as such or as a file opened in binary, read one at a time.

    The header must be first and well-formed; the entries run from its `from_seq` to `to_seq`,
    each matching its hash and linked to the one before (the first one's link is taken as
    given); the head line comes last, and where the export reaches it, matches the last entry;
    the header's `to_hash` is the last entry's hash. With `master_key`, every entry's seal and
    the head's are checked too, and the header's where it is sealed: without it,
    anyone could have made the file whole by recomputing the hashes, or cut its end.

    Each outcome is checked against its share as `logs verify` checks it, as far as the file
    shows: one linked to an entry of the file must be linked to an earlier shared record with
    its share id, and be its only outcome; a second one, unlinked, of a share whose outcome the
    file holds fails too, as does a share still open at an `open` or `close` checkpoint. An
    outcome linked to a share before the file's first entry, unlinked, or not come yet by its
    end, is what a window holds. The lines are read twice (the unlinked outcomes are looked
    for first): a stream that cannot seek is copied to an unnamed temporary file for it.

    With `sealed`, the header must be sealed (`mac` not null), which proves where the export
    ends: an unsealed one fails at line 1. It takes `master_key`, without which no seal is
    checked.
    """
    if sealed and master_key is None:
        raise ValueError("a sealed header is required, and without the hash key none is checked")
    if not isinstance(lines, Sequence) and not lines.seekable():
        # A pipe is read once: the copy, in a file that has no name, goes with it.
        with tempfile.TemporaryFile() as copy:
            shutil.copyfileobj(lines, copy)
            copy.seek(0)
            return check_export(copy, master_key, sealed=sealed)
    checker = _Checker(_Lines(lines), master_key, sealed)
    try:
        checker.run()
    except _Failed as failed:
        return checker.result(failed.problem)
    return checker.result(None)
