"""The field allow-list: path syntax, the compiled plan, and what it keeps, transforms, strips."""

from __future__ import annotations

import enum
import functools
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

import orjson

from gateway.jsonbody import JSONValue
from gateway.transforms import (
    GeneralizeBucket,
    Mask,
    Transform,
    Untransformable,
    apply_transform,
    describe_transform,
)

__all__ = [
    "QUERY_PREFIX",
    "AllowRule",
    "Each",
    "FieldDecision",
    "FilterPlan",
    "FilterResult",
    "Key",
    "PathSyntaxError",
    "Segment",
    "Subtree",
    "TextScanner",
    "compile_plan",
    "parse_path",
    "query_parameter",
    "select",
]

QUERY_PREFIX: Final = "query."

TextScanner: TypeAlias = Callable[[str, frozenset[str]], tuple[str, Mapping[str, int]]]
"""Scans one kept string for personal data outside the allowed categories (the rule's category,
or none): returns the text with each finding replaced, and the findings counted per category."""

Action: TypeAlias = Literal["kept", "transformed", "stripped"]

_NO_CATEGORIES: Final[frozenset[str]] = frozenset()
_FORBIDDEN_KEY_CHARS: Final = frozenset(".[]*")
# A path of n segments reaches a value n levels deep, and no body the gateway reads is deeper
# than `limits.max_json_depth`, itself at most 254. Past that a path names nothing, and a plan
# of such paths would be compiled one stack frame per segment.
MAX_PATH_SEGMENTS: Final = 254
_CONTAINERS: Final = (dict, list)


# --- paths ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """Descend into the object key `name` (exact, case-sensitive)."""

    name: str


@dataclass(frozen=True, slots=True)
class Each:
    """`[]`: every element of an array."""


@dataclass(frozen=True, slots=True)
class Subtree:
    """`**`: the whole value, whatever it holds; only ever the last segment."""


Segment: TypeAlias = Key | Each | Subtree


class PathSyntaxError(ValueError):
    """A field path that is malformed, or that contradicts another path of the same allow-list."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def parse_path(path: str) -> tuple[Segment, ...]:
    """The segments of a field path, or `PathSyntaxError`.

    `a.b.c` names a scalar, `a.b[]` every element of an array (`[]` may repeat for nested
    arrays), `items[].amount` a key in every element, `a.b.**` the whole subtree (last segment
    only, never the whole document). `query.<name>` names a query parameter and has exactly two
    segments. A key is one or more characters other than `.`, `[`, `]`, `*` and whitespace.
    """
    if path.startswith(QUERY_PREFIX):
        name = path[len(QUERY_PREFIX) :]
        if not name or not _is_key(name):
            raise PathSyntaxError(
                path,
                f"field path {path!r}: a query parameter is written query.<name>, "
                "with nothing after the name",
            )
        return (Key("query"), Key(name))
    return _parse_body_path(path)


def query_parameter(path: str) -> str | None:
    """The query parameter a `query.<name>` path names, or None for a body path."""
    if path.startswith(QUERY_PREFIX):
        last = parse_path(path)[-1]
        if isinstance(last, Key):
            return last.name
    return None


@functools.lru_cache(maxsize=4096)
def _parse_body_path(path: str) -> tuple[Segment, ...]:
    if not path:
        raise PathSyntaxError(path, "a field path must not be empty")
    segments: list[Segment] = []
    parts = path.split(".")
    for index, part in enumerate(parts):
        if part == "**":
            if index == 0:
                raise PathSyntaxError(
                    path, f"field path {path!r}: ** must follow a key (a.b.**), never stand alone"
                )
            if index != len(parts) - 1:
                raise PathSyntaxError(
                    path, f"field path {path!r}: ** is only allowed as the last segment"
                )
            segments.append(Subtree())
            continue
        key, bracket, brackets = part.partition("[")
        if not key:
            what = "an empty key" if not bracket else "[] without a key before it"
            raise PathSyntaxError(path, f"field path {path!r} has {what}")
        if not _is_key(key):
            raise PathSyntaxError(
                path,
                f"field path {path!r}: key {key!r} may not contain '.', '[', ']', '*' "
                "or whitespace",
            )
        segments.append(Key(key))
        if bracket:
            arrays = "[" + brackets
            if arrays != "[]" * (len(arrays) // 2) or len(arrays) % 2:
                raise PathSyntaxError(
                    path, f"field path {path!r}: after {key!r} only [] (every element) may follow"
                )
            segments.extend(Each() for _ in range(len(arrays) // 2))
        if len(segments) > MAX_PATH_SEGMENTS:
            shown = path if len(path) <= 60 else path[:57] + "..."
            raise PathSyntaxError(
                path,
                f"field path {shown!r} has more than {MAX_PATH_SEGMENTS} segments: no body "
                "the gateway reads is that deep",
            )
    return tuple(segments)


def _is_key(text: str) -> bool:
    return not any(c in _FORBIDDEN_KEY_CHARS or c.isspace() for c in text)


def select(doc: JSONValue, path: str | tuple[Segment, ...]) -> list[JSONValue]:
    """The values of `doc` at a path, in document order; `[]` fans out over arrays.

    A missing key, or a value of the wrong kind on the way, contributes nothing; `**` ends the
    path (the values reached so far). The path is read as body keys only, also when it starts
    with `query.` (which may be a relative path inside a record): query parameters live in the
    query mapping, see `query_parameter`. Raises `PathSyntaxError` for a malformed path.
    """
    segments = _parse_body_path(path) if isinstance(path, str) else path
    values: list[JSONValue] = [doc]
    for segment in segments:
        if isinstance(segment, Key):
            name = segment.name
            values = [v[name] for v in values if isinstance(v, dict) and name in v]
        elif isinstance(segment, Each):
            values = [item for v in values if isinstance(v, list) for item in v]
        else:
            break
    return values


# --- rules and results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One allow-list entry: a path, the data category it carries, and an optional transform."""

    path: str
    category: str | None
    transform: Transform | None = None


