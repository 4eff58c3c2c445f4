"""Share-log benchmark: writer throughput (batched, strict, raw SQLite baseline) and query speed."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import structlog

from gateway.keys import keyed_hash, subject_ref_key
from gateway.settings import ShareLogSettings
from gateway.sharelog import ShareOutcome, ShareRecord
from gateway.sharelog.chain import GENESIS_HASH, seal, seal_key, share_entry
from gateway.sharelog.ledger import create
from gateway.sharelog.review import count, query, summary, verify
from gateway.sharelog.schema import connect_rw, entry_row, insert_sql, subject_key
from gateway.sharelog.store import ShareLog

# Run: `.venv/bin/python bench/bench_sharelog.py` (about a minute or two; `--quick` to smoke-test).
#
# Writer workloads use realistic records: UUID share ids, 1-3 keyed subject references, eight
# partners. In "flow", 90 % are shares followed by their outcome and 10 % denials; in "intents"
# every record is a denial (one row, no outcome). Throughput counts rows of the log (shares and
# outcomes alike) per second, every producer awaiting each write as the gateway does. Floors
# from the issue: batched >= 20,000 records/s; `logs query` by partner and day over 1,000,000
# records < 1 s.

KEY = b"bench-master-key-" * 2
SUBJECT_KEY = subject_ref_key(KEY)
PARTNERS = [f"partner-{i}" for i in range(8)]
WRITER_FLOOR = 20_000
QUERY_FLOOR_S = 1.0


def make_records(n: int, *, shared_share: float, seed: int = 7) -> list[ShareRecord]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    records = []
    for i in range(n):
        shared = rng.random() < shared_share
        subjects = tuple(
            keyed_hash(SUBJECT_KEY, f"user-{rng.randrange(10**9)}")
            for _ in range(rng.randint(1, 3))
        )
        records.append(
            ShareRecord(
                share_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                ts=now + timedelta(microseconds=i),
                partner=PARTNERS[i % len(PARTNERS)],
                contract_id="DPA-2024-017",
                contract_version=3,
                contract_sha256="5f" * 32,
                caller="loan-service",
                purpose="credit_assessment",
                method="POST",
                route="POST /v1/assess",
                decision="shared" if shared else "denied",
                reason="shared" if shared else "scope_denied",
                fields_sent=("applicant.name", "applicant.id_number", "applicant.income")
                if shared
                else (),
                fields_stripped=("applicant.phone", "applicant.address") if shared else (),
                fields_transformed=("applicant.id_number",) if shared else (),
                categories_sent=("identity.name", "identity.id_number", "financial.income")
                if shared
                else (),
                pii_redactions={"phone": 1} if shared and i % 7 == 0 else {},
                records=len(subjects) if shared else 0,
                subject_refs=subjects,
                bytes_sent=412 if shared else 0,
                upstream_location="CN",
            )
        )
    return records


@dataclass(frozen=True, slots=True)
class WriterRun:
    label: str
    rows: int
    shares: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


async def run_writer(
    directory: Path,
    records: list[ShareRecord],
    producers: int,
    durability: str,
    *,
    keep: bool = False,
    lines: bool = False,
) -> WriterRun:
    path = directory / f"writer-{durability}-{producers}.sqlite"
    settings = ShareLogSettings(path=path, stdout=lines, durability=durability)
    log = await ShareLog.open(settings, KEY, logger=json_lines_logger() if lines else None)
    pending = iter(records)
    rows = 0

    async def producer() -> None:
        nonlocal rows
        for record in pending:
            await log.record(record)
            rows += 1
            if record.decision == "shared":
                await log.record_outcome(ShareOutcome(record.share_id, "delivered", 200, 96, 23.5))
                rows += 1

    start = time.perf_counter()
    await asyncio.gather(*(producer() for _ in range(producers)))
    seconds = time.perf_counter() - start
    await log.close()
    for suffix in ("", "-wal", "-shm", ".lock")[1 if keep else 0 :]:
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - after timing
    label = f"{durability}, {producers} producer(s)" + (", JSON lines" if lines else "")
    return WriterRun(label, rows, len(records), seconds)


async def run_record_wait(directory: Path, records: list[ShareRecord]) -> list[float]:
    """One request at a time, as at one connection: each record is awaited, then its partner
    answers (a 300 µs stand-in) and its outcome is submitted unawaited. The record waits, in µs."""
    path = directory / "record-wait.sqlite"
    log = await ShareLog.open(ShareLogSettings(path=path, stdout=False), KEY)
    waits = []
    for record in records:
        start = time.perf_counter()
        await log.record(record)
        waits.append((time.perf_counter() - start) * 1e6)
        await asyncio.sleep(0.0003)
        log.submit_outcome(ShareOutcome(record.share_id, "delivered", 200, 96, 0.3))
    await log.close()
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - after timing
    return waits[len(waits) // 10 :]  # past the first tenth: warm caches, a settled WAL


def json_lines_logger() -> Any:
    """A logger rendering like gateway.logconfig's production chain, writing to /dev/null."""
    sink = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the process
    return structlog.wrap_logger(
        structlog.BytesLogger(sink),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


def run_raw_baseline(directory: Path, records: list[ShareRecord], batch: int) -> WriterRun:
    """The same share rows, pre-built, inserted with executemany: what SQLite alone costs."""
    key = seal_key(KEY)
    rows = []
    subjects = []
    prev = GENESIS_HASH
    for seq, record in enumerate(records, start=1):
        entry = seal(share_entry(record, seq, prev), key)
        rows.append(entry_row(entry))
        subjects.append([(seq, subject_key(ref)) for ref in record.subject_refs])
        prev = entry["hash"]
    path = directory / "raw.sqlite"
    shutil.rmtree(directory, ignore_errors=True)
    create(path, KEY)
    conn = connect_rw(path, durability="batched", busy_timeout_s=5)
    sql = insert_sql("share")
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[i : i + batch])
        conn.executemany(
            "INSERT INTO share_subjects (share_seq, subject_key) VALUES (?, ?)",
            [pair for pairs in subjects[i : i + batch] for pair in pairs],
        )
        conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    conn.close()
    return WriterRun(f"raw executemany, {batch} rows/commit", len(rows), len(rows), seconds)


