"""The writer on the real database: connections cut under it are retried with backoff,
paced by a ManualClock, and the batch is acknowledged only once it is stored."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import UTC, datetime

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from sensord.adapters.database import ReadingStore, make_pool
from sensord.adapters.metrics import Metrics
from sensord.clock import ManualClock
from sensord.config import DatabaseConfig
from sensord.core.backoff import Backoff
from sensord.core.batching import Batcher, BatchPolicy
from sensord.core.messages import DecodeLimits, DeviceInfo, decode
from sensord.retry import Retry
from sensord.services.ingest import IngestBuffer
from sensord.services.writer import Writer

pytestmark = pytest.mark.integration

DEVICE = "SMK-writer-1"
TOPIC = f"sensord/v1/jd01/smoke/{DEVICE}"


def payload(seq: int) -> bytes:
    return json.dumps({"ts": "2026-11-26T14:00:00.000+08:00", "seq": seq, "smoke": False}).encode()


def half() -> float:
    return 0.5


async def cut_pool_connection(pool: AsyncConnectionPool, admin: psycopg.Connection) -> None:
    """Terminate the backend of the pool's (only) connection, as a server restart would."""
    async with pool.connection() as conn:
        pid = conn.info.backend_pid
    # With a timeout, pg_terminate_backend returns only once the backend is gone.
    admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def test_a_write_retries_through_lost_connections_then_acknowledges(
    db: psycopg.Connection, database_dsn: str
) -> None:
    clock = ManualClock(datetime(2026, 11, 26, 6, 0, tzinfo=UTC))
    metrics = Metrics(CollectorRegistry(), process=False)
    outages = 3  # attempts that find their connection cut

    async def scenario() -> None:
        pool = make_pool(DatabaseConfig(dsn=database_dsn, pool_min=1, pool_max=1))
        await pool.open(wait=True)
        try:

            async def sleep(delay: float) -> None:
                await clock.sleep(delay)
                if len(clock.slept) < outages:
                    await cut_pool_connection(pool, db)

            buffer = IngestBuffer(
                Batcher(BatchPolicy(10, 60.0, 100)),
                functools.partial(decode, limits=DecodeLimits()),
                lambda: {DEVICE: DeviceInfo("smoke", "jd01")},
                clock,
                metrics,
            )
            retry = Retry(Backoff(0.5, 4.0), uniform=half, sleep=sleep)
            writer = Writer("writer-0", buffer, ReadingStore(pool), retry, clock, metrics)
            handlers = [asyncio.create_task(buffer.handle(TOPIC, payload(n))) for n in range(3)]
            for _ in range(5):
                await asyncio.sleep(0)
            await cut_pool_connection(pool, db)
            buffer.stop_accepting()  # the open batch is flushed, then run() returns
            await writer.run()
            await asyncio.gather(*handlers)  # each acknowledged: no exception
        finally:
            await pool.close()

    asyncio.run(scenario())

    assert clock.slept == [0.375, 0.75, 1.5]  # Backoff(0.5, 4.0) at jitter 0.5
    assert metrics.write_retries._value.get() == outages
    assert metrics.database_errors.labels("write")._value.get() == outages
    assert metrics.stored._value.get() == 3
    stored = db.execute("SELECT seq FROM readings WHERE device_id = %s ORDER BY seq", (DEVICE,))
    assert [row[0] for row in stored] == [0, 1, 2]
