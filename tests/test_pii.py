"""Free-text personal-data scanner: corpus precision/recall, recognisers, redaction, properties."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib.util
import json
import random
import re
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway import pii
from gateway.idnumber import id_ok, stated_birth_date
from gateway.pii import (
    ADDRESS,
    BANK_ACCOUNT,
    CATEGORIES,
    CREDIT_CODE,
    DEVICE_ID,
    EMAIL,
    ID_NUMBER,
    IP,
    LOCATION,
    PASSPORT,
    PHONE,
    Match,
    _may_hide,
    find,
    scan,
)

CORPUS = Path(__file__).parent / "data" / "pii_corpus.jsonl"
NOTHING_ALLOWED: frozenset[str] = frozenset()

# --- check characters, computed here independently of the scanner ------------------------------

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def with_id_check(body17: str) -> str:
    total = sum(int(c) * w for c, w in zip(body17, ID_WEIGHTS, strict=True))
    return body17 + "10X98765432"[total % 11]


def with_luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def with_uscc_check(body17: str) -> str:
    total = sum(USCC_CHARSET.index(c) * w for c, w in zip(body17, USCC_WEIGHTS, strict=True))
    return body17 + USCC_CHARSET[(31 - total % 31) % 31]


def wrong_last(value: str, alphabet: str = "0123456789X") -> str:
    return value[:-1] + next(c for c in alphabet if c != value[-1])


def fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


ID_1990 = with_id_check("11010519900307123")  # a man born 1990-03-07 in Beijing
ID_X = "11010519491231002X"  # the GB 11643 worked example
OLD_ID = "110105850304123"  # first generation, 15 digits: born 1985-03-04 in Beijing
CARD_16 = with_luhn("622202123456789")
CARD_19 = with_luhn("955880123456789012")
USCC = with_uscc_check("91110108MA01C2XY3")


def spans(text: str) -> list[tuple[str, str]]:
    return [(m.category, text[m.start : m.end]) for m in find(text)]


# --- corpus ------------------------------------------------------------------------------------


def load_corpus() -> list[tuple[str, list[tuple[str, str]]]]:
    lines = []
    with CORPUS.open(encoding="utf-8") as corpus:
        for raw in corpus:
            record = json.loads(raw)
            expect = [(e["category"], e["value"]) for e in record["expect"]]
            lines.append((record["text"], expect))
    return lines


CORPUS_LINES = load_corpus()
POSITIVES = [(t, e) for t, e in CORPUS_LINES if e]
NEGATIVES = [t for t, e in CORPUS_LINES if not e]


def test_corpus_is_large_and_covers_every_category() -> None:
    assert len(POSITIVES) >= 150
    assert len(NEGATIVES) >= 150
    per_category = Counter(c for _, expect in POSITIVES for c, _ in expect)
    assert set(per_category) == CATEGORIES
    assert min(per_category.values()) >= 20
    assert sum(1 for t, _ in POSITIVES if any("\uff10" <= c <= "\uff5a" for c in t)) >= 20
    assert len({t for t, _ in CORPUS_LINES}) == len(CORPUS_LINES)
    for text, expect in POSITIVES:
        for _, value in expect:
            assert value in text


def test_corpus_file_is_what_its_generator_builds() -> None:
    spec = importlib.util.spec_from_file_location(
        "pii_corpus_gen", CORPUS.with_name("pii_corpus_gen.py")
    )
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    built = generator.build(random.Random(generator.SEED))
    with CORPUS.open(encoding="utf-8") as corpus:
        committed = [json.loads(line) for line in corpus]
    assert built == committed


def test_corpus_recall_and_precision() -> None:
    expected_total = found_total = true_positives = 0
    for text, expect in POSITIVES:
        found = Counter(spans(text))
        wanted = Counter(expect)
        true_positives += sum((found & wanted).values())
        expected_total += sum(wanted.values())
        found_total += sum(found.values())
    recall = true_positives / expected_total
    precision = true_positives / found_total
    assert recall >= 0.99, recall
    assert precision >= 0.99, precision


def test_corpus_negatives_have_no_false_positive() -> None:
    false_positives = [(text, spans(text)) for text in NEGATIVES if find(text)]
    assert false_positives == []
    for text in NEGATIVES:
        redacted, counts = scan(text, NOTHING_ALLOWED)
        assert redacted is text
        assert counts == {}


def expected_redaction(text: str, expect: list[tuple[str, str]]) -> tuple[str, dict[str, int]]:
    located: list[tuple[int, int, str]] = []
    for category, value in expect:
        start = text.find(value)
        while any(s <= start < e for s, e, _ in located):
            start = text.find(value, start + 1)
        located.append((start, start + len(value), category))
    located.sort()
    out, last = [], 0
    for start, end, category in located:
        out.append(text[last:start] + f"[REDACTED:{category}]")
        last = end
    return "".join(out) + text[last:], dict(Counter(c for c, _ in expect))


@pytest.mark.parametrize(("text", "expect"), POSITIVES[::7])
def test_corpus_redaction_covers_exactly_the_original_span(
    text: str, expect: list[tuple[str, str]]
) -> None:
    assert scan(text, NOTHING_ALLOWED) == expected_redaction(text, expect)


def test_every_corpus_positive_redacts_exactly() -> None:
    mismatched = [
        text
        for text, expect in POSITIVES
        if scan(text, NOTHING_ALLOWED) != expected_redaction(text, expect)
    ]
    assert mismatched == []


# --- identity.id_number ------------------------------------------------------------------------


def test_check_digit_helper_matches_the_standard_example() -> None:
    assert with_id_check("11010519491231002") == ID_X


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f"身份证号{ID_1990}，请核对", ID_1990),
        (f"ID:{ID_X}.", ID_X),
        (f"证件{ID_X.lower()}已上传", ID_X.lower()),
        (f"号码{fullwidth(ID_1990)}错了吗", fullwidth(ID_1990)),
    ],
)
def test_id_number_found(text: str, value: str) -> None:
    assert spans(text) == [(ID_NUMBER, value)]


def ids_by_check_character() -> dict[str, str]:
    found: dict[str, str] = {}
    for seq in range(1000):
        value = with_id_check(f"32058319881224{seq:03d}")
        found.setdefault(value[-1], value)
    return found


@pytest.mark.parametrize("value", sorted(ids_by_check_character().values()))
def test_id_number_found_for_every_check_character(value: str) -> None:
    assert spans(f"身份证{value}") == [(ID_NUMBER, value)]
    assert stated_birth_date(value) == dt.date(1988, 12, 24)
    for wrong in "0123456789X":
        if wrong != value[-1]:
            assert not id_ok(value[:-1] + wrong)


def test_every_check_character_is_exercised() -> None:
    assert sorted(ids_by_check_character()) == sorted("0123456789X")


@pytest.mark.parametrize(
    "text",
    [
        f"身份证号{wrong_last(ID_1990)}校验失败",  # wrong check digit
        f"证件{with_id_check('11010519900230123')}",  # 30 February
        f"证件{with_id_check('11010519901332123')}",  # month 13
        f"证件{with_id_check('11010518991231123')}",  # before 1900
        f"证件{with_id_check('11010520991231123')}",  # in the future
        f"证件{with_id_check('20010519900307123')}",  # no province 20
        f"流水{ID_1990}7",  # part of a 19-digit run
        f"流水3{ID_1990}",
    ],
)
def test_id_number_rejected(text: str) -> None:
    assert [c for c, _ in spans(text)] == []


def grouped(value: str, sizes: tuple[int, ...], separator: str = " ") -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(value[at : at + size])
        at += size
    return separator.join(parts)


CARD_GROUPED = grouped(CARD_16, (4, 4, 4, 4))
# 13800138000 in mathematical bold digits (U+1D7CE + d), outside the Basic Multilingual Plane.
MATH_PHONE = "".join(chr(0x1D7CE + int(d)) for d in "13800138000")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f"卡号{CARD_GROUPED} 12/27 到期", CARD_GROUPED),  # the card and its expiry
        (f"卡号{CARD_GROUPED.replace(' ', '-')} 12笔", CARD_GROUPED.replace(" ", "-")),
        (f"身份证{grouped(ID_1990, (6, 8, 4), '-')}核对", grouped(ID_1990, (6, 8, 4), "-")),
        (f"身份证 {grouped(ID_1990, (6, 8, 4))} 核对", grouped(ID_1990, (6, 8, 4))),
        ("回拨138\u00a00013\u00a08000", "138\u00a00013\u00a08000"),  # no-break spaces
        ("回拨138\u30000013\u30008000", "138\u30000013\u30008000"),  # ideographic spaces
        ("回拨138\uff0d0013\uff0d8000", "138\uff0d0013\uff0d8000"),  # full-width hyphens
        (f"卡号{CARD_GROUPED.replace(' ', chr(0xA0))}。", CARD_GROUPED.replace(" ", chr(0xA0))),
        ("写信到zhang@mail.xn--fiqs8s吧", "zhang@mail.xn--fiqs8s"),  # an IDN top-level domain
        ("回拨138\t0013\t8000", "138\t0013\t8000"),  # tabs
        ("回拨138\u20140013\u20148000", "138\u20140013\u20148000"),  # em dashes
        ("回拨138\u22120013\u22128000", "138\u22120013\u22128000"),  # minus signs
        (
            "回拨\u0661\u0663\u0668\u0660\u0660\u0661\u0663\u0668\u0660\u0660\u0660。",
            "\u0661\u0663\u0668\u0660\u0660\u0661\u0663\u0668\u0660\u0660\u0660",
        ),
        (
            "回拨\u0967\u0969\u096e\u0966\u0966\u0967\u0969\u096e\u0966\u0966\u0966。",
            "\u0967\u0969\u096e\u0966\u0966\u0967\u0969\u096e\u0966\u0966\u0966",
        ),
        (f"😀回拨{MATH_PHONE}。", MATH_PHONE),  # beyond the BMP, after another such character
        ("回拨138\u200b0013\u200b8000。", "138\u200b0013\u200b8000"),  # zero-width spaces
        ("回拨" + "\u200d".join("13800138000") + "。", "\u200d".join("13800138000")),
        (f"身份证{ID_1990[:6]}\u00ad{ID_1990[6:]}核对", f"{ID_1990[:6]}\u00ad{ID_1990[6:]}"),
        (f"卡号{CARD_16[:8]}\u2060{CARD_16[8:]}。", f"{CARD_16[:8]}\u2060{CARD_16[8:]}"),
        ("写信zhang\ufeffwei@example.com吧", "zhang\ufeffwei@example.com"),
        ("邮箱：张\u200b伟@例子.中国。", "张\u200b伟@例子.中国"),
        ("邮箱：张\u200b伟%40qq.com。", "张\u200b伟%40qq.com"),
        ("邮箱：张\u200b伟％４０qq.com。", "张\u200b伟％４０qq.com"),
        ("邮箱：用户@例\u200c子.中国。", "用户@例\u200c子.中国"),
        ("订单2024\u200b13800138000", "13800138000"),  # the invisible character as a boundary
        ("回拨\u200e13800138000\u200f。", "13800138000"),  # direction marks around it
    ],
    ids=[
        "card_expiry",
        "card_count",
        "id_hyphens",
        "id_spaces",
        "phone_nbsp",
        "phone_ideographic_space",
        "phone_fullwidth_hyphen",
        "card_nbsp",
        "idn_email",
        "phone_tabs",
        "phone_em_dashes",
        "phone_minus_signs",
        "phone_arabic_indic_digits",
        "phone_devanagari_digits",
        "phone_mathematical_digits",
        "phone_zero_width_spaces",
        "phone_zero_width_joiner_between_every_digit",
        "id_soft_hyphen",
        "card_word_joiner",
        "email_byte_order_mark",
        "cjk_email_zero_width_space",
        "cjk_percent_encoded_email_zero_width_space",
        "cjk_fullwidth_percent_encoded_email_zero_width_space",
        "cjk_email_zero_width_non_joiner_in_domain",
        "phone_after_a_zero_width_space",
        "phone_between_direction_marks",
    ],
)
def test_identifiers_written_with_separators_or_neighbours(text: str, found: str) -> None:
    [(category, value)] = spans(text)
    assert value == found
    redacted, counts = scan(text, NOTHING_ALLOWED)
    assert found not in redacted
    assert counts == {category: 1}


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("邮箱li@163.com13800138000", [(EMAIL, "li@163.com"), (PHONE, "13800138000")]),
        ("写信zhang@corp.cn2024年", [(EMAIL, "zhang@corp.cn")]),
        ("号段13800138000–13800138999", [(PHONE, "13800138000"), (PHONE, "13800138999")]),
        ("tel 010–13800138000", [(PHONE, "13800138000")]),
        ("0755–138 0013 8000", [(PHONE, "138 0013 8000")]),
        ("回拨138–0013–8000", [(PHONE, "138–0013–8000")]),
    ],
    ids=[
        "email_then_phone",
        "email_then_year",
        "phone_range",
        "area_code",
        "dash_then_group",
        "dashes",
    ],
)
def test_neighbours_and_dashes_leave_each_identifier_whole(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert spans(text) == found


CHINESE = str.maketrans("0123456789", "零一二三四五六七八九")


@pytest.mark.parametrize(
    ("text", "found", "category"),
    [
        ("电话：一三八零零一三八零零零，请回电", "一三八零零一三八零零零", PHONE),
        ("手机幺三八-零零幺三-八零零零", "幺三八-零零幺三-八零零零", PHONE),
        ("手机一三八\u3000零零一三\u3000八零零零。", "一三八\u3000零零一三\u3000八零零零", PHONE),
        ("回拨壹叁捌零零壹叁捌零零零", "壹叁捌零零壹叁捌零零零", PHONE),
        ("回拨一三八〇〇一三八〇〇〇", "一三八〇〇一三八〇〇〇", PHONE),
        ("手机138零0138000", "138零0138000", PHONE),
        (f"身份证{ID_1990.translate(CHINESE)}核对", ID_1990.translate(CHINESE), ID_NUMBER),
    ],
    ids=["phone", "yao_grouped", "ideographic_spaces", "capitals", "ling_circle", "mixed", "id"],
)
def test_digits_written_as_chinese_numerals_are_found(text: str, found: str, category: str) -> None:
    assert spans(text) == [(category, found)]
    redacted, counts = scan(text, NOTHING_ALLOWED)
    assert found not in redacted
    assert counts == {category: 1}


@pytest.mark.parametrize(
    "separator",
    [
        "\u00a0",
        "\u2009",
        "\u2003",
        "\t",
        "\u2013",
        "\u2014",
        "\u2212",
        "\uff0d",
        "\u2010",
        "\u301c",
    ],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_chinese_numerals_grouped_by_any_space_or_dash_are_found(separator: str) -> None:
    # As a number in digits is, whatever space or dash sets its groups apart: only the ASCII
    # space and hyphen and the ideographic space were read between numerals.
    phone = separator.join(["一三八", "零零一三", "八零零零"])
    id_number = separator.join([ID_1990[:6], ID_1990[6:14], ID_1990[14:]]).translate(CHINESE)
    text = f"电话：{phone}，身份证{id_number}。"
    assert scan(text, NOTHING_ALLOWED) == (
        f"电话：[REDACTED:{PHONE}]，身份证[REDACTED:{ID_NUMBER}]。",
        {PHONE: 1, ID_NUMBER: 1},
    )


@pytest.mark.parametrize(
    ("text", "found", "category"),
    [
        ("电话一三八００一三八〇〇〇", "一三八００一三八〇〇〇", PHONE),
        ("电话一三八\u0660\u0660一三八零零零", "一三八\u0660\u0660一三八零零零", PHONE),
        ("卡号六二二２\u2013零二一二\u2013三四五六\u2013七八九四", None, BANK_ACCOUNT),
    ],
    ids=["full_width", "arabic_indic", "card"],
)
def test_chinese_numerals_among_full_width_and_other_digits_are_found(
    text: str, found: str | None, category: str
) -> None:
    # Digits of any form may stand among the numerals, as ASCII ones may.
    redacted, counts = scan(text, NOTHING_ALLOWED)
    assert counts == {category: 1}, text
    assert redacted.endswith(f"[REDACTED:{category}]")
    if found is not None:
        assert spans(text) == [(category, found)]


@pytest.mark.parametrize("hiding", ["\u200b", "\u2060", "\u00ad", "\ufeff", "\x00", "\U000e0020"])
@pytest.mark.parametrize("at", [1, 3, 5, 10])
def test_an_invisible_character_among_chinese_numerals_hides_nothing(hiding: str, at: int) -> None:
    # Anywhere inside the run, also where it leaves fewer than seven numerals on either side.
    phone = "一三八零零一三八零零零"
    text = f"电话{phone[:at]}{hiding}{phone[at:]}，谢谢"
    assert scan(text, NOTHING_ALLOWED) == (f"电话[REDACTED:{PHONE}]，谢谢", {PHONE: 1})
    assert [m.category for m in find(text)] == [PHONE]


@pytest.mark.parametrize(
    "text",
    [
        "一二三四五六七八九",  # counting: seven numerals or more, and no identifier
        "二〇二五年一月一日",
        "一九九〇年至二〇二五年",
        "一百三十八万零一十三",  # a number said in words
        "三三两两，一一对应",
        "第三季度完成率85.5%，比上季度提高了3个百分点",
        "一三八零零一三八",  # eight digits: no phone number
    ],
)
def test_chinese_numerals_that_are_no_identifier_are_left(text: str) -> None:
    assert find(text) == []
    assert scan(text, NOTHING_ALLOWED) == (text, {})


def test_a_grouped_nineteen_digit_number_failing_its_check_stays_whole() -> None:
    # 4-4-4-4-3 is how 19-digit cards are written: its last group is not split off to find a
    # 16-digit card that merely happens to pass Luhn.
    body = CARD_16 + "505"
    assert spans(f"卡号{grouped(body, (4, 4, 4, 4, 3))}校验不通过") == []


def test_birth_date_from_valid_ids() -> None:
    assert stated_birth_date(ID_1990) == dt.date(1990, 3, 7)
    assert stated_birth_date(ID_X) == dt.date(1949, 12, 31)
    assert stated_birth_date(ID_X.lower()) == dt.date(1949, 12, 31)
    assert stated_birth_date(fullwidth(ID_1990)) == dt.date(1990, 3, 7)
    assert stated_birth_date(f" {ID_1990}\n") == dt.date(1990, 3, 7)
    grouped = f"{ID_1990[:6]}-{ID_1990[6:14]}-{ID_1990[14:]}"
    assert stated_birth_date(grouped) == dt.date(1990, 3, 7)
    assert stated_birth_date(grouped.replace("-", " ")) == dt.date(1990, 3, 7)
    assert stated_birth_date(fullwidth(grouped)) == dt.date(1990, 3, 7)
    minor = with_id_check("44030520150601456")
    assert stated_birth_date(minor) == dt.date(2015, 6, 1)
    in_other_digits = "".join(chr(0x0660 + int(c)) if c.isdigit() else c for c in minor)
    assert stated_birth_date(in_other_digits) == dt.date(2015, 6, 1)
    in_math_digits = "".join(chr(0x1D7CE + int(c)) if c.isdigit() else c for c in minor)
    assert stated_birth_date(in_math_digits) == dt.date(2015, 6, 1)
    for invisible in ("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff"):
        hidden = f"{minor[:6]}{invisible}{minor[6:]}{invisible}"
        assert stated_birth_date(hidden) == dt.date(2015, 6, 1), repr(invisible)


def test_a_wrong_check_digit_states_its_date_in_no_valid_number() -> None:
    # A declared ID number mistyped is still about the person of its date (the minors check);
    # free text holds no ID number with a check digit that fails.
    assert stated_birth_date(wrong_last(ID_1990)) == dt.date(1990, 3, 7)
    assert not id_ok(wrong_last(ID_1990))
    assert spans(f"身份证{wrong_last(ID_1990)}") == []


@pytest.mark.parametrize(
    "value",
    [
        with_id_check("11010519900230123"),  # impossible date 0230
        with_id_check("11010519900431123"),  # 31 April
        with_id_check("11010518991231123"),
        with_id_check("11010520991231123"),
        ID_1990[:-1],
        ID_1990 + "1",
        "110105199003071X34",
        "",
        "not an id",
    ],
)
def test_birth_date_from_invalid_ids(value: str) -> None:
    assert stated_birth_date(value) is None


def test_birth_date_today_is_accepted() -> None:
    today = dt.date.today()
    value = with_id_check(f"110105{today:%Y%m%d}001")
    assert stated_birth_date(value) == today


@pytest.fixture
def process_zone_behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's clock in UTC-12: a day or two behind where the date is latest."""
    monkeypatch.setenv("TZ", "Etc/GMT+12")  # POSIX signs: twelve hours west
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("process_zone_behind")
def test_a_newborns_number_dated_today_in_a_zone_ahead_gives_its_birth_date() -> None:
    # The gateway's zone (`timezone: Asia/Shanghai`) may be a day ahead of the process's: a
    # child born there today is a child, not a number from the future.
    latest = dt.datetime.now(dt.timezone(dt.timedelta(hours=14))).date()
    assert latest > dt.date.today()
    newborn = with_id_check(f"110105{latest:%Y%m%d}001")
    assert stated_birth_date(newborn) == latest
    tomorrow = latest + dt.timedelta(days=1)
    assert stated_birth_date(with_id_check(f"110105{tomorrow:%Y%m%d}001")) is None


# --- the scanner's tables of Unicode -----------------------------------------------------------


def test_the_category_tables_hold_what_a_walk_of_all_of_unicode_finds() -> None:
    # The scanner walks only the planes that hold characters: none it leaves out may be of a
    # category it reads (a later Unicode assigning some there would make this fail).
    found: dict[str, list[int]] = {kind: [] for kind in pii._BY_CATEGORY}
    for cp in range(0x80, 0x110000):
        codepoints = found.get(unicodedata.category(chr(cp)))
        if codepoints is not None:
            codepoints.append(cp)
    assert found == pii._BY_CATEGORY


# --- numbers written with any space or dash ----------------------------------------------------


def spaces_and_dashes() -> tuple[list[str], list[str]]:
    """Every character `str.isspace()` holds true, and every dash: the dash punctuation
    (category Pd), the rest of Unicode's Dash property and the look-alikes typed for a hyphen.
    Computed here from unicodedata, not taken from the scanner's tables."""
    spaces: list[str] = []
    dashes: list[str] = []
    for c in map(chr, range(0x110000)):
        if c.isspace():
            spaces.append(c)
        elif unicodedata.category(c) == "Pd":
            dashes.append(c)
    # Swung dash, superscript and subscript minus, minus sign; hyphen bullet, modifier letter
    # and heavy minus signs; the katakana prolonged sound mark and its half-width form.
    dashes += "\u2053\u207b\u208b\u2212\u2043\u02d7\u2796\u30fc\uff70"
    return spaces, dashes


WHITESPACE, DASHES = spaces_and_dashes()
# In free text a line break (and the other whitespace controls) ends a number.
LINE_BREAKS = [c for c in WHITESPACE if c != "\t" and unicodedata.category(c) != "Zs"]
TEXT_SEPARATORS = [c for c in WHITESPACE + DASHES if c not in LINE_BREAKS]
MINOR_ID = with_id_check("44030520150601456")  # born 2015-06-01


def codepoint(c: str) -> str:
    return f"U+{ord(c):04X}"


def test_the_separators_found_passing_are_all_spaces_or_dashes() -> None:
    found = (
        "\u2009\u2002\u2003\u205f\u1680\u2028\u2000\u2001\u2004\u2005\u2006\u2008\u200a"
        "\u0085\u000b\u000c\u001c\u001d\u001e\u001f\u2029\u2043\u2e3a\u30fc\ufe63\u2212\uff0d"
    )
    assert set(found) <= set(WHITESPACE + DASHES)
    assert {"\n", "\u2028", "\u0085"} <= set(LINE_BREAKS)
    assert {" ", "\t", "\u00a0", "\u2009", "\u3000"} <= set(TEXT_SEPARATORS)


@pytest.mark.parametrize("separator", WHITESPACE + DASHES, ids=codepoint)
def test_birth_date_from_an_id_grouped_with_any_space_or_dash(separator: str) -> None:
    # An ID number field holds one value: whatever its groups are set apart with, line breaks
    # included, a minor's number is read.
    for sizes in ((6, 8, 4), (6, 4, 4, 4), (6, 12)):
        value = grouped(MINOR_ID, sizes, separator)
        assert stated_birth_date(value) == dt.date(2015, 6, 1), value
        assert stated_birth_date(f"{separator}{value}{separator * 2}") == dt.date(2015, 6, 1)


@pytest.mark.parametrize("sizes", [(6, 4, 2, 2, 4), (6, 6, 2, 4), (6, 4, 2, 6), (6, 4, 4, 4)])
@pytest.mark.parametrize("separator", [" ", "-", "/"])
def test_an_id_grouped_at_any_date_boundary_is_redacted(
    sizes: tuple[int, ...], separator: str
) -> None:
    # Division, year, month and day, each set apart or not: "110105 1990 03 07 123X".
    id_number = grouped(ID_1990, sizes, separator)
    assert spans(f"身份证 {id_number} 请核对") == [(ID_NUMBER, id_number)]
    assert stated_birth_date(id_number) == dt.date(1990, 3, 7)


@pytest.mark.parametrize("separator", TEXT_SEPARATORS, ids=codepoint)
def test_numbers_grouped_with_any_space_or_dash_are_redacted_in_free_text(separator: str) -> None:
    id_number = grouped(ID_1990, (6, 8, 4), separator)
    phone = grouped("13800138000", (3, 4, 4), separator)
    text = f"身份证{id_number}，电话{phone}。"
    assert spans(text) == [(ID_NUMBER, id_number), (PHONE, phone)]
    assert scan(text, NOTHING_ALLOWED) == (
        f"身份证[REDACTED:{ID_NUMBER}]，电话[REDACTED:{PHONE}]。",
        {ID_NUMBER: 1, PHONE: 1},
    )


def test_the_prolonged_sound_mark_separates_digits_only() -> None:
    # What a Japanese input method gives for the hyphen key; between letters it is part of a
    # katakana word, here of an e-mail domain's top-level label.
    assert spans("電話138ー0013ー8000") == [(PHONE, "138ー0013ー8000")]
    assert spans("メール li@example.セール まで") == [(EMAIL, "li@example.セール")]


# --- ID numbers in groups ----------------------------------------------------------------------

