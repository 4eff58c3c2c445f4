"""Free-text personal-data scanner: finds validated identifiers in strings and redacts them."""

from __future__ import annotations

import bisect
import functools
import ipaddress
import itertools
import operator
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gateway.idnumber import PROVINCES, id_ok, looks_like_id
from gateway.postal import find_postal, may_hold_postal

ID_NUMBER: Final = "identity.id_number"
CREDIT_CODE: Final = "identity.credit_code"
PASSPORT: Final = "identity.passport"
PHONE: Final = "contact.phone"
EMAIL: Final = "contact.email"
BANK_ACCOUNT: Final = "financial.bank_account"
IP: Final = "device.ip"
DEVICE_ID: Final = "device.device_id"
LOCATION: Final = "location.precise"
ADDRESS: Final = "contact.address"

CATEGORIES: Final[frozenset[str]] = frozenset(
    {ID_NUMBER, CREDIT_CODE, PASSPORT, PHONE, EMAIL, BANK_ACCOUNT, IP, DEVICE_ID, LOCATION, ADDRESS}
)

# Lower wins when two candidates overlap; email spans are settled before all of these.
_PRIORITY: Final[dict[str, int]] = {
    ID_NUMBER: 0,
    CREDIT_CODE: 1,
    BANK_ACCOUNT: 2,
    PHONE: 3,
    PASSPORT: 4,
    # An IMEI's fifteen digits that a first-generation ID number reads too are that number's.
    # One before an IPv6 address keeps the digit the address's first group would take
    # ("01-000000-000000-8a:0:0:0:0:0:0:0"), as the numbers above do. A MAC address is a shape
    # of six pairs refused beside any colon-separated continuation, and no IPv6 address has six
    # groups without a '::': the two never claim the same characters.
    DEVICE_ID: 5,
    # Last: an IPv6 address gives up to every identifier above what it shares with one, and
    # keeps the rest (`_ipv6_kept`).
    IP: 6,
}


@dataclass(frozen=True, slots=True)
class Match:
    """One recognised identifier: ``text[start:end]`` in the caller's original string.
    ``counted`` is false for the second number of a keyed coordinate pair (`lat=…&lng=…`): both
    numbers are redacted, the keys between them kept, and the pair is one location."""

    start: int
    end: int
    category: str
    counted: bool = True


# --- normalisation -------------------------------------------------------------------------


# Every recognised identifier is ASCII, so only the full-width ASCII variants (and the
# ideographic space used as a separator) need folding. Each folds to exactly one character,
# which keeps offsets in the folded string equal to offsets in the original: no position map.
def _build_fold_table() -> dict[int, int]:
    table: dict[int, int] = {}
    for cp in (0x3000, *range(0xFF01, 0xFF5F)):
        folded = unicodedata.normalize("NFKC", chr(cp))
        if len(folded) == 1 and folded.isascii():
            table[cp] = ord(folded)
    return table


_FOLD_TABLE: Final = _build_fold_table()


# Where a character can be of the categories read below, beyond ASCII: planes 0 to 3 and 14.
# Planes 4 to 13 hold no character at all (Unicode 14.0 to 15.1, the versions of Pythons 3.11
# to 3.13; the tests walk all of Unicode to see it), and 15 and 16 only private-use code points
# and noncharacters, whose categories Unicode's stability policy fixes. They were three
# quarters of the walk: a tenth of a second or more of every command's start.
_ASSIGNED_PLANES: Final = (range(0x80, 0x40000), range(0xE0000, 0xF0000))


def _code_points_by_category() -> dict[str, list[int]]:
    """The code points beyond ASCII of the general categories read below, in one pass: each
    pass over the planes that hold characters adds a few hundredths of a second to importing
    the scanner."""
    found: dict[str, list[int]] = {kind: [] for kind in ("Cc", "Cf", "Nd", "Pd", "Zl", "Zp", "Zs")}
    for cp in itertools.chain(*_ASSIGNED_PLANES):
        kind = found.get(unicodedata.category(chr(cp)))
        if kind is not None:
            kind.append(cp)
    return found


_BY_CATEGORY: Final = _code_points_by_category()


def _char_class(codepoints: Iterable[int]) -> str:
    """The body of a regex character class for `codepoints`, as ranges: a class of hundreds of
    single characters is searched many times slower than one of a few dozen ranges."""
    ranges: list[list[int]] = []
    for cp in sorted(set(codepoints)):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


# The decimal digits of every other script (Arabic-Indic, Devanagari, mathematical bold, ...)
# fold to ASCII digits: "١٣٨٠٠١٣٨٠٠٠" is a phone number.
_OTHER_DIGITS: Final = {
    cp: ord("0") + unicodedata.digit(chr(cp))
    for cp in _BY_CATEGORY["Nd"]
    if not 0xFF10 <= cp <= 0xFF19
}

# What the groups of a number are set apart with, in text pasted from web pages, editors and
# input methods. The dashes are Unicode's Dash property, which unicodedata does not expose:
# the dash punctuation (category Pd: hyphens, the en, em and two-em dashes, the horizontal
# bar, the wave dash, the small and full-width hyphen-minus, ...) and the four signs filed
# elsewhere (swung dash, superscript and subscript minus, the minus sign). With them the
# look-alikes typed for a hyphen that no property groups: the hyphen bullet, the modifier
# letter and heavy minus signs.
_DASHES: Final = frozenset(
    [
        *map(chr, _BY_CATEGORY["Pd"]),
        *map(
            unicodedata.lookup,
            (
                "SWUNG DASH",
                "SUPERSCRIPT MINUS",
                "SUBSCRIPT MINUS",
                "MINUS SIGN",
                "HYPHEN BULLET",
                "MODIFIER LETTER MINUS SIGN",
                "HEAVY MINUS SIGN",
            ),
        ),
    ]
)
# The katakana prolonged sound mark (and its half-width form) is what a Japanese input method
# gives for the hyphen key ("138ー0013ー8000"), but it is also a letter of katakana words
# ("セール", an e-mail domain): in free text a separator only between two digits.
_SOUND_MARKS: Final = "\u30fc\uff70"
# The spaces: the space separators (category Zs: no-break, thin, en, em, figure, ideographic,
# ...) and the tab. In free text the line and paragraph breaks and the other whitespace
# controls are not: numbers listed one to a line stay apart (and a multi-line note does not
# pay for folding).
_SPACES: Final = frozenset(["\t", *map(chr, _BY_CATEGORY["Zs"])])
# Every character `str.isspace()` holds true (space, line and paragraph separators and some
# controls, of no other category): an ID number field is one value, and a line break inside
# it hides nothing either.
_WHITESPACE: Final = frozenset(
    c
    for codepoints in (range(0x80), *(_BY_CATEGORY[kind] for kind in ("Cc", "Zs", "Zl", "Zp")))
    for c in map(chr, codepoints)
    if c.isspace()
)

# Outside the Basic Multilingual Plane (mathematical digits and a few scripts, the Yezidi
# hyphenation mark): folded apart, only for a string holding such a character at all. Kept
# out of the classes below, they would make every search of every string many times slower.
_ASTRAL_FOLD: Final = {
    **{cp: digit for cp, digit in _OTHER_DIGITS.items() if cp > 0xFFFF},
    **{ord(c): ord(" ") for c in _DASHES if c > "\uffff"},
}
_ANY_ASTRAL: Final = re.compile("[\U00010000-\U0010ffff]")
_BMP_DIGITS: Final = {cp: digit for cp, digit in _OTHER_DIGITS.items() if cp <= 0xFFFF}
# Folded everywhere, each to one ASCII character like the full-width forms (ASCII space and
# hyphen are left as they are). Dashes fold to a space, not a hyphen: "138–0013–8000" is a
# grouped number, while after a hyphen a digit-led match is refused ("2024-13800138000"), and
# "13800138000–13800138999" or "010–13800138000" hold numbers of their own. The small and
# full-width hyphen-minus stay hyphens, as compatibility folding makes them (the full-width
# one also joins the parts of an e-mail address). The full-width slash folds to a slash, which
# sets apart the groups of an ID number, also between ASCII digits.
_SEPARATOR_TABLE: Final = {
    **{ord(c): ord(" ") for c in _SPACES if c != " "},
    **{
        ord(c): ord("-" if unicodedata.normalize("NFKC", c) == "-" else " ")
        for c in _DASHES
        if c <= "\uffff"
    },
    0xFF0F: ord("/"),
    **_BMP_DIGITS,
}
_SEPARATOR_CHARS: Final = {
    **{chr(k): chr(v) for k, v in _SEPARATOR_TABLE.items()},
    **dict.fromkeys(_SOUND_MARKS, " "),
}

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 14.0, the version
# of Python 3.11's unicodedata, which does not expose the property): what a renderer draws
# nothing for, glyph or not. Beyond most format characters it holds the combining grapheme
# joiner, the Hangul fillers, the Khmer inherent vowels, the variation selectors, and code
# points reserved so that what Unicode assigns there later is invisible too.
_DEFAULT_IGNORABLE: Final = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)

# Invisible characters (zero-width space and joiners, word joiner, soft hyphen, BOM, direction
# marks, variation selectors, Hangul fillers, NUL, DEL and the other controls): pasted inside a
# number they change nothing a reader sees. They are the default-ignorable code points, every
# format character (the few the property leaves out, such as the Arabic number signs, drawn
# over the digits after them, hide a number no better) and the control characters (categories
# Cf and Cc), less the whitespace: a line break ends a number, and the tab is a space (above).
# They cannot be folded one-for-one like the separators above, so a string holding one is
# scanned a second time without them, and what either scan finds is redacted. Astral ones are
# rare enough to look for only in a string holding some astral character.
_INVISIBLE_CHARS: Final = frozenset(
    c
    for c in map(
        chr,
        (
            *range(0x20),  # the controls in ASCII: `_BY_CATEGORY` holds those beyond
            0x7F,
            *_BY_CATEGORY["Cc"],
            *_BY_CATEGORY["Cf"],
            *(cp for first, last in _DEFAULT_IGNORABLE for cp in range(first, last + 1)),
        ),
    )
    if not c.isspace()
)
# What a subject id is read without at its ends (`keys.canonical_subject_id`).
INVISIBLE_CHARS: Final = _INVISIBLE_CHARS
_INVISIBLE_BMP: Final = frozenset(ord(c) for c in _INVISIBLE_CHARS if c <= "\uffff")
# Apart: a class reaching beyond the BMP is searched range by range, many times slower.
_INVISIBLE: Final = re.compile("[" + _char_class(_INVISIBLE_BMP) + "]")
_INVISIBLE_ASTRAL: Final = re.compile(
    "[" + _char_class(ord(c) for c in _INVISIBLE_CHARS if c > "\uffff") + "]"
)

# What a field shown back to a person (a consent reference in `consent show`) must not hold:
# the controls and the line and paragraph separators, which split its line or rewrite the
# terminal, and every invisible character above (the direction overrides among them), which
# hide or reorder what the reader sees. Surrogates too: no file or body decoded as UTF-8 holds
# one, and none can be printed.
UNSHOWABLE: Final = re.compile(
    "["
    + _char_class(
        (
            *range(0x20),
            *range(0x7F, 0xA0),
            *_BY_CATEGORY["Zl"],
            *_BY_CATEGORY["Zp"],
            *range(0xD800, 0xE000),
            *map(ord, _INVISIBLE_CHARS),
        )
    )
    + "]"
)


# A plain class, searched at C speed: the sound marks' neighbours are looked at in
# `_fold_separator` (an alternative with lookarounds made a long text's search four times
# slower).
_SEPARATORS: Final = re.compile(
    "[" + _char_class([*_SEPARATOR_TABLE, *map(ord, _SOUND_MARKS)]) + "]"
)
# An input method in Chinese mode types an address's digits and letters in ASCII but its stops
# and colons ideographic or full-width ("192。168。1。1", "fe80：：1"): outside any full-width run,
# they are folded apart. A colon beside another or between two hex digits (after a label,
# "时间：14:30", it is the prose's own); a stop between two digits, and only where the number it
# is part of is a dotted quad, so that "合计3。5元" and "版本1。2。3。4。5" keep theirs.
_WIDE_STOPS: Final = "\uff0e\u3002\uff61"
_AFTER_WIDE_COLON: Final = (
    "(?:(?<=[0-9A-Fa-f]\uff1a)(?=[0-9A-Fa-f])|(?<=[:\uff1a]\uff1a)|(?=[:\uff1a]))"
)
_AFTER_WIDE_STOP: Final = "(?<=[0-9].)(?=[0-9])"
_WIDE_COLONS: Final = re.compile("\uff1a" + _AFTER_WIDE_COLON)
# One search for each stop: a search for one character reads CJK text several times faster
# than one opening with a class, and a Chinese document holds an ideographic full stop in
# every sentence.
_STOPS_BETWEEN_DIGITS: Final = tuple(
    (stop, re.compile(stop + _AFTER_WIDE_STOP)) for stop in _WIDE_STOPS
)
_STOPS: Final = frozenset("." + _WIDE_STOPS)
_DOTTED_NUMBER: Final = re.compile(f"[0-9]+(?:[.{_WIDE_STOPS}][0-9]+)*")
_DOTTED_QUAD: Final = re.compile(f"[0-9]{{1,3}}(?:[.{_WIDE_STOPS}][0-9]{{1,3}}){{3}}")
_STOPS_TO_ASCII: Final = dict.fromkeys(map(ord, _WIDE_STOPS), ord("."))
# Also finds the invisible characters and the stops and colons of an address: ordinary prose
# pays one search for all of them. Where a stop or colon stands, what is before it is looked at
# first: in prose, that is nearly always the end of a sentence or a label. (A '：' opening an
# address, "：：1", needs no branch of its own: the one after it is found.)
_MAY_NEED_FOLDING: Final = re.compile(
    "["
    + _char_class([*_SEPARATOR_TABLE, *_INVISIBLE_BMP, *map(ord, _SOUND_MARKS)])
    + f"\uff10-\uff19\uff20-\uff3a\uff41-\uff5a\uff1a{_WIDE_STOPS}]"
    + f"(?:(?<![\uff1a{_WIDE_STOPS}])|(?<=[0-9A-Fa-f:\uff1a].)"
    + f"(?:(?<=\uff1a){_AFTER_WIDE_COLON}|(?<=[{_WIDE_STOPS}]){_AFTER_WIDE_STOP}))"
)
# Full-width digits, letters and '@' are what can start an identifier; full-width punctuation
# alone (，：（）in ordinary Chinese prose) must not make every string pay for folding.
_NEEDS_FOLD: Final = re.compile("[\uff10-\uff19\uff20-\uff3a\uff41-\uff5a]")
# Only runs of full-width characters holding one of those are folded (their separators, '＋',
# '．', '：', '－' and the ideographic space, fold along with them). A match starts only where a
# run does, and its parts never give back what they took: a long run without a letter or digit
# is read once, not once from each of its characters (which took minutes for a 1 MiB body).
_FOLD_RUN: Final = re.compile(
    "[\u3000\uff01-\uff5e](?<![\u3000\uff01-\uff5e].)"
    "(?:(?<=[\uff10-\uff19\uff20-\uff3a\uff41-\uff5a])"
    "|[\u3000\uff01-\uff0f\uff1a-\uff1f\uff3b-\uff40\uff5b-\uff5e]*+"
    "[\uff10-\uff19\uff20-\uff3a\uff41-\uff5a])"
    "[\u3000\uff01-\uff5e]*+"
)
# The brackets an "at" typed for an e-mail address's '@' is put in: ASCII, full-width, and the
# lenticular ones a Chinese input method types for '[' ("zhangsan【at】163.com").
_AT_OPEN: Final = "(\\[\uff08\uff3b\u3010"
_AT_CLOSE: Final = ")\\]\uff09\uff3d\u3011"
# Digits written as Chinese numerals ("一三八零零一三八零零零", 幺 for 1 as it is said, the
# capitals of amounts), among digits of any form too ("138零0138000", "一三八００一三八〇〇〇"):
# read as digits only in a run of seven or more, one space or dash between them allowed. Shorter
# runs are prose ("一月", "二〇二五年"); a run of seven holds no unit (十, 百, 万) and is no
# number said in words, but one written digit by digit.
_CHINESE_DIGITS: Final = {
    **{ord(c): ord(str(d)) for d, c in enumerate("〇一二三四五六七八九")},
    **{ord(c): ord(str(d)) for d, c in enumerate("零壹贰叁肆伍陆柒捌玖")},
    ord("幺"): ord("1"),
}
_CHINESE_DIGIT_CLASS: Final = "".join(map(chr, _CHINESE_DIGITS))
_ANY_CHINESE_DIGIT: Final = re.compile(f"[{_CHINESE_DIGIT_CLASS}]")
# Whatever sets the groups of a number in digits apart sets them apart here too: a phone number
# grouped with thin spaces or en dashes must not pass because it is written in numerals. (Astral
# dashes are folded to a space before the runs are read.)
_NUMERAL_SEPARATOR: Final = _char_class(
    ord(c) for c in {" ", "-", *_SPACES, *_DASHES} if c <= "\uffff"
)
# The other digits stay as they are here and are folded later: full-width ones with their run,
# those of other scripts with the separators (astral ones are folded before).
_RUN_DIGIT: Final = f"0-9\uff10-\uff19{_char_class(_BMP_DIGITS)}{_CHINESE_DIGIT_CLASS}"
_CHINESE_DIGIT_RUN: Final = re.compile(
    f"[{_RUN_DIGIT}](?:[{_NUMERAL_SEPARATOR}]?[{_RUN_DIGIT}]){{6,}}"
)
# Nothing can match without a digit, '@' or ':' (full-width digits and '＠' included), a '#'
# (or '＃') between a letter or digit and another, an `&commat;`, or an opening bracket before "at"
# (full-width letters too: they are folded later), an invisible character standing in for any
# of those letters, a run of Chinese numerals, or a '-' or '.' (or their full-width forms) between
# the hex letters of a MAC address written without a digit ("ab-cd-ef-ab-cd-ef",
# "abcd.efab.cdef").
# Each branch after the class looks at the one character matched, so prose is still skipped at
# C speed.
_INVISIBLE_CLASS: Final = _char_class(_INVISIBLE_BMP)
_HEX_ANY_WIDTH: Final = "[0-9A-Fa-f\uff10-\uff19\uff21-\uff26\uff41-\uff46]"
_MAY_CONTAIN: Final = re.compile(
    "[0-9:@#\uff03&\\-.\uff0d\uff0e\uff10-\uff19\uff20"
    + _AT_OPEN
    + _char_class(_BMP_DIGITS)
    + _CHINESE_DIGIT_CLASS
    + "\U00010000-\U0010ffff]"
    + f"(?:(?<![#\uff03&\\-.\uff0d\uff0e{_AT_OPEN}{_CHINESE_DIGIT_CLASS}])"
    # Invisible characters among the numerals hide nothing: the run is read again without them.
    + f"|(?<=[{_CHINESE_DIGIT_CLASS}])(?:[{_INVISIBLE_CLASS}]*+[{_NUMERAL_SEPARATOR}]?"
    + f"[{_INVISIBLE_CLASS}]*+[{_CHINESE_DIGIT_CLASS}]){{6}}"
    + "|(?<=&)(?=commat;)"
    + f"|(?<=[0-9A-Za-z_{_INVISIBLE_CLASS}][#\uff03])(?=[0-9A-Za-z{_INVISIBLE_CLASS}])"
    + f"|(?<=[{_AT_OPEN}])(?=[ \u3000]?(?:[Aa\uff21\uff41][Tt\uff34\uff54{_INVISIBLE_CLASS}]"
    + f"|[{_INVISIBLE_CLASS}]))"
    + f"|(?<={_HEX_ANY_WIDTH}{{2}}[\\-\uff0d])(?={_HEX_ANY_WIDTH}{{2}}[\\-\uff0d])"
    + f"|(?<={_HEX_ANY_WIDTH}{{4}}[.\uff0e])(?={_HEX_ANY_WIDTH}{{4}}[.\uff0e]))"
)

