"""Strict JSON bodies: the fail-closed parser, the serialiser, and the JSON content-type check."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, TypeAlias

import orjson

from gateway.errors import MalformedBody, UnsupportedMediaType

JSONValue: TypeAlias = dict[str, "JSONValue"] | list["JSONValue"] | str | int | float | bool | None

__all__ = [
    "JSONValue",
    "check_json_content_type",
    "dump_json",
    "parse_json",
    "parse_media_type",
]

# orjson refuses documents nested deeper than this, whatever limit the caller asks for.
_ORJSON_MAX_DEPTH: Final = 1024

# The integers orjson keeps exactly; any other integer literal it silently turns into a float.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
# Every integer literal outside [_INT_MIN, _INT_MAX] parses to a float at least this large in
# magnitude (-2**63 - 1 rounds to -2**63), so only a document holding such a float needs the
# slow scan for integer literals.
_ROUNDED_INT_THRESHOLD: Final = float(2**63)

# A JSON string token. Valid JSON has no `"` outside strings, so scanning from the left with this
# pattern visits exactly the document's string tokens, keys included.
_STRING: Final = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_STRING_RE: Final = re.compile(_STRING, re.DOTALL)
# Every integer literal of up to 18 digits, and every positive one of 19, lies in
# [_INT_MIN, _INT_MAX] (2**64 - 1 has 20 digits, -2**63 19): only longer ones need int().
_INT_DIGITS_EXACT: Final = 18
# Digits to NUL, which no body holds (refused above): a run of digits of some length is then
# found with a substring search, at C speed, where a regex stops at every digit it passes.
_DIGITS_AS_NUL: Final = bytes.maketrans(b"0123456789", b"\0" * 10)
# A translation table: what no number token holds becomes a comma (see `_number_tokens`).
_NUMBER_OR_COMMA: Final = bytes(b if b in b"0123456789.eE+-" else ord(",") for b in range(256))
# In `_number_tokens`: an integer literal of 19 digits or more. Each token starts after a comma,
# so the regex engine skips from comma to comma instead of trying every byte.
_LONG_INTEGER_TOKEN: Final = re.compile(rb",(-?[0-9]{19,})(?=,)")

# Every double is written to at most 17 significant digits and read back the same; a float
# literal with more gives digits no double keeps, and its partner would get another number.
_FLOAT_DIGITS_MAX: Final = 17
# A float literal (a point or an exponent follows its integer part) of more than 17
# significant digits, from its first nonzero digit to a nonzero digit 17 digits on (trailing
# zeros say nothing): 17 digits more without the point, or 18 characters with it. Each part is a
# run of one character class, which the regex engine takes at C speed.
_LONG_FLOAT: Final = (
    rb"-?+(?=[0-9]*+[.eE])(?:0\.0*+)?+[1-9](?:[0-9]{%d,}|[0-9.]{%d,})(?<=[1-9])"
    % (_FLOAT_DIGITS_MAX, _FLOAT_DIGITS_MAX + 1)
)
_LONG_FLOAT_LITERAL: Final = re.compile(_LONG_FLOAT)  # matched where a number token starts
_LONG_FLOAT_TOKEN: Final = re.compile(b"," + _LONG_FLOAT)  # searched in `_number_tokens`
# Where such a literal may be: with digits, points and exponent letters made NUL, 19 in a row.
# A literal of 17 significant digits with a point has 18 (`-131.62887211953557`), so the floats
# browsers send are passed by at C speed; one below 1 (`0.12345678901234567`) has 19, and is
# passed by at a glance.
_NUMBER_BODY_AS_NUL: Final = bytes.maketrans(b"0123456789.eE", b"\0" * 13)
_LONG_FLOAT_PLACE: Final = b"\0" * (_FLOAT_DIGITS_MAX + 2)
# Past this many places looked at one by one (or passed by at a glance), one search of the whole
# body is cheaper.
_LONG_FLOAT_PLACES_ONE_BY_ONE: Final = 256
_LONG_FLOAT_PLACES_AT_A_GLANCE: Final = 4096
_NUMBER_CHARS: Final = frozenset(b"0123456789.eE+-")
_NOT_NUMBER_CHAR: Final = re.compile(rb"[^0-9.eE+\-]")
# A nonzero literal reads as 0.0 only with a negative exponent of three digits or more
# (`1e-400`) or some 200 zeros after its point: with neither it is above 1e-300.
_VANISHING_EXPONENTS: Final = (b"e-\0\0\0", b"E-\0\0\0")
_VANISHING_ZEROS: Final = b"0" * 200
# In `_number_tokens`: a float literal of zero, all its digits zeros (`0.0`, `-0e5`): the only
# literals that rightly read as 0.0.
_ZERO_FLOAT_TOKEN: Final = re.compile(rb",-?0(?:\.0+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)(?=,)")
_TOO_SMALL: Final = (
    "the body has a nonzero number too small for a 64-bit float, which reads it as 0"
)

_NOT_QUOTE_OR_COLON: Final = bytes(b for b in range(256) if b not in b'":')
_CONTAINERS: Final = (dict, list)
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF16_32_BOMS: Final = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def parse_json(raw: bytes, *, max_depth: int) -> dict[str, JSONValue]:
    """Parse a request body that must be one strict JSON object, or raise `MalformedBody`.

    Refused: an empty body, anything but UTF-8 (a BOM, UTF-16/32, invalid or surrogate-encoding
    byte sequences), lone surrogate escapes, NaN and Infinity, numbers that overflow a double,
    integer literals outside [-2**63, 2**64 - 1] (they could only be kept by rounding), float
    literals of more than 17 significant digits and nonzero ones a double reads as 0 (`1e-400`;
    either would reach the partner as another number), duplicate keys at any depth (also keys
    that collide only after unescaping), trailing content, nesting deeper than `max_depth` (`{}`
    has depth 1, `{"a": []}` depth 2), and a top-level value that is not an object. Never
    recurses, so hostile nesting cannot exhaust the stack.
    """
    if not raw:
        raise MalformedBody("the body is empty: a JSON object is required")
    _refuse_non_utf8_encodings(raw)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(_describe_decode_error(raw, exc, max_depth)) from None
    if not isinstance(doc, dict):
        raise MalformedBody(
            f"the body must be a JSON object, not {_json_kind(doc)}",
        )
    keys, has_float, has_large_float, zero_floats = _measure(doc, max_depth)
    if keys and _count_key_tokens(raw) != keys:
        raise MalformedBody(
            "the body has duplicate keys in one object (keys are compared after unescaping)"
        )
    if has_large_float:
        _refuse_inexact_integers(raw)
    if has_float:
        _refuse_inexact_floats(raw, zero_floats)
    return doc


def dump_json(doc: JSONValue) -> bytes:
    """Compact UTF-8 JSON; the inverse of `parse_json` for any document it accepted."""
    return orjson.dumps(doc)


def parse_media_type(header: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into its lowercased `type/subtype` and its parameters.

    Parameter names are lowercased, values are unquoted and otherwise kept as sent. Raises
    `UnsupportedMediaType` for anything that is not a well-formed media type, and for a parameter
    given twice (two readers could disagree on which one counts).
    """
    media_type, _, rest = header.partition(";")
    kind, slash, subtype = media_type.strip(" \t").partition("/")
    if not slash or not _is_token(kind) or not _is_token(subtype):
        raise UnsupportedMediaType("malformed Content-Type")
    params: dict[str, str] = {}
    has_params = ";" in header
    while has_params:
        name, eq, rest = rest.lstrip(" \t").partition("=")
        name = name.lower()
        if not eq or not _is_token(name):
            raise UnsupportedMediaType("malformed parameter in Content-Type")
        if rest.startswith('"'):
            value, rest = _take_quoted(rest, header)
        else:
            end = rest.find(";")
            value, rest = (rest, "") if end < 0 else (rest[:end], rest[end:])
            value = value.rstrip(" \t")
            if not _is_token(value):
                raise UnsupportedMediaType("malformed parameter in Content-Type")
        rest = rest.lstrip(" \t")
        if rest and not rest.startswith(";"):
            raise UnsupportedMediaType("malformed parameter in Content-Type")
        if name in params:
            raise UnsupportedMediaType("a parameter is given twice in Content-Type")
        params[name] = value
        has_params, rest = rest.startswith(";"), rest[1:]
    return f"{kind.lower()}/{subtype.lower()}", params