@dataclass(frozen=True, slots=True)
class FieldDecision:
    """What happened to one value, at its concrete path (`items[2].amount`), and why."""

    path: str
    action: Action
    reason: str


# Not frozen, as ShareRecord (gateway/sharelog/record.py); `Final` keeps it immutable.
@dataclass(slots=True)
class FilterResult:
    """The filtered body and query, and what the share record says about them.

    Field lists hold generic paths (`items[].amount`), sorted and de-duplicated. `fields_sent`
    includes the transformed fields; a stripped path names the key or element that was removed
    (its subtree is not listed further), up to `MAX_STRIPPED_PATHS` of them and then
    `MORE_STRIPPED`. `stripped_count` counts removals, not distinct paths.
    """

    document: Final[dict[str, JSONValue]]
    query: Final[dict[str, str]]
    fields_sent: Final[tuple[str, ...]]
    fields_stripped: Final[tuple[str, ...]]
    fields_transformed: Final[tuple[str, ...]]
    stripped_count: Final[int]
    categories_sent: Final[tuple[str, ...]]
    pii_redactions: Final[dict[str, int]]
    trace: Final[tuple[FieldDecision, ...]] = ()


# --- the compiled plan ------------------------------------------------------------------------


class _Dropped(enum.Enum):
    DROPPED = enum.auto()


_DROPPED: Final = _Dropped.DROPPED


@dataclass(frozen=True, slots=True, eq=False)
class _Leaf:
    """A place where a scalar is allowed (`a.b`, `a.b[]`, `query.page`)."""

    path: str
    category: str | None
    transform: Transform | None
    allowed: frozenset[str]
    kept_reason: str
    transformed_reason: str

    def apply(self, run: _Run, value: JSONValue, where: str) -> JSONValue | _Dropped:
        if isinstance(value, _CONTAINERS):
            kind = "object" if isinstance(value, dict) else "array"
            run.strip(self.path, where, f"{kind} where a scalar is allowed")
            return _DROPPED
        if self.transform is not None and value is not None:
            reason = self.transformed_reason
            if type(self.transform) is Mask and type(value) is str and run.scanner is not None:
                # A mask sends part of the text as written: scanned first, as a field without a
                # transform is, or a phone number in a note's kept start would go out whole.
                value, counts = run.scanner(value, self.allowed)
                if counts:
                    run.count_redactions(counts)
                    if run.trace is not None:
                        reason += _redaction_note(counts)
            try:
                out = apply_transform(self.transform, value, run.hash_key)
            except Untransformable as exc:
                run.strip(self.path, where, f"untransformable: {exc}")
                return _DROPPED
            run.sent.add(self.path)
            run.transformed.add(self.path)
            if self.category is not None:
                run.categories.add(self.category)
            if run.trace is not None:
                run.trace.append(FieldDecision(where, "transformed", reason))
            return out
        reason = self.kept_reason
        if run.scanner is not None and type(value) is str:
            value, counts = run.scanner(value, self.allowed)
            if counts:
                run.count_redactions(counts)
                if run.trace is not None:
                    reason += _redaction_note(counts)
        run.sent.add(self.path)
        if self.category is not None:
            run.categories.add(self.category)
        if run.trace is not None:
            run.trace.append(FieldDecision(where, "kept", reason))
        return value