# --- scouting ------------------------------------------------------------------------------

# Every digit-bearing identifier contains one of these cores: seven digits in a row (IDs,
# credit codes, cards, phones, passports and permits, Taiwanese ID numbers, Hong Kong identity
# cards with a bare digit for check and bracketed Macau ones, IMEIs), six before a check
# character A or a bracketed one (Hong Kong identity cards: "A100004A", "A123456(3)"), digits
# grouped 3-4-4 (grouped phones and cards, ID numbers grouped 6-4-4-4), 6-5 (old ID numbers
# grouped 6-6-3, American Express cards grouped 4-6-5, IMEIs grouped 2-6-6-1), 6-2-6 (IMEIs
# grouped 6-2-6-1), 6-4-2 (ID numbers grouped by year, month and day), 4-3-4 (landlines, with
# their area code), 1-6-1 with slashes (Macau identity cards:
# "1/234567/8"), a dotted quad, '::' or seven colon-separated hex groups (IPv6), and from its
# first separator a MAC address's six pairs or three dotted quads of hex digits (which may hold
# no digit at all). The pattern opens with a character class so the regex engine skips everything
# else at C speed; short numbers, dates and times never reach Python.
_CORE_DIGITS: Final = (
    r"[0-9]{5}(?:[0-9]|[ \-/](?:[0-9]{5}|[0-9]{4}[ \-/][0-9]{2})| ?\([0-9A]\)|A"
    # 6-2-6: an IMEI grouped 6-2-6-1 ("490154-20-323751-8").
    r"|[ \-][0-9]{2}[ \-][0-9]{6})"
    # 3-4-4 (dotted too: "138.0013.8000"), and 3-3-4 for the tail of a landline grouped 4-3-4
    # ("0571 234 5678").
    r"|[0-9]{2}[ \-/.][0-9]{3,4}[ \-/.][0-9]{4}"
    r"|[0-9]{0,2}(?:\.[0-9]{1,3}){3}"
    # 1-6-1 with slashes: a Macau identity card.
    r"|/[0-9]{6}/[0-9]"
)
_CORE_COLONS: Final = (
    r"(?<=:)(?::|[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){6}"
    r"|(?<=[0-9A-Fa-f]{2}:)[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){4})"
)
_CORE_MAC: Final = (
    r"(?<=[0-9A-Fa-f]{2}-)[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){4}"
    r"|(?<=[0-9A-Fa-f]{4}\.)[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}"
)
_CORE: Final = re.compile(rf"[0-9:\-.](?:(?<=[0-9])(?:{_CORE_DIGITS})|{_CORE_COLONS}|{_CORE_MAC})")
# Landlines whose area code is in parentheses ("(010) 6234 5678") or has two digits after +86
# ("+86 10 6234 5678") hold none of those; looked for only in text holding ")" or "86", so that
# other text does not pay for them at every digit.
_CORE_LANDLINE: Final = re.compile(
    rf"[0-9:\-.](?:(?<=[0-9])(?:{_CORE_DIGITS}"
    r"|[0-9]{1,3}\)[ \-]?[2-9][0-9]{2,3}[ \-][0-9]{4}"
    r"|[0-9]{1,2}[ \-][2-9][0-9]{2,3}[ \-][0-9]{4})"
    rf"|{_CORE_COLONS}|{_CORE_MAC})"
)
# The run around a core: identifier characters, a single space only between digit groups
# ("138 0013 8000", "+86 138...", "(+86) 138...") and a slash only between digit groups
# ("110105/20160304/105X", and the "/7" after it, which makes it part of a longer number).
_RUN_FORWARD: Final = re.compile(
    r"(?:[0-9A-Za-z.:+()\-]|(?<=[0-9)]) (?=[0-9(+])|(?<=[0-9Xx])/(?=[0-9]))*"
)
_RUN_CHARS: Final = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.:+()-"
)
_JOIN_BEFORE: Final = frozenset("0123456789)")
_JOIN_AFTER: Final = frozenset("0123456789(+")
_SLASH_BEFORE: Final = frozenset("0123456789Xx")
_DIGITS: Final = frozenset("0123456789")

