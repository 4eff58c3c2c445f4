"""How long the gateway keeps other requests waiting while it works on one big, crafted share.

Run ``.venv/bin/python bench/bench_stall.py`` (after ``bench/run`` or ``./scripts/setup dev``).
It starts the benchmark's partner and gateway (``bench_gateway.start_all``), then asks
``/_gateway/health`` every 10 ms: first alone (the baseline), then while one share carries a
150 KB field of text the scanner reads slowest (``bench_pii.ADVERSARIAL_UNITS``). It prints the
health checks' latency in both phases and their ratio; a gateway that works on the big body in
its event loop answers no health check until the share is done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gateway as bench  # beside this file, found through the path above
from bench_pii import ADVERSARIAL_UNITS

FIELD_BYTES = 150_000  # redacted (up to five times longer), it stays under the partner's 1 MiB cap
POLL_S = 0.01
BASELINE_CHECKS = 100


async def _health(session: aiohttp.ClientSession, base: str) -> float:
    started = time.perf_counter()
    async with session.get(f"{base}/_gateway/health") as answer:
        await answer.read()
        if answer.status != 200:
            raise RuntimeError(f"/_gateway/health answered {answer.status}")
    return time.perf_counter() - started


async def measure(base: str, work: Path, unit: str) -> dict[str, float]:
    token = (work / "tokens.txt").read_text(encoding="ascii").split()[0]
    doc = json.loads((work / "body.json").read_bytes())
    doc["applicant"]["name"] = (unit * (FIELD_BYTES // len(unit) + 1))[:FIELD_BYTES]
    body = json.dumps(doc).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Share-Purpose": bench.PURPOSE,
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession() as session:
        idle = []
        for _ in range(BASELINE_CHECKS):
            idle.append(await _health(session, base))
            await asyncio.sleep(POLL_S)

        async def share() -> tuple[int, float]:
            started = time.perf_counter()
            url = f"{base}/{bench.PARTNER}/v1/assess"
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                return answer.status, time.perf_counter() - started

        task = asyncio.create_task(share())
        busy = []
        while not task.done():
            busy.append(await _health(session, base))
            await asyncio.sleep(POLL_S)
        status, took = await task
    if status != 200:
        raise RuntimeError(f"the big share was answered {status}")
    return {
        "share_s": took,
        "checks": len(busy),
        "idle_p50_ms": statistics.median(idle) * 1000,
        "busy_p50_ms": statistics.median(busy) * 1000,
        "busy_max_ms": max(busy) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gateway-stall-"))
    services = bench.Services(work, bench.child_env())
    try:
        gateway = bench.start_all(services, work)["gateway"]
        print(
            f"health checks every {POLL_S * 1000:.0f} ms; one share with a {FIELD_BYTES:,} B field"
        )
        print(
            f"{'field of':24} {'share':>8} {'checks':>7} {'idle p50':>9} {'busy p50':>9} "
            f"{'busy max':>9} {'max/idle':>9}"
        )
        for unit in ADVERSARIAL_UNITS:
            for _ in range(args.repeats):
                got = asyncio.run(measure(gateway.base_url, work, unit))
                print(
                    f"{unit[:24]:24} {got['share_s']:7.2f}s {got['checks']:7d} "
                    f"{got['idle_p50_ms']:7.1f}ms {got['busy_p50_ms']:7.1f}ms "
                    f"{got['busy_max_ms']:7.1f}ms {got['busy_max_ms'] / got['idle_p50_ms']:8.0f}×"
                )
    except bench.ServiceError as exc:
        print(f"bench_stall: {exc}", file=sys.stderr)
        return 1
    finally:
        services.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