# -- query over a million records ------------------------------------------------------------


def generate_million(path: Path, n: int, days: int) -> float:
    """A log of `n` shares (90 % with an outcome) over `days` days, written with executemany."""
    start = time.perf_counter()
    create(path, KEY)
    conn = connect_rw(path, durability="batched", busy_timeout_s=5)
    conn.execute("PRAGMA synchronous = OFF")
    first_day = datetime(2025, 1, 1, tzinfo=UTC)
    step = timedelta(days=days) / n
    fake = "0" * 64
    refs = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]

    def shares() -> Iterator[tuple[object, ...]]:
        for i in range(n):
            shared = i % 10 != 0
            ts = (first_day + step * i).isoformat(timespec="microseconds")[:-6] + "Z"
            yield (
                2 * i + 1,
                f"{i:08x}-0000-4000-8000-000000000000",
                ts,
                PARTNERS[i % len(PARTNERS)],
                "DPA-2024-017",
                3,
                fake,
                "loan-service",
                "credit_assessment",
                "POST",
                "POST /v1/assess",
                "shared" if shared else "denied",
                "shared" if shared else "scope_denied",
                '["applicant.name","applicant.income"]' if shared else "[]",
                '["applicant.phone"]' if shared else "[]",
                "[]",
                '["identity.name","financial.income"]' if shared else "[]",
                "{}",
                1 if shared else 0,
                f'["{refs[i]}"]',
                412 if shared else 0,
                "CN",
                None,
                "[]",
                fake,
                fake,
                fake,
            )

    def outcomes() -> Iterator[tuple[object, ...]]:
        for i in range(n):
            if i % 10 != 0:
                ts = (first_day + step * i).isoformat(timespec="microseconds")[:-6] + "Z"
                share_id = f"{i:08x}-0000-4000-8000-000000000000"
                yield (
                    2 * i + 2,
                    share_id,
                    2 * i + 1,
                    ts,
                    "delivered",
                    200,
                    96,
                    23.5,
                    fake,
                    fake,
                    fake,
                )

    conn.execute("BEGIN")
    conn.executemany(insert_sql("share"), shares())
    conn.executemany(insert_sql("outcome"), outcomes())
    conn.executemany(
        "INSERT INTO share_subjects (share_seq, subject_key) VALUES (?, ?)",
        ((2 * i + 1, subject_key(refs[i])) for i in range(n)),
    )
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - start