# Detailed recognisers run on a run's span only; lookbehinds still see the text before it.
# Every lookahead tests only characters a run would have included, so it answers the same at
# the end of a run as in the full text.
# Resident ID numbers of 18 characters and the first generation's of 15 digits (division,
# birth date as YYMMDD, sequence; no check digit). Either may be written in groups, with a
# space, hyphen or slash (any mix) at any of the boundaries between the division, the year
# (the date, for 15 digits), month and day and the rest: "110105-19900307-1234",
# "110105 1990 0307 1234", "110105/900307/123". One of 15 digits (no check digit) is refused
# inside a longer dashed or slashed number; a grouped one of 18, checked by its last digit,
# counts there too ("父/子：<ID>/<ID>" is two). Every candidate is validated (division, date,
# check digit) so that order numbers and the like are left alone. A foreign permanent
# resident's ID number (`9`, a province, a nationality code, then the date, sequence and
# check digit of an 18-character one) is written and grouped as one: these find it, and
# `id_ok` tells it apart.
_ID_SEP: Final = r"[ \-/]"
_ID_GROUPED_TAIL: Final = (  # after the division (year, month, day): at least one separator
    rf"(?:{_ID_SEP}[0-9]{{4}}{_ID_SEP}?[0-9]{{2}}{_ID_SEP}?[0-9]{{2}}{_ID_SEP}?"
    rf"|[0-9]{{4}}{_ID_SEP}[0-9]{{2}}{_ID_SEP}?[0-9]{{2}}{_ID_SEP}?"
    rf"|[0-9]{{6}}{_ID_SEP}[0-9]{{2}}{_ID_SEP}?"
    rf"|[0-9]{{8}}{_ID_SEP})[0-9]{{3}}[0-9Xx](?![0-9])"
)
_OLD_ID_TAIL: Final = rf"{_ID_SEP}?[0-9]{{6}}{_ID_SEP}?[0-9]{{3}}(?![0-9Xx])"
_ID_RE: Final = re.compile(
    # An X check character ends the number whatever follows: a phone number written right
    # after it ("11010519491231002X13800138000") must not hide it.
    r"(?<![0-9])(?:[1-9][0-9]{16}(?:[0-9](?![0-9])|[Xx])"
    # A grouped number with its check digit is one beside another ("父/子：<ID>/<ID>").
    rf"|[1-9][0-9]{{5}}{_ID_GROUPED_TAIL}"
    rf"|(?<![0-9][\-/])[1-9][0-9]{{5}}{_OLD_ID_TAIL}(?![\-/][0-9]))"
)
_CREDIT_RE: Final = re.compile(
    r"(?<![0-9A-Za-z])[1-9A-HJ-NP-RTUW-Y][1-9][0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}(?![0-9A-Za-z])"
)
# Cards of 16 to 19 digits, whole or in groups of four; American Express, of 15 under 34 or 37,
# whole or grouped 4-6-5.
_CARD_RE: Final = re.compile(
    r"(?<![0-9])(?:"
    # An X after seventeen digits makes them an ID number with its check character, right or
    # wrong: no card. After a card of any other length it is glued on ("...7090X951387337").
    r"(?:[0-9]{16,19}|3[47][0-9]{13})(?![0-9])(?!(?<=(?<![0-9])[0-9]{17})[Xx])"
    r"|(?<![0-9]-)(?:[0-9]{4}(?:[ \-][0-9]{4}){3}(?:[ \-][0-9]{1,3})?"
    r"|3[47][0-9]{2}[ \-][0-9]{6}[ \-][0-9]{5})(?![0-9])(?!-[0-9])"
    r")"
)
_PHONE_RE: Final = re.compile(
    # Not after a digit and a hyphen ("2024-1380013…" is an order number), unless that is the
    # end of another mobile number ("13800138000-13900139000" is two).
    r"(?<![0-9])(?:(?<![0-9]-)|(?<=1[3-9][0-9]{9}-))"
    r"(?:(?:\((?:\+|00)86\)|(?:\+|00)86|86)[ \-]?)?"
    r"1[3-9][0-9](?:[0-9]{8}(?![0-9])|[ \-][0-9]{4}[ \-][0-9]{4}(?![0-9])(?!-[0-9])"
    # Dotted 3-4-4 ("138.0013.8000"): three parts, so never an IPv4 address.
    r"|\.[0-9]{4}\.[0-9]{4}(?![0-9.]))"
)
# Landlines: an area code (010, 02x, or 0 and three more digits) in parentheses or set apart
# by a space or hyphen, or after +86 / 0086 (its 0 then optional, or in parentheses before it:
# "+86 (0)10 6234 5678", as business cards abroad write it); then a local number of 7 or 8
# digits not starting with 0 or 1, whole or grouped 3-4 or 4-4. A 0-led run of 11 or 12 digits
# without a separator is left alone: it is as often an order number.
_AREA: Final = r"(?:10|2[0-9]|[3-9][0-9]{2})"
# A local number in one piece may take an extension ("-8001"); one in groups is followed by no
# more digits (a fourth group makes a longer number: "0755-2345-6789-0123"), unless the +86
# before it says what it is.
_LOCAL_WHOLE: Final = r"[2-9][0-9]{6,7}(?![0-9])(?!-[0-9]{5})"
_LOCAL_GROUPED: Final = r"[2-9][0-9]{2,3}[ \-][0-9]{4}(?![0-9])"
_LANDLINE_RE: Final = re.compile(
    # Not the tail of a number ("1,010 2345 6789" is an amount, "0800-2000" a shift).
    r"(?<![0-9])(?<![0-9][\-,.])(?:"
    rf"(?:\((?:\+|00)86\)|(?:\+|00)86)[ \-]?(?:\(0?{_AREA}\)|\(0\)[ \-]?{_AREA}|0?{_AREA})[ \-]?"
    rf"(?:{_LOCAL_WHOLE}|{_LOCAL_GROUPED}(?!-[0-9]{{5}}))"
    rf"|(?:\(0{_AREA}\)|0{_AREA}(?=[ \-]))[ \-]?(?:{_LOCAL_WHOLE}|{_LOCAL_GROUPED}(?!-[0-9]))"
    r")"
)
# Passports (E, G, or E and a letter: "E12345678", "EA1234567") and the two permits for the
# journeys between the mainland and Hong Kong and Macao, travel documents read as passports
# are: the Mainland Travel Permit for Hong Kong and Macao Residents (H or M and eight digits,
# ten on the old booklets: "H12345678", "M1234567890") and the Exit-Entry Permit for Travelling
# to and from Hong Kong and Macao (C and eight digits, or C, a letter and seven digits on the
# electronic card: "C12345678", "CA1234567"). None has a check digit. Ten digits are tried
# first: with eight read of them a digit would follow, and between two digits no identifier is
# glued to another.
_PASSPORT_BODY: Final = r"(?:[HM][0-9]{10}|[EGHMC][0-9]{8}|[EC][A-Z][0-9]{7})"
_PASSPORT_RE: Final = re.compile(rf"(?<![0-9A-Za-z]){_PASSPORT_BODY}(?![0-9A-Za-z])")
# A letter a passport or permit can start with: a run without one holds none of them.
_PASSPORT_LETTER: Final = re.compile("[CEGHM]")
# The one shape of a passport's that a Hong Kong card of two letters with a bare check digit
# has too, and where the passport stays (`_hk_id_ok`). A permit's "CA1234567" is a card's shape
# as well, but there the card stays (`_passport_ok`).
_PASSPORT_OVER_CARD: Final = re.compile(r"E[A-Z][0-9]{7}")
# A passport or credit code refuses any letter or digit beside it, so that hex strings and
# order numbers ("a3f90939E12345678", "PO2023E12345678") are left alone; but where what it is
# glued to is an identifier too, one that ends (or starts) exactly there, that boundary is as
# good as a space ("13800138000E12345678", "li@example.com91350100M000100Y43"). The run's
# scan finds them without the boundary after them (it is looked at in `_with_glued`), and these
# find them without either, tried only where another identifier ends.
_CREDIT_BODY: Final = r"[1-9A-HJ-NP-RTUW-Y][1-9][0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}"
_PASSPORT_OPEN_RE: Final = re.compile(rf"(?<![0-9A-Za-z]){_PASSPORT_BODY}")
_CREDIT_OPEN_RE: Final = re.compile(rf"(?<![0-9A-Za-z]){_CREDIT_BODY}")
_GLUED_PASSPORT: Final = re.compile(_PASSPORT_BODY)
# Hong Kong identity cards (one or two letters, six digits, a check character in brackets or
# not: "A123456(3)", "A123456 (3)", "AB9876543") and Taiwanese ID numbers (a letter, 1 or 2 for
# a citizen, 8 or 9 for a resident certificate of 2021 on, eight digits: "A123456789"), both as
# `ID_NUMBER`. Each carries a check character, validated, so that product codes and the like
# are left alone. They are letter-led, and found and glued as passports are. A closing bracket
# ends a card whatever follows it.
_HK_ID_BODY: Final = r"[A-Z]{1,2}[0-9]{6}(?: ?\([0-9A]\)|[0-9A])"
_TW_ID_BODY: Final = r"[A-Z][1289][0-9]{8}"
_HK_ID_OPEN_RE: Final = re.compile(rf"(?<![0-9A-Za-z]){_HK_ID_BODY}")
_TW_ID_OPEN_RE: Final = re.compile(rf"(?<![0-9A-Za-z]){_TW_ID_BODY}")
_GLUED_HK_ID: Final = re.compile(_HK_ID_BODY)
_HK_ID_RE: Final = re.compile(rf"{_HK_ID_OPEN_RE.pattern}(?![0-9A-Za-z])")
_TW_ID_RE: Final = re.compile(rf"{_TW_ID_OPEN_RE.pattern}(?![0-9A-Za-z])")
_GLUED_TW_ID: Final = re.compile(_TW_ID_BODY)
# Macau resident identity cards: 1, 5 or 7, six digits and a check digit, in brackets
# ("1234567(8)") or set apart by slashes ("1/234567/8"), as `ID_NUMBER`. The check digit's
# algorithm is not public: the brackets or the slashes are what say "card", as a Hong Kong
# card's bracketed check does, and a bare run of eight digits is left alone. A slashed one is
# none inside a longer slashed number or a path ("2025/1/234567/8", "files/1/234567/8/x"): the
# slash before it is looked behind for, the one after it in `_mo_id_ok`. Found and glued as the
# Hong Kong cards are; a closing bracket ends one whatever follows it.
_MO_ID_BRACKETED: Final = r"[157][0-9]{6}\([0-9]\)"
_MO_ID_SLASHED: Final = r"[157]/[0-9]{6}/[0-9]"
_MO_ID_OPEN_RE: Final = re.compile(
    rf"(?<![0-9A-Za-z])(?:{_MO_ID_BRACKETED}|(?<!/){_MO_ID_SLASHED})"
)
_MO_ID_RE: Final = re.compile(rf"{_MO_ID_OPEN_RE.pattern}(?![0-9A-Za-z])")
_GLUED_MO_ID: Final = re.compile(f"{_MO_ID_BRACKETED}|{_MO_ID_SLASHED}")
_GLUED_CREDIT: Final = re.compile(_CREDIT_BODY)
# An IPv6 address glued on is the whole token from there, or its part before a letter that is
# no hex digit or another address (`_ipv6_from`): at most 45 characters; where another address
# follows, up to that one's '::' (`_first_of_two`): 73, with seven groups of four on either
# side of where they meet and a letter between. Possessive and bounded, so that each try reads
# that far at most; what goes on past the bound is read as a letter after it would be: no
# whole token that long is an address, and another glued on may follow the letter
# ("fe80::1:0:0:0:0:0:0:0gfe80::2:0:0:0:0:0:0:0"). Its stops are looked at in `_glued_ipv6`.
_GLUED_IPV6: Final = re.compile(r"[0-9A-Za-z:.]{2,73}+")
# A stop is an address's only between two decimal digits, in the dotted quad it may end with
# ("::ffff:192.168.0.1"). Any other ends the token as a sentence's stop does ("fe80::1.Then"),
# and another address may start right after it ("fe80::1.fe80::2").
_STRAY_STOP: Final = re.compile(r"(?<![0-9])\.|\.(?![0-9])")
_ALNUM: Final = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LETTERS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
# Devices and their logs write each part in three digits ("192.168.001.010"); a part with a
# leading zero otherwise is no address's ("1.01.2.3" reads as a version).
_OCTET_PADDED: Final = r"(?:25[0-5]|2[0-4][0-9]|[01][0-9]{2})"
# "v1.2.3.4" and the tail of "1.2.3.4.5" are versions, not addresses.
_IPV4_RE: Final = re.compile(
    rf"(?<![0-9vV])(?<![0-9A-Za-z]\.)"
    rf"(?:(?:{_OCTET}\.){{3}}{_OCTET}|(?:{_OCTET_PADDED}\.){{3}}{_OCTET_PADDED})"
    r"(?![0-9])(?!\.[0-9])"
)
# IPv6 is judged on whole tokens (those holding two colons) so that no suffix of a longer
# colon run ("1:2:3:4:5:6:7:8:9") or dotted quad ("1.2.3.4.5") is ever tried on its own; only
# a letter that is no hex digit, which cannot continue an address, ends one inside a token
# (`_ipv6_from`). A token's stops are those between two digits (see `_STRAY_STOP`). Runs of
# letters, digits and colons, each taken whole: a class searched per character with the stops'
# lookarounds beside it made the slowest shapes ("::1g::1g...") a third slower.
_IPV6_TOKEN_RE: Final = re.compile(
    r"(?<![0-9A-Za-z:])[0-9A-Za-z:]++(?:(?<=[0-9])\.(?=[0-9])[0-9A-Za-z:]++)*+"
)
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
# The groups of an IPv6 address on one side of its '::', and the most characters one has
# (eight groups of four and their colons; 45 with a dotted quad at its end).
_HEX_GROUPS: Final = re.compile("[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}")
_IPV6_MAX: Final = 45
# The most characters between the '::' of two addresses glued one right after the other: the
# first's groups after it and the second's before it, seven of four and their colons on either
# side, and a hex digit skipped between them.
_BETWEEN_DOUBLE_COLONS: Final = 2 * 34 + 1
_HAS_DIGIT: Final = re.compile("[0-9]")
# In a token of `_IPV6_TOKEN_RE`'s characters: a letter that is no hex digit.
_NO_HEX_LETTER: Final = re.compile("[G-Zg-z]")
# MAC addresses (EUI-48): six pairs of hex digits set apart by one and the same ':' or '-', or
# three groups of four set apart by dots. Not glued to a letter or digit, nor before a colon
# run on ('::') or a separator and more hex digits (an IPv6 address, a longer hex string, a
# seventh pair): those are no MAC cut out of them. What is before it is looked at in `_mac_ok`.
_MAC_RE: Final = re.compile(
    r"(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})"
    r"(?![0-9A-Za-z]|::|[:\-.][0-9A-Fa-f]++(?![0-9A-Za-z]))"
)
# All zeros and the broadcast address name no device: a placeholder, and every device at once.
_NO_DEVICE: Final = frozenset({"000000000000", "ffffffffffff"})
_MAC_SEPARATORS: Final = frozenset(":-.")
_WITHOUT_MAC_SEPARATORS: Final = dict.fromkeys(map(ord, _MAC_SEPARATORS))
# IMEIs (3GPP TS 23.003): a type allocation code of eight digits, a serial number of six and
# the Luhn check digit of the fourteen before it, bare or grouped as devices and labels print
# them: 2-6-6-1 ("49-015420-323751-8", "35 209900 176148 1") and 6-2-6-1
# ("490154-20-323751-8"). The first two digits name the body that allocated the code: only
# those GSMA lists, so that of the random 15-digit numbers passing Luhn five in six are none. A
# grouped one is none inside a longer dashed number, as a grouped card is not. IMEISV (16
# digits, no check) and MEID (14 hex digits) are not read: with no check they would take order
# and serial numbers.
_IMEI_REPORTING_BODIES: Final = frozenset(
    "01 10 30 33 35 44 45 49 50 51 52 53 54 86 91 98 99".split()  # noqa: SIM905 - one line of text
)
_IMEI_BODY: Final = "(?:" + "|".join(sorted(_IMEI_REPORTING_BODIES)) + ")"
_IMEI_GROUPED: Final = (
    rf"(?<![0-9]-){_IMEI_BODY}(?:[ \-][0-9]{{6}}|[0-9]{{4}}[ \-][0-9]{{2}})"
    r"[ \-][0-9]{6}[ \-][0-9](?![0-9])(?!-[0-9])"
)
_IMEI_RE: Final = re.compile(rf"(?<![0-9])(?:{_IMEI_BODY}[0-9]{{13}}(?![0-9])|{_IMEI_GROUPED})")
# A run of digits alone is read in `_digit_run`: a whole run read here is a grouped one.
_IMEI_GROUPED_RE: Final = re.compile(rf"(?<![0-9]){_IMEI_GROUPED}")
# The same recognisers as alternatives in precedence order, to test a whole run in one call.
_WHOLE_CATEGORIES: Final = {
    "id": ID_NUMBER,
    "credit": CREDIT_CODE,
    "card": BANK_ACCOUNT,
    "phone": PHONE,
    "landline": PHONE,
    "hk_id": ID_NUMBER,
    "tw_id": ID_NUMBER,
    "mo_id": ID_NUMBER,
    "passport": PASSPORT,
    "ipv4": IP,
    "mac": DEVICE_ID,
    "imei": DEVICE_ID,
}
_WHOLE_RE: Final = re.compile(
    "|".join(
        f"(?P<{name}>{pattern.pattern})"
        for name, pattern in (
            ("id", _ID_RE),
            ("credit", _CREDIT_RE),
            ("card", _CARD_RE),
            ("phone", _PHONE_RE),
            ("landline", _LANDLINE_RE),
            # Before the Hong Kong card: "EA1234567" is a passport (see `_hk_id_ok`).
            ("passport", _PASSPORT_RE),
            ("hk_id", _HK_ID_RE),
            ("tw_id", _TW_ID_RE),
            ("mo_id", _MO_ID_RE),
            ("ipv4", _IPV4_RE),
            ("mac", _MAC_RE),
            ("imei", _IMEI_GROUPED_RE),
        )
    )
)

# --- precise locations ---------------------------------------------------------------------

# Coordinates in decimal degrees, as apps, devices and their logs write them. Alone, such a
# number is no location: a pair is (`_locations`). Full-width digits, stops and commas come
# folded with their run, other scripts' digits and every space (a tab too) with the
# separators. An ideographic or full-width stop between ASCII digits ("31。230416"), which an
# IPv4 address is read with, is not: coordinates are written by software and pasted by people,
# and looking for one in every string of Chinese prose doubled what they cost office prose. A number
# glued on its outer side to a letter, a digit, or a stop after one of them ("v1.31.230416",
# "1.234567,2.345678.9") is part of something else: a version, an address, a file name (a
# hemisphere's letter is the one letter a coordinate takes there: `_hemisphere`). So is
# one after a dash glued to a letter or digit (a range, a code) or after a time's colon
# ("10:30:45.123456").
# Where a number with four decimals or more may be: a search for one character, as for the
# stops of an address.
_FOUR_DECIMALS: Final = re.compile(r"\.(?<=[0-9]\.)[0-9]{4}")
# A key naming the number after it: English ones (`lat`, `lng`, `lon`, `long`, `latitude`,
# `longitude`, in any case, as a word or the tail of a camelCase name: `gpsLat`) and Chinese
# ones (纬度, 经度), then a quote, `=`, `:` or `：` and spaces as a query string, JSON or a
# log line writes them: `lat=39.9042`, `"lat": 39.9042`, `"lat":"39.9042"`, `纬度：39.9042`.
_LOCATION_KEY: Final = (
    "(?:(?<![A-Za-z0-9])(?i:latitude|longitude|lat|lng|long|lon)"
    "|(?<=[a-z0-9])(?:Latitude|Longitude|Lat|Lng|Long|Lon)|\u7eac\u5ea6|\u7ecf\u5ea6)"
)
_COORDINATE_NUMBER: Final = re.compile(
    r"(?<![0-9A-Za-z_\-])(?<![0-9A-Za-z_][.\-])(?<![0-9]:)"
    r"-?(?P<units>[0-9]{1,3})\.(?P<decimals>[0-9]{4,}+)(?![0-9A-Za-z_])(?!\.[0-9A-Za-z_])"
)
# Searched for in the characters right before a number, up to it.
_COORDINATE_KEY: Final = re.compile(
    rf"(?P<key>{_LOCATION_KEY})[\"']?[ ]*(?:[=:\uff1a][ ]*)?[\"']?\Z"
)
_KEY_REACH: Final = 16
# Between the two numbers of a pair without keys: a comma (or `，`) and any spaces, or a space.
_PAIR_SEPARATOR: Final = re.compile("[,\uff0c] *| ")
# Between one keyed number and the key of the other: what a query string, JSON (pretty-printed
# too) or a sentence puts there (`&`, `, "`, `，`), and the head of the other's name
# (`gps_lng`, `gpsLng`, `loc.lng`).
_KEYED_GAP: Final = re.compile("[\\s,;&\"'\uff0c\uff1b\u3001]{0,16}[A-Za-z0-9_.]{0,32}")
# Decimals a number without a key needs: five are about a metre to ten; fewer are as often a
# ratio, a price or a measurement as a place.
_PAIR_DECIMALS: Final = 5
# The second number of a keyed pair: redacted as `LOCATION`, not counted again.
_PAIRED_LOCATION: Final = LOCATION + " (paired)"
# Hemispheres, as GPS modules, device logs and trackers write them: a capital letter right
# before the number (`N31.230416`) or after it, a degree sign and a space allowed between
# (`31.230416°N`, `31.230416 N`), or a Chinese word before it (`北纬31.230416°`, `东经：121.4737`).
# Only capitals: after a number, lower-case `s`, `w`, `e` and `n` are seconds, watts, an
# exponent and a nano-something in logs. A letter glued into a word (`EN31.230416`,
# `ONE121.473701`) is none. A hemisphere names the number as a key does, and is part of the
# location: it is redacted with the number.
_HEMISPHERE_BEFORE: Final = re.compile(
    "(?:(?<![0-9A-Za-z_])(?P<letter>[NSEW])"
    "|(?P<word>[\u5317\u5357]\u7eac|[\u4e1c\u897f]\u7ecf)[ ]*(?:[:\uff1a][ ]*)?)\\Z"
)
_HEMISPHERE_REACH: Final = 8
# What names a latitude: the rest name a longitude.
_LATITUDE_HEMISPHERES: Final = frozenset({"N", "S", "\u5317\u7eac", "\u5357\u7eac"})
# After a number (degrees, or the minutes or seconds of degrees-minutes-seconds): a degree sign,
# then a letter; then nothing a number would run on with, as after a number without one.
_HEMISPHERE_AFTER: Final = re.compile(
    "(?P<degree>\u00b0?)(?:(?P<space> ?)(?P<letter>[NSEW]))?(?![0-9A-Za-z_])(?!\\.[0-9A-Za-z_])"
)
# What may stand before a number without a hemisphere before it: as `_COORDINATE_NUMBER`
# reads it, but with no sign (a hemisphere says it already: `S-33.8688` is no coordinate).
_NOTHING_GLUED_BEFORE: Final = re.compile(r"(?<![0-9A-Za-z_\-])(?<![0-9A-Za-z_][.\-])(?<![0-9]:)")
_UNSIGNED_DEGREES: Final = re.compile(r"(?P<units>[0-9]{1,3})\.(?P<decimals>[0-9]{4,}+)")
# Degrees, minutes and seconds as devices print them, only with a hemisphere on both numbers
# of the pair: `31°13'49.5"N`, `31°13′49.5″N`, or degrees and decimal minutes, the NMEA-style
# form of GPS units, `N31°13.825'`. Minutes without seconds need two decimals (about twenty
# metres); whole minutes are a couple of kilometres.
_DEGREES_MINUTES: Final = re.compile(
    "(?P<degrees>[0-9]{1,3})\u00b0 ?"
    "(?:(?P<minutes>[0-9]{1,2})['\u2032] ?(?P<seconds>[0-9]{1,2}(?:\\.[0-9]+)?)[\"\u2033]"
    "|(?P<decimal_minutes>[0-9]{1,2}\\.[0-9]{2,})['\u2032])"
)
# The sign of a coordinate typed as a minus sign (U+2212), which folds to a space with the
# other dashes: before a number in decimal degrees that stands apart, it is a minus.
_MINUS_SIGN: Final = "\u2212"
# A search, not a walk over every character in Python: one degree sign in a long document is
# enough to look for them.
_DEGREE_SIGN: Final = re.compile("\u00b0")
_SIGNED_DEGREES: Final = re.compile("(?<![0-9A-Za-z_])(?<!\\d)\u2212(?=\\d{1,3}[.\uff0e]\\d{4})")


