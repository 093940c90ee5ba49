"""Work orders read and locked by name: every query the dispatcher, the command path and
the CLI run on ``work_orders``, with typed parameters (no SQL outside the adapters).

The claims take rows ``FOR UPDATE SKIP LOCKED``: several instances share the work
and none handles a row another is handling. Changes are in ``order_store``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import class_row

from sensord.core.orders.commands import Actor
from sensord.core.orders.machine import Order, State
from sensord.core.orders.notices import Recipient
from sensord.core.orders.policy import Deadlines
from sensord.core.rules.model import Severity


@dataclass(frozen=True, slots=True)
class OrderRow:
    """A row of ``work_orders``."""

    id: int
    alert_id: int
    alert_episode: int
    rule: str
    subject: str
    category: str
    severity: str
    street_id: str | None
    device_id: str | None
    address_id: str | None
    area_id: str | None
    place: dict[str, Any]
    state: str
    owner_role: str
    owner_org: str | None
    owner_staff: str | None
    unrouted: bool
    notified: list[dict[str, Any]]
    escalation_level: int
    resolved_by_role: str | None
    sla_ack_s: int
    sla_arrive_s: int
    sla_resolve_s: int
    verify_hold_s: int
    due_phase: str | None
    due_at: datetime | None
    created_at: datetime
    dispatched_at: datetime | None
    acknowledged_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None
    verified_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None
    reopen_count: int
    updated_at: datetime

    @property
    def deadlines(self) -> Deadlines:
        """The SLA fixed at creation."""
        return Deadlines(self.sla_ack_s, self.sla_arrive_s, self.sla_resolve_s, self.verify_hold_s)

    def machine(self) -> Order:
        """The state-machine view of the row."""
        return Order(self.id, State(self.state), self.escalation_level, self.resolved_by_role)

    def public(self) -> dict[str, Any]:
        """The order as ``--json`` and notifications show it (no personal data)."""
        return {
            "id": self.id,
            "state": self.state,
            "category": self.category,
            "severity": self.severity,
            "owner_org": self.owner_org,
            "owner_role": self.owner_role,
            "owner_staff": self.owner_staff,
            "unrouted": self.unrouted,
            "alert_id": self.alert_id,
            "device_id": self.device_id,
            "address_id": self.address_id,
            "street_id": self.street_id,
            "place": self.place,
            "deadline": self.due_at.isoformat() if self.due_at else None,
            "deadline_phase": self.due_phase,
            "escalation_level": self.escalation_level,
            "reopen_count": self.reopen_count,
            "created_at": self.created_at.isoformat(),
        }

    def parties(self) -> list[Recipient]:
        """The owner, then every notified party."""
        owner = Recipient(self.owner_role, self.owner_org, self.owner_staff, "owner")
        notified = [
            Recipient(p["role"], p.get("org_id"), p.get("staff_id"), "notified")
            for p in self.notified
            if p.get("org_id") != self.owner_org
        ]
        return [owner, *notified]


COLUMNS = ", ".join(f.name for f in fields(OrderRow))


async def fetch_orders(
    cur: AsyncCursor[Any], where: str, params: Sequence[Any] | Mapping[str, Any]
) -> list[OrderRow]:
    """Orders matching a WHERE clause written in the adapters (never by a user, never
    passed in by a service)."""
    async with cur.connection.cursor(row_factory=class_row(OrderRow)) as typed:
        await typed.execute(f"SELECT {COLUMNS} FROM work_orders WHERE {where}", params)
        return await typed.fetchall()


async def load_order(
    cur: AsyncCursor[Any], order_id: int, *, lock: bool = False
) -> OrderRow | None:
    """One order, locked FOR UPDATE when ``lock``."""
    found = await fetch_orders(cur, "id = %s" + (" FOR UPDATE" if lock else ""), (order_id,))
    return found[0] if found else None


async def lock_latest_order(cur: AsyncCursor[Any], rule: str, subject: str) -> OrderRow | None:
    """The latest order of (rule, subject), locked FOR UPDATE (waits for another instance)."""
    found = await fetch_orders(
        cur, "rule = %s AND subject = %s ORDER BY id DESC LIMIT 1 FOR UPDATE", (rule, subject)
    )
    return found[0] if found else None


async def claim_due_orders(cur: AsyncCursor[Any], now: datetime, limit: int) -> list[OrderRow]:
    """Up to ``limit`` orders whose deadline is at or before ``now``, earliest first."""
    return await fetch_orders(
        cur, "due_at <= %s ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED", (now, limit)
    )


async def claim_verifiable_orders(
    cur: AsyncCursor[Any], now: datetime, limit: int
) -> list[OrderRow]:
    """Resolved orders whose sensor is back to normal: the alert cleared by its rule (not
    by hand) on a stored reading of the alert's own device, received at least
    ``verify_hold_s`` before ``now`` (server time), not fired since, no newer alert of the
    same rule and subject, and no reading meeting the rule's condition since (``recurred_at``)."""
    return await fetch_orders(
        cur,
        "state = 'resolved' AND EXISTS (SELECT 1 FROM alerts a WHERE a.id = alert_id"
        " AND a.state = 'cleared' AND a.clear_reason = 'condition cleared'"
        " AND a.episode = alert_episode"
        " AND a.cleared_at <= %s - make_interval(secs => verify_hold_s)"
        " AND a.recurred_at IS NULL AND a.clear_device_id = a.device_id"
        # The problem came back as a new alert of the same pair (a rule with no cooldown
        # fires afresh): the order is reopened when that alert is dispatched, never verified.
        " AND NOT EXISTS (SELECT 1 FROM alerts n WHERE n.rule = a.rule"
        " AND n.subject = a.subject AND n.id > a.id)"
        " AND EXISTS (SELECT 1 FROM readings r WHERE r.device_id = a.clear_device_id"
        " AND r.ts = a.clear_ts AND r.seq = a.clear_seq))"
        " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
        (now, limit),
    )


