"""A closed-loop HTTP load generator, used by the benchmark only where wrk cannot be installed.

Run ``python bench/loadgen.py --url URL --body FILE --tokens FILE -c 32 -d 10``. Each of the
`-c` workers keeps one request in flight on its own connection; the result is one line
``BENCH_JSON {...}`` with the same keys wrk_post.lua prints. It is slower than wrk and shares
the machine's cores with the server it measures, so its numbers are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp


class Tally:
    """Latencies and errors over one run."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.status_errors = 0
        self.read_errors = 0
        self.timeouts = 0


async def worker(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: list[dict[str, str]],
    offset: int,
    deadline: float,
    tally: Tally,
) -> None:
    index = offset
    while time.monotonic() < deadline:
        index = (index + 1) % len(headers)
        started = time.perf_counter_ns()
        try:
            async with session.post(url, data=body, headers=headers[index]) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            tally.timeouts += 1
            continue
        except aiohttp.ClientError:
            tally.read_errors += 1
            continue
        if status >= 400:
            tally.status_errors += 1
        tally.latencies_ns.append(time.perf_counter_ns() - started)


async def run(args: argparse.Namespace, body: bytes, tokens: list[str]) -> dict[str, float]:
    headers = [
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-Share-Purpose": args.purpose,
        }
        for token in tokens
    ]
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=args.connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        deadline = started + args.duration
        await asyncio.gather(
            *(
                worker(session, args.url, body, headers, i, deadline, tally)
                for i in range(args.connections)
            )
        )
        elapsed = time.monotonic() - started
    latencies = sorted(tally.latencies_ns)

    def percentile(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] / 1000

    return {
        "requests": len(latencies) + tally.status_errors,
        "duration_us": elapsed * 1e6,
        "connect_errors": 0,
        "read_errors": tally.read_errors,
        "write_errors": 0,
        "status_errors": tally.status_errors,
        "timeouts": tally.timeouts,
        "p50_us": percentile(50),
        "p90_us": percentile(90),
        "p99_us": percentile(99),
        "mean_us": sum(latencies) / len(latencies) / 1000 if latencies else 0.0,
        "max_us": latencies[-1] / 1000 if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="file holding the request body")
    parser.add_argument("--tokens", required=True, help="file with one bearer token a line")
    parser.add_argument("--purpose", default="credit_assessment")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    args = parser.parse_args()
    body = Path(args.body).read_bytes()
    tokens = Path(args.tokens).read_text(encoding="ascii").split()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent only on Windows
        result = asyncio.run(run(args, body, tokens))
    else:
        result = uvloop.run(run(args, body, tokens))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
