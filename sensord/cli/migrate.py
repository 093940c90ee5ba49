"""``sensord migrate``: apply pending database migrations (safe to repeat).

Connects as the schema owner (``database.migrate_dsn``), not as the daemon's runtime login.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sensord import exits
from sensord.config import DatabaseConfig, Settings
from sensord.errors import MigrationError

NAME = "migrate"


def register(subparsers: Any) -> None:
    """Add ``migrate`` to the ``sensord`` subparsers."""
    subparsers.add_parser(NAME, help="apply pending database migrations (safe to repeat)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the pending migrations; 1 when one fails or the database cannot be reached."""
    from sensord.adapters import migrations
    from sensord.paths import migrations_directory

    directory = migrations_directory(settings)
    try:
        applied = migrations.migrate(owner_conninfo(settings.database), directory)
    except MigrationError as exc:
        print(f"sensord migrate: {exc}", file=sys.stderr)
        return exits.FAILED
    except Exception as exc:  # connection errors: say which database, then fail
        print(f"sensord migrate: cannot migrate: {exc}", file=sys.stderr)
        return exits.FAILED
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        print("schema up to date")
    return exits.OK


def owner_conninfo(config: DatabaseConfig) -> str:
    """The schema owner's connection string: ``migrate_dsn`` with ``migrate_password``, or
    ``dsn`` with ``password`` when no separate owner is configured."""
    from sensord.adapters.database import conninfo

    if config.migrate_dsn:
        config = config.model_copy(
            update={"dsn": config.migrate_dsn, "password": config.migrate_password}
        )
    return conninfo(config, "sensord-migrate")