# Separators at one or more of the boundaries between division, year, month and day, and the
# rest: how forms, cards and people write the number.
ID_GROUPINGS = [(6, 4, 4, 4), (6, 8, 4), (6, 12), (10, 8), (14, 4), (6, 4, 8), (10, 4, 4)]


@pytest.mark.parametrize("sizes", ID_GROUPINGS, ids=lambda sizes: "-".join(map(str, sizes)))
@pytest.mark.parametrize("separator", [" ", "-", "/", "\u2009", "\uff0d", "\uff0f", "\u3000"])
def test_id_number_in_groups_found(sizes: tuple[int, ...], separator: str) -> None:
    value = grouped(ID_X, sizes, separator)
    assert spans(f"身份证{value}核对") == [(ID_NUMBER, value)]
    assert spans(f"ID: {value}.") == [(ID_NUMBER, value)]
    assert stated_birth_date(value) == dt.date(1949, 12, 31)


@pytest.mark.parametrize(
    "text",
    [
        f"身份证 {grouped(wrong_last(ID_X), (6, 4, 4, 4))}",  # wrong check digit
        f"单号 {grouped(with_id_check('11010520241301123'), (6, 4, 4, 4), '-')}",  # month 13
        f"单号 {grouped(with_id_check('20010519900307123'), (6, 4, 4, 4))}",  # no province 20
        f"单号 {grouped(ID_X, (6, 4, 4, 4))[:-1]} 2",  # a group short
        f"单号 {grouped(ID_X + '1', (6, 4, 4, 5))}",  # a group long
    ],
)
def test_id_number_in_groups_rejected(text: str) -> None:
    assert spans(text) == []


# --- foreign permanent residents' ID numbers --------------------------------------------------

# The 2023 edition: `9`, the issuing mainland province, a nationality code (ISO 3166 numeric),
# the birth date, a sequence number and a resident ID number's check digit.
PERMANENT_RESIDENT = with_id_check("94376020150601667")  # Hunan, 760, born 2015-06-01
PERMANENT_RESIDENT_X = "94427620100105002X"  # Guangdong, 276, born 2010-01-05
# Beijing, 840, born 1975-03-22; it passes Luhn and leads with 9, like an old debit card.
PERMANENT_RESIDENT_LUHN = "911840197503221182"
ARABIC_INDIC = str.maketrans("0123456789", "".join(map(chr, range(0x660, 0x66A))))
CHINESE_NUMERALS = str.maketrans("0123456789", "〇一二三四五六七八九")


def test_the_permanent_resident_numbers_are_what_they_say() -> None:
    assert with_id_check(PERMANENT_RESIDENT_X[:17]) == PERMANENT_RESIDENT_X
    assert with_luhn(PERMANENT_RESIDENT_LUHN[:-1]) == PERMANENT_RESIDENT_LUHN
    assert with_id_check(PERMANENT_RESIDENT_LUHN[:17]) == PERMANENT_RESIDENT_LUHN


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f"永居证号{PERMANENT_RESIDENT}，请核对", PERMANENT_RESIDENT),
        (f"ID:{PERMANENT_RESIDENT_X}.", PERMANENT_RESIDENT_X),
        (f"证件{PERMANENT_RESIDENT_X.lower()}已上传", PERMANENT_RESIDENT_X.lower()),
        (f"号码{fullwidth(PERMANENT_RESIDENT)}错了吗", fullwidth(PERMANENT_RESIDENT)),
        (f"PR{PERMANENT_RESIDENT}abc", PERMANENT_RESIDENT),  # glued to letters
        (f"{PERMANENT_RESIDENT_X}13800138000", PERMANENT_RESIDENT_X),  # an X ends it
        (
            f"证件{PERMANENT_RESIDENT.translate(ARABIC_INDIC)}。",
            PERMANENT_RESIDENT.translate(ARABIC_INDIC),
        ),
        (
            f"证件{PERMANENT_RESIDENT.translate(CHINESE_NUMERALS)}。",
            PERMANENT_RESIDENT.translate(CHINESE_NUMERALS),
        ),
        (
            f"证件{PERMANENT_RESIDENT[:6]}\u200b{PERMANENT_RESIDENT[6:]}。",
            f"{PERMANENT_RESIDENT[:6]}\u200b{PERMANENT_RESIDENT[6:]}",
        ),
    ],
)
def test_a_permanent_resident_id_number_is_found(text: str, value: str) -> None:
    assert [(c, v) for c, v in spans(text) if c == ID_NUMBER] == [(ID_NUMBER, value)]
    redacted, counts = scan(text, NOTHING_ALLOWED)
    assert value not in redacted
    assert counts[ID_NUMBER] == 1


@pytest.mark.parametrize("sizes", ID_GROUPINGS, ids=lambda sizes: "-".join(map(str, sizes)))
@pytest.mark.parametrize("separator", [" ", "-", "/", "\u2009", "\uff0d", "\uff0f", "\u3000"])
def test_a_permanent_resident_id_number_in_groups_is_found(
    sizes: tuple[int, ...], separator: str
) -> None:
    value = grouped(PERMANENT_RESIDENT_X, sizes, separator)
    assert spans(f"永居证{value}核对") == [(ID_NUMBER, value)]
    assert spans(f"ID: {value}.") == [(ID_NUMBER, value)]


@pytest.mark.parametrize(
    "text",
    [
        f"永居证号{wrong_last(PERMANENT_RESIDENT)}校验失败",  # wrong check digit
        f"证件{with_id_check('94376020180229667')}",  # 29 February 2018
        f"证件{with_id_check('94376020151301667')}",  # month 13
        f"证件{with_id_check('94376018991231667')}",  # before 1900
        f"证件{with_id_check('94376020991231667')}",  # in the future
        f"证件{with_id_check('98176020150601667')}",  # Hong Kong issues none
        f"证件{with_id_check('97176020150601667')}",  # nor does Taiwan
        f"证件{with_id_check('99976020150601667')}",  # no province 99
        f"流水{PERMANENT_RESIDENT}7",  # part of a 19-digit run
        f"流水3{PERMANENT_RESIDENT}",
        f"单号 {grouped(wrong_last(PERMANENT_RESIDENT_X), (6, 8, 4), '-')}",
    ],
)
def test_what_is_no_permanent_resident_id_number_is_not_one(text: str) -> None:
    assert ID_NUMBER not in [c for c, _ in spans(text)]


@pytest.mark.parametrize(
    "text",
    [
        PERMANENT_RESIDENT_LUHN,
        f"号码{PERMANENT_RESIDENT_LUHN}",
        f"号码 {grouped(PERMANENT_RESIDENT_LUHN, (6, 8, 4))}",
        f"号码：{fullwidth(PERMANENT_RESIDENT_LUHN)}。",
        f"资料{PERMANENT_RESIDENT_LUHN}abc",
    ],
)
def test_a_permanent_resident_id_number_wins_over_a_card_on_the_same_digits(text: str) -> None:
    [(category, _)] = spans(text)
    assert category == ID_NUMBER
    # With ID numbers allowed, the same digits are not redacted as a card instead.
    assert scan(text, frozenset({ID_NUMBER})) == (text, {})


ADULT_ID = "110105198001011238"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # Two numbers on one form line, "A/B": each is one, grouped or not.
        (f"父/子身份证号：{ADULT_ID}/{grouped(ID_X, (6, 8, 4), ' ')}", 2),
        (f"子/父：{grouped(ID_X, (6, 8, 4), '-')}/{grouped(ADULT_ID, (6, 8, 4), '-')}", 2),
        (f"身份证/手机：{grouped(ID_X, (6, 8, 4), ' ')}/13800138000", 2),
        (f"No.1/{grouped(ID_X, (6, 8, 4), '-')}", 1),
        # With its check digit, a grouped number is one inside a longer one too.
        (f"单号2024-{grouped(ID_X, (6, 4, 4, 4), '-')}", 1),
        (f"路径/{grouped(ID_X, (6, 8, 4), '/')}/7", 1),
    ],
)
def test_a_grouped_id_number_beside_another_number_is_found(text: str, found: int) -> None:
    assert sum(scan(text, NOTHING_ALLOWED)[1].values()) == found
    assert ID_X[-6:] not in scan(text, NOTHING_ALLOWED)[0].replace(" ", "").replace("-", "")


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        (f"{ID_X}13800138000", NOTHING_ALLOWED),
        (f"{ID_X}13800138000", frozenset({PHONE})),  # the phone is the field's own
        (f"{ID_X}{ID_X}", NOTHING_ALLOWED),
        (f"编号{ID_X}1234", NOTHING_ALLOWED),
    ],
)
def test_an_id_number_ending_in_x_is_found_whatever_digits_follow(
    text: str, allowed: frozenset[str]
) -> None:
    # An X check character cannot continue a number: what follows it is another one.
    redacted, counts = scan(text, allowed)
    assert ID_X[:17] not in redacted
    assert counts[ID_NUMBER] == text.count(ID_X)


@pytest.mark.parametrize(
    "text",
    [
        "订单号202403041230451234已发货",  # 18 digits led by a date: no province 20
        "订单号 202403 0412 3045 1234",
        "时间戳20240304123045123",  # 17 digits
        "流水 2024-0304-1230-4512-3",
        "单号 110105 2024 0304 12",  # a group short of an ID number
        "版本 1.10105.1949.1231.002",
        "日期 2024/03/04 12:30:45",
    ],
)
def test_ordinary_long_numbers_are_not_id_numbers(text: str) -> None:
    assert ID_NUMBER not in [category for category, _ in spans(text)]


# --- first-generation ID numbers (15 digits) ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        OLD_ID,
        grouped(OLD_ID, (6, 6, 3)),
        grouped(OLD_ID, (6, 6, 3), "-"),
        grouped(OLD_ID, (6, 6, 3), "/"),
        grouped(OLD_ID, (6, 6, 3), "\u2009"),
        grouped(OLD_ID, (6, 9), "\u2013"),
        grouped(OLD_ID, (12, 3), "-"),
        fullwidth(OLD_ID),
        fullwidth(grouped(OLD_ID, (6, 6, 3), "-")),
    ],
)
def test_old_id_number_found(value: str) -> None:
    assert spans(f"旧身份证{value}，请更新") == [(ID_NUMBER, value)]
    assert spans(f"old card {value}.") == [(ID_NUMBER, value)]
    # Born in the 1900s: never a child's, and the minors check reads the date all the same.
    assert stated_birth_date(value) == dt.date(1985, 3, 4)


@pytest.mark.parametrize(
    "text",
    [
        "单号990105850304123",  # no province 99
        "单号710105850304123",  # Taiwan's code: never on a first-generation card
        "单号810105850304123",  # nor Hong Kong's
        "单号110105851304123",  # month 13
        "单号110105850229123",  # 29 February 1985
        "单号110105850000123",  # month 00
        "单号110105850132123",  # 32 January
        "流水1101058503041234",  # 16 digits
        "流水3110105850304123",
        "单号2024-110105850304123",  # inside a longer dashed number
        "单号110105-850304-123-9",
        "单号110105/850304/123/9",
        "单号110105850304123X",
        "单号 110105 851304 123",
        "单号 110105 8503 04123",  # not at its boundaries
    ],
)
def test_old_id_number_rejected(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize(
    "value",
    ["110105851304123", "990105850304123", "11010585030412", "1101058503041234", OLD_ID + "X"],
)
def test_no_birth_date_from_what_is_not_an_old_id_number(value: str) -> None:
    assert stated_birth_date(value) is None


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("分机13800138000-1234", [(PHONE, "13800138000")]),
        ("电话138 0013 8000 转 1234", [(PHONE, "138 0013 8000")]),
        ("电话13800138000 ext. 123", [(PHONE, "13800138000")]),
        ("座机0755-12345678-123", []),
        ("座机010 6512 3456 1234", [(PHONE, "010 6512 3456")]),  # a landline, then more
        ("IMEI 861234567890123", []),  # 15 digits: no province 86
        ("订单号 440100202401019", []),  # 15 digits, no date: month 24
        ("流水 420106 241301 123", []),  # grouped 6-6-3, no date: month 13
        ("订单202403041230451", []),  # 15 digits led by a date: no province 20
    ],
)
def test_numbers_of_15_to_18_digits_that_are_not_id_numbers(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert spans(text) == found


# --- contact.phone -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        "+86 13800138000",
        "+8613800138000",
        "+86-138-0013-8000",
        "+86 138 0013 8000",
        "0086 13800138000",
        "86-13800138000",
        "(+86)13800138000",
        "(+86) 138 0013 8000",
        "19912345678",
        "１３８００１３８０００",
        "＋８６ １３８００１３８０００",
        "138.0013.8000",
    ],
)
def test_phone_found_in_every_format(value: str) -> None:
    assert spans(f"我的手机号是{value}请联系") == [(PHONE, value)]
    assert spans(f"call {value}, thanks") == [(PHONE, value)]


@pytest.mark.parametrize(
    "text",
    [
        "工号12800138000",  # 12x is not a mobile prefix
        "编号10800138000",
        "电话1380013800是空号",  # 10 digits
        "电话138001380001",  # 12 digits
        "订单号202501011380013800",  # inside an 18-digit order number
        "单号 1380013800012345678901",
        "分机138-0013-8000-12",
        "会议号：876 543 210",
        "+86 12800138000",
    ],
)
def test_phone_rejected(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize(
    "value",
    [
        "010-62345678",
        "010 6234 5678",
        "(010) 6234 5678",
        "(010)62345678",
        "021-6234-5678",
        "0755-88888888",
        "0755-8888 8888",
        "(0755)88888888",
        "0571 234 5678",
        "+86 10 6234 5678",
        "+86-755-88888888",
        "0086 21 62345678",
        "(+86) (010) 62345678",
        "+86 571 234 5678",
        "0086 571 234 5678",
        "(010)-6234-5678",
        "(0571)-234-5678",
    ],
)
def test_landline_found_in_every_format(value: str) -> None:
    assert spans(f"座机{value}转8001") == [(PHONE, value)]
    assert spans(f"tel. {value}, thanks") == [(PHONE, value)]


@pytest.mark.parametrize(
    "text",
    [
        "座机01062345678",  # no separator: as often an order number
        "座机010-12345678",  # a local number never starts with 1
        "座机010-02345678",
        "座机0755-8888",  # too short
        "订单号 0101-23456789",
        "批次 0755-88888888-123456",  # inside a longer number
        "订单 0755-2345-6789-0123",
        "2024-05-01 至 2024-06-30",
        "+86 (0)10 0552 9988",  # a local number never starts with 0
        "(0)10 6552 9988",  # the trunk 0 in parentheses only after +86
    ],
)
def test_landline_rejected(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Tel:+86 21 6234 5678", "+86 21 6234 5678"),  # beside letters: a run of its own
        ("tel:+86-755-88888888", "+86-755-88888888"),
        ("电话 +86 21 6234 5678-8123 转前台", "+86 21 6234 5678"),  # and its extension
        ("座机0755-88888888-8001", "0755-88888888"),
        # The trunk 0 in parentheses, as business cards abroad write it.
        ("Tel: +86 (0)755 8888 8888", "+86 (0)755 8888 8888"),
        ("Tel +86 (0)10 6552 9988.", "+86 (0)10 6552 9988"),
        ("0086(0)21-62345678", "0086(0)21-62345678"),
    ],
)
def test_a_landline_in_a_longer_run_is_found(text: str, found: str) -> None:
    assert spans(text) == [(PHONE, found)]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("座机（010）6234 5678。", "（010）6234 5678"),
        ("电话：（0755）88888888转8001", "（0755）88888888"),
        ("手机（+86）13800138000", "（+86）13800138000"),
    ],
)
def test_full_width_parentheses_around_a_code_are_part_of_the_number(text: str, found: str) -> None:
    assert spans(text) == [(PHONE, found)]
    assert spans("（详见附件）共（3）份") == []  # elsewhere they are the prose's own


@pytest.mark.parametrize(
    "text",
    ["班次 0800-2000 0800-2000", "时段 0930-2130 0930-2130", "金额 1,010 2345 6789"],
)
def test_shifts_and_amounts_are_no_landlines(text: str) -> None:
    assert spans(text) == []


def test_two_phones_joined_by_a_hyphen_are_both_found() -> None:
    # A hyphen after a complete mobile number starts the next one; after a year it does not.
    assert spans("电话：13800138000-13900139000") == [
        (PHONE, "13800138000"),
        (PHONE, "13900139000"),
    ]
    assert spans("订单2024-13800138000") == []


def test_two_adjacent_phones() -> None:
    text = "联系13800138000或13900139000，备用138-0013-8000 139-0013-9000"
    assert spans(text) == [
        (PHONE, "13800138000"),
        (PHONE, "13900139000"),
        (PHONE, "138-0013-8000"),
        (PHONE, "139-0013-9000"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("13800138000) 13900139000", ["13800138000", "13900139000"]),
        ("13800138000 (+86)13900139000", ["13800138000", "(+86)13900139000"]),
        ("13800138000 +86 13900139000", ["13800138000", "+86 13900139000"]),
        ("1 +86 13800138000", ["+86 13800138000"]),
    ],
)
def test_phones_sharing_a_run_are_each_found_once(text: str, expected: list[str]) -> None:
    assert spans(text) == [(PHONE, value) for value in expected]


# --- financial.bank_account --------------------------------------------------------------------


def test_luhn_helper_matches_known_number() -> None:
    assert with_luhn("411111111111111") == "4111111111111111"


@pytest.mark.parametrize(
    "value",
    [
        CARD_16,
        CARD_19,
        " ".join(CARD_16[i : i + 4] for i in range(0, 16, 4)),
        "-".join(CARD_16[i : i + 4] for i in range(0, 16, 4)),
        " ".join(CARD_19[i : i + 4] for i in range(0, 19, 4)),
        "4111 1111 1111 1111",
        fullwidth(CARD_16),
        # Mastercard's 2-series, at both ends of its range.
        with_luhn("222100000000000"),
        with_luhn("272099999999999"),
    ],
)
def test_bank_account_found(value: str) -> None:
    assert spans(f"卡号{value}，开户行招商银行") == [(BANK_ACCOUNT, value)]


@pytest.mark.parametrize(
    "text",
    [
        f"卡号{wrong_last(CARD_16, '0123456789')}无效",  # fails Luhn
        f"卡号{wrong_last(CARD_19, '0123456789')}无效",
        f"流水号{CARD_16}1234",  # 20 digits: not a card
        f"流水号9{CARD_19}",
        f"订单{with_luhn('202501011234567')}",  # date-led order number passing Luhn
        f"订单{with_luhn('10000000000000000')}",  # no card issuer starts with 1
        f"订单{with_luhn('222099999999999')}",  # just outside Mastercard's 2-series
        f"订单{with_luhn('272100000000000')}",
        f"订单{with_luhn('012345678901234')}",
        f"编号1234-{'-'.join(CARD_16[i : i + 4] for i in range(0, 16, 4))}",  # 5 groups
        f"证件{wrong_last(ID_1990)}",  # a mistyped ID is not a card even if Luhn passes
    ],
)
def test_bank_account_rejected(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize(
    "valid",
    [
        ID_1990,
        with_id_check("44030519851224123"),
        with_id_check("62010220001130456"),
        with_id_check("35020318991231123"),  # born before 1900: no valid ID at all
    ],
)
def test_mistyped_id_is_not_a_card_whatever_its_luhn(valid: str) -> None:
    for last in "0123456789X":
        value = valid[:-1] + last
        if value != valid:
            assert spans(f"证件{value}") == []


def test_seventeen_digits_and_a_wrong_x_is_not_a_card() -> None:
    body = next(
        body
        for seq in range(1000)
        if (body := f"4403051985122{seq:03d}7")
        and with_luhn(body[:-1]) == body
        and with_id_check(body)[-1] != "X"
    )
    assert spans(f"证件{body}X") == []
    assert spans(f"证件{body}x") == []  # as an ID number's check character may be written
    assert spans(f"卡号{body}，") == [(BANK_ACCOUNT, body)]


# American Express: 15 digits under 34 or 37, written whole or grouped 4-6-5.
AMEX = "378282246310005"
AMEX_34 = with_luhn("34123456789012")


def test_amex_numbers_pass_luhn() -> None:
    assert with_luhn(AMEX[:-1]) == AMEX
    assert len(AMEX_34) == 15


@pytest.mark.parametrize(
    "value",
    [
        AMEX,
        AMEX_34,
        "371449635398431",
        grouped(AMEX, (4, 6, 5)),
        grouped(AMEX, (4, 6, 5), "-"),
        grouped(AMEX_34, (4, 6, 5)),
        fullwidth(AMEX),
        grouped(AMEX, (4, 6, 5), "\u2009"),
    ],
)
def test_amex_card_found(value: str) -> None:
    assert spans(f"卡号{value}，开户行招商银行") == [(BANK_ACCOUNT, value)]
    assert spans(f"Card: {value} exp 12/27") == [(BANK_ACCOUNT, value)]


@pytest.mark.parametrize(
    "text",
    [
        f"卡号{wrong_last(AMEX, '0123456789')}无效",  # fails Luhn
        f"卡号{grouped(wrong_last(AMEX, '0123456789'), (4, 6, 5))}无效",
        # 15 digits passing Luhn, not under 34 or 37 (nor a reporting body of IMEIs).
        f"订单{with_luhn('36000000000001')}",
        f"订单{with_luhn('62220212345678')}",
        f"订单{grouped(with_luhn('62220212345678'), (4, 6, 5))}",
        f"订单{with_luhn('3400000000000')}",  # 14 digits
        f"订单{grouped(AMEX, (4, 6, 4))}",
        f"编号12-{grouped(AMEX, (4, 6, 5), '-')}",  # the tail of a longer dashed number
        f"编号{grouped(AMEX, (4, 6, 5), '-')}-12",
        f"流水号{AMEX}9",
    ],
)
def test_fifteen_digit_numbers_that_are_not_amex_cards(text: str) -> None:
    assert spans(text) == []


def test_an_old_id_number_under_34_or_37_that_passes_luhn_is_an_id_number() -> None:
    value = next(
        v for seq in range(1000) if (v := f"370102850304{seq:03d}") and with_luhn(v[:-1]) == v
    )
    assert spans(f"证件{value}") == [(ID_NUMBER, value)]


# --- contact.email -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("邮箱zhangsan@example.com请回复", "zhangsan@example.com"),
        ("Mail Li.Si+hr@mail.example.com.cn.", "Li.Si+hr@mail.example.com.cn"),
        ("邮箱zhangsan＠example.com", "zhangsan＠example.com"),
        ("邮箱１３８００１３８０００＠ｑｑ．ｃｏｍ", "１３８００１３８０００＠ｑｑ．ｃｏｍ"),
        ("QQ邮箱13800138000@qq.com常用", "13800138000@qq.com"),
        ("<wang_wu88@163.com>", "wang_wu88@163.com"),
        ("见...li@example.com", "li@example.com"),
        # Percent-encoded in a URL: a query string, a passed-through Referer.
        ("mailto:zhangsan%40example.com", "zhangsan%40example.com"),
        ("https://a.example/reset?email=li.si%40corp.cn&x=1", "li.si%40corp.cn"),
        ("q=li%2Bhr%40corp.cn", "li%2Bhr%40corp.cn"),
    ],
)
def test_email_found(text: str, value: str) -> None:
    assert spans(text) == [(EMAIL, value)]


@pytest.mark.parametrize(
    "text",
    [
        "@张三 请看一下",
        "admin@localhost 仅开发使用",
        "邮箱a@b.c格式不对",
        "请回复user@，域名漏了",
        "大家@所有人",
        "x" * 70 + "@example.com",  # local part longer than 64
        "完成了100%40个",
        "%40张三 请看一下",
    ],
)
def test_email_rejected(text: str) -> None:
    assert spans(text) == []


# Addresses typed so that address harvesters miss them: spaces around the '@'.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("邮箱 zhangsan @ example.com 谢谢", "zhangsan @ example.com"),
        ("邮箱：zhangsan@ example.com", "zhangsan@ example.com"),
        ("Mail li.si  @  corp.example.cn.", "li.si  @  corp.example.cn"),
        ("邮箱 zhangsan ＠ example.com", "zhangsan ＠ example.com"),
        ("邮箱 zhangsan\u3000＠\u3000example.com，谢谢", "zhangsan\u3000＠\u3000example.com"),
        ("发到 zhangsan\t@\texample.com", "zhangsan\t@\texample.com"),
        ("QQ：13800138000 @ qq.com", "13800138000 @ qq.com"),
        ("联系 josé @ correo.es", "josé @ correo.es"),
    ],
)
def test_email_with_spaces_around_the_at_sign_found(text: str, value: str) -> None:
    assert spans(text) == [(EMAIL, value)]
    assert scan(text, NOTHING_ALLOWED) == (text.replace(value, f"[REDACTED:{EMAIL}]"), {EMAIL: 1})


@pytest.mark.parametrize(
    "text",
    [
        # A space before the '@' and none after is how a mention is written.
        "thanks @john.smith for the review",
        "LGTM @zhang.wei 明天发布",
        "meet me at example.com",
        "zhangsan at example.com",  # the word "at" is English, not an at sign
        "Dinner @ 7pm, lunch @ 12.30",
        "价格 @ 3.5元",
        "a @ b.c",  # a one-letter top-level domain
        "大家 @ 所有人",
        "zhangsan @",
        "@ example.com",
        "zhangsan @\nexample.com",  # a line break ends the address
        # Spaced, '@' is an operator and a word of chat: only a domain under a top-level domain
        # mail is sent under makes an address of it.
        "y = x @ self.weight",
        "z = q @ k.transpose(-2, -1)",
        "Lunch @ Mr.Wong, then the review",
        "cc @ zhang.wei",
        "收到 @ 李明.下午开会",
        # ... nor under one whose code is also a syllable of pinyin, or a file's extension.
        "cc @ wang.li",
        "Lunch @ Mr.Li",
        "ping @ liu.na and @ chen.de",
        "see README.md#usage.md",
        "foo.py#L10.py",
    ],
)
def test_spaces_around_an_at_sign_make_no_address_of_prose(text: str) -> None:
    assert spans(text) == []


