"""Fresh databases on the project's TimescaleDB (``scripts/services up``).

Two logins, as scripts/services creates them: the owner (``ADMIN_DSN``: creates the
databases, runs the migrations, and is what tests inspect and tamper with), and the
daemon's runtime login, a member of ``sensord_runtime`` (``runtime_dsn``).
"""

from __future__ import annotations

import os
import time
import uuid

import psycopg
from psycopg import sql

ADMIN_DSN = os.environ.get(
    "SENSORD_TEST_ADMIN_DSN", "postgresql://sensord:sensord@127.0.0.1:5433/sensord"
)

RUNTIME_USER = os.environ.get("SENSORD_TEST_RUNTIME_USER", "sensord_daemon")
RUNTIME_PASSWORD = os.environ.get("SENSORD_TEST_RUNTIME_PASSWORD", "sensord_daemon")


def runtime_dsn(dsn: str) -> str:
    """``dsn`` (any database, host or proxy) as the daemon's runtime login."""
    return psycopg.conninfo.make_conninfo(dsn, user=RUNTIME_USER, password=RUNTIME_PASSWORD)


def create_database() -> str:
    """A new, empty database with a unique name; returns its DSN."""
    name = f"sensord_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def drop_database(dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        for attempt in range(50):
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.InsufficientPrivilege:
                # A server-side worker still holds it (a database server configured
                # with TimescaleDB background workers); it lets go within seconds.
                if attempt == 49:
                    raise
                time.sleep(0.2)


def fresh_database(dsn: str, name: str) -> str:
    """Drop and create database ``name`` on ``dsn``'s server; return its DSN."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)
