"""``sensord run``: the daemon (systemd: Type=notify).

The only command module that imports ``sensord.app``, and only when it runs: the
daemon's imports (gmqtt, APScheduler, the metrics) are not needed by the others.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sensord.config import Settings

NAME = "run"


def register(subparsers: Any) -> None:
    """Add ``run`` to the ``sensord`` subparsers."""
    subparsers.add_parser(NAME, help="run the daemon (systemd: Type=notify)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the daemon until it stops; its exit status."""
    from sensord import app

    return asyncio.run(app.run(settings))
