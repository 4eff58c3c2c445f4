"""The gateway's speed benchmark: direct upstream, the naive proxy and the gateway, side by side.

Run ``bench/run`` (which sets up the tools and calls this file), or
``.venv/bin/python bench/bench_gateway.py [--profile] [--out FILE]``. Everything runs on
127.0.0.1 as separate processes: a fixed-answer upstream, the naive aiohttp proxy, the gateway
(`python -m gateway serve` on a benchmark contract) and the load generator (wrk, else
bench/loadgen.py). The exit code is 0 whatever the floors say; it is 1 only when nothing could be
measured (a service did not start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable

PARTNER = "bench-credit"
PURPOSE = "credit_assessment"
ISSUER = "https://idp.bench.example"
AUDIENCE = "share-gateway"
TOKEN_POOL = 16  # distinct callers, each reusing its token as a service does until it expires
UPSTREAM_TOKEN_ENV = "BENCH_CREDIT_TOKEN"
EXPECTED_ANSWER = {"score": 712, "band": "B"}

# The floors of the issue ("Speed").
FLOOR_THROUGHPUT_RATIO = 1.0
FLOOR_ADDED_P50_US = 400.0
FLOOR_RSS_MIB = 120.0
FLOOR_STRICT_RATIO = 0.5  # share log `strict` against `batched` (the share-log issue)
# "No growth": what allocator noise may move RSS over 200,000 requests (about 10 bytes each).
RSS_GROWTH_TOLERANCE_MIB = 2.0

TARGETS = ("upstream", "naive", "gateway")
LABELS = {"upstream": "upstream (direct)", "naive": "naive proxy", "gateway": "gateway"}
PATHS = {
    "upstream": "/v1/assess",
    "naive": f"/{PARTNER}/v1/assess",
    "gateway": f"/{PARTNER}/v1/assess",
}


# --- the workload -----------------------------------------------------------------------------


def loan_application() -> dict[str, Any]:
    """One applicant as the booking service holds it: far more than the partner may receive."""
    return {
        "request_id": "req-20251130-000123",
        "submitted_at": "2025-11-30T14:05:09+08:00",
        "channel": "workspace-booking",
        "applicant": {
            "user_id": "u-7f3a9c12e4",
            "name": "张伟",
            "id_number": "11010519860412345X",
            "birth_date": "1986-04-12",
            "gender": "male",
            "phone": "13812345678",
            "email": "zhang.wei@example.com",
            "address": {
                "province": "北京市",
                "city": "北京市",
                "district": "朝阳区",
                "street": "建国路88号",
                "building": "SOHO现代城 3号楼 1205室",
                "postcode": "100022",
            },
            "monthly_income": 18500,
            "employer": {
                "name": "北京星河云科技有限公司",
                "position": "高级工程师",
                "since": "2019-07-01",
                "phone": "010-85551234",
            },
            "marital_status": "married",
            "education": "bachelor",
            "emergency_contact": {"name": "李娜", "relation": "spouse", "phone": "13987654321"},
            "bank_account": {"bank": "招商银行", "card_last4": "8842"},
        },
        "loan_amount": 50000,
        "loan_term_months": 12,
        "currency": "CNY",
        "loan_purpose": "workspace booking deferred payment",
        "booking": {
            "booking_id": "bk-20251130-8841",
            "space": "Meeting Room A-301, Floor 3",
            "starts_at": "2025-12-08T09:00:00+08:00",
            "ends_at": "2026-03-08T18:00:00+08:00",
            "seats": 12,
        },
        "device": {
            "ip": "10.24.8.17",
            "device_id": "d-5b1e2c9a7f30",
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15",
        },
        "internal": {
            "crm_segment": "smb-gold",
            "risk_flags": ["none"],
            "notes": "repeat customer; paid 11 of 12 previous instalments on time",
            "sales_rep": "li.na@platform.example",
        },
    }


def body_bytes() -> bytes:
    return json.dumps(loan_application(), ensure_ascii=False, separators=(",", ":")).encode()


def contract_yaml(upstream_url: str) -> str:
    """A credit partner on the benchmark's upstream; seven allowed fields, a hash and a mask.

    Entrusted rather than third party, with no rate or daily cap: the benchmark measures the
    per-request work, not the consent registry or the limits that would refuse it.
    """
    return f"""\
partner:
  id: {PARTNER}
  name: Benchmark Credit Co.
  kind: credit_assessment
  relationship: entrusted
contract:
  id: DPA-BENCH-1
  version: 1
  effective: 2025-01-01
  expires: 2099-12-31
  status: active
  pia_ref: PIA-BENCH-1
upstream:
  base_url: {upstream_url}
  location: CN
  timeout_s: 10
  auth: {{type: bearer, token_env: {UPSTREAM_TOKEN_ENV}}}
purposes: [{PURPOSE}]
categories: [identity.name, identity.id_number, contact.phone, financial.income,
             organization.company]
terms:
  retention_days: 30
  onward_transfer: false
  cross_border: {{allowed: false}}
  sensitive: {{allowed: [identity.id_number], consent_required: false}}
  minors: deny
routes:
  - method: POST
    path: /v1/assess
    purpose: {PURPOSE}
    subject: applicant.user_id
    birth_date: applicant.birth_date
    fields:
      - {{path: applicant.name, category: identity.name}}
      - {{path: applicant.id_number, category: identity.id_number, transform: hash}}
      - {{path: applicant.phone, category: contact.phone, transform: {{mask: {{keep_last: 4}}}}}}
      - {{path: applicant.monthly_income, category: financial.income}}
      - {{path: applicant.employer.name, category: organization.company}}
      - {{path: loan_amount, category: business.transaction}}
      - {{path: loan_term_months, category: business.transaction}}
    response:
      fields: [{{path: score}}, {{path: band}}]
"""


def gateway_yaml(port: int) -> str:
    return f"""\
