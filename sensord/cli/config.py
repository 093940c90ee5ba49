"""``sensord check-config``: validate and print the effective configuration.

Loading and validating happen before any command runs (``sensord.cli.main``: exit 78
on a bad file); this prints what was loaded, secrets redacted.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sensord import exits
from sensord.config import Settings, redacted

NAME = "check-config"


def register(subparsers: Any) -> None:
    """Add ``check-config`` to the ``sensord`` subparsers."""
    check = subparsers.add_parser(NAME, help="validate and print the effective config")
    check.add_argument("--json", action="store_true", help="print as JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Print the effective configuration, as TOML-like sections or as JSON."""
    data = redacted(settings)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for section, values in data.items():
            print(f"[{section}]")
            for key, value in values.items():
                print(f"{key} = {json.dumps(value)}")
            print()
    return exits.OK
