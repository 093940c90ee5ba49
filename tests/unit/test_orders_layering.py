"""The work-order services hold no SQL: every statement is a named query in the adapters.

(The project-wide layering test covers all of ``sensord``; this one guards the rooms
of the work orders, where statements used to be passed around as fragments.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SENSORD = Path(__file__).resolve().parents[2] / "sensord"
SERVICES = [
    SENSORD / "services" / f"{name}.py" for name in ("dispatcher", "order_actions", "outbox")
]
CORE = sorted((SENSORD / "core" / "orders").glob("*.py"))
SQL = re.compile(
    r"\b(SELECT\b.+\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|FOR\s+UPDATE"
    r"|ORDER\s+BY|WHERE\s+\w+\s*(=|<|>|IS|IN))",
    re.S,
)


def sql_strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and SQL.search(node.value)
    ]


@pytest.mark.parametrize("path", SERVICES + CORE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_sql_text(path: Path) -> None:
    assert sql_strings(path) == []


def test_the_check_sees_sql() -> None:
    store = SENSORD / "adapters" / "order_queries.py"
    assert any("FOR UPDATE SKIP LOCKED" in s for s in sql_strings(store))
