"""The README's deployment example, settings tables, error codes and exit codes agree with the
gateway they describe."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, cast

import annotated_types
import yaml
from pydantic import BaseModel

from gateway.app import DRAIN_MARGIN_S
from gateway.arguments import HEALTH_TIMEOUT_S
from gateway.auth import JWKS_FETCH_TIMEOUT_S
from gateway.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, build_parser
from gateway.errors import GatewayError
from gateway.server import CANCEL_GRACE_S
from gateway.settings import (
    AuthSettings,
    ConsentSettings,
    LimitsSettings,
    ListenSettings,
    RegistrySettings,
    SecretsSettings,
    Settings,
    ShareLogSettings,
)

REPO = Path(__file__).resolve().parent.parent


PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def example_pod() -> dict[str, Any]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("apiVersion: v1\nkind: Pod")
    pod: dict[str, Any] = yaml.safe_load(readme[start : readme.index("```", start)])
    return pod


def gateway_container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == "share-gateway"]
    assert isinstance(container, dict)
    return container


def test_the_example_pod_gives_the_drain_time_to_finish() -> None:
    slowest = max(
        yaml.safe_load(path.read_text(encoding="utf-8"))["upstream"]["timeout_s"]
        for path in (REPO / "contracts").glob("*.yaml")
    )
    drain = LimitsSettings().body_read_timeout_s + slowest + DRAIN_MARGIN_S + 2 * CANCEL_GRACE_S
    assert example_pod()["spec"]["terminationGracePeriodSeconds"] > drain


def test_the_example_pod_probes_the_gateway_where_it_listens() -> None:
    # The default listens on loopback, which the kubelet's httpGet probes never reach: the probes
    # run in the container, reading the settings file the gateway was started with.
    assert ListenSettings().host == "127.0.0.1"
    container = gateway_container(example_pod())
    args = container["args"]
    config = args[args.index("--config") + 1]
    for probe in PROBES:
        assert "httpGet" not in container[probe]
        ready = ["--ready"] if probe == "readinessProbe" else []
        command = container[probe]["exec"]["command"]
        assert command == ["share-gateway", "health", "--config", config, *ready]


def image_user() -> tuple[int, int]:
    """The uid and gid the Dockerfile's image runs as (`USER uid:gid`)."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    [user] = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    uid, gid = user.split(":")
    return int(uid), int(gid)


def test_the_example_pod_gives_the_share_log_volume_to_the_image_user() -> None:
    # A new persistent volume's root is root's, mode 755, hiding the image's own var/: the
    # kubelet hands it to the pod's fsGroup, and without one the gateway cannot create its
    # share log there and stops at its first start.
    pod = example_pod()
    _, gid = image_user()
    assert pod["spec"].get("securityContext", {}).get("fsGroup") == gid
    [mount] = [
        m for m in gateway_container(pod)["volumeMounts"] if m["mountPath"] == "/srv/gateway/var"
    ]
    assert not mount.get("readOnly", False)


def test_the_example_pod_gives_a_read_only_gateway_a_writable_tmp() -> None:
    # SQLite writes a sort too large for memory to a temporary file, in /var/tmp, /tmp or the
    # working directory, and fails ("disk I/O error") where none is writable: the start's
    # read-back of the day's shares (90,000 of them are enough) and `logs summary` do.
    pod = example_pod()
    container = gateway_container(pod)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = container["volumeMounts"]
    [mount] = [m for m in mounts if m["mountPath"] == "/tmp"]  # noqa: S108 - the pod's, not ours
    assert not mount.get("readOnly", False)
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_the_example_pod_lets_each_probe_run_as_long_as_its_own_timeout() -> None:
    # The kubelet ends an exec probe after `timeoutSeconds` (1 when not given) and counts it
    # failed: a probe whose request may take 2 s needs more than that, or a slow start of its
    # interpreter fails the liveness probe and restarts the gateway with shares in flight.
    container = gateway_container(example_pod())
    for probe in PROBES:
        command = container[probe]["exec"]["command"]
        at = command.index("--timeout") + 1 if "--timeout" in command else None
        waits = HEALTH_TIMEOUT_S if at is None else float(command[at])
        assert container[probe].get("timeoutSeconds", 1) > waits


