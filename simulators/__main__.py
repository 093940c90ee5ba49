"""``python -m simulators <command>``: district data, fleet traffic, the demo."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command -> module with `add_arguments(parser)` and `main(args) -> int`
COMMANDS = {
    "demo": ("simulators.demo", "run the README demo: daemon + a simulated burst + a summary"),
    "district": ("simulators.district", "generate a synthetic district's registry CSVs"),
    "fleet": ("simulators.fleet", "publish every registered device's traffic, with scenarios"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the chosen simulator."""
    parser = argparse.ArgumentParser(prog="python -m simulators")
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        modules[name] = module
        module.add_arguments(commands.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    return int(modules[args.command].main(args))


if __name__ == "__main__":
    sys.exit(main())