listen: {{host: 127.0.0.1, port: {port}}}
contracts_dir: contracts
allow_insecure_upstreams: true
auth:
  issuer: {ISSUER}
  audience: {AUDIENCE}
  algorithms: [RS256]
  public_key_file: idp.pem
share_log:
  path: share-log.sqlite
  durability: batched
  stdout: false
registry:
  path: consent.sqlite
secrets:
  hash_key_env: SHARE_GATEWAY_HASH_KEY
"""


def write_fixtures(work: Path, upstream_url: str, gateway_port: int) -> None:
    """Keys, tokens, body, contract and gateway.yaml, all inside `work`."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (work / "idp.pem").write_bytes(
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    tokens = [
        jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": f"svc-booking-{n}",
                "scope": f"share:{PARTNER}:{PURPOSE}",
                "iat": now,
                "exp": now + 3 * 3600,
                "jti": secrets.token_hex(8),
            },
            private,
            algorithm="RS256",
        )
        for n in range(TOKEN_POOL)
    ]
    (work / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="ascii")
    (work / "body.json").write_bytes(body_bytes())
    (work / "contracts").mkdir()
    (work / "contracts" / f"{PARTNER}.yaml").write_text(contract_yaml(upstream_url), "utf-8")
    (work / "gateway.yaml").write_text(gateway_yaml(gateway_port), encoding="utf-8")


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(slots=True)
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ServiceError(Exception):
    """A service did not start: nothing can be measured."""


