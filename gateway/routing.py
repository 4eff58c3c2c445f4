"""Request targets: strict parsing of `/{partner}/{path}?{query}`, matching route templates."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar
from urllib.parse import unquote_to_bytes

from gateway.errors import MalformedRequest

# Only RFC 3986 unreserved characters may appear in a path segment. Anything a server, a
# framework or the partner could decode or normalise differently (`%`, `;`, `\`, `:`, `@`, NUL,
# non-ASCII) is refused, so the path the gateway checks is the path the partner receives.
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9._~!$'()*,;:@/?=&+%-]*")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


# Not frozen, as ShareRecord (gateway/sharelog/record.py); `Final` keeps it immutable.
@dataclass(slots=True)
class Target:
    """A request target that passed the strict checks: partner id, upstream segments, query."""

    partner: Final[str]
    segments: Final[tuple[str, ...]]
    query: Final[tuple[tuple[str, str], ...]]


def parse_target(raw: str, *, max_query_params: int) -> Target:
    """Split a raw request target; refuse anything ambiguous with `malformed_request`."""
    if not raw.startswith("/") or raw.startswith("//"):
        # Absolute-form (`http://host/...`) and authority-like targets never reach routing.
        raise MalformedRequest("the request target must be an origin-form path")
    path, sep, query_text = raw.partition("?")
    if "#" in raw:
        raise MalformedRequest("a fragment is not allowed in the request target")
    parts = path.split("/")[1:]
    for part in parts:
        if not part:
            raise MalformedRequest("empty path segments are not allowed")
        if part in {".", ".."}:
            raise MalformedRequest("dot-segments are not allowed in the path")
        if _SEGMENT.fullmatch(part) is None:
            raise MalformedRequest(
                "path segments may only contain letters, digits and - . _ ~ "
                "(no percent-encoding, ';', '\\' or control characters)"
            )
    if len(parts) < 2:
        raise MalformedRequest("the path must be /{partner}/{upstream path}")
    query = _parse_query(query_text, max_query_params) if sep else ()
    return Target(partner=parts[0], segments=tuple(parts[1:]), query=query)


def _decode_component(text: str) -> str:
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise MalformedRequest("query parameters must be valid UTF-8") from exc


def _parse_query(text: str, limit: int) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    if _QUERY_CHARS.fullmatch(text) is None or _PERCENT.search(text) is not None:
        raise MalformedRequest("the query string holds characters that must be percent-encoded")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in text.split("&"):
        if not item:
            raise MalformedRequest("empty query parameters are not allowed")
        name_raw, _, value_raw = item.partition("=")
        name = _decode_component(name_raw)
        value = _decode_component(value_raw)
        if not name or "\x00" in name or "\x00" in value:
            raise MalformedRequest("query parameter names must be non-empty and free of NUL")
        if name in seen:
            # A repeated parameter is read as the first value by some servers and the last by
            # others: the gateway cannot know which one the partner would act on.
            raise MalformedRequest("a query parameter is repeated")
        seen.add(name)
        pairs.append((name, value))
        if len(pairs) > limit:
            raise MalformedRequest(f"more than {limit} query parameters")
    return tuple(pairs)


# A route's `subject` or `birth_date` may name a placeholder of its path: `path.customer_id`
# for `/v1/customers/{customer_id}` (as `query.` names a query parameter).
PATH_PREFIX = "path."


def path_placeholder(path: str) -> str | None:
    """The placeholder a `path.<name>` names, or None for any other path."""
    return path[len(PATH_PREFIX) :] if path.startswith(PATH_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Template:
    """A route path template: literal segments and `{name}` placeholders."""

    text: str
    parts: tuple[str | None, ...]  # None marks a placeholder
    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[str | None] = []
        names: list[str] = []
        for part in text.strip("/").split("/") if text != "/" else ():
            if part.startswith("{") and part.endswith("}"):
                parts.append(None)
                names.append(part[1:-1])
            else:
                parts.append(part)
        return cls(text=text, parts=tuple(parts), names=tuple(names))

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        if len(segments) != len(self.parts):
            return None
        values: dict[str, str] = {}
        names = iter(self.names)
        for expected, actual in zip(self.parts, segments, strict=True):
            if expected is None:
                # `.` and `..` are unreserved characters but never a placeholder's value.
                if actual in {".", ".."}:
                    return None
                values[next(names)] = actual
            elif expected != actual:
                return None
        return values


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RouteTable(Generic[T]):
    """Templates indexed by method and segment count; a request matches exactly or not at all."""

    index: Mapping[tuple[str, int], tuple[tuple[Template, T], ...]]

    @classmethod
    def build(cls, entries: Iterable[tuple[str, Template, T]]) -> RouteTable[T]:
        index: dict[tuple[str, int], list[tuple[Template, T]]] = {}
        for method, template, value in entries:
            index.setdefault((method, len(template.parts)), []).append((template, value))
        return cls(index={key: tuple(items) for key, items in index.items()})

    def match(self, method: str, segments: Sequence[str]) -> list[tuple[T, dict[str, str]]]:
        found: list[tuple[T, dict[str, str]]] = []
        for template, value in self.index.get((method, len(segments)), ()):
            params = template.match(segments)
            if params is not None:
                found.append((value, params))
        return found
