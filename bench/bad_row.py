"""What one reading the database refuses costs a batch: the writer on a real TimescaleDB.

Each repetition hands --batch smoke readings to the ingest buffer (one batch),
then times the writer committing it (``Writer.run`` until the batch is settled):
once with every row good, once with one row (in the middle) that the database
refuses — a trigger on ``readings`` raising ``check_violation``, a refusal no
decode check can foresee. Prints the median and every run, in ms.

    python -m bench.bad_row --batch 4000 --runs 5

Runs against whatever ``sensord`` is importable, so the same file measures an
older tree: copy it into that tree's ``bench/`` and run it from there. Needs
scripts/services up (TimescaleDB on 5433).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta

import psycopg
from prometheus_client import CollectorRegistry

from sensord.adapters.database import ReadingStore, make_pool
from sensord.adapters.metrics import Metrics
from sensord.adapters.migrations import migrate
from sensord.clock import SystemClock
from sensord.config import DatabaseConfig
from sensord.core.backoff import Backoff
from sensord.core.batching import Batcher, BatchPolicy
from sensord.core.messages import DecodeLimits, DeviceInfo, decode
from sensord.paths import shipped
from sensord.retry import Retry
from sensord.services.ingest import IngestBuffer
from sensord.services.writer import Writer
from simulators.harness.database import create_database, drop_database

DEVICES = 100
BAD = "SMK-bench-bad"
REFUSE = f"""
CREATE FUNCTION bench_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the benchmark' USING ERRCODE = 'check_violation'; END $$;
CREATE TRIGGER bench_refuse BEFORE INSERT ON readings FOR EACH ROW
    WHEN (NEW.device_id = '{BAD}') EXECUTE FUNCTION bench_refuse();
"""


def messages(size: int, bad: bool, start: datetime) -> list[tuple[str, bytes]]:
    """``size`` smoke readings from DEVICES detectors; the middle one from BAD if ``bad``."""
    out = []
    for n in range(size):
        device = BAD if bad and n == size // 2 else f"SMK-bench-{n % DEVICES:03d}"
        ts = (start + timedelta(milliseconds=n)).isoformat()
        body = {"ts": ts, "seq": n, "smoke": False, "battery_pct": 80.0}
        out.append((f"sensord/v1/jd01/smoke/{device}", json.dumps(body).encode()))
    return out


async def one_batch(dsn: str, batch: list[tuple[str, bytes]]) -> tuple[float, float]:
    """Seconds to commit ``batch`` as one batch; and the dead letters counted."""
    clock = SystemClock()
    metrics = Metrics(CollectorRegistry(), process=False)
    devices = {f"SMK-bench-{n:03d}": DeviceInfo("smoke", "jd01") for n in range(DEVICES)}
    devices[BAD] = DeviceInfo("smoke", "jd01")
    pool = make_pool(DatabaseConfig(dsn=dsn, pool_min=1, pool_max=2))
    await pool.open(wait=True)
    try:
        buffer = IngestBuffer(
            Batcher(BatchPolicy(len(batch), 60.0, len(batch))),
            functools.partial(decode, limits=DecodeLimits()),
            lambda: devices,
            clock,
            metrics,
        )
        retry = Retry(Backoff(0.1, 1.0))
        writer = Writer("writer-0", buffer, ReadingStore(pool), retry, clock, metrics)
        handlers = [asyncio.create_task(buffer.handle(t, p)) for t, p in batch]
        await asyncio.sleep(0)  # every handler has decoded and added its message
        buffer.stop_accepting()
        started = time.perf_counter()
        await writer.run()
        elapsed = time.perf_counter() - started
        await asyncio.gather(*handlers)
    finally:
        await pool.close()
    dead = metrics.registry.get_sample_value(
        "sensord_ingest_dead_letters_total", {"reason": "storage_rejected"}
    )
    return elapsed, dead or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    dsn = create_database()
    try:
        migrate(dsn, shipped("migrations"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(REFUSE)
        figures: dict[str, list[float]] = {"all good": [], "one bad row": []}
        for run in range(args.runs):
            for label, bad in (("all good", False), ("one bad row", True)):
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("TRUNCATE readings, dead_letters")
                start = datetime.now(UTC) - timedelta(hours=1, minutes=run)
                seconds, dead = asyncio.run(one_batch(dsn, messages(args.batch, bad, start)))
                assert dead == (1 if bad else 0), dead
                figures[label].append(seconds * 1000)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        tree = f"{os.getcwd()} ({commit or 'no git'})"
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores,"
            f" Python {platform.python_version()}; tree {tree}"
        )
        print(f"one batch of {args.batch} readings, {args.runs} runs, writer commit in ms")
        for label, values in figures.items():
            runs = " / ".join(f"{v:.0f}" for v in values)
            print(f"  {label:12s} median {statistics.median(values):8.0f}   runs {runs}")
    finally:
        drop_database(dsn)


if __name__ == "__main__":
    main()
