"""The package builds with the backend it names, `scripts/setup` installs it once, the image's
build stage copies all of it, and the image's health check finds the gateway."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from gateway.arguments import HEALTH_TIMEOUT_S
from gateway.settings import ListenSettings

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


def dockerfile_build_copies() -> list[tuple[list[str], str]]:
    """The `COPY sources... dest` lines of the Dockerfile's build stage, in order."""
    lines = (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"FROM \S+ AS build$", line))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("FROM "))
    copies = []
    for line in lines[start + 1 : end]:
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            assert not any(s.startswith("--") for s in sources), line
            copies.append((sources, dest))
    return copies


def docker_ignores(relative: Path) -> bool:
    """Whether `.dockerignore` keeps the path out of the build context (its patterns as written
    there: names, and `**/` for any depth)."""
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = relative.parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), pattern
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            return True
    return False


_SH = shutil.which("sh") or "/bin/sh"


def _setup_in(tmp_path: Path, pyproject: str) -> Path:
    """A copy of `scripts/setup` beside `pyproject`, whose `.venv/bin/python` writes each pip
    command it is given to `pip.log` instead of running it."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(REPO / "scripts" / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "pyproject.toml").write_text(pyproject)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -m ]; then echo "$*" >>pip.log; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    return tmp_path / "pip.log"


def _run_setup(tmp_path: Path, *extras: str) -> list[str]:
    log = tmp_path / "pip.log"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        [_SH, str(tmp_path / "scripts" / "setup"), *extras],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    return log.read_text().splitlines() if log.exists() else []


def test_setup_installs_once_per_version_of_the_project(tmp_path: Path) -> None:
    # A second `./scripts/demo` must run offline: installing again needs the package index.
    _setup_in(tmp_path, "[project]\nname = 'x'\n")
    assert _run_setup(tmp_path) == [
        "-m pip install --quiet --upgrade pip",
        "-m pip install --quiet -e .",
    ]
    assert _run_setup(tmp_path) == []
    # The development tools are more than the plain install holds.
    assert _run_setup(tmp_path, "dev") == [
        "-m pip install --quiet --upgrade pip",
        "-m pip install --quiet -e .[dev]",
    ]
    assert _run_setup(tmp_path, "dev") == []
    assert _run_setup(tmp_path) == []
    # New dependencies: installed again.
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    assert _run_setup(tmp_path) == [
        "-m pip install --quiet --upgrade pip",
        "-m pip install --quiet -e .",
    ]
    assert _run_setup(tmp_path, "dev")[-1] == "-m pip install --quiet -e .[dev]"


def test_setup_that_failed_to_install_installs_again(tmp_path: Path) -> None:
    _setup_in(tmp_path, "[project]\nname = 'x'\n")
    python = tmp_path / ".venv" / "bin" / "python"
    working = python.read_text()
    python.write_text(working.replace("exit 0", "exit 1"))
    failed = subprocess.run(
        [_SH, str(tmp_path / "scripts" / "setup")], capture_output=True, timeout=30, check=False
    )
    assert failed.returncode != 0
    python.write_text(working)
    assert _run_setup(tmp_path)[-1] == "-m pip install --quiet -e ."


def test_setup_whose_development_install_failed_keeps_the_plain_one(tmp_path: Path) -> None:
    # An offline `./scripts/check` after `./scripts/demo` cannot install the development tools;
    # the demo must still run offline after it.
    _setup_in(tmp_path, "[project]\nname = 'x'\n")
    assert _run_setup(tmp_path)[-1] == "-m pip install --quiet -e ."
    python = tmp_path / ".venv" / "bin" / "python"
    working = python.read_text()
    python.write_text(working.replace("exit 0", "exit 1"))
    failed = subprocess.run(
        [_SH, str(tmp_path / "scripts" / "setup"), "dev"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert failed.returncode != 0
    python.write_text(working)
    assert _run_setup(tmp_path) == []
    assert _run_setup(tmp_path, "dev")[-1] == "-m pip install --quiet -e .[dev]"


def test_the_scripts_set_up_through_setup() -> None:
    # One place decides when to install; a script with its own pip line would install every run.
    for name, call in (
        ("scripts/demo", "./scripts/setup\n"),
        ("scripts/check", "./scripts/setup dev\n"),
        ("bench/run", "./scripts/setup dev\n"),
    ):
        text = (REPO / name).read_text()
        assert call in text, name
        assert "pip install --quiet -e" not in text, name


def test_the_image_build_installs_every_file_of_the_package(tmp_path: Path) -> None:
    # The image is built from only what its build stage copies: a module or data file the
    # package needs, left out of the copy, is missing at `share-gateway serve` in the image
    # alone, never in a checkout.
    context = tmp_path / "src"
    context.mkdir()
    for sources, dest in dockerfile_build_copies():
        # As COPY does: a file into a folder (`./`) keeps its name; a folder's contents go
        # under the destination.
        for root in sorted(r for source in sources for r in REPO.glob(source)):
            if root.is_file():
                files = [(root, Path(dest) / root.name if dest.endswith("/") else Path(dest))]
            else:
                files = [(p, Path(dest) / p.relative_to(root)) for p in sorted(root.rglob("*"))]
            for path, inside in files:
                if path.is_dir() or docker_ignores(path.relative_to(REPO)):
                    continue
                (context / inside).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, context / inside)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",  # the dev extras install the backend: no download here
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(context),
        ],
        check=True,
        timeout=100,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("share_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    package = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "gateway").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "gateway/py.typed" in package
    assert package - names == set()
    assert "share-gateway = gateway.__main__:main" in scripts


def dockerfile_healthcheck() -> tuple[dict[str, str], list[str]]:
    """The Dockerfile's HEALTHCHECK: its options (`interval`: `10s`, ...) and its command."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("HEALTHCHECK ")]
    head, _, command = line.partition(" CMD ")
    options = dict(option.removeprefix("--").split("=", 1) for option in head.split()[1:])
    argv: list[str] = json.loads(command)
    return options, argv