async def next_deadline(cur: AsyncCursor[Any]) -> datetime | None:
    """The earliest ``due_at`` of any order, None when nothing is due."""
    await cur.execute("SELECT min(due_at) FROM work_orders WHERE due_at IS NOT NULL")
    row = await cur.fetchone()
    return row[0] if row is not None else None


async def order_counts(
    cur: AsyncCursor[Any], overdue_before: datetime
) -> tuple[dict[str, int], int]:
    """Orders per state, and how many have a deadline earlier than ``overdue_before``."""
    await cur.execute("SELECT state, count(*) FROM work_orders GROUP BY state")
    by_state: dict[str, int] = dict(await cur.fetchall())
    await cur.execute("SELECT count(*) FROM work_orders WHERE due_at < %s", (overdue_before,))
    overdue = (await cur.fetchone() or (0,))[0]
    return by_state, overdue


async def alert_is_safety(cur: AsyncCursor[Any], alert_id: int) -> bool:
    """Whether the alert behind an order was raised by a safety rule."""
    await cur.execute("SELECT safety FROM alerts WHERE id = %s", (alert_id,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def request_seen(
    cur: AsyncCursor[Any], order_id: int, request_id: str, actor: str
) -> bool:
    """Whether ``actor``'s command with ``request_id`` was already applied to the order."""
    await cur.execute(
        "SELECT 1 FROM work_order_events WHERE order_id = %s AND detail->>'request_id' = %s"
        " AND actor = %s",
        (order_id, request_id, actor),
    )
    return await cur.fetchone() is not None


async def find_actor(cur: AsyncCursor[Any], staff_id: str) -> Actor | None:
    """A member of staff and their organisation, from the registry."""
    await cur.execute(
        "SELECT s.staff_id, s.org_id, o.org_type, s.role FROM staff s"
        " JOIN organisations o USING (org_id) WHERE s.staff_id = %s",
        (staff_id,),
    )
    row = await cur.fetchone()
    return Actor(*row) if row else None


# --- the dispatcher's side of alerts


@dataclass(frozen=True, slots=True)
class UndispatchedAlert:
    """An alert whose firing episode has not been dispatched yet."""

    id: int
    rule: str
    category: str
    severity: Severity
    subject: str
    device_id: str | None
    address_id: str | None
    episode: int
    silenced: bool


async def claim_undispatched_alerts(cur: AsyncCursor[Any], limit: int) -> list[UndispatchedAlert]:
    """Up to ``limit`` alerts with an episode not dispatched yet, oldest first."""
    await cur.execute(
        "SELECT id, rule, category, severity, subject, device_id, address_id, episode,"
        " silenced_by IS NOT NULL FROM alerts WHERE dispatched_episode < episode"
        " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    return [UndispatchedAlert(*row) for row in await cur.fetchall()]


async def mark_dispatched(cur: AsyncCursor[Any], alert: UndispatchedAlert) -> None:
    """The alert's current episode is dispatched (an order, an attachment, or a silence)."""
    await cur.execute(
        "UPDATE alerts SET dispatched_episode = %s WHERE id = %s", (alert.episode, alert.id)
    )
