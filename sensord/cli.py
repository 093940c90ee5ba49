"""Command line: ``sensord run | migrate | check-config | registry | rules | alerts | silence``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sensord import __version__, alerts_cli, exits, logs, orders_cli, registry_cli, report_cli
from sensord.config import Settings, load_settings, redacted
from sensord.errors import ConfigError, MigrationError

log = logging.getLogger("sensord.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensord", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sensord {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration file (default: ./config.toml if present)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the daemon (systemd: Type=notify)")
    commands.add_parser("migrate", help="apply pending database migrations (safe to repeat)")
    check = commands.add_parser("check-config", help="validate and print the effective config")
    check.add_argument("--json", action="store_true", help="print as JSON")
    registry_cli.add_parser(commands)
    rules = commands.add_parser("rules", help="rule files").add_subparsers(
        dest="rules_command", required=True
    )
    rules_check = rules.add_parser("check", help="validate a rule directory (all or nothing)")
    rules_check.add_argument(
        "directory", type=Path, nargs="?", default=None, help="default: the configured rules"
    )
    alerts_cli.add_parser(commands)
    orders_cli.add_parser(commands)
    report_cli.add_parser(commands)
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
    handlers = {
        "run": _run,
        "migrate": _migrate,
        "check-config": _check_config,
        "registry": registry_cli.run,
        "rules": _rules_check,
        "alerts": alerts_cli.run,
        "silence": alerts_cli.run,
        "orders": orders_cli.run,
        "report": report_cli.run,
    }
    return handlers[args.command](settings, args)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from sensord import app  # the daemon's imports are not needed by the other commands

    return asyncio.run(app.run(settings))


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters import migrations
    from sensord.adapters.database import conninfo
    from sensord.paths import migrations_directory

    directory = migrations_directory(settings)
    try:
        applied = migrations.migrate(conninfo(settings.database, "sensord-migrate"), directory)
    except MigrationError as exc:
        print(f"sensord migrate: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # connection errors: say which database, then fail
        print(f"sensord migrate: cannot migrate: {exc}", file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        print("schema up to date")
    return 0


def _check_config(settings: Settings, args: argparse.Namespace) -> int:
    data = redacted(settings)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for section, values in data.items():
            print(f"[{section}]")
            for key, value in values.items():
                print(f"{key} = {json.dumps(value)}")
            print()
    return 0


def _rules_check(settings: Settings, args: argparse.Namespace) -> int:
    """The rule files and, when dispatch is on, the dispatch policy: each all or nothing."""
    from sensord.adapters.rule_files import load_policy, load_rules
    from sensord.errors import RuleError
    from sensord.paths import policy_file, rules_directory

    args.directory = args.directory or rules_directory(settings)
    policy = policy_file(settings, Path(args.directory)) if settings.dispatch.enabled else None
    failed = False
    try:
        rules = load_rules(args.directory)
        print(f"{len(rules.rules)} rules in {len(rules.sources)} files: ok")
    except RuleError as exc:
        failed = True
        for problem in exc.problems:
            print(f"{args.directory}/{problem}", file=sys.stderr)
    if policy is not None:
        try:
            loaded = load_policy(policy)
            print(f"{policy}: {len(loaded.routes)} routes, {len(loaded.slas)} SLAs: ok")
        except RuleError as exc:
            failed = True
            for problem in exc.problems:
                print(f"{policy.parent}/{problem}", file=sys.stderr)
    return 1 if failed else 0
