"""Page cursors: where a paged read of the share log stands, sealed to the query it pages.

A cursor is `payload.mac`, both base64url without padding. The payload is JSON:
[version, ts, seq, first, top, since, until]: the sort key of the last row sent, the first and
last share of the log when the first page was read (`review.PagePosition`), and the window as
the first page resolved it, so that a relative `since` (`7d`) does not move between pages. The
MAC covers the payload and the query's filters (`binding`), so a cursor altered, or given with
other filters, is refused rather than answered as a page of some other query.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime

import orjson

from gateway.sharelog.chain import format_ts
from gateway.sharelog.review import PagePosition
from gateway.sharelog.schema import SQLITE_INT_MAX

_VERSION = 1
_MAC_BYTES = 16
_MAX_CHARS = 512


class CursorRefused(ValueError):
    """Not a cursor written with this key for these filters. Its text is never quoted back:
    whoever reads the refusal learns nothing of what a valid cursor holds."""


def binding(filters: Mapping[str, object]) -> bytes:
    """The filters a cursor is sealed to, as the MAC covers them (keys in sorted order)."""
    return orjson.dumps(dict(filters), option=orjson.OPT_SORT_KEYS)


def _mac(key: bytes, bound: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, payload + b"\n" + bound, "sha256")[:_MAC_BYTES]


def write(
    key: bytes,
    bound: bytes,
    position: PagePosition,
    since: datetime | None,
    until: datetime | None,
) -> str:
    window = [None if t is None else format_ts(t) for t in (since, until)]
    payload = orjson.dumps(
        [_VERSION, position.ts, position.seq, position.first, position.top, *window]
    )
    return f"{_b64(payload)}.{_b64(_mac(key, bound, payload))}"


def read(
    key: bytes, bound: bytes, cursor: str
) -> tuple[PagePosition, datetime | None, datetime | None]:
    """The position and window a cursor carries; CursorRefused unless it was written with `key`
    for these very filters."""
    encoded, dot, signature = cursor.partition(".")
    if not dot or len(cursor) > _MAX_CHARS:
        raise CursorRefused("not a cursor")
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except ValueError:
        raise CursorRefused("not a cursor") from None
    if not hmac.compare_digest(mac, _mac(key, bound, payload)):
        raise CursorRefused("not a cursor of this query")
    try:
        version, ts, seq, first, top, since, until = orjson.loads(payload)
        if version != _VERSION or not isinstance(ts, str):
            raise ValueError("not a cursor of this version")
        if not all(type(n) is int and 0 < n <= SQLITE_INT_MAX for n in (seq, first, top)):
            raise ValueError("not a position")
        window = [None if t is None else _utc(t) for t in (since, until)]
    except (ValueError, TypeError):
        # Sealed with the key, so written with it: by a release with another format.
        raise CursorRefused("not a cursor of this release") from None
    return PagePosition(ts, seq, first, top), window[0], window[1]


def _utc(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError("not a time")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("not an instant")
    return moment


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64url: b64decode would skip characters outside the alphabet."""
    if not text or not text.isascii() or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
