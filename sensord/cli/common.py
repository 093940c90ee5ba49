"""What the operator commands share: the one mapping from errors to exit codes, the one
database connection, argument types, plain-text tables and JSON output."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sensord import exits
from sensord.config import Settings
from sensord.errors import SensordError

if TYPE_CHECKING:
    import psycopg

SCHEMA_BEHIND = "the database schema is behind; run `sensord migrate`"


class ArgumentInvalid(SensordError):
    """A value the parser accepted as text but that does not make sense (exit 2)."""


def guarded(
    prog: str,
    command: Callable[[], int],
    refused: tuple[type[Exception], ...] = (),
    *,
    schema_behind: str = SCHEMA_BEHIND,
) -> int:
    """Run ``command``; the one place an error becomes an exit status and a message.

    Invalid arguments: exit 2 (USAGE). A refusal (``refused``), or a database that is
    behind (``schema_behind`` says what to do) or unreachable: exit 1 (FAILED).
    """
    import psycopg

    try:
        return command()
    except ArgumentInvalid as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exits.USAGE
    except refused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exits.FAILED
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        print(f"{prog}: {schema_behind}", file=sys.stderr)
        return exits.FAILED
    except psycopg.OperationalError as exc:
        print(f"{prog}: cannot reach the database: {exc}", file=sys.stderr)
        return exits.FAILED


# One connection convention for every command: async. The order commands must call the
# daemon's own async code (the order store and `services.order_actions.act`, the one action
# path the MQTT commands take too), and the console and API that come next are async; so the
# alert and silence queries are async as well, and each command is one `asyncio.run`. The
# registry and migrations are whole-file jobs whose adapters own their single transaction:
# they are handed a conninfo instead.
async def connect(settings: Settings, application: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection for one command (``conn.transaction()`` for changes)."""
    import psycopg

    from sensord.adapters.database import conninfo

    return await psycopg.AsyncConnection.connect(
        conninfo(settings.database, application), autocommit=True
    )


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


def login_name() -> str:
    """Who runs the command, when they did not say."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        return "operator"