def dockerfile_command() -> list[str]:
    """The arguments the image's entry point is given by default (`CMD`)."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    [line] = [line for line in text.splitlines() if line.startswith("CMD ")]
    argv: list[str] = json.loads(line.removeprefix("CMD "))
    return argv


async def run_healthcheck(environ: dict[str, str], config: Path) -> int:
    """The image's health check as a process, with `config` for the image's settings file."""
    _, argv = dockerfile_healthcheck()
    assert argv[:2] == ["share-gateway", "health"]
    at = argv.index("--config") + 1
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *argv[1:at],
        str(config),
        *argv[at + 1 :],
        env=environ,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


@pytest.mark.parametrize("named", ["file", "variable", "neither"])
async def test_the_image_health_check_asks_the_port_the_gateway_listens_on(
    named: str, tmp_path: Path
) -> None:
    # A gateway moved by its gateway.yaml, or by SHARE_GATEWAY_LISTEN_PORT (`docker run -e`),
    # is asked there; without either the check asks the default port, never this one.
    asked: list[str] = []

    async def health(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/_gateway/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        [(_, port, *_)] = runner.addresses
        assert port != ListenSettings().port
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SHARE_GATEWAY_")}
        config = tmp_path / "gateway.yaml"
        config.write_text(f"listen: {{port: {port}}}\n" if named == "file" else "{}\n")
        if named == "variable":
            environ["SHARE_GATEWAY_LISTEN_PORT"] = str(port)
        code = await run_healthcheck(environ, config)
    finally:
        await runner.cleanup()
    assert asked == ([] if named == "neither" else ["/_gateway/health"])
    if named != "neither":
        assert code == 0


def test_the_image_health_check_reads_the_settings_the_gateway_was_started_with() -> None:
    # Another file would name another port; and the probe ends, saying why, before Docker
    # kills it.
    options, argv = dockerfile_healthcheck()
    served = dockerfile_command()
    assert served[0] == "serve"
    assert argv[argv.index("--config") + 1] == served[served.index("--config") + 1]
    timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv else HEALTH_TIMEOUT_S
    assert options["timeout"].endswith("s")
    assert timeout < int(options["timeout"][:-1])


def test_the_image_health_check_waits_out_a_start_as_the_example_pod_does() -> None:
    # Docker counts no failure within the start period; a start reads the share log back.
    options, _ = dockerfile_healthcheck()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("apiVersion: v1\nkind: Pod")
    pod = yaml.safe_load(readme[start : readme.index("```", start)])
    [gateway] = [c for c in pod["spec"]["containers"] if c["name"] == "share-gateway"]
    probe = gateway["startupProbe"]
    assert options["start-period"].endswith("s")
    assert int(options["start-period"][:-1]) >= probe["periodSeconds"] * probe["failureThreshold"]
