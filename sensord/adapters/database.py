"""TimescaleDB access: waiting for the server, the connection pool, the batch writer, retention.

A batch goes in with one binary COPY into a per-connection staging table and
one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, so a message the broker
redelivers is stored once, and the whole batch (readings and dead letters)
commits in one transaction. Readings the database refuses as data are isolated
inside that transaction by bisection under savepoints: one bad row among n
costs about 2·log2(n) smaller attempts, not n transactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from sensord.adapters import migrations
from sensord.config import DatabaseConfig
from sensord.core.messages import DEAD_LETTER_COLUMNS, READING_COLUMNS, DeadLetter, Reading
from sensord.errors import StorageRejected, StorageUnavailable
from sensord.retry import Retry, Stopped

log = logging.getLogger("sensord.database")

# Binary COPY needs the PostgreSQL type of each column, in READING_COLUMNS order.
_READING_TYPES: tuple[str, ...] = (
    "timestamptz", "timestamptz", "text", "text", "int8",
    "bool", "float4", "float4", "float4",
    "bool", "float4", "float4",
    "text", "text", "int2", "bool", "text",
    "bool", "int4",
    "int2", "text",
    "jsonb",
)  # fmt: skip
_DEAD_LETTER_TYPES: tuple[str, ...] = (
    "timestamptz", "text", "bytea", "text", "text", "text", "int4", "bytea",
)  # fmt: skip

_STAGE = "readings_stage"
_CREATE_STAGE = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE readings) ON COMMIT DELETE ROWS"
).format(sql.Identifier(_STAGE))
_COPY_STAGE = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.Identifier(_STAGE), sql.SQL(", ").join(map(sql.Identifier, READING_COLUMNS))
)
_INSERT_FROM_STAGE = sql.SQL(
    "INSERT INTO readings ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING"
).format(
    cols=sql.SQL(", ").join(map(sql.Identifier, READING_COLUMNS)), stage=sql.Identifier(_STAGE)
)
_CLEAR_STAGE = sql.SQL("TRUNCATE {}").format(sql.Identifier(_STAGE))
_COPY_DEAD = sql.SQL("COPY dead_letters ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, DEAD_LETTER_COLUMNS))
)

assert len(_READING_TYPES) == len(READING_COLUMNS)
assert len(_DEAD_LETTER_TYPES) == len(DEAD_LETTER_COLUMNS)


def conninfo(config: DatabaseConfig, application: str = "sensord") -> str:
    """The libpq connection string, with the password from config if set apart."""
    extra: dict[str, str | int] = {
        "application_name": application,
        "connect_timeout": max(1, round(config.connect_timeout_s)),
    }
    password = config.password.get_secret_value()
    if password:
        extra["password"] = password
    return psycopg.conninfo.make_conninfo(config.dsn, **extra)


def where(dsn: str) -> str:
    """host:port/dbname of a DSN in either form, never its credentials."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured database"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


async def wait_for_database(dsn: str, retry: Retry) -> bool:
    """Connect until the server answers; False if ``retry``'s stop came first."""

    async def ping() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute("SELECT 1")

    def failed(attempt: int, delay: float, exc: BaseException) -> None:
        log.warning(
            "database not reachable yet",
            extra={"attempt": attempt, "retry_in_s": round(delay, 2), "error": str(exc)},
        )

    try:
        # Any failure here means "not yet"; each one is logged.
        await retry.call(ping, on=Exception, failed=failed)
    except Stopped:
        return False
    return True


async def schema_current(dsn: str, directory: Path) -> bool:
    """Whether every migration in ``directory`` is applied; logs the missing ones if not."""
    missing = await asyncio.to_thread(migrations.pending, dsn, directory)
    if missing:
        log.critical(
            "database schema is behind; run `sensord migrate` first",
            extra={"pending": [f"{m.version:04d}_{m.name}" for m in missing]},
        )
    return not missing


async def _prepare_connection(conn: AsyncConnection) -> None:
    await conn.set_autocommit(True)
    await conn.execute(_CREATE_STAGE)
    await conn.set_autocommit(False)


def make_pool(config: DatabaseConfig, name: str = "sensord") -> AsyncConnectionPool:
    """A pool (not yet open) whose connections carry the staging table."""
    return AsyncConnectionPool(
        conninfo(config),
        min_size=config.pool_min,
        max_size=config.pool_max,
        open=False,
        configure=_prepare_connection,
        timeout=config.connect_timeout_s,
        name=name,
    )


InTransaction = Callable[[AsyncCursor[Any], Sequence[Reading]], Awaitable[None]]
"""Writes to make in a batch's transaction, given the readings that went in."""

Refused = Callable[[int, str], DeadLetter]
"""The dead letter for ``readings[index]``, refused by the database with this error."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed batch did."""

    stored: int
    duplicates: int
    dead_letters: int
    refused: tuple[DeadLetter, ...] = ()  # readings the database refused, as dead letters
    splits: int = 0  # smaller writes made to isolate them


