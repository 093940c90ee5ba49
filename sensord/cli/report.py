"""``sensord report sla --from DATE --to DATE --by worker|org|area``: SLA per group.

Over the work orders created in ``[--from, --to)`` (UTC dates): orders
handled and cancelled, median and p90 seconds from dispatch to ack, arrival
and resolution, SLA compliance, escalations and reopen rate, per group and in
total. The definitions are in ``sensord.core.orders.report``; the SQL in
``adapters/order_report``. Exit status: 0 written; 1 the database failed; 2
bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sensord import exits
from sensord.cli.common import ArgumentInvalid, connect, guarded, when
from sensord.config import Settings
from sensord.core.orders.lifecycle import PHASES
from sensord.core.orders.report import GROUPINGS, Grouping, GroupStats, sla_report

NAME = "report"
FORMATS = ("markdown", "csv")


def register(subparsers: Any) -> None:
    """Add ``report`` with its subcommands to the ``sensord`` subparsers."""
    report = subparsers.add_parser(NAME, help="reports over work orders")
    sub = report.add_subparsers(dest="report_command", required=True)
    sla = sub.add_parser(
        "sla", help="SLA per worker, organisation or area over orders created in [--from, --to)"
    )
    sla.add_argument(
        "--from", dest="start", required=True, type=_date, metavar="DATE", help="YYYY-MM-DD (UTC)"
    )
    sla.add_argument(
        "--to",
        dest="end",
        required=True,
        type=_date,
        metavar="DATE",
        help="YYYY-MM-DD (UTC), exclusive",
    )
    sla.add_argument(
        "--by",
        required=True,
        choices=GROUPINGS,
        help="one row per worker (first to ack), owner organisation or residential area",
    )
    sla.add_argument("--format", choices=FORMATS, default="markdown", help="default: markdown")
    sla.add_argument("--output", type=Path, metavar="FILE", help="write here, not to stdout")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``report sla``; the process exit status."""
    return guarded(
        f"sensord report {args.report_command}", lambda: asyncio.run(_sla(settings, args))
    )


async def _sla(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.order_report import sla_records

    if args.end <= args.start:
        raise ArgumentInvalid("--to must be after --from (--to is exclusive)")
    async with await connect(settings, "sensord-report") as conn, conn.cursor() as cur:
        records = await sla_records(cur, args.start, args.end)
    as_of = datetime.now(UTC)
    groups, totals = sla_report(records, args.by, as_of)
    if args.format == "csv":
        text = sla_csv(args.by, groups, totals)
    else:
        title = (
            f"SLA by {args.by}: orders created {args.start.date()} to {args.end.date()}"
            f" (exclusive), as of {when(as_of)}"
        )
        text = sla_markdown(title, args.by, groups, totals)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return exits.OK


# --- output -----------------------------------------------------------------------


def headers(by: Grouping) -> list[str]:
    """The report's columns (CSV and Markdown alike)."""
    times = [f"{phase}_{stat}_s" for phase in PHASES for stat in ("median", "p90")]
    return [
        by, "handled", "cancelled", *times, "compliant", "non_compliant", "pending",
        "compliance_pct", "escalations", "reopen_rate_pct",
    ]  # fmt: skip


def cells(row: GroupStats, blank: str) -> list[str]:
    """One row's values as text; ``blank`` where there is no value."""
    times = [
        _number(getattr(row.times[phase], stat), blank)
        for phase in PHASES
        for stat in ("median", "p90")
    ]
    return [
        row.group, str(row.handled), str(row.cancelled), *times, str(row.compliant),
        str(row.non_compliant), str(row.pending), _number(row.compliance_pct, blank),
        str(row.escalations), _number(row.reopen_rate_pct, blank),
    ]  # fmt: skip


def sla_csv(by: Grouping, groups: Sequence[GroupStats], totals: GroupStats) -> str:
    """The report as CSV: a header, one line per group, the totals last."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers(by))
    writer.writerows(cells(row, "") for row in [*groups, totals])
    return out.getvalue()


def sla_markdown(title: str, by: Grouping, groups: Sequence[GroupStats], totals: GroupStats) -> str:
    """The report as a Markdown table under a title, the totals row in bold."""
    names = headers(by)
    lines = [
        f"## {title}",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "|".join(["---", *["---:"] * (len(names) - 1)]) + "|",
    ]
    for row in groups:
        lines.append("| " + " | ".join(_escape(cell) for cell in cells(row, "-")) + " |")
    lines.append("| " + " | ".join(f"**{_escape(cell)}**" for cell in cells(totals, "-")) + " |")
    lines += [
        "",
        "Times: seconds from the first dispatch to the first ack, arrival and resolution."
        " compliance_pct = compliant / (compliant + non_compliant); pending orders (open, no"
        " deadline missed yet) and cancelled ones are not judged.",
    ]
    return "\n".join(lines) + "\n"


def _number(value: float | None, blank: str) -> str:
    if value is None:
        return blank
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def _date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None
