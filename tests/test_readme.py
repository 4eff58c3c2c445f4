"""The README's deployment example agrees with the gateway it deploys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gateway.app import DRAIN_MARGIN_S
from gateway.auth import JWKS_FETCH_TIMEOUT_S
from gateway.server import CANCEL_GRACE_S
from gateway.settings import LimitsSettings, ListenSettings

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
    # The default listens on loopback, which the kubelet's httpGet probes never reach.
    assert ListenSettings().host == "127.0.0.1"
    container = gateway_container(example_pod())
    for probe in PROBES:
        assert "httpGet" not in container[probe]
        command = " ".join(container[probe]["exec"]["command"])
        assert f"http://127.0.0.1:{ListenSettings().port}/_gateway/" in command


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
        command = " ".join(container[probe]["exec"]["command"])
        waits = re.search(r"timeout=(\d+)\)", command)
        assert waits is not None, command
        assert container[probe].get("timeoutSeconds", 1) > int(waits.group(1))


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
