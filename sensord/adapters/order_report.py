"""Reading work orders for people: the SQL of ``sensord orders list|show`` and of the
SLA report's records (``sensord report sla``; its statistics: core/orders/report).

Read-only; changes to orders go through ``services.order_actions.act``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from psycopg import AsyncCursor
from psycopg.rows import class_row

from sensord.adapters.order_queries import OrderRow, fetch_orders
from sensord.core.orders.report import OrderTimes

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class EventRow:
    """One entry of an order's audit trail."""

    id: int
    at: datetime
    actor: str
    role: str
    event: str
    from_state: str | None
    to_state: str
    note: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One notification queued for an order, and how its delivery went."""

    id: int
    created_at: datetime
    channel: str
    destination: str
    sent_at: datetime | None
    attempts: int
    last_error: str | None


async def list_orders(
    cur: AsyncCursor[Any], state: str, org: str | None, category: str | None, limit: int
) -> list[OrderRow]:
    """Orders in ``state`` ("open": not closed or cancelled; "all"), latest change first."""
    clauses = []
    if state == "open":
        clauses.append("state NOT IN ('closed', 'cancelled')")
    elif state != "all":
        clauses.append("state = %(state)s")
    if org is not None:
        clauses.append("owner_org = %(org)s")
    if category is not None:
        clauses.append("category = %(category)s")
    where = " AND ".join(clauses) or "true"
    return await fetch_orders(
        cur,
        f"{where} ORDER BY updated_at DESC, id DESC LIMIT %(limit)s",
        {"state": state, "org": org, "category": category, "limit": limit},
    )


async def order_history(
    cur: AsyncCursor[Any], order_id: int
) -> tuple[list[EventRow], list[OutboxRow]]:
    """The order's audit trail and the notifications queued for it, oldest first."""
    where = "WHERE order_id = %s ORDER BY id"
    events = await _fetch(
        cur,
        EventRow,
        "SELECT id, at, actor, role, event, from_state, to_state, note, detail"
        f" FROM work_order_events {where}",
        (order_id,),
    )
    outbox = await _fetch(
        cur,
        OutboxRow,
        "SELECT id, created_at, channel, destination, sent_at, attempts, last_error"
        f" FROM outbox {where}",
        (order_id,),
    )
    return events, outbox


# The first dispatch, ack, arrival and resolution of each order, the actor of the first
# ack, its escalations, and the area's name from the registry.
_SLA_RECORDS = """
SELECT o.id AS order_id, o.state, o.created_at,
       e.dispatched_at, e.ack_at, e.arrive_at, e.resolve_at,
       o.sla_ack_s, o.sla_arrive_s, o.sla_resolve_s, o.due_at,
       e.escalations, o.reopen_count,
       coalesce(o.owner_org, '-') AS org,
       coalesce(e.worker, '-') AS worker,
       coalesce(o.area_id || coalesce(' ' || g.name, ''), '-') AS area
FROM work_orders o
CROSS JOIN LATERAL (
    SELECT min(at) FILTER (WHERE event = 'dispatch') AS dispatched_at,
           min(at) FILTER (WHERE event = 'ack') AS ack_at,
           min(at) FILTER (WHERE event = 'arrive') AS arrive_at,
           min(at) FILTER (WHERE event = 'resolve') AS resolve_at,
           (array_agg(actor ORDER BY at, id) FILTER (WHERE event = 'ack'))[1] AS worker,
           count(*) FILTER (WHERE event = 'escalate')::int AS escalations
    FROM work_order_events WHERE order_id = o.id
) e
LEFT JOIN grid_units g ON g.grid_id = o.area_id AND g.level = 'residential_area'
WHERE o.created_at >= %s AND o.created_at < %s
ORDER BY o.id
"""


async def sla_records(cur: AsyncCursor[Any], start: datetime, end: datetime) -> list[OrderTimes]:
    """The report's record of every order created in ``[start, end)``."""
    return await _fetch(cur, OrderTimes, _SLA_RECORDS, (start, end))


async def _fetch(
    cur: AsyncCursor[Any], row: type[Row], query: str, params: Sequence[Any]
) -> list[Row]:
    async with cur.connection.cursor(row_factory=class_row(row)) as typed:
        await typed.execute(query, params)
        return await typed.fetchall()
