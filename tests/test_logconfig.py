"""JSON lines: the share log's fast printer writes what structlog's configured chain writes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from gateway.logconfig import configure_logging, write_json_lines

FIELDS: dict[str, Any] = {
    "seq": 7,
    "share_id": "9f790c96-5825-4e44-9162-e1919f5176ff",
    "partner": "acme",
    "fields_sent": ["applicant.name", "loan_amount"],
    "pii_redactions": {"phone": 1},
    "cross_border_mechanism": None,
    "name": "张伟",
}


@pytest.fixture
def structlog_output() -> Iterator[io.BytesIO]:
    """What the configured chain writes, caught in memory (only the destination is changed)."""
    out = io.BytesIO()
    configure_logging()
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(out))
    yield out
    structlog.reset_defaults()


def test_a_fast_line_is_the_line_structlog_writes(structlog_output: io.BytesIO) -> None:
    structlog.get_logger("share_log").info("share_recorded", **FIELDS)
    fast = io.BytesIO()
    write_json_lines([("share_recorded", FIELDS)], fast)
    [slow_line] = structlog_output.getvalue().splitlines()
    [fast_line] = fast.getvalue().splitlines()
    slow, quick = orjson.loads(slow_line), orjson.loads(fast_line)
    # The same keys in the same order, the same values; only the instant differs.
    assert list(slow) == list(quick)
    assert {**slow, "timestamp": ""} == {**quick, "timestamp": ""}
    assert quick["timestamp"].endswith("Z")
    assert len(quick["timestamp"]) == len(slow["timestamp"])


def test_many_events_are_one_write_of_whole_lines() -> None:
    writes: list[bytes] = []

    class Out(io.BytesIO):
        def write(self, data: Any) -> int:
            writes.append(bytes(data))
            return len(data)

    write_json_lines([("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})], Out())
    [written] = writes
    assert [orjson.loads(line)["event"] for line in written.splitlines()] == ["a", "b", "c"]
    assert written.endswith(b"\n")