def test_the_example_pod_lets_a_slow_start_finish_before_liveness_counts() -> None:
    # Liveness alone restarts a gateway still starting after about 30 s (3 failures, 10 s
    # apart): one whose read-back of a large share log on a slow disk takes that long would be
    # killed at every start. The startup probe holds liveness off; besides the key fetches,
    # it leaves a minute for the read-back, which takes seconds for millions of shares.
    container = gateway_container(example_pod())
    startup = container["startupProbe"]
    assert startup["exec"] == container["livenessProbe"]["exec"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget >= 2 * JWKS_FETCH_TIMEOUT_S + 60


def readme_section(heading: str) -> str:
    """The text under `heading` (a whole heading line), up to the next heading of any level."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n{heading}\n") + len(heading) + 2
    end = readme.find("\n#", start)
    return readme[start : end if end >= 0 else len(readme)]


def anchor(heading: str) -> str:
    """The `#...` GitHub links `heading` by: lower case, spaces as `-`, no punctuation."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_contents_link_every_section_and_name_only_headings() -> None:
    # The contents are how a reader finds a rule: a section left out is one never found, and a
    # link to a heading since renamed leads nowhere.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    lines: list[str] = []
    fenced = False
    for line in readme.splitlines():
        fenced = fenced != line.startswith("```")
        if not fenced and line.startswith("#"):
            lines.append(line)
    sections = {anchor(line[3:]) for line in lines if line.startswith("## ")} - {"contents"}
    headings = {anchor(line.lstrip("#")) for line in lines}
    linked = set(re.findall(r"\]\(#([^)]+)\)", readme_section("## Contents")))
    assert sections - linked == set()
    assert linked - headings == set()


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `text`, each cell stripped (`\\|` is text)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]


def upper_bound(model: type[BaseModel], key: str) -> float | None:
    bounds = [m.le for m in model.model_fields[key].metadata if isinstance(m, annotated_types.Le)]
    return float(cast(float, bounds[0])) if bounds else None


def test_the_limits_table_gives_every_limit_its_default_and_bound() -> None:
    named: set[str] = set()
    for key_cell, default_cell, _beyond in table_rows(readme_section("### Limits")):
        keys = re.findall(r"`(\w+)`", key_cell)
        named.update(keys)
        stated, _, remark = default_cell.partition("(")
        if not re.search(r"\d", stated):
            # Derived from another limit: the figure is in the remark, and what `serve` uses.
            [key] = keys
            assert key == "max_upstream_connections_per_origin"
            derived = LimitsSettings().upstream_connections_per_origin
            assert int(re.findall(r"\d+", remark)[0]) == derived
            continue
        defaults = [float(n) for n in stated.split(",")]
        most = re.search(r"at most (\d+(?:, \d+)*)", remark)
        bounds = [float(n) for n in most.group(1).split(", ")] if most else [None] * len(keys)
        assert len(defaults) == len(bounds) == len(keys), key_cell
        for key, default, bound in zip(keys, defaults, bounds, strict=True):
            assert getattr(LimitsSettings(), key) == default, key
            assert upper_bound(LimitsSettings, key) == bound, key
    assert named == set(LimitsSettings.model_fields)


SETTINGS_ROWS: dict[str, type[BaseModel]] = {
    "`listen`": ListenSettings,
    "top level": Settings,
    "`auth`": AuthSettings,
    "`consent`": ConsentSettings,
    "`registry`": RegistrySettings,
    "`share_log`": ShareLogSettings,
    "`secrets`": SecretsSettings,
}