@dataclass(frozen=True, slots=True, eq=False)
class _Whole:
    """A place whose whole subtree is allowed (`a.b.**`)."""

    path: str
    rule_path: str
    category: str | None
    allowed: frozenset[str]
    kept_reason: str

    def apply(self, run: _Run, value: JSONValue, where: str) -> JSONValue | _Dropped:
        out, counts = _copy_scanning(value, run.scanner, self.allowed)
        if counts:
            run.count_redactions(counts)
        run.sent.add(self.rule_path)
        if self.category is not None:
            run.categories.add(self.category)
        if run.trace is not None:
            reason = self.kept_reason + _redaction_note(counts)
            run.trace.append(FieldDecision(where, "kept", reason))
        return out


@dataclass(frozen=True, slots=True, eq=False)
class _Object:
    """A place that must hold an object; only the keys in `children` survive."""

    path: str
    prefix: str
    children: Mapping[str, _Node]

    def apply(self, run: _Run, value: JSONValue, where: str) -> JSONValue | _Dropped:
        if not isinstance(value, dict):
            run.strip(self.path, where, f"{_kind(value)} where an object is expected")
            return _DROPPED
        return run.object(self, value, where)


@dataclass(frozen=True, slots=True, eq=False)
class _Array:
    """A place that must hold an array; each element is filtered by `element`."""

    path: str
    element: _Node

    def apply(self, run: _Run, value: JSONValue, where: str) -> JSONValue | _Dropped:
        if not isinstance(value, list):
            run.strip(self.path, where, f"{_kind(value)} where an array is expected")
            return _DROPPED
        element = self.element
        out: list[JSONValue] = []
        tracing = run.trace is not None
        for index, item in enumerate(value):
            kept = element.apply(run, item, f"{where}[{index}]" if tracing else "")
            if kept is not _DROPPED:
                out.append(kept)
        return out


_Node: TypeAlias = _Leaf | _Whole | _Object | _Array


@dataclass(frozen=True, slots=True, eq=False)
class FilterPlan:
    """An allow-list compiled once; `apply` filters one request's body and query with it."""

    rules: tuple[AllowRule, ...]
    _root: _Object = field(repr=False)
    _query: Mapping[str, _Leaf] = field(repr=False)

    def apply(
        self,
        doc: dict[str, JSONValue],
        query: Mapping[str, str],
        *,
        hash_key: bytes,
        scanner: TextScanner | None = None,
        trace: bool = False,
    ) -> FilterResult:
        """Keep what the plan allows, transform what it says to, strip everything else.

        Never mutates `doc` and never shares its containers with the result. Kept keys keep their
        input order; an object or array the plan names stays (possibly empty) when the input had
        it. A value whose transform fails is stripped (`untransformable`), never sent raw. Every
        kept string that is not transformed goes through `scanner`, query values included. A
        `null` stays `null` under a transform (nothing to hide) and counts as kept.
        """
        run = _Run(hash_key, scanner, [] if trace else None)
        document = run.object(self._root, doc, "")
        kept_query: dict[str, str] = {}
        for name, value in query.items():
            where = QUERY_PREFIX + name
            leaf = self._query.get(name)
            if leaf is None:
                # Logged like a body key: a parameter's name may itself be personal data.
                run.strip(QUERY_PREFIX + loggable_key(name), where, "not in the allow-list")
                continue
            given: JSONValue = value
            if isinstance(leaf.transform, GeneralizeBucket):
                given = _query_number(value)
            out = leaf.apply(run, given, where)
            if isinstance(out, str):
                kept_query[name] = out
        return FilterResult(
            document=document,
            query=kept_query,
            fields_sent=tuple(sorted(run.sent)),
            fields_stripped=(*sorted(run.stripped), MORE_STRIPPED)
            if run.stripped_unlisted
            else tuple(sorted(run.stripped)),
            fields_transformed=tuple(sorted(run.transformed)),
            stripped_count=run.stripped_count,
            categories_sent=tuple(sorted(run.categories)),
            pii_redactions=run.pii,
            trace=tuple(run.trace) if run.trace is not None else (),
        )


