"""The rooms of sensord and what each may import (docs/architecture.md), checked on the source.

Read with ``ast``, never imported: the check is about the text that ships.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sensord"

# The pure core moves data: no event loop, no sockets or processes, no database, broker,
# HTTP or metrics client, no wall clock and no randomness of its own (time and jitter are
# passed in).
CORE_FORBIDDEN = {
    "asyncio", "socket", "selectors", "ssl", "threading", "subprocess", "multiprocessing",
    "os", "time", "random", "secrets", "urllib", "http", "logging",
    "psycopg", "psycopg_pool", "gmqtt", "paho", "httpx", "prometheus_client", "apscheduler",
}  # fmt: skip
WALL_CLOCK = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("time", "time")}

# What each room of the package may import from the others (besides itself).
ALLOWED = {
    "core": {"core", "errors"},
    "adapters": {"core", "adapters", "errors", "config", "clock", "paths", "retry", "logs"},
    "services": {
        "core", "adapters", "services", "errors", "config", "clock", "paths", "retry", "logs",
    },
}  # fmt: skip

# SQL statements start with one of these words, and fragments passed between layers carry
# clauses like these; outside adapters/ (and migrations/) none may be written. Upper case only:
# docstrings and messages are prose and may say "select" or "update".
SQL = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS|CREATE|ALTER|"
    r"DROP|TRUNCATE|COPY|LISTEN|NOTIFY|UNLISTEN)\b"
    r"|\bSELECT\b.+\bFROM\b|\bFOR\s+UPDATE\b|\bORDER\s+BY\b|\bWHERE\s+\w+\s*(=|<|>|IS\b|IN\b)",
    re.S,
)


def _modules(room: str | None = None) -> Iterator[tuple[Path, ast.Module]]:
    base = PACKAGE / room if room else PACKAGE
    for path in sorted(base.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _docstrings(tree: ast.Module) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{line}"


def test_the_core_does_no_io_and_reads_no_clock() -> None:
    offences = []
    for path, tree in _modules("core"):
        for line, module in _imports(tree):
            if module.split(".")[0] in CORE_FORBIDDEN:
                offences.append(f"{_where(path, line)} imports {module}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in WALL_CLOCK
            ):
                offences.append(f"{_where(path, node.lineno)} reads the clock: {node.attr}")
    assert offences == []


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_the_rooms_below_it(room: str) -> None:
    offences = []
    for path, tree in _modules(room):
        for line, module in _imports(tree):
            parts = module.split(".")
            if parts[0] == "sensord" and len(parts) > 1 and parts[1] not in ALLOWED[room]:
                offences.append(f"{_where(path, line)} imports {module}")
    assert offences == []


def test_only_the_command_line_starts_the_daemon() -> None:
    importers = [
        _where(path, line)
        for path, tree in _modules()
        for line, module in _imports(tree)
        if module == "sensord.app" or (module == "sensord" and _names_app(tree, line))
    ]
    assert all("sensord/cli" in where for where in importers), importers
    assert len(importers) <= 1, importers


def _names_app(tree: ast.Module, line: int) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.lineno == line
        and any(alias.name == "app" for alias in node.names)
        for node in ast.walk(tree)
    )


def test_sql_is_written_only_in_the_adapters() -> None:
    offences = []
    for path, tree in _modules():
        if path.is_relative_to(PACKAGE / "adapters"):
            continue
        prose = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in prose
                and SQL.search(node.value)
            ):
                offences.append(f"{_where(path, node.lineno)}: {node.value.strip()[:40]!r}")
    assert offences == []


def test_the_checks_can_fail() -> None:
    """The patterns above catch what they are for (so a green run means something)."""
    assert SQL.search("\n    SELECT 1") and SQL.search("UPDATE work_orders SET state = %s")
    assert SQL.search("state = 'new' ORDER BY due_at") and SQL.search("WHERE id = %s")
    assert not SQL.search("Select the nearest route") and not SQL.search("update the board")
    sample = ast.parse("import asyncio\nfrom datetime import datetime\nx = datetime.now()\n")
    assert [m for _, m in _imports(sample)] == ["asyncio", "datetime"]


def test_benchmarks_and_simulators_do_not_import_the_tests() -> None:
    root = PACKAGE.parent
    offences = [
        f"{path.relative_to(root)}:{line} imports {module}"
        for folder in ("bench", "simulators")
        for path in sorted((root / folder).rglob("*.py"))
        for line, module in _imports(ast.parse(path.read_text(), str(path)))
        if module.split(".")[0] == "tests"
    ]
    assert offences == []
