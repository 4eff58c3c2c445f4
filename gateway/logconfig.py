"""Logging: structlog's production chain, one JSON object per line on stdout."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


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
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer)
        if json
        else structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