def timed(runs: int, fn: Callable[[], object]) -> tuple[float, float, int]:
    """(first run, median of the rest) in seconds, and the result size."""
    times = []
    size = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        size = len(result) if isinstance(result, list) else int(str(result))
    return times[0], statistics.median(times[1:] or times), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=60_000, help="share decisions per run")
    parser.add_argument("--query-rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=100, help="days the query log spans")
    parser.add_argument("--repeat", type=int, default=3, help="runs per writer figure")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default event loop")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--dir", type=Path, help="work here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.query_rows, args.repeat = 3_000, 20_000, 1
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is absent only on Windows
            pass

    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-sharelog-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(
        f"share-log benchmark in {directory} ({os.cpu_count()} CPUs, SQLite "
        f"{sqlite3.sqlite_version}, {'default loop' if args.no_uvloop else 'uvloop'})\n"
    )
    try:
        flow = make_records(args.records, shared_share=0.9)
        intents = make_records(args.records, shared_share=0.0, seed=8)
        single = flow[: max(1, args.records // 6)]

        def median_run(make: Callable[[], WriterRun]) -> WriterRun:
            # A shared machine is noisy: the median of a few runs is the figure reported.
            results = sorted((make() for _ in range(args.repeat)), key=lambda r: r.rows_per_s)
            return results[len(results) // 2]

        runs = [
            median_run(lambda: asyncio.run(run_writer(directory, single, 1, "batched"))),
            median_run(lambda: asyncio.run(run_writer(directory, flow, 32, "batched"))),
            median_run(lambda: asyncio.run(run_writer(directory, intents, 32, "batched"))),
            median_run(lambda: asyncio.run(run_writer(directory, flow, 32, "batched", lines=True))),
            median_run(lambda: asyncio.run(run_writer(directory, flow, 32, "strict"))),
        ]
        raw = median_run(lambda: run_raw_baseline(directory / "raw32", intents, 32))
        raw_big = median_run(lambda: run_raw_baseline(directory / "raw512", intents, 512))
        print(
            f"writer throughput, median of {args.repeat} runs "
            "(rows of the log per second; producers await every write)"
        )
        for run in (*runs, raw, raw_big):
            workload = "intents" if run.rows == run.shares else "flow"
            print(
                f"  {run.label:<48} {workload:<8} {run.rows_per_s:>10,.0f} rows/s "
                f"({run.shares / run.seconds:,.0f} decisions/s)"
            )
        batched, intents_run, strict = runs[1], runs[2], runs[4]
        print()
        print(
            f"  batched/raw (intents, 32 producers vs 32 rows/commit):  "
            f"{intents_run.rows_per_s / raw.rows_per_s:.2f}"
        )
        print(
            f"  strict/batched (flow, 32 producers):                     "
            f"{strict.rows_per_s / batched.rows_per_s:.2f}"
        )
        waits = asyncio.run(run_record_wait(directory, single))
        cuts = statistics.quantiles(waits, n=100)
        print(
            f"  record wait, one request at a time (outcomes between): p50 {cuts[49]:.0f} us, "
            f"p99 {cuts[98]:.0f} us over {len(waits):,} records"
        )
        kept = asyncio.run(run_writer(directory / "verify", flow, 32, "batched", keep=True))
        log_path = directory / "verify" / "writer-batched-32.sqlite"
        start = time.perf_counter()
        checked = verify(log_path, KEY)
        seconds = time.perf_counter() - start
        print(
            f"  logs verify: {checked.entries:,} entries in {seconds:.2f} s "
            f"({seconds / max(1, checked.entries) * 1e6:.1f} us/entry, ok={checked.ok}); "
            f"log written at {kept.rows_per_s:,.0f} rows/s"
        )
        floor = min(batched.rows_per_s, intents_run.rows_per_s)
        verdict = "ok" if floor >= WRITER_FLOOR else "BELOW FLOOR"
        print(
            f"  batched floor {WRITER_FLOOR:,} rows/s with 32 producers: {floor:,.0f} ({verdict})"
        )

        path = directory / "million.sqlite"
        built = generate_million(path, args.query_rows, args.days)
        print(
            f"\nquery log: {args.query_rows:,} shares over {args.days} days "
            f"({path.stat().st_size / 1e6:,.0f} MB) generated in {built:.1f} s"
        )
        day = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=args.days // 2)
        probe = hashlib.sha256(str(args.query_rows // 3).encode()).hexdigest()
        until = day + timedelta(days=1)
        checks = [
            (
                "query partner+day, all rows",
                lambda: query(path, partner="partner-3", since=day, until=until, limit=None),
            ),
            (
                "query partner+day, first page",
                lambda: query(path, partner="partner-3", since=day, until=until),
            ),
            ("count partner+day", lambda: count(path, partner="partner-3", since=day, until=until)),
            ("subject lookup (whole log)", lambda: query(path, subject_ref=probe)),
            ("summary of one day", lambda: summary(path, since=day, until=until)),
        ]
        worst = 0.0
        for label, fn in checks:
            first, median, size = timed(5, fn)
            if label.startswith("query partner+day"):
                worst = max(worst, first, median)
            print(
                f"  {label:<32} first {first * 1000:8.1f} ms, median {median * 1000:8.1f} ms "
                f"({size:,} rows)"
            )
        verdict = "ok" if worst < QUERY_FLOOR_S else "ABOVE LIMIT"
        print(
            f"  partner+day query limit {QUERY_FLOOR_S:.0f} s: worst {worst * 1000:.1f} ms "
            f"({verdict})"
        )
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