# --- e-mail addresses ----------------------------------------------------------------------

_LOCAL_CHARS: Final = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._%+-"
)
_LOCAL_MAX: Final = 64

# Internationalised addresses (RFC 6531/6532) write the local part and the domain's labels in
# any script: "josé@correo.es", "иван@пример.рф", "zhang.wei@公司.cn", "张伟@例子.中国". Letters
# of the scripts written without spaces between words (Han, kana, bopomofo: "CJK" below) are
# kept apart from every other letter, because prose in them runs straight into an address and
# where it ends has to be settled by rule (see `_local_start` and the top-level domains below).
_CJK_BLOCKS: Final = (
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x302F),  # Hangzhou numerals, ideographic tone marks
    (0x3031, 0x3035),  # kana repeat marks
    (0x3038, 0x303C),
    (0x3041, 0x30FF),  # hiragana, katakana (their punctuation is not a letter and stays out)
    (0x3100, 0x312F),  # bopomofo
    (0x31A0, 0x31BF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF66, 0xFF9F),  # half-width katakana
    (0x1B000, 0x1B16F),
    (0x20000, 0x3FFFF),
)
# No letter lies beyond. Plane 14 holds tags and variation selectors: the selectors are
# combining marks, but Default_Ignorable, read as invisible characters (above), never as
# part of an address.
_LAST_LETTER: Final = 0x3FFFF


def _letter_classes() -> tuple[set[int], set[int], set[int]]:
    """Code points outside ASCII that can be part of an address: the CJK letters (with their
    marks and the ideographic numerals), then the letters and the combining marks of every
    other script."""
    in_cjk = bytearray(_LAST_LETTER + 1)
    for first, last in _CJK_BLOCKS:
        in_cjk[first : last + 1] = b"\x01" * (last + 1 - first)
    cjk: set[int] = set()
    letters: set[int] = set()
    marks: set[int] = set()
    for cp in range(0x80, _LAST_LETTER + 1):
        kind = unicodedata.category(chr(cp))
        if in_cjk[cp]:
            if kind[0] in "LM" or kind == "Nl":
                cjk.add(cp)
        elif kind[0] == "L":
            letters.add(cp)
        elif kind[0] == "M":
            marks.add(cp)
    return cjk, letters, marks


_CJK_CPS, _WORD_LETTER_CPS, _WORD_MARK_CPS = _letter_classes()

# A local part written in CJK takes at most this many characters before the '@'. Nothing in
# "请发邮件到张伟@例子.中国" says where the name begins, so a bound has to: four characters hold a
# Chinese name with a two-character surname and given name and most role names ("客服中心"),
# and cost at most two characters of the sentence before a two-character name ("件到张伟").
# A longer local part keeps its first characters, but what the partner sees is no longer an
# address. A local part in any other script is written with spaces around it and is taken
# whole, as an ASCII one always was.
_LOCAL_CJK_MAX: Final = 4

# The top-level domains written in CJK (IANA root zone), longest first. After the final dot
# the prose goes on without a break ("例子.中国谢谢"), so the domain ends where a known one
# does. After a CJK label any other two CJK characters are taken as well ("例子.未知的"): two
# is the length of most of these, and a top-level domain added later must not let its address
# through. After an ASCII label only a known one is: "li@example.com.谢谢" ends at "com".
_CJK_TLDS: Final = sorted(
    (  # noqa: SIM905 - seventy names read better as lines of text than one to a line
        "中国 中國 公司 网络 網絡 在线 网站 网址 网店 商店 商城 商标 集团 企业 信息 新闻 手机 "
        "移动 联通 游戏 娱乐 时尚 购物 珠宝 健康 食品 餐厅 机构 政府 政务 公益 慈善 世界 八卦 "
        "佛山 广东 香港 澳門 台湾 台灣 点看 微博 中信 工行 谷歌 大拿 嘉里 手表 家電 通販 書籍 "
        "新加坡 中文网 我爱你 淡马锡 天主教 诺基亚 飞利浦 组织机构 大众汽车 香格里拉 電訊盈科 "
        "嘉里大酒店 みんな コム セール ストア ポイント クラウド グーグル ファッション"
    ).split(),
    key=len,
    reverse=True,
)
# A dot, or its full-width form (an address typed in full-width mode). The ideographic full
# stops join labels too ("163。com", typed so to dodge address harvesters; IDNA reads them as
# dots), but only between two ASCII letters or digits: after CJK text one ends a sentence, and
# a mention may be followed by any word ("请@李明。公司明天放假", "谢谢@李明。OK").
_DOT: Final = "(?:[.\uff0e]|(?<=[A-Za-z0-9])[\u3002\uff61](?=[A-Za-z0-9]))"

# '#' typed for the '@' ("zhangsan#163.com", common on Chinese pages), and an '@' with spaces
# around it ("zhangsan @ example.com"), are read only before an ASCII domain under a top-level
# domain mail is sent under: a country's code (ISO 3166, less the ones never delegated, and uk,
# eu, ac) or one of a few generic ones. Elsewhere '#' is an issue number, a fragment of a URL,
# a CSS selector, "C#.NET", a hashtag; a spaced '@' a product of matrices ("x @ self.weight")
# or a word of chat ("Lunch @ Mr.Wong", "cc @ zhang.wei").
_MAIL_TLDS: Final = frozenset(
    (  # noqa: SIM905 - some 270 names read better as lines of text than one to a line
        "com net org edu gov mil int info biz pro asia mobi top xyz vip club online site tech "
        "shop cloud email "
        "ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo "
        "br bs bt bv bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk "
        "dm do dz ec ee eg er es et eu fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp gq "
        "gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh "
        "ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn "
        "mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg "
        "ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sj sk sl sm sn "
        "so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug uk us uy "
        "uz va vc ve vg vi vn vu wf ws ye yt za zm zw"
    ).split()
) - frozenset(
    # Less the codes that are also a syllable of pinyin ("cc @ wang.li", "Lunch @ Mr.Ma") or a
    # file's extension ("README.md#usage.md", "foo.py#L10.py"): after a '#' or a spaced '@'
    # such a "domain" is far more often a name or a file than a mailbox, and an address under
    # one is still found with a plain '@'.
    (  # noqa: SIM905 - as above
        "ai an ba bi bo bu ca ci cu de er fo fu ga ge gu hu ke la li lu ma me mo mu na ne ni "
        "nu pa pe re sa se si so "
        "am cc in md ml pl ps py rs sh"
    ).split()
)
# An ASCII label of a domain name (RFC 1035 2.3.1, digits first too).
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
# A domain under one of those: ASCII labels (each taken atomically, as in `_email_patterns`),
# the top-level one captured to be looked up.
_MAIL_DOMAIN: Final = re.compile(rf"(?>{_LABEL}{_DOT})+([A-Za-z]{{2,63}})(?![A-Za-z\-])")


@dataclass(frozen=True, slots=True)
class _EmailPatterns:
    # Searched from a lower bound to the '@' (as the string's end): the run reaching the '@'.
    cjk_run: re.Pattern[str]
    word: re.Pattern[str]  # one letter or mark of another script, outside ASCII
    domain: re.Pattern[str]


def _email_patterns(cjk: str, word: str, word_letters: str) -> _EmailPatterns:
    """The recognisers of addresses, given the bodies of the character classes of CJK letters,
    of the other letters and marks, and of the other letters alone."""
    return _EmailPatterns(
        re.compile(f"[{cjk}]++\\Z"),
        re.compile(f"[{word}]"),
        re.compile(
            # A label is either CJK (with digits and hyphens) or of the other scripts, never a
            # mix: "li@example.com请回复.谢谢" must not make "com请回复" a label.
            # Each label is taken atomically: a label of digits fits both kinds, and a run of
            # them with no top-level domain after would otherwise be split 2**n ways.
            rf"(?>(?:[A-Za-z0-9{word}](?:[A-Za-z0-9{word}\-]{{0,61}}[A-Za-z0-9{word}])?"
            rf"|[0-9{cjk}](?:[0-9{cjk}\-]{{0,61}}[0-9{cjk}])?){_DOT})+"
            # A digit may follow a letter top-level domain ("li@163.com13800138000"); a
            # punycode (IDN) one takes every letter, digit and hyphen there is.
            r"(?:[A-Za-z]{2,63}(?![A-Za-z\-])|xn--[A-Za-z0-9\-]{1,59}(?![A-Za-z0-9\-])"
            # One in another script written with spaces (".рф", ".한국", ".भारत") is its whole
            # run of letters.
            rf"|[A-Za-z{word_letters}][A-Za-z{word}]{{1,62}}(?![A-Za-z{word}\-])"
            # One in CJK: see _CJK_TLDS.
            rf"|(?=[{cjk}])(?:{'|'.join(_CJK_TLDS)}|(?<=[{cjk}]{_DOT})[{cjk}]{{2}}))"
        ),
    )


def _bmp(codepoints: set[int]) -> str:
    return _char_class(cp for cp in codepoints if cp <= 0xFFFF)


# A character missing from a class that reaches beyond the Basic Multilingual Plane is tested
# against each of its hundreds of astral ranges, and every local part and domain ends on one:
# strings without an astral character (all but a few) are read with classes that stop at the
# BMP, and the full ones are compiled the first time a string needs them.
_FIRST_CJK: Final = "\u3005"
_EMAIL_BMP: Final = _email_patterns(
    _bmp(_CJK_CPS), _bmp(_WORD_LETTER_CPS | _WORD_MARK_CPS), _bmp(_WORD_LETTER_CPS)
)
_EMAIL_ALL_CLASSES: Final = (
    _char_class(_CJK_CPS),
    _char_class(_WORD_LETTER_CPS | _WORD_MARK_CPS),
    _char_class(_WORD_LETTER_CPS),
)
del _CJK_CPS, _WORD_LETTER_CPS, _WORD_MARK_CPS


@functools.cache
def _email_astral() -> _EmailPatterns:
    return _email_patterns(*_EMAIL_ALL_CLASSES)


# --- validation ----------------------------------------------------------------------------

# How a subject id's characters are read (`keys.canonical_subject_id`): full-width ASCII as
# ASCII, the decimal digits of every script as ASCII digits. Nothing is removed: its separators
# are part of an id that is no ID number.
SUBJECT_ID_READ: Final[dict[int, int]] = {**_FOLD_TABLE, **_OTHER_DIGITS}

# What `gateway.idnumber` reads past in a resident ID number written with more than ASCII
# letters and digits: built here, from the scanner's tables. Written in groups it is the same
# number, whatever it is grouped with: a minor's card must not pass as no card at all for want
# of its separators. Dropped from it: every whitespace character (line breaks too: the field
# holds one value), every dash and the prolonged sound mark (no word is in the way here), the
# slashes the free-text scanner takes for separators too, and every invisible character the
# free-text scanner looks through (zero-width space and joiners, soft hyphen, direction marks,
# variation selectors, NUL, ...). Full-width forms, the digits of every script and Chinese
# numerals fold as in free text.
ID_READ: Final[dict[int, int | None]] = {
    **_FOLD_TABLE,
    **_OTHER_DIGITS,
    **_CHINESE_DIGITS,
    **dict.fromkeys(
        map(ord, _WHITESPACE | _DASHES | _INVISIBLE_CHARS | {*_SOUND_MARKS, "-", "/", "\uff0f"})
    ),
}


# Credit codes of central bodies carry the national division code 100000.
_CREDIT_REGIONS: Final = PROVINCES | {"10"}

_CREDIT_CHARSET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_VALUES: Final = {c: i for i, c in enumerate(_CREDIT_CHARSET)}
_CREDIT_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_LUHN_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn_ok(digits: str) -> bool:
    total = sum(map(int, digits[-1::-2])) + sum(
        map(_LUHN_DOUBLED.__getitem__, map(int, digits[-2::-2]))
    )
    return total % 10 == 0


def _card_ok(digits: str) -> bool:
    if len(digits) == 15:  # American Express alone issues cards of 15
        return digits[:2] in ("34", "37") and _luhn_ok(digits)
    # Issuer prefixes in use for 16-19 digit cards (UnionPay 62, Visa 4, Mastercard 5 and
    # 2221-2720, JCB 35, the old domestic 9xxx debit cards): date-led order numbers and
    # timestamps that happen to pass Luhn are not cards.
    if digits[0] not in "34569" and not 2221 <= int(digits[:4]) <= 2720:
        return False
    if len(digits) == 18 and looks_like_id(digits):
        return False
    return _luhn_ok(digits)


def _credit_ok(value: str) -> bool:
    if value[2:4] not in _CREDIT_REGIONS:
        return False
    if value.isdigit() and looks_like_id(value):
        return False
    total = sum(map(operator.mul, map(_CREDIT_VALUES.__getitem__, value[:17]), _CREDIT_WEIGHTS))
    return _CREDIT_CHARSET[(31 - total % 31) % 31] == value[17]


# Hong Kong identity cards: letters A=10 ... Z=35, the space a one-letter number is padded
# with in front 36, digits themselves; weights 9 to 2 over the eight leading characters.
_HK_VALUES: Final = {
    " ": 36,
    **{str(d): d for d in range(10)},
    **{chr(ord("A") + i): 10 + i for i in range(26)},
}
_HK_CHECKS: Final = "0123456789A"  # 11 - (sum mod 11), where 11 is 0 and 10 is A
# Taiwanese ID numbers: each letter stands for two digits, in an order of its own (the letters
# added after the first ones, I, O, W and Z among them, took the numbers left).
_TW_VALUES: Final = {c: 10 + i for i, c in enumerate("ABCDEFGHJKLMNPQRSTUVXYWZIO")}
_TW_WEIGHTS: Final = (8, 7, 6, 5, 4, 3, 2, 1, 1)


def _hk_id_ok(value: str) -> bool:
    """Whether ``value``, a Hong Kong identity card as `_HK_ID_BODY` reads it, holds its check
    and is no passport."""
    # "EA1234567" is a passport's shape (an E, a letter, seven digits) and that of a card of two
    # letters with a bare check digit. The check is all the card reading has, and one passport
    # in eleven passes it by chance: the passport stays. A bracketed check ("EA123456(3)") is
    # no passport's and says card.
    if value[-1] != ")" and _PASSPORT_OVER_CARD.fullmatch(value) is not None:
        return False
    check = value[-2] if value[-1] == ")" else value[-1]
    body = value[: value.index("(")].rstrip(" ") if value[-1] == ")" else value[:-1]
    total = sum(map(operator.mul, map(_HK_VALUES.__getitem__, body.rjust(8)), range(9, 1, -1)))
    return _HK_CHECKS[(11 - total % 11) % 11] == check


def _passport_ok(value: str) -> bool:
    """Whether ``value``, a travel document as `_PASSPORT_BODY` reads it, is no Hong Kong
    identity card."""
    # "CA1823611" is an electronic exit-entry permit's shape (a C, a letter, seven digits) and
    # that of a card of two letters with a bare check digit. Such cards were read as cards
    # before the permits were read at all, and C is a card's letter as much as a permit's:
    # where the check holds, the card stays (unlike a passport's E, see `_hk_id_ok`).
    return value[0] != "C" or value[1] in _DIGITS or not _hk_id_ok(value)


def _mo_id_ok(norm: str, end: int) -> bool:
    """Whether the Macau identity card as `_MO_ID_RE` reads it, ending at ``end``, is no part of
    a path or a longer slashed number: bracketed, or with no slash right after it."""
    # Not a lookahead: a run takes a slash in only before a digit, so at the end of
    # "1/234567/8/x" the run, and a lookahead with it, stops short of the slash. A closing
    # bracket ends a card whatever follows it: "1234567(8)/5123456(0)" is two.
    return norm[end - 1] == ")" or not norm.startswith("/", end)


def _tw_id_ok(value: str) -> bool:
    """Whether ``value``, a Taiwanese ID number as `_TW_ID_BODY` reads it, holds its check."""
    tens, units = divmod(_TW_VALUES[value[0]], 10)
    total: int = tens + 9 * units + sum(map(operator.mul, map(int, value[1:]), _TW_WEIGHTS))
    return total % 10 == 0


