"""Command line: ``sensord run | migrate | check-config | registry | rules | alerts | silence |
orders | report | audit | credentials | broker``."""

# One module per command group, each of the same shape: ``NAME``, ``register(subparsers)``
# and ``run(settings, args) -> int``; what they share (the error -> exit-code mapping, the
# database connection, tables, argument types) is ``cli.common``. A command's heavy
# imports happen inside its ``run``, so that ``sensord rules check`` loads no daemon code.

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sensord import __version__, exits, logs
from sensord.cli import (
    alerts,
    audit,
    broker,
    config,
    credentials,
    daemon,
    migrate,
    orders,
    registry,
    report,
    rules,
    silence,
)
from sensord.config import Settings, load_settings
from sensord.errors import ConfigError


class CommandGroup(Protocol):
    """The shape of every command module (mypy checks each module against it)."""

    NAME: str

    def register(self, subparsers: Any) -> None: ...

    def run(self, settings: Settings, args: argparse.Namespace) -> int: ...


# In the order ``sensord --help`` lists them.
GROUPS: tuple[CommandGroup, ...] = (
    daemon,
    migrate,
    config,
    registry,
    rules,
    alerts,
    silence,
    orders,
    report,
    audit,
    credentials,
    broker,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensord", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sensord {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration file (default: ./config.toml if present)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sensord`` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(
            args.config or Path("config.toml"), required=args.config is not None
        )
    except ConfigError as exc:
        print(f"sensord: {exc}", file=sys.stderr)
        return exits.CONFIG
    logs.configure(settings.log.level, settings.log.format)
    by_name = {group.NAME: group for group in GROUPS}
    return by_name[args.command].run(settings, args)
