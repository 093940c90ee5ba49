"""Schema migrations and the retention job, on the real TimescaleDB."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from sensord.adapters.database import make_pool
from sensord.adapters.metrics import Metrics
from sensord.adapters.migrations import migrate, pending
from sensord.config import DatabaseConfig, RetentionConfig
from sensord.errors import MigrationError
from sensord.paths import shipped
from sensord.services.retention import run_retention
from simulators.harness.database import create_database, drop_database

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_dsn() -> object:
    dsn = create_database()
    yield dsn
    drop_database(dsn)


def test_migrate_applies_each_file_once(empty_dsn: str) -> None:
    assert pending(empty_dsn, shipped("migrations"))
    applied = migrate(empty_dsn, shipped("migrations"))
    assert [m.version for m in applied] == sorted(m.version for m in applied)
    assert migrate(empty_dsn, shipped("migrations")) == []
    assert pending(empty_dsn, shipped("migrations")) == []
    with psycopg.connect(empty_dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = 'readings'"
        ).fetchone()
    assert row == (1,)


def test_concurrent_migrations_apply_once(empty_dsn: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate(empty_dsn, shipped("migrations")), range(4)))
    assert sorted(len(r) for r in results)[:-1] == [0, 0, 0]
    assert len(max(results, key=len)) == len(list(shipped("migrations").glob("*.sql")))


def test_a_changed_migration_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(shipped("migrations"), directory)
    migrate(empty_dsn, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_dsn, directory)


def test_a_failing_migration_applies_nothing(empty_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(shipped("migrations"), directory)
    (directory / "9999_broken.sql").write_text("CREATE TABLE half (x int);\nSELECT nonsense;\n")
    with pytest.raises(MigrationError, match="9999_broken"):
        migrate(empty_dsn, directory)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert 9999 not in versions


def test_0006_gives_existing_dead_letters_their_size_and_hash(
    empty_dsn: str, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in sorted(shipped("migrations").glob("*.sql")):
        if int(path.name[:4]) < 6:
            shutil.copy(path, directory)
    migrate(empty_dsn, directory)
    with psycopg.connect(empty_dsn) as conn:
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason)"
            " VALUES (now(), 't', 'whole payload', 'bad_json')"
        )
    migrate(empty_dsn, shipped("migrations"))
    with psycopg.connect(empty_dsn) as conn:
        row = conn.execute("SELECT payload_size, payload_sha256 FROM dead_letters").fetchone()
        assert row is not None
        assert (row[0], bytes(row[1])) == (13, hashlib.sha256(b"whole payload").digest())
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO dead_letters"
                " (received_at, topic, payload, reason, payload_size, payload_sha256)"
                " VALUES (now(), 't', 'longer than said', 'bad_json', 3, sha256('x'))"
            )


def test_retention_drops_old_chunks_and_dead_letters(
    database_dsn: str, db: psycopg.Connection
) -> None:
    now = datetime.now(UTC)
    rows = [(now - timedelta(days=age), "SMK-R", age) for age in (1, 50, 100, 120)]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (ts, received_at, device_id, kind, seq)"
            " VALUES (%s, now(), %s, 'smoke', %s)",
            rows,
        )
        cur.execute(
            "INSERT INTO dead_letters"
            " (received_at, topic, payload, reason, payload_size, payload_sha256) VALUES"
            " (now() - interval '40 days', 't', 'x', 'bad_json', 1, sha256('x')),"
            " (now(), 't', 'y', 'bad_json', 1, sha256('y'))"
        )
    metrics = Metrics(CollectorRegistry(), process=False)

    async def run() -> tuple[int, int]:
        pool = make_pool(DatabaseConfig(dsn=database_dsn))
        await pool.open()
        try:
            result = await run_retention(
                pool, RetentionConfig(readings_days=90, dead_letters_days=30), metrics
            )
        finally:
            await pool.close()
        return result.chunks_dropped, result.dead_letters_deleted

    dropped, deleted = asyncio.run(run())
    assert dropped == 2
    assert deleted == 1
    ages = sorted(r[0] for r in db.execute("SELECT seq FROM readings"))
    assert ages == [1, 50]
    assert metrics.registry.get_sample_value("sensord_retention_chunks_dropped_total") == 2