def _ipv6_ok(value: str) -> bool:
    if not value.strip(":"):
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _ipv6_from(token: str, start: int) -> tuple[int, int] | None:
    """Offsets within ``token`` of the IPv6 address starting at ``start``, if any: the rest of
    the token, or the part before a letter that is no hex digit. A single colon after it ends
    it, as one closing a clause does ("fe80::1: refused", "fe80::abc:li@qq.com"): no address
    ends in one."""
    end = len(token)
    if token.endswith(":") and not token.endswith("::"):
        end -= 1
    # A letter that is no hex digit cannot continue an address: it ends there, as an IPv4
    # address ends before a letter ("fe80::1x", "192.168.1.1x"). Where hex digits run up to the
    # letter they are all the address's ("fe80::1abcg"): a group that grows too long, or groups
    # too many, make no address, and a longer hex string is not cut into one.
    letter = _NO_HEX_LETTER.search(token, start, end)
    # Looked for first: `ipaddress` refuses any such letter, and its parse of a token holding
    # one, failing, was most of what glued addresses ("::1g::1g...") cost.
    if letter is None and _ipv6_ok(token[start:end]):
        return start, end
    split = _first_of_two(token, start, end if letter is None else letter.start())
    if split is not None:
        return start, split
    if letter is None:
        return None
    address = token[start : letter.start()]
    if address.endswith(":") and not address.endswith("::"):
        address = address[:-1]
    if not address or address[-1] not in _HEX_DIGITS or not _ipv6_ok(address):
        return None  # "fe80::x", "::x": no hex run ends at the letter
    return start, start + len(address)


def _first_of_two(token: str, start: int, stop: int) -> int | None:
    """Where the first of two IPv6 addresses written one right after the other in
    ``token[start:stop]`` ends, if it holds two: each with a '::', which no address holds twice.
    The second starts inside a group between the two, right after the first or one hex digit
    later ("fe80::1fe80::2", "fe80::1afe80::2" finds "fe80::1a" and "fe80::2"), where the token
    up to the second holds a digit, or a group between them is longer than four: a name such as
    "Add::Face::Bad" does neither. A letter stands on one side of the cut, or is the digit
    skipped, or stands on either side of a decimal one skipped ("fe80::100a0fe80::2", where
    neither group can take it): between two digits nothing says where one ends. The groups are
    read by their shape, so that a long token costs no more than one of two addresses' length:
    one `ipaddress` parse, of the address found."""
    first = token.find("::", start, min(stop, start + _IPV6_MAX))
    if first == -1:
        return None
    second = token.find("::", first + 2, min(stop, first + 4 + _BETWEEN_DOUBLE_COLONS))
    if second == -1:
        return None
    if not (
        _HAS_DIGIT.search(token, start, second)
        or any(len(g) > 4 for g in token[first + 2 : second].split(":"))
    ):
        return None
    head = token[start:first]
    if head and _HEX_GROUPS.fullmatch(head) is None:
        return None
    groups_before = head.count(":") + 1 if head else 0
    for skip in (0, 1):
        for cut in range(first + 3, second - skip):
            if ":" in token[cut - 1 : cut + skip + 1]:
                continue  # the cut, and a digit skipped, are inside one group
            if token[cut] not in _LETTERS and (
                token[cut - 1] not in _LETTERS or (skip and token[cut + 1] not in _LETTERS)
            ):
                continue
            tail, rest = token[first + 2 : cut], token[cut + skip : second]
            if (
                groups_before + tail.count(":") < 7
                and _HEX_GROUPS.fullmatch(tail) is not None
                and _HEX_GROUPS.fullmatch(rest) is not None
                and _ipv6_ok(token[start:cut])
            ):
                return cut
    return None


def _ipv6_span(token: str) -> tuple[int, int] | None:
    """Offsets within ``token`` of the IPv6 address it holds, if any."""
    span = _ipv6_from(token, 0)
    if span is not None:
        return span
    # "IP:2001:db8::1", "IPv6:fe80::1", "地址:fe80::1": a label or a lone colon glued on in
    # front. A label that could be the first group of an address ("12:30:45", MAC
    # "00:1A:2B:...") is not stripped.
    colon = token.find(":")
    label = token[:colon]
    if token.startswith("::", colon):
        return None
    if label and len(label) <= 4 and not label.isalpha() and set(label) <= _HEX_DIGITS:
        return None
    return _ipv6_from(token, colon + 1)


def _mac_ok(norm: str, start: int, end: int) -> bool:
    """Whether ``norm[start:end]``, a MAC address as `_MAC_RE` reads it, names a device (with
    a hex letter in it: see below) and is not the tail of a longer address: after a separator,
    what is before that must be a label ("MAC:", "src-"), not a group of hex digits
    ("1:00:1a:...", seven pairs) or another separator ("::" of an IPv6 address)."""
    hex_digits = norm[start:end].translate(_WITHOUT_MAC_SEPARATORS)
    # Twelve decimal digits in pairs or fours are as often a time stamp (`25-03-15-10-30-00`)
    # or a version (`2025.0315.0001`) as an address: a device's has a letter but once in 280
    # ((10/16)**12), and those few stay.
    if hex_digits.isdecimal() or hex_digits.lower() in _NO_DEVICE:
        return False
    if start == 0 or norm[start - 1] not in _MAC_SEPARATORS:
        return True
    separator = start - 1
    label = separator
    while label > 0 and norm[label - 1] in _HEX_DIGITS:
        label -= 1
    before = norm[label - 1] if label > 0 else ""
    if label == separator:
        return before not in _MAC_SEPARATORS
    return before in _ALNUM


# --- matching ------------------------------------------------------------------------------

_Span = tuple[int, int, str]
# (precedence, start, end, category): sorting puts the candidate that wins an overlap first.
_Candidate = tuple[int, int, int, str]


def _local_start(norm: str, at: int, floor: int, patterns: _EmailPatterns) -> int:
    """Where the local part ending at the '@' at ``at`` begins: ``at`` if there is none.

    It is all CJK (at most `_LOCAL_CJK_MAX` characters) or all of the other scripts (with the
    ASCII punctuation addresses use), never both, decided by the character before the '@':
    "邮箱zhangsan@example.com" and "QQ邮箱13800138000@qq.com" must not take the label for part
    of the address.
    """
    if at <= floor:
        return at
    if norm[at - 1] >= _FIRST_CJK:
        cjk = patterns.cjk_run.search(norm, max(floor, at - _LOCAL_CJK_MAX), at)
        if cjk is not None:
            return cjk.start()
    word = patterns.word.match
    start = at
    while start > floor:
        c = norm[start - 1]
        if c not in _LOCAL_CHARS and (c < "\x80" or not word(c)):
            break
        start -= 1
        if at - start > _LOCAL_MAX:
            return at  # longer than a local part may be: a run of text, not an address
    while start < at and norm[start] == ".":
        start += 1
    return start


def _emails(norm: str, astral: bool) -> list[_Span]:
    found: list[_Span] = []
    patterns = _email_astral() if astral else _EMAIL_BMP
    floor = 0  # a local part never reaches back into the previous address
    for local_end, domain_start in _at_signs(norm):
        if local_end < floor:
            continue
        # A '#' or an '@' alone is one character; a spaced '@' is the one that is more.
        if domain_start - local_end == 1:
            hashed = norm[local_end] == "#"
            mail_domain = hashed
        else:
            hashed = False
            mail_domain = norm[local_end:domain_start].strip(" ") == "@"
        # The domain first: an @-mention ("@张伟 请看") has none, and its local part is not
        # looked for.
        if mail_domain:
            domain = _MAIL_DOMAIN.match(norm, domain_start)
            if domain is not None and domain.group(1).lower() not in _MAIL_TLDS:
                continue
        else:
            domain = patterns.domain.match(norm, domain_start)
        if domain is None:
            continue
        start = _local_start(norm, local_end, floor, patterns)
        # Right after an address ("li@example.comwang@example.org") the local part went into the
        # top-level domain before it: the two are redacted side by side all the same.
        after_address = bool(found) and found[-1][1] == local_end and norm[local_end] == "@"
        if (start == local_end and not after_address) or (
            hashed and not _hashed_local_ok(norm, start, local_end)
        ):
            continue
        found.append((start, domain.end(), EMAIL))
        floor = domain.end()
    return found


def _hashed_local_ok(norm: str, start: int, end: int) -> bool:
    """Whether ``norm[start:end]``, before a '#', is a local part: ASCII, ending in a letter,
    digit or underscore, and not after a '/' (a URL's path before its fragment) or a '#' (a
    hashtag)."""
    last = norm[end - 1]
    return (
        norm[start:end].isascii()
        and (last.isalnum() or last == "_")
        and norm[start - 1 : start] not in ("/", "#")
    )


# An address in a URL (a query string, a passed-through Referer) has its '@' percent-encoded.
# One typed to dodge address harvesters has "at" in brackets for it, in any case: "(at)",
# "[AT]", "（at）". A bare word "at" is English ("meet me at example.com"), never an at sign.
_BRACKETED_AT: Final = re.compile(f"[{_AT_OPEN}] ?[Aa][Tt] ?[{_AT_CLOSE}]")


def _bracketed_at_from(t: str) -> re.Pattern[str]:
    """The bracketed "at"s whose second letter is `t`, found from it: a search for one letter
    reads CJK text several times faster than one opening with a class of brackets or letters."""
    return re.compile(
        f"{t}(?= ?[{_AT_CLOSE}])(?:(?<=[{_AT_OPEN}][Aa]{t})|(?<=[{_AT_OPEN}] [Aa]{t}))"
    )


_BRACKETED_AT_T: Final = _bracketed_at_from("t")
_BRACKETED_AT_CAPITAL_T: Final = _bracketed_at_from("T")
# Spaces around an at sign (typed to dodge harvesters: "zhangsan @ example.com") are part of
# the address, up to this many on a side. A space before an '@' and none after it is how a
# mention is written ("thanks @john.smith"): such an '@' takes no space at all.
_AT_SPACES: Final = 3


def _has_bracketed_at(norm: str) -> bool:
    """Whether ``norm``, holding a "t" or "T", holds a bracketed "at". (Callers test for the
    letter first: most text has no "t" (Chinese), most English no closing bracket, and only
    then is each "t" looked at.)"""
    if not (")" in norm or "\uff09" in norm or "]" in norm or "\u3011" in norm or "\uff3d" in norm):
        return False
    return _BRACKETED_AT_T.search(norm) is not None or (
        _BRACKETED_AT_CAPITAL_T.search(norm) is not None
    )


def _may_hold_address(norm: str) -> bool:
    # Run on every string holding a digit, so each test is a search for one character (or
    # opening with one): "%40" alone, converted to the width of CJK text, costs as much.
    return (
        "@" in norm
        or "#" in norm
        or ("%" in norm and "%40" in norm)
        or (("t" in norm or "T" in norm) and _has_bracketed_at(norm))
    )


def _at_signs(norm: str) -> list[tuple[int, int]]:
    """Where the local part before each at sign ends, and where the domain after it starts, in
    order. Each kind has a search of its own, for the speed `_may_hold_address` is after."""
    signs: list[tuple[int, int]] = []
    at = norm.find("@")
    while at != -1:
        if norm.startswith(" ", at + 1):
            signs.append(_spaced(norm, at, at + 1, bracketed=False))
        else:  # nearly every '@': no call
            signs.append((at, at + 1))
        at = norm.find("@", at + 1)
    others = False
    if "%" in norm and "%40" in norm:
        others = True
        at = norm.find("%40")
        while at != -1:
            signs.append((at, at + 3))
            at = norm.find("%40", at + 3)
    if ("t" in norm or "T" in norm) and _has_bracketed_at(norm):
        others = True
        signs.extend(_spaced(norm, *m.span(), bracketed=True) for m in _BRACKETED_AT.finditer(norm))
    at = norm.find("#")
    while at != -1:
        others = True
        signs.append((at, at + 1))
        at = norm.find("#", at + 1)
    if others:
        signs.sort()
    return signs


def _spaced(norm: str, at: int, end: int, bracketed: bool) -> tuple[int, int]:
    """The at sign ``norm[at:end]`` with the spaces around it: those before an '@' only if
    some follow it."""
    after = end
    while after < len(norm) and after - end < _AT_SPACES and norm[after] == " ":
        after += 1
    if after == end and not bracketed:
        return at, end
    before = at
    while before > 0 and at - before < _AT_SPACES and norm[before - 1] == " ":
        before -= 1
    return before, after


def _run_start(norm: str, i: int) -> int:
    while i > 0:
        c = norm[i - 1]
        if (
            c in _RUN_CHARS
            or (c == " " and i >= 2 and norm[i - 2] in _JOIN_BEFORE and norm[i] in _JOIN_AFTER)
            or (c == "/" and i >= 2 and norm[i - 2] in _SLASH_BEFORE and norm[i] in _DIGITS)
        ):
            i -= 1
        else:
            break
    return i


def _whole(norm: str, start: int, end: int) -> list[_Candidate]:
    """The run as one valid identifier, the common case, in a single regex call; else []."""
    m = _WHOLE_RE.fullmatch(norm, start, end)
    if m is None or m.lastgroup is None:
        return []
    name = m.lastgroup
    value = m.group()
    if name == "id":
        ok = id_ok(_ungrouped_id(value))
    elif name == "credit":
        ok = _credit_ok(value)
    elif name == "card":
        ok = _card_ok(_ungrouped(value))
    elif name == "hk_id":
        ok = _hk_id_ok(value)
    elif name == "tw_id":
        ok = _tw_id_ok(value)
    elif name == "passport":
        ok = _passport_ok(value)
    elif name == "mo_id":
        ok = _mo_id_ok(norm, end)
    elif name == "mac":
        ok = _mac_ok(norm, start, end)
    elif name == "imei":
        ok = _luhn_ok(_ungrouped(value))
    else:
        ok = True
    category = _WHOLE_CATEGORIES[name]
    return [(_PRIORITY[category], start, end, category)] if ok else []


# "6222 0212 3456 7894": four groups of four and their three separators.
_GROUPED_16: Final = 19


def _ungrouped(value: str) -> str:
    return value.replace(" ", "").replace("-", "")


def _ungrouped_id(value: str) -> str:
    return value.replace(" ", "").replace("-", "").replace("/", "")


def _digit_run(value: str, start: int) -> list[_Candidate]:
    """Candidates in a run of bare digits, without regexes (order and invoice numbers land here)."""
    n = len(value)
    end = start + n
    if (n == 18 or n == 15) and id_ok(value):
        return [(_PRIORITY[ID_NUMBER], start, end, ID_NUMBER)]
    if n == 18 and _CREDIT_RE.fullmatch(value) and _credit_ok(value):
        return [(_PRIORITY[CREDIT_CODE], start, end, CREDIT_CODE)]
    if 15 <= n <= 19 and _card_ok(value):
        return [(_PRIORITY[BANK_ACCOUNT], start, end, BANK_ACCOUNT)]
    if n in (11, 13, 15) and _PHONE_RE.fullmatch(value):
        return [(_PRIORITY[PHONE], start, end, PHONE)]
    if n == 15 and value[:2] in _IMEI_REPORTING_BODIES and _luhn_ok(value):
        return [(_PRIORITY[DEVICE_ID], start, end, DEVICE_ID)]
    return []


