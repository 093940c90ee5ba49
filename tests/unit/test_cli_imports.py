"""The command line stays light: only ``sensord run`` loads the daemon."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sensord.cli

CLI = Path(sensord.cli.__file__).parent
SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules"
DAEMON_ONLY = ("sensord.app", "gmqtt", "apscheduler", "prometheus_client")


def test_rules_check_loads_none_of_the_daemons_modules() -> None:
    script = (
        "import sys\n"
        "from sensord.cli import main\n"
        f"code = main(['rules', 'check', {str(SHIPPED_RULES)!r}])\n"
        f"loaded = [m for m in {DAEMON_ONLY!r} if m in sys.modules]\n"
        "print(code, ','.join(loaded) or 'none')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines()[-1] == "0 none", done.stdout + done.stderr


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_command_module_but_run_imports_the_daemon() -> None:
    importers = sorted(path.name for path in CLI.glob("*.py") if "sensord.app" in imported(path))
    assert importers == ["daemon.py"]
