"""What the operator commands share: exit codes on refusals and database trouble, argument
types, and plain-text tables."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sensord.config import Settings

if TYPE_CHECKING:
    import psycopg


def guarded(
    prog: str, command: Callable[[], int], refused: tuple[type[Exception], ...] = ()
) -> int:
    """Run ``command``; a refusal or a database that is behind or unreachable: exit 1."""
    import psycopg

    try:
        return command()
    except refused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        print(f"{prog}: the database schema is behind; run `sensord migrate`", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"{prog}: cannot reach the database: {exc}", file=sys.stderr)
        return 1


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Columns padded to their widest cell; ``right``: indexes of right-aligned columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for cells in [headers, *rows]:
        padded = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def when(value: datetime) -> str:
    """A time for people: seconds, space-separated."""
    return value.isoformat(sep=" ", timespec="seconds")


def positive(text: str) -> int:
    """An argparse type: a whole number, at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def nonblank(option: str) -> Callable[[str], str]:
    """An argparse type for ``option``: text that is not blank, stripped."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{option} must not be empty")
        return text.strip()

    return parse


def as_json(row: Any) -> dict[str, Any]:
    """A dataclass row as JSON-able data, times in ISO 8601."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in dataclasses.asdict(row).items()
    }


def print_json(data: object) -> None:
    """JSON for machines, as every ``--json`` prints it."""
    print(json.dumps(data, indent=2, ensure_ascii=False))


async def connect(settings: Settings, application: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection for one command (``conn.transaction()`` for changes)."""
    import psycopg

    from sensord.adapters.database import conninfo

    return await psycopg.AsyncConnection.connect(
        conninfo(settings.database, application), autocommit=True
    )