def as_written(value: object) -> object:
    """A default as YAML would write it in the README's table."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def test_the_settings_table_gives_every_default_and_bound() -> None:
    rows = {row[0]: row[1] for row in table_rows(readme_section("## Configuration"))}
    assert set(SETTINGS_ROWS) <= set(rows)
    for row, model in SETTINGS_ROWS.items():
        keys = rows[row]
        if model is Settings:
            fields = {k for k, f in model.model_fields.items() if f.annotation in (str, bool, Path)}
        else:
            fields = set(model.model_fields)
        named = set(re.findall(r"`(\w+)`", keys))
        if model is ConsentSettings:
            # "like `auth` but without `k`": auth's keys, less those.
            missing = set(re.findall(r"without `(\w+)`", keys))
            assert fields == set(AuthSettings.model_fields) - missing
        else:
            assert fields <= named, row
        for key, stated in re.findall(r"`(\w+)` \((\[[^\]]*\]|[^,;:()]+)", keys):
            if key not in fields:
                continue
            field = model.model_fields[key]
            if stated == "required":
                assert field.is_required(), key
                continue
            # `batched \| strict`: the first is the default.
            written = yaml.safe_load(stated.split("\\|")[0])
            assert as_written(field.default) == written, f"{row}: {key}"
        for key, bound in re.findall(r"`(\w+)` \([^`]*?(?:at most|to) (\d+)", keys):
            assert upper_bound(model, key) == float(bound), f"{row}: {key}"


def documented_errors() -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
    """The error codes the README's table lists, and those the text under it names."""
    section = readme_section("## Error codes")
    table = {
        (int(status), code)
        for status, codes, _when in table_rows(section)
        for code in re.findall(r"`(\w+)`", codes)
    }
    prose = section[section.index("\n\n") :]
    named = {
        (int(status), code)
        for status, first, more in re.findall(r"`(\d{3})\s+(\w+)`((?:\s*/\s*`\w+`)*)", prose)
        for code in (first, *re.findall(r"`(\w+)`", more))
    }
    return table, named


def answered_errors() -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        error = pending.pop()
        found.add((error.status, error.code))
        pending.extend(error.__subclasses__())
    return found


def test_the_error_code_table_names_every_code_the_gateway_answers() -> None:
    table, named = documented_errors()
    assert table <= answered_errors()
    assert answered_errors() - table - named == set()


def test_the_readme_states_the_exit_codes_the_commands_return() -> None:
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    stated = re.search(r"Exit codes: (\d) ok, (\d) the check failed, (\d) usage error", readme)
    assert stated is not None
    assert tuple(int(n) for n in stated.groups()) == (EXIT_OK, EXIT_FAILED, EXIT_USAGE)


def command_options() -> dict[str, list[set[str]]]:
    """Each command's options, each as the set of its spellings, keyed by the command's words."""
    found: dict[str, list[set[str]]] = {}

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found[" ".join(words)] = [set(a.option_strings) for a in parser._actions]
            return
        for name, sub in subs[0].choices.items():
            walk(sub, (*words, name))

    walk(build_parser(), ())
    return found


def test_the_commands_table_names_every_command_and_option() -> None:
    # The table is where an operator looks up a command: an option left out of it (`--format`)
    # is one never tried, and one named there that the parser lacks is a usage error.
    documented: dict[str, set[str]] = {}
    for cell, _does in table_rows(readme_section("## Commands")):
        usage = cell.strip("`").removeprefix("share-gateway ")
        words = re.match(r"[a-z]+(?: [a-z]+)*", usage)
        assert words is not None, cell
        documented[words.group(0)] = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", usage))
    parsed = command_options()
    assert set(documented) == set(parsed)
    for command, options in parsed.items():
        # "Common to every command" states `--config` once, for every command but `demo`.
        assert ({"--config"} in options) == (command != "demo"), command
        options = [o for o in options if o and not o & {"-h", "--config"}]
        assert documented[command] - {"--config"} <= set().union(*options), command
        for spellings in options:
            assert spellings & documented[command], (command, spellings)
