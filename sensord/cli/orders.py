"""``sensord orders list|show|ack|arrive|resolve|verify|cancel|reopen``: work orders by hand.

People's events go through ``services.order_actions.act``, the path the MQTT
command topic takes too: the state machine validates them, the audit trail
and the outbox get their rows in the same transaction, and the daemon's
outbox relay delivers the notifications afterwards. Exit status: 0 done; 1
refused (no such order, an event the order's state does not allow — the
message names the state and the allowed events —, a cancel without a reason,
verification in the resolver's role) or the database failed; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sensord import exits
from sensord.cli.common import (
    as_json,
    connect,
    guarded,
    nonblank,
    positive,
    print_json,
    table,
    when,
)
from sensord.config import Settings
from sensord.core.orders.machine import Event, State

if TYPE_CHECKING:
    from sensord.adapters.order_queries import OrderRow
    from sensord.adapters.order_report import EventRow, OutboxRow

NAME = "orders"
ORDER_STATES = ("open", "all", *(state.value for state in State))
DEFAULT_ROLE = "operator"  # the role of a --by who is not staff in the registry
ACTIONS = {
    "ack": (Event.ACK, "acknowledge a dispatched order"),
    "arrive": (Event.ARRIVE, "report arrival on site"),
    "resolve": (Event.RESOLVE, "report the problem resolved"),
    "verify": (Event.VERIFY, "verify a resolved order (not in the resolver's role); closes it"),
    "cancel": (Event.CANCEL, "cancel an open order (a false alarm); --note is the reason"),
    "reopen": (Event.REOPEN, "reopen a resolved, verified or closed order; dispatches it again"),
}
Handler = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def register(subparsers: Any) -> None:
    """Add ``orders`` with its subcommands to the ``sensord`` subparsers."""
    orders = subparsers.add_parser(NAME, help="list, show and act on work orders")
    sub = orders.add_subparsers(dest="orders_command", required=True)
    listing = sub.add_parser("list", help="work orders, the most recently changed first")
    listing.add_argument(
        "--state",
        choices=ORDER_STATES,
        default="open",
        help="which orders (default: open = not closed or cancelled)",
    )
    listing.add_argument("--org", help="owned by this organisation")
    listing.add_argument(
        "--category", help="of this alert category (fire, elevator_entrapment, ...)"
    )
    listing.add_argument("--limit", type=positive, default=100, help="at most this many")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    show = sub.add_parser("show", help="one order with its audit trail and notifications")
    show.add_argument("order_id", metavar="ID", type=int)
    show.add_argument("--json", action="store_true", help="print as JSON")
    for name, (_, help_text) in ACTIONS.items():
        action = sub.add_parser(name, help=help_text)
        action.add_argument("order_id", metavar="ID", type=int)
        action.add_argument("--by", required=True, type=nonblank("--by"), help="who (a staff id)")
        action.add_argument(
            "--role",
            type=nonblank("--role"),
            help=f"acting role (default: the staff member's role, else {DEFAULT_ROLE})",
        )
        action.add_argument(
            "--note",
            default="",
            help="a note for the audit trail" + (" (required: the reason)" * (name == "cancel")),
        )
        action.add_argument("--json", action="store_true", help="print the order as JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen ``orders`` subcommand; the process exit status."""
    from sensord.core.orders.machine import TransitionError
    from sensord.services.order_actions import OrderNotFound

    handler: Handler = {"list": _list, "show": _show}.get(args.orders_command, _act)
    return guarded(
        f"sensord orders {args.orders_command}",
        lambda: asyncio.run(handler(settings, args)),
        refused=(TransitionError, OrderNotFound),
    )


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.order_report import list_orders

    async with await connect(settings, "sensord-orders") as conn, conn.cursor() as cur:
        orders = await list_orders(cur, args.state, args.org, args.category, args.limit)
    if args.json:
        print_json([order.public() for order in orders])
    elif not orders:
        print(f"no {'' if args.state == 'all' else args.state + ' '}orders")
    else:
        print(order_table(orders))
    return exits.OK


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.order_queries import load_order
    from sensord.adapters.order_report import order_history
    from sensord.services.order_actions import OrderNotFound

    async with await connect(settings, "sensord-orders") as conn, conn.cursor() as cur:
        order = await load_order(cur, args.order_id)
        if order is None:
            raise OrderNotFound(f"order {args.order_id} does not exist")
        events, outbox = await order_history(cur, order.id)
    if args.json:
        print_json(
            {
                **order.public(),
                "events": [as_json(event) for event in events],
                "outbox": [as_json(message) for message in outbox],
            }
        )
    else:
        print(describe(order, events, outbox))
    return exits.OK


