"""``sensord broker config --out DIR``: Mosquitto's password file, ACL and include snippet,
generated from the registry and the issued credentials.

Regenerate after every registry or credential change and reload the broker
(``systemctl reload mosquitto`` = SIGHUP re-reads both files). Exit status: 0 written;
1 the database failed.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from sensord import exits
from sensord.cli.common import guarded
from sensord.config import Settings

NAME = "broker"


def register(subparsers: Any) -> None:
    """Add ``broker config`` to the ``sensord`` subparsers."""
    group = subparsers.add_parser(NAME, help="generate the broker's authentication files")
    sub = group.add_subparsers(dest="broker_command", required=True)
    config = sub.add_parser("config", help="write passwords, acl and sensord-auth.conf")
    config.add_argument("--out", type=Path, required=True, metavar="DIR")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Write the files; the process exit status."""
    return guarded("sensord broker config", lambda: asyncio.run(_config(settings, args.out)))


async def _config(settings: Settings, out: Path) -> int:
    from sensord.adapters.broker_files import write_broker_files
    from sensord.adapters.principal_store import active_principals, device_places
    from sensord.cli.common import connect

    async with await connect(settings, "sensord-broker") as conn:
        principals = await active_principals(conn)
        devices = await device_places(conn)
    paths = write_broker_files(out, principals, devices, settings.mqtt.topic_prefix)
    for path in paths:
        print(path)
    print(
        f"{len(principals)} principals; include {paths[-1]} from mosquitto.conf and reload "
        "mosquitto (SIGHUP)"
    )
    return exits.OK
