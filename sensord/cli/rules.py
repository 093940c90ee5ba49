"""``sensord rules check [DIR]``: validate the rule files and the dispatch policy.

Reads files only: no database, and none of the daemon's modules (a unit test checks
that gmqtt and APScheduler stay unloaded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sensord import exits
from sensord.config import Settings

NAME = "rules"


def register(subparsers: Any) -> None:
    """Add ``rules`` and its subcommands to the ``sensord`` subparsers."""
    rules = subparsers.add_parser(NAME, help="rule files").add_subparsers(
        dest="rules_command", required=True
    )
    check = rules.add_parser("check", help="validate a rule directory (all or nothing)")
    check.add_argument(
        "directory", type=Path, nargs="?", default=None, help="default: the configured rules"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
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
    return exits.FAILED if failed else exits.OK
