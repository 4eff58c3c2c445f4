"""Keyed pseudonyms: every keyed hash the gateway emits is derived here from one master key."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from gateway.errors import StartupError
from gateway.idnumber import resident_id_number

if TYPE_CHECKING:
    from gateway.settings import Settings

MIN_MASTER_KEY_BYTES = 32


def master_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """The key all pseudonyms derive from; without it nothing could be hashed, so nothing starts."""
    environ = os.environ if environ is None else environ
    name = settings.secrets.hash_key_env
    value = environ.get(name, "")
    if len(value.encode()) < MIN_MASTER_KEY_BYTES:
        raise StartupError(
            [
                f"environment variable {name} must hold a secret of at least "
                f"{MIN_MASTER_KEY_BYTES} bytes"
            ]
        )
    return value.encode()


def derive_key(master: bytes, label: str) -> bytes:
    """A sub-key for one use, so that hashes made for one purpose never join with another's."""
    return hmac.new(master, b"share-gateway/" + label.encode(), hashlib.sha256).digest()


def partner_hash_key(master: bytes, partner_id: str) -> bytes:
    """The key of the `hash` transform for one partner: two partners cannot join their data."""
    return derive_key(master, f"partner/{partner_id}")


def subject_ref_key(master: bytes) -> bytes:
    return derive_key(master, "subject-ref")


def keyed_hash(key: bytes, value: str) -> str:
    return hmac_sha256(key, value.encode("utf-8", "surrogatepass")).hex()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of `message`, from a copy of the MAC already keyed with `key`."""
    mac = _keyed_mac(key).copy()
    mac.update(message)
    return mac.digest()


@functools.lru_cache(maxsize=256)
def _keyed_mac(key: bytes) -> hmac.HMAC:
    # The gateway's keys are few and fixed, and each share takes several MACs: `hmac.digest`
    # would look the algorithm up in OpenSSL and hash the key's pads again for every one.
    return hmac.new(key, digestmod="sha256")


def canonical_subject_id(subject_id: str) -> str:
    """The one spelling of a subject id its reference is made from.

    A share, a consent grant and an access request name one person in whatever way each was
    written: with a space at the end, an invisible character (a zero-width space, a BOM, the
    direction marks a right-to-left form adds) at either end, in full-width characters (as a
    Chinese input method types them) or another script's digits, in decomposed Unicode (NFD,
    as some systems store names), a resident ID number in groups or with a lower-case `x`, a
    mobile number in groups or after `+86`.
    Each must lead to the same reference, or `logs subject` misses shares and a withdrawal
    misses the grant it ends. An id already written this way is unchanged, so references made
    before stay valid.
    """
    value = _read(unicodedata.normalize("NFC", subject_id))
    return resident_id_number(value) or _mobile_number(value) or value


# A mainland mobile number, with the country code written before it as dialled from abroad. A
# bare `86` is not read as that code: `8613800138000` may as well be an account number.
_MOBILE: Final = re.compile(r"(?:\+86|0086)?(1[3-9][0-9]{9})")
_ASCII_LETTER: Final = re.compile("[A-Za-z]")


def _mobile_number(value: str) -> str | None:
    """`value` as the mainland mobile number it is written as, its 11 digits, or None: many
    platforms name their users by phone, and `+86 138 0013 8000`, `0086-13800138000` and
    `138-0013-8000` are the one person `13800138000` is. Read past, as in a resident ID
    number: whitespace, dashes, slashes and invisible characters; any script's digits."""
    # Most ids have a letter in them (`u-7f3a9c12e4`, a UUID): no number, and no table read.
    if len(value) < 11 or (value.isascii() and _ASCII_LETTER.search(value) is not None):
        return None
    if not value.isdigit():
        # Imported here, as `_read` does: the tables are the scanner's.
        from gateway.pii import ID_READ

        value = value.translate(ID_READ)
    match = _MOBILE.fullmatch(value)
    return None if match is None else match.group(1)


def _read(value: str) -> str:
    """`value` without the whitespace and invisible characters at its ends, its full-width
    characters and digits read as ASCII. Inside, an invisible character may be part of a name
    (the zero-width non-joiner of a Persian name), and letters keep their case."""
    if value.isascii():
        # Only the controls are invisible in ASCII: the common case needs no table.
        return value.strip(_ASCII_EDGES)
    # Imported here, as `idnumber` does: most ids are ASCII, and the tables are the scanner's.
    from gateway.pii import INVISIBLE_CHARS, SUBJECT_ID_READ

    start, end = 0, len(value)
    while start < end and (value[start] in INVISIBLE_CHARS or value[start].isspace()):
        start += 1
    while end > start and (value[end - 1] in INVISIBLE_CHARS or value[end - 1].isspace()):
        end -= 1
    return value[start:end].translate(SUBJECT_ID_READ)


_ASCII_EDGES = "".join(map(chr, (*range(0x21), 0x7F)))  # the controls and the space


def subject_id_problem(subject_id: str) -> str | None:
    """Why `subject_id` names no one, said without echoing it ("must not be ..."); None for an
    id. Every place an id comes in asks this: the share path, the registry and each lookup.

    Only whitespace is no id. Nor is one holding U+FFFD, which a decoder writes for bytes it
    could not read: ids that differed only in those bytes would be one subject, and a grant,
    a withdrawal or a share record of one person would count for another.
    """
    return _problem(canonical_subject_id(subject_id))


def checked_subject_id(subject_id: str) -> str | None:
    """The canonical spelling of `subject_id`, or None where `subject_id_problem` finds one:
    the share path's question, answered with one normalisation."""
    canonical = canonical_subject_id(subject_id)
    return None if _problem(canonical) else canonical


def _problem(canonical: str) -> str | None:
    # Asked of the canonical spelling: normalising adds and removes no U+FFFD.
    if not canonical:
        return "must not be empty"
    if "\ufffd" in canonical:
        return "must not hold U+FFFD (the mark of characters lost in decoding)"
    return None


def subject_ref(key: bytes, subject_id: str) -> str:
    """The keyed reference of a data subject (`key`: `subject_ref_key`), as the share log and
    the consent registry hold it: every subject reference is made here."""
    return keyed_hash(key, canonical_subject_id(subject_id))


def shares_cursor_key(master: bytes) -> bytes:
    """Seals the admin API's `/shares` cursors: a client cannot forge where a page starts."""
    return derive_key(master, "shares-cursor")
