"""Files the gateway creates that hold personal data."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

# SQLite's files beside a database, which it finds by the database's name alone.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
# A new SQLite file is built beside its path under a name of this form, then renamed into
# place (`create_whole`). Nothing opens a file of that name; `remove_leftovers` removes it.
_BUILDING = re.compile(r"\.creating-[0-9a-f]{8}(?:-wal|-shm|-journal)?")


class OrphanedJournal(Exception):
    """No file at the path, but SQLite's write-ahead log or journal of one is still there."""


def resolved(path: Path) -> Path:
    """Where `path` leads, every symlink followed (to a file that may not exist yet).

    A symlink loop is the OSError opening the path gives (ELOOP), which callers report in a
    line naming the file: `Path.resolve` raises RuntimeError for it before Python 3.13.
    """
    try:
        return path.resolve()
    except RuntimeError as exc:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)) from exc


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


def create_whole(path: Path, build: Callable[[Path], None]) -> None:
    """Make the SQLite file at `path` whole, or nothing: `build` writes it under a name of its
    own beside `path`, which is synced and renamed into place.

    `build` must leave it in SQLite's rollback mode, where a commit is in the file once it
    returns (in WAL mode it could be in a `-wal` of the building's name, which the rename
    leaves behind). A kill at any moment leaves no file at `path` (perhaps the one being
    built: see `remove_leftovers`) or a complete one. The caller holds a lock that keeps
    anyone else from making the file meanwhile; `path` must not exist.
    """
    real = resolved(path)  # a symlink to where the file goes stays a symlink to it
    real.parent.mkdir(parents=True, exist_ok=True)
    clear_companions(real)
    building = real.with_name(f"{real.name}.creating-{secrets.token_hex(4)}")
    create_private(building)
    try:
        build(building)
        _sync(building, os.O_RDONLY)
        os.replace(building, real)
    except BaseException:
        for leftover in (building, *(Path(f"{building}{end}") for end in SQLITE_COMPANIONS)):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    _sync(real.parent, os.O_RDONLY | os.O_DIRECTORY)  # the rename survives a power cut


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the files a process killed while it made the file at `path` left; return them.

    The caller holds the lock `create_whole` is called under: nobody is making one now.
    """
    removed = []
    with os.scandir(path.parent) as entries:
        for entry in entries:
            name = entry.name
            # `create_whole` never makes a directory: one of the name is someone else's (and
            # unlinking it would fail, stopping the start). A symlink goes as a file would:
            # unlinked itself, never what it points to.
            if entry.is_dir(follow_symlinks=False):
                continue
            if name.startswith(path.name) and _BUILDING.fullmatch(name, len(path.name)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def clear_companions(path: Path) -> None:
    """Make way for a new SQLite file at `path`, where there is none: SQLite's files go.

    SQLite knows a file's write-ahead log and rollback journal by name only: either, left at
    the path by a file removed without it, would be applied to the new file as its own. One
    that holds anything is refused (OrphanedJournal), not removed: it may hold the removed
    file's last writes.
    """
    for suffix in ("-wal", "-journal"):
        companion = path.with_name(path.name + suffix)
        try:
            size = companion.stat().st_size
        except FileNotFoundError:
            continue
        if size > 0:
            raise OrphanedJournal(
                f"there is no file, but {companion.name} beside it holds what one wrote (the "
                "file was removed without it, which may hold its last writes): put the file "
                f"back, or remove {companion} to start anew"
            )
    for suffix in SQLITE_COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()


def _sync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