# ... or "at" in brackets for the '@', as an input method types them too.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("邮箱zhangsan(at)example.com请回复", "zhangsan(at)example.com"),
        ("邮箱 zhangsan[at]example.com", "zhangsan[at]example.com"),
        ("Mail: zhangsan (at) example.com.", "zhangsan (at) example.com"),
        ("邮箱：zhangsan（at）163.com，谢谢", "zhangsan（at）163.com"),
        ("邮箱：zhangsan【at】163.com", "zhangsan【at】163.com"),  # '[' in Chinese punctuation
        ("邮箱：zhangsan［at］163.com", "zhangsan［at］163.com"),
        ("Write to ZHANGSAN(AT)EXAMPLE.COM", "ZHANGSAN(AT)EXAMPLE.COM"),
        ("li.si [At] corp.example.cn", "li.si [At] corp.example.cn"),
        ("li.si ( at ) corp.example.cn", "li.si ( at ) corp.example.cn"),
        ("邮箱 zhangsan（ａｔ）example.com", "zhangsan（ａｔ）example.com"),
        ("QQ：13800138000(at)qq.com", "13800138000(at)qq.com"),
        ("联系：张伟(at)例子.中国", "张伟(at)例子.中国"),
        # An invisible character inside hides nothing, in a string with no digit too.
        ("邮箱zhangsan(\u200bat)example.com", "zhangsan(\u200bat)example.com"),
    ],
)
def test_email_with_at_in_brackets_found(text: str, value: str) -> None:
    assert spans(text) == [(EMAIL, value)]
    assert scan(text, NOTHING_ALLOWED) == (text.replace(value, f"[REDACTED:{EMAIL}]"), {EMAIL: 1})


@pytest.mark.parametrize(
    "text",
    [
        "meet me at example.com",
        "Meet me at example.com tomorrow",
        "zhangsan at example.com",  # a bare "at" is a word of the sentence
        "zhangsan AT example.com",
        "look (at) this, then decide.",
        "(at)example.com",  # no local part
        "zhangsan(at)example",  # no dot in the domain
        "the rate [at] 3.5% is fixed",
        "zhangsan(atm)example.com",
        "zhangsan(attn)example.com",
        "zhangsan(a t)example.com",
        "Vienna (AT) and Graz (AT)",
        "zhangsan (at)\nexample.com",
    ],
)
def test_at_in_brackets_makes_no_address_of_prose(text: str) -> None:
    assert spans(text) == []


# ... with the dots spelled out in brackets too, and '@' or '.' as HTML character references.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("邮箱zhangsan(at)example(dot)com请回复", "zhangsan(at)example(dot)com"),
        ("Mail: zhang.san [at] mail [dot] qq [dot] com.", "zhang.san [at] mail [dot] qq [dot] com"),
        ("邮箱：zhangsan（at）163（dot）com，谢谢", "zhangsan（at）163（dot）com"),
        ("邮箱：zhangsan【at】163【DOT】com", "zhangsan【at】163【DOT】com"),
        ("li.si@corp(dot)example(dot)cn", "li.si@corp(dot)example(dot)cn"),
        ("li.si@corp ( Dot ) example.cn", "li.si@corp ( Dot ) example.cn"),
        ("<p>zhangsan&#64;example.com</p>", "zhangsan&#64;example.com"),
        ("<p>zhangsan&#x40;example&#46;com</p>", "zhangsan&#x40;example&#46;com"),
        ("zhangsan&#0064;example&#x2E;com", "zhangsan&#0064;example&#x2E;com"),
        ("邮箱zhangsan(at)example\u200b(dot)com", "zhangsan(at)example\u200b(dot)com"),
        # An invisible character inside a spelled-out sign hides nothing either.
        ("邮箱zhangsan(at)example(d\u200bot)com", "zhangsan(at)example(d\u200bot)com"),
        ("li.si@mail [d\u00adot] qq [dot] com", "li.si@mail [d\u00adot] qq [dot] com"),
        ("邮箱zhangsan(a\u200bt)example(dot)com", "zhangsan(a\u200bt)example(dot)com"),
        # Named references, and numeric ones without their ';', as a browser reads them.
        ("zhangsan&commat;example&period;com", "zhangsan&commat;example&period;com"),
        ("<p>zhangsan&#64example.com</p>", "zhangsan&#64example.com"),
        ("zhangsan&#x40;mail&#46cn", "zhangsan&#x40;mail&#46cn"),
    ],
)
def test_email_with_spelled_out_dots_or_character_references_found(text: str, value: str) -> None:
    assert spans(text) == [(EMAIL, value)]
    assert scan(text, NOTHING_ALLOWED) == (text.replace(value, f"[REDACTED:{EMAIL}]"), {EMAIL: 1})


def test_spelled_out_dots_beside_other_identifiers() -> None:
    text = "IP 192(dot)168(dot)1(dot)20, 手机13800138000, li(at)example(dot)com"
    assert spans(text) == [
        (IP, "192(dot)168(dot)1(dot)20"),
        (PHONE, "13800138000"),
        (EMAIL, "li(at)example(dot)com"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Press (dot) 3 times to continue",
        "the [dot] product of 2 vectors",
        "zhangsan(at)example(dot)",  # no top-level domain
        "&#64;example.com",  # no local part
        "zhangsan&#65;example.com",  # 'A', not '@'
        "zhangsan&#640example.com",  # another character: '&#640' is not '&#64' and a '0'
        "zhangsan&#x40bexample.com",  # nor is '&#x40b' '&#x40'
        "R&D costs 5 units & more",
        "zhangsan(at)example(dotcom)",
        "version 1(dots)2",
    ],
)
def test_spelled_out_dots_make_no_address_of_prose(text: str) -> None:
    assert spans(text) == []


# ... or with spaces around its dots, beside an at sign only: in the domain up to a top-level
# domain mail is sent under, in the local part with a space before the dot.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("邮箱 zhangsan@163 . com 联系", "zhangsan@163 . com"),
        ("邮箱 zhangsan @ 163 . com", "zhangsan @ 163 . com"),
        ("mail zhang.san @ qq . com ok", "zhang.san @ qq . com"),
        ("zhangsan@163 .com", "zhangsan@163 .com"),
        ("发到 zhangsan@163. com", "zhangsan@163. com"),
        ("邮箱 zhang . san@163.com", "zhang . san@163.com"),
        ("zhang . san @ mail . qq . com", "zhang . san @ mail . qq . com"),
        ("li@mail . qq . com . cn，谢谢", "li@mail . qq . com . cn"),
        ("Mail ZHANGSAN@163 . COM", "ZHANGSAN@163 . COM"),
        ("zhangsan@163 . com . Next time", "zhangsan@163 . com"),
        ("contact: li@corp . cn. Thanks", "li@corp . cn"),
        ("zhangsan(at)163 . com", "zhangsan(at)163 . com"),
        ("zhangsan&#64;163 . com", "zhangsan&#64;163 . com"),
        ("zhang . san＃163 . com", "zhang . san＃163 . com"),
        ("?mail=li%40corp . cn", "li%40corp . cn"),
        ("zhang . san@ex\u200bample . com", "zhang . san@ex\u200bample . com"),
    ],
)
def test_email_with_spaces_around_its_dots_found(text: str, value: str) -> None:
    assert spans(text) == [(EMAIL, value)]
    assert scan(text, NOTHING_ALLOWED) == (text.replace(value, f"[REDACTED:{EMAIL}]"), {EMAIL: 1})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Thanks. li@corp.cn", "li@corp.cn"),  # a sentence ends before the address
        ("Call me. zhangsan@163.com. Bye.", "zhangsan@163.com"),
        ("hi @ all . Meeting moved . See li@corp.cn", "li@corp.cn"),
    ],
)
def test_a_sentence_around_an_address_is_not_part_of_it(text: str, value: str) -> None:
    assert spans(text) == [(EMAIL, value)]


@pytest.mark.parametrize(
    "text",
    [
        "see @ home . Then we talk",
        "Lunch @ Mr . Wong",
        "cc @ zhang . wei",
        "y = x @ self . weight",
        "li@corp . example",  # no top-level domain
        "ping @ liu . na",  # a code that is also a syllable of pinyin
    ],
)
def test_spaced_dots_make_no_address_of_prose(text: str) -> None:
    assert spans(text) == []


# ... or '#' for the '@' (common on Chinese pages), only between an ASCII local part and a domain
# under a top-level domain mail is sent under: '#' has too many other uses.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("邮箱：zhangsan#163.com，谢谢", "zhangsan#163.com"),
        ("请发到zhangsan#gmail.com", "zhangsan#gmail.com"),
        ("联系 wang.wu#qq.com 或电话", "wang.wu#qq.com"),
        ("投稿li_si#pku.edu.cn。", "li_si#pku.edu.cn"),
        ("QQ邮箱13800138000#qq.com常用", "13800138000#qq.com"),
        ("E-mail: HR#Example.COM", "HR#Example.COM"),
        ("Пишите ivan#mail.ru", "ivan#mail.ru"),
        ("邮箱zhangsan#163。com", "zhangsan#163。com"),
        ("邮箱zhangsan\u200b#gmail.com", "zhangsan\u200b#gmail.com"),
        ("邮箱zhangsan#\u2060gmail.com", "zhangsan#\u2060gmail.com"),
        # A full-width '＃', as a Chinese input method's punctuation types it.
        ("邮箱：zhangsan＃163.com，谢谢", "zhangsan＃163.com"),
        ("投稿li_si＃pku.edu.cn。", "li_si＃pku.edu.cn"),
        ("邮箱zhangsan\u200b＃gmail.com", "zhangsan\u200b＃gmail.com"),
    ],
)
def test_email_with_a_hash_for_the_at_sign_found(text: str, value: str) -> None:
    assert spans(text) == [(EMAIL, value)]
    assert scan(text, NOTHING_ALLOWED) == (text.replace(value, f"[REDACTED:{EMAIL}]"), {EMAIL: 1})


@pytest.mark.parametrize(
    "text",
    [
        "see issue#12 for details",
        "item#3.2 is out of stock",
        "written in C#.NET and F#.NET",
        "#hashtag of the day",
        "#2024#taobao.com",  # a hashtag ending where a domain begins
        "#双十一#taobao.com",
        "see page.html#section.two",
        "https://example.com/docs/guide#install.sh",  # a URL's fragment
        "https://example.com/#top.cn",
        "div#main.container { color: red }",
        "Array#each.with_index",
        "color:#fff.",
        "zhangsan#example",  # no top-level domain
        "zhangsan#example.c",
        "zhangsan#example.notatld",
        "zhangsan #163.com",
        "zhangsan# 163.com",
        "张伟#163.com",  # a local part in CJK: a hashtag's text, as often
        "zhangsan#例子.中国",
        "工单#88231：用户反馈无法登录",
        "【工单#4521】已处理",
        "written in C＃.NET",
        "see issue＃12 for details",
        "话题＃双十一＃taobao.com",
        "张伟＃163.com",
    ],
)
def test_a_hash_makes_no_address_of_anything_else(text: str) -> None:
    assert spans(text) == []


# Internationalised addresses (RFC 6531/6532): a local part and domain labels in any script.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("张伟@例子.中国", "张伟@例子.中国"),
        ("邮箱：张伟@例子.中国，请查收", "张伟@例子.中国"),
        ("请联系zhang.wei@公司.cn。", "zhang.wei@公司.cn"),
        ("发到 用户@bücher.de 谢谢", "用户@bücher.de"),
        ("Escribe a josé@correo.es, gracias", "josé@correo.es"),
        ("Пишите: иван@пример.рф.", "иван@пример.рф"),
        ("連絡先「山田太郎@例え.jp」まで", "山田太郎@例え.jp"),
        ("연락처: 홍길동@회사.한국 으로", "홍길동@회사.한국"),
        ("पता राम@उदाहरण.भारत है", "राम@उदाहरण.भारत"),  # combining vowel signs
        ("邮箱jürgen.müller@beispiel.de请回复", "jürgen.müller@beispiel.de"),
        ("客服：张伟@example.com", "张伟@example.com"),
        ("报名abc@例子.在线截止", "abc@例子.在线"),
        ("邮箱（张伟＠例子．中国）", "张伟＠例子．中国"),  # full-width '@' and '.'
        ("邮箱：ｚｈａｎｇ＠例子．中国", "ｚｈａｎｇ＠例子．中国"),
        ("山田@例え.みんな", "山田@例え.みんな"),
        ("連絡先：\U00020bb7田@例え.jp。", "\U00020bb7田@例え.jp"),  # beyond the BMP
        ("😀 请发到：张伟@例子.中国", "张伟@例子.中国"),  # in a string with an emoji
    ],
    ids=[
        "cjk",
        "cjk_between_cjk_punctuation",
        "ascii_local_cjk_label",
        "cjk_local_latin_label",
        "accented_local",
        "cyrillic",
        "japanese_in_corner_brackets",
        "hangul",
        "devanagari",
        "accented_after_chinese",
        "cjk_local_ascii_domain",
        "ascii_local_cjk_top_level_domain",
        "fullwidth_at_and_dot",
        "fullwidth_local",
        "hiragana_top_level_domain",
        "astral_han",
        "beside_an_emoji",
    ],
)
def test_internationalised_email_found(text: str, value: str) -> None:
    assert spans(text) == [(EMAIL, value)]
    assert scan(text, NOTHING_ALLOWED) == (
        text.replace(value, f"[REDACTED:{EMAIL}]"),
        {EMAIL: 1},
    )


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # Nothing says where the name begins: the local part takes at most four CJK characters.
        ("请发邮件到张伟@例子.中国谢谢", "请发邮[REDACTED:contact.email]谢谢"),
        ("请联系客服中心@例子.中国", "请联系[REDACTED:contact.email]"),
        ("请发到：张伟@例子.中国谢谢", "请发到：[REDACTED:contact.email]谢谢"),
        # The domain ends with the longest CJK top-level domain the text begins with ...
        ("发给：用户@例子.新加坡谢谢", "发给：[REDACTED:contact.email]谢谢"),
        ("用户@例子.嘉里大酒店欢迎您", "[REDACTED:contact.email]欢迎您"),
        ("地址是zhang@公司.cn2024年启用", "地址是[REDACTED:contact.email]2024年启用"),
        # ... or, after a CJK label, with any two CJK characters.
        ("张伟@例子.未知的邮箱", "[REDACTED:contact.email]的邮箱"),
        # Two addresses: neither local part reaches into the other address.
        (
            "抄送张三@例子.中国和李四@例子.中国",
            "[REDACTED:contact.email][REDACTED:contact.email]",
        ),
        # An ASCII local part never takes the CJK label before it, nor a domain the prose after.
        ("邮箱li.na@例子.中国请回复", "邮箱[REDACTED:contact.email]请回复"),
        (
            "请发li@example.com.谢谢！抄送：张伟@例子.中国",
            "请发[REDACTED:contact.email].谢谢！抄送：[REDACTED:contact.email]",
        ),
    ],
    ids=[
        "name_after_prose",
        "four_character_local_part",
        "name_after_colon",
        "known_top_level_domain",
        "longest_known_top_level_domain",
        "digits_after_the_domain",
        "unknown_top_level_domain",
        "two_addresses",
        "ascii_local_after_label",
        "ascii_address_then_dot_and_prose",
    ],
)
def test_email_in_cjk_prose_takes_little_of_the_text_around_it(text: str, redacted: str) -> None:
    assert scan(text, NOTHING_ALLOWED)[0] == redacted


MENTIONS = [
    "@张伟 请查看",
    "请联系@李明。",
    "请联系@李明。谢谢",
    "大家@所有人 明天开会",
    "@李明，请查看附件",
    "张伟@例子 谢谢",  # no dot
    "请联系@李明。明天见",  # the ideographic full stop ends a sentence before other text
    "张伟@例子。中国",  # and after CJK text, even before what could be a domain
    "请@李明。公司明天放假",
    "收到@小王。手机号已更新",
    "请@张伟。PPT已发到群里",
    "谢谢@李明。OK",
    "张伟@例子、中国",
    "用户@例子.中",  # a one-character top-level domain
    "请@所有人：周五前提交",
    "@张伟.明天开会",  # nothing before the '@'
]


@pytest.mark.parametrize("mention", MENTIONS)
def test_a_mention_is_not_an_email_but_an_address_beside_it_is(mention: str) -> None:
    text = f"{mention}；邮箱：李明@例子.中国"
    assert spans(text) == [(EMAIL, "李明@例子.中国")]
    assert scan(text, NOTHING_ALLOWED)[0] == f"{mention}；邮箱：[REDACTED:{EMAIL}]"


@pytest.mark.parametrize("address", ["zhangsan@163。com", "li@mail｡163。com", "zhang.wei@qq。com"])
def test_an_ideographic_full_stop_before_a_domain_joins_its_labels(address: str) -> None:
    # Written so to dodge address harvesters; IDNA reads both stops as dots.
    text = f"请发邮件到 {address}，谢谢"
    assert spans(text) == [(EMAIL, address)]


def test_a_long_run_of_labels_without_a_top_level_domain_ends() -> None:
    # A label of digits fits both kinds of label; taken either way at each of 60 dots, the
    # split was tried 2**60 times (24 labels already held the event loop for seconds). The scan
    # holds the GIL, so only another process can bound a hang; the bound is far above what
    # the three scans take (a few milliseconds).
    script = (
        "from gateway.pii import scan\n"
        "for label in ('1', '1-1', '12'):\n"
        "    text = 'see a@' + '.'.join([label] * 60) + ' ok'\n"
        "    assert scan(text, frozenset()) == (text, {}), label\n"
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert done.returncode == 0


CJK_BOUNDARIES = [
    *"，。：；、（）「」『』《》【】！？…～·“”‘’〈〉〔〕",
    " ",
    "\u3000",
    "\t",
    "\n",
    "\u2005",  # the four-per-em space chat clients put after a mention
]


@pytest.mark.parametrize("boundary", CJK_BOUNDARIES)
def test_cjk_punctuation_and_whitespace_end_the_local_part_and_the_domain(boundary: str) -> None:
    for address in ("张伟@例子.中国", "zhang.wei@公司.cn", "josé@correo.es"):
        text = f"请联系{boundary}{address}{boundary}谢谢"
        assert spans(text) == [(EMAIL, address)], text


# --- contact.address ---------------------------------------------------------------------------

BEIJING_HOME = "北京市朝阳区建国路88号SOHO现代城5号楼1001室"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # A street with a number and the administrative parts before it.
        (f"请寄到{BEIJING_HOME}", BEIJING_HOME),
        (
            "地址：上海市浦东新区张江镇碧波路690号3号楼502室",
            "上海市浦东新区张江镇碧波路690号3号楼502室",
        ),
        (
            "住址广东省深圳市南山区科技园南区深南大道10000号",
            "广东省深圳市南山区科技园南区深南大道10000号",
        ),
        ("寄往北京市朝阳区建国路88号", "北京市朝阳区建国路88号"),
        ("客户在江苏省南京市鼓楼区中山北路589号，周末在家", "江苏省南京市鼓楼区中山北路589号"),
        (
            "新疆维吾尔自治区乌鲁木齐市天山区解放北路88号",
            "新疆维吾尔自治区乌鲁木齐市天山区解放北路88号",
        ),
        ("公司位于浙江省杭州市西湖区文三路90号", "浙江省杭州市西湖区文三路90号"),
        ("快递员说北京市东城区建国门外大街甲6号", "北京市东城区建国门外大街甲6号"),
        ("上海市黄浦区南京东路88-1号", "上海市黄浦区南京东路88-1号"),
        ("北京市东城区南锣鼓巷59号", "北京市东城区南锣鼓巷59号"),
        ("上海市徐汇区田子坊弄12号", "上海市徐汇区田子坊弄12号"),
        ("北京市西城区百花深处胡同7号", "北京市西城区百花深处胡同7号"),
        ("北京市东城区王府井大街255号", "北京市东城区王府井大街255号"),
        ("天津市和平区解放路100号院", "天津市和平区解放路100号院"),
        # A street with a number and a building part after it, each kind.
        ("送到建国路88号5号楼", "建国路88号5号楼"),
        ("送到建国路88号3栋", "建国路88号3栋"),
        ("送到建国路88号2幢", "建国路88号2幢"),
        ("送到建国路88号1单元", "建国路88号1单元"),
        ("送到建国路88号1001室", "建国路88号1001室"),
        ("送到建国路88号5层", "建国路88号5层"),
        ("送到建国路88号5楼", "建国路88号5楼"),
        ("送到建国路88号B座", "建国路88号B座"),
        ("送到建国路88号-1001", "建国路88号-1001"),
        ("送到建国路88号三单元", "建国路88号三单元"),
        ("送到建国路88号5号楼1001", "建国路88号5号楼1001"),  # the number after a building
        ("送到建国路88号SOHO现代城B座1201室", "建国路88号SOHO现代城B座1201室"),
        ("送到世纪大道100号环球金融中心58层", "世纪大道100号环球金融中心58层"),
        ("送到建国路88号 5号楼 1001室", "建国路88号 5号楼 1001室"),
        ("送到建国路88号5号楼1001房", "建国路88号5号楼1001房"),
        # An estate's name, a building part and a room.
        ("阳光小区5号楼1001室", "阳光小区5号楼1001室"),
        ("住址碧桂园3栋2单元502室", "碧桂园3栋2单元502室"),
        ("地址：翠苑12幢3单元2404室", "翠苑12幢3单元2404室"),
        ("望京新村12号楼5单元2801室", "望京新村12号楼5单元2801室"),
        ("阳光小区5号楼1单元12层B座1001室", "阳光小区5号楼1单元12层B座1001室"),
        ("上海市浦东新区滨江花园3号楼1201室", "上海市浦东新区滨江花园3号楼1201室"),
        # Full-width digits and letters, as the scanner reads them elsewhere.
        ("北京市朝阳区建国路８８号", "北京市朝阳区建国路８８号"),
        ("送到建国路８８号Ｂ座１００１室", "建国路８８号Ｂ座１００１室"),
    ],
)
def test_a_postal_address_is_found(text: str, value: str) -> None:
    assert spans(text) == [(ADDRESS, value)]
    assert scan(text, NOTHING_ALLOWED) == (
        text.replace(value, f"[REDACTED:{ADDRESS}]"),
        {ADDRESS: 1},
    )


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # The lead-in before the first administrative part is left.
        (f"请寄到{BEIJING_HOME}", "请寄到{R}"),
        ("地址：上海市浦东新区张江镇碧波路690号3号楼502室", "地址：{R}"),
        ("住址广东省深圳市南山区科技园南区深南大道10000号", "住址{R}"),
        # Without one, the street's name back to a stop or a punctuation mark.
        ("快递放在了建国路88号5号楼门口", "快递放在了{R}门口"),
        ("Delivery to 建国路88号5号楼, thanks", "Delivery to {R}, thanks"),
        # What the prose puts before a province's name is left.
        ("快递员说北京市朝阳区建国路88号", "快递员说{R}"),
        # Two addresses are two.
        (
            "从北京市朝阳区建国路88号寄到上海市黄浦区人民路100号",
            "从{R}寄到{R}",
        ),
    ],
)
def test_an_address_runs_from_its_first_part_to_its_last(text: str, redacted: str) -> None:
    redacted_text, counts = scan(text, NOTHING_ALLOWED)
    assert redacted_text == redacted.replace("{R}", f"[REDACTED:{ADDRESS}]")
    assert counts == {ADDRESS: redacted.count("{R}")}


def test_a_street_name_read_back_without_a_stop_is_capped() -> None:
    # No stop before the street: its name is taken back twelve characters, no more.
    text = "今天下午三点左右快递小哥打电话通知包裹转交中山路88号5号楼"
    assert spans(text) == [(ADDRESS, "哥打电话通知包裹转交中山路88号5号楼")]


@pytest.mark.parametrize(
    "text",
    [
        "北京市朝阳区",  # an area, no street
        "会议改在北京市朝阳区召开",
        "北京市朝阳区建国路",  # a street without a number
        "我在人民路上堵了半小时",
        "建国路88号",  # a street number alone: a landmark, a shop, a corner
        "约在建国路88号门口见",
        "周末去天安门广场参观",
        "请查阅第3号文件",
        "会议改在5楼会议室",
        "会议室1001室已经预订",
        "路由器3号口掉线",
        "道路3号施工路段已封闭",
        "我知道88号是谁负责的",
        "我知道88号楼在哪",
        "频道5号节目",
        "地铁2号线和10号线换乘",
        "上海市浦东新区张江路1号线",
        "这里3号5楼",  # 里 and bare 道 end more words than streets: not read
        "北京市朝阳区建国路八十八号",  # Chinese numerals: read only as runs of seven or more
        "阳光小区5号楼",  # an estate and a building, no room
        "阳光小区1001室",  # an estate and a room, no building
        "阳光小区3栋502",  # no 号 or 室
        "高速公路3号出口5楼",  # words between a number and a floor that name no building
        "销售一路3号选手排名第5楼",
        "88 Jianguo Road, Chaoyang District, Beijing",  # English and pinyin: not read
        "香港中環皇后大道中99號",  # traditional characters: not read
    ],
)
def test_what_is_no_postal_address_is_left(text: str) -> None:
    assert scan(text, NOTHING_ALLOWED) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An identifier after an address is found as what it is, glued on or not.
        (
            "北京市朝阳区建国路88号13800138000",
            [(ADDRESS, "北京市朝阳区建国路88号"), (PHONE, "13800138000")],
        ),
        (
            f"{BEIJING_HOME}，电话13800138000",
            [(ADDRESS, BEIJING_HOME), (PHONE, "13800138000")],
        ),
        (
            "建国路88号5号楼13800138000",
            [(ADDRESS, "建国路88号5号楼"), (PHONE, "13800138000")],
        ),
        (
            f"碧桂园3栋2单元502室{ID_1990}",
            [(ADDRESS, "碧桂园3栋2单元502室"), (ID_NUMBER, ID_1990)],
        ),
        (
            "北京市朝阳区建国路88号li@example.com",
            [(ADDRESS, "北京市朝阳区建国路88号"), (EMAIL, "li@example.com")],
        ),
        (
            "13800138000北京市朝阳区建国路88号",
            [(PHONE, "13800138000"), (ADDRESS, "北京市朝阳区建国路88号")],
        ),
        # An e-mail address of CJK letters takes the 号 before it; the address keeps the rest.
        (
            "北京市朝阳区建国路88号张伟@例子.中国",
            [(ADDRESS, "北京市朝阳区建国路88"), (EMAIL, "号张伟@例子.中国")],
        ),
        # One whose domain reads on into the address's first characters: what is left is an
        # address as one with what it has left of its administrative parts, or none, is.
        (
            "张@例子.北京市朝阳区建国路88号",
            [(EMAIL, "张@例子.北京"), (ADDRESS, "市朝阳区建国路88号")],
        ),
        ("a@b.中国碧桂园3栋2单元502室", [(EMAIL, "a@b.中国"), (ADDRESS, "碧桂园3栋2单元502室")]),
    ],
)
def test_no_identifier_gives_characters_to_a_postal_address(
    text: str, expected: list[tuple[str, str]]
) -> None:
    assert spans(text) == expected