def check_json_content_type(header: str | None) -> None:
    """Accept `application/json` or `application/<x>+json`, optionally `charset=utf-8`, only.

    Any other charset (a JSON body must be UTF-8), any other parameter, and a missing header are
    refused with `UnsupportedMediaType`.
    """
    if header is None:
        raise UnsupportedMediaType(
            "a JSON body needs Content-Type: application/json (the header is missing)"
        )
    if header in _ACCEPTED_JSON_TYPES:
        return
    _check_json_media_type(header)
    # Callers send the same few values over and over; a refused value is never remembered, so
    # its error is always built afresh.
    if len(_ACCEPTED_JSON_TYPES) >= _ACCEPTED_JSON_TYPES_MAX:
        _ACCEPTED_JSON_TYPES.clear()
    _ACCEPTED_JSON_TYPES.add(header)


_ACCEPTED_JSON_TYPES: set[str] = set()
_ACCEPTED_JSON_TYPES_MAX: Final = 256


def _check_json_media_type(header: str) -> None:
    media_type, params = parse_media_type(header)
    kind, _, subtype = media_type.partition("/")
    if kind != "application" or not (
        subtype == "json" or (subtype.endswith("+json") and len(subtype) > len("+json"))
    ):
        raise UnsupportedMediaType("the body must be JSON (application/json or application/*+json)")
    for name, value in params.items():
        if name != "charset":
            raise UnsupportedMediaType("no Content-Type parameter but charset is accepted")
        if value.lower() != "utf-8":
            raise UnsupportedMediaType("JSON must be sent as charset=utf-8")


