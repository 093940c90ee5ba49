"""The outbox's named queries on a fresh database: the lease, the retry, the broker gate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sensord.adapters.migrations import migrate
from sensord.adapters.outbox_store import (
    Queued,
    claim_outbox,
    enqueue,
    mark_failed,
    mark_sent,
    outbox_backlog,
)
from sensord.paths import shipped
from simulators.harness.database import create_database, drop_database

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


@pytest.fixture
def dsn() -> Iterator[str]:
    made = create_database()
    try:
        migrate(made, shipped("migrations"))
        yield made
    finally:
        drop_database(made)


async def claim(dsn: str, now: datetime, *, mqtt: bool = True) -> list[tuple[str, int]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.cursor() as cur:
        rows = await claim_outbox(cur, now, lease_until=now + LEASE, mqtt=mqtt, limit=10)
        return [(row.idempotency_key, row.attempts) for row in rows]


def test_a_claim_leases_and_a_failure_waits_for_its_retry(dsn: str) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.cursor() as cur:
            await enqueue(
                cur,
                [
                    Queued(None, "mqtt", "t/a", json.dumps({"n": 1}), "k-mqtt", T0),
                    Queued(None, "webhook", "ORG-PM1", json.dumps({"n": 2}), "k-hook", T0),
                    Queued(None, "mqtt", "t/a", json.dumps({"n": 3}), "k-mqtt", T0),  # again
                ],
            )
            assert await outbox_backlog(cur) == (2, T0)
        # The broker down: only the webhook row is attempted.
        assert await claim(dsn, T0, mqtt=False) == [("k-hook", 1)]
        # Leased: nobody claims it again before the lease runs out.
        assert await claim(dsn, T0 + LEASE - timedelta(seconds=1)) == [("k-mqtt", 1)]
        assert await claim(dsn, T0 + LEASE - timedelta(seconds=1)) == []
        # The webhook row's lease ran out (a crash after sending): claimed again.
        assert await claim(dsn, T0 + LEASE) == [("k-hook", 2)]
        async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.cursor() as cur:
            await cur.execute("SELECT id FROM outbox ORDER BY id")
            mqtt_id, hook_id = [row[0] for row in await cur.fetchall()]
            await mark_sent(cur, [(T0 + LEASE, mqtt_id)])
            retry_at = T0 + LEASE + timedelta(seconds=5)
            await mark_failed(cur, [(retry_at, "HTTP 503", hook_id)])
            assert await outbox_backlog(cur) == (1, T0)
        assert await claim(dsn, retry_at - timedelta(milliseconds=1)) == []
        assert await claim(dsn, retry_at) == [("k-hook", 3)]

    asyncio.run(scenario())
