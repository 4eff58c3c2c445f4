"""`share-gateway demo` as a new user runs it: exits 0 and shows what partners received."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
async def test_demo_serve_stops_on_a_signal_and_removes_its_folder(
    tmp_path: Path, stop: signal.Signals
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--serve",
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where the demo's folder goes
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            while (line := await process.stdout.readline()) != b"Press Ctrl-C to stop.\n":
                assert line, "the demo ended before serving"
        [folder] = _listing(tmp_path)
        assert folder.startswith("share-gateway-demo-")
        assert "share-log.sqlite" in _listing(tmp_path / folder)  # it serves from there
        process.send_signal(stop)
        async with asyncio.timeout(30):
            _, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (process.returncode, err) == (0, b"")
    assert _listing(tmp_path) == []


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