def _candidates(norm: str, start: int, end: int, glued: list[_Candidate]) -> list[_Candidate]:
    """Every validated identifier inside one run, overlapping ones included. Passports and
    credit codes with a letter or digit right after them go to ``glued`` instead."""
    found: list[_Candidate] = []
    length = end - start
    if length >= 15:
        for m in _ID_RE.finditer(norm, start, end):
            if id_ok(_ungrouped_id(m.group())):
                found.append((_PRIORITY[ID_NUMBER], m.start(), m.end(), ID_NUMBER))
    if length >= 18:
        for m in _CREDIT_OPEN_RE.finditer(norm, start, end):
            if _credit_ok(m.group()):
                after = m.end()
                into = glued if after < end and norm[after] in _ALNUM else found
                into.append((_PRIORITY[CREDIT_CODE], m.start(), after, CREDIT_CODE))
    if length >= 15:
        for m in _CARD_RE.finditer(norm, start, end):
            if _card_ok(_ungrouped(m.group())):
                found.append((_PRIORITY[BANK_ACCOUNT], m.start(), m.end(), BANK_ACCOUNT))
            elif _GROUPED_16 < m.end() - m.start() <= _GROUPED_16 + 3:
                # "6222 0212 3456 7894 12/27": the optional fifth group took a short number
                # that follows the card (an expiry, a count); the card alone may still be one.
                # A three-digit group stays part of the number: 4-4-4-4-3 is how 19-digit
                # cards are written.
                cut = m.start() + _GROUPED_16
                if _card_ok(_ungrouped(norm[m.start() : cut])):
                    found.append((_PRIORITY[BANK_ACCOUNT], m.start(), cut, BANK_ACCOUNT))
    if length >= 11:
        for m in _PHONE_RE.finditer(norm, start, end):
            found.append((_PRIORITY[PHONE], m.start(), m.end(), PHONE))
    if length >= 11 and (norm.find("0", start, end) != -1 or norm.find("86", start, end) != -1):
        for m in _LANDLINE_RE.finditer(norm, start, end):
            found.append((_PRIORITY[PHONE], m.start(), m.end(), PHONE))
    if length >= 9 and _PASSPORT_LETTER.search(norm, start, end) is not None:
        for m in _PASSPORT_OPEN_RE.finditer(norm, start, end):
            if not _passport_ok(m.group()):
                continue
            after = m.end()
            into = glued if after < end and norm[after] in _ALNUM else found
            into.append((_PRIORITY[PASSPORT], m.start(), after, PASSPORT))
    if length >= 8:
        _letter_led_ids(norm, start, end, found, glued)
    if length >= 10 and (norm.find("(", start, end) != -1 or norm.find("/", start, end) != -1):
        for m in _MO_ID_OPEN_RE.finditer(norm, start, end):
            after = m.end()
            if not _mo_id_ok(norm, after):
                continue
            ended = after == end or norm[after] not in _ALNUM or norm[after - 1] == ")"
            (found if ended else glued).append((_PRIORITY[ID_NUMBER], m.start(), after, ID_NUMBER))
    if norm.find(".", start, end) != -1:
        for m in _IPV4_RE.finditer(norm, start, end):
            found.append((_PRIORITY[IP], m.start(), m.end(), IP))
    if norm.find(":", start, end) != -1:
        for m in _IPV6_TOKEN_RE.finditer(norm, start, end):
            token = m.group()
            if token.count(":") < 2:  # no address has fewer: not worth a parse
                continue
            span = _ipv6_span(token)
            if span is not None:
                found.append((_PRIORITY[IP], m.start() + span[0], m.start() + span[1], IP))
    if length >= 14:
        for m in _MAC_RE.finditer(norm, start, end):
            if _mac_ok(norm, m.start(), m.end()):
                found.append((_PRIORITY[DEVICE_ID], m.start(), m.end(), DEVICE_ID))
    if length >= 15:
        for m in _IMEI_RE.finditer(norm, start, end):
            if _luhn_ok(_ungrouped(m.group())):
                found.append((_PRIORITY[DEVICE_ID], m.start(), m.end(), DEVICE_ID))
    return found


def _letter_led_ids(
    norm: str, start: int, end: int, found: list[_Candidate], glued: list[_Candidate]
) -> None:
    """The Hong Kong identity cards and Taiwanese ID numbers in a run, into ``found``, or into
    ``glued`` with a letter or digit right after them (a card's closing bracket ends it).

    Each is an `ID_NUMBER`, first in `_PRIORITY`; the one shape a passport has too is none
    (`_hk_id_ok`)."""
    for m in _HK_ID_OPEN_RE.finditer(norm, start, end):
        if _hk_id_ok(m.group()):
            after = m.end()
            ended = after == end or norm[after] not in _ALNUM or norm[after - 1] == ")"
            (found if ended else glued).append((_PRIORITY[ID_NUMBER], m.start(), after, ID_NUMBER))
    for m in _TW_ID_OPEN_RE.finditer(norm, start, end):
        if _tw_id_ok(m.group()):
            after = m.end()
            into = glued if after < end and norm[after] in _ALNUM else found
            into.append((_PRIORITY[ID_NUMBER], m.start(), after, ID_NUMBER))


def _overlaps(spans: list[_Span], starts: list[int], start: int, end: int) -> bool:
    i = bisect.bisect_left(starts, end)
    return i > 0 and spans[i - 1][1] > start


def _ipv6_kept(
    norm: str, spans: list[_Span], starts: list[int], start: int, end: int
) -> tuple[int, int]:
    """What the IPv6 address ``norm[start:end]`` keeps once it gives up to ``spans`` (in order of
    start, each outranking it) what they hold of it, as characters two identifiers read are the
    one's that goes first in `_PRIORITY`: its part after the one holding its start
    ("7/821790/6B:74::D1": a Macau card, whose last digit its first group took) and before the
    first starting in it ("fe80::abc:5/395279/6": its last group took the card's first digit),
    an address's characters even where they make none by themselves ("1:2:3:4:5:6:7:" of
    "1:2:3:4:5:6:7:5/395279/6"), unless they hold no group at all ("::" of "::5/395279/6"):
    then nothing, an empty span."""
    i = bisect.bisect_right(starts, start)
    if i and spans[i - 1][1] > start:
        start = spans[i - 1][1]
    if i < len(starts) and starts[i] < end:
        end = starts[i]
    return (start, end) if norm[start:end].strip(":") else (start, start)


def _with_postal_addresses(norm: str, spans: list[_Span]) -> list[_Span]:
    """``spans`` (in order, none overlapping) with the postal addresses in ``norm``, each cut
    short of the first identifier inside it: a phone number or ID number keeps its characters
    (one glued after a room is found as what it is), and an address left without its street
    number's digits, or its building parts where it has no administrative part, is none."""
    found = find_postal(norm)
    if not found:
        return spans
    starts = [s for s, _, _ in spans]
    kept: list[_Span] = []
    for address in found:
        start, least = address.start, address.least
        i = bisect.bisect_right(starts, start)
        if i and spans[i - 1][1] > start:
            # An identifier holds its first characters (an e-mail address's CJK domain, read on
            # into a province's or estate's name): what is left is an address as one with what
            # it has left of its administrative parts, or none, is.
            start = spans[i - 1][1]
            if start > address.name:
                if address.least_alone is None:
                    continue
                least = address.least_alone
        j = bisect.bisect_left(starts, start)
        end = min(address.end, starts[j]) if j < len(starts) else address.end
        if end >= least:
            kept.append((start, end, ADDRESS))
    return sorted(spans + kept) if kept else spans


def _find_spans(norm: str, astral: bool, address: bool) -> list[_Span]:
    """The spans in ``norm``; ``address``: whether it may hold an e-mail address at all."""
    emails = _emails(norm, astral) if address else []
    email_starts = [s for s, _, _ in emails]
    email_ends = [e for _, e, _ in emails] if emails else []
    addresses, ending = len(emails), 0  # ending: the first address not ending before the run
    spans: list[_Span] = []
    search = (_CORE_LANDLINE if ")" in norm or "86" in norm else _CORE).search
    core = search(norm)
    while core is not None:
        at = core.start()
        start = _run_start(norm, at)
        run = _RUN_FORWARD.match(norm, at)
        end = run.end() if run is not None else core.end()
        core = search(norm, end)
        value = norm[start:end]
        # Only a run of more than one identifier, and with a letter in it, can hold two glued:
        # between two digits nothing says where one number ends.
        mixed = False
        glued: list[_Candidate] = []
        if value.isdigit():
            candidates = _digit_run(value, start)
        else:
            candidates = _whole(norm, start, end)
            if not candidates:
                mixed = True
                candidates = _candidates(norm, start, end, glued)
        if len(candidates) > 1:
            candidates.sort()
        # Kept in order of start (and so of end: they never overlap), for a bisect per
        # candidate: a run of thousands of phone numbers must not cost millions of tests.
        taken: list[_Span] = []
        taken_starts: list[int] = []
        for _, s, e, category in candidates:
            if _overlaps(taken, taken_starts, s, e):
                # An IPv6 address comes after all that outrank it, and keeps what of it they
                # do not hold (`_ipv6_kept`).
                if category == IP:
                    s, e = _ipv6_kept(norm, taken, taken_starts, s, e)
                if e == s or _overlaps(taken, taken_starts, s, e):
                    continue
            if (
                emails
                and _overlaps(emails, email_starts, s, e)
                and not _local_part_cut(norm, emails, email_starts, s, e)
            ):
                continue
            at = bisect.bisect_left(taken_starts, s)
            taken_starts.insert(at, s)
            taken.insert(at, (s, e, category))
        if mixed:
            # The runs come in order, and so do the addresses' ends: a step at a time, no search.
            while ending < addresses and email_ends[ending] <= start:
                ending += 1
            last = ending
            while last < addresses and email_ends[last] < end:
                last += 1
            # Most runs of prose with a letter in them hold no identifier: no call for those.
            if glued or taken or last > ending:
                ended = range(ending, last)
                taken = _with_glued(norm, end, taken, glued, emails, email_starts, ended)
        if taken:
            spans += taken
    spans += emails  # after the runs: an address's end may have moved back in one
    spans.sort()
    if may_hold_postal(norm):
        spans = _with_postal_addresses(norm, spans)
    # Last: a coordinate gives way to every identifier (`_with_locations`).
    # Most strings hold a stop: a test of one character, then a search for one. Degrees and
    # minutes hold a degree sign.
    if ("." in norm and _FOUR_DECIMALS.search(norm) is not None) or "\u00b0" in norm:
        return _with_locations(norm, spans)
    return spans


def _with_locations(norm: str, spans: list[_Span]) -> list[_Span]:
    """``spans`` (in order, none overlapping) with the coordinate pairs in ``norm`` that share
    no character with them: a phone number, card, address or ID number the same characters
    read as keeps them, and what is left of the pair is no location."""
    pairs = _locations(norm)
    if not pairs:
        return spans
    starts = [s for s, _, _ in spans]
    kept = [
        span
        for pair in pairs
        if not any(_overlaps(spans, starts, s, e) for s, e, _ in pair)
        for span in pair
    ]
    return sorted(spans + kept) if kept else spans


@dataclass(frozen=True, slots=True)
class _Coordinate:
    """A number in degrees: where its key (if any, else its lead) starts; where it starts and
    ends with its hemisphere (``lead``, ``tail``) and without (``start``, ``end``); what its key
    or hemisphere says it is (None: neither); whether a hemisphere says it (``marked``), and
    whether it reads as a number without one too (``plain``: the letter set apart after it)."""

    key_start: int
    lead: int
    start: int
    end: int
    tail: int
    latitude: bool | None
    marked: bool
    plain: bool
    degrees: float  # unsigned: only ranges are checked
    decimals: int  # of a number without a hemisphere: how precise it is


def _locations(norm: str) -> list[list[_Span]]:
    """The coordinate pairs in ``norm``, each as its spans: one from the first number to the
    second without keys, each number apart with them (the keys between stay readable)."""
    # Read from the stops with four digits after them: a pattern tried at every character of
    # a long text made office prose that holds a version number ("10.0.19045") scan at half
    # the speed. Degrees and minutes are read from their degree sign.
    anchors = [m.start() for m in _FOUR_DECIMALS.finditer(norm)]
    if "\u00b0" in norm:
        signs = [m.start() for m in _DEGREE_SIGN.finditer(norm)]
        anchors = sorted(anchors + signs) if anchors else signs
    pairs: list[list[_Span]] = []
    waiting: _Coordinate | None = None  # the number before, not yet in a pair
    reached = 0  # where the last number read ends: a stop inside its minutes is no number
    for at in anchors:
        if at < reached:
            continue
        number = _minutes_at(norm, at) if norm[at] == "\u00b0" else _coordinate_at(norm, at)
        if number is None:
            continue
        reached = number.tail
        pair = _pair(norm, waiting, number) if waiting is not None else None
        if pair is not None:
            pairs.append(pair)
            waiting = None
        else:
            waiting = number
    return pairs


def _coordinate_at(norm: str, stop: int) -> _Coordinate | None:
    """The number in decimal degrees whose decimal point is at ``stop``, with its key or
    hemisphere."""
    start = stop
    while start > stop - 3 and start > 0 and norm[start - 1] in _DIGITS:
        start -= 1
    number = _UNSIGNED_DEGREES.match(norm, start)
    if number is None or number.end("units") != stop:
        return None
    degrees = float(f"{number['units']}.{number['decimals']}")
    decimals = len(number["decimals"])
    marked = _hemisphere(norm, start, number.end(), degrees, decimals)
    if marked is not None:
        return marked
    if start > 0 and norm[start - 1] == "-":
        start -= 1
    m = _COORDINATE_NUMBER.match(norm, start)
    if m is None or m.end("units") != stop:
        return None
    key = _COORDINATE_KEY.search(norm, max(0, start - _KEY_REACH), start)
    if key is None:
        return _Coordinate(
            start, start, start, m.end(), m.end(), None, False, False, degrees, decimals
        )
    latitude = _key_says_latitude(key)
    return _Coordinate(
        key.start(), start, start, m.end(), m.end(), latitude, False, False, degrees, decimals
    )


def _key_says_latitude(key: re.Match[str]) -> bool:
    """Whether the key `_COORDINATE_KEY` found names a latitude."""
    name = key["key"]
    return name[:2].lower() == "la" or name == "\u7eac\u5ea6"


def _hemisphere(
    norm: str, start: int, end: int, degrees: float, decimals: int
) -> _Coordinate | None:
    """The number from ``start`` to ``end`` (unsigned, its degrees ``degrees``) as a coordinate
    with the hemisphere written beside it, if one is and nothing else stands glued to it.
    Where it is none, the number is read as one without a hemisphere."""
    before = _HEMISPHERE_BEFORE.search(norm, max(0, start - _HEMISPHERE_REACH), start)
    after = _HEMISPHERE_AFTER.match(norm, end)
    if after is None:
        return None
    tail = after.end()
    if before is not None:
        if after["letter"] is not None:
            # Two hemispheres on one number; a letter set apart after it opens what follows
            # ("N31.230416 E121.473701 N/A").
            if not after["space"]:
                return None
            tail = after.end("degree")
        lead = before.start()
        latitude = (before["letter"] or before["word"]) in _LATITUDE_HEMISPHERES
    elif after["letter"] is not None and _NOTHING_GLUED_BEFORE.match(norm, start) is not None:
        lead = start
        latitude = after["letter"] in _LATITUDE_HEMISPHERES
    else:
        return None
    key = _COORDINATE_KEY.search(norm, max(0, lead - _KEY_REACH), lead)
    if key is not None and _key_says_latitude(key) != latitude:
        return None  # a key and a hemisphere that disagree
    key_start = key.start() if key is not None else lead
    # Where no letter is glued to the number, it is a number without a hemisphere too:
    # "31.230416, 121.473701 N/A" is a pair before a word, "北纬31.230416，121.473701" one after.
    plain = (before is None or before["word"] is not None) and after.start("letter") != end
    return _Coordinate(key_start, lead, start, end, tail, latitude, True, plain, degrees, decimals)


def _minutes_at(norm: str, sign: int) -> _Coordinate | None:
    """The number in degrees and minutes (and seconds) whose degree sign is at ``sign``, if a
    hemisphere is written beside it."""
    start = sign
    while start > sign - 3 and start > 0 and norm[start - 1] in _DIGITS:
        start -= 1
    m = _DEGREES_MINUTES.match(norm, start)
    if m is None or m.end("degrees") != sign:
        return None
    if m["decimal_minutes"] is not None:
        minutes, seconds = float(m["decimal_minutes"]), 0.0
    else:
        minutes, seconds = float(m["minutes"]), float(m["seconds"])
    if minutes >= 60 or seconds >= 60:
        return None
    degrees = int(m["degrees"]) + minutes / 60 + seconds / 3600
    return _hemisphere(norm, start, m.end(), degrees, 0)