def test_an_address_field_keeps_its_addresses() -> None:
    text = f"收件人王女士，{BEIJING_HOME}，电话13800138000"
    assert scan(text, frozenset({ADDRESS})) == (
        f"收件人王女士，{BEIJING_HOME}，电话[REDACTED:{PHONE}]",
        {PHONE: 1},
    )
    assert scan(text, frozenset({PHONE})) == (
        f"收件人王女士，[REDACTED:{ADDRESS}]，电话13800138000",
        {ADDRESS: 1},
    )
    assert scan(text, CATEGORIES)[0] is text


def test_an_invisible_character_inside_an_address_hides_nothing() -> None:
    text = "北京市朝阳区建国路\u200b88号"
    assert scan(text, NOTHING_ALLOWED) == (f"[REDACTED:{ADDRESS}]", {ADDRESS: 1})


# --- identity.credit_code ----------------------------------------------------------------------


def test_credit_code_found() -> None:
    assert spans(f"统一社会信用代码：{USCC}，地址北京") == [(CREDIT_CODE, USCC)]
    assert spans(f"代码{fullwidth(USCC)}有效") == [(CREDIT_CODE, fullwidth(USCC))]
    central = with_uscc_check("11100000000013127")
    assert spans(f"机关代码{central}") == [(CREDIT_CODE, central)]


@pytest.mark.parametrize(
    "text",
    [
        f"信用代码{wrong_last(USCC, USCC_CHARSET)}校验失败",
        f"信用代码X{USCC}",  # part of a longer alphanumeric run
        f"信用代码{USCC}A",
        f"代码{with_uscc_check('91990108MA01C2XY3')}",  # no region 99
        f"代码{with_uscc_check('90110108MA01C2XY3')}",  # no institution category 0
        f"代码{with_uscc_check('01110108MA01C2XY3')}",  # no registration department 0
        f"代码{USCC.lower()}",
    ],
)
def test_credit_code_rejected(text: str) -> None:
    assert spans(text) == []


# --- identity.passport -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["E12345678", "G12345678", "EA1234567", "ＥＡ１２３４５６７"])
def test_passport_found(value: str) -> None:
    assert spans(f"护照号码{value}，签证已办") == [(PASSPORT, value)]
    assert spans(f"Passport {value}.") == [(PASSPORT, value)]


@pytest.mark.parametrize(
    "text",
    [
        "序列号XE12345678",
        "编码E123456789",
        "型号E12345678X",
        "EMS单号EA123456789CN",
        "批次G1234567",
        "小写e12345678",
        "F12345678",
    ],
)
def test_passport_rejected(text: str) -> None:
    assert spans(text) == []


# The Mainland Travel Permit for Hong Kong and Macao Residents (H or M, eight digits, ten on the
# old booklets) and the Exit-Entry Permit for Travelling to and from Hong Kong and Macao (C and
# eight digits, or C, a letter and seven digits on the electronic card): travel documents.
PERMITS = ["H12345678", "M87654321", "H1234567890", "M1234567890", "C12345678", "CA1234567"]


@pytest.mark.parametrize(
    "value",
    [
        *PERMITS,
        "Ｈ１２３４５６７８",
        "ＣＡ１２３４５６７",
        "Ｍ１２３４５６７８９０",
        # Read as a card of one letter, seven digits and a check, it would hold the check: no
        # card has seven digits, and the permit stays.
        "C12345670",
    ],
)
def test_a_hong_kong_and_macao_travel_permit_is_found_as_a_passport(value: str) -> None:
    assert spans(f"回乡证号码{value}，请核对") == [(PASSPORT, value)]
    assert spans(f"往来港澳通行证{value}。") == [(PASSPORT, value)]
    assert spans(f"Permit no. {value}.") == [(PASSPORT, value)]
    assert scan(f"证件{value}。", frozenset({ID_NUMBER})) == (
        f"证件{REDACTED[PASSPORT]}。",
        {PASSPORT: 1},
    )
    assert scan(f"证件{value}。", frozenset({PASSPORT})) == (f"证件{value}。", {})


@pytest.mark.parametrize(
    "text",
    [
        "H123456789",  # nine digits
        "C123456789",
        "H12345678901",  # eleven
        "C1234567890",  # ten are the old mainland permit's only, never after a C or an E
        "E1234567890",
        "M1234567",  # seven
        "C1234567",
        "XH12345678",  # glued to letters or digits
        "H12345678X",
        "SKUC12345678",
        "PO2023M12345678",
        "deadbeefH12345678",
        "CA1234567B",
        "9C12345678",
        "H1234567890abc",
        "h12345678",  # lower case
        "c12345678",
        "CAB1234567",  # two letters after the C
        "HA12345678",  # a letter after H or M
        "回乡证号码H12345678X，",
    ],
)
def test_what_is_no_travel_permit_is_left(text: str) -> None:
    assert spans(text) == []


# --- identity.id_number: Hong Kong identity cards and Taiwanese ID numbers -----------------------


def hk_id(prefix: str, digits6: str) -> str:
    """A Hong Kong card's check: a one-letter prefix padded in front with a space (36), letters
    A=10 ... Z=35, weights 9 to 2; 11 - (sum mod 11), 11 written 0 and 10 written A."""
    values = [36 if c == " " else ord(c) - 55 for c in prefix.rjust(2)] + [int(c) for c in digits6]
    check = 11 - sum(v * w for v, w in zip(values, range(9, 1, -1), strict=True)) % 11
    return prefix + digits6 + {10: "A", 11: "0"}.get(check, str(check))


TW_LETTER_VALUES = dict(
    zip(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        (
            10,
            11,
            12,
            13,
            14,
            15,
            16,
            17,
            34,
            18,
            19,
            20,
            21,
            22,
            35,
            23,
            24,
            25,
            26,
            27,
            28,
            29,
            32,
            30,
            31,
            33,
        ),
        strict=True,
    )
)


def tw_ok(value: str) -> bool:
    tens, units = divmod(TW_LETTER_VALUES[value[0]], 10)
    weights = (8, 7, 6, 5, 4, 3, 2, 1, 1)
    total = tens + 9 * units + sum(int(c) * w for c, w in zip(value[1:], weights, strict=True))
    return total % 10 == 0


def test_the_hong_kong_and_taiwanese_checks_match_published_numbers() -> None:
    # A123456(3) and CA182361(1) are the worked examples of HKID check-digit guides; A123456789
    # is Taiwan's well-known sample ID number, A800000014 a sample resident certificate number
    # of the 2021 format, which the National Immigration Agency checks as citizens' numbers.
    assert hk_id("A", "123456") == "A1234563"
    assert hk_id("CA", "182361") == "CA1823611"
    assert hk_id("A", "100004") == "A100004A"
    assert hk_id("AB", "987654") == "AB9876543"
    assert tw_ok("A123456789")
    assert tw_ok("A800000014")
    assert not tw_ok("A123456788")
    assert tw_ok("F231234561")
    assert tw_ok("F921234562")


HK_A = hk_id("A", "100004")  # its check character is A


@pytest.mark.parametrize(
    "value",
    [
        "A123456(3)",
        "A123456 (3)",
        "A1234563",
        "CA182361(1)",
        "AB987654(3)",
        "AB9876543",
        f"{HK_A[:-1]}({HK_A[-1]})",
        HK_A,
        "A123456\u00a0(3)",  # any space is a space
        "A123456（3）",  # full-width brackets, typed by an input method
        f"{HK_A[:-1]}（A）",
        "Ａ１２３４５６（３）",
        "ＣＡ１８２３６１１",
        "EA123456(3)",  # a card of two letters with its check in brackets is no passport
        "A123456789",
        "F231234561",
        "A800000014",
        "Ｆ９２１２３４５６２",  # a resident certificate's, in full-width
    ],
)
def test_a_hong_kong_or_taiwanese_id_number_is_found(value: str) -> None:
    assert spans(f"證件號碼{value}，請核對") == [(ID_NUMBER, value)]
    assert spans(f"ID no. {value}.") == [(ID_NUMBER, value)]
    assert scan(f"ID {value}", frozenset({PASSPORT})) == (
        f"ID {REDACTED[ID_NUMBER]}",
        {ID_NUMBER: 1},
    )
    assert scan(f"ID {value}", frozenset({ID_NUMBER})) == (f"ID {value}", {})


@pytest.mark.parametrize("hiding", ["\u200b", "\u00ad", "\u2060"])
def test_an_invisible_character_inside_a_hong_kong_or_taiwanese_id_hides_nothing(
    hiding: str,
) -> None:
    for value in ("A123456(3)", "A123456789"):
        text = f"ID {value[:4]}{hiding}{value[4:]} ok"
        assert scan(text, NOTHING_ALLOWED) == (f"ID {REDACTED[ID_NUMBER]} ok", {ID_NUMBER: 1})


@pytest.mark.parametrize(
    "text",
    [
        "A123456(4)",  # wrong check character
        "A1234564",
        "CA182361(2)",
        "AB987654(2)",
        "A123456789"[:-1] + "8",
        "A800000015",
        "A12345(3)",  # wrong length
        "A1234567(3)",
        "A12345678",
        "A1234567890",
        "ABC123456(3)",  # three letters
        "a123456(3)",  # lower case
        "a123456789",
        "A323456789",  # neither 1, 2, 8 nor 9 after the letter
        "XA123456(3)",  # glued to letters or digits
        "SKUA1234563",
        "A1234563B",
        "PO2023A123456789",
        "A123456789abc",
        "9A123456789",
        "model A123456789X",
        "123456(3)",  # no letter
    ],
)
def test_what_is_no_hong_kong_or_taiwanese_id_number_is_left(text: str) -> None:
    assert spans(text) == []


def test_a_passport_shaped_number_stays_a_passport_whatever_the_hong_kong_check() -> None:
    # "EF2799665" passes the check of a card of two letters, as one passport in eleven does.
    assert hk_id("EF", "279966") == "EF2799665"
    assert spans("护照号码EF2799665，签证已办") == [(PASSPORT, "EF2799665")]
    assert spans("HKID EF279966(5)") == [(ID_NUMBER, "EF279966(5)")]


@pytest.mark.parametrize(
    "value",
    [
        hk_id("CA", "182361"),  # an electronic exit-entry permit's shape
        hk_id("CB", "123456"),
        hk_id("CZ", "654321"),
        hk_id("C", "123456"),
        hk_id("H", "123456"),
        hk_id("M", "123456"),
        hk_id("HA", "123456"),
        hk_id("MA", "123456"),
        f"{hk_id('CA', '182361')[:-1]}({hk_id('CA', '182361')[-1]})",
    ],
)
def test_a_hong_kong_card_of_a_permits_letter_stays_a_card(value: str) -> None:
    # Cards of C, H and M were cards before the permits were read: a C, a letter and seven
    # digits passing the card's check is one still, alone or glued to another identifier.
    assert spans(f"證件號碼{value}，請核對") == [(ID_NUMBER, value)]
    assert spans(f"资料：13800138000{value}。") == [(PHONE, "13800138000"), (ID_NUMBER, value)]
    assert spans(f"资料：{value}E12345678。") == [(ID_NUMBER, value), (PASSPORT, "E12345678")]
    assert spans(fullwidth(value)) == [(ID_NUMBER, fullwidth(value))]


def test_an_electronic_permit_failing_the_card_check_is_a_passport() -> None:
    assert hk_id("CA", "123456") != "CA1234567"
    assert spans("资料：13800138000CA1234567。") == [
        (PHONE, "13800138000"),
        (PASSPORT, "CA1234567"),
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("13800138000", PHONE), ("A123456(3)", ID_NUMBER)),
        (("13800138000", PHONE), ("A123456789", ID_NUMBER)),
        (("E12345678", PASSPORT), ("A123456789", ID_NUMBER)),
        (("li@example.com", EMAIL), ("A123456789", ID_NUMBER)),
        ((ID_X, ID_NUMBER), ("CA182361(1)", ID_NUMBER)),
        (("A123456789", ID_NUMBER), ("E12345678", PASSPORT)),
        (("A123456(3)", ID_NUMBER), ("13800138000", PHONE)),
        (("A123456789", ID_NUMBER), ("A800000014", ID_NUMBER)),
    ],
    ids=lambda pair: pair[0],
)
def test_a_hong_kong_or_taiwanese_id_glued_to_another_identifier_is_found(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    (a, category_a), (b, category_b) = first, second
    counts = Counter([category_a, category_b])
    assert scan(f"资料：{a}{b}。", NOTHING_ALLOWED) == (
        f"资料：{REDACTED[category_a]}{REDACTED[category_b]}。",
        dict(counts),
    )


# Macau resident identity cards: 1, 5 or 7, six digits and a check digit, bracketed or slashed.
MACAU_IDS = ["1234567(8)", "5123456(0)", "7654321(9)", "1/234567/8", "5/123456/0", "7/000001/3"]


@pytest.mark.parametrize(
    "value",
    [
        *MACAU_IDS,
        "１２３４５６７（８）",  # full-width
        "1234567（8）",  # full-width brackets, typed by an input method
        "１／２３４５６７／８",
        "1／234567／8",
    ],
)
def test_a_macau_identity_card_is_found(value: str) -> None:
    assert spans(f"澳门身份证{value}，请核对") == [(ID_NUMBER, value)]
    assert spans(f"BIR no. {value}.") == [(ID_NUMBER, value)]
    assert spans(f"({value})") == [(ID_NUMBER, value)]
    assert scan(f"证件{value}。", frozenset({PASSPORT})) == (
        f"证件{REDACTED[ID_NUMBER]}。",
        {ID_NUMBER: 1},
    )
    assert scan(f"证件{value}。", frozenset({ID_NUMBER})) == (f"证件{value}。", {})


@pytest.mark.parametrize(
    "text",
    [
        "12345678",  # no brackets, no slashes: a bare run of eight digits is anything
        "澳门身份证12345678，",
        "2234567(8)",  # neither 1, 5 nor 7 first
        "9/234567/8",
        "1234567(8",  # unbalanced
        "1234567 8)",
        "1234567(A)",
        "1234567(89)",
        "123456(7)",  # wrong length
        "12345678(9)",
        "1/23456/7",
        "1/2345678/9",
        "1/234567/89",
        "A1234567(8)",  # glued to letters or digits
        "SKU1/234567/8",
        "1/234567/8A",
        "2025/1/234567/8",  # inside a longer slashed number or a path
        "1/234567/8/9",
        "files/1/234567/8/x",
        "1/234567/8/",  # a path of its own, its last slash no digit follows
        "见附件1/234567/8/a.jpg",
        "1-234567-8",  # not how the card is written
        "1234567/8",
    ],
)
def test_what_is_no_macau_identity_card_is_left(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize(
    ("text", "card"),
    [
        ("1234567(8)BIR", "1234567(8)"),  # a closing bracket ends the card
        ("1234567(8)1", "1234567(8)"),
        ("１２３４５６７（８）Macau", "１２３４５６７（８）"),
        ("1234567(8)/", "1234567(8)"),
    ],
)
def test_a_macau_identity_cards_closing_bracket_ends_it(text: str, card: str) -> None:
    assert spans(text) == [(ID_NUMBER, card)]


def test_bracketed_macau_identity_cards_set_apart_by_slashes_are_each_found() -> None:
    # Only a slashed card is refused beside a slash: brackets say "card" wherever they stand.
    assert spans("父/子：1234567(8)/5123456(0)") == [
        (ID_NUMBER, "1234567(8)"),
        (ID_NUMBER, "5123456(0)"),
    ]
    assert spans("files/1234567(8)") == [(ID_NUMBER, "1234567(8)")]


@pytest.mark.parametrize("tail", ["1/234567/8/9", "1/234567/8/", "1/234567/8/a.jpg"])
def test_a_slashed_macau_card_glued_on_is_none_with_a_slash_after_it(tail: str) -> None:
    assert spans(f"{ID_X}{tail}") == [(ID_NUMBER, ID_X)]


def test_a_hong_kong_or_taiwanese_id_number_gives_no_birth_date() -> None:
    assert stated_birth_date("A123456789") is None
    assert stated_birth_date("A1234563") is None


# --- device.ip ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("来源IP 192.168.1.10，时间凌晨", "192.168.1.10"),
        ("IP是8.8.8.8。", "8.8.8.8"),
        ("地址255.255.255.255有误", "255.255.255.255"),
        ("服务10.0.0.1:8080不可用", "10.0.0.1"),
        ("IP:172.16.0.1", "172.16.0.1"),
        ("ＩＰ１９２．１６８．０．１", "１９２．１６８．０．１"),
        ("IPv6 2001:db8::8a2e:370:7334 blocked", "2001:db8::8a2e:370:7334"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a"),
        ("映射::ffff:192.168.0.1异常", "::ffff:192.168.0.1"),
        ("IPv6:2001:db8::1", "2001:db8::1"),
        ("IP:2001:db8::1.", "2001:db8::1"),
        ("回调 http://10.0.0.1/hook 失败", "10.0.0.1"),
        ("来自 /192.168.1.10 的请求", "192.168.1.10"),
        ("seen at /hosts/203.0.113.7", "203.0.113.7"),  # after a word and a slash too
        ("https://example.com/ip/203.0.113.9", "203.0.113.9"),
        (
            "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334 form",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        ),
        # Each part in three digits, as devices and their logs write it.
        ("源地址 192.168.001.010 已封禁", "192.168.001.010"),
        ("src=010.000.000.001,", "010.000.000.001"),
        ("来源IP 192。168。001。001", "192。168。001。001"),
    ],
)
def test_ip_found(text: str, value: str) -> None:
    assert spans(text) == [(IP, value)]


@pytest.mark.parametrize(
    "text",
    [
        "版本1.2.3.4.5",
        "v1.2.3.4",
        "Build 10.0.19045.3803",
        "地址256.1.1.1",
        "配置192.168.01.1",
        "配置192.168.001.1",  # a leading zero only where every part has three digits
        "地址256.001.001.001",
        "v010.000.000.001",
        "版本010.000.000.001.5",
        "网段10.0.0",
        "时间 12:30:45",
        "2025-01-01 12:00:00",
        "2025-03-15T09:30:00+08:00",
        "std::vector<int>",
        "比例1:2:3",
        "序列1:2:3:4:5:6:7:8:9",
        "序列1234:1:2:3:4:5:6:7:8",
    ],
)
def test_ip_rejected(text: str) -> None:
    assert spans(text) == []


# A letter that is no hex digit cannot continue an IPv6 address: it ends there, as an IPv4
# address ends before a letter. Hex digits up to the letter are all the address's.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("192.168.1.1x", "192.168.1.1"),  # what IPv6 is made consistent with
        ("fe80::1x", "fe80::1"),
        ("2001:db8::8a2e:370:7334z", "2001:db8::8a2e:370:7334"),
        ("fe80::1abcg", "fe80::1abc"),
        ("fe80::1abc", "fe80::1abc"),  # its hex digits run on: one address
        ("IPv6:fe80::1x", "fe80::1"),  # after a label too
        ("映射::ffff:192.168.0.1x异常", "::ffff:192.168.0.1"),
        ("blocked fe80::1.Then", "fe80::1"),  # a stop before the letter ends a sentence
        ("地址fe80::1x已封禁", "fe80::1"),
        ("地址：2001：db8：：1x，已封禁", "2001：db8：：1"),
        ("地址ｆｅ８０：：１ｘ", "ｆｅ８０：：１"),
        ("11:22:33:44:55:66:77:88x", "11:22:33:44:55:66:77:88"),  # eight groups: an address
    ],
)
def test_an_ipv6_address_ends_before_a_letter_that_is_no_hex_digit(text: str, value: str) -> None:
    assert spans(text) == [(IP, value)]


@pytest.mark.parametrize(
    "text",
    [
        "deadbeef::cafez",  # a group of eight hex digits: no address
        "fe80::1abcdefg",  # the hex digits run on past a group's four
        "fe80::1E12345678",  # one run of hex digits, no passport glued on
        "1:2:3:4:5:6:7:8:9x",
        "MAC 00:1a:2b:3c:4d:5ex",  # a MAC address with a letter glued on is none, nor IPv6
        "MAC 00-1a-2b-3c-4d-5ex",
        "::x",
        "fe80::x",  # no hex digit runs up to the letter
        "std::endl",
        "时间 12:30:45x",
    ],
)
def test_no_ipv6_address_is_cut_out_before_a_letter(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("connect to fe80::1: refused", [("fe80::1", IP)]),
        ("host 2001:db8::8a2e:370:7334: timeout", [("2001:db8::8a2e:370:7334", IP)]),
        ("at 2001:db8:0:0:0:0:0:1: ok", [("2001:db8:0:0:0:0:0:1", IP)]),
        ("ip=fe80::1:", [("fe80::1", IP)]),
        ("IP:2001:db8::1: down", [("2001:db8::1", IP)]),  # after a label too
        ("地址：fe80：：1：已封禁", [("fe80：：1", IP)]),
        ("fe80::abc:li@qq.com", [("fe80::abc", IP), ("li@qq.com", EMAIL)]),
        ("13800138000fe80::1: x", [("13800138000", PHONE), ("fe80::1", IP)]),  # glued on
    ],
)
def test_a_colon_after_an_ipv6_address_ends_it(text: str, found: list[tuple[str, str]]) -> None:
    # As a log line writes an address before its message: no address ends in a single colon.
    assert spans(text) == [(category, value) for value, category in found]


@pytest.mark.parametrize(
    "text",
    ["std::endl:", "fe80::x:", "时间 12:30:45:", "1:2:3:4:5:6:7:", "ns::abc:get()"],
)
def test_a_colon_after_what_is_no_ipv6_address_finds_none(text: str) -> None:
    assert spans(text) == []


# An input method in Chinese mode types the stops and colons of an address ideographic or
# full-width, and its digits ASCII.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("来源IP 192。168。1。1，时间凌晨", "192。168。1。1"),
        ("IP是192｡168｡1｡1。", "192｡168｡1｡1"),
        ("IP 192．168．1．1 被封禁", "192．168．1．1"),
        ("IP １９２。１６８。１。１", "１９２。１６８。１。１"),
        ("服务192。168。1。1：8080不可用", "192。168。1。1"),
        ("数量为3。192.168.1.1为网关", "192.168.1.1"),  # a sentence's end before an address
        ("IPv6 fe80：：1 谢谢", "fe80：：1"),
        ("地址：2001：db8：：8a2e：370：7334，已封禁", "2001：db8：：8a2e：370：7334"),
        ("IPv6 ２００１：db8：：1", "２００１：db8：：1"),
        ("映射：：ffff：192。168。0。1异常", "：：ffff：192。168。0。1"),
    ],
)
def test_ip_with_ideographic_or_full_width_stops_and_colons_found(text: str, value: str) -> None:
    assert spans(text) == [(IP, value)]


@pytest.mark.parametrize(
    "text",
    [
        "版本1。2。3。4。5",
        "v1。2。3。4",
        "版本1.2。3。4。5",
        "地址256。1。1。1",
        "配置192。168。01。1",
        "网段10。0。0",
        "合计3。5元。共12人",
        "时间12：30：45",
        "比分3：2，第二局2：1",
        "序列1：2：3：4：5：6：7：8：9",
        "注意：：请勿回复",
    ],
)
def test_ideographic_or_full_width_stops_and_colons_make_no_address_of_prose(text: str) -> None:
    assert spans(text) == []


# --- device.device_id: MAC addresses ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("MAC 00:1A:2B:3C:4D:5E", "00:1A:2B:3C:4D:5E"),
        ("网卡00:1a:2b:3c:4d:5e已离线", "00:1a:2b:3c:4d:5e"),
        ("hwaddr 00-1a-2b-3c-4d-5e up", "00-1a-2b-3c-4d-5e"),
        ("Cisco 001a.2b3c.4d5e 端口", "001a.2b3c.4d5e"),
        ("设备001A.2B3C.4D5E。", "001A.2B3C.4D5E"),
        ("mixed case 0a:1B:2c:3D:4e:5F", "0a:1B:2c:3D:4e:5F"),
        ("no digit ab:cd:ef:ab:cd:ef", "ab:cd:ef:ab:cd:ef"),
        ("no digit ab-cd-ef-ab-cd-ef", "ab-cd-ef-ab-cd-ef"),
        ("no digit abcd.efab.cdef", "abcd.efab.cdef"),
        # A label glued on with a colon or hyphen is no hex group of a longer address.
        ("MAC:00:1A:2B:3C:4D:5E", "00:1A:2B:3C:4D:5E"),
        ("src:00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e"),
        ("eth-00-1a-2b-3c-4d-5e", "00-1a-2b-3c-4d-5e"),
        ("device 00:1a:2b:3c:4d:5e.", "00:1a:2b:3c:4d:5e"),
        ("(hwaddr 00:1a:2b:3c:4d:5e)", "00:1a:2b:3c:4d:5e"),
        ("00:1a:2b:3c:4d:5e:eth0 link down", "00:1a:2b:3c:4d:5e"),
    ],
)
def test_mac_address_found(text: str, value: str) -> None:
    assert spans(text) == [(DEVICE_ID, value)]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("MAC ００：１Ａ：２Ｂ：３Ｃ：４Ｄ：５Ｅ", "００：１Ａ：２Ｂ：３Ｃ：４Ｄ：５Ｅ"),
        ("MAC ００－１ａ－２ｂ－３ｃ－４ｄ－５ｅ", "００－１ａ－２ｂ－３ｃ－４ｄ－５ｅ"),
        ("MAC ００１ａ．２ｂ３ｃ．４ｄ５ｅ", "００１ａ．２ｂ３ｃ．４ｄ５ｅ"),
        ("MAC ＡＢ－ＣＤ－ＥＦ－ＡＢ－ＣＤ－ＥＦ", "ＡＢ－ＣＤ－ＥＦ－ＡＢ－ＣＤ－ＥＦ"),
        ("MAC ａｂｃｄ．ｅｆａｂ．ｃｄｅｆ", "ａｂｃｄ．ｅｆａｂ．ｃｄｅｆ"),
        # ASCII hex digits with the colons a Chinese input method types.
        ("MAC 00：1A：2B：3C：4D：5E", "00：1A：2B：3C：4D：5E"),
        ("MAC 00:1A\u200b:2B:3C:4D:5E", "00:1A\u200b:2B:3C:4D:5E"),
        ("MAC \u200b00-1a-2b-3c-4d-5e\u200b", "00-1a-2b-3c-4d-5e"),
        ("MAC ab\u00ad-cd-ef-ab-cd-ef", "ab\u00ad-cd-ef-ab-cd-ef"),
        ("MAC 001a.2b3c\u2060.4d5e", "001a.2b3c\u2060.4d5e"),
    ],
)
def test_mac_address_spellings_found(text: str, value: str) -> None:
    assert spans(text) == [(DEVICE_ID, value)]