def _refuse_non_utf8_encodings(raw: bytes) -> None:
    if raw.startswith(_UTF8_BOM):
        raise MalformedBody("the body starts with a UTF-8 byte order mark: send JSON without a BOM")
    # UTF-8 JSON never holds a NUL byte (not even inside strings), UTF-16/32 JSON always does.
    if raw.startswith(_UTF16_32_BOMS) or _holds(raw, b"\x00"):
        raise MalformedBody(
            "the body is not UTF-8 JSON (it holds NUL bytes, as UTF-16 and UTF-32 do)"
        )


def _holds(raw: bytes, part: bytes) -> bool:
    # `part in raw` reads `part` as a byte's number first, and builds a TypeError to throw
    # away when it is not one: three times for every body and every answer.
    return raw.find(part) != -1


def _describe_decode_error(raw: bytes, exc: orjson.JSONDecodeError, max_depth: int) -> str:
    # orjson's messages are accurate but terse and not a stable interface; say what is wrong in
    # our own words and keep its position for the caller to find the spot.
    reason = exc.msg
    where = f" (line {exc.lineno}, column {exc.colno})"
    lowered = reason.lower()
    if "empty" in lowered:
        return "the body is empty: a JSON object is required"
    if "utf-8" in lowered or "utf8" in lowered:
        return "the body is not valid UTF-8"
    if "surrogate" in lowered:
        return (
            "the body has a lone surrogate escape (\\ud800-\\udfff without its pair), "
            "which is not a character" + where
        )
    if "infinity" in lowered:
        return "the body has a number too large for a 64-bit float" + where
    if "depth" in lowered or "recursion" in lowered:
        return (
            f"the body is nested deeper than {min(max_depth, _ORJSON_MAX_DEPTH)} levels"
            " of objects and arrays"
        )
    if "after document" in lowered:
        return "the body has content after the JSON document" + where
    text = raw.decode("utf-8", "replace")
    if _non_finite_at(text, exc.pos):
        return "the body has NaN or Infinity, which JSON does not allow" + where
    return f"the body is not valid JSON: {reason}{where}"


