"""Forward-only schema migrations: ``migrations/NNNN_name.sql``, each applied once.

``sensord migrate`` takes a session advisory lock, so instances started
together (every ``ExecStartPre``) apply each file exactly once; every file runs
in its own transaction and is recorded with its checksum, and a file changed
after it was applied is an error, not a silent divergence.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from sensord.errors import MigrationError

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5E45_0D00  # any constant shared by every sensord instance


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path) -> list[Migration]:
    """The migration files in version order; raise on a stray or duplicate file."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: expected NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} used twice", version)
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


def migrate(conninfo: str, directory: Path) -> list[Migration]:
    """Apply every pending migration; return those applied (empty on a re-run)."""
    migrations = discover(directory)
    applied: list[Migration] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                version: checksum
                for version, checksum in conn.execute(
                    "SELECT version, checksum FROM schema_migrations"
                ).fetchall()
            }
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{migration.version:04d}_{migration.name}.sql changed after it "
                            "was applied; add a new migration instead",
                            migration.version,
                        )
                    continue
                _apply(conn, migration)
                applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(migration.sql.encode())  # bytes: run as one multi-statement script
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
    except psycopg.Error as exc:
        raise MigrationError(
            f"{migration.version:04d}_{migration.name}.sql failed: {exc}", migration.version
        ) from exc


def pending(conninfo: str, directory: Path) -> list[Migration]:
    """Migrations not yet applied (the daemon refuses to start while any are)."""
    migrations = discover(directory)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return migrations
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return [migration for migration in migrations if migration.version not in done]
