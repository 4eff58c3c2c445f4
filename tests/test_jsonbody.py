"""Tests for the strict JSON body parser, the serialiser and the JSON content-type check."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import jsonbody
from gateway.errors import MalformedBody, UnsupportedMediaType
from gateway.jsonbody import (
    JSONValue,
    check_json_content_type,
    dump_json,
    parse_json,
    parse_media_type,
)


def refused(raw: bytes, *, max_depth: int = 64) -> str:
    with pytest.raises(MalformedBody) as info:
        parse_json(raw, max_depth=max_depth)
    assert info.value.status == 400
    assert info.value.code == "malformed_body"
    return info.value.message


# --- accepted documents --------------------------------------------------------------------------


def test_parses_a_plain_object() -> None:
    raw = b'{"name": "\xe5\xbc\xa0\xe4\xb8\x89", "n": [1, 2.5, true, null], "o": {}}'
    assert parse_json(raw, max_depth=8) == {
        "name": "张三",
        "n": [1, 2.5, True, None],
        "o": {},
    }


def test_keeps_key_order() -> None:
    assert list(parse_json(b'{"b":1,"a":2,"c":3}', max_depth=8)) == ["b", "a", "c"]


def test_accepts_surrounding_whitespace() -> None:
    assert parse_json(b' \r\n\t{"a":1} \n', max_depth=8) == {"a": 1}


def test_accepts_a_surrogate_pair_escape() -> None:
    assert parse_json(b'{"a":"\\ud83d\\ude00"}', max_depth=8) == {"a": "\U0001f600"}


def test_accepts_the_full_64_bit_integer_range_exactly() -> None:
    doc = parse_json(b'{"max": 18446744073709551615, "min": -9223372036854775808}', max_depth=8)
    assert doc == {"max": 2**64 - 1, "min": -(2**63)}
    assert type(doc["max"]) is int
    assert type(doc["min"]) is int


def test_accepts_large_floats_and_fractions_of_17_digits() -> None:
    raw = b'{"big": 1e300, "frac": 0.12345678901234568, "e": 1.5E+19}'
    assert parse_json(raw, max_depth=8) == {
        "big": 1e300,
        "frac": 0.12345678901234568,
        "e": 1.5e19,
    }


def test_digits_inside_strings_are_not_integers() -> None:
    raw = b'{"id": "123456789012345678901234567890", "x": 1e19}'
    assert parse_json(raw, max_depth=8)["id"] == "123456789012345678901234567890"


def test_colons_and_escaped_quotes_inside_strings_are_not_keys() -> None:
    raw = b'{"t": "12:00:00", "u": {"v": "a\\"b:c", "w\\"": "\\\\"}, "x": "\\":"}'
    assert parse_json(raw, max_depth=8) == {
        "t": "12:00:00",
        "u": {"v": 'a"b:c', 'w"': "\\"},
        "x": '":',
    }


def test_same_key_in_different_objects_is_not_a_duplicate() -> None:
    raw = b'{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}'
    assert parse_json(raw, max_depth=8) == {"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}


@pytest.mark.parametrize(
    ("raw", "max_depth"),
    [
        (b"{}", 1),
        (b'{"a": 1}', 1),
        (b'{"a": {}}', 2),
        (b'{"a": []}', 2),
        (b'{"a": [[{}]]}', 4),
    ],
)
def test_depth_at_the_limit_is_accepted(raw: bytes, max_depth: int) -> None:
    assert isinstance(parse_json(raw, max_depth=max_depth), dict)


# --- refused documents ---------------------------------------------------------------------------


def test_refuses_an_empty_body() -> None:
    assert "empty" in refused(b"")


def test_refuses_a_whitespace_only_body() -> None:
    assert "empty" in refused(b" \n ")


def test_refuses_invalid_utf8() -> None:
    assert "UTF-8" in refused(b'{"a": "\xff"}')


def test_refuses_an_overlong_utf8_encoding() -> None:
    assert "UTF-8" in refused(b'{"a": "\xc0\xaf"}')


def test_refuses_a_utf8_encoded_surrogate() -> None:
    assert "UTF-8" in refused(b'{"a": "\xed\xa0\x80"}')


def test_refuses_a_utf8_bom() -> None:
    assert "byte order mark" in refused(b'\xef\xbb\xbf{"a": 1}')


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_refuses_utf16_and_utf32(encoding: str) -> None:
    message = refused('{"a": 1}'.encode(encoding))
    assert "UTF-16" in message
    assert "UTF-32" in message


@pytest.mark.parametrize(
    "raw",
    [b'{"a": "\\ud800"}', b'{"a": "\\udc00"}', b'{"a": "x\\ud83dy"}', b'{"\\ud800": 1}'],
)
def test_refuses_lone_surrogate_escapes(raw: bytes) -> None:
    assert "lone surrogate" in refused(raw)


@pytest.mark.parametrize(
    "raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"\xe4\xb8\xad": [NaN]}']
)
def test_refuses_nan_and_infinity(raw: bytes) -> None:
    assert "NaN or Infinity" in refused(raw)


@pytest.mark.parametrize("raw", [b'{"a": 1e400}', b'{"a": -1e400}', b'{"a": 1' + b"0" * 400 + b"}"])
def test_refuses_numbers_that_overflow_a_float(raw: bytes) -> None:
    assert "too large" in refused(raw)


@pytest.mark.parametrize(
    "literal",
    [
        b"123456789012345678901234567890",  # orjson itself would round this to a float
        b"18446744073709551616",  # 2**64
        b"-9223372036854775809",  # -2**63 - 1 (rounds to exactly -2**63 as a float)
        b"1" + b"0" * 300,  # parses to 1e300 if nothing checks
    ],
)
def test_refuses_integers_that_cannot_be_kept_exactly(literal: bytes) -> None:
    assert "64-bit range" in refused(b'{"a": [1, {"b": ' + literal + b"}]}")


# Integer literals around both ends of the 64-bit range and far beyond, and float literals that
# hold long runs of digits an integer check must not take for integers of their own.
_INT_EDGES = (-(2**63), 2**63, 2**64 - 1, 10**18, 10**19, 10**20)
_integer_literals = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25),
    st.sampled_from(_INT_EDGES).flatmap(lambda edge: st.integers(edge - 3, edge + 3)),
    st.sampled_from(_INT_EDGES).map(lambda edge: -edge),
).map(str)
_float_literals = st.one_of(
    st.sampled_from(["1e19", "-1e19", "2.5e300", "0.5"]),
    st.integers(19, 25).map(lambda n: f"1{'0' * n}.0"),  # a long integer part, then a point
    st.integers(19, 25).map(lambda n: f"1{'0' * n}e0"),  # ... then an exponent
    st.integers(19, 25).map(lambda n: f"1.5{'0' * n}"),  # a long fraction
    st.tuples(st.sampled_from(["e", "E+", "e-"]), st.integers(19, 25)).map(
        lambda form: f"1{form[0]}{'0' * form[1]}5"  # a long exponent
    ),
)
# Strings with long digit runs, escaped quotes and what would close a number token.
_string_literals = st.text(alphabet='0123456789"\\.e-', max_size=30).map(
    lambda s: orjson.dumps(s).decode()
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_integer_literals, _float_literals, _string_literals), max_size=12))
def test_exactly_the_integer_literals_outside_the_64_bit_range_are_refused(
    literals: list[str],
) -> None:
    # Beside a float of 2**63 or more (which sends the parser looking at integer literals),
    # whatever else the body holds, and with the same numbers as keys' neighbours.
    raw = ('{"big": 1e19, "9223372036854775808": [' + ", ".join(literals) + "]}").encode()
    # The standard library reads every integer literal exactly, whatever its size.
    outside = [
        int(literal)
        for literal in literals
        if not literal.startswith('"') and isinstance(json.loads(literal), int)
        if not -(2**63) <= int(literal) <= 2**64 - 1
    ]
    if outside:
        assert "64-bit range" in refused(raw)
    else:
        assert parse_json(raw, max_depth=64) == json.loads(raw)


# --- float literals a double does not keep ------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [
        b"1e-400",
        b"-1e-400",
        b"2e-324",  # below half the smallest subnormal double
        b"0." + b"0" * 400 + b"1",
        b"0.0000001e-330",
        b"1E-0000400",
    ],
)
def test_refuses_a_nonzero_float_a_double_reads_as_zero(literal: bytes) -> None:
    assert "reads it as 0" in refused(b'{"a": [0.0, {"b": ' + literal + b"}]}")
    assert "reads it as 0" in refused(b'{"b": ' + literal + b"}")


@pytest.mark.parametrize(
    "literal",
    [
        b"0.123456789012345678901234567890",
        b"123456789012345678901234567890.5",
        b"1.0000000000000000001",
        b"-0.000123456789012345678",
        b"123456789012345678e5",  # 18 digits before an exponent
        b"1234567890123456.78",  # 18 digits around the point
        b"9007199254740993.000000000000000001",
    ],
)
def test_refuses_a_float_of_more_than_17_significant_digits(literal: bytes) -> None:
    assert "17 significant digits" in refused(b'{"a": [1.5, {"b": ' + literal + b"}]}")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (b"0.1", 0.1),
        (b"18500.50", 18500.5),
        (b"0.10000000000000001", 0.1),  # printf %.17g of 0.1: 17 digits, the same double
        (b"0.12345678901234568", 0.12345678901234568),
        (b"-131.62887211953557", -131.62887211953557),
        (b"0.00012345678901234567", 0.00012345678901234567),  # leading zeros do not count
        (b"1.5000000000000000000000000", 1.5),  # nor trailing ones
        (b"100000000000000000000000.0", 1e23),
        (b"0.0", 0.0),
        (b"-0.0", -0.0),
        (b"0e-999", 0.0),
        (b"2.2250738585072014e-308", 2.2250738585072014e-308),  # the smallest normal double
        (b"5e-324", 5e-324),  # the smallest subnormal one, as it is written
        (b"1.7976931348623157e308", 1.7976931348623157e308),
        (b"1e-0000000000000000000005", 1e-5),  # a long exponent is not a long number
    ],
)
def test_accepts_floats_a_double_keeps(literal: bytes, value: float) -> None:
    assert parse_json(b'{"a": [0.0, ' + literal + b"]}", max_depth=8) == {"a": [0.0, value]}


@pytest.mark.parametrize("many", [10, 300, 5000])
def test_a_long_float_is_found_among_many_floats_written_to_17_digits(many: int) -> None:
    # Browsers write floats below 1 to 17 digits after `0.`; however many, one of more digits
    # among them is still found, and none of them is taken for one.
    floats = b", ".join([b"0.12345678901234568", b"-0.012345678901234568"] * many)
    doc = parse_json(b'{"a": [' + floats + b"]}", max_depth=8)
    assert doc == {"a": [0.12345678901234568, -0.012345678901234568] * many}
    for long in (b"1.0000000000000000001", b"0.123456789012345678"):
        assert "17 significant digits" in refused(b'{"a": [' + floats + b", " + long + b"]}")


def test_digits_inside_strings_are_not_floats() -> None:
    raw = b'{"a": "0.123456789012345678901234567890 1e-400", "b\\"": "1.0000000000000000001"'
    assert parse_json(raw + b', "x": 0.0}', max_depth=8)["x"] == 0.0


def _refused_by_the_number_rules(literal: str) -> bool:
    """The number rules, computed here apart from the parser: an integer outside the 64-bit
    range; a float that overflows, that is nonzero and reads as 0, or of more than 17
    significant digits."""
    if not any(c in literal for c in ".eE"):
        return not -(2**63) <= int(literal) <= 2**64 - 1
    value = float(literal)
    significant = literal.lstrip("-").lower().partition("e")[0].replace(".", "").strip("0")
    if math.isinf(value):
        return True
    if value == 0:
        return bool(significant)
    return len(significant) > 17


_digits = st.text("0123456789", min_size=1, max_size=24)
_number_literals = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),  # as browsers write them
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.17g}"),  # as printf
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.tuples(
        st.sampled_from(["", "-"]),
        _digits.map(lambda d: d.lstrip("0") or "0"),
        st.one_of(st.just(""), _digits.map(lambda d: "." + d)),
        st.one_of(st.just(""), st.integers(-420, 420).map(lambda e: f"e{e}")),
    ).map("".join),
    st.tuples(st.integers(0, 330), _digits, st.integers(-30, 30)).map(
        lambda t: f"0.{'0' * t[0]}{t[1]}e{t[2]}"  # many leading zeros
    ),
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.one_of(_number_literals, _number_literals.map(lambda n: orjson.dumps(n).decode())),
        min_size=1,
        max_size=8,
    )
)
def test_exactly_the_numbers_a_double_or_a_64_bit_integer_does_not_keep_are_refused(
    literals: list[str],
) -> None:
    # Each number also as a string: there it is text, and nothing to refuse.
    raw = ('{"n": [0.0, 1.5, ' + ", ".join(literals) + "]}").encode()
    numbers = [literal for literal in literals if not literal.startswith('"')]
    if any(map(_refused_by_the_number_rules, numbers)):
        refused(raw)
    else:
        assert parse_json(raw, max_depth=8) == json.loads(raw)


def test_refuses_duplicate_keys() -> None:
    assert "duplicate keys" in refused(b'{"a": 1, "a": 2}')


def test_refuses_duplicate_keys_deep_inside_arrays() -> None:
    assert "duplicate keys" in refused(b'{"x": [{"ok": 1}, {"y": {"a": 1, "b": 2, "a": 3}}]}')


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "\\u0061": 2}',
        b'{"\\u00e9": 1, "\xc3\xa9": 2}',
        b'{"\\ud83d\\ude00": 1, "\xf0\x9f\x98\x80": 2}',
        b'{"a\\"": 1, "a\\u0022": 2}',
        b'{"\\/": 1, "/": 2}',
    ],
)
def test_refuses_keys_that_collide_only_after_unescaping(raw: bytes) -> None:
    assert "duplicate keys" in refused(raw)


@pytest.mark.parametrize("raw", [b'{"a": 1} x', b'{"a": 1}{"b": 2}', b'{"a": 1},', b'{"a": 1}\x00'])
def test_refuses_trailing_content(raw: bytes) -> None:
    message = refused(raw)
    assert "after the JSON document" in message or "NUL" in message


@pytest.mark.parametrize(
    ("raw", "max_depth"),
    [
        (b'{"a": 1}', 0),
        (b'{"a": {}}', 1),
        (b'{"a": []}', 1),
        (b'{"a": {"b": {}}}', 2),
        (b'{"a": [[1]]}', 2),
        (b'{"a": [0, {"b": [{}]}]}', 4),
    ],
)
def test_refuses_depth_over_the_limit(raw: bytes, max_depth: int) -> None:
    assert f"deeper than {max_depth} levels" in refused(raw, max_depth=max_depth)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' + b"[" * 100_000,
    ],
)
def test_refuses_hostile_nesting_without_crashing(raw: bytes) -> None:
    message = refused(raw, max_depth=64)
    assert "deeper than" in message


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"[1, 2]", "an array"),
        (b'"text"', "a string"),
        (b"3", "a number"),
        (b"true", "a boolean"),
        (b"null", "null"),
    ],
)
def test_refuses_a_top_level_value_that_is_not_an_object(raw: bytes, kind: str) -> None:
    assert refused(raw) == f"the body must be a JSON object, not {kind}"


@pytest.mark.parametrize(
    "raw",
    [b'{"a": 01}', b"{'a': 1}", b'{"a": 1,}', b'{"a": "\x01"}', b"{a: 1}", b'{"a" 1}'],
)
def test_refuses_other_invalid_json(raw: bytes) -> None:
    assert "not valid JSON" in refused(raw)


# --- dump_json -----------------------------------------------------------------------------------


def test_dump_json_is_compact_utf8() -> None:
    assert dump_json({"a": [1, 2.5, None], "名": "张三"}) == (
        b'{"a":[1,2.5,null],"\xe5\x90\x8d":"\xe5\xbc\xa0\xe4\xb8\x89"}'
    )


# --- content types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json ; Charset=Utf-8",
        "application/vnd.api+json",
        "application/merge-patch+json; charset=utf-8",
        "APPLICATION/PROBLEM+JSON",
    ],
)
def test_json_content_types_accepted(header: str) -> None:
    check_json_content_type(header)


@pytest.mark.parametrize(
    ("header", "mentions"),
    [
        (None, "missing"),
        ("", "malformed"),
        ("text/plain", "must be JSON"),
        ("text/json", "must be JSON"),
        ("application/xml", "must be JSON"),
        ("application/+json", "must be JSON"),
        ("application/jsonp", "must be JSON"),
        ("application/x-www-form-urlencoded", "must be JSON"),
        ("multipart/form-data; boundary=x", "must be JSON"),
        ("application/json; charset=utf-7", "charset=utf-8"),
        ("application/json; charset=utf-16", "charset=utf-8"),
        ("application/json; charset=latin1", "charset=utf-8"),
        ("application/json; boundary=x", "but charset"),
        ("application/json; charset=utf-8; charset=utf-16", "twice"),
        ("application/json; charset", "malformed"),
        ("application/json; charset=", "malformed"),
        ('application/json; charset="utf-8', "malformed"),
        ("application/json; charset=utf-8 x", "malformed"),
        ('application/json; charset="utf-8"x', "malformed"),
        ('application/json; charset="utf-8" x', "malformed"),
        ('application/json; charset="utf\x01-8"', "malformed"),
        ('application/json; charset="utf\x7f-8"', "malformed"),
        ("application /json", "malformed"),
        ("application/json/x", "malformed"),
        ("json", "malformed"),
    ],
)
def test_other_content_types_refused(header: str | None, mentions: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_json_content_type(header)
    assert info.value.status == 415
    assert mentions in info.value.message
    # What the caller wrote is not echoed: it ends up in the caller's logs.
    written = (header or "").split(";")[-1].strip()
    assert not written or written not in info.value.message


def test_the_accepted_types_remembered_stay_few_and_refused_ones_are_never_remembered() -> None:
    # Each header is checked once and then remembered: a caller sending ever new types must not
    # grow that memory without end, nor make a refused type pass the second time.
    for n in range(1000):
        check_json_content_type(f"application/vnd.t{n}+json")
        assert len(jsonbody._ACCEPTED_JSON_TYPES) <= 256
    assert "application/vnd.t999+json" in jsonbody._ACCEPTED_JSON_TYPES
    for _ in range(2):
        with pytest.raises(UnsupportedMediaType):
            check_json_content_type("application/json; charset=utf-7")
    assert "application/json; charset=utf-7" not in jsonbody._ACCEPTED_JSON_TYPES


def test_parse_media_type_lowercases_type_and_names_but_keeps_values() -> None:
    assert parse_media_type('Multipart/Form-Data; Boundary="AbC \\"q\\""; x=Y') == (
        "multipart/form-data",
        {"boundary": 'AbC "q"', "x": "Y"},
    )


def test_parse_media_type_without_parameters() -> None:
    assert parse_media_type("application/pdf") == ("application/pdf", {})


def test_parse_media_type_drops_the_blanks_before_the_next_parameter() -> None:
    assert parse_media_type("text/plain; charset=utf-8 ; format=flowed") == (
        "text/plain",
        {"charset": "utf-8", "format": "flowed"},
    )


# --- properties ----------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_keys = st.text(alphabet=st.sampled_from('ab:"\\/é中😀 \t\n'), max_size=3)
_json: st.SearchStrategy[JSONValue] = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=25,
)
_documents = st.dictionaries(_keys, _json, max_size=5)


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_round_trips_every_document_orjson_writes(doc: dict[str, JSONValue]) -> None:
    assert parse_json(orjson.dumps(doc), max_depth=64) == doc
    assert parse_json(dump_json(doc), max_depth=64) == doc


def _escape_key(key: str) -> str:
    utf16 = key.encode("utf-16-be")
    units = [int.from_bytes(utf16[i : i + 2], "big") for i in range(0, len(utf16), 2)]
    return '"' + "".join(f"\\u{unit:04x}" for unit in units) + '"'


def _encode_with_duplicate(value: Any, target: int, escape: bool) -> str:
    """JSON text for `value` in which the object with id `target` repeats its first key."""
    if isinstance(value, dict):
        members = [
            orjson.dumps(k).decode() + ":" + _encode_with_duplicate(v, target, escape)
            for k, v in value.items()
        ]
        if id(value) == target:
            first = next(iter(value))
            spelled = _escape_key(first) if escape else orjson.dumps(first).decode()
            members.append(spelled + ' : "again"')
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode_with_duplicate(v, target, escape) for v in value) + "]"
    return orjson.dumps(value).decode()


def _objects_with_keys(value: JSONValue) -> list[dict[str, JSONValue]]:
    found: list[dict[str, JSONValue]] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if item:
                found.append(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found


@settings(max_examples=300, deadline=None)
@given(
    _documents.filter(lambda d: bool(_objects_with_keys(d))),
    st.booleans(),
    st.data(),
)
def test_duplicate_keys_injected_anywhere_are_refused(
    doc: dict[str, JSONValue], escape: bool, data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(_objects_with_keys(doc)))
    raw = _encode_with_duplicate(doc, id(target), escape).encode()
    assert "duplicate keys" in refused(raw)
