"""Logging: structlog's production chain, one JSON object per line on stdout."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO, Protocol, cast

import orjson
import structlog


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...


# How often lines that stdout did not take are reported on stderr.
LOST_NOTE_INTERVAL_S = 10.0


class Stdout:
    """The process's stdout as bytes (looked up at each write), where a failed write loses lines
    but never raises: a log pipeline that went away (a closed pipe, a full disk) must not stop
    shares, nor the share log, whose file holds every entry anyway. Lost lines are counted and
    reported on stderr, at most every `LOST_NOTE_INTERVAL_S`."""

    def __init__(self) -> None:
        self.lost_lines = 0
        self._noted_at = -LOST_NOTE_INTERVAL_S
        self._lock = threading.Lock()  # lines are lost on the loop and the share log's printer

    def write(self, data: bytes, /) -> int:
        try:
            return sys.stdout.buffer.write(data)
        except (OSError, ValueError) as exc:
            self.lose(data.count(b"\n"), exc)
            return len(data)

    def flush(self) -> None:
        try:
            sys.stdout.buffer.flush()
        except (OSError, ValueError) as exc:
            self.lose(0, exc)

    def lose(self, lines: int, why: object) -> None:
        """Count `lines` that never reached stdout, and say so on stderr now and then."""
        with self._lock:
            self.lost_lines += lines
            now = time.monotonic()
            if now - self._noted_at < LOST_NOTE_INTERVAL_S:
                return
            self._noted_at = now
        try:
            sys.stderr.write(f"stdout_failed: {self.lost_lines} log lines lost so far ({why})\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # nowhere left to say it


STDOUT = Stdout()


def configure_logging(*, json: bool = True, level: int = logging.INFO) -> None:
    """Contextvars, level, ISO timestamp, then JSON rendered by orjson straight to bytes."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=orjson.dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.BytesLoggerFactory(cast(BinaryIO, STDOUT))
        if json
        else structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    scrub_library_logs()


LIBRARY_LOGGERS = ("aiohttp", "asyncio")


def scrub_library_logs() -> None:
    """The libraries' own records: aiohttp's quote the bytes of a request it could not parse
    (a header, a token, a body), asyncio's the repr of an exception. Each becomes one line
    naming its kind and place, never its message."""
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers = [ScrubbedHandler()]
        library.propagate = False


class ScrubbedHandler(logging.Handler):
    """A stdlib log record as a structlog event without its message or arguments."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, object] = {
            "logger": record.name,
            "at": f"{record.module}:{record.lineno}",
        }
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = type(record.exc_info[1]).__name__
            fields["error_at"] = error_location(record.exc_info[1])
        structlog.get_logger(record.name).log(record.levelno, "library_log", **fields)


def error_location(exc: BaseException) -> str | None:
    """Where an exception was raised (file:line in function), without its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


def write_json_lines(events: Iterable[tuple[str, Mapping[str, Any]]], out: ByteSink) -> None:
    """Write info-level events as `configure_logging()` renders them, in one write.

    For the share log's entries, printed by the hundred: through structlog's chain each costs
    about 10 µs, most of it the chain itself, on a thread that holds the interpreter lock
    meanwhile. The line is the same: the fields, then `event`, `level` and a UTC `timestamp`.
    """
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    dumps = orjson.dumps
    out.write(
        b"".join(
            dumps({**fields, "event": event, "level": "info", "timestamp": stamp}) + b"\n"
            for event, fields in events
        )
    )
    out.flush()
