"""``sensord migrate``: apply pending database migrations (safe to repeat)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sensord import exits
from sensord.config import Settings
from sensord.errors import MigrationError

NAME = "migrate"


def register(subparsers: Any) -> None:
    """Add ``migrate`` to the ``sensord`` subparsers."""
    subparsers.add_parser(NAME, help="apply pending database migrations (safe to repeat)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the pending migrations; 1 when one fails or the database cannot be reached."""
    from sensord.adapters import migrations
    from sensord.adapters.database import conninfo
    from sensord.paths import migrations_directory

    directory = migrations_directory(settings)
    try:
        applied = migrations.migrate(conninfo(settings.database, "sensord-migrate"), directory)
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