def _non_finite_at(text: str, pos: int) -> bool:
    around = text[max(pos - 1, 0) : pos + len("Infinity")]
    return "NaN" in around or "Infinity" in around


def _measure(doc: dict[str, JSONValue], max_depth: int) -> tuple[int, bool, bool, int]:
    """Count the keys of every object and refuse excess depth, one nesting level at a time.

    Returns the number of keys, whether any float is there, whether one is of 2**63 or more in
    magnitude (an integer literal may have been rounded to it), and how many are 0.0 or -0.0.
    """
    keys = 0
    has_float = has_large_float = False
    zero_floats = 0
    level: list[dict[str, JSONValue] | list[JSONValue]] = [doc]
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise MalformedBody(
                f"the body is nested deeper than {max_depth} levels of objects and arrays"
            )
        below: list[dict[str, JSONValue] | list[JSONValue]] = []
        # Exact type tests: `doc` comes from orjson, which builds no subclasses, and they cost
        # half of what isinstance does on this walk over every value.
        for container in level:
            values: Iterable[JSONValue]
            if type(container) is dict:
                keys += len(container)
                values = container.values()
            else:
                values = container
            for value in values:
                if type(value) is dict or type(value) is list:
                    below.append(value)
                elif type(value) is float:
                    has_float = True
                    if not value:
                        zero_floats += 1
                    elif abs(value) >= _ROUNDED_INT_THRESHOLD:
                        has_large_float = True
        level = below
    return keys, has_float, has_large_float, zero_floats


def _count_key_tokens(raw: bytes) -> int:
    """How many keys the raw text holds: in valid JSON, exactly the colons outside strings."""
    colons = raw.count(b":")
    if colons == 0 or not _holds(raw, b'"'):
        return colons
    if not _holds(raw, b'\\"'):
        # No escaped quote anywhere, so every `"` opens or closes a string and the pieces between
        # quotes alternate outside, inside, outside: a C-speed split replaces the regex scan.
        # Only quotes and colons matter to the count: the rest is dropped first, at C speed.
        quotes_and_colons = raw.translate(None, _NOT_QUOTE_OR_COLON)
        return b"".join(quotes_and_colons.split(b'"')[::2]).count(b":")
    return _STRING_RE.sub(b"", raw).count(b":")


def _refuse_inexact_integers(raw: bytes) -> None:
    # One large float must not make every short integer literal of a megabyte body pay for a
    # match object and an int(): the regex engine passes them by, and most bodies hold no run
    # of digits long enough at all.
    if not _has_digit_run(raw, _INT_DIGITS_EXACT + 1):
        return
    tokens = _number_tokens(raw)
    if not _has_digit_run(tokens, _INT_DIGITS_EXACT + 1):
        return  # the long run was in a string
    for match in _LONG_INTEGER_TOKEN.finditer(tokens):
        if not _INT_MIN <= int(match.group(1)) <= _INT_MAX:
            raise MalformedBody(
                "the body has an integer outside the 64-bit range, which cannot be kept exactly"
            )


def _refuse_inexact_floats(raw: bytes, zero_floats: int) -> None:
    """Refuse a float literal its double does not keep: a nonzero one that reads as 0 (one of
    the body's `zero_floats`), and one of more than 17 significant digits."""
    if zero_floats and _has_vanished_float(raw, zero_floats):
        raise MalformedBody(_TOO_SMALL)
    if _has_long_float(raw):
        raise MalformedBody(
            f"the body has a number of more than {_FLOAT_DIGITS_MAX} significant digits, which a"
            " 64-bit float cannot keep: the partner would receive another number"
        )