class _Run:
    """The bookkeeping of one `FilterPlan.apply` call."""

    __slots__ = (
        "categories",
        "hash_key",
        "pii",
        "scanner",
        "sent",
        "stripped",
        "stripped_count",
        "stripped_unlisted",
        "trace",
        "transformed",
    )

    def __init__(
        self, hash_key: bytes, scanner: TextScanner | None, trace: list[FieldDecision] | None
    ) -> None:
        self.hash_key = hash_key
        self.scanner = scanner
        self.trace = trace
        self.sent: set[str] = set()
        self.stripped: set[str] = set()
        self.transformed: set[str] = set()
        self.categories: set[str] = set()
        self.pii: dict[str, int] = {}
        self.stripped_count = 0
        self.stripped_unlisted = False  # a distinct path past the cap: the list says so

    def object(
        self, node: _Object, value: dict[str, JSONValue], where: str
    ) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {}
        children = node.children
        tracing = self.trace is not None
        stripped = self.stripped
        for key, item in value.items():
            child_where = (f"{where}.{key}" if where else key) if tracing else ""
            child = children.get(key)
            if child is None:
                path = node.prefix + loggable_key(key)
                if tracing:
                    self.strip(path, child_where, "not in the allow-list")
                else:  # `strip` inlined: most keys of a typical body end here
                    if len(stripped) < MAX_STRIPPED_PATHS:
                        stripped.add(path)
                    elif path not in stripped:
                        self.stripped_unlisted = True
                    self.stripped_count += 1
                continue
            kept = child.apply(self, item, child_where)
            if kept is not _DROPPED:
                out[key] = kept
        return out

    def strip(self, path: str, where: str, reason: str) -> None:
        # The record lists distinct stripped paths up to a cap; the count covers all of them.
        if len(self.stripped) < MAX_STRIPPED_PATHS:
            self.stripped.add(path)
        elif path not in self.stripped:
            self.stripped_unlisted = True
        self.stripped_count += 1
        if self.trace is not None:
            self.trace.append(FieldDecision(where, "stripped", reason))

    def count_redactions(self, counts: Mapping[str, int]) -> None:
        pii = self.pii
        for category, n in counts.items():
            if n:
                pii[category] = pii.get(category, 0) + n


# Stripped key names go into the share log, which must never hold personal data: a caller may
# key an object by phone numbers or names. Names that do not look like field names are logged
# as `<key>`.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
# Five digits in all, however they are split: "tel_138-0013-8000" is a phone number.
_FIVE_DIGITS = re.compile(r"(?:[0-9][^0-9]*){5}")
MAX_STRIPPED_PATHS = 256
# Ends a record's `fields_stripped` that names MAX_STRIPPED_PATHS paths and had more to name.
MORE_STRIPPED = "<more>"
UNNAMED_KEY = "<key>"


@functools.lru_cache(maxsize=4096)
def loggable_key(key: str) -> str:
    """`key` if it reads like a field name, else a placeholder that reveals nothing."""
    if _FIELD_NAME.fullmatch(key) is None or _FIVE_DIGITS.search(key) is not None:
        return UNNAMED_KEY
    return key


