"""Keyed pseudonyms: every keyed hash the gateway emits is derived here from one master key."""

from __future__ import annotations

import hashlib
import hmac


def derive_key(master: bytes, label: str) -> bytes:
    """A sub-key for one use, so that hashes made for one purpose never join with another's."""
    return hmac.new(master, b"share-gateway/" + label.encode(), hashlib.sha256).digest()


def partner_hash_key(master: bytes, partner_id: str) -> bytes:
    """The key of the `hash` transform for one partner: two partners cannot join their data."""
    return derive_key(master, f"partner/{partner_id}")


def subject_ref_key(master: bytes) -> bytes:
    return derive_key(master, "subject-ref")


def keyed_hash(key: bytes, value: str) -> str:
    return hmac.digest(key, value.encode("utf-8", "surrogatepass"), "sha256").hex()


def shares_cursor_key(master: bytes) -> bytes:
    """Seals the admin API's `/shares` cursors: a client cannot forge where a page starts."""
    return derive_key(master, "shares-cursor")
