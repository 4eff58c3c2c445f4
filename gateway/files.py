"""Files the gateway creates that hold personal data."""

from __future__ import annotations

import os
from pathlib import Path


def create_private(path: Path) -> None:
    """Create `path` empty, readable and writable by its owner only, unless it exists.

    For the SQLite stores: keyed subject references are still personal data, and SQLite gives
    the write-ahead log and its index the permissions of the database file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