def _copy_scanning(
    value: JSONValue, scanner: TextScanner | None, allowed: frozenset[str]
) -> tuple[JSONValue, dict[str, int]]:
    """A copy of a whole subtree with every string, key and long integer scanned, and the
    redactions made.

    A subtree is free-form: a phone number may be a key (`{"13800138000": ...}`) or an integer
    as well as text. An integer in which something is found becomes the redacted text; a key
    that redacts to one already copied is left out (one object cannot hold it twice).
    Iterative, so no nesting depth can exhaust the stack.
    """
    counts: dict[str, int] = {}
    pending: list[tuple[JSONValue, JSONValue]] = []

    def scanned(text: str) -> str:
        if scanner is None:
            return text
        text, found = scanner(text, allowed)
        for category, n in found.items():
            if n:
                counts[category] = counts.get(category, 0) + n
        return text

    def copy(item: JSONValue) -> JSONValue:
        if isinstance(item, _CONTAINERS):
            empty: JSONValue = {} if isinstance(item, dict) else []
            pending.append((item, empty))
            return empty
        if type(item) is str:
            return scanned(item)
        if type(item) is int and not -_SHORTEST_ID < item < _SHORTEST_ID:
            digits = str(item)
            text = scanned(digits)
            return item if text is digits else text
        if type(item) is float and not -_SHORTEST_ID < item < _SHORTEST_ID and item.is_integer():
            # 13800138000.0 and 1.3800138e10 are the same number as 13800138000.
            digits = str(int(item))
            text = scanned(digits)
            return item if text is digits else text
        return item

    root = copy(value)
    while pending:
        source, target = pending.pop()
        if isinstance(source, dict) and isinstance(target, dict):
            for key, item in source.items():
                name = scanned(key)
                if name not in target:  # only a redacted key can meet one already copied
                    target[name] = copy(item)
        elif isinstance(source, list) and isinstance(target, list):
            target.extend(copy(item) for item in source)
    return root, counts


# Every identifier the scanner knows has seven digits or more: shorter integers hold none.
_SHORTEST_ID: Final = 1_000_000


def _query_number(text: str) -> JSONValue:
    """A query value read as a JSON number for `generalize(bucket)`; other text stays text.

    A whole number is read exactly, up to as many digits as the largest double holds before
    its point (309): as large as a JSON number can be at all. A longer one stays text, and so is
    untransformable like any other text. Of any other number, only its floor is read, exactly:
    it lies in the same bucket, where the nearest double may not (`9999999999999999.9` reads
    as 1e16, a bucket up).
    """
    if not text or text[0] not in "-0123456789":
        return text
    if _WHOLE_NUMBER.fullmatch(text):
        # Counted before int(): past 4,300 digits int() refuses the text, and a bucket's bounds
        # near that length could not be written out.
        if len(text) - text.startswith("-") > _WHOLE_NUMBER_MAX_DIGITS:
            return text
        return int(text)  # exactly: orjson would read one past 64 bits as a rounded float
    try:
        number = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if not isinstance(number, int | float):
        return text
    # A JSON number that orjson reads as a finite double: no more than 309 digits before its
    # point, so its floor is no longer than a whole number read above.
    return int(Decimal(text).to_integral_value(rounding=ROUND_FLOOR))


_WHOLE_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)")
_WHOLE_NUMBER_MAX_DIGITS: Final = len(str(int(sys.float_info.max)))


def _redaction_note(counts: Mapping[str, int]) -> str:
    found = ", ".join(f"{n} {category}" for category, n in sorted(counts.items()) if n)
    return f"; redacted {found}" if found else ""


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


# --- compiling ---------------------------------------------------------------------------------


class _Draft:
    """A place of the plan while rules are still being added."""

    __slots__ = ("children", "element", "kind", "origin", "rule")

    def __init__(self, kind: Literal["object", "array", "scalar", "subtree"], origin: str) -> None:
        self.kind = kind
        self.origin = origin
        self.children: dict[str, _Draft] = {}
        self.element: _Draft | None = None
        self.rule: AllowRule | None = None


_KIND_WORDS: Final = {
    "object": "an object",
    "array": "an array",
    "scalar": "a scalar",
    "subtree": "a whole subtree (**)",
}