@pytest.mark.parametrize(
    "text",
    [
        "MAC 00:1A-2B:3C:4D:5E",  # mixed separators
        "MAC 00-1A-2B-3C-4D:5E",
        "MAC 00:1A:2B:3C:4D",  # five pairs
        "MAC 00-1A-2B-3C-4D",
        "MAC 00:1A:2B:3C:4D:5E:6F",  # seven
        "MAC 00-1A-2B-3C-4D-5E-6F",
        "MAC 001a.2b3c",
        "MAC 001a.2b3c.4d5e.6f70",
        "MAC 1234.001a.2b3c.4d5e",
        "MAC 0:1A:2B:3C:4D:5E",
        "MAC 000:1A:2B:3C:4D:5E",  # glued to more hex digits
        "MAC 00:1A:2B:3C:4D:5E0",
        "MAC 001a.2b3c.4d5e0",
        "hash 7f00:1a:2b:3c:4d:5e",
        "hash 00:1a:2b:3c:4d:5eab",
        "hash x00:1a:2b:3c:4d:5e",  # or to a letter
        "MAC 00:1a:2b:3c:4d:5e:cafe",  # a colon-separated continuation
        "MAC abc:00:1a:2b:3c:4d:5e",
        "MAC 1:00:1a:2b:3c:4d:5e",
        "MAC 00-1a-2b-3c-4d-5e-f",
        "时间 12:34:56",
        "2025-01-01 12:00:00",
        "日期2025-03-15T09:30:00+08:00",
        # Decimal digits only: a time stamp or a version as often as an address.
        "digits only 12-34-56-78-90-12",
        "backup_25-03-15-10-30-00.tar",
        "固件版本 2025.0315.0001",
        "only one device: 00:00:00:00:00:01",
        # No device: an unset address and the broadcast one, however written.
        "MAC 00:00:00:00:00:00",
        "MAC 00-00-00-00-00-00",
        "MAC 0000.0000.0000",
        "MAC ff:ff:ff:ff:ff:ff",
        "MAC FF-FF-FF-FF-FF-FF",
        "MAC ffff.FFFF.ffff",
    ],
)
def test_mac_address_rejected(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize(
    "address",
    [
        "fe80::1",
        "::00:1a:2b:3c:4d:5e",
        "00:1a:2b:3c:4d:5e::",
        "00:1a:2b:3c:4d:5e::1",
        "fe80::00:1a:2b:3c:4d:5e",
        "1:2:00:1a:2b:3c:4d:5e",
        "11:22:33:44:55:66:77:88",
        "2001:db8:aa:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:ff:1.2.3.4",
    ],
)
def test_an_ipv6_address_is_never_read_as_a_mac_address(address: str) -> None:
    text = f"地址 {address} 已封禁"
    assert spans(text) == [(IP, address)]
    assert scan(text, frozenset({IP})) == (text, {})


@pytest.mark.parametrize(
    "text",
    [
        "MAC 00:1A:2B:3C:4D:5E",
        "IP:00:1a:2b:3c:4d:5e",  # a label the IPv6 reading strips, before no address
        "MAC 00：1A：2B：3C：4D：5E",
    ],
)
def test_a_mac_address_is_never_read_as_ipv6(text: str) -> None:
    assert [category for category, _ in spans(text)] == [DEVICE_ID]
    assert scan(text, frozenset({DEVICE_ID})) == (text, {})


def test_a_mac_and_an_ipv6_address_in_one_run_are_each_found() -> None:
    text = "路由 fe80::1/00:1a:2b:3c:4d:5e 与 2001:db8::1,00-1a-2b-3c-4d-5e"
    assert spans(text) == [
        (IP, "fe80::1"),
        (DEVICE_ID, "00:1a:2b:3c:4d:5e"),
        (IP, "2001:db8::1"),
        (DEVICE_ID, "00-1a-2b-3c-4d-5e"),
    ]


def test_a_device_id_field_keeps_its_mac_addresses() -> None:
    text = "网卡00:1a:2b:3c:4d:5e从192.168.1.10掉线，另一块001a.2b3c.4d5f"
    assert scan(text, frozenset({DEVICE_ID})) == (
        "网卡00:1a:2b:3c:4d:5e从[REDACTED:device.ip]掉线，另一块001a.2b3c.4d5f",
        {IP: 1},
    )
    assert scan(text, frozenset({IP})) == (
        "网卡[REDACTED:device.device_id]从192.168.1.10掉线，另一块[REDACTED:device.device_id]",
        {DEVICE_ID: 2},
    )
    assert scan(text, frozenset({IP, DEVICE_ID}))[0] is text


# --- device.device_id: IMEI numbers ------------------------------------------------------------

IMEI = "490154203237518"  # the usual worked example of its check digit: reporting body 49
IMEI_35 = "352099001761481"  # as a label prints it: 35 209900 176148 1
# The reporting bodies GSMA lists, written as in the scanner.
IMEI_BODIES = "01 10 30 33 35 44 45 49 50 51 52 53 54 86 91 98 99".split()  # noqa: SIM905


def test_the_imeis_pass_luhn() -> None:
    assert with_luhn(IMEI[:-1]) == IMEI
    assert with_luhn(IMEI_35[:-1]) == IMEI_35


@pytest.mark.parametrize(
    "value",
    [
        IMEI,
        IMEI_35,
        grouped(IMEI, (2, 6, 6, 1), "-"),  # 49-015420-323751-8
        grouped(IMEI, (6, 2, 6, 1), "-"),  # 490154-20-323751-8
        grouped(IMEI_35, (2, 6, 6, 1)),  # 35 209900 176148 1
        grouped(IMEI, (6, 2, 6, 1)),
        grouped(IMEI, (2, 6, 6, 1), "\u2013"),
        grouped(IMEI, (2, 6, 6, 1), "\u3000"),
        grouped(IMEI, (6, 2, 6, 1), "\u2009"),
        fullwidth(IMEI),
        fullwidth(grouped(IMEI, (2, 6, 6, 1), "-")),
        IMEI.translate(ARABIC_INDIC),
        IMEI.translate(CHINESE_NUMERALS),
        grouped(IMEI, (2, 6, 6, 1), "-").translate(CHINESE_NUMERALS),
        f"{IMEI[:7]}\u200b{IMEI[7:]}",
        "49-015420\u2060-323751-8",
        f"{IMEI[:1]}\u00ad{IMEI[1:14]}\ufeff{IMEI[14:]}",
    ],
)
def test_an_imei_is_found_however_written(value: str) -> None:
    assert spans(f"设备IMEI：{value}，请核对") == [(DEVICE_ID, value)]
    assert spans(f"IMEI {value} crashed") == [(DEVICE_ID, value)]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f"IMEI{IMEI}", IMEI),  # glued after a letter
        (f"IMEI:{IMEI}", IMEI),
        (f"imei={IMEI}&os=android", IMEI),
        (f"dev_{grouped(IMEI, (2, 6, 6, 1), '-')}", grouped(IMEI, (2, 6, 6, 1), "-")),
        (f"{IMEI}号手机", IMEI),
        (f"(IMEI {IMEI})", IMEI),
        (f"崩溃日志 device={IMEI};", IMEI),
    ],
)
def test_an_imei_among_letters_and_punctuation_is_found(text: str, value: str) -> None:
    assert spans(text) == [(DEVICE_ID, value)]


@pytest.mark.parametrize("body", IMEI_BODIES)
def test_an_imei_of_every_listed_reporting_body_is_found(body: str) -> None:
    value = with_luhn(body + IMEI[2:14])
    assert spans(f"IMEI {value}") == [(DEVICE_ID, value)]


@pytest.mark.parametrize(
    "text",
    [
        f"IMEI {wrong_last(IMEI, '0123456789')}",  # the check digit fails
        f"IMEI {grouped(wrong_last(IMEI, '0123456789'), (2, 6, 6, 1), '-')}",
        f"IMEI {grouped(wrong_last(IMEI_35, '0123456789'), (2, 6, 6, 1))}",
        # Reporting bodies GSMA does not list, the check digit right.
        *(f"订单{with_luhn(body + IMEI[2:14])}" for body in ("02", "20", "36", "40", "55", "62")),
        *(f"编号{with_luhn(body + IMEI[2:14])}" for body in ("87", "90", "97", "00")),
        f"IMEI {IMEI[:14]}",  # 14 digits
        f"IMEI {IMEI}0",  # 16 digits, no card
        f"订单20240101{IMEI}",  # inside a longer run
        f"订单{IMEI}20240101",
        f"编号1-{grouped(IMEI, (2, 6, 6, 1), '-')}",  # the tail of a longer dashed number
        f"编号{grouped(IMEI, (2, 6, 6, 1), '-')}-1",
        f"编号{grouped(IMEI, (6, 2, 6, 1), '-')}-12",
        # Groupings no device prints.
        f"IMEI {grouped(IMEI, (4, 4, 4, 3))}",
        f"IMEI {grouped(IMEI, (2, 6, 7))}",
        f"IMEI {grouped(IMEI, (3, 6, 6))}",
        # IMEISV (16 digits, no check digit) and MEID (14 hex digits) are not read.
        f"IMEISV {IMEI[:14]}01",
        "MEID A0000049015420",
        "MEID a1000021e6f8b0",
    ],
)
def test_what_is_no_imei_is_left(text: str) -> None:
    assert spans(text) == []


def test_a_first_generation_id_number_that_reads_as_an_imei_stays_an_id_number() -> None:
    # 35 is Fujian's division code and a reporting body: both readings hold, the ID number's
    # goes first, as over a card.
    value = next(
        v for seq in range(1000) if (v := f"350102850304{seq:03d}") and with_luhn(v[:-1]) == v
    )
    assert id_ok(value)
    assert spans(f"证件{value}") == [(ID_NUMBER, value)]
    assert spans(f"证件 {value} 已核验") == [(ID_NUMBER, value)]
    assert scan(f"IMEI {value}", frozenset({DEVICE_ID})) == (
        f"IMEI [REDACTED:{ID_NUMBER}]",
        {ID_NUMBER: 1},
    )


def test_an_american_express_card_is_never_read_as_an_imei() -> None:
    # 34 and 37 are no reporting body: a 15-digit Luhn number under them stays a card.
    assert {"34", "37"}.isdisjoint(IMEI_BODIES)
    for value in (AMEX, AMEX_34, "371449635398431", grouped(AMEX, (4, 6, 5))):
        assert spans(f"卡号{value}") == [(BANK_ACCOUNT, value)]


def test_a_longer_number_never_gives_its_digits_to_an_imei_inside_it() -> None:
    # A card of 16 digits that starts with an IMEI, and an ID number of 18 whose first and
    # last fifteen digits each read as one (35 and 10 are reporting bodies).
    card = with_luhn(IMEI)
    assert card[0] == "4"
    id_number = next(
        v
        for seq in range(1000)
        if (v := with_id_check(f"35010219900307{seq:03d}"))[-1] != "X"
        and with_luhn(v[:14]) == v[:15]
        and with_luhn(v[3:17]) == v[3:]
    )
    card_19 = with_luhn("62" + IMEI + "0")
    for value, category in (
        (card, BANK_ACCOUNT),
        (grouped(card, (4, 4, 4, 4)), BANK_ACCOUNT),
        (card_19, BANK_ACCOUNT),
        (id_number, ID_NUMBER),
        (grouped(id_number, (6, 8, 4)), ID_NUMBER),
    ):
        assert spans(f"号码{value}，") == [(category, value)]
        assert spans(f"号码x{value}x") == [(category, value)]


def test_an_imei_beside_other_identifiers_is_found_with_them() -> None:
    text = f"用户13800138000的设备{IMEI}（MAC 00:1a:2b:3c:4d:5e）在192.168.1.10崩溃"
    assert spans(text) == [
        (PHONE, "13800138000"),
        (DEVICE_ID, IMEI),
        (DEVICE_ID, "00:1a:2b:3c:4d:5e"),
        (IP, "192.168.1.10"),
    ]
    # Glued to identifiers ending or starting with a letter.
    assert spans(f"{ID_X}{IMEI}E12345678") == [
        (ID_NUMBER, ID_X),
        (DEVICE_ID, IMEI),
        (PASSPORT, "E12345678"),
    ]


def test_an_old_id_numbers_shape_with_an_x_after_it_is_still_an_imei() -> None:
    # The ID number's reading leaves fifteen digits with an X right after them (README): where
    # they read as an IMEI, that reading stands, and they are not passed on.
    value = next(
        v for seq in range(1000) if (v := f"350102850304{seq:03d}") and with_luhn(v[:-1]) == v
    )
    assert spans(f"证件{value}X") == [(DEVICE_ID, value)]


def test_a_device_id_field_keeps_its_imeis() -> None:
    text = f"设备{IMEI}（{grouped(IMEI_35, (2, 6, 6, 1))}）归属用户13800138000"
    assert scan(text, frozenset({DEVICE_ID})) == (
        f"设备{IMEI}（{grouped(IMEI_35, (2, 6, 6, 1))}）归属用户[REDACTED:{PHONE}]",
        {PHONE: 1},
    )
    assert scan(text, frozenset({PHONE})) == (
        f"设备[REDACTED:{DEVICE_ID}]（[REDACTED:{DEVICE_ID}]）归属用户13800138000",
        {DEVICE_ID: 2},
    )
    assert scan(text, frozenset({PHONE, DEVICE_ID}))[0] is text


# --- location.precise: coordinate pairs ----------------------------------------------------------

SHANGHAI = "31.230416, 121.473701"


@pytest.mark.parametrize(
    "value",
    [
        SHANGHAI,
        "31.230416,121.473701",
        "31.230416 121.473701",
        "31.230416，121.473701",  # a full-width comma
        "31.230416,   121.473701",
        "31.23041600000001, 121.47370100000001",  # a double printed whole
        "-33.868820, 151.209296",  # southern hemisphere
        "40.712776,-74.005974",  # western
        "-22.906847 -43.172897",  # both
        "8.123456, 100.123456",
        "0.347596, 32.582520",  # a latitude below one, a longitude above
        "90.000000, -180.000000",
        "116.481488,39.990464",  # longitude first, as the Chinese map services write it
        fullwidth("31.230416,121.473701"),
        fullwidth("-33.868820, 151.209296"),
        "31.230416\u3000121.473701",  # any space
        "31.230416\u00a0121.473701",
        "31.230416\t121.473701",
        SHANGHAI.translate(ARABIC_INDIC),
    ],
)
def test_a_coordinate_pair_is_found_however_written(value: str) -> None:
    assert spans(f"定位：{value}，请核对") == [(LOCATION, value)]
    assert spans(f"GPS {value} fix") == [(LOCATION, value)]
    assert scan(f"签到{value}", NOTHING_ALLOWED) == (f"签到[REDACTED:{LOCATION}]", {LOCATION: 1})


@pytest.mark.parametrize(
    "text",
    [
        f"师傅已到达{SHANGHAI}附近，请保持电话畅通",
        f"位置({SHANGHAI})",
        f"[{SHANGHAI}]",
        f"https://maps.example.com/@{SHANGHAI.replace(' ', '')},15z",
        f"crash at {SHANGHAI}.",  # a sentence's stop after it
        f"坐标：{SHANGHAI}。",
        f"loc={SHANGHAI.replace(' ', '')}&t=1",
        f"latlng: {SHANGHAI}",
    ],
)
def test_a_coordinate_pair_among_text_and_punctuation_is_found(text: str) -> None:
    assert [category for category, _ in spans(text)] == [LOCATION]
    assert [value.replace(" ", "") for _, value in spans(text)] == [SHANGHAI.replace(" ", "")]


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("lat=39.9042&lng=116.4074", "lat={R}&lng={R}"),
        ("?latitude=39.904200&longitude=116.407400&z=15", "?latitude={R}&longitude={R}&z=15"),
        ("lng=116.4074&lat=39.9042", "lng={R}&lat={R}"),
        ('{"lat": 39.9042, "lon": 116.4074}', '{"lat": {R}, "lon": {R}}'),
        ('{"lat":"39.9042","lng":"116.4074"}', '{"lat":"{R}","lng":"{R}"}'),
        ('{\n  "lat": 39.9042,\n  "long": 116.4074\n}', '{\n  "lat": {R},\n  "long": {R}\n}'),
        ("LAT: -33.8688 LON: 151.2093", "LAT: {R} LON: {R}"),
        ("gpsLat=-33.8688, gpsLng=151.2093", "gpsLat={R}, gpsLng={R}"),
        ("gps_lat=39.9042;gps_lon=116.4074", "gps_lat={R};gps_lon={R}"),
        ("纬度39.9042 经度116.4074", "纬度{R} 经度{R}"),
        ("经度：116.4074，纬度：39.9042", "经度：{R}，纬度：{R}"),
        ("用户上报纬度=-22.9068、经度=-43.1729", "用户上报纬度={R}、经度={R}"),
        (
            fullwidth("lat=39.9042&lng=116.4074"),
            fullwidth("lat=") + "{R}" + fullwidth("&lng=") + "{R}",
        ),
    ],
)
def test_keyed_coordinates_are_redacted_keys_kept_and_counted_once(
    text: str, redacted: str
) -> None:
    expected = redacted.replace("{R}", f"[REDACTED:{LOCATION}]")
    assert scan(text, NOTHING_ALLOWED) == (expected, {LOCATION: 1})


def test_the_second_number_of_a_keyed_pair_is_found_but_not_counted() -> None:
    text = "lat=39.9042&lng=116.4074"
    assert find(text) == [Match(4, 11, LOCATION), Match(16, 24, LOCATION, counted=False)]
    assert find(SHANGHAI) == [Match(0, len(SHANGHAI), LOCATION)]


def test_each_pair_is_counted_once() -> None:
    text = "起点31.230416,121.473701，终点22.543096, 114.057865；lat=39.9042&lng=116.4074"
    redacted, counts = scan(text, NOTHING_ALLOWED)
    assert counts == {LOCATION: 3}
    assert redacted.count(f"[REDACTED:{LOCATION}]") == 4


@pytest.mark.parametrize(
    "text",
    [
        "坐标39.9042, 116.4074",  # four decimals without keys
        "31.23041, 121.4737",
        "91.123456, 121.473701",  # out of range
        "31.230416, 181.473701",
        "-90.000001, 100.123456",
        "120.123456, 100.123456",  # neither a latitude
        "概率0.123456, 0.654321",  # both below one
        "-0.123456, 0.999999",
        "1.234567,2.345678.9",  # glued on the outer side
        "1.234567,2.345678a",
        "a1.234567,2.345678",
        "x_31.230416, 121.473701",
        "v31.230416, 121.473701",  # versions
        "1.31.230416, 121.473701",
        "31.230416, 121.473701.5",
        "版本1.2.31.230416 121.473701",
        "2025.03.15",  # dates and times
        "2025.03.15 12.345678",
        "10:30:45.123456 12:30:45.654321",
        "10:30:45.123456, 12.345678",
        "1-31.230416, 121.473701",  # after a dash glued to a number
        "31.230416-121.473701",  # no separator
        "31.230416;121.473701",
        "31.230416\n121.473701",  # a line break ends a number
        "纬度39.9042",  # a lone coordinate
        "31.230416",
        "lat=39.9042",
        "lat=39.904&lng=116.407",  # keyed with three decimals
        "lat=116.4074&lng=39.9042",  # a latitude over 90
        "lat=0.0000&lng=0.0000",  # no fix
        "lat=39.9042&lat=116.4074",  # two of one kind
        "flat=39.9042&lng=116.4074",  # no key inside a word
        "latency=39.9042&lng=116.4074",
        "lat=39.9042 and then lng=116.4074",
        "31．230416，121．473701",  # wide stops among ASCII digits
        "31。230416，121。473701",
        "纬度：39。9042，经度：116。4074",
        "N31.230416, 121.473701",  # a hemisphere glued on one number only
        "31°13'49.5\"N 121°28'25.3\"",
        "geohash wtw3sjq6q",
    ],
)
def test_what_is_no_coordinate_pair_is_left(text: str) -> None:
    assert scan(text, NOTHING_ALLOWED) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An identifier the same characters read as keeps them; what is left is no pair.
        ("1.13800138000, 121.473701", [(PHONE, "13800138000")]),
        (f"31.230416, 121.{CARD_16}", [(BANK_ACCOUNT, CARD_16)]),
        (f"31.{ID_1990}, 121.473701", [(ID_NUMBER, ID_1990)]),
        (f"31.230416, 121.{IMEI}", [(DEVICE_ID, IMEI)]),
        (f"31.{OLD_ID}, 121.473701", [(ID_NUMBER, OLD_ID)]),
        # Beside identifiers, each is found.
        (
            f"192.168.1.1, {SHANGHAI}, 10.0.0.1",
            [(IP, "192.168.1.1"), (LOCATION, SHANGHAI), (IP, "10.0.0.1")],
        ),
        (f"13800138000 {SHANGHAI}", [(PHONE, "13800138000"), (LOCATION, SHANGHAI)]),
        (f"{SHANGHAI} 13800138000", [(LOCATION, SHANGHAI), (PHONE, "13800138000")]),
        (f"li@example.com,{SHANGHAI}", [(EMAIL, "li@example.com"), (LOCATION, SHANGHAI)]),
        (
            "13800138000，lat=39.9042&lng=116.4074",
            [(PHONE, "13800138000"), (LOCATION, "39.9042"), (LOCATION, "116.4074")],
        ),
        # Glued to a letter, a pair is none, and what is glued after it stays what it was.
        ("31.230416,121.473701E12345678", []),
        (
            "E12345678 31.230416,121.473701",
            [(PASSPORT, "E12345678"), (LOCATION, "31.230416,121.473701")],
        ),
        (f"{ID_X}31.230416,121.473701", [(ID_NUMBER, ID_X)]),
    ],
)
def test_no_identifier_gives_characters_to_a_coordinate_pair(
    text: str, expected: list[tuple[str, str]]
) -> None:
    assert spans(text) == expected


def test_a_location_field_keeps_its_coordinates() -> None:
    text = f"司机13800138000在{SHANGHAI}，lat=39.9042&lng=116.4074"
    assert scan(text, frozenset({LOCATION})) == (
        f"司机[REDACTED:{PHONE}]在{SHANGHAI}，lat=39.9042&lng=116.4074",
        {PHONE: 1},
    )
    assert scan(text, frozenset({PHONE})) == (
        f"司机13800138000在[REDACTED:{LOCATION}]，lat=[REDACTED:{LOCATION}]"
        f"&lng=[REDACTED:{LOCATION}]",
        {LOCATION: 2},
    )
    assert scan(text, CATEGORIES)[0] is text


def test_invisible_characters_inside_a_pair_hide_nothing() -> None:
    for text in (
        "31.230416,\u200b 121.473701",
        "31.2304\u00ad16, 121.473701",
        "31.230416,121\u200d.473701",
    ):
        assert scan(text, NOTHING_ALLOWED) == (f"[REDACTED:{LOCATION}]", {LOCATION: 1}), text


@pytest.mark.parametrize(
    "value",
    [
        "N31.230416, E121.473701",
        "N31.230416,E121.473701",
        "N31.230416 E121.473701",
        "31.230416N, 121.473701E",
        "31.230416°N, 121.473701°E",
        "31.230416° N, 121.473701° E",
        "31.230416 N, 121.473701 E",
        "31.230416 N 121.473701 E",
        "N31.230416°, E121.473701°",
        "E121.473701 N31.230416",  # longitude first: the letters say which is which
        "121.473701°E, 31.230416°N",
        "S33.8688, E151.2093",  # four decimals, as with keys
        "33.868820°S 151.209296°E",
        "N40.712776 W74.005974",
        "22.906847°S, 43.172897°W",
        "N0.347596, E32.582520",
        "N90.0000 W180.0000",
        "北纬31.230416° 东经121.473701°",
        "东经121.473701，北纬31.230416",
        "北纬：31.230416，东经：121.473701",
        "南纬33.8688 西经70.6693",
        fullwidth("N31.230416,E121.473701"),
        "北纬３１．２３０４１６°，东经１２１．４７３７０１°",
        "N31.230416, E121.473701".translate(ARABIC_INDIC),
        # Degrees, minutes and seconds, and degrees and decimal minutes, as devices print them.
        "31°13'49.5\"N 121°28'25.3\"E",
        "31°13′49.5″N 121°28′25.3″E",
        "31°13'49\"N, 121°28'25\"E",
        "31° 13' 49.5\" N, 121° 28' 25.3\" E",
        "33°52'7.8\"S 151°12'33.5\"E",
        "N31°13.825' E121°28.422'",
        "N31°13.825′, E121°28.422′",
        "33°52.13'S 151°12.56'E",
        "北纬31°13′49.5″ 东经121°28′25.3″",
    ],
)
def test_a_pair_with_hemispheres_is_found_with_them(value: str) -> None:
    assert spans(f"定位：{value}，请核对") == [(LOCATION, value)]
    assert spans(f"GPS {value} fix") == [(LOCATION, value)]
    assert scan(f"签到{value}", NOTHING_ALLOWED) == (f"签到[REDACTED:{LOCATION}]", {LOCATION: 1})


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # Set apart as keyed numbers may be, each number goes with its hemisphere.
        ("N31.2304; E121.4737", "{R}; {R}"),
        ("lat: 31.2304 N, lng: 121.4737 E", "lat: {R}, lng: {R}"),
        ("lat=N31.2304&lng=E121.4737", "lat={R}&lng={R}"),
        ("北纬31.2304 经度121.4737", "{R} 经度{R}"),
        # A letter set apart after a pair opens what follows.
        ("N31.230416 E121.473701 N/A", "{R} N/A"),
        ("31.230416, 121.473701 N/A", "{R} N/A"),
        ("lat=39.9042&lng=116.4074 S", "lat={R}&lng={R} S"),
        # A hemisphere on one number only is half a say: a pair without hemispheres is read as
        # it was.
        ("北纬31.230416，121.473701", "北纬{R}"),
    ],
)
def test_a_hemisphere_goes_with_its_number(text: str, redacted: str) -> None:
    expected = redacted.replace("{R}", f"[REDACTED:{LOCATION}]")
    assert scan(text, NOTHING_ALLOWED) == (expected, {LOCATION: 1})


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("\u221233.868820, 151.209296", "{R}"),
        ("40.712776,\u221274.005974", "{R}"),
        ("\u221222.906847 \u221243.172897", "{R}"),
        ("\uff0d33.868820, 151.209296", "{R}"),  # a full-width hyphen-minus
        ("坐标：\u221233.868820，151.209296", "坐标：{R}"),
        ("lat=\u221233.8688&lng=151.2093", "lat={R}&lng={R}"),
        ("纬度：\uff0d33.8688，经度：151.2093", "纬度：{R}，经度：{R}"),
    ],
)
def test_a_minus_sign_before_a_coordinate_is_redacted_with_it(text: str, redacted: str) -> None:
    expected = redacted.replace("{R}", f"[REDACTED:{LOCATION}]")
    assert scan(text, NOTHING_ALLOWED) == (expected, {LOCATION: 1})