class ReadingStore:
    """Writes batches of readings and dead letters, one transaction per batch."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def write(
        self,
        readings: Sequence[Reading],
        dead_letters: Sequence[DeadLetter],
        also: InTransaction | None = None,
        refused: Refused | None = None,
    ) -> WriteResult:
        """Commit the batch, and ``also``'s writes in the same transaction.

        A reading the database refuses becomes ``refused``'s dead letter, in
        the same transaction; ``also`` is then given only the readings that
        went in (stored now or already there), so nothing it derives from a
        reading outlives a refusal. Raises StorageUnavailable (retry) or
        StorageRejected (a dead letter or ``also``'s writes were refused, or a
        reading was and ``refused`` is None).
        """
        try:
            async with self._pool.connection() as conn, conn.transaction():
                stored, errors, splits = (
                    await self._insert_isolating(conn, readings) if readings else (0, {}, 0)
                )
                if errors and refused is None:
                    raise StorageRejected(next(iter(errors.values())))
                bad = tuple(refused(i, error) for i, error in errors.items()) if refused else ()
                if dead_letters or bad:
                    await self._insert_dead_letters(conn, [*dead_letters, *bad])
                if also is not None:
                    went_in = (
                        [r for i, r in enumerate(readings) if i not in errors]
                        if errors
                        else readings
                    )
                    async with conn.cursor() as cur:
                        await also(cur, went_in)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StorageUnavailable(str(exc).strip() or type(exc).__name__) from exc
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise StorageRejected(str(exc).strip()) from exc
        duplicates = len(readings) - stored - len(errors)
        return WriteResult(stored, duplicates, len(dead_letters) + len(bad), bad, splits)

    @classmethod
    async def _insert_isolating(
        cls, conn: AsyncConnection, readings: Sequence[Reading]
    ) -> tuple[int, dict[int, str], int]:
        """Insert ``readings``, bisecting around the ones refused as data.

        Returns (rows stored, {index: error} of the refused readings, splits).
        Each attempt runs under its own savepoint, so a refused half rolls back
        alone and the transaction goes on.
        """
        stored = splits = 0
        errors: dict[int, str] = {}

        async def attempt(start: int, end: int) -> bool:
            nonlocal stored
            try:
                async with conn.transaction():
                    stored += await cls._insert_readings(conn, readings[start:end])
                    if end - start < len(readings):  # more to come: the stage keeps rows
                        await conn.execute(_CLEAR_STAGE)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if end - start == 1:
                    errors[start] = str(exc).strip()
                return False
            return True

        async def isolate(start: int, end: int) -> None:
            # [start, end), more than one row, holds a refusal. When its first
            # half goes in, the second must hold it, so that half is split untried.
            nonlocal splits
            middle = (start + end) // 2
            splits += 1
            left_ok = await attempt(start, middle)
            if not left_ok and middle - start > 1:
                await isolate(start, middle)
            if left_ok and end - middle > 1:
                await isolate(middle, end)
                return
            splits += 1  # unknown, or a single row tried for its error
            if not await attempt(middle, end) and end - middle > 1:
                await isolate(middle, end)

        if not await attempt(0, len(readings)) and len(readings) > 1:
            await isolate(0, len(readings))
        return stored, dict(sorted(errors.items())), splits

    @staticmethod
    async def _insert_readings(conn: AsyncConnection, readings: Sequence[Reading]) -> int:
        async with conn.cursor() as cur:
            async with cur.copy(_COPY_STAGE) as copy:
                copy.set_types(_READING_TYPES)
                for row in readings:
                    await copy.write_row(row)
            await cur.execute(_INSERT_FROM_STAGE)
            return cur.rowcount

    @staticmethod
    async def _insert_dead_letters(
        conn: AsyncConnection, dead_letters: Sequence[DeadLetter]
    ) -> None:
        async with conn.cursor() as cur, cur.copy(_COPY_DEAD) as copy:
            copy.set_types(_DEAD_LETTER_TYPES)
            for row in dead_letters:
                await copy.write_row(row)


async def expire(
    pool: AsyncConnectionPool, readings_days: int, dead_letters_days: int
) -> tuple[int, int]:
    """Drop reading chunks and delete dead letters past their age, in one transaction.

    Returns (chunks dropped, dead letters deleted).
    """
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await cur.execute(
            # The runtime role does not own readings: the owner's function drops (0007).
            "SELECT sensord_expire_readings(%s::interval)",
            (f"{readings_days} days",),
        )
        row = await cur.fetchone()
        chunks = int(row[0]) if row else 0
        await cur.execute(
            "DELETE FROM dead_letters WHERE received_at < now() - %s::interval",
            (f"{dead_letters_days} days",),
        )
        return chunks, max(cur.rowcount, 0)
