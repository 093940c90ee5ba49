"""``sensord alerts list|ack|clear``: alerts by hand.

The SQL is ``adapters/alert_queries``. Exit status: 0 done; 1 refused (unknown
id, an alert not in a state the command applies to) or the database failed;
2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from sensord import exits
from sensord.cli.common import (
    as_json,
    connect,
    guarded,
    login_name,
    nonblank,
    positive,
    print_json,
    table,
    when,
)
from sensord.config import Settings

if TYPE_CHECKING:
    from sensord.adapters.alert_queries import AlertRow

NAME = "alerts"
ALERT_STATES = ("open", "firing", "acknowledged", "cleared", "all")
Handler = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def register(subparsers: Any) -> None:
    """Add ``alerts`` and its subcommands to the ``sensord`` subparsers."""
    alerts = subparsers.add_parser(NAME, help="list, acknowledge and clear alerts")
    sub = alerts.add_subparsers(dest="alerts_command", required=True)
    listing = sub.add_parser("list", help="alerts, the most recently seen first")
    listing.add_argument(
        "--state",
        choices=ALERT_STATES,
        default="open",
        help="which alerts (default: open = firing or acknowledged)",
    )
    listing.add_argument("--limit", type=positive, default=100, help="at most this many")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    ack = sub.add_parser("ack", help="acknowledge a firing alert")
    ack.add_argument("alert_id", metavar="ID", type=int)
    ack.add_argument("--by", required=True, type=nonblank("--by"), help="who acknowledges")
    clear = sub.add_parser("clear", help="clear an open alert by hand")
    clear.add_argument("alert_id", metavar="ID", type=int)
    clear.add_argument("--reason", required=True, type=nonblank("--reason"), help="why")
    clear.add_argument("--by", type=nonblank("--by"), help="who clears (default: the login name)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen ``alerts`` subcommand; the process exit status."""
    from sensord.adapters.alert_queries import Refused

    handlers: dict[str, Handler] = {"list": _list, "ack": _ack, "clear": _clear}
    handler = handlers[args.alerts_command]
    return guarded(
        f"sensord alerts {args.alerts_command}",
        lambda: asyncio.run(handler(settings, args)),
        (Refused,),
    )


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.alert_queries import list_alerts

    async with await connect(settings, "sensord-alerts") as conn:
        alerts = await list_alerts(conn, args.state, args.limit)
    if args.json:
        print_json([as_json(alert) for alert in alerts])
    elif not alerts:
        print(f"no {'' if args.state == 'all' else args.state + ' '}alerts")
    else:
        print(alert_table(alerts))
    return exits.OK


async def _ack(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.alert_queries import acknowledge

    async with await connect(settings, "sensord-alerts") as conn:
        alert = await acknowledge(conn, args.alert_id, args.by)
    print(f"alert {alert.id} ({alert.rule} {alert.subject}) acknowledged by {args.by}")
    return exits.OK


async def _clear(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.alert_queries import clear, condition_still_holds

    by = args.by or login_name()
    async with await connect(settings, "sensord-alerts") as conn:
        alert = await clear(conn, args.alert_id, args.reason, by)
        holds = await condition_still_holds(conn, alert.rule, alert.subject)
    print(f"alert {alert.id} ({alert.rule} {alert.subject}) cleared by {by}: {args.reason}")
    if holds:
        print(
            f"note: {alert.rule} still held for {alert.subject} at the last evaluation; it "
            "raises a new alert only after its condition clears and holds again",
            file=sys.stderr,
        )
    return exits.OK


# --- output -----------------------------------------------------------------------


def alert_table(alerts: Sequence[AlertRow]) -> str:
    """Alerts as an aligned table for a terminal."""
    rows = [
        [
            str(a.id),
            a.state,
            a.severity,
            a.rule,
            a.subject,
            str(a.count),
            when(a.first_seen),
            when(a.last_seen),
            _alert_note(a),
        ]
        for a in alerts
    ]
    headers = ["ID", "STATE", "SEVERITY", "RULE", "SUBJECT", "COUNT", "FIRST SEEN", "LAST SEEN"]
    return table([*headers, "NOTE"], rows, right={0, 5})


def _alert_note(alert: AlertRow) -> str:
    notes = ["safety"] if alert.safety else []
    if alert.silenced_by is not None:
        notes.append(f"silenced by {alert.silenced_by}")
    if alert.acknowledged_by:
        notes.append(f"ack {alert.acknowledged_by}")
    if alert.clear_reason:
        notes.append(f"cleared: {alert.clear_reason}")
    return "; ".join(notes)