def test_a_minus_sign_elsewhere_sets_apart_as_before() -> None:
    # Between digits it is a dash, as in a grouped number; before a number that is no
    # coordinate it stays out of the redaction.
    assert spans("138\u22120013\u22128000") == [(PHONE, "138\u22120013\u22128000")]
    assert spans("x \u221213800138000") == [(PHONE, "13800138000")]
    assert spans("\u22121.13800138000, 121.473701") == [(PHONE, "13800138000")]


@pytest.mark.parametrize(
    "text",
    [
        "N31.230416, 121.473701",  # one letter missing
        "31.230416N, 121.473701",
        "31.230416, 121.473701E",
        "31.230416°N, 121.473701°",
        "N31.2304 S31.2304",  # two latitudes
        "E121.4737 W121.4737",
        "北纬31.2304 南纬31.2304",
        "N31.2304 E181.2345",  # out of range for its letter
        "N91.2304 E121.4737",
        "E121.4737 N121.4737",
        "N31.230 E121.473",  # three decimals
        "N0.1234 E0.5678",  # both below one
        "EN31.230416, ONE121.473701",  # glued into words
        "EN31.230416 E121.473701",
        "N31.230416 ONE121.473701",
        "N31.230416N 121.473701E",  # two letters on one number
        "31.230416N121.473701E",  # no separator
        "S-33.8688 E151.2093",  # a sign as well as a hemisphere
        "N31.230416x E121.473701",
        "n31.230416, e121.473701",  # lower case: seconds, watts, exponents
        "31.2304 s, 121.4737 w",
        "N 31.230416, E 121.473701",  # the letter before a number is glued to it
        "31.2304°C 121.4737°C",
        "31°13'49.5\" 121°28'25.3\"",  # degrees and minutes without hemispheres
        "N31°63.825' E121°28.422'",  # minutes or seconds out of range
        "31°13'69.5\"N 121°28'25.3\"E",
        "31°60'00\"N 121°28'25.3\"E",
        "N31°13' E121°28'",  # whole minutes: kilometres
        "N31°13.8' E121°28.4'",
        "N31°13.825' 121°28.422'",
        "N91°13.825' E121°28.422'",
    ],
)
def test_what_is_no_pair_with_hemispheres_is_left(text: str) -> None:
    assert scan(text, NOTHING_ALLOWED) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An identifier the same characters read as keeps them; what is left is no pair.
        ("N31.13800138000, E121.473701", [(PHONE, "13800138000")]),
        (f"N31.230416, E121.{CARD_16}", [(BANK_ACCOUNT, CARD_16)]),
        (f"31.230416°N, 121.{IMEI}°E", [(DEVICE_ID, IMEI)]),
        (f"北纬31.{ID_1990}，东经121.473701", [(ID_NUMBER, ID_1990)]),
        (f"N31.{OLD_ID} E121.473701", [(ID_NUMBER, OLD_ID)]),
        # Glued to its hemisphere letter, an identifier takes it; the pair is none.
        (f"IMEI{IMEI}N31.230416 E121.473701", [(DEVICE_ID, IMEI)]),
        ("13800138000N31.230416 E121.473701", [(PHONE, "13800138000")]),
        (f"31°13'49.5\"N 121°28'25.3\"E{IMEI}", [(DEVICE_ID, IMEI)]),
        ("N31.230416@qq.com E121.473701", [(EMAIL, "N31.230416@qq.com")]),
        ("192.168.1.1N31.230416 E121.473701", [(IP, "192.168.1.1")]),
        # Beside identifiers, each is found.
        (
            "E12345678 N31.230416 E121.473701",
            [(PASSPORT, "E12345678"), (LOCATION, "N31.230416 E121.473701")],
        ),
        (
            "N31.230416 E121.473701 E12345678",
            [(LOCATION, "N31.230416 E121.473701"), (PASSPORT, "E12345678")],
        ),
        (
            f"31°13'49.5\"N 121°28'25.3\"E {IMEI}",
            [(LOCATION, "31°13'49.5\"N 121°28'25.3\"E"), (DEVICE_ID, IMEI)],
        ),
    ],
)
def test_no_identifier_gives_characters_to_a_pair_with_hemispheres(
    text: str, expected: list[tuple[str, str]]
) -> None:
    assert spans(text) == expected


def test_a_location_field_keeps_its_hemispheres() -> None:
    text = "司机13800138000在N31.230416 E121.473701，北纬31°13′49.5″ 东经121°28′25.3″"
    assert scan(text, frozenset({LOCATION})) == (
        "司机[REDACTED:contact.phone]在N31.230416 E121.473701，北纬31°13′49.5″ 东经121°28′25.3″",
        {PHONE: 1},
    )
    assert scan(text, frozenset({PHONE})) == (
        f"司机13800138000在[REDACTED:{LOCATION}]，[REDACTED:{LOCATION}]",
        {LOCATION: 2},
    )


def test_invisible_characters_inside_a_pair_with_hemispheres_hide_nothing() -> None:
    for text in (
        "N\u200b31.230416, E121.473701",
        "31.230416°N,\u200b 121.473701°E",
        "31°13'49.5\"\u200dN 121°28'25.3\"E",
    ):
        assert scan(text, NOTHING_ALLOWED) == (f"[REDACTED:{LOCATION}]", {LOCATION: 1}), text


# --- precedence, boundaries, redaction ---------------------------------------------------------


def test_id_wins_over_card_on_the_same_digits() -> None:
    for seq in range(100, 200):
        value = with_id_check(f"44030519850101{seq}")
        if value[-1] != "X" and with_luhn(value[:-1]) == value:
            break
    else:
        pytest.fail("no ID that also passes Luhn in range")
    assert spans(f"号码{value}") == [(ID_NUMBER, value)]
    # With ID numbers allowed, the same digits are not redacted as a card instead.
    assert scan(f"号码{value}", frozenset({ID_NUMBER}))[1] == {}


def test_email_wins_over_the_phone_inside_it() -> None:
    assert scan("邮箱13800138000@qq.com", frozenset({EMAIL})) == ("邮箱13800138000@qq.com", {})


def test_matches_are_frozen_sorted_and_within_text() -> None:
    text = f"手机13800138000，邮箱a@example.com，身份证{ID_X}，IP 10.0.0.1"
    found = find(text)
    assert found == [
        Match(2, 13, PHONE),
        Match(16, 29, EMAIL),
        Match(33, 51, ID_NUMBER),
        Match(55, 63, IP),
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        found[0].start = 0  # type: ignore[misc]


def test_scan_redacts_each_category_with_counts() -> None:
    text = (
        f"身份证{ID_1990}；手机138-0013-8000；卡号{CARD_16}；邮箱li@example.com；"
        f"信用代码{USCC}；护照E12345678；IP 192.168.0.1；备用13900139000；MAC 00:1A:2B:3C:4D:5E"
    )
    redacted, counts = scan(text, NOTHING_ALLOWED)
    assert redacted == (
        "身份证[REDACTED:identity.id_number]；手机[REDACTED:contact.phone]；"
        "卡号[REDACTED:financial.bank_account]；邮箱[REDACTED:contact.email]；"
        "信用代码[REDACTED:identity.credit_code]；护照[REDACTED:identity.passport]；"
        "IP [REDACTED:device.ip]；备用[REDACTED:contact.phone]；MAC [REDACTED:device.device_id]"
    )
    assert counts == {
        ID_NUMBER: 1,
        PHONE: 2,
        BANK_ACCOUNT: 1,
        EMAIL: 1,
        CREDIT_CODE: 1,
        PASSPORT: 1,
        IP: 1,
        DEVICE_ID: 1,
    }


def test_full_width_redaction_covers_the_original_characters() -> None:
    text = "请回电１３８ ００１３ ８０００谢谢"
    assert scan(text, NOTHING_ALLOWED) == ("请回电[REDACTED:contact.phone]谢谢", {PHONE: 1})


def test_allowed_category_is_left_in_place() -> None:
    text = "手机13800138000，邮箱li@example.com"
    assert scan(text, frozenset({PHONE})) == (
        "手机13800138000，邮箱[REDACTED:contact.email]",
        {EMAIL: 1},
    )
    assert scan(text, frozenset({EMAIL})) == (
        "手机[REDACTED:contact.phone]，邮箱li@example.com",
        {PHONE: 1},
    )
    assert scan(text, CATEGORIES)[0] is text


def test_unchanged_text_is_the_same_object() -> None:
    for text in ("没有数字的会议纪要", "会议时间 10:30，共12人", "订单号202501011234567890", ""):
        redacted, counts = scan(text, NOTHING_ALLOWED)
        assert redacted is text
        assert counts == {}


def test_categories_are_the_documented_names() -> None:
    assert {
        "identity.id_number",
        "identity.credit_code",
        "identity.passport",
        "contact.phone",
        "contact.email",
        "financial.bank_account",
        "device.ip",
        "device.device_id",
        "location.precise",
        "contact.address",
    } == CATEGORIES


def test_large_identifier_free_input_is_scanned_linearly() -> None:
    # Long runs of identifier characters must not trigger super-linear backtracking.
    for text in (
        "1." * 50_000,
        ":" * 100_000,
        "a1:" * 30_000,
        "a1-" * 30_000,  # MAC-shaped runs on and on: no six pairs end anywhere
        "ab12." * 20_000,
        "1234 " * 20_000,
        "9" * 100_000 + "@" * 10,
        "a @ " * 30_000,
        "a(at)" * 30_000,
        "a(dot)" * 30_000,
        "a [dot] " * 20_000,
        "&#64;" * 30_000,
        "a&#64;b(dot)" * 15_000,
        "@ " + "a . " * 30_000,
        "a . " * 30_000 + "@",
        "a . a@a . " * 15_000,
        "@ . " * 30_000,
        "(" * 100_000 + "at",
        "a#" * 50_000,
        "a#" + "1." * 50_000,
        "1。" * 50_000,
        "f：" * 50_000,
        "3782 822463 " * 10_000,
        "34" * 50_000,
        # Near-IMEIs: a wrong check digit, grouped ones that run on into more groups.
        "IMEI490154203237519" * 6_000,
        "49-015420-323751-" * 6_000,
        "490154-20-" * 10_000,
        "35 209900 176148 2 " * 5_000,
        # Glued passports up to something that ends none; and one that, written twice, is a
        # credit code: each place of the chain may go on two ways, read once all the same.
        "E12345678" * 11_000 + "x",
        "E63134113" * 11_000 + "x",
        # Near-coordinates: below one, four decimals, out of range, glued, keys of one kind.
        "0.123456, " * 20_000,
        "31.2304 " * 20_000,
        "91.123456 " * 20_000,
        "1.234567.8," * 20_000,
        "lat=39.9042&" * 15_000,
        "纬度39.9042，" * 15_000,
        "-" * 50_000 + "1.23456",
        # Near-coordinates with hemispheres: latitudes only, glued into words, out of range.
        "N31.2304 " * 20_000,
        "EN31.2304 " * 20_000,
        "31.2304°N " * 20_000,
        "北纬31.2304，" * 15_000,
        "31°13'69.5\"N " * 15_000,
        "1°" * 50_000,
        "\u22121.2345 " * 20_000,
    ):
        assert scan(text, NOTHING_ALLOWED) == (text, {})


@pytest.mark.parametrize("punctuation", ["！", "，", "＝"])
def test_a_long_full_width_run_without_a_letter_is_read_once(punctuation: str) -> None:
    # About the 1 MiB body cap of full-width punctuation, beside one full-width letter: each
    # character of the run once re-read the rest of it (minutes of the event loop).
    text = punctuation * 350_000 + "a１"
    assert scan(text, NOTHING_ALLOWED) == (text, {})


# --- identifiers glued to one another ----------------------------------------------------------

# Credit codes ending and starting with a letter: a number written right after the one, a
# passport right before the other, meet a letter.
USCC_LETTER = with_uscc_check("91110108MA01C2XY5")
USCC_Y = with_uscc_check("Y1110108MA01C2XY3")
CREDIT_91 = "91350100M000100Y43"
REDACTED = {category: f"[REDACTED:{category}]" for category in CATEGORIES}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((CARD_16, BANK_ACCOUNT), ("E12345678", PASSPORT)),
        ((CARD_19, BANK_ACCOUNT), ("E12345678", PASSPORT)),
        ((AMEX, BANK_ACCOUNT), ("EA1234567", PASSPORT)),
        (("13800138000", PHONE), ("G12345678", PASSPORT)),
        (("+8613800138000", PHONE), ("E12345678", PASSPORT)),
        (("010-62345678", PHONE), ("E12345678", PASSPORT)),
        ((ID_1990, ID_NUMBER), ("E12345678", PASSPORT)),
        ((ID_X, ID_NUMBER), ("E12345678", PASSPORT)),
        ((OLD_ID, ID_NUMBER), ("EA1234567", PASSPORT)),
        (("192.168.0.1", IP), ("E12345678", PASSPORT)),
        ((USCC, CREDIT_CODE), ("E12345678", PASSPORT)),
        (("E12345678", PASSPORT), ("G12345678", PASSPORT)),
        (("EA1234567", PASSPORT), ("E12345678", PASSPORT)),
        (("li@example.com", EMAIL), ("E12345678", PASSPORT)),
        (("li@example.com", EMAIL), ("EA1234567", PASSPORT)),
        (("li@example.com", EMAIL), (CREDIT_91, CREDIT_CODE)),
        (("li@example.com", EMAIL), (USCC, CREDIT_CODE)),
        ((ID_X, ID_NUMBER), (CREDIT_91, CREDIT_CODE)),
        (("E12345678", PASSPORT), (USCC_Y, CREDIT_CODE)),
        ((USCC_LETTER, CREDIT_CODE), (USCC_Y, CREDIT_CODE)),
        ((USCC_LETTER, CREDIT_CODE), ("13800138000", PHONE)),
        ((USCC_LETTER, CREDIT_CODE), (ID_1990, ID_NUMBER)),
        ((USCC_LETTER, CREDIT_CODE), (CARD_16, BANK_ACCOUNT)),
        ((USCC_LETTER, CREDIT_CODE), ("192.168.0.1", IP)),
        ((USCC_LETTER, CREDIT_CODE), (USCC, CREDIT_CODE)),
        (("13800138000", PHONE), ("fe80::1", IP)),
        ((CARD_16, BANK_ACCOUNT), ("fe80::1", IP)),
        (("E12345678", PASSPORT), ("fe80::1", IP)),
        ((ID_X, ID_NUMBER), ("2001:db8::1", IP)),  # the scan found only "db8::1" of it
        (("li@example.com", EMAIL), ("2001:db8::1", IP)),
        # After an IPv6 address, only what opens with a letter that is no hex digit.
        (("fe80::1", IP), ("H12345678", PASSPORT)),
        (("2001:db8::1", IP), ("G12345678", PASSPORT)),
        (("fe80::1abc", IP), ("M1234567890", PASSPORT)),
        (("li@example.com", EMAIL), ("wang@example.org", EMAIL)),
    ],
    ids=lambda pair: pair[1].rsplit(".", 1)[-1],
)
@pytest.mark.parametrize("wide", [False, True], ids=["ascii", "fullwidth"])
def test_an_identifier_glued_to_another_is_found_with_it(
    first: tuple[str, str], second: tuple[str, str], wide: bool
) -> None:
    # Where one identifier ends, another may start with no separator: the boundary a passport,
    # a credit code or an IPv6 address asks for is the end of the one before.
    (a, category_a), (b, category_b) = first, second
    if wide:
        a, b = fullwidth(a), fullwidth(b)
    text = f"资料：{a}{b}。"
    counts = Counter([category_a, category_b])
    assert scan(text, NOTHING_ALLOWED) == (
        f"资料：{REDACTED[category_a]}{REDACTED[category_b]}。",
        dict(counts),
    )
    if category_a != category_b:  # the first is the field's own: the second still goes
        assert scan(text, frozenset({category_a})) == (
            f"资料：{a}{REDACTED[category_b]}。",
            {category_b: 1},
        )
        assert scan(text, frozenset({category_b})) == (
            f"资料：{REDACTED[category_a]}{b}。",
            {category_a: 1},
        )


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("a3f90939E12345678", "a3f90939E12345678"),  # hex
        ("deadbeefE12345678", "deadbeefE12345678"),
        ("PO2023E12345678", "PO2023E12345678"),  # order number
        ("SKU-20250101E12345678", "SKU-20250101E12345678"),
        ("build 1.2.3.4.5E12345678", "build 1.2.3.4.5E12345678"),  # a version, not an address
        ("0x6222021234567890123E1234", "0x6222021234567890123E1234"),
        # 19 digits failing Luhn are no card: nothing ends where the "passport" starts.
        ("6222021234567890123E12345678", "6222021234567890123E12345678"),
        (f"0x{CARD_19}E1234", f"0x{REDACTED[BANK_ACCOUNT]}E1234"),  # as before: "E1234" is none
        ("E12345678abc", "E12345678abc"),
        ("E123456789", "E123456789"),
        (f"{CARD_16}E12345678X", f"{REDACTED[BANK_ACCOUNT]}E12345678X"),
        # A passport and a credit code of digits, or two credit codes, meet between two digits:
        # nothing says where one ends.
        ("G57590922598378825264413930", "G57590922598378825264413930"),
        (f"{CREDIT_91}{USCC}", f"{CREDIT_91}{USCC}"),
        ("2025-01-01T12:00:00ZE12345678", "2025-01-01T12:00:00ZE12345678"),
    ],
)
def test_a_passport_or_credit_code_glued_to_what_is_no_identifier_is_left(
    text: str, redacted: str
) -> None:
    assert scan(text, NOTHING_ALLOWED)[0] == redacted


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((ID_X, ID_NUMBER), ("1234567(8)", ID_NUMBER)),
        ((ID_X, ID_NUMBER), ("1/234567/8", ID_NUMBER)),
        ((USCC_LETTER, CREDIT_CODE), ("5123456(0)", ID_NUMBER)),
        (("li@example.com", EMAIL), ("1234567(8)", ID_NUMBER)),
        (("1234567(8)", ID_NUMBER), ("13800138000", PHONE)),  # a closing bracket ends the card
        (("1234567(8)", ID_NUMBER), ("H12345678", PASSPORT)),
        (("1/234567/8", ID_NUMBER), ("E12345678", PASSPORT)),
        (("13800138000", PHONE), ("H12345678", PASSPORT)),
        ((CARD_16, BANK_ACCOUNT), ("M1234567890", PASSPORT)),
        ((USCC, CREDIT_CODE), ("C12345678", PASSPORT)),
        (("li@example.com", EMAIL), ("CA1234567", PASSPORT)),
        (("H1234567890", PASSPORT), ("E12345678", PASSPORT)),
        (("CA1234567", PASSPORT), ("A123456(3)", ID_NUMBER)),
    ],
    ids=lambda pair: pair[0],
)
@pytest.mark.parametrize("wide", [False, True], ids=["ascii", "fullwidth"])
def test_a_macau_card_or_a_permit_glued_to_another_identifier_is_found(
    first: tuple[str, str], second: tuple[str, str], wide: bool
) -> None:
    (a, category_a), (b, category_b) = first, second
    if wide:
        a, b = fullwidth(a), fullwidth(b)
    counts = Counter([category_a, category_b])
    assert scan(f"资料：{a}{b}。", NOTHING_ALLOWED) == (
        f"资料：{REDACTED[category_a]}{REDACTED[category_b]}。",
        dict(counts),
    )


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("13800138000fe80::1x", [("13800138000", PHONE), ("fe80::1", IP)]),
        ("E12345678fe80::1x", [("E12345678", PASSPORT), ("fe80::1", IP)]),
        ("H12345678fe80::1abcg", [("H12345678", PASSPORT), ("fe80::1abc", IP)]),
        # The run's scan finds only the address's last groups ("db8::1"), and nothing glued
        # starts at the letter: the whole address glued on ends there all the same.
        ("E12345678fe80:db8::1x", [("E12345678", PASSPORT), ("fe80:db8::1", IP)]),
        ("li@example.com2001:db8::1x", [("li@example.com", EMAIL), ("2001:db8::1", IP)]),
        # A letter after the passport that follows it: the passport is none, the address stays.
        ("fe80::1H12345678x", [("fe80::1", IP)]),
    ],
)
def test_an_ipv6_address_glued_on_ends_before_a_letter_that_is_no_hex_digit(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("fe80::1xfe80::2", [("fe80::1", IP), ("fe80::2", IP)]),
        ("fe80::1Gfe80::2z2001:db8::1", [("fe80::1", IP), ("fe80::2", IP), ("2001:db8::1", IP)]),
        ("13800138000kfe80::1", [("13800138000", PHONE), ("fe80::1", IP)]),
        ("192.168.0.1ZFE80::5:0", [("192.168.0.1", IP), ("FE80::5:0", IP)]),
        (f"{ID_X}g2001:db8::1", [(ID_X, ID_NUMBER), ("2001:db8::1", IP)]),
        # A hex digit that would make the first group longer than four is no part of it.
        ("13800138000afe80::1", [("13800138000", PHONE), ("fe80::1", IP)]),
        (f"{CARD_16}d2001:db8::1", [(CARD_16, BANK_ACCOUNT), ("2001:db8::1", IP)]),
        ("A123456(3)kfe80::1", [("A123456(3)", ID_NUMBER), ("fe80::1", IP)]),
        # A decimal digit too, after an identifier ending in a letter.
        ("li@qq.com5fe80::1", [("li@qq.com", EMAIL), ("fe80::1", IP)]),
        (f"{ID_X}5fe80::1", [(ID_X, ID_NUMBER), ("fe80::1", IP)]),
        # Before four digits as well: no group holds five, the address starts after it.
        ("x@qq.com52001:db8::1", [("x@qq.com", EMAIL), ("2001:db8::1", IP)]),
        (f"{ID_X}52001:db8::1", [(ID_X, ID_NUMBER), ("2001:db8::1", IP)]),
        # Before fewer, it is the first group's.
        ("x@qq.com5201:db8::1", [("x@qq.com", EMAIL), ("5201:db8::1", IP)]),
        ("li@corp.cnb0fe80::abc", [("li@corp.cnb", EMAIL), ("fe80::abc", IP)]),
        (
            "li@corp.eu1fe80::1k@q1.cn",
            [("li@corp.eu", EMAIL), ("fe80::1", IP), ("k@q1.cn", EMAIL)],
        ),
    ],
)
def test_one_letter_between_an_identifier_and_an_ipv6_address_sets_them_apart(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


def test_a_passport_glued_to_a_letter_before_an_ipv6_address_is_left() -> None:
    # What the passport is glued to is a letter, no identifier: it is left as before.
    assert spans("资料：E12345678gfe80::1 ok") == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # README: "Hex digits run on: ... where they make a group of more than four ...,
        # nothing is found". "1fe80" is one group of five; the "1" would set the address apart
        # only between it and another identifier ("li@corp.eu1fe80::1k@q1.cn" finds all three),
        # and "u" is none. The address's local part takes what follows the colon.
        pytest.param(
            "u1fe80::1k@q1.cn", [("1k@q1.cn", EMAIL)], id="a group of five after no identifier"
        ),
        # No top-level domain has one letter: the passport "E12345678" would leave "li@corp.c",
        # no address, and be glued to what is no identifier (README: "A passport ... glued to
        # what is no identifier is left"). Read with the address "li@corp.cE", what is left is
        # "a bare `12345678`", no Macau card, and no Hong Kong card, which opens with a letter.
        pytest.param(
            "li@corp.cE12345678",
            [("li@corp.cE", EMAIL)],
            id="a passport whose letter a top-level domain keeps",
        ),
    ],
)
def test_glued_shapes_the_readme_leaves_stay_as_they_are(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            "13800138000A123456(3)k13800138000",
            [("13800138000", PHONE), ("A123456(3)", ID_NUMBER), ("13800138000", PHONE)],
        ),
        ("13800138000A123456(3)x", [("13800138000", PHONE), ("A123456(3)", ID_NUMBER)]),
        ("E12345678A123456(3)7", [("E12345678", PASSPORT), ("A123456(3)", ID_NUMBER)]),
        (
            "li@example.com1234567(8)g13800138000",
            [("li@example.com", EMAIL), ("1234567(8)", ID_NUMBER), ("13800138000", PHONE)],
        ),
        ("li@example.com5123456(0)7", [("li@example.com", EMAIL), ("5123456(0)", ID_NUMBER)]),
        (
            "1s@qq.cn7074724(7)e30114887@qq.cn",
            [("1s@qq.cn", EMAIL), ("7074724(7)", ID_NUMBER), ("e30114887@qq.cn", EMAIL)],
        ),
    ],
)
def test_a_card_glued_on_ends_at_its_closing_bracket_whatever_follows(
    text: str, found: list[tuple[str, str]]
) -> None:
    # As a card the run's scan finds alone does ("A123456(3)x"): the bracket says where it ends.
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


