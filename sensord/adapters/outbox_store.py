"""The outbox in the database: rows queued in the order's transaction, claimed with a
lease by the relay, marked sent or due again.

A claim moves ``next_attempt_at`` past the lease and commits at once, so no
transaction stays open while sending; a crash before ``mark_sent`` leaves the
lease to expire and the row is claimed again (at least once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import AsyncCursor


class Queued(NamedTuple):
    """A message to queue: for an order (None: a reply about no order), on a channel."""

    order_id: int | None
    channel: str
    destination: str
    payload: str  # JSON
    key: str  # idempotency key: a second insert of it is skipped
    at: datetime


@dataclass(frozen=True, slots=True, order=True)
class OutboxClaim:
    """A row leased for one delivery attempt."""

    id: int
    channel: str
    destination: str
    payload: Any
    idempotency_key: str
    attempts: int


async def enqueue(cur: AsyncCursor[Any], rows: Sequence[Queued]) -> None:
    """Insert outbox rows, due at once; a key seen before (a retried transaction) is
    skipped."""
    if rows:
        await cur.executemany(
            "INSERT INTO outbox (order_id, channel, destination, payload, idempotency_key,"
            " created_at, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            [(*row, row.at) for row in rows],
        )


async def claim_outbox(
    cur: AsyncCursor[Any],
    now: datetime,
    *,
    lease_until: datetime,
    mqtt: bool,
    limit: int,
) -> list[OutboxClaim]:
    """Lease up to ``limit`` unsent rows due at ``now`` until ``lease_until``, counting an
    attempt each, in id order; MQTT rows only when ``mqtt`` (the broker is connected)."""
    await cur.execute(
        "UPDATE outbox SET next_attempt_at = %s, attempts = attempts + 1"
        " WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL"
        " AND next_attempt_at <= %s"
        " AND (channel <> 'mqtt' OR %s)"  # broker down: not an attempt, no backoff
        " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING id, channel, destination, payload, idempotency_key, attempts",
        (lease_until, now, mqtt, limit),
    )
    return sorted(OutboxClaim(*row) for row in await cur.fetchall())


async def mark_sent(cur: AsyncCursor[Any], sent: Sequence[tuple[datetime, int]]) -> None:
    """Rows ``(sent_at, id)`` delivered."""
    if sent:
        await cur.executemany(
            "UPDATE outbox SET sent_at = %s, last_error = NULL WHERE id = %s", sent
        )


async def mark_failed(cur: AsyncCursor[Any], failed: Sequence[tuple[datetime, str, int]]) -> None:
    """Rows ``(next_attempt_at, error, id)`` not delivered: due again at their next attempt."""
    if failed:
        await cur.executemany(
            "UPDATE outbox SET next_attempt_at = %s, last_error = %s WHERE id = %s", failed
        )


async def outbox_backlog(cur: AsyncCursor[Any]) -> tuple[int, datetime | None]:
    """How many rows are unsent, and when the oldest of them was queued."""
    await cur.execute("SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL")
    pending, oldest = await cur.fetchone() or (0, None)
    return pending, oldest