class Services:
    """The benchmark's own child processes; each is stopped by its pid on exit."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.running: dict[str, Service] = {}

    def start(self, name: str, argv: Sequence[str], port: int) -> Service:
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv), cwd=self.work, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        service = Service(name, port, process, log)
        self.running[name] = service
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = service.log_tail()
                raise ServiceError(f"{name} exited with {process.returncode}:\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return service
            time.sleep(0.05)
        raise ServiceError(f"{name} did not listen on port {port} within 30 s")

    def stop(self, name: str) -> None:
        service = self.running.pop(name, None)
        if service is None or service.process.poll() is not None:
            return
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()

    def stop_all(self) -> None:
        for name in list(self.running)[::-1]:
            self.stop(name)


def child_env() -> dict[str, str]:
    # The caller's own SHARE_GATEWAY_* overrides would change what is measured: none pass.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARE_GATEWAY_")}
    env["SHARE_GATEWAY_HASH_KEY"] = secrets.token_urlsafe(48)
    env[UPSTREAM_TOKEN_ENV] = secrets.token_urlsafe(24)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_all(services: Services, work: Path) -> dict[str, Service]:
    up_port, naive_port, gw_port = free_port(), free_port(), free_port()
    upstream = services.start(
        "upstream", [PYTHON, str(BENCH / "upstream.py"), "--port", str(up_port)], up_port
    )
    write_fixtures(work, upstream.base_url, gw_port)
    naive = services.start(
        "naive",
        [
            PYTHON,
            str(BENCH / "naive_proxy.py"),
            "--port",
            str(naive_port),
            "--upstream",
            upstream.base_url,
        ],
        naive_port,
    )
    gateway = services.start(
        "gateway",
        [PYTHON, "-m", "gateway", "serve", "--config", str(work / "gateway.yaml")],
        gw_port,
    )
    return {"upstream": upstream, "naive": naive, "gateway": gateway}


# Share-log settings measured against the benchmark's own (`batched`, no JSON lines on stdout),
# each by a gateway of its own: what it changes in gateway.yaml, and the floor of its ratio.
SHARE_LOG_VARIANTS: dict[str, tuple[tuple[str, str], float | None]] = {
    "strict": (("durability: batched", "durability: strict"), FLOOR_STRICT_RATIO),
    "stdout": (("stdout: false", "stdout: true"), None),
}


def measure_share_log_variants(
    services: Services, work: Path, load: LoadGenerator, args: argparse.Namespace
) -> dict[str, Any]:
    """Gateway throughput with each of SHARE_LOG_VARIANTS against the measured gateway.

    Each variant runs as a second gateway with its own share log; all take the same load at
    `--connections`, interleaved, `--repeats` times.
    """
    base_config = (work / "gateway.yaml").read_text(encoding="utf-8")
    targets = {"batched": services.running["gateway"]}
    for name, ((old, new), _floor) in SHARE_LOG_VARIANTS.items():
        port = free_port()
        config = re.sub(r"port: \d+", f"port: {port}", base_config, count=1)
        config = config.replace(old, new)
        config = config.replace("path: share-log.sqlite", f"path: share-log-{name}.sqlite")
        (work / f"gateway-{name}.yaml").write_text(config, encoding="utf-8")
        targets[name] = services.start(
            f"gateway-{name}",
            [PYTHON, "-m", "gateway", "serve", "--config", str(work / f"gateway-{name}.yaml")],
            port,
        )
    rates: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for _ in range(args.repeats):
            for name, service in targets.items():
                load.run(service, "gateway", args.connections, args.warmup)
                run = load.run(service, "gateway", args.connections, args.duration)
                rates[name].append(run.rps)
                progress(f"share log {name:<8} {run.rps:8.0f} req/s @{args.connections}")
    finally:
        for name in SHARE_LOG_VARIANTS:
            services.stop(f"gateway-{name}")
    medians = {name: statistics.median(runs) for name, runs in rates.items()}
    base = medians["batched"]
    return {
        "rps": medians,
        "ratios": {name: medians[name] / base if base else 0.0 for name in SHARE_LOG_VARIANTS},
        "runs": rates,
    }


def print_share_log_variants(variants: dict[str, Any], connections: int) -> None:
    rps, ratios = variants["rps"], variants["ratios"]
    labels = {
        "strict": ("share log strict / batched", "batched", "strict"),
        "stdout": ("share log JSON lines on stdout, with / without", "without", "with"),
    }
    base = rps["batched"]
    for name, (_change, floor) in SHARE_LOG_VARIANTS.items():
        title, base_label, label = labels[name]
        verdict = ""
        if floor is not None:
            verdict = f"   floor ≥ {floor:.2f}×  {'PASS' if ratios[name] >= floor else 'FAIL'}"
        print(
            f"{title}, gateway throughput @{connections}: {ratios[name]:.2f}× "
            f"({base_label} {base:,.0f}, {label} {rps[name]:,.0f} req/s){verdict}"
        )


# --- /proc readings ---------------------------------------------------------------------------


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return values


def cpu_seconds(pid: int, path: str | None = None) -> float:
    """User plus system CPU time of a process, all its threads (0 once it is gone)."""
    try:
        with open(path or f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of a process's main thread alone (its other threads are the rest)."""
    return cpu_seconds(pid, f"/proc/{pid}/task/{pid}/stat")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine: everything but idle and I/O wait."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    total = sum(fields)
    return total - fields[3] - fields[4], total


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- load generation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One measured load run against one target."""

    target: str
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    errors: int
    cpu_us_per_request: float  # the target process's CPU time per request (all its threads)
    main_thread_cpu_us_per_request: float  # the event loop's thread alone
    target_cpu_pct: float  # of one core
    others_cpu_pct: float  # of the whole machine, used by processes outside the benchmark


class LoadGenerator:
    """wrk with bench/wrk_post.lua, or bench/loadgen.py where wrk is missing."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        self.work = work
        self.wrk = shutil.which("wrk") or "wrk"
        self.watch: list[int] = []  # the benchmark's own long-running processes
        self.version = self._version()

    def _version(self) -> str:
        if self.kind == "python":
            return "bench/loadgen.py (aiohttp, uvloop)"
        done = subprocess.run([self.wrk, "-v"], capture_output=True, text=True, check=False)
        first = (done.stdout or done.stderr).strip().splitlines()
        return first[0].split(" [")[0] if first else "wrk"

    def run(self, service: Service, target: str, connections: int, duration_s: float) -> Run:
        env = dict(os.environ)
        env.update(
            BENCH_BODY_FILE=str(self.work / "body.json"),
            BENCH_TOKENS_FILE=str(self.work / "tokens.txt"),
            BENCH_PATH=PATHS[target],
            BENCH_PURPOSE=PURPOSE,
        )
        seconds = duration_s
        if self.kind == "wrk":
            argv = [
                self.wrk,
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "5s",
                "-s",
                str(BENCH / "wrk_post.lua"),
                service.base_url,
            ]
        else:
            argv = [
                PYTHON,
                str(BENCH / "loadgen.py"),
                "--url",
                service.base_url + PATHS[target],
                "--body",
                env["BENCH_BODY_FILE"],
                "--tokens",
                env["BENCH_TOKENS_FILE"],
                "-c",
                str(connections),
                "-d",
                str(seconds),
            ]
        ours_before = sum(cpu_seconds(pid) for pid in self.watch) + children_cpu_seconds()
        busy_before, total_before = machine_ticks()
        cpu_before = cpu_seconds(service.pid)
        main_before = main_thread_cpu_seconds(service.pid)
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
        cpu = cpu_seconds(service.pid) - cpu_before
        main = main_thread_cpu_seconds(service.pid) - main_before
        busy_after, total_after = machine_ticks()
        ours = sum(cpu_seconds(pid) for pid in self.watch) + children_cpu_seconds() - ours_before
        ticks = os.sysconf("SC_CLK_TCK")
        spent = (total_after - total_before) / ticks  # CPU-seconds available on all cores
        others = max(0.0, (busy_after - busy_before) / ticks - ours)
        line = next(
            (x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")),
            None,
        )
        if line is None:
            raise ServiceError(f"the load generator failed:\n{done.stdout}\n{done.stderr}")
        raw = json.loads(line.removeprefix("BENCH_JSON "))
        count = int(raw["requests"])
        duration = float(raw["duration_us"]) / 1e6
        errors = sum(
            int(raw[k])
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
        return Run(
            target=target,
            connections=connections,
            requests=count,
            duration_s=duration,
            rps=count / duration if duration else 0.0,
            p50_us=float(raw["p50_us"]),
            p90_us=float(raw["p90_us"]),
            p99_us=float(raw["p99_us"]),
            mean_us=float(raw["mean_us"]),
            errors=errors,
            cpu_us_per_request=cpu / count * 1e6 if count else 0.0,
            main_thread_cpu_us_per_request=main / count * 1e6 if count else 0.0,
            target_cpu_pct=100 * cpu / duration if duration else 0.0,
            others_cpu_pct=100 * others / spent if spent else 0.0,
        )


def choose_load_generator(wanted: str, work: Path) -> LoadGenerator:
    if wanted == "wrk" or (wanted == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            raise ServiceError("wrk is not installed (bench/run installs it as root)")
        return LoadGenerator("wrk", work)
    return LoadGenerator("python", work)


_METRIC = re.compile(r"^(share_gateway_[a-z_]+?)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.MULTILINE)


def gateway_counters(service: Service) -> dict[str, float]:
    """The gateway's own sums and counts of share-log wait and upstream round trip."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - loopback URL built here
            service.base_url + "/_gateway/metrics", timeout=10
        ) as response:
            text = response.read().decode()
    except OSError:
        return {}
    wanted = {
        "share_gateway_share_log_write_seconds_sum",
        "share_gateway_share_log_write_seconds_count",
        "share_gateway_upstream_latency_seconds_sum",
        "share_gateway_upstream_latency_seconds_count",
    }
    counters = {m[1]: float(m[2]) for m in _METRIC.finditer(text) if m[1] in wanted}
    for generation, count in _GC_COLLECTIONS.findall(text):
        counters[f"gc_collections_{generation}"] = float(count)
    return counters


_GC_COLLECTIONS = re.compile(
    r'^python_gc_collections_total\{generation="([0-2])"\} ([0-9.e+-]+)$', re.MULTILINE
)


def internals(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean share-log wait per record and mean upstream round trip between two scrapes, in µs."""

    def mean(name: str) -> float:
        count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
        total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
        return total / count * 1e6 if count else 0.0

    def collections(generation: int) -> float:
        name = f"gc_collections_{generation}"
        return after.get(name, 0.0) - before.get(name, 0.0)

    return {
        "share_log_wait_us": mean("share_gateway_share_log_write_seconds"),
        "upstream_round_trip_us": mean("share_gateway_upstream_latency_seconds"),
        **{f"gc_collections_{g}": collections(g) for g in range(3)},
    }


# --- a first request through each path --------------------------------------------------------


def leaf_paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaf_paths(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        return [p for v in value for p in leaf_paths(v, f"{prefix[:-1]}[].")]
    return [prefix[:-1]]


def preflight(services: dict[str, Service], work: Path) -> dict[str, Any]:
    """One request through each target; check the answer; note what the partner received."""
    token = (work / "tokens.txt").read_text(encoding="ascii").split()[0]
    body = (work / "body.json").read_bytes()
    seen: dict[str, Any] = {}
    for target in TARGETS:
        request = urllib.request.Request(  # noqa: S310 - loopback URL built here
            services[target].base_url + PATHS[target],
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                "X-Share-Purpose": PURPOSE,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                status, answer = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read().decode(errors="replace")
        if status != 200 or answer != EXPECTED_ANSWER:
            raise ServiceError(
                f"{LABELS[target]} answered {status} {answer!r}, not 200 {EXPECTED_ANSWER}:\n"
                f"{services[target].log_tail()}"
            )
        with urllib.request.urlopen(  # noqa: S310
            services["upstream"].base_url + "/_last", timeout=10
        ) as response:
            received = response.read()
        seen[target] = {
            "bytes": len(received),
            "fields": leaf_paths(json.loads(received)),
            "document": json.loads(received),
        }
    return seen


# --- the measurements -------------------------------------------------------------------------


def alternating(repeats: int) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Targets in forward, then reverse order, so drift over time favours no one."""
    for rep in range(repeats):
        yield rep, TARGETS if rep % 2 == 0 else TARGETS[::-1]


def measure_phase(
    services: dict[str, Service],
    load: LoadGenerator,
    connections: int,
    args: argparse.Namespace,
    title: str,
    inside: dict[str, list[dict[str, float]]],
) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {t: [] for t in TARGETS}
    inside[title.strip()] = []
    for rep, order in alternating(args.repeats):
        for target in order:
            service = services[target]
            load.run(service, target, connections, args.warmup)
            before = gateway_counters(service) if target == "gateway" else {}
            run = load.run(service, target, connections, args.duration)
            if target == "gateway":
                inside[title.strip()].append(internals(before, gateway_counters(service)))
            runs[target].append(run)
            progress(
                f"{title} {rep + 1}/{args.repeats} {LABELS[target]:<18} "
                f"{run.rps:>8.0f} req/s  p50 {run.p50_us:>6.0f} µs  p99 {run.p99_us:>6.0f} µs"
                + (f"  ERRORS {run.errors}" if run.errors else "")
            )
    return runs


def load_count(
    service: Service, load: LoadGenerator, connections: int, requests: int
) -> dict[str, Any]:
    """At least `requests` requests, as consecutive timed runs sized from the rate seen so far.

    (wrk's own stop sleeps out its whole duration, so a counted run would idle at the end.)
    """
    done = errors = 0
    elapsed = cpu = 0.0
    rate = 0.0
    while done < requests:
        remaining = requests - done
        seconds = 5.0 if rate == 0 else min(30.0, max(1.0, remaining / rate + 0.5))
        run = load.run(service, "gateway", connections, seconds)
        if run.requests == 0:
            raise ServiceError(f"no request completed in {seconds:.0f} s:\n{service.log_tail()}")
        done += run.requests
        errors += run.errors
        elapsed += run.duration_s
        cpu += run.cpu_us_per_request * run.requests / 1e6
        rate = run.rps
    return {
        "requests": done,
        "duration_s": elapsed,
        "rps": done / elapsed,
        "errors": errors,
        "cpu_us_per_request": cpu / done * 1e6,
    }


def measure_memory(
    service: Service, load: LoadGenerator, connections: int, args: argparse.Namespace
) -> dict[str, Any]:
    idle = memory_mib(service.pid)
    runs: list[dict[str, Any]] = []
    for n in range(args.rss_runs):
        run = load_count(service, load, connections, args.rss_requests)
        after = memory_mib(service.pid)
        runs.append({"run": n + 1, **after, "load": run})
        progress(
            f"memory {n + 1}/{args.rss_runs}: {run['requests']} requests at {run['rps']:.0f} "
            f"req/s, VmRSS {after['VmRSS']:.1f} MiB, VmHWM {after['VmHWM']:.1f} MiB"
            + (f"  ERRORS {run['errors']}" if run["errors"] else "")
        )
    return {"idle": idle, "runs": runs}


def median_run(runs: list[Run]) -> dict[str, float]:
    return {
        "rps": statistics.median(r.rps for r in runs),
        "p50_us": statistics.median(r.p50_us for r in runs),
        "p99_us": statistics.median(r.p99_us for r in runs),
        "cpu_us_per_request": statistics.median(r.cpu_us_per_request for r in runs),
        "main_thread_cpu_us_per_request": statistics.median(
            r.main_thread_cpu_us_per_request for r in runs
        ),
        "target_cpu_pct": statistics.median(r.target_cpu_pct for r in runs),
        "others_cpu_pct": statistics.median(r.others_cpu_pct for r in runs),
        "errors": sum(r.errors for r in runs),
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summarize(
    throughput: dict[str, list[Run]], latency: dict[str, list[Run]], memory: dict[str, Any]
) -> dict[str, Any]:
    tp = {t: median_run(throughput[t]) for t in TARGETS}
    lat = {t: median_run(latency[t]) for t in TARGETS}
    ratio = tp["gateway"]["rps"] / tp["naive"]["rps"] if tp["naive"]["rps"] else 0.0
    added = lat["gateway"]["p50_us"] - lat["upstream"]["p50_us"]
    naive_added = lat["naive"]["p50_us"] - lat["upstream"]["p50_us"]
    peaks = [r["VmHWM"] for r in memory["runs"]]
    rss = [r["VmRSS"] for r in memory["runs"]]
    growth = rss[-1] - rss[0] if len(rss) > 1 else 0.0
    errors = sum(v["errors"] for v in (*tp.values(), *lat.values())) + sum(
        r["load"]["errors"] for r in memory["runs"]
    )
    return {
        "throughput": tp,
        "latency": lat,
        "checks": {
            "throughput_ratio": {
                "value": ratio,
                "floor": FLOOR_THROUGHPUT_RATIO,
                "pass": ratio >= FLOOR_THROUGHPUT_RATIO,
            },
            "added_p50_us": {
                "value": added,
                "floor": FLOOR_ADDED_P50_US,
                "pass": added <= FLOOR_ADDED_P50_US,
                "naive_added_p50_us": naive_added,
            },
            "peak_rss_mib": {
                "value": max(peaks),
                "per_run": peaks,
                "floor": FLOOR_RSS_MIB,
                "pass": max(peaks) <= FLOOR_RSS_MIB,
            },
            "rss_growth_mib": {
                "value": growth,
                "per_run_rss": rss,
                "tolerance": RSS_GROWTH_TOLERANCE_MIB,
                "pass": growth <= RSS_GROWTH_TOLERANCE_MIB,
            },
        },
        "errors": errors,
    }


# --- output -----------------------------------------------------------------------------------

_OUT: TextIO = sys.stdout


def progress(message: str) -> None:
    print(f"  · {message}", file=sys.stderr, flush=True)


def say(line: str = "") -> None:
    print(line, file=_OUT, flush=True)


def print_setup(load: LoadGenerator, args: argparse.Namespace, seen: dict[str, Any]) -> None:
    say(
        f"setup: loopback, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load: {load.version} (1 thread), body {len(body_bytes()):,} B, "
        f"{TOKEN_POOL} RS256 caller tokens in rotation"
    )
    say("what the partner received for one request:")
    for target in ("naive", "gateway"):
        info = seen[target]
        say(f"  {LABELS[target]:<12} {info['bytes']:>5} B, {len(info['fields'])} fields")
    say(f"  gateway sent: {json.dumps(seen['gateway']['document'], ensure_ascii=False)}")


def print_report(
    summary: dict[str, Any],
    memory: dict[str, Any],
    throughput: dict[str, list[Run]],
    latency: dict[str, list[Run]],
    args: argparse.Namespace,
) -> None:
    tp, lat, checks = summary["throughput"], summary["latency"], summary["checks"]
    c = args.connections
    say()
    say(
        f"medians of {args.repeats} runs of {args.duration:g} s (after {args.warmup:g} s warm-up "
        "each), targets in alternating order; CPU is the target process's own (all threads)"
    )
    say(
        f"{'':<19}{f'req/s @{c}':>11}{'CPU µs/req':>11}{'(main thr)':>11}{'CPU %core':>10}"
        f"{'p50 @1':>10}{'p99 @1':>10}{f'p50 @{c}':>10}{f'p99 @{c}':>10}   req/s of each run @{c}"
    )
    for t in TARGETS:
        each = " ".join(f"{r.rps:.0f}" for r in throughput[t])
        say(
            f"{LABELS[t]:<19}{tp[t]['rps']:>11,.0f}{tp[t]['cpu_us_per_request']:>11.0f}"
            f"{tp[t]['main_thread_cpu_us_per_request']:>11.0f}{tp[t]['target_cpu_pct']:>10.0f}"
            f"{lat[t]['p50_us']:>7.0f} µs{lat[t]['p99_us']:>7.0f} µs"
            f"{tp[t]['p50_us'] / 1000:>7.1f} ms{tp[t]['p99_us'] / 1000:>7.1f} ms   {each}"
        )
    gateway_naive = tp["gateway"]["rps"] / tp["naive"]["rps"]
    say(
        f"ratios @{c}: gateway/naive {gateway_naive:.2f}×, "
        f"naive/direct {tp['naive']['rps'] / tp['upstream']['rps']:.2f}×, "
        f"gateway/direct {tp['gateway']['rps'] / tp['upstream']['rps']:.2f}×"
    )
    say(
        f"p50 added over direct @1: naive {checks['added_p50_us']['naive_added_p50_us']:.0f} µs, "
        f"gateway {checks['added_p50_us']['value']:.0f} µs "
        f"(gateway p50 per run: {', '.join(f'{r.p50_us:.0f}' for r in latency['gateway'])} µs; "
        f"direct: {', '.join(f'{r.p50_us:.0f}' for r in latency['upstream'])} µs)"
    )
    for phase, values in summary.get("gateway_internals", {}).items():
        say(
            f"inside the gateway ({phase}, its own metrics): a share waits "
            f"{values['share_log_wait_us']:.0f} µs for its record's commit, upstream round "
            f"trip {values['upstream_round_trip_us']:.0f} µs; garbage collections in a run: "
            f"{values['gc_collections_0']:.0f} young, {values['gc_collections_1']:.0f} middle, "
            f"{values['gc_collections_2']:.0f} full"
        )
    others = [r.others_cpu_pct for runs in (*throughput.values(), *latency.values()) for r in runs]
    say(
        f"other processes on this machine used {statistics.median(others):.0f}% of its "
        f"{os.cpu_count()} CPUs during the runs (median; max {max(others):.0f}%)"
    )
    say(
        f"gateway memory: idle VmRSS {memory['idle']['VmRSS']:.1f} MiB; after each "
        f"{args.rss_requests:,}-request run at {c} connections: "
        + ", ".join(
            f"VmRSS {r['VmRSS']:.1f} / VmHWM {r['VmHWM']:.1f} MiB ({r['load']['rps']:.0f} req/s)"
            for r in memory["runs"]
        )
        + f"; at the end {memory['end']['VmRSS']:.1f} MiB (naive proxy: "
        f"{memory['naive_end']['VmRSS']:.1f} MiB)"
    )
    say()
    say(f"{'floor (issue 5, Speed)':<44}{'measured':>24}{'floor':>12}  result")
    rows = [
        (
            f"gateway / naive throughput @{c}",
            f"{checks['throughput_ratio']['value']:.2f}×",
            f"≥ {FLOOR_THROUGHPUT_RATIO:.2f}×",
            checks["throughput_ratio"]["pass"],
        ),
        (
            "gateway p50 added over direct @1",
            f"{checks['added_p50_us']['value']:.0f} µs",
            f"≤ {FLOOR_ADDED_P50_US:.0f} µs",
            checks["added_p50_us"]["pass"],
        ),
        (
            f"peak RSS (VmHWM) after runs 1..{len(memory['runs'])}",
            " / ".join(f"{v:.1f}" for v in checks["peak_rss_mib"]["per_run"]) + " MiB",
            f"≤ {FLOOR_RSS_MIB:.0f} MiB",
            checks["peak_rss_mib"]["pass"],
        ),
        (
            f"VmRSS growth run 1 → {len(memory['runs'])}",
            f"{checks['rss_growth_mib']['value']:+.1f} MiB",
            f"≤ +{RSS_GROWTH_TOLERANCE_MIB:.0f} MiB",
            checks["rss_growth_mib"]["pass"],
        ),
    ]
    for name, value, floor, ok in rows:
        say(f"{name:<44}{value:>24}{floor:>12}  {verdict(ok)}")
    if summary["errors"]:
        say(f"WARNING: {summary['errors']} failed requests during measurement; see the runs")


# --- profiling --------------------------------------------------------------------------------

# Frames where a thread waits rather than works (pyinstrument counts them; py-spy drops them).
_IDLE = re.compile(r"^(select|poll|epoll|run_forever|run_until_complete|run|_run_once) \(")


# A thread-pool worker waiting for work: py-spy sometimes reports it as active, though /proc
# shows the thread using no CPU.
_POOL_WAIT = re.compile(r"^_worker \(.*concurrent/futures/thread\.py:\d+\)$")


def parse_folded(text: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw output: `thread (tid): name;frame;...;frame count` per line."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stack = tuple(frames.split(";"))
            if not _POOL_WAIT.match(stack[-1]):
                stacks[stack] += int(count)
    return stacks


def pyinstrument_stacks(document: dict[str, Any]) -> Counter[tuple[str, ...]]:
    """A pyinstrument JSON session as stacks weighted by self time (microseconds)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    pending: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        (document["root_frame"], ("thread: MainThread",))
    ]
    while pending:
        frame, parent = pending.pop()
        where = f"{frame.get('file_path_short', '?')}:{frame.get('line_no', 0)}"
        label = f"{frame['function']} ({where})"
        stack = (*parent, label)
        children = frame.get("children", [])
        own = float(frame["time"]) - sum(float(c["time"]) for c in children)
        if own > 0 and not _IDLE.match(label):
            stacks[stack] += round(own * 1e6)
        pending.extend((child, stack) for child in children)
    return stacks


# Where the main thread's time goes. Inside the proxy's own code, the innermost own frame
# decides (gateway/auth.py is token verification); a call out of generic handler code is charged
# to what it calls (pipeline → web.Response is response building). Outside it, the module does.
_OWN = r"gateway/|naive_proxy\.py"
_SPECIFIC: tuple[tuple[str, str], ...] = (
    (r"^gc_collect", "garbage collector"),
    (r"^0x[0-9a-f]+ \(libc", "libc, unresolved (lock and futex waits)"),
    (r"^(send|sendmsg|sendto|writev|write) \(libc", "socket writes"),
    (r"json/(__init__|decoder|encoder)\.py", "JSON parse/dump"),
    (r"structlog/|logging/", "logging"),
    (r"prometheus_client/", "metrics"),
    (r"_SelectorSocketTransport\.write |StreamWriter\._write(lines)? ", "socket writes"),
)
_OWN_AREAS: tuple[tuple[str, str], ...] = (
    (r"gateway/auth\.py", "token verification"),
    (r"gateway/jsonbody\.py", "JSON parse/dump"),
    (r"gateway/(fieldfilter|transforms|pii)\.py", "filter + transforms + PII scan"),
    (r"gateway/sharelog/", "share log (event-loop side)"),
    (r"gateway/upstream\.py", "partner client (upstream send)"),
    (r"gateway/(routing|policy|terms|bodies|keys)\.py", "routing, terms, body read, keys"),
    (r"gateway/metrics\.py|_count ", "metrics"),
    (r"Flow\.record ", "share record build"),
    (r"(upstream_request|single_header|pass_through_headers) ", "header building"),
    (r"error_response ", "response building"),
)
_CALLEE_AREAS: tuple[tuple[str, str], ...] = (
    (r"aiohttp/(client|connector)", "aiohttp client (upstream send)"),
    (r"web_response\.py|json_response", "response building"),
    (r"uuid\.py", "ids (uuid4)"),
    (r"sharelog/record\.py|<string>", "share record build"),
    (r"aiohttp/", "aiohttp server (parse, dispatch, write)"),
)
_OUTSIDE_AREAS: tuple[tuple[str, str], ...] = (
    *_SPECIFIC,
    (r"aiohttp/(client|connector)", "aiohttp client (protocol callbacks)"),
    (r"aiohttp/", "aiohttp server (parse, dispatch, write)"),
    (r"asyncio/|selectors\.py|uvloop", "event loop"),
)
# Frames up to the event loop's: whatever follows one of them is a callback or a task step.
_LOOP_ENTRY = re.compile(r"asyncio/(runners|base_events|events)\.py")


def _first(patterns: tuple[tuple[str, str], ...], frames: Sequence[str]) -> str | None:
    for frame in frames:
        for pattern, area in patterns:
            if re.search(pattern, frame):
                return area
    return None


def _innermost_own(frames: Sequence[str]) -> int | None:
    return next((i for i in range(len(frames) - 1, -1, -1) if re.search(_OWN, frames[i])), None)


def _function(frame: str) -> str:
    return frame.split(" (", 1)[0]


def area_of(stack: tuple[str, ...]) -> str:
    thread = thread_of(stack)
    frames = stack[1:]
    if thread != "MainThread":
        own = _innermost_own(frames)
        where = frames[own] if own is not None else (frames[-1] if frames else "?")
        return f"thread {thread}: {_function(where)}"
    entry = max((i for i, f in enumerate(frames) if _LOOP_ENTRY.search(f)), default=-1)
    frames = frames[entry + 1 :]
    if not frames:
        return "event loop itself (native: epoll, recv, callbacks)"
    own = _innermost_own(frames)
    if own is None:
        return _first(_OUTSIDE_AREAS, frames[::-1]) or "other"
    below = frames[own + 1 :]
    return (
        _first(_SPECIFIC, below[::-1])
        or _first(_OWN_AREAS, frames[own : own + 1])
        or _first(_CALLEE_AREAS, below[:1])
        or "proxy's own handler code"
    )


def thread_of(stack: tuple[str, ...]) -> str:
    head = stack[0]
    return head.split(": ", 1)[1] if ": " in head else head


def analyse(stacks: Counter[tuple[str, ...]]) -> dict[str, Any]:
    total = sum(stacks.values()) or 1
    by_thread: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for stack, count in stacks.items():
        thread = thread_of(stack)
        by_thread[thread] += count
        frames = stack[1:] or ("(no Python frame)",)
        self_time[frames[-1]] += count
        for frame in set(frames):
            total_time[frame] += count
        areas[area_of(stack)] += count

    def share(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"frame": k, "percent": 100 * v / total} for k, v in counter.most_common(n)]

    own_total = Counter(
        {k: v for k, v in total_time.items() if re.search(r"gateway/|naive_proxy\.py", k)}
    )
    return {
        "samples": total,
        "threads": share(by_thread, 10),
        "self": share(self_time, 40),
        "own_functions_total": share(own_total, 25),
        "areas": share(areas, 20),
    }


def short(frame: str, width: int = 92) -> str:
    frame = re.sub(r"\(/[^ ]*/(site-packages|lib/python3\.\d+)/", "(", frame)
    frame = frame.replace(str(ROOT) + "/", "")
    return frame if len(frame) <= width else frame[: width - 1] + "…"


def print_profile(name: str, result: dict[str, Any], top: int) -> None:
    say()
    say(
        f"== {name}: {result['samples']} samples "
        f"({result['load']['rps']:.0f} req/s while profiled, {result['tool']})"
    )
    say("threads: " + ", ".join(f"{t['frame']} {t['percent']:.1f}%" for t in result["threads"]))
    load = result["load"]
    say(
        f"CPU while profiled: {load['cpu_us_per_request']:.0f} µs per request, of which the "
        f"event-loop thread {load['main_thread_cpu_us_per_request']:.0f} µs and other threads "
        f"{load['cpu_us_per_request'] - load['main_thread_cpu_us_per_request']:.0f} µs"
    )
    say(f"top {top} by self time (% of all samples):")
    for row in result["self"][:top]:
        say(f"  {row['percent']:5.1f}%  {short(row['frame'])}")
    # Each thread's samples are scaled to its measured CPU time: about µs per request.
    main_pct = sum(t["percent"] for t in result["threads"] if t["frame"] == "MainThread")
    main_us = load["main_thread_cpu_us_per_request"]
    other_us = load["cpu_us_per_request"] - main_us
    say("by area (innermost own frame decides; % of all samples, ≈ CPU µs per request):")
    for row in result["areas"]:
        main = not row["frame"].startswith("thread ")
        pool_pct, pool_us = (main_pct, main_us) if main else (100 - main_pct, other_us)
        us = row["percent"] / pool_pct * pool_us if pool_pct > 0 else 0.0
        say(f"  {row['percent']:5.1f}%  ≈{us:5.0f} µs  {row['frame']}")
    if result["own_functions_total"]:
        say("own functions by total (inclusive) time:")
        for row in result["own_functions_total"][:20]:
            say(f"  {row['percent']:5.1f}%  {short(row['frame'])}")


def py_spy() -> str | None:
    beside = Path(PYTHON).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_with_py_spy(
    tool: str, service: Service, target: str, load: LoadGenerator, args: argparse.Namespace
) -> dict[str, Any]:
    out = load.work / f"{target}.folded"
    seconds = max(3, round(args.profile_duration))
    spy = subprocess.Popen(
        [
            tool,
            "record",
            "--pid",
            str(service.pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--format",
            "raw",
            *([] if args.lines else ["--function"]),
            "--threads",
            # Pausing the process to sample it (py-spy's default) lands most samples at the next
            # system call on some virtual machines: a loop calling os.getpid() once per 8 µs of
            # Python showed 69% of samples in getpid, which costs 0.13 µs. Sampling without
            # pausing showed 3%. Native stacks need the pause.
            *(["--native"] if args.native else ["--nonblocking"]),
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # Load runs a little longer than the recording on both sides, so every sample is under load.
    run = load.run(service, target, args.connections, seconds + 3)
    output, _ = spy.communicate(timeout=60)
    if spy.returncode != 0 or not out.exists():
        raise ServiceError(f"py-spy failed: {output.decode(errors='replace')[-800:]}")
    result = analyse(parse_folded(out.read_text(encoding="utf-8", errors="replace")))
    native = ", native frames" if args.native else ""
    native += ", by line" if args.lines else ""
    return {**result, "load": asdict(run), "tool": f"py-spy, 250 Hz, active samples only{native}"}


def profile_with_pyinstrument(
    services: Services, work: Path, load: LoadGenerator, args: argparse.Namespace
) -> dict[str, Any]:
    """Restart the gateway under pyinstrument, load it, stop it, read its session."""
    old = services.running["gateway"]
    services.stop("gateway")
    out = work / "gateway.pyinstrument.json"
    gateway = services.start(
        "gateway-pyinstrument",
        [
            PYTHON,
            "-m",
            "pyinstrument",
            "--renderer",
            "json",
            "--outfile",
            str(out),
            "-m",
            "gateway",
            "serve",
            "--config",
            str(work / "gateway.yaml"),
        ],
        old.port,
    )
    load.watch = [service.pid for service in services.running.values()]
    load.run(gateway, "gateway", args.connections, args.warmup)
    run = load.run(gateway, "gateway", args.connections, args.profile_duration)
    services.stop("gateway-pyinstrument")
    result = analyse(pyinstrument_stacks(json.loads(out.read_text(encoding="utf-8"))))
    return {
        **result,
        "load": asdict(run),
        "tool": "pyinstrument, main thread only, whole process life, µs weights",
    }


def profile(
    services: Services, running: dict[str, Service], load: LoadGenerator, args: argparse.Namespace
) -> dict[str, Any]:
    tool = py_spy()
    results: dict[str, Any] = {}
    for target in ("gateway", "naive"):
        service = running[target]
        load.run(service, target, args.connections, args.warmup)
        if tool is not None:
            try:
                results[target] = profile_with_py_spy(tool, service, target, load, args)
            except ServiceError as exc:
                progress(str(exc))
                tool = None
        if target not in results:
            if target != "gateway":
                continue
            progress("py-spy unavailable: profiling the gateway with pyinstrument")
            results[target] = profile_with_pyinstrument(services, load.work, load, args)
        progress(f"profiled {LABELS[target]}: {results[target]['samples']} samples")
    return results


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Gateway vs naive proxy vs direct upstream, on loopback."
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the gateway (and the naive proxy) under load instead of benchmarking",
    )
    parser.add_argument("--duration", type=float, help="seconds per measured run (8)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per run (2)")
    parser.add_argument("--repeats", type=int, help="runs per target and phase (3)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rss-requests", type=int, help="requests per memory run (100,000)")
    parser.add_argument("--rss-runs", type=int, default=3)
    parser.add_argument("--profile-duration", type=float, help="seconds profiled (15)")
    parser.add_argument("--top", type=int, default=25, help="profile entries to print")
    parser.add_argument(
        "--lines",
        action="store_true",
        help="with --profile: samples name the line running, not the function's first",
    )
    parser.add_argument(
        "--native", action="store_true", help="with --profile: py-spy also samples C frames"
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run: 1 repeat, 3 s, 20,000 requests"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    # --quick changes the plan's defaults; an option given explicitly still wins.
    plan = {
        "duration": (8.0, 3.0),
        "warmup": (2.0, 1.0),
        "repeats": (3, 1),
        "rss_requests": (100_000, 20_000),
        "profile_duration": (15.0, 5.0),
    }
    for name, (full, quick) in plan.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.repeats < 1 or args.rss_runs < 1 or args.connections < 1:
        parser.error("--repeats, --rss-runs and --connections must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Stopped from outside, the services it started are still stopped (by the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    services = Services(work, child_env())
    results: dict[str, Any] = {"config": {k: str(v) for k, v in vars(args).items()}}
    try:
        load = choose_load_generator(args.loadgen, work)
        progress(f"starting upstream, naive proxy and gateway in {work}")
        running = start_all(services, work)
        load.watch = [service.pid for service in running.values()]
        seen = preflight(running, work)
        results["partner_received"] = seen
        results["setup"] = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_generator": load.version,
            "body_bytes": len(body_bytes()),
            "token_pool": TOKEN_POOL,
        }
        print_setup(load, args, seen)
        if args.profile:
            profiles = profile(services, running, load, args)
            results["profile"] = profiles
            for target in ("gateway", "naive"):
                if target in profiles:
                    print_profile(LABELS[target], profiles[target], args.top)
        else:
            memory = measure_memory(running["gateway"], load, args.connections, args)
            inside: dict[str, list[dict[str, float]]] = {}
            throughput = measure_phase(running, load, args.connections, args, "throughput", inside)
            latency = measure_phase(running, load, 1, args, "latency   ", inside)
            summary = summarize(throughput, latency, memory)
            memory["end"] = memory_mib(running["gateway"].pid)
            memory["naive_end"] = memory_mib(running["naive"].pid)
            summary["gateway_internals"] = {
                phase: {k: statistics.median(x[k] for x in rows) for k in rows[0]}
                for phase, rows in inside.items()
                if rows
            }
            results.update(
                summary=summary,
                memory=memory,
                runs={
                    "throughput": {t: [asdict(r) for r in throughput[t]] for t in TARGETS},
                    "latency": {t: [asdict(r) for r in latency[t]] for t in TARGETS},
                },
            )
            print_report(summary, memory, throughput, latency, args)
            variants = measure_share_log_variants(services, work, load, args)
            results["share_log_variants"] = variants
            print_share_log_variants(variants, args.connections)
    except ServiceError as exc:
        print(f"bench: cannot measure: {exc}", file=sys.stderr)
        return 1
    finally:
        services.stop_all()
        if args.keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", "utf-8")
        progress(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