def _has_vanished_float(raw: bytes, zero_floats: int) -> bool:
    """Whether a nonzero float literal read as one of the body's `zero_floats` 0.0s."""
    if _VANISHING_ZEROS not in raw:
        digits = raw.translate(_DIGITS_AS_NUL)
        if not any(exponent in digits for exponent in _VANISHING_EXPONENTS):
            return False
    # Only a literal of zeros reads rightly as 0.0: fewer of them than 0.0s means one vanished.
    # Counted at C speed, not looked at one by one.
    return _ZERO_FLOAT_TOKEN.subn(b"", _number_tokens(raw))[1] < zero_floats


def _has_long_float(raw: bytes) -> bool:
    """Whether the body holds a float literal of more than 17 significant digits."""
    shape = raw.translate(_NUMBER_BODY_AS_NUL)
    at = shape.find(_LONG_FLOAT_PLACE)
    if at == -1:
        return False  # the common case, floats or not
    if b'\\"' in raw:  # strings cannot be told apart by counting quotes
        return _LONG_FLOAT_TOKEN.search(_number_tokens(raw)) is not None
    # Each place where one may be, in order: outside the strings (an even number of quotes
    # before it), the literal is matched from the start of its token.
    quotes = 0
    counted_to = 0
    looked_at = glanced_at = 0
    run = len(_LONG_FLOAT_PLACE)
    while at != -1:
        if raw[at] == ord("0") and shape[at + run] and glanced_at < _LONG_FLOAT_PLACES_AT_A_GLANCE:
            # A leading `0.` and 17 characters more, digits or an exponent's letter: at most 17
            # significant digits.
            glanced_at += 1
            at = shape.find(_LONG_FLOAT_PLACE, at + run)
            continue
        looked_at += 1
        if looked_at > _LONG_FLOAT_PLACES_ONE_BY_ONE:
            return _LONG_FLOAT_TOKEN.search(_number_tokens(raw)) is not None
        start = at
        while start and raw[start - 1] in _NUMBER_CHARS:
            start -= 1
        quotes += raw.count(b'"', counted_to, start)
        counted_to = start
        if quotes % 2 == 0 and _LONG_FLOAT_LITERAL.match(raw, start) is not None:
            return True
        end = _NOT_NUMBER_CHAR.search(raw, at)
        if end is None:
            return False
        at = shape.find(_LONG_FLOAT_PLACE, end.start())
    return False


def _has_digit_run(text: bytes, length: int) -> bool:
    return b"\0" * length in text.translate(_DIGITS_AS_NUL)


def _number_tokens(raw: bytes) -> bytes:
    """The body with its strings taken out and every byte that is not part of a number made a
    comma: in valid JSON each number token then stands between two commas (`true` and `false`
    leave an `e` of their own)."""
    # With no escaped quote every `"` opens or closes a string: split at C speed, as in
    # `_count_key_tokens`.
    outside = _STRING_RE.sub(b"", raw) if b'\\"' in raw else b",".join(raw.split(b'"')[::2])
    return outside.translate(_NUMBER_OR_COMMA)


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


# RFC 9110 token characters.
_TCHAR: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TCHAR for c in text)


def _take_quoted(rest: str, header: str) -> tuple[str, str]:
    """Read a quoted-string at the start of `rest`; return its value and what follows."""
    out: list[str] = []
    i = 1
    while i < len(rest):
        c = rest[i]
        if c == "\\" and i + 1 < len(rest):
            out.append(rest[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), rest[i + 1 :]
        if (c < " " and c != "\t") or c == "\x7f":
            break
        out.append(c)
        i += 1
    raise UnsupportedMediaType("malformed quoted parameter in Content-Type")