def _pair(norm: str, first: _Coordinate, second: _Coordinate) -> list[_Span] | None:
    """The spans of the pair ``first`` and ``second`` make, if they make one."""
    a, b = first.degrees, second.degrees
    # Both below one are a point in the ocean off Africa (and 0, 0 where a device has no fix):
    # far more often two ratios or probabilities.
    if a < 1 and b < 1:
        return None
    if first.latitude is not None and second.latitude is not None:
        lat, lon = (a, b) if first.latitude else (b, a)
        if first.latitude != second.latitude and lat <= 90 and lon <= 180:
            # Hemispheres on both and nothing between but a separator: one location, as a
            # pair without them is.
            if (
                first.marked
                and second.marked
                and _PAIR_SEPARATOR.fullmatch(norm, first.tail, second.lead) is not None
            ):
                return [(first.lead, second.tail, LOCATION)]
            if _KEYED_GAP.fullmatch(norm, first.tail, second.key_start) is not None:
                return [
                    (first.lead, first.tail, LOCATION),
                    (second.lead, second.tail, _PAIRED_LOCATION),
                ]
    # Latitude first as most write it, or longitude first where the first cannot be a latitude,
    # as GeoJSON and the Chinese map services write it ("116.481488,39.990464"). A hemisphere
    # glued to one number only is half a say: no pair.
    if (
        (first.plain or not first.marked)
        and (second.plain or not second.marked)
        and first.decimals >= _PAIR_DECIMALS
        and second.decimals >= _PAIR_DECIMALS
        and ((a <= 90 and b <= 180) or (a <= 180 and b <= 90))
        and _PAIR_SEPARATOR.fullmatch(norm, first.end, second.start) is not None
    ):
        return [(first.start, second.end, LOCATION)]
    return None


def _category(kind: str) -> str:
    """The category a span of kind ``kind`` is redacted and allowed as."""
    return LOCATION if kind == _PAIRED_LOCATION else kind


def _local_part_cut(
    norm: str, emails: list[_Span], email_starts: list[int], start: int, end: int
) -> bool:
    """Whether the identifier at ``norm[start:end]``, overlapping an address, stays. A local
    part takes every letter and digit before its '@': glued to an identifier it takes the
    identifier's tail, and the head would be redacted by neither ("fe80::63kedjn@qq.net"). The
    address is made to start where the identifier ends, or where there is nothing left of its
    local part, where the identifier starts: the identifier is then the address's."""
    i = bisect.bisect_left(email_starts, end) - 1
    address_start, address_end, _ = emails[i]
    if not start < address_start < end or (i and emails[i - 1][1] > start):
        return False
    kept = end < address_end and norm[end] in _ALNUM
    emails[i] = (end if kept else start, address_end, EMAIL)
    email_starts[i] = emails[i][0]
    return kept


def _glued_at(
    norm: str, at: int, end: int, ipv6: bool = True, stray: bool = False
) -> list[_Candidate]:
    """The identifiers starting at ``at`` whatever is before them, whatever follows them.
    ``stray``: whether what ends at ``at`` ends there by its own pattern, so that an IPv6
    address may also start one letter later."""
    found: list[_Candidate] = []
    m = _GLUED_PASSPORT.match(norm, at, end)
    if m is not None and _passport_ok(m.group()):
        found.append((_PRIORITY[PASSPORT], at, m.end(), PASSPORT))
    m = _GLUED_CREDIT.match(norm, at, end)
    if m is not None and _credit_ok(m.group()):
        found.append((_PRIORITY[CREDIT_CODE], at, m.end(), CREDIT_CODE))
    m = _GLUED_HK_ID.match(norm, at, end)
    if m is not None and _hk_id_ok(m.group()):
        found.append((_PRIORITY[ID_NUMBER], at, m.end(), ID_NUMBER))
    m = _GLUED_TW_ID.match(norm, at, end)
    if m is not None and _tw_id_ok(m.group()):
        found.append((_PRIORITY[ID_NUMBER], at, m.end(), ID_NUMBER))
    m = _GLUED_MO_ID.match(norm, at, end)
    if m is not None and _mo_id_ok(norm, m.end()):
        found.append((_PRIORITY[ID_NUMBER], at, m.end(), ID_NUMBER))
    # Its first colon is at most four hex digits in: a search no further, at every place tried.
    if ipv6 and norm.find(":", at, min(end, at + 5)) != -1:
        address_end = _glued_ipv6(norm, at, end)
        if address_end is not None:
            found.append((_PRIORITY[IP], at, address_end, IP))
    # One letter between an identifier and an IPv6 address sets them apart, as a letter that is
    # no hex digit ends an address ("fe80::1xfe80::2", "13800138000kfe80::1"); one that is a hex
    # digit, where it would make the first group longer than four ("13800138000afe80::1"), a
    # decimal one too after an identifier ending in a letter ("li@qq.com5fe80::1",
    # "li@qq.com52001:db8::1": no group holds five, so the address starts after it at the
    # earliest). A digit after a digit is never read here (`_may_glue`): between two digits
    # nothing says where one number ends.
    if stray and ipv6 and not found and norm.find(":", at + 1, min(end, at + 6)) != -1:
        address_end = _glued_ipv6(norm, at + 1, end)
        if address_end is not None:
            found.append((_PRIORITY[IP], at + 1, address_end, IP))
    return found


def _glued_ipv6(norm: str, at: int, end: int) -> int | None:
    """Where the IPv6 address glued on at ``at`` ends, if one starts right there."""
    m = _GLUED_IPV6.match(norm, at, end)
    if m is None:
        return None
    token = m.group()
    if "." in token and (stop := _STRAY_STOP.search(token)) is not None:
        token = token[: stop.start()]
    span = _ipv6_span(token)
    return at + span[1] if span is not None and span[0] == 0 else None


def _may_glue(norm: str, at: int) -> bool:
    # Between two digits nothing says where one number ends: "G" and 26 digits is as often an
    # order number as a passport and a credit code of digits.
    return norm[at - 1] in _LETTERS or norm[at] in _LETTERS


def _ends_itself(norm: str, candidate: _Candidate) -> bool:
    """Whether ``candidate``, glued on, ends where it does whatever follows it: an IPv6 address
    before a letter that is no hex digit (`_ipv6_from`), a Hong Kong or Macau card at its
    closing bracket, as the run's scan has them."""
    return candidate[3] == IP or norm[candidate[2] - 1] == ")"


def _glued_chain(
    norm: str,
    at: int,
    end: int,
    good: dict[int, int],
    failed: set[int],
    ipv6: bool = True,
    stray: bool = False,
) -> list[_Candidate] | None:
    """The identifiers written one right after another from ``at``, where another ends, up to
    where the last one ends as its own pattern has it (no letter or digit after it, or for an
    IPv6 address no hex digit) or a place in ``good`` (where one the run's scan found starts,
    and where it ends); None if there are none such. Where they start goes into ``good``, and
    where none such start into ``failed``: no place is read twice. ``ipv6``: whether the first
    may be an IPv6 address; ``stray``: whether what ends at ``at`` ends there by its own
    pattern (one letter may then stand before an IPv6 address, as after an IPv6 address glued
    on)."""
    found_here = at in good
    if not _may_glue(norm, at):
        return [] if found_here else None
    first = _glued_at(norm, at, end, ipv6, stray)
    if found_here:
        # What the run's scan found here stands, unless one glued on holds it and more: a credit
        # code of digits whose first seventeen pass as a card ("li@example.cn5244...804Y").
        first = [candidate for candidate in first if candidate[2] > good[at]]
        if not first:
            return []
    # Depth first, without recursion: a run of thousands of glued passports is one chain.
    chain: list[_Candidate] = []
    stack = [(at, iter(first))]
    while stack:
        here, options = stack[-1]
        for candidate in options:
            after = candidate[2]
            if after == end or norm[after] not in _ALNUM or after in good:
                chain.append(candidate)
                good.update((start, stop) for _, start, stop, _ in chain)
                return chain
            ended = _ends_itself(norm, candidate)
            if after not in failed and _may_glue(norm, after):
                chain.append(candidate)
                stack.append((after, iter(_glued_at(norm, after, end, stray=ended))))
                break
            if ended:  # whatever follows it: see below
                chain.append(candidate)
                good.update((start, stop) for _, start, stop, _ in chain)
                return chain
        else:
            failed.add(here)
            stack.pop()
            if chain and _ends_itself(norm, chain[-1]):
                # An IPv6 address glued on with a letter after it ends before that letter, which
                # is no hex digit (`_ipv6_from`), as one the run's scan finds does, and a card
                # at its closing bracket: where nothing glued starts after it, the chain ends
                # with it ("E12345678fe80::1x", "13800138000A123456(3)x").
                good.update((start, stop) for _, start, stop, _ in chain)
                return chain
            if chain:
                chain.pop()
    return [] if found_here else None


def _with_glued(
    norm: str,
    end: int,
    taken: list[_Span],
    glued: list[_Candidate],
    emails: list[_Span],
    email_starts: list[int],
    ended: range,
) -> list[_Span]:
    """``taken`` (a run's spans, in order) with the identifiers glued to them or to an address
    ending in the run (``emails[i]`` for i in ``ended``): where one ends, one starting there
    whatever is before it, and each in ``glued`` (no boundary after it) that another starts
    right after. An address whose top-level domain took the first letters of a passport or
    credit code glued to it ("li@example.comE12345678") is made to end before them."""
    anchors = [e for _, e, _ in taken if e < end and norm[e] in _ALNUM]
    addresses = [i for i in ended if norm[emails[i][1]] in _ALNUM or norm[emails[i][1]] == ":"]
    if not anchors and not addresses and not glued:
        return taken
    good = {s: e for s, e, _ in taken}
    # An identifier glued on may end inside the local part of an address: see `_local_part_cut`.
    # By index, not a slice: a slice would copy every address after this run, for every run.
    i = bisect.bisect_left(email_starts, end - _LOCAL_MAX)
    while i < len(emails) and emails[i][0] < end:
        local = emails[i][0] + 1
        while local < end and norm[local] in _ALNUM:
            good.setdefault(local, len(norm))  # nothing glued there goes on past it
            local += 1
        i += 1
    failed: set[int] = set()
    found: list[_Span] = []
    for i in addresses:
        address_start, address_end, _ = emails[i]
        chain = None
        if norm[address_end] in _DIGITS:  # rare: a top-level domain runs into digits
            chain = _glued_into_address(norm, address_start, address_end, end, good)
            if chain:
                address_end = chain[0][1]
                emails[i] = (address_start, address_end, EMAIL)
                found += [(s, e, category) for _, s, e, category in chain]
        if not chain:  # rarer: it took an IPv6 address's first hex letters, before either
            ipv6 = _ipv6_into_address(norm, address_start, address_end, end)
            if ipv6 is not None:
                address_end = ipv6[1]
                emails[i] = (address_start, address_end, EMAIL)
                found.append((ipv6[1], ipv6[2], IP))
                good[ipv6[1]] = ipv6[2]
                address_end = ipv6[2]
        if address_end < end and norm[address_end] in _ALNUM:
            anchors.append(address_end)
    for at in anchors:
        chain = _glued_chain(norm, at, end, good, failed, stray=True)
        found += [(s, e, category) for _, s, e, category in chain or ()]
    for candidate in glued:
        chain = _glued_chain(norm, candidate[2], end, good, failed)
        if chain is not None:
            found += [(s, e, category) for _, s, e, category in (candidate, *chain)]
    if not found:
        return taken
    if emails:
        found = [
            span
            for span in found
            if not _overlaps(emails, email_starts, span[0], span[1])
            or _local_part_cut(norm, emails, email_starts, span[0], span[1])
        ]
    return _settled(norm, taken, found)


def _glued_into_address(
    norm: str, address_start: int, address_end: int, end: int, good: dict[int, int]
) -> list[_Candidate] | None:
    """The identifiers glued to the address ending at ``address_end`` if the first of them
    starts one or two letters before it, in its top-level domain, which keeps two at least."""
    label = address_end
    while label > address_start and norm[label - 1] in _LETTERS:
        label -= 1
    failed: set[int] = set()  # its own: where the first may be no IPv6 address
    for at in (address_end - 1, address_end - 2):
        if at - label < 2:
            break
        # An IPv6 address is not looked for: one or two letters back may cut its first group
        # ("e80::1" of "li@example.comfe80::1"); `_ipv6_into_address` reads it whole.
        chain = _glued_chain(norm, at, end, good, failed, ipv6=False)
        if chain:
            return chain
    return None


def _ipv6_into_address(
    norm: str, address_start: int, address_end: int, end: int
) -> _Candidate | None:
    """The IPv6 address glued to the address ending at ``address_end``, if its top-level domain
    took the hex letters of the first group, before a colon ("li@corp.cnbA:5183::C") or the
    group's digits ("li@example.comfe80::1"), and keeps two letters at least: from the first of
    them that starts one."""
    # The group's colon is at most four hex digits from its start, which is a letter back.
    if norm.find(":", address_end, address_end + 4) == -1:
        return None
    label = address_end
    while label > address_start and norm[label - 1] in _LETTERS:
        label -= 1
    for at in range(max(label + 2, address_end - 4), address_end):
        if not all(c in _HEX_DIGITS for c in norm[at:address_end]):
            continue
        ipv6_end = _glued_ipv6(norm, at, end)
        if ipv6_end is not None:
            return (_PRIORITY[IP], at, ipv6_end, IP)
    return None


def _settled(norm: str, taken: list[_Span], found: list[_Span]) -> list[_Span]:
    """One list of spans from a run's own and those glued to them: where they overlap, a glued
    one holding all the others there wins (an IPv6 address the run's scan found only the tail
    of), else the run's own stay. First, an IPv6 address, the run's own or glued, gives up what
    one that outranks it holds of it, as in the run's own scan (`_ipv6_kept`)."""
    spans = sorted({*taken, *found})
    if all(before[1] <= after[0] for before, after in itertools.pairwise(spans)):
        return spans  # nearly always: each glued one begins where another ends
    outranking = [span for span in spans if _PRIORITY[span[2]] < _PRIORITY[IP]]
    if outranking:
        starts = [s for s, _, _ in outranking]

        def yielded(side: list[_Span]) -> list[_Span]:
            kept: list[_Span] = []
            for s, e, category in side:
                if category == IP:
                    s, e = _ipv6_kept(norm, outranking, starts, s, e)
                if e > s:
                    kept.append((s, e, category))
            return kept

        taken, found = yielded(taken), yielded(found)
    tagged = sorted([(*span, False) for span in taken] + [(*span, True) for span in set(found)])
    settled: list[_Span] = []
    i = 0
    while i < len(tagged):
        first, last = tagged[i][0], tagged[i][1]
        j = i + 1
        while j < len(tagged) and tagged[j][0] < last:
            last = max(last, tagged[j][1])
            j += 1
        cluster = tagged[i:j]
        i = j
        whole = [span for span in cluster if span[3] and span[0] == first and span[1] == last]
        if len(cluster) == 1 or whole:
            settled.append((first, last, (whole or cluster)[0][2]))
            continue
        # Glued ones one right after another from end to end, each in a chain: the run's own
        # there hold fewer of the characters ("G6460916P916509A30::": two Hong Kong cards and
        # the address "30::", where the run's scan read a credit code, leaving "::").
        chained = [span[:3] for span in cluster if span[3]]
        if (
            chained[0][0] == first
            and chained[-1][1] == last
            and all(a[1] == b[0] for a, b in itertools.pairwise(chained))
        ):
            settled += chained
            continue
        # Else the run's own, and the glued ones where those leave characters (`_filled`).
        own = [span[:3] for span in cluster if not span[3]]
        if own:
            settled += _filled(own, cluster, first, last)
            continue
        # Glued ones alone, overlapping (two chains read from different places, the run's own
        # one an IPv6 address that gave all up: "::CQ1528692D884897618", a permit and a
        # Taiwanese ID number, and a credit code read from the "Q"): from the left, each that
        # starts where the one before ends.
        read = first
        for s, e, category, _ in cluster:
            if s >= read:
                settled.append((s, e, category))
                read = e
    return settled


def _filled(
    own: list[_Span], cluster: list[tuple[int, int, str, bool]], first: int, last: int
) -> list[_Span]:
    """``own`` (a run's own spans in a cluster from ``first`` to ``last``, in order) and, where
    they leave characters of the cluster out, the part of a glued one holding them there: the
    glued one read the characters as an identifier's, and those the run's own do not take
    would be forwarded ("::e0::86-409492-250008-5": an IMEI took the "86" of the address
    "0::86" glued to "::e", and "0::" is redacted as an IP address)."""
    glued = [span[:3] for span in cluster if span[3]]
    spans: list[_Span] = []
    read = first
    for s, e, category in [*own, (last, last, "")]:
        for gs, ge, glued_category in glued:
            if read >= s:
                break
            if gs < s and ge > read:
                stop = min(ge, s)
                spans.append((max(gs, read), stop, glued_category))
                read = stop
        if e > s:
            spans.append((s, e, category))
        read = max(read, e)
    return spans