# Seven groups of four after the one's '::' and before the other's, and a letter between them.
LONGEST_BEFORE_PAIR = "::1111:2222:3333:4444:5555:6666:7777"
LONGEST_AFTER_PAIR = "bbbb:cccc:dddd:eeee:ffff:aaaa:bbbb::"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("fe80::1fe80::2", ["fe80::1", "fe80::2"]),
        # A hex digit between runs on into the first, as after any address.
        ("fe80::1afe80::2", ["fe80::1a", "fe80::2"]),
        ("2001:db8::1afe80::2x", ["2001:db8::1a", "fe80::2"]),
        ("fe80::1a2001:db8::5", ["fe80::1a", "2001:db8::5"]),
        ("fe80::12:3fe80::2", ["fe80::12:3", "fe80::2"]),
        ("fe80::1fe80::2fe80::3", ["fe80::1", "fe80::2", "fe80::3"]),
        # Where the hex digits make two groups of four, one between them is the only one left.
        ("fe80::abcdafe80::2", ["fe80::abcd", "fe80::2"]),
        # A decimal one too, with a letter on either side of it.
        ("fe80::100a0fe80::2", ["fe80::100a", "fe80::2"]),
        ("2001:db8::100a0Fe80::0", ["2001:db8::100a", "Fe80::0"]),
        # A cut between two digits would leave nothing to say where the second starts.
        ("0:D8D5::279a0:D8D5::279", ["0:D8D5::279", "a0:D8D5::279"]),
        # No group between the two '::' longer than four, but a digit before them.
        ("FE80::CAAE:E::6AE:E::6", ["FE80::C", "AAE:E::6", "AE:E::6"]),
        # A group longer than four between them, though no digit is before the second '::'.
        ("::cafedead::beef", ["::cafe", "dead::beef"]),
        # Zeros are digits too.
        ("fe0::ad0::1", ["fe0::a", "d0::1"]),
        # Long ones: the most groups on either side of the '::' where they meet.
        (
            "fe80::1111:2222:3333:4444:5555abbbb:cccc:dddd:eeee:ffff::1",
            ["fe80::1111:2222:3333:4444:5555", "bbbb:cccc:dddd:eeee:ffff::1"],
        ),
        (
            "::1111:2222:3333:4444:5555:6666:777abbbb:cccc:dddd:eeee:ffff:aaaa::1",
            ["::1111:2222:3333:4444:5555:6666:777a", "bbbb:cccc:dddd:eeee:ffff:aaaa::1"],
        ),
        (
            f"{LONGEST_BEFORE_PAIR}a{LONGEST_AFTER_PAIR}",
            [LONGEST_BEFORE_PAIR, LONGEST_AFTER_PAIR],
        ),
    ],
)
def test_two_ipv6_addresses_glued_are_each_found(text: str, found: list[str]) -> None:
    # No address holds two '::': a token holding two is two addresses.
    assert spans(f"资料：{text}。") == [(IP, value) for value in found]


@pytest.mark.parametrize("text", ["Add::Face::Bad", "abc::def::add", "fe80::1::2", "1::2::3"])
def test_a_token_of_two_double_colons_is_no_two_addresses_without_a_group_to_split(
    text: str,
) -> None:
    assert spans(f"代码 {text} 。") == []


@pytest.mark.parametrize("text", ["fe80::abc72001:db8::1", "fe80::12340fe80::2"])
def test_two_ipv6_addresses_with_a_digit_on_either_side_of_where_they_meet_are_left(
    text: str,
) -> None:
    # "fe80::abc7" and "2001:db8::1", or "fe80::abc", a stray "7" and the second: between two
    # digits nothing says where the first ends, and a digit skipped reads as no letter does,
    # unless a letter stands on either side of it ("fe80::100a0fe80::2").
    assert spans(f"资料：{text}。") == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("fe80::1.fe80::2", [("fe80::1", IP), ("fe80::2", IP)]),
        ("fe80::1.fe80::2.fe80::3.", [("fe80::1", IP), ("fe80::2", IP), ("fe80::3", IP)]),
        ("fe80::abc.Fe80::2", [("fe80::abc", IP), ("Fe80::2", IP)]),
        # A digit on one side only: the stop is no dotted quad's.
        ("fe80::abc.2001:db8::1", [("fe80::abc", IP), ("2001:db8::1", IP)]),
        # The stops of a dotted quad are the address's: the one after it is not.
        ("::ffff:192.168.0.1.fe80::2", [("::ffff:192.168.0.1", IP), ("fe80::2", IP)]),
        ("fe80::1.E12345678", [("fe80::1", IP), ("E12345678", PASSPORT)]),
        # Glued on after another identifier, the address ends at the stop too.
        ("13800138000fe80::1.fe80::2", [("13800138000", PHONE), ("fe80::1", IP), ("fe80::2", IP)]),
        (
            "13800138000fe80::abc.2001:db8::1",
            [("13800138000", PHONE), ("fe80::abc", IP), ("2001:db8::1", IP)],
        ),
        (
            "li@example.com2001:db8::1.fe80::2",
            [("li@example.com", EMAIL), ("2001:db8::1", IP), ("fe80::2", IP)],
        ),
    ],
)
def test_a_stop_after_an_ipv6_address_ends_it(text: str, found: list[tuple[str, str]]) -> None:
    # A stop is an address's only in the dotted quad it may end with; any other ends it, as the
    # stop ending a sentence does ("fe80::1.Then"), and another address may follow it.
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


def test_a_stop_between_two_digits_is_left_to_a_dotted_quad() -> None:
    # "1.2001" could be a dotted quad's: between two digits a stop does not end an address, and
    # the token, no address as a whole, is left as before.
    assert spans("资料：fe80::1.2001:db8::1。") == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("fe80::63kedjn@qq.net", [("fe80::63", IP), ("kedjn@qq.net", EMAIL)]),
        (
            "684:37e:10:b:6:6:a5:234j@163.org",
            [("684:37e:10:b:6:6:a5:234", IP), ("j@163.org", EMAIL)],
        ),
        ("5/395279/6se6@qq.com.cn", [("5/395279/6", ID_NUMBER), ("se6@qq.com.cn", EMAIL)]),
        # A digit: where the local part starts, the card ends all the same.
        ("1/234567/86li@example.com", [("1/234567/8", ID_NUMBER), ("6li@example.com", EMAIL)]),
        # What the run's scan found before a local part stands against a shorter one glued on.
        (
            "li@example.comG215453316li@example.com",
            [("li@example.com", EMAIL), ("G215453316", ID_NUMBER), ("li@example.com", EMAIL)],
        ),
        (
            f"{USCC_LETTER}1/320464/0yhl@qq.com",
            [(USCC_LETTER, CREDIT_CODE), ("1/320464/0", ID_NUMBER), ("yhl@qq.com", EMAIL)],
        ),
        # Nothing of the local part is left: the identifier is the address's.
        ("fe80::1@qq.com", [("fe80::1@qq.com", EMAIL)]),
        ("5/395279/6@qq.com", [("5/395279/6@qq.com", EMAIL)]),
        # As before: the local part takes the whole identifier in.
        ("13800138000li@example.com", [("13800138000li@example.com", EMAIL)]),
    ],
)
def test_an_identifier_whose_tail_a_local_part_takes_is_redacted_whole(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("7/821790/6B:74::D1", [("7/821790/6", ID_NUMBER), ("B:74::D1", IP)]),
        (
            "1/089590/0B0:C32:3:0:11:513B:D6:C11",
            [("1/089590/0", ID_NUMBER), ("B0:C32:3:0:11:513B:D6:C11", IP)],
        ),
        # An IMEI keeps its check digit as the cards do: before, the address took it and the
        # IMEI, no longer whole, was forwarded.
        (
            "01-000000-000000-8a:0:0:0:0:0:0:0",
            [("01-000000-000000-8", DEVICE_ID), ("a:0:0:0:0:0:0:0", IP)],
        ),
        ("490154203237518fe80::1", [("490154203237518", DEVICE_ID), ("fe80::1", IP)]),
    ],
)
def test_a_card_before_an_ipv6_address_that_reads_its_last_digit_as_a_group_is_found(
    text: str, found: list[tuple[str, str]]
) -> None:
    # The run's scan reads "6B:74::D1" as the address; glued one after the other, the card and
    # the address from its letter on hold those characters and the card's too.
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # An IMEI took the "86" of the address "0::86" glued to "::e": the address keeps the
        # rest, as one the run's scan found keeps what an outranking identifier leaves it.
        ("::e0::86-409492-250008-5", [("::e", IP), ("0::", IP), ("86-409492-250008-5", DEVICE_ID)]),
        (
            "5/395279/6Cbaa::35-902731-472585-4",
            [("5/395279/6", ID_NUMBER), ("Cbaa::", IP), ("35-902731-472585-4", DEVICE_ID)],
        ),
        # An IMEI took the first digit of the Macau card glued to it: the card keeps the rest.
        (
            "86-409492-250008-5/395279/6a::",
            [("86-409492-250008-5", DEVICE_ID), ("/395279/6", ID_NUMBER), ("a::", IP)],
        ),
        # The run's passport holds all of the Hong Kong card read glued inside it.
        ("::b8::CZ6241469", [("::b", IP), ("8::", IP), ("CZ6241469", PASSPORT)]),
    ],
)
def test_what_a_runs_own_identifier_leaves_of_one_glued_over_it_is_redacted(
    text: str, found: list[tuple[str, str]]
) -> None:
    # Where one glued on and one the run's scan found overlap, and none glued holds them all,
    # the run's stands, and the characters it leaves of the glued one go with that one.
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


def test_glued_identifiers_that_hold_more_than_the_runs_own_are_redacted() -> None:
    # The run's scan reads a credit code, leaving "::"; read from its start, the two Hong Kong
    # cards and the address after them hold every character.
    assert spans("资料：G6460916P916509A30::。") == [
        (ID_NUMBER, "G6460916"),
        (ID_NUMBER, "P916509A"),
        (IP, "30::"),
    ]


def test_glued_identifiers_alone_overlapping_are_read_from_the_left() -> None:
    # "::C" is no address once the permit took its "C"; read from there, "Q1528692D884897618"
    # is a credit code too, but read from the left the permit and the Taiwanese ID number hold
    # every character.
    assert spans("资料：::CQ1528692D884897618。") == [
        (PASSPORT, "CQ1528692"),
        (ID_NUMBER, "D884897618"),
    ]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        # The address's last group reads the Macau card's first digit; what follows the card's
        # "/" is no prefix length (one "/" and at most 128), but the card's six digits.
        (
            "fe80::abc:5/395279/6fe80::1",
            [("fe80::abc:", IP), ("5/395279/6", ID_NUMBER), ("fe80::1", IP)],
        ),
        ("fe80::abc:5/395279/6", [("fe80::abc:", IP), ("5/395279/6", ID_NUMBER)]),
        ("fe80::abc:138 0013 8000", [("fe80::abc:", IP), ("138 0013 8000", PHONE)]),
        ("fe80::abc:010-62345678", [("fe80::abc:", IP), ("010-62345678", PHONE)]),
        # What the address keeps is its, even where it makes no address by itself.
        ("1:2:3:4:5:6:7:5/395279/6", [("1:2:3:4:5:6:7:", IP), ("5/395279/6", ID_NUMBER)]),
        # Its part after one that holds its start.
        ("1/234567/8::1", [("1/234567/8", ID_NUMBER), ("::1", IP)]),
        # Glued on, either of them.
        (
            "li@example.com2001:db8::1:5/395279/6",
            [("li@example.com", EMAIL), ("2001:db8::1:", IP), ("5/395279/6", ID_NUMBER)],
        ),
        (
            "x@qq.com1/234567/8::1",
            [("x@qq.com", EMAIL), ("1/234567/8", ID_NUMBER), ("::1", IP)],
        ),
        # A "::" alone is no part of an address worth a redaction.
        ("::5/395279/6", [("5/395279/6", ID_NUMBER)]),
        ("x@qq.com1/234567/8::", [("x@qq.com", EMAIL), ("1/234567/8", ID_NUMBER)]),
    ],
)
def test_an_ipv6_address_gives_up_what_an_identifier_that_outranks_it_holds(
    text: str, found: list[tuple[str, str]]
) -> None:
    # Characters two identifiers read are the one's that goes first (an ID number, a phone
    # before an address); the address keeps the rest of its own, no longer dropped whole.
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


def test_a_prefix_length_after_an_ipv6_address_is_no_identifier() -> None:
    assert spans("资料：fe80::abc:5/64。") == [(IP, "fe80::abc:5")]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("li@corp.cnbA:5183::C", [("li@corp.cn", EMAIL), ("bA:5183::C", IP)]),
        ("13@example.netca:d330::e4", [("13@example.net", EMAIL), ("ca:d330::e4", IP)]),
        (
            "li@163.comgFD:D0A1:B4:1D:86DA:6AD9:8A:64K13800138000",
            [("li@163.comg", EMAIL), ("FD:D0A1:B4:1D:86DA:6AD9:8A:64", IP), ("13800138000", PHONE)],
        ),
        ("li@example.com:8080", [("li@example.com", EMAIL)]),  # a port: no address glued on
        # From the first hex letter that starts one, up to four back, two left to the domain.
        ("li@corp.cnbeef::1", [("li@corp.cn", EMAIL), ("beef::1", IP)]),
        ("li@corp.def::1", [("li@corp.de", EMAIL), ("f::1", IP)]),
        # Another glued on after it is found from where it ends.
        ("li@corp.dea::1gfe80::2", [("li@corp.de", EMAIL), ("a::1", IP), ("fe80::2", IP)]),
        # Before the group's digits too.
        ("li@example.comfe80::1", [("li@example.com", EMAIL), ("fe80::1", IP)]),
        (
            "li@example.comfe80::1gfe80::2",
            [("li@example.com", EMAIL), ("fe80::1", IP), ("fe80::2", IP)],
        ),
        ("li@corp.cnab12::1", [("li@corp.cn", EMAIL), ("ab12::1", IP)]),
        ("li@corp.cnf123::1", [("li@corp.cn", EMAIL), ("f123::1", IP)]),
        # "b:1:2:3:4:5:6:7:8" is no address: the letter is the domain's, left out of the one after.
        ("li@corp.cnb:1:2:3:4:5:6:7:8", [("li@corp.cnb", EMAIL), ("1:2:3:4:5:6:7:8", IP)]),
    ],
)
def test_an_ipv6_address_whose_first_letters_a_top_level_domain_took_is_found(
    text: str, found: list[tuple[str, str]]
) -> None:
    # The domain's letters run on into the address's first group: its colon was left between.
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


CREDIT_OF_DIGITS = "52440300248539804Y"  # its first seventeen digits pass Luhn


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            "li@example.cn" + CREDIT_OF_DIGITS,
            [("li@example.cn", EMAIL), (CREDIT_OF_DIGITS, CREDIT_CODE)],
        ),
        (
            f"li@example.cn{CREDIT_OF_DIGITS}{CARD_16}",
            [("li@example.cn", EMAIL), (CREDIT_OF_DIGITS, CREDIT_CODE), (CARD_16, BANK_ACCOUNT)],
        ),
        (f"{ID_X}{CREDIT_OF_DIGITS}", [(ID_X, ID_NUMBER), (CREDIT_OF_DIGITS, CREDIT_CODE)]),
    ],
)
def test_a_credit_code_glued_on_wins_over_the_card_its_digits_start_with(
    text: str, found: list[tuple[str, str]]
) -> None:
    assert with_luhn(CREDIT_OF_DIGITS[:16]) == CREDIT_OF_DIGITS[:17]
    assert with_uscc_check(CREDIT_OF_DIGITS[:17]) == CREDIT_OF_DIGITS
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f"{CARD_16}X951387337", [(CARD_16, BANK_ACCOUNT), ("X951387337", ID_NUMBER)]),
        (f"{CARD_19}X447043(0)", [(CARD_19, BANK_ACCOUNT), ("X447043(0)", ID_NUMBER)]),
        (f"{AMEX}X352314(A)", [(AMEX, BANK_ACCOUNT), ("X352314(A)", ID_NUMBER)]),
    ],
)
def test_a_card_before_an_identifier_starting_with_x_is_found(
    text: str, found: list[tuple[str, str]]
) -> None:
    # Only after seventeen digits is an X an ID number's check character.
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (
            f"{CARD_16}g0:0:000:000:0000:0000:0000:0000g0:000:000:000:0000:0000:0000:0000",
            [
                (CARD_16, BANK_ACCOUNT),
                ("0:0:000:000:0000:0000:0000:0000", IP),
                ("0:000:000:000:0000:0000:0000:0000", IP),
            ],
        ),
        # Two long ones glued one right after the other, read from where they are glued on.
        (
            "13800138000g::1111:2222:3333:4444:5555:6666:777abbbb:cccc:dddd:eeee:ffff:aaaa::1",
            [
                ("13800138000", PHONE),
                ("::1111:2222:3333:4444:5555:6666:777a", IP),
                ("bbbb:cccc:dddd:eeee:ffff:aaaa::1", IP),
            ],
        ),
        (
            f"13800138000g{LONGEST_BEFORE_PAIR}a{LONGEST_AFTER_PAIR}",
            [("13800138000", PHONE), (LONGEST_BEFORE_PAIR, IP), (LONGEST_AFTER_PAIR, IP)],
        ),
    ],
)
def test_an_ipv6_address_glued_on_is_found_whatever_length_of_token_follows(
    text: str, found: list[tuple[str, str]]
) -> None:
    # Read from where it is glued on, the token runs on past the longest address there is.
    assert spans(f"资料：{text}。") == [(category, value) for value, category in found]


def test_a_label_before_an_ipv6_address_glued_on_is_left() -> None:
    # Glued after a phone number, "IPv6:" is still the address's label, left as it is where
    # nothing comes before it: an address read as glued on never takes a label in.
    assert spans("资料：13800138000IPv6:fe80::1。") == [(PHONE, "13800138000"), (IP, "fe80::1")]


def test_a_credit_code_that_reads_as_two_permits_stays_a_credit_code() -> None:
    # Its check holds, and where the two overlap a credit code goes before a passport.
    assert with_uscc_check("H12345678H1234567") == "H12345678H12345678"
    assert spans("代码H12345678H12345678。") == [(CREDIT_CODE, "H12345678H12345678")]


GLUED = [
    (ID_X, ID_NUMBER),
    (ID_1990, ID_NUMBER),
    (OLD_ID, ID_NUMBER),
    ("13800138000", PHONE),
    (CARD_16, BANK_ACCOUNT),
    (AMEX, BANK_ACCOUNT),
    ("E12345678", PASSPORT),
    ("G12345678", PASSPORT),
    ("EA1234567", PASSPORT),
    ("H87654321", PASSPORT),  # "H12345678" twice is a valid credit code: see below
    ("M1234567890", PASSPORT),
    ("C12345678", PASSPORT),
    ("CA1234567", PASSPORT),
    ("1234567(8)", ID_NUMBER),
    ("1/234567/8", ID_NUMBER),
    (USCC, CREDIT_CODE),
    (USCC_LETTER, CREDIT_CODE),
    (USCC_Y, CREDIT_CODE),
    (CREDIT_91, CREDIT_CODE),
    ("192.168.0.1", IP),
    ("fe80::1", IP),
    ("li@example.com", EMAIL),
    (IMEI, DEVICE_ID),
    (grouped(IMEI, (2, 6, 6, 1), "-"), DEVICE_ID),
    (grouped(IMEI_35, (2, 6, 6, 1)), DEVICE_ID),
    (grouped(IMEI, (6, 2, 6, 1), "-"), DEVICE_ID),
    ("北京市朝阳区建国路88号", ADDRESS),
    ("碧桂园3栋2单元502室", ADDRESS),
]


def may_follow(before: str, after: str) -> bool:
    """Whether ``after`` written right after ``before`` is two identifiers to a reader: a letter
    on one side of where they meet (between two digits nothing says where a number ends), no
    local part of an address (it takes any letters and digits before its '@'), after an IPv6
    address only a letter that is no hex digit (its hex digits run on), and no postal address
    right after another (its estate's name is the building's name of the one before)."""
    if after.endswith(".com"):
        return before.endswith(".com")
    if before[-1] in "号室" and after[-1] in "号室":
        return False
    if ":" in before:
        return after[0].isalpha() and after[0] not in "ABCDEFabcdef"
    return before[-1].isalpha() or after[0].isalpha()


@st.composite
def glued_identifiers(draw: st.DrawFn) -> list[tuple[str, str]]:
    chosen = [draw(st.sampled_from(GLUED))]
    for _ in range(draw(st.integers(1, 3))):
        options = [item for item in GLUED if may_follow(chosen[-1][0], item[0])]
        if not options:
            break
        chosen.append(draw(st.sampled_from(options)))
    return chosen


@given(
    glued_identifiers(),
    st.sets(st.sampled_from(sorted(CATEGORIES))),
    st.booleans(),
    st.sampled_from(["", "资料：", " ", "，"]),
)
@settings(max_examples=300, deadline=None)
def test_identifiers_glued_one_after_another_are_each_redacted(
    identifiers: list[tuple[str, str]], allowed: set[str], wide: bool, around: str
) -> None:
    def written(value: str) -> str:
        return fullwidth(value) if wide else value

    text = around + "".join(written(value) for value, _ in identifiers) + around
    expected = "".join(
        written(value) if category in allowed else REDACTED[category]
        for value, category in identifiers
    )
    counts = Counter(category for _, category in identifiers if category not in allowed)
    assert scan(text, frozenset(allowed)) == (f"{around}{expected}{around}", dict(counts)), text


# Every kind of identifier the scanner finds alone, in the shapes it finds, each drawn with its
# check character computed here.
DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
HEX = "0123456789abcdef"
digits = functools.partial(st.text, DIGITS)


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    born = draw(st.dates(dt.date(1950, 1, 1), dt.date(2015, 12, 31)))
    body = draw(st.sampled_from(["110105", "440305", "350102", "310104"])) + f"{born:%Y%m%d}"
    value = with_id_check(body + draw(digits(min_size=3, max_size=3)))
    if draw(st.booleans()) and born.year < 2000:  # the first generation's 15 digits
        return value[:6] + value[8:17]
    return value


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from([("622202", 16), ("955880", 19), ("4", 16), ("37", 15)]))
    size = length - len(prefix) - 1
    return with_luhn(prefix + draw(digits(min_size=size, max_size=size)))


@st.composite
def credit_codes(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(["91", "92", "93", "12", "52", "Y1"]))
    tail = draw(st.text(USCC_CHARSET, min_size=9, max_size=9))
    return with_uscc_check(head + draw(st.sampled_from(["110108", "350100", "440300"])) + tail)


@st.composite
def hong_kong_cards(draw: st.DrawFn) -> str:
    prefix = draw(st.text(LETTERS, min_size=1, max_size=2))
    card = hk_id(prefix, draw(digits(min_size=6, max_size=6)))
    form = draw(st.sampled_from(["{}", "({})", " ({})"]))
    return card[:-1] + form.format(card[-1])


@st.composite
def taiwanese_ids(draw: st.DrawFn) -> str:
    body = (
        draw(st.sampled_from(LETTERS))
        + draw(st.sampled_from("1289"))
        + draw(digits(min_size=7, max_size=7))
    )
    return next(body + d for d in DIGITS if tw_ok(body + d))


@st.composite
def ipv6_addresses(draw: st.DrawFn) -> str:
    group = st.text(HEX, min_size=1, max_size=4).filter(lambda g: g.isdigit() or g[0] != "0")
    groups = draw(st.lists(group, min_size=8, max_size=8))
    form = draw(st.integers(0, 3))
    if form == 0:
        address = ":".join(groups)
    elif form == 1:
        address = "fe80::" + ":".join(groups[: draw(st.integers(1, 4))])
    elif form == 2:
        address = "2001:db8::" + groups[0]
    else:
        address = ":".join(groups[:2]) + "::" + groups[7]
    return address.upper() if draw(st.booleans()) else address


@st.composite
def imeis(draw: st.DrawFn) -> str:
    body = draw(st.sampled_from(IMEI_BODIES)) + draw(digits(min_size=12, max_size=12))
    value = with_luhn(body)
    sizes, separator = draw(
        st.sampled_from(
            [((15,), ""), ((2, 6, 6, 1), "-"), ((2, 6, 6, 1), " "), ((6, 2, 6, 1), "-")]
        )
    )
    return grouped(value, sizes, separator)


@st.composite
def coordinate_pairs(draw: st.DrawFn) -> str:
    decimals = draw(st.integers(5, 9))
    lat = round(draw(st.floats(-90, 90)), decimals)
    lon = round(draw(st.floats(-180, 180)), decimals)
    assume(abs(lat) >= 1 or abs(lon) >= 1)
    separator = draw(st.sampled_from([",", ", ", " ", "，"]))
    form = draw(st.sampled_from(["signed", "minus sign", "letters", "words", "minutes"]))
    if form in ("signed", "minus sign"):
        pair = f"{lat:.{decimals}f}{separator}{lon:.{decimals}f}"
        return pair.replace("-", "\u2212") if form == "minus sign" else pair
    hemispheres = ("N" if lat >= 0 else "S", "E" if lon >= 0 else "W")
    if form == "words":
        hemispheres = ("北纬" if lat >= 0 else "南纬", "东经" if lon >= 0 else "西经")
    if form == "minutes":
        numbers = [degrees_and_minutes(abs(v), draw(st.booleans())) for v in (lat, lon)]
    else:
        sign = draw(st.sampled_from(["", "°"]))
        numbers = [f"{abs(v):.{decimals}f}{sign}" for v in (lat, lon)]
    if form == "words" or draw(st.booleans()):
        written = [f"{h}{n}" for h, n in zip(hemispheres, numbers, strict=True)]
    else:
        space = draw(st.sampled_from(["", " "]))
        written = [f"{n}{space}{h}" for h, n in zip(hemispheres, numbers, strict=True)]
    if draw(st.booleans()):  # the letters say which is which
        written.reverse()
    return separator.join(written)


def degrees_and_minutes(value: float, seconds: bool) -> str:
    """``value`` in degrees, minutes and seconds (tenths), or degrees and decimal minutes."""
    if seconds:
        degrees, tenths = divmod(round(value * 36_000), 36_000)
        minutes, tenths = divmod(tenths, 600)
        return f"{degrees}°{minutes}'{tenths // 10}.{tenths % 10}\""
    degrees, thousandths = divmod(round(value * 60_000), 60_000)
    return f"{degrees}°{thousandths // 1000}.{thousandths % 1000:03d}'"


@st.composite
def emails(draw: st.DrawFn) -> str:
    local = draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8))
    domain = draw(st.sampled_from(["example", "qq", "163", "corp"]))
    return f"{local}@{domain}." + draw(st.sampled_from(["com", "cn", "org", "com.cn", "net"]))


