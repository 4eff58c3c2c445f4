"""Value transforms (hash, redact, mask, generalize): what a partner receives instead of a value."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction
from typing import Final, TypeAlias

import orjson

from gateway.jsonbody import JSONValue
from gateway.keys import keyed_hash

__all__ = [
    "REDACTED",
    "GeneralizeBucket",
    "GeneralizeYear",
    "Hash",
    "Mask",
    "Redact",
    "Transform",
    "Untransformable",
    "apply_transform",
    "describe_transform",
]

REDACTED: Final = "[REDACTED]"

_ISO_DATE_PREFIX: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


class Untransformable(Exception):
    """The value cannot be transformed as declared; the field must be stripped, never sent raw."""


@dataclass(frozen=True, slots=True)
class Hash:
    """Keyed HMAC-SHA256, hex. Strings are hashed as they are; numbers and booleans as their
    compact JSON text (`18000`, `true`); objects and arrays are untransformable."""


@dataclass(frozen=True, slots=True)
class Redact:
    """Any scalar becomes the string `"[REDACTED]"`: the field's presence is all that is sent."""


@dataclass(frozen=True, slots=True)
class Mask:
    """Every character becomes `*` except the first `keep_first` and the last `keep_last`.

    Numbers are masked as their JSON text. A value no longer than `keep_first + keep_last` is
    masked whole, so a short value is never revealed. Booleans are untransformable: the mask's
    length would give the value away.
    """

    keep_first: int = 0
    keep_last: int = 0

    def __post_init__(self) -> None:
        if self.keep_first < 0 or self.keep_last < 0:
            raise ValueError("mask keep_first and keep_last must not be negative")


@dataclass(frozen=True, slots=True)
class GeneralizeYear:
    """A string starting with a real ISO date `YYYY-MM-DD` (optionally followed by `T` or a space
    and an ISO time) becomes its year, `"YYYY"`; anything else is untransformable."""


@dataclass(frozen=True, slots=True)
class GeneralizeBucket:
    """A number becomes the range of width `size` holding it, `"lo-hi"` with
    `lo = floor(v / size) * size` and `hi = lo + size - 1` (18000 with 5000 gives
    `"15000-19999"`; -1 gives `"-5000--1"`). Anything but a finite int or float (booleans
    included) is untransformable."""

    size: int

    def __post_init__(self) -> None:
        if type(self.size) is not int or self.size < 1:
            raise ValueError("bucket size must be a positive integer")


Transform: TypeAlias = Hash | Redact | Mask | GeneralizeYear | GeneralizeBucket


def apply_transform(t: Transform, value: JSONValue, hash_key: bytes) -> JSONValue:
    """The value a partner receives in place of `value`, or `Untransformable`.

    `null` stays `null` under every transform: there is nothing to hide. Objects and arrays are
    untransformable by every transform. See each transform's docstring for its rule.
    """
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise Untransformable(f"{describe_transform(t)} needs a scalar, got {_kind(value)}")
    try:
        return _apply(t, value, hash_key)
    except (ValueError, OverflowError):
        # A value Python refuses to convert (an integer whose bucket bounds run past 4,300
        # digits, which int-to-str will not write out) is stripped like any other the transform
        # cannot handle, never a failed share. The error's own text may quote the value, which
        # must not reach the share record.
        raise Untransformable(f"{describe_transform(t)} cannot represent this value") from None


def _apply(t: Transform, value: str | int | float | bool, hash_key: bytes) -> JSONValue:
    if isinstance(t, Hash):
        return keyed_hash(hash_key, value if isinstance(value, str) else _json_text(value))
    if isinstance(t, Redact):
        return REDACTED
    if isinstance(t, Mask):
        if isinstance(value, bool):
            raise Untransformable("mask cannot hide a boolean: its length gives it away")
        return _mask(value if isinstance(value, str) else _json_text(value), t)
    if isinstance(t, GeneralizeYear):
        return _year(value)
    return _bucket(value, t.size)


def describe_transform(t: Transform) -> str:
    """A short human label, as the contract spells the transform (`mask(keep_last=4)`)."""
    if isinstance(t, Hash):
        return "hash"
    if isinstance(t, Redact):
        return "redact"
    if isinstance(t, Mask):
        return f"mask(keep_first={t.keep_first}, keep_last={t.keep_last})"
    if isinstance(t, GeneralizeYear):
        return "generalize(year)"
    return f"generalize(bucket={t.size})"


def _json_text(value: str | int | float | bool) -> str:
    if type(value) is int:
        # Exact for any integer: the JSON encoder refuses one past 64 bits.
        return str(value)
    return orjson.dumps(value).decode()


def _mask(text: str, t: Mask) -> str:
    length = len(text)
    if length <= t.keep_first + t.keep_last:
        return "*" * length
    tail = text[length - t.keep_last :] if t.keep_last else ""
    return text[: t.keep_first] + "*" * (length - t.keep_first - t.keep_last) + tail


def _year(value: str | int | float | bool) -> str:
    if not isinstance(value, str) or not _ISO_DATE_PREFIX.match(value):
        raise Untransformable("generalize(year) needs an ISO date string (YYYY-MM-DD)")
    try:
        if len(value) == 10:
            date.fromisoformat(value)
        elif value[10] in "Tt ":
            datetime.fromisoformat(value)
        else:
            raise ValueError(value)
    except ValueError:
        raise Untransformable("generalize(year) needs a real ISO date (YYYY-MM-DD)") from None
    return value[:4]


def _bucket(value: str | int | float | bool, size: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Untransformable(f"generalize(bucket={size}) needs a number, got {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Untransformable(f"generalize(bucket={size}) needs a finite number")
        # As the exact fraction a float is: float floor division rounds a quotient past 2**53,
        # and the range then missed the value (1e17 with 3 gave "99999999999999996-...998").
        low = Fraction(value) // size * size
    else:
        low = value // size * size
    return f"{low}-{low + size - 1}"


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