# "（010）6234 5678", "（+86）138…": a full-width parenthesis is ASCII where it opens before a
# digit or '+' or closes after a digit; elsewhere it is punctuation of the prose around it. So
# are the two around an A (a Hong Kong identity card's check character: "A123456（A）").
# (Each branch opens with its parenthesis, so the engine skips the rest of the text at C speed.)
_PARENTHESES_BY_DIGITS: Final = re.compile(
    "\uff08(?=[0-9+]|A\uff09)|\uff09(?:(?<=[0-9]\uff09)|(?<=\uff08A\uff09))"
)


def _ascii_parenthesis(m: re.Match[str]) -> str:
    return "(" if m.group() == "\uff08" else ")"


# A full-width '#' typed for the '@' between ASCII letters ("zhangsan＃163.com": a Chinese
# input method's punctuation with English letters) is read as the '#' it stands for; one in a
# full-width run is folded with that run.
_WIDE_HASH_FOR_AT: Final = re.compile("(?<=[0-9A-Za-z_])\uff03(?=[0-9A-Za-z])")


def _chinese_digits(m: re.Match[str]) -> str:
    return m.group().translate(_CHINESE_DIGITS)


def _fold_run(m: re.Match[str]) -> str:
    return m.group().translate(_FOLD_TABLE)


def _fold_separator(m: re.Match[str]) -> str:
    c = m.group()
    if c == _MINUS_SIGN and _SIGNED_DEGREES.match(m.string, m.start()) is not None:
        return "-"
    if c in _SOUND_MARKS:  # part of a katakana word unless it stands between two digits
        text, at = m.string, m.start()
        if not (0 < at < len(text) - 1 and text[at - 1].isdecimal() and text[at + 1].isdecimal()):
            return c
    return _SEPARATOR_CHARS[c]


def _fold(text: str, astral: bool) -> tuple[str, bool]:
    """``text`` with separators, full-width forms and other digits folded, and whether it
    holds an invisible character. ``astral``: whether it may hold a character beyond the BMP."""
    hidden = False
    if astral:
        hidden = _INVISIBLE_ASTRAL.search(text) is not None
        text = text.translate(_ASTRAL_FOLD)
    if _ANY_CHINESE_DIGIT.search(text) is not None:
        text = _CHINESE_DIGIT_RUN.sub(_chinese_digits, text)
    if "\uff03" in text:
        text = _WIDE_HASH_FOR_AT.sub("#", text)
    if "\uff08" in text or "\uff09" in text:  # full-width parentheses, frequent in prose
        text = _PARENTHESES_BY_DIGITS.sub(_ascii_parenthesis, text)
    if not _MAY_NEED_FOLDING.search(text):  # one search for ordinary prose, as before
        return text, hidden
    hidden = hidden or _INVISIBLE.search(text) is not None
    text = _SEPARATORS.sub(_fold_separator, text)  # rare: cheaper than translating it all
    if _NEEDS_FOLD.search(text):
        text = _FOLD_RUN.sub(_fold_run, text)
    # After the full-width runs, which leave some in "２００１：db8：：1" and
    # "１９２。１６８。１。１".
    if "\uff1a" in text and _WIDE_COLONS.search(text) is not None:
        text = _WIDE_COLONS.sub(":", text)
    return _fold_stops(text), hidden


def _fold_stops(text: str) -> str:
    """``text`` with the stops of each dotted quad written with wide ones made ASCII."""
    hits: list[int] = []
    for stop, pattern in _STOPS_BETWEEN_DIGITS:
        # A search first: half the strings folded hold an ideographic full stop, few between
        # two digits.
        if stop in text and pattern.search(text) is not None:
            hits.extend(m.start() for m in pattern.finditer(text))
    if not hits:
        return text
    hits.sort()
    parts: list[str] = []
    copied = read = 0  # each dotted number is read once, however many stops it holds
    for at in hits:
        if at < read:
            continue
        start = at
        while start > read and (
            text[start - 1] in _DIGITS
            or (text[start - 1] in _STOPS and start >= 2 and text[start - 2] in _DIGITS)
        ):
            start -= 1
        number = _DOTTED_NUMBER.match(text, start)
        read = number.end() if number is not None else at + 1
        if _DOTTED_QUAD.fullmatch(text, start, read):
            parts += (text[copied:start], text[start:read].translate(_STOPS_TO_ASCII))
            copied = read
    parts.append(text[copied:])
    return "".join(parts)


# A dot spelled out in brackets ("zhangsan(at)example(dot)com", "mail [dot] qq [dot] com"), and
# '@' or '.' written as an HTML character reference ("zhangsan&#64;example.com", as rich text
# stores it). The spaces around a bracketed dot belong to it.
_SPELLED: Final = re.compile(
    # A numeric reference goes without its ';' in a browser too (`&#64example.com`).
    "(?P<at>&(?:#(?:0*64(?![0-9])|[xX]0*40(?![0-9A-Fa-f]));?|commat;))"
    "|&(?:#(?:0*46(?![0-9])|[xX]0*2[eE](?![0-9A-Fa-f]));?|period;)"
    f"|[{_AT_OPEN}] ?[Dd][Oo][Tt] ?[{_AT_CLOSE}]"
)
_DOT_SPACES: Final = 2


def _may_spell(text: str, address: bool) -> bool:
    # A test of one character first, as in `_may_hold_address`: a search of every string
    # holding a digit for all the spellings made the scanner a fifth slower on office prose.
    # A dot spelled out is looked for only where an at sign is.
    return ("&" in text and ("&#" in text or "&commat;" in text or "&period;" in text)) or (
        address and ("ot" in text or "OT" in text or "Ot" in text or "oT" in text)
    )


def _spelled_out(text: str) -> list[tuple[int, int, str]]:
    """Each spelled-out '@' or '.' in ``text``: where it starts and ends, and what it stands for."""
    found: list[tuple[int, int, str]] = []
    for m in _SPELLED.finditer(text):
        start, end = m.span()
        if m.group("at") is not None:
            found.append((start, end, "@"))
            continue
        if text[start] != "&":
            floor = found[-1][1] if found else 0
            while start > floor and m.start() - start < _DOT_SPACES and text[start - 1] == " ":
                start -= 1
            while end < len(text) and end - m.end() < _DOT_SPACES and text[end] == " ":
                end += 1
        found.append((start, end, "."))
    return found


def _rewritten(
    text: str, holes: list[int], spelled: list[tuple[int, int, str]]
) -> tuple[str, list[int]]:
    """``text`` without the characters at ``holes`` and with each spelled-out character
    written as itself, and every position of ``text`` that is gone (in order)."""
    edits = sorted([(at, at + 1, "") for at in holes] + spelled)
    parts: list[str] = []
    gone: list[int] = []
    copied = 0
    for start, end, written in edits:
        if start < copied:
            continue  # an invisible character inside a spelled-out one goes with it
        parts += (text[copied:start], written)
        gone.extend(range(start + len(written), end))
        copied = end
    parts.append(text[copied:])
    return "".join(parts), gone


# A dot with spaces around it, typed to dodge address harvesters as a spaced '@' is
# ("zhangsan @ 163 . com", "zhang . san@qq.com"). Only beside an at sign is one read as part of
# an address: after it, up to a top-level domain mail is sent under; before it, with a space
# before the dot ("Thanks. li@corp.cn" ends a sentence). Elsewhere such a dot ends a sentence
# ("see @ home . Then").
_SPACED_DOT: Final = r" {1,2}\. {0,2}|\. {1,2}"
_SPACED_LABELS: Final = 8  # dots read beside one at sign: more than any address has
_SPACED_DOMAIN: Final = re.compile(
    rf"(?>{_LABEL})(?:(?:{_SPACED_DOT}|\.)(?>{_LABEL})){{1,{_SPACED_LABELS}}}"
)
_DOMAIN_SEPARATOR: Final = re.compile(_SPACED_DOT + r"|\.")
# The local part before the at sign, read backwards: labels of the characters local parts are
# typed with, and dots with a space before them (here after them).
_SPACED_LOCAL_REVERSED: Final = re.compile(
    rf"[A-Za-z0-9_+\-]{{1,64}}+(?:(?: {{0,2}}\. {{1,2}}|\.)[A-Za-z0-9_+\-]{{1,64}}+)"
    rf"{{1,{_SPACED_LABELS}}}"
)
_LOCAL_SEPARATOR_REVERSED: Final = re.compile(r" {0,2}\. {1,2}|\.")
# As far back as such a local part reaches: its labels and dots at their longest (64 and 5).
_SPACED_LOCAL_WINDOW: Final = (_SPACED_LABELS + 1) * 69


def _may_space(text: str, address: bool) -> bool:
    return address and (" ." in text or ". " in text)


def _spaced_dots(norm: str) -> list[tuple[int, int, str]]:
    """Each dot with spaces around it that is part of an address in ``norm`` (folded): where it
    starts and ends (its spaces included), and the dot it stands for."""
    found: list[tuple[int, int, str]] = []
    for local_end, domain_start in _at_signs(norm):
        reach = max(0, local_end - _SPACED_LOCAL_WINDOW)
        if norm.find(" .", reach, local_end) != -1:  # a local part with a spaced dot is rare
            window = norm[reach:local_end][::-1]
            local = _SPACED_LOCAL_REVERSED.match(window)
            if local is not None and " " in local.group():
                found.extend(
                    (local_end - sep.end(), local_end - sep.start(), ".")
                    for sep in _LOCAL_SEPARATOR_REVERSED.finditer(window, 0, local.end())
                    if sep.end() - sep.start() > 1
                )
        domain = _SPACED_DOMAIN.match(norm, domain_start)
        if domain is None or " " not in domain.group():
            continue  # most domains: no space in them, nothing spaced to read
        # The domain ends at the last label under a top-level domain mail is sent under; the
        # first label is no top-level domain.
        labels = _DOMAIN_SEPARATOR.split(domain.group())
        last = max(
            (i for i, label in enumerate(labels) if i and label.lower() in _MAIL_TLDS), default=0
        )
        if last:
            separators = _DOMAIN_SEPARATOR.finditer(norm, domain_start, domain.end())
            found.extend(
                (sep.start(), sep.end(), ".")
                for _, sep in zip(range(last), separators, strict=False)
                if sep.end() - sep.start() > 1
            )
    return sorted(set(found))


def _spans(text: str, allowed: frozenset[str]) -> list[_Span]:
    astral = _ANY_ASTRAL.search(text) is not None
    folded, hidden = _fold(text, astral)
    address = _may_hold_address(folded)
    # The second number of a keyed pair is allowed with the first.
    spans = [
        span for span in _find_spans(folded, astral, address) if _category(span[2]) not in allowed
    ]
    holes: list[int] = []
    if hidden:
        # The astral class is searched range by range: only in a string holding such a
        # character.
        patterns = (_INVISIBLE, _INVISIBLE_ASTRAL) if astral else (_INVISIBLE,)
        found = sorted(m.start() for pattern in patterns for m in pattern.finditer(text))
        # Letters of any script are part of an address (an internationalised one): in a string
        # holding an at sign (full-width, percent-encoded or bracketed, once folded), an
        # invisible character beside one may hide it.
        if any(_may_hide(text, at, address) for at in found):
            holes = found
    if not holes and not _may_spell(text, address) and not _may_space(text, address):
        return spans
    # The text as it reads: without the invisible characters first (they may sit inside a
    # spelled-out sign, `(d\u200bot)`), then with each spelled-out sign written as itself.
    # Each step keeps where its gone characters sat, to place the spans found back.
    visible, steps = text, []
    if holes:
        visible, gone = _rewritten(visible, holes, [])
        steps.append(_sits(gone))
        address = _may_hold_address(_fold(visible, astral)[0])
    if _may_spell(visible, address) and (spelled := _spelled_out(visible)):
        visible, gone = _rewritten(visible, [], spelled)
        steps.append(_sits(gone))
        address = _may_hold_address(_fold(visible, astral)[0])
    # Last, so that the at signs the steps before wrote are seen.
    if _may_space(visible, address):
        spaced = _spaced_dots(_fold(visible, astral)[0] if steps else folded)
        if spaced:
            visible, gone = _rewritten(visible, [], spaced)
            steps.append(_sits(gone))
    if not steps:
        return spans
    visible, _ = _fold(visible, astral)
    unhidden = [
        (*_placed(start, end, steps), cat)
        for start, end, cat in _find_spans(visible, astral, _may_hold_address(visible))
        if _category(cat) not in allowed
    ]
    return _merge(unhidden, spans)


def _sits(gone: list[int]) -> list[int]:
    """Where each gone character sat in the text without them: an offset v there is v + the
    characters gone at or before it in the text with them."""
    return [at - n for n, at in enumerate(gone)]


def _placed(start: int, end: int, steps: list[list[int]]) -> tuple[int, int]:
    """A span of the rewritten text in the original: it covers the gone characters inside."""
    for sits in reversed(steps):
        start, end = (
            start + bisect.bisect_right(sits, start),
            end + bisect.bisect_right(sits, end - 1),
        )
    return start, end


# What an invisible character must stand beside to hide anything: a character identifiers are
# written with (any script's digits, full-width forms), or another invisible one. Beside an
# emoji (a family's zero-width joiner) or a letter of another script (a direction mark in Arabic
# text) it hides nothing, and the string is not scanned a second time, unless the string holds
# an '@' (`letters`): then the letter may be part of an internationalised address. A Chinese
# numeral is a digit here: "一三八\u200b零零一三八零零零" is a phone number. So is a comma: the
# two numbers of a coordinate pair are set apart by one.
_JOINS: Final = re.compile(f"[0-9A-Za-z@.:+(),_%\\-\uff01-\uff5e{_CHINESE_DIGIT_CLASS}]|\\d")


def _may_hide(text: str, at: int, letters: bool = False) -> bool:
    for near in (at - 1, at + 1):
        if 0 <= near < len(text):
            c = text[near]
            if _JOINS.match(c) or c in _INVISIBLE_CHARS:
                return True
            if letters and unicodedata.category(c)[0] in "LM":
                return True
    return False


def _merge(unhidden: list[_Span], plain: list[_Span]) -> list[_Span]:
    """One list of redactions from the scans without and with the invisible characters.

    Where spans of the two overlap (a cluster), the scan that found more identifiers there
    names them (the one without, on a tie): "a@b.cn\u200bc@d.cn" is two addresses, not the one
    the text without the invisible character makes of them. Its spans are then widened to tile
    the whole cluster, so every character either scan found is redacted, counted once.
    """
    tagged = sorted([(*span, True) for span in unhidden] + [(*span, False) for span in plain])
    merged: list[_Span] = []
    i = 0
    while i < len(tagged):
        end = tagged[i][1]
        j = i + 1
        while j < len(tagged) and tagged[j][0] < end:
            end = max(end, tagged[j][1])
            j += 1
        cluster = tagged[i:j]
        without = [span for span in cluster if span[3]]  # the scan without the invisible ones
        with_them = [span for span in cluster if not span[3]]
        chosen = without if len(without) >= len(with_them) else with_them
        start = cluster[0][0]
        for k, (_, _, category, _) in enumerate(chosen):
            stop = chosen[k + 1][0] if k + 1 < len(chosen) else end
            merged.append((start, stop, category))
            start = stop
        i = j
    return merged


def find(text: str) -> list[Match]:
    """Every recognised identifier in ``text``, in order, overlaps settled by precedence."""
    if not _MAY_CONTAIN.search(text):
        return []
    return [
        Match(s, e, _category(kind), kind != _PAIRED_LOCATION)
        for s, e, kind in _spans(text, frozenset())
    ]


def scan(text: str, allowed: frozenset[str]) -> tuple[str, dict[str, int]]:
    """Redact every identifier whose category is not in ``allowed``; count them by category.

    Returns the very same ``text`` object and an empty dict when nothing is redacted.
    """
    if not _MAY_CONTAIN.search(text) or allowed >= CATEGORIES:
        return text, {}
    spans = _spans(text, allowed)
    if not spans:
        return text, {}
    parts: list[str] = []
    counts: dict[str, int] = {}
    last = 0
    for start, end, kind in spans:
        category = _category(kind)
        parts.append(text[last:start])
        parts.append(f"[REDACTED:{category}]")
        if kind != _PAIRED_LOCATION:  # a keyed pair is one location
            counts[category] = counts.get(category, 0) + 1
        last = end
    parts.append(text[last:])
    return "".join(parts), counts
