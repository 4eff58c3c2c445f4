"""Resident ID numbers: the one spelling of a number however it is written, and its birth date.

Apart from the free-text scanner, which reads them with these: the share path, the consent
registry and the `logs` and `consent` commands read a subject id with them, and only an id
written with more than ASCII letters and digits needs the scanner's folding tables, a quarter
of a second of CPU to build.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from typing import Final

# Leading two digits of the administrative division code (GB/T 2260), incl. 71/81/82 and
# the 83 used on residence permits for Taiwan residents.
PROVINCES: Final = frozenset(
    str(code)
    for codes in (
        range(11, 16),
        range(21, 24),
        range(31, 38),
        range(41, 47),
        range(50, 55),
        range(61, 66),
        (71, 81, 82, 83),
    )
    for code in codes
)
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK: Final = "10X98765432"
_ID_ZERO_WEIGHT: Final = ord("0") * sum(_ID_WEIGHTS)
_ID_SHAPE: Final = re.compile(r"[1-9][0-9]{16}[0-9Xx]")
_OLD_ID_SHAPE: Final = re.compile(r"[1-9][0-9]{14}")
_NO_ID_LETTER: Final = re.compile("[A-WYZa-wyz]")
# First-generation numbers were issued on the mainland only (1984-2004): not with the codes
# of Taiwan, Hong Kong and Macao (and the residence permits) that 18-character ones carry.
_OLD_ID_PROVINCES: Final = PROVINCES - {"71", "81", "82", "83"}
_EARLIEST_BIRTH: Final = dt.date(1900, 1, 1)
_YEAR_AT_START: Final = dt.date.today().year  # no later than any year the process sees
# Where the date is latest on Earth (Kiribati's Line Islands): a number issued today in the
# gateway's zone (`timezone`), which may be a day ahead of the process's, is dated no later.
_LATEST_ZONE: Final = dt.timezone(dt.timedelta(hours=14))


def _read(value: str) -> str:
    """`value` without what an ID number is read past, its digits folded (`pii.ID_READ`)."""
    # Imported here, not above: the scanner imports this module, and most ids are ASCII.
    from gateway.pii import ID_READ

    return value.translate(ID_READ)


def id_birth_date(value: str) -> dt.date | None:
    """Birth date of an 18-character string shaped like a resident ID (check digit not tested)."""
    if value[:2] not in PROVINCES:
        return None
    return _birth_date_at_7(value)


def _birth_date_at_7(value: str) -> dt.date | None:
    """The real, past date written from the 7th character of an 18-character number."""
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None
    # Only a birth date this year or later can lie in the future: today's date (a clock
    # read) is taken for those alone. A newborn's number is dated today somewhere, and a
    # child's number read as no number would pass `minors: deny`.
    if born < _EARLIEST_BIRTH or (born.year >= _YEAR_AT_START and born > _latest_today()):
        return None
    return born


def _latest_today() -> dt.date:
    return dt.datetime.now(_LATEST_ZONE).date()


def old_id_birth_date(value: str) -> dt.date | None:
    """Birth date of a 15-digit first-generation resident ID number: its division and its
    YYMMDD, always in the 1900s, are all there is to check (it has no check digit)."""
    if value[:2] not in _OLD_ID_PROVINCES:
        return None
    try:
        return dt.date(1900 + int(value[6:8]), int(value[8:10]), int(value[10:12]))
    except ValueError:
        return None


def id_ok(value: str) -> bool:
    """A valid resident ID number, of 18 characters or 15 digits, or a valid foreign permanent
    resident's ID number, without its separators."""
    if len(value) == 15:
        return old_id_birth_date(value) is not None
    return (
        id_birth_date(value) is not None or permanent_resident_date(value) is not None
    ) and id_check_ok(value)


def looks_like_id(value: str) -> bool:
    """An 18-digit run laid out like a resident ID (region, 18xx-20xx year, month, day), valid
    or not: mistyped ID numbers are never read as cards or credit codes."""
    return value[:2] in PROVINCES and _dated_from_7(value)


def _dated_from_7(value: str) -> bool:
    """Whether characters 7-14 are laid out as a birth date: 18xx-20xx year, month, day."""
    return value[6:8] in ("18", "19", "20") and value[10] in "01" and value[12] in "0123"


def id_check_ok(value: str) -> bool:
    # On the digits' byte values, less what the zeros contribute: no int() per character.
    total = sum(map(operator.mul, value[:17].encode("ascii"), _ID_WEIGHTS)) - _ID_ZERO_WEIGHT
    return _ID_CHECK[total % 11] == value[17].upper()


def resident_id_number(value: str) -> str | None:
    """`value` as the one resident ID number it is written as, or None if it is none: without
    the separators and invisible characters `pii.ID_READ` drops, digits folded, the check
    digit `X` in upper case. Every way of writing one number gives one string.

    A number of 18 laid out like a resident ID number counts whatever its check digit, as
    for cards and credit codes (`looks_like_id`): a mistyped number is still the number a
    share named, and written in groups it must not pass for another. So does one laid out
    like a foreign permanent resident's ID number, which is written as one.
    """
    # An ASCII letter but the check digit's `X` makes no number (a UUID, `u-7f3a…`): refused
    # before any table is read.
    if len(value) < 15 or (value.isascii() and _NO_ID_LETTER.search(value) is not None):
        return None
    if not (value.isascii() and value.isalnum()):
        value = _read(value)
    if (
        len(value) == 18
        and _ID_SHAPE.fullmatch(value)
        and (looks_like_id(value) or _looks_like_permanent_resident_id(value))
    ):
        return value.upper()
    if len(value) == 15 and _OLD_ID_SHAPE.fullmatch(value) and old_id_birth_date(value):
        return value
    return None


def stated_birth_date(value: str) -> dt.date | None:
    """The birth date a value declared to be a resident ID number states, its check digit
    aside: a mistyped child's number is still a child's, as `resident_id_number` reads it as
    the number a share named. A first-generation number gives its 19xx date, and a foreign
    permanent resident's (`permanent_resident_date`) its own."""
    number = resident_id_number(value)
    if number is None:
        return None
    if len(number) == 15:
        return old_id_birth_date(number)
    return id_birth_date(number) or permanent_resident_date(number)


# The number of a foreign permanent resident's identity card of the 2023 edition: `9`, the
# issuing province's code, a three-digit nationality code, the birth date, a sequence number and
# a check digit as in a resident ID number. Cards of earlier editions carry letters and no date.
_MAINLAND_PROVINCES: Final = _OLD_ID_PROVINCES


def permanent_resident_date(value: str) -> dt.date | None:
    """Birth date of an 18-character string shaped like a foreign permanent resident's ID
    number (check digit not tested), as `id_birth_date` reads a resident ID number's."""
    if value[0] != "9" or value[1:3] not in _MAINLAND_PROVINCES:
        return None
    return _birth_date_at_7(value)


def _looks_like_permanent_resident_id(value: str) -> bool:
    """An 18-digit run laid out like a foreign permanent resident's ID number, valid or not,
    as `looks_like_id` reads a resident ID number's layout (its date seven characters in)."""
    return value[0] == "9" and value[1:3] in _MAINLAND_PROVINCES and _dated_from_7(value)
