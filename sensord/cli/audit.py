"""``sensord audit verify``: recompute the audit chains, name the first row edited or deleted.

The chains are built by the database (migrations/0007); the queries are
``adapters/audit_queries``, the check ``core/audit``. Exit status: 0 every
chain holds; 1 a chain is broken, or the database failed; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from sensord import exits
from sensord.cli.common import ArgumentInvalid, connect, guarded, print_json
from sensord.config import Settings

NAME = "audit"
TABLES = ("work_order_events", "alert_events")


def register(subparsers: Any) -> None:
    """Add ``audit verify`` to the ``sensord`` subparsers."""
    audit = subparsers.add_parser(NAME, help="check the audit trail's hash chains")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser(
        "verify", help="recompute every chain; exit 1 naming the first row edited or deleted"
    )
    verify.add_argument(
        "--table", choices=TABLES, action="append", help="only this table (repeatable)"
    )
    verify.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="TABLE:SEQ:HASH",
        help="a head printed by an earlier verify and kept elsewhere: it must still be in the"
        " chain (catches a chain rebuilt by the schema owner)",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable result")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Verify the chains; the process exit status."""
    return guarded("sensord audit verify", lambda: asyncio.run(_verify(settings, args)))


def _anchors(heads: list[str]) -> dict[str, dict[int, bytes]]:
    found: dict[str, dict[int, bytes]] = {}
    for text in heads:
        table, _, rest = text.partition(":")
        seq, _, digest = rest.partition(":")
        try:
            if table not in TABLES:
                raise ValueError(table)
            found.setdefault(table, {})[int(seq)] = bytes.fromhex(digest)
        except ValueError:
            raise ArgumentInvalid(
                f"--head {text!r}: expected TABLE:SEQ:HASH, TABLE one of {', '.join(TABLES)}"
            ) from None
    return found


async def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from psycopg import IsolationLevel

    from sensord.adapters.audit_queries import CHAINED, chain_head, chain_links
    from sensord.core.audit import ChainWalk

    anchors = _anchors(args.head)
    results: list[dict[str, Any]] = []
    async with await connect(settings, "sensord-audit") as conn:
        # One snapshot for a table's head and its rows, while instances keep appending.
        await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        for table in CHAINED:
            if args.table and table not in args.table:
                continue
            async with conn.transaction():
                walk = ChainWalk(anchors.get(table))
                broken = None
                async for link in chain_links(conn, table):
                    broken = walk.add(link)
                    if broken:
                        break
                if broken is None:
                    broken = walk.finish(*await chain_head(conn, table))
            results.append(
                {
                    "table": table,
                    "intact": broken is None,
                    "rows": walk.rows,
                    "head": f"{table}:{walk.last_seq}:{walk.last_hash.hex()}",
                    "broken_at": None
                    if broken is None
                    else {
                        "chain_seq": broken.chain_seq,
                        "row_id": broken.row_id,
                        "reason": broken.reason,
                    },
                }
            )
    if args.json:
        print_json(results)
    for result in results:
        if result["intact"]:
            if not args.json:
                print(f"{result['table']}: intact, {result['rows']} rows, head {result['head']}")
            continue
        where = result["broken_at"]
        print(
            f"sensord audit verify: {result['table']}: BROKEN at chain position "
            f"{where['chain_seq']}: {where['reason']}",
            file=sys.stderr,
        )
    return exits.OK if all(result["intact"] for result in results) else exits.FAILED