def compile_plan(rules: Sequence[AllowRule]) -> FilterPlan:
    """Compile an allow-list into an immutable plan, or raise `PathSyntaxError`.

    Refused: malformed paths, the same path twice, a place named as two different things (`a.b`
    and `a.b.c`, `a.b` and `a.b[]`, `a.b.**` and anything under `a.b`), and a transform on `**`.
    """
    root = _Draft("object", "")
    query: dict[str, _Leaf] = {}
    for rule in rules:
        segments = parse_path(rule.path)
        if rule.path.startswith(QUERY_PREFIX):
            name = segments[-1]
            if not isinstance(name, Key):  # pragma: no cover - parse_path guarantees a key
                raise PathSyntaxError(rule.path, f"field path {rule.path!r} is malformed")
            if name.name in query:
                raise PathSyntaxError(rule.path, f"field path {rule.path!r} is listed twice")
            query[name.name] = _leaf(rule, rule.path)
            continue
        if isinstance(segments[-1], Subtree) and rule.transform is not None:
            raise PathSyntaxError(
                rule.path,
                f"field path {rule.path!r}: a transform cannot apply to a whole subtree (**)",
            )
        _add(root, segments, rule)
    return FilterPlan(
        rules=tuple(rules),
        _root=_freeze_object(root, ""),
        _query=MappingProxyType(query),
    )


def _add(root: _Draft, segments: tuple[Segment, ...], rule: AllowRule) -> None:
    place = root
    for index, segment in enumerate(segments):
        if isinstance(segment, Subtree):
            break
        following = segments[index + 1] if index + 1 < len(segments) else None
        kind: Literal["object", "array", "scalar", "subtree"]
        if following is None:
            kind = "scalar"
        elif isinstance(following, Key):
            kind = "object"
        elif isinstance(following, Each):
            kind = "array"
        else:
            kind = "subtree"
        existing = place.children.get(segment.name) if isinstance(segment, Key) else place.element
        if existing is None:
            existing = _Draft(kind, rule.path)
            if isinstance(segment, Key):
                place.children[segment.name] = existing
            else:
                place.element = existing
        elif existing.kind != kind or kind in ("scalar", "subtree"):
            if existing.origin == rule.path:
                raise PathSyntaxError(rule.path, f"field path {rule.path!r} is listed twice")
            raise PathSyntaxError(
                rule.path,
                f"field path {rule.path!r} conflicts with {existing.origin!r}: one place cannot "
                f"be both {_KIND_WORDS[kind]} and {_KIND_WORDS[existing.kind]}",
            )
        if kind in ("scalar", "subtree"):
            existing.rule = rule
        place = existing


# What a field's category holds of what the free-text scanner finds, besides itself: a
# trajectory is precise locations one after another, redacted from it, it would be none.
_COVERS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"location.trajectory": frozenset({"location.precise"})}
)


def _leaf(rule: AllowRule, path: str) -> _Leaf:
    allowed = (
        frozenset((rule.category,)) | _COVERS.get(rule.category, _NO_CATEGORIES)
        if rule.category
        else _NO_CATEGORIES
    )
    allowed_by = f"allowed by {rule.path}" + (f" ({rule.category})" if rule.category else "")
    transformed = (
        f"{describe_transform(rule.transform)}; {allowed_by}" if rule.transform else allowed_by
    )
    return _Leaf(
        path=path,
        category=rule.category,
        transform=rule.transform,
        allowed=allowed,
        kept_reason=allowed_by,
        transformed_reason=transformed,
    )


def _freeze(draft: _Draft, path: str) -> _Node:
    if draft.kind == "object":
        return _freeze_object(draft, path)
    if draft.kind == "array":
        if draft.element is None:  # pragma: no cover - an array place always has an element
            raise PathSyntaxError(path, f"{path!r} has no element rule")
        return _Array(path=path, element=_freeze(draft.element, path + "[]"))
    rule = draft.rule
    if rule is None:  # pragma: no cover - a terminal place always has its rule
        raise PathSyntaxError(path, f"{path!r} has no rule")
    if draft.kind == "subtree":
        leaf = _leaf(rule, path)
        return _Whole(
            path=path,
            rule_path=rule.path,
            category=rule.category,
            allowed=leaf.allowed,
            kept_reason=leaf.kept_reason,
        )
    return _leaf(rule, path)


def _freeze_object(draft: _Draft, path: str) -> _Object:
    prefix = f"{path}." if path else ""
    # A loop, not a comprehension: a comprehension is one more stack frame per path segment.
    children: dict[str, _Node] = {}
    for name, child in draft.children.items():
        children[name] = _freeze(child, prefix + name)
    return _Object(path=path, prefix=prefix, children=MappingProxyType(children))
