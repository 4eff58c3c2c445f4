"""`share-gateway demo` as a new user runs it: exits 0 and shows what partners received."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PERSONAL_VALUES = ("11010519880605271X", "13800138000", "xiaoming.wang@example.com", "u-100234")


def test_demo_runs_and_partners_receive_only_what_contracts_allow() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Share Gateway demo"), out[:300]  # no log line before the walk-through
    assert done.stderr == ""
    # What each partner received is the right-hand column; raw personal values never appear there.
    received = [line.split("│", 1)[1] for line in out.splitlines() if "│" in line]
    assert received
    for value in PERSONAL_VALUES:
        assert value in out  # the caller sent it...
        assert not any(value in line for line in received)  # ...no partner received it
    assert "[REDACTED:contact.phone]" in out
    assert '"phone": "*******8000"' in out
    for code in (
        "consent_required",
        "minor_denied",
        "scope_denied",
        "route_denied",
        "malformed_body",
        "unsupported_media_type",
    ):
        assert f'"code":"{code}"' in out
    assert out.count("received: nothing") == 6
    assert "Share log summary" in out
