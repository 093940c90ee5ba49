"""Rows the database refuses, on the real TimescaleDB: bisected out of the batch's transaction,
each one a dead letter, and ``also`` given exactly the readings that went in."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncCursor

from sensord.adapters.database import ReadingStore, make_pool
from sensord.config import DatabaseConfig
from sensord.core.messages import DeadLetter, Reading, dead_letter

pytestmark = pytest.mark.integration

START = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
def refusing(db: psycopg.Connection) -> Iterator[None]:
    """The database refuses every reading whose seq is in refused_seqs."""
    db.execute("CREATE TABLE refused_seqs (seq bigint PRIMARY KEY)")
    db.execute(
        "CREATE FUNCTION refuse_listed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF EXISTS (SELECT 1 FROM refused_seqs WHERE seq = NEW.seq) THEN"
        " RAISE EXCEPTION 'seq % refused', NEW.seq USING ERRCODE = 'check_violation';"
        " END IF; RETURN NEW; END $$"
    )
    db.execute(
        "CREATE TRIGGER refuse_listed BEFORE INSERT ON readings FOR EACH ROW"
        " EXECUTE FUNCTION refuse_listed()"
    )
    try:
        yield
    finally:
        db.execute("DROP TRIGGER refuse_listed ON readings")
        db.execute("DROP FUNCTION refuse_listed()")
        db.execute("DROP TABLE refused_seqs")


def readings(n: int) -> list[Reading]:
    return [
        Reading(START + timedelta(milliseconds=i), START, "SMK-refused", "smoke", i, smoke=False)
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("size", "bad"),
    [
        (1, {0}),
        (2, {0}),
        (2, {1}),
        (1000, {500}),
        (1000, {499, 500}),
        (1000, {0, 999}),
        (1000, {3, 4, 5, 600}),
        (7, set(range(7))),
    ],
)
def test_only_the_refused_rows_are_dead_lettered(
    database_dsn: str, db: psycopg.Connection, refusing: None, size: int, bad: set[int]
) -> None:
    with db.cursor() as cur:
        cur.executemany("INSERT INTO refused_seqs VALUES (%s)", [(seq,) for seq in bad])
    batch = readings(size)
    seen: list[Sequence[Reading]] = []

    async def also(cur: AsyncCursor[Any], went_in: Sequence[Reading]) -> None:
        seen.append(list(went_in))

    def refused(index: int, error: str) -> DeadLetter:
        reading = batch[index]
        raw = str(reading.seq).encode()
        return dead_letter(START, "t", raw, "storage_rejected", error, reading.device_id, 64)

    async def write() -> Any:
        pool = make_pool(DatabaseConfig(dsn=database_dsn, pool_min=1, pool_max=1))
        await pool.open(wait=True)
        try:
            return await ReadingStore(pool).write(batch, [], also, refused)
        finally:
            await pool.close()

    result = asyncio.run(write())
    good = [r for r in batch if r.seq not in bad]
    assert (result.stored, result.duplicates, result.dead_letters) == (len(good), 0, len(bad))
    assert seen == [good]
    stored = [row[0] for row in db.execute("SELECT seq FROM readings ORDER BY seq")]
    assert stored == [r.seq for r in good]
    letters = db.execute("SELECT payload, detail FROM dead_letters ORDER BY id").fetchall()
    assert [int(bytes(p)) for p, _ in letters] == sorted(bad)
    assert all(f"seq {bytes(p).decode()} refused" in d for p, d in letters)
    # Each refused row costs about two writes per halving, not one write per row.
    assert result.splits <= 2 * len(bad) * max(1, math.ceil(math.log2(size)))