@st.composite
def postal_addresses(draw: st.DrawFn) -> str:
    admin = draw(
        st.sampled_from(["", "北京市朝阳区", "广东省深圳市南山区", "上海市浦东新区张江镇"])
    )
    street = draw(st.sampled_from(["建国路", "深南大道", "南锣鼓巷", "王府井大街"]))
    number = draw(st.integers(1, 99999))
    parts = draw(st.lists(st.sampled_from(["5号楼", "3栋", "1单元", "1001室", "B座"]), max_size=3))
    assume(admin or parts)
    return f"{admin}{street}{number}号{''.join(parts)}"


IDENTIFIER_KINDS: dict[str, st.SearchStrategy[str]] = {
    "id": id_numbers(),
    "phone": st.one_of(
        st.builds("1{}{}".format, st.sampled_from("3456789"), digits(min_size=9, max_size=9)),
        st.builds(
            "0{}-{}".format, st.sampled_from(["10", "21", "755"]), digits(min_size=8, max_size=8)
        ).filter(lambda v: v.split("-")[1][0] not in "01"),
    ),
    "card": cards(),
    "credit": credit_codes(),
    "passport": st.builds(
        "{}{}".format,
        st.sampled_from(["E", "G", "H", "M", "C"]),
        digits(min_size=8, max_size=8),
    )
    | st.builds(
        "{}{}{}".format,
        st.sampled_from("EC"),
        st.sampled_from(LETTERS),
        digits(min_size=7, max_size=7),
    )
    | st.builds("{}{}".format, st.sampled_from("HM"), digits(min_size=10, max_size=10)),
    "hk_id": hong_kong_cards(),
    "tw_id": taiwanese_ids(),
    "mo_id": st.builds(
        "{}{}({})".format,
        st.sampled_from("157"),
        digits(min_size=6, max_size=6),
        st.sampled_from(DIGITS),
    )
    | st.builds(
        "{}/{}/{}".format,
        st.sampled_from("157"),
        digits(min_size=6, max_size=6),
        st.sampled_from(DIGITS),
    ),
    "ipv4": st.lists(st.integers(0, 255), min_size=4, max_size=4).map(
        lambda octets: ".".join(map(str, octets))
    ),
    "ipv6": ipv6_addresses(),
    "mac": st.lists(st.integers(1, 254), min_size=6, max_size=6).map(
        lambda octets: ":".join(f"{o:02x}" for o in octets)
    ),
    "email": emails(),
    "address": postal_addresses(),
    "imei": imeis(),
    "location": coordinate_pairs(),
}
# Found only with no letter or digit beside them that is no identifier (README: "A passport or
# travel permit, credit code, Hong Kong, Macau or Taiwanese ID number glued to what is no
# identifier is left"; a card's closing bracket ends it, see `glue_may_hold`).
BOUNDED = frozenset({"credit", "passport", "hk_id", "tw_id", "mo_id"})


@st.composite
def identifiers_found_alone(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(sorted(IDENTIFIER_KINDS)))
    value = draw(IDENTIFIER_KINDS[kind])
    assume([text for _, text in spans(f"资料：{value}。")] == [value])
    return kind, value


def glue_may_hold(before: tuple[str, str], between: str, after: tuple[str, str]) -> bool:
    """Whether ``before``, ``between`` (nothing, one letter or digit, a stop or a colon) and
    ``after`` written one after another leave two identifiers a reader can tell apart, as the
    README has it."""
    (kind_a, a), (kind_b, b) = before, after
    left, right = a[-1], b[0]
    # "Between two digits nothing says where one number ends".
    # A postal address ends in a CJK character, as prose does: a letter or digit after it is
    # read with what follows, as after any prose.
    if between and kind_a == "address":
        return False
    if between.isdigit():
        # But after a letter, before an IPv6 address, a digit runs on into its first group or,
        # where that cannot take it, sets the two apart ("a decimal one only after an
        # identifier ending in a letter": `li@qq.com5fe80::1`, `li@qq.com52001:db8::1`).
        if not (left.isalpha() and kind_b == "ipv6"):
            return False
        # An IPv6 address before it may end in it too: then two digits meet after it
        # ("fe80::abc72001:db8::1"; "with a hex digit between them", two addresses are each
        # found).
        if kind_a == "ipv6" and right.isdigit():
            return False
    elif not between and left.isdigit() and right.isdigit():
        return False
    # "A MAC address ... Not found: ... a letter or digit glued on", nor a coordinate pair.
    if "mac" in (kind_a, kind_b) or "location" in (kind_a, kind_b):
        return False
    # "A stop ends an IPv6 address, as a sentence's does, but between two digits": where the
    # address may go on into a dotted quad. Elsewhere a stop is not glue at all.
    if between == ".":
        return kind_a == "ipv6" and not right.isdigit()
    # After an IPv6 address and a colon, an identifier whose first digits the address's last
    # group reads ("fe80::abc:5/395279/6") is found, and the address keeps the rest; one that
    # no group holds ("fe80::abc:13800138000") leaves no address, nor does one more group than
    # an address holds ("hex digits ... where they make a group of more than four or too many
    # groups, nothing is found").
    if between == ":":
        groups = [group for group in a.split(":") if group]
        return (
            kind_a == "ipv6"
            and kind_b in ("mo_id", "phone")
            and re.match("[0-9A-Fa-f]{1,4}(?![0-9A-Za-z:.])", b) is not None
            and "::" in a
            and len(groups) <= 6
        )
    # "After an IPv6 address, only one that starts with a letter that is no hex digit ...: its
    # hex digits run on into a digit or `A` to `F`", but into another address both of which
    # hold a "::" ("two IPv6 addresses glued one right after the other, each with its `::`").
    if kind_a == "ipv6" and (between or right) in HEX + HEX.upper():
        return "::" in a and "::" in b and kind_b == "ipv6"
    # "one of 15 digits with an `X` right after it ... is left".
    if kind_a == "id" and len(a) == 15 and (between or right) in "Xx":
        return False
    if between:
        # What is glued to a letter or digit that is no identifier is left (README: "A passport
        # or travel permit, credit code, Hong Kong, Macau or Taiwanese ID number glued to what
        # is no identifier is left"); a card's closing bracket ends it.
        if kind_a in BOUNDED and left != ")":
            return False
        if kind_b in BOUNDED:
            return False
    # Beside an e-mail address nothing is left out: its local part takes every letter and digit
    # before its '@', its top-level domain the letters after it, and what is between is its.
    return True


CREDIT_SHAPE = re.compile("[1-9A-HJ-NP-RTUW-Y][1-9][0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}")


def merges_into_a_credit_code(text: str, at: int) -> bool:
    """Whether 18 characters of ``text`` reaching across ``at`` make a credit code."""
    windows = (text[start : start + 18] for start in range(max(0, at - 17), at + 1))
    return any(
        CREDIT_SHAPE.fullmatch(w) is not None and with_uscc_check(w[:17]) == w for w in windows
    )


# Nothing, or one letter or digit, between two identifiers: the hex letters and the others; or
# a stop or colon after an IPv6 address.
BETWEEN = ["", *DIGITS, *"gkxzGKXZabcdefAF.:"]


@st.composite
def glued_with_something_between(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[str]]:
    chosen = [draw(identifiers_found_alone())]
    between: list[str] = []
    for _ in range(draw(st.integers(1, 2))):
        item = draw(identifiers_found_alone())
        options = [sep for sep in BETWEEN if glue_may_hold(chosen[-1], sep, item)]
        if not options:
            break
        between.append(draw(st.sampled_from(options)))
        chosen.append(item)
    return chosen, between


@given(glued_with_something_between(), st.sampled_from(["", "资料：", " ", "，"]))
@settings(max_examples=300, deadline=None)
def test_every_character_of_identifiers_glued_to_each_other_is_redacted(
    glued: tuple[list[tuple[str, str]], list[str]], around: str
) -> None:
    identifiers, between = glued
    text, places = around, []
    for (_, value), sep in zip(identifiers, ["", *between], strict=True):
        text += sep
        places.append((len(text), len(text) + len(value)))
        text += value
    text += around
    # Where characters of two make one credit code whose check holds (one reading in 31), the
    # credit code goes first, as over two permits it reads as: the two cannot be told apart.
    assume(not any(merges_into_a_credit_code(text, start) for start, _ in places[1:]))
    covered = set[int]()
    for m in find(text):
        covered.update(range(m.start, m.end))
    missed = [text[s:e] for s, e in places if not covered >= set(range(s, e))]
    assert not missed, (text, missed, spans(text))


# --- properties --------------------------------------------------------------------------------

FRAGMENTS = [
    ID_1990,
    ID_X,
    CARD_16,
    USCC,
    "13800138000",
    "+86 ",
    "138 0013 8000",
    "E12345678",
    "EA1234567",
    "H12345678",
    "M1234567890",
    "C12345678",
    "CA1234567",
    "1234567(8)",
    "1/234567/8",
    "（８）",
    USCC_LETTER,
    "192.168.0.1",
    "2001:db8::1",
    "fe80::1",
    "li@example.com",
    "张伟@例子.中国",
    "josé@correo.es",
    "北京市朝阳区建国路88号",
    "5号楼",
    "1001室",
    "碧桂园",
    "地址：",
    "例子",
    ".中国",
    "＠",
    "１３８",
    "，",
    "。",
    " ",
    "-",
    ".",
    ":",
    "@",
    "x",
    "X",
    "中文",
    "\u200b",
    "\u00ad",
    "\u2009",
    "\u2013",
    "ー",
    "\u2028",
    "/",
    grouped(ID_1990, (6, 8, 4), "\u3000"),
    grouped(ID_1990, (6, 4, 4, 4)),
    grouped(ID_X, (6, 8, 4), "/"),
    OLD_ID,
    grouped(OLD_ID, (6, 6, 3)),
    AMEX,
    grouped(AMEX, (4, 6, 5)),
    "zhangsan @ example.com",
    "li(at)example.com",
    "(dot)",
    " [DOT] ",
    "&#64;",
    "&#46;",
    "&commat;",
    "&#64",
    "\u200b",
    "（AT）",
    "【at】",
    "zhangsan#163.com",
    "#",
    "192。168。0。1",
    "fe80：：1",
    "00:1A:2B:3C:4D:5E",
    "00-1a-2b-3c-4d-5e",
    "001a.2b3c.4d5e",
    IMEI,
    grouped(IMEI, (2, 6, 6, 1), "-"),
    grouped(IMEI_35, (2, 6, 6, 1)),
    grouped(IMEI, (6, 2, 6, 1), "-"),
    SHANGHAI,
    "-33.868820,151.209296",
    "lat=39.9042&lng=116.4074",
    "纬度39.9042 经度116.4074",
    "39.9042",
    ",",
    "。",
    "：",
    "-",
    ".",
]
mixed_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=12).map(
    "".join
)


@given(mixed_text)
@settings(max_examples=300, deadline=None)
def test_scan_never_raises_and_redacts_exactly_the_found_spans(text: str) -> None:
    found = find(text)
    redacted, counts = scan(text, NOTHING_ALLOWED)
    last = 0
    for m in found:
        assert last <= m.start < m.end <= len(text)
        assert m.category in CATEGORIES
        last = m.end
    # The second number of a keyed coordinate pair is redacted, not counted again.
    assert counts == dict(Counter(m.category for m in found if m.counted))
    if not found:
        assert redacted is text
    else:
        pieces, last = [], 0
        for m in found:
            pieces.append(text[last : m.start] + f"[REDACTED:{m.category}]")
            last = m.end
        assert redacted == "".join(pieces) + text[last:]


INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\u00ad",
    "\ufeff",
    "\u200e",
    "\u2066",
    "\U000e0020",
]


@given(
    st.sampled_from(
        [
            (ID_1990, ID_NUMBER),
            (grouped(ID_1990, (6, 8, 4), "\u2009"), ID_NUMBER),
            (grouped(ID_1990, (6, 8, 4), "\u2014"), ID_NUMBER),
            (grouped(ID_1990, (6, 4, 4, 4)), ID_NUMBER),
            (grouped(ID_X, (6, 4, 4, 4), "-"), ID_NUMBER),
            (grouped(ID_X, (6, 8, 4), "/"), ID_NUMBER),
            (OLD_ID, ID_NUMBER),
            (grouped(OLD_ID, (6, 6, 3), "-"), ID_NUMBER),
            (PERMANENT_RESIDENT, ID_NUMBER),
            (grouped(PERMANENT_RESIDENT_X, (6, 8, 4), "-"), ID_NUMBER),
            (CARD_16, BANK_ACCOUNT),
            (USCC, CREDIT_CODE),
            ("13800138000", PHONE),
            ("li@example.com", EMAIL),
            ("zhang.wei@公司.cn", EMAIL),
            ("josé@correo.es", EMAIL),
            ("иван@пример.рф", EMAIL),
            ("192.168.0.1", IP),
            ("H12345678", PASSPORT),
            ("CA1234567", PASSPORT),
            ("1234567(8)", ID_NUMBER),
            ("1/234567/8", ID_NUMBER),
            (AMEX, BANK_ACCOUNT),
            (grouped(AMEX, (4, 6, 5)), BANK_ACCOUNT),
            ("zhangsan @ example.com", EMAIL),
            ("zhangsan(at)example.com", EMAIL),
            ("zhangsan【AT】163.com", EMAIL),
            ("zhangsan#163.com", EMAIL),
            ("192。168。0。1", IP),
            ("fe80：：1", IP),
            ("00:1A:2B:3C:4D:5E", DEVICE_ID),
            ("00-1a-2b-3c-4d-5e", DEVICE_ID),
            ("001a.2b3c.4d5e", DEVICE_ID),
            ("ab:cd:ef:ab:cd:ef", DEVICE_ID),
            (IMEI, DEVICE_ID),
            (grouped(IMEI, (2, 6, 6, 1), "-"), DEVICE_ID),
            (grouped(IMEI_35, (2, 6, 6, 1)), DEVICE_ID),
            (grouped(IMEI, (6, 2, 6, 1), "-"), DEVICE_ID),
            (SHANGHAI, LOCATION),
            ("-33.868820,151.209296", LOCATION),
        ]
    ),
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from(INVISIBLE)), max_size=6),
    st.sampled_from(["", "中文", " x ", "，"]),
)
@settings(max_examples=300, deadline=None)
def test_invisible_characters_anywhere_in_an_identifier_never_hide_it(
    identifier: tuple[str, str], inserts: list[tuple[int, str]], around: str
) -> None:
    value, category = identifier
    chars = list(value)
    for at, invisible in inserts:
        chars.insert(at % (len(chars) + 1), invisible)
    text = f"{around}{''.join(chars)}{around}"
    redacted, counts = scan(text, NOTHING_ALLOWED)
    assert counts == {category: 1}, text
    # Invisible characters before or after the identifier stay where they were.
    visible = "".join(c for c in redacted if c not in INVISIBLE)
    assert visible == f"{around}[REDACTED:{category}]{around}"


CJK_LETTERS = "张伟李明王芳刘洋陈静杨帆赵磊黄敏例子公司网络邮件やまだタロウ"
OTHER_LETTERS = "abcxyzABZéüßñçøåживанпрсαβγ홍길동"
cjk_part = st.text(CJK_LETTERS, min_size=1, max_size=6)
other_part = st.text(OTHER_LETTERS, min_size=1, max_size=10)


@given(
    st.one_of(st.text(CJK_LETTERS, min_size=1, max_size=4), other_part),
    st.lists(st.one_of(cjk_part, other_part), min_size=1, max_size=3),
    st.sampled_from(["中国", "公司", "网络", "新加坡", "みんな", "cn", "com", "рф", "xn--fiqs8s"]),
    st.sampled_from(CJK_BOUNDARIES),
    st.sampled_from(CJK_BOUNDARIES),
)
@settings(max_examples=300, deadline=None)
def test_an_internationalised_address_between_boundaries_is_redacted_exactly(
    local: str, labels: list[str], top: str, before: str, after: str
) -> None:
    # A CJK local part of up to four characters, any mix of CJK labels and labels in other
    # scripts, any known top-level domain: between punctuation or whitespace, exactly the
    # address is redacted, after prose in Chinese too.
    address = f"{local}@{'.'.join(labels)}.{top}"
    text = f"请联系{before}{address}{after}谢谢"
    assert scan(text, NOTHING_ALLOWED) == (
        f"请联系{before}[REDACTED:{EMAIL}]{after}谢谢",
        {EMAIL: 1},
    ), text


EMAIL_REDACTED, PHONE_REDACTED = f"[REDACTED:{EMAIL}]", f"[REDACTED:{PHONE}]"


@pytest.mark.parametrize(
    ("text", "redacted", "counts"),
    [
        (
            "li@example.com\u200bwang@example.com",
            EMAIL_REDACTED * 2,
            {EMAIL: 2},
        ),
        ("13800138000\u2060li@example.com", PHONE_REDACTED + EMAIL_REDACTED, {PHONE: 1, EMAIL: 1}),
        (
            "192.168.0.1\u200bli@example.com",
            f"[REDACTED:{IP}]{EMAIL_REDACTED}",
            {IP: 1, EMAIL: 1},
        ),
        ("a@b.cn\u200b" * 3 + "。", EMAIL_REDACTED * 3 + "\u200b。", {EMAIL: 3}),
    ],
    ids=["two_emails", "phone_then_email", "ip_then_email", "chain"],
)
def test_an_invisible_character_between_identifiers_keeps_them_apart(
    text: str, redacted: str, counts: dict[str, int]
) -> None:
    # Without the invisible character the two read as one (an e-mail address whose local part
    # starts with the phone number): the scan that found more identifiers names them.
    assert scan(text, NOTHING_ALLOWED) == (redacted, counts)
    assert [m.category for m in find(text)] == [c for c in counts for _ in range(counts[c])]


@pytest.mark.parametrize(
    ("text", "may_hide"),
    [
        ("👨\u200d👩", False),  # a family emoji's joiner
        ("مرحبا\u200fعالم", False),  # a direction mark between Arabic words
        ("\u200f", False),
        ("138\u200b0013", True),
        ("zhang\u200bwei", True),  # a local part of an address
        ("\u0661\u200b\u0662", True),  # another script's digits
        ("\uff11\u200b", True),  # a full-width digit
        ("\u200b\u200c1", True),  # a run of them beside a digit
    ],
)
def test_an_invisible_character_hides_something_only_beside_what_identifiers_use(
    text: str, may_hide: bool
) -> None:
    # Elsewhere the string is not scanned a second time: emoji and right-to-left text are common.
    holes = [i for i, c in enumerate(text) if unicodedata.category(c) == "Cf"]
    assert any(_may_hide(text, at) for at in holes) is may_hide


@pytest.mark.parametrize(
    ("text", "may_hide"),
    [
        ("张\u200b伟@例子.中国", True),
        ("иван@при\u200bмер.рф", True),
        ("مرحبا\u200fعالم li@example.com", True),  # any letter may be part of an address
        ("👨\u200d👩 li@example.com", False),
    ],
)
def test_in_a_string_holding_an_at_sign_an_invisible_character_beside_a_letter_may_hide(
    text: str, may_hide: bool
) -> None:
    holes = [i for i, c in enumerate(text) if unicodedata.category(c) == "Cf"]
    assert any(_may_hide(text, at, letters=True) for at in holes) is may_hide


ID_SEPARATORS = ["", " ", "-", "/", "\u2009", "\u2013", "\u2212", "\uff0d", "\u3000", "\u00a0"]


@given(
    st.sampled_from(
        [
            (ID_X, (6, 10, 14), dt.date(1949, 12, 31)),  # division, year, month and day, rest
            (OLD_ID, (6, 12), dt.date(1985, 3, 4)),  # division, date, sequence
        ]
    ),
    st.lists(st.sampled_from(ID_SEPARATORS), min_size=3, max_size=3),
    st.sampled_from(["", "中文", " x ", "，", "ID: ", "（", "\n"]),
)
@settings(max_examples=300, deadline=None)
def test_an_id_number_with_any_mix_of_separators_between_its_groups_is_redacted(
    number: tuple[str, tuple[int, ...], dt.date], separators: list[str], around: str
) -> None:
    digits, boundaries, born = number
    parts = [digits[a:b] for a, b in zip((0, *boundaries), (*boundaries, None), strict=True)]
    value = parts[0] + "".join(
        separator + part
        for separator, part in zip(separators[: len(parts) - 1], parts[1:], strict=True)
    )
    text = f"{around}{value}{around}"
    assert scan(text, NOTHING_ALLOWED) == (
        f"{around}[REDACTED:{ID_NUMBER}]{around}",
        {ID_NUMBER: 1},
    ), text
    assert stated_birth_date(value) == born


@given(
    st.lists(
        st.tuples(st.integers(0, 18), st.sampled_from(WHITESPACE + DASHES + INVISIBLE)),
        max_size=8,
    )
)
@settings(max_examples=300, deadline=None)
def test_spaces_dashes_and_invisible_characters_anywhere_in_an_id_number_field_hide_nothing(
    inserts: list[tuple[int, str]],
) -> None:
    chars = list(MINOR_ID)
    for at, separator in inserts:
        chars.insert(at % (len(chars) + 1), separator)
    assert stated_birth_date("".join(chars)) == dt.date(2015, 6, 1)


@pytest.mark.parametrize("invisible", ["\u200e", "\u2066", "\u061c", "\U000e0020", "\u00ad"])
def test_birth_date_from_an_id_with_any_invisible_character(invisible: str) -> None:
    value = f"{ID_1990[:6]}{invisible}{ID_1990[6:]}"
    assert stated_birth_date(value) == stated_birth_date(ID_1990) is not None


# --- every invisible character: default-ignorable code points and controls ---------------------

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 14.0, the version
# of unicodedata here), which unicodedata does not expose: written out from the standard.
DEFAULT_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors, vowel separator
    (0x200B, 0x200F),  # zero-width space, joiners, direction marks
    (0x202A, 0x202E),  # direction embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, isolates, U+2065 reserved
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # half-width Hangul filler
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical beam and phrase controls
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement, reserved
)
# What hides nothing inside a number: the default-ignorable code points, the format characters
# and the controls, less the whitespace (a line break ends a number, a tab is a space).
HIDING = sorted(
    c
    for c in map(
        chr,
        [
            *(cp for a, b in DEFAULT_IGNORABLE_RANGES for cp in range(a, b + 1)),
            *(cp for cp in range(0x110000) if unicodedata.category(chr(cp)) in ("Cc", "Cf")),
        ],
    )
    if not c.isspace()
)
HIDING_SET = frozenset(HIDING)


def test_the_hiding_characters_are_the_ones_a_reader_cannot_see() -> None:
    # NUL to backspace, DEL and the C1 controls, the ones that pasted into a number went unseen
    # before (the combining grapheme joiner, variation selectors, Hangul fillers, tags, ...):
    # and never a line break or the tab, which keep their documented meaning.
    assert {"\x00", "\x08", "\x0e", "\x1b", "\x7f", "\x80", "\x9f"} <= HIDING_SET
    assert {"\u034f", "\ufe0f", "\U000e0100", "\u3164", "\uffa0", "\u115f", "\u17b4"} <= HIDING_SET
    assert {"\u2065", "\ufff0", "\U000e0000", "\U000e0fff"} <= HIDING_SET
    assert not {"\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x1f", "\x85", "\u2028"} & HIDING_SET


@pytest.mark.parametrize("line_break", LINE_BREAKS, ids=codepoint)
def test_numbers_listed_one_to_a_line_stay_apart_whatever_the_line_break(line_break: str) -> None:
    # The controls that are whitespace end a number; they are not looked through.
    text = f"13800138000{line_break}13900139000"
    assert spans(text) == [(PHONE, "13800138000"), (PHONE, "13900139000")]


def test_no_invisible_or_control_character_between_digit_groups_hides_a_number() -> None:
    id_number = grouped(ID_1990, (6, 8, 4), "{0}")
    leaked = [
        codepoint(c)
        for c in HIDING
        if scan(f"请回拨138{c}0013{c}8000，身份证{id_number.format(c)}。", NOTHING_ALLOWED)
        != (f"请回拨[REDACTED:{PHONE}]，身份证[REDACTED:{ID_NUMBER}]。", {PHONE: 1, ID_NUMBER: 1})
    ]
    assert leaked == []


@given(
    st.sampled_from(
        [
            ("13800138000", PHONE),
            ("+8613800138000", PHONE),
            (grouped("13800138000", (3, 4, 4)), PHONE),
            (grouped("13800138000", (3, 4, 4), "-"), PHONE),
            (ID_1990, ID_NUMBER),
            (ID_X, ID_NUMBER),
            (grouped(ID_1990, (6, 8, 4)), ID_NUMBER),
            (grouped(ID_X, (6, 4, 4, 4), "-"), ID_NUMBER),
            (OLD_ID, ID_NUMBER),
            (IMEI, DEVICE_ID),
            (grouped(IMEI, (2, 6, 6, 1), "-"), DEVICE_ID),
            (grouped(IMEI_35, (2, 6, 6, 1)), DEVICE_ID),
        ]
    ),
    st.data(),
    st.sampled_from(HIDING),
    st.sampled_from(["请回拨", "Call me on ", "电话：", "ID "]),
    st.sampled_from(["，谢谢。", " today.", "。", ""]),
)
@settings(max_examples=500, deadline=None)
def test_an_invisible_or_control_character_anywhere_in_a_number_in_prose_hides_nothing(
    number: tuple[str, str], data: st.DataObject, hiding: str, before: str, after: str
) -> None:
    value, category = number
    at = data.draw(st.integers(1, len(value) - 1), label="at")
    text = f"{before}{value[:at]}{hiding}{value[at:]}{after}"
    assert scan(text, NOTHING_ALLOWED) == (
        f"{before}[REDACTED:{category}]{after}",
        {category: 1},
    ), text
    assert [m.category for m in find(text)] == [category]


@pytest.mark.parametrize("hiding", ["\x00", "\x7f", "\u034f", "\ufe0f", "\u3164", "\U000e0100"])
def test_birth_date_from_an_id_with_a_control_or_default_ignorable_character(hiding: str) -> None:
    value = f"{MINOR_ID[:6]}{hiding}{MINOR_ID[6:14]}{hiding}{MINOR_ID[14:]}"
    assert stated_birth_date(value) == dt.date(2015, 6, 1)


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_text_without_digit_at_or_colon_comes_back_identical(text: str) -> None:
    if any(c.isdigit() or c in "@:" for c in unicodedata.normalize("NFKC", text)):
        text = "".join(
            c
            for c in text
            if not any(n.isdigit() or n in "@:" for n in unicodedata.normalize("NFKC", c))
        )
    assert scan(text, NOTHING_ALLOWED) == (text, {})
    assert scan(text, NOTHING_ALLOWED)[0] is text