async def _act(settings: Settings, args: argparse.Namespace) -> int:
    from sensord.adapters.order_store import Changes, Outlets
    from sensord.services.order_actions import act, find_actor

    event, _ = ACTIONS[args.orders_command]
    outlets = Outlets.from_settings(settings)
    changes = Changes()
    async with (
        await connect(settings, "sensord-orders") as conn,
        conn.transaction(),
        conn.cursor() as cur,
    ):
        role = args.role
        if role is None:
            staff = await find_actor(cur, args.by)
            role = staff.role if staff else DEFAULT_ROLE
        order = await act(
            cur, args.order_id, event, by=args.by, role=role, note=args.note.strip(),
            now=datetime.now(UTC), outlets=outlets, changes=changes,
        )  # fmt: skip
    if args.json:
        print_json(order.public())
        return exits.OK
    print(f"order {order.id} {order.state} ({event.value} by {args.by} as {role})")
    if order.due_at is not None:
        print(f"next deadline: {order.due_phase} by {when(order.due_at)}")
    print(f"{changes.notices} notifications queued")
    return exits.OK


# --- output -----------------------------------------------------------------------


def order_table(orders: Sequence[OrderRow]) -> str:
    """Orders as an aligned table for a terminal."""
    rows = [
        [
            str(o.id),
            o.state,
            o.category,
            o.severity,
            _owner(o),
            f"{o.due_phase} {when(o.due_at)}" if o.due_at else "-",
            str(o.escalation_level),
            o.device_id or "-",
        ]
        for o in orders
    ]
    headers = ["ID", "STATE", "CATEGORY", "SEVERITY", "OWNER", "DEADLINE", "LEVEL", "DEVICE"]
    return table(headers, rows, right={0, 6})


def describe(order: OrderRow, events: Sequence[EventRow], outbox: Sequence[OutboxRow]) -> str:
    """One order, its audit trail and its notifications, for a terminal."""
    deadline = f"{order.due_phase} by {when(order.due_at)}" if order.due_at else "none"
    place = order.place.get("label") or order.address_id or "-"
    lines = [
        f"order {order.id}: {order.state}  {order.category} {order.severity}",
        f"owner:      {_owner(order)} ({order.owner_role}"
        f"{', staff ' + order.owner_staff if order.owner_staff else ''})",
        f"alert:      {order.alert_id} ({order.rule} {order.subject})",
        f"place:      {place}; device {order.device_id or '-'}; street {order.street_id or '-'}",
        f"deadline:   {deadline}; escalation level {order.escalation_level}",
        f"created:    {when(order.created_at)}; reopen count {order.reopen_count}",
        "",
        "audit trail:",
        table(
            ["AT", "ACTOR", "ROLE", "EVENT", "FROM → TO", "NOTE"],
            [
                [
                    when(e.at),
                    e.actor,
                    e.role,
                    e.event,
                    f"{e.from_state or '-'} → {e.to_state}",
                    e.note,
                ]
                for e in events
            ],
            right=set(),
        ),
        "",
        "outbox:",
    ]
    if outbox:
        lines.append(
            table(
                ["ID", "QUEUED", "CHANNEL", "DESTINATION", "SENT", "ATTEMPTS", "LAST ERROR"],
                [
                    [
                        str(m.id),
                        when(m.created_at),
                        m.channel,
                        m.destination,
                        when(m.sent_at) if m.sent_at else "pending",
                        str(m.attempts),
                        m.last_error or "",
                    ]
                    for m in outbox
                ],
                right={0, 5},
            )
        )
    else:
        lines.append("(no notifications)")
    return "\n".join(lines)


def _owner(order: OrderRow) -> str:
    owner = order.owner_org or order.owner_role
    return f"{owner} (unrouted)" if order.unrouted else owner
