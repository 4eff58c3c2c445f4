"""Tests for the value transforms: hash, redact, mask, generalize(year), generalize(bucket)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.jsonbody import JSONValue
from gateway.transforms import (
    GeneralizeBucket,
    GeneralizeYear,
    Hash,
    Mask,
    Redact,
    Transform,
    Untransformable,
    apply_transform,
    describe_transform,
)

KEY = b"partner-key-for-tests"


def hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


ALL: list[Transform] = [Hash(), Redact(), Mask(1, 1), GeneralizeYear(), GeneralizeBucket(10)]


@pytest.mark.parametrize("t", ALL, ids=describe_transform)
def test_null_stays_null(t: Transform) -> None:
    assert apply_transform(t, None, KEY) is None


@pytest.mark.parametrize("t", ALL, ids=describe_transform)
@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], {}, []])
def test_objects_and_arrays_are_untransformable(t: Transform, value: JSONValue) -> None:
    with pytest.raises(Untransformable, match="needs a scalar"):
        apply_transform(t, value, KEY)


# --- hash ----------------------------------------------------------------------------------------


def test_hash_of_a_string_is_keyed_hmac_sha256_hex() -> None:
    out = apply_transform(Hash(), "110101199003074477", KEY)
    assert out == hmac_hex(KEY, "110101199003074477")
    assert isinstance(out, str)
    assert len(out) == 64
    assert set(out) <= set("0123456789abcdef")


def test_hash_depends_on_the_key() -> None:
    assert apply_transform(Hash(), "x", b"one") != apply_transform(Hash(), "x", b"two")


@pytest.mark.parametrize(
    ("value", "text"),
    [(18000, "18000"), (-5, "-5"), (2.5, "2.5"), (True, "true"), (False, "false"), (0, "0")],
)
def test_hash_of_numbers_and_booleans_hashes_their_json_text(value: JSONValue, text: str) -> None:
    assert apply_transform(Hash(), value, KEY) == hmac_hex(KEY, text)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30])
def test_hash_and_mask_of_an_integer_past_64_bits_use_its_digits(value: int) -> None:
    # The body parser refuses such a number, but a transform takes any JSON value: it failed
    # with a TypeError from the JSON encoder instead of hashing or masking the digits.
    assert apply_transform(Hash(), value, KEY) == hmac_hex(KEY, str(value))
    assert (
        apply_transform(Mask(keep_last=4), value, KEY)
        == "*" * (len(str(value)) - 4) + str(value)[-4:]
    )


def test_hash_of_a_number_equals_hash_of_its_text() -> None:
    assert apply_transform(Hash(), 18000, KEY) == apply_transform(Hash(), "18000", KEY)


# --- redact --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["secret", "", 42, 1.5, True, False])
def test_redact_replaces_any_scalar(value: JSONValue) -> None:
    assert apply_transform(Redact(), value, KEY) == "[REDACTED]"


# --- mask ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "value", "expected"),
    [
        (Mask(keep_last=4), "13800138000", "*******8000"),
        (Mask(keep_first=3), "13800138000", "138********"),
        (Mask(keep_first=3, keep_last=4), "13800138000", "138****8000"),
        (Mask(), "secret", "******"),
        (Mask(keep_first=1, keep_last=1), "张三丰", "张*丰"),
        (Mask(keep_last=4), 6222020200112233, "************2233"),
        (Mask(keep_first=1), -12.5, "-****"),
        (Mask(keep_last=2), "", ""),
    ],
)
def test_mask(mask: Mask, value: JSONValue, expected: str) -> None:
    assert apply_transform(mask, value, KEY) == expected


@pytest.mark.parametrize(
    ("mask", "value"),
    [
        (Mask(keep_last=4), "1234"),
        (Mask(keep_last=4), "123"),
        (Mask(keep_first=2, keep_last=2), "abcd"),
        (Mask(keep_first=2, keep_last=2), "abc"),
        (Mask(keep_first=10), "short"),
    ],
)
def test_mask_never_reveals_a_short_value_whole(mask: Mask, value: str) -> None:
    assert apply_transform(mask, value, KEY) == "*" * len(value)


@pytest.mark.parametrize("value", [True, False])
def test_mask_refuses_booleans(value: bool) -> None:
    with pytest.raises(Untransformable, match="boolean"):
        apply_transform(Mask(keep_last=1), value, KEY)


@pytest.mark.parametrize(("first", "last"), [(-1, 0), (0, -1)])
def test_mask_refuses_negative_counts(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        Mask(keep_first=first, keep_last=last)


# --- generalize(year) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "year"),
    [
        ("1990-03-07", "1990"),
        ("2000-02-29", "2000"),
        ("2024-05-06T12:30:00", "2024"),
        ("2024-05-06T12:30:00Z", "2024"),
        ("2024-05-06T12:30:00.123+08:00", "2024"),
        ("2024-05-06 12:30", "2024"),
        ("2024-05-06t12:30", "2024"),
        # The year as written, never as in another zone: UTC would say 2023 and 2024.
        ("2024-01-01T00:30:00+08:00", "2024"),
        ("2023-12-31T23:30:00-05:00", "2023"),
    ],
)
def test_generalize_year(value: str, year: str) -> None:
    assert apply_transform(GeneralizeYear(), value, KEY) == year


@pytest.mark.parametrize(
    "value",
    [
        "1990-02-30",
        "1900-02-29",
        "1990-13-01",
        "0000-01-01",
        "1990-3-7",
        "19900307",
        "1990-03-07x",
        "1990-03-07T25:00",
        "1990-03-07Tnoon",
        "1990-03-07x12:30",
        "1990-03-07_12:30",
        "1990-03-07T12:30:00+25:00",
        "1990-03-07T12:30:00 UTC",
        "07/03/1990",
        "１９９０-03-07",
        "",
        1990,
        1990.0,
        True,
    ],
)
def test_generalize_year_refuses_anything_but_a_real_iso_date(value: JSONValue) -> None:
    with pytest.raises(Untransformable, match="ISO date"):
        apply_transform(GeneralizeYear(), value, KEY)


# --- generalize(bucket) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "value", "expected"),
    [
        (5000, 18000, "15000-19999"),
        (5000, 15000, "15000-19999"),
        (5000, 19999, "15000-19999"),
        (5000, 20000, "20000-24999"),
        (5000, 0, "0-4999"),
        (5000, -1, "-5000--1"),
        (5000, -5000, "-5000--1"),
        (5000, -5001, "-10000--5001"),
        (10, 18.5, "10-19"),
        (10, -0.5, "-10--1"),
        (10, 19.999999999999996, "10-19"),
        (1, 7, "7-7"),
        (10, 10**20 + 3, "100000000000000000000-100000000000000000009"),
        # Floats past 2**53 times the size: the range holds the value they are, exactly.
        (3, 1e17, "99999999999999999-100000000000000001"),
        (7, -6.783177772238416e16, "-67831777722384165--67831777722384159"),
        (5000, 1.2345678901234567e20, "123456789012345665000-123456789012345669999"),
        (5000, 9.999999999999999e22, "99999999999999991610000-99999999999999991614999"),
    ],
)
def test_generalize_bucket(size: int, value: int | float, expected: str) -> None:
    assert apply_transform(GeneralizeBucket(size), value, KEY) == expected


@pytest.mark.parametrize("value", ["18000", True, False, float("inf"), float("nan")])
def test_generalize_bucket_refuses_non_numbers(value: JSONValue) -> None:
    with pytest.raises(Untransformable, match="bucket=5000"):
        apply_transform(GeneralizeBucket(5000), value, KEY)


@pytest.mark.parametrize(
    ("size", "value"),
    [
        (3, int("9" * 4300)),  # the upper bound carries to 4,301 digits
        (5000, -int("9" * 4300)),  # the lower bound is -1 followed by 4,300 zeros
    ],
    ids=["upper", "lower"],
)
def test_generalize_bucket_of_bounds_too_long_to_write_out_is_untransformable(
    size: int, value: int
) -> None:
    # Python writes no integer of more than 4,300 digits: the value is stripped, not a 500.
    with pytest.raises(Untransformable, match=f"bucket={size}"):
        apply_transform(GeneralizeBucket(size), value, KEY)


@pytest.mark.parametrize("size", [0, -5, True])
def test_generalize_bucket_refuses_a_bad_size(size: int) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        GeneralizeBucket(size)


# --- descriptions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "label"),
    [
        (Hash(), "hash"),
        (Redact(), "redact"),
        (Mask(keep_last=4), "mask(keep_first=0, keep_last=4)"),
        (GeneralizeYear(), "generalize(year)"),
        (GeneralizeBucket(5000), "generalize(bucket=5000)"),
    ],
)
def test_describe_transform(t: Transform, label: str) -> None:
    assert describe_transform(t) == label


def test_transforms_are_frozen_values() -> None:
    assert Mask(1, 2) == Mask(keep_first=1, keep_last=2)
    assert hash(GeneralizeBucket(5)) == hash(GeneralizeBucket(5))
    with pytest.raises(AttributeError):
        Mask(1, 2).keep_first = 3  # type: ignore[misc]
