"""One data subject, however its id is written: one reference in the share log and in the
consent registry, so `logs subject`, the admin API and consent find every share and grant."""

from __future__ import annotations

import unicodedata

import pytest
from conftest import HASH_KEY

from gateway.keys import canonical_subject_id, keyed_hash, subject_ref, subject_ref_key

# Valid resident ID numbers (division, date and check digit), one with the check digit X.
ID_NUMBER = "110105198806052715"
ID_NUMBER_X = "11010519880605100X"
FIRST_GENERATION = "110105880605271"
# Laid out like an ID number, but its check digit is wrong: a mistyped number is still one.
MISTYPED = "110105198806052719"
FULL_WIDTH = str.maketrans(
    "0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"
)
NFC_NAME = "Jos\u00e9"  # é precomposed
NFD_NAME = unicodedata.normalize("NFD", NFC_NAME)  # e and a combining acute accent

# Each of these is written the way it is canonically: its reference is what it always was.
CANONICAL = [
    "u-1",
    "subject-alice-7731",
    "123",
    NFC_NAME,
    "\u7528\u6237-42",
    ID_NUMBER,
    ID_NUMBER_X,
    FIRST_GENERATION,
    MISTYPED,
    "110105-1988-0605-27",  # too short for an ID number: its dashes are its own
    "6222021234567890123",  # a card number: not laid out like an ID number
]


@pytest.mark.parametrize("subject_id", CANONICAL)
def test_an_id_written_canonically_keeps_its_reference(subject_id: str) -> None:
    key = subject_ref_key(HASH_KEY.encode())
    assert canonical_subject_id(subject_id) == subject_id
    # What share logs and consent registries written before hold for this subject.
    assert subject_ref(key, subject_id) == keyed_hash(key, subject_id)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        (" u-1\t", "u-1"),
        ("u-1\u3000", "u-1"),  # an ideographic space
        (NFD_NAME, NFC_NAME),
        (f" {NFD_NAME} ", NFC_NAME),
        ("110105 19880605 2715", ID_NUMBER),
        ("110105-1988-0605-2715", ID_NUMBER),
        ("110105/19880605/2715", ID_NUMBER),
        (ID_NUMBER.translate(FULL_WIDTH), ID_NUMBER),
        ("11010519880605100x", ID_NUMBER_X),
        ("110105 19880605 100x ", ID_NUMBER_X),
        ("110105 880605 271", FIRST_GENERATION),
        ("110105-1988-0605-2719", MISTYPED),
    ],
)
def test_spellings_of_one_id_are_one_canonical_id(written: str, canonical: str) -> None:
    assert canonical_subject_id(written) == canonical
    assert canonical_subject_id(canonical) == canonical
