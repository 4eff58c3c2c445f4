"""The package's build settings agree with what the build backend they name accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_build_asks_for_a_setuptools_that_reads_the_license_as_written() -> None:
    # A licence written as an SPDX expression (`license = "Apache-2.0"`) is read from
    # setuptools 77 on; an earlier one stops the build with "invalid pyproject.toml config",
    # as it does where the build environment is not fetched anew (`--no-build-isolation`).
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(pyproject["project"]["license"], str)
    [setuptools] = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    lowest = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert lowest is not None, setuptools
    assert int(lowest.group(1)) >= 77
