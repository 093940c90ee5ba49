"""Work orders changed in the database: every change validated by the pure state machine,
audited in ``work_order_events`` and announced through the ``outbox``, all in the
caller's transaction — an order change and its notifications commit together.

Reads and claims are in ``order_queries``, the outbox's own statements in
``outbox_store``; the rules (transitions, follow-ups, channels) in ``core/orders``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import class_row

from sensord.adapters.order_queries import COLUMNS, OrderRow
from sensord.adapters.outbox_store import Queued, enqueue
from sensord.config import Settings
from sensord.core.orders.lifecycle import Due, due_after
from sensord.core.orders.machine import Event, State, apply, follow_up
from sensord.core.orders.notices import (
    Contact,
    Recipient,
    deliveries,
    message_id,
    order_notice,
)
from sensord.core.orders.policy import Deadlines
from sensord.core.orders.routing import Party

SYSTEM = "sensord"  # actor and role of the daemon's own steps


@dataclass(frozen=True, slots=True)
class Outlets:
    """Where notifications go: the MQTT topic prefix, and organisations with a webhook."""

    prefix: str
    webhook_orgs: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> Outlets:
        """As configured: the daemon and the CLI must queue the same notifications."""
        return cls(settings.mqtt.topic_prefix, frozenset(settings.dispatch.webhooks))


@dataclass
class Changes:
    """What a transaction did to orders, counted into metrics only after it commits."""

    created: Counter[tuple[str, str]] = field(default_factory=Counter)  # (category, severity)
    transitions: Counter[str] = field(default_factory=Counter)  # event
    escalations: Counter[int] = field(default_factory=Counter)  # new level
    breaches: Counter[str] = field(default_factory=Counter)  # phase
    late_s: list[float] = field(default_factory=list)  # how late each escalation was
    notices: int = 0


@dataclass(frozen=True, slots=True)
class NewOrder:
    """What the dispatcher decided for a new order."""

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
    place: Mapping[str, Any]
    owner: Party
    notified: tuple[Party, ...]
    unrouted: bool
    deadlines: Deadlines


async def create_order(
    cur: AsyncCursor[Any], new: NewOrder, now: datetime, outlets: Outlets, changes: Changes
) -> OrderRow:
    """Insert a new order and dispatch it to its owner and notified parties at once."""
    notified = [{"role": p.role, "org_id": p.org_id, "staff_id": p.staff_id} for p in new.notified]
    d = new.deadlines
    async with cur.connection.cursor(row_factory=class_row(OrderRow)) as typed:
        await typed.execute(
            "INSERT INTO work_orders (alert_id, alert_episode, rule, subject, category, severity,"
            " street_id, device_id, address_id, area_id, place, state, owner_role, owner_org,"
            " owner_staff, unrouted, notified, sla_ack_s, sla_arrive_s, sla_resolve_s,"
            " verify_hold_s, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, 'new', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" RETURNING {COLUMNS}",
            (
                new.alert_id,
                new.alert_episode,
                new.rule,
                new.subject,
                new.category,
                new.severity,
                new.street_id,
                new.device_id,
                new.address_id,
                new.area_id,
                json.dumps(dict(new.place)),
                new.owner.role,
                new.owner.org_id,
                new.owner.staff_id,
                new.unrouted,
                json.dumps(notified),
                d.ack_s,
                d.arrive_s,
                d.resolve_s,
                d.verify_hold_s,
                now,
                now,
            ),
        )
        order = await typed.fetchone()
    assert order is not None
    note = "unrouted: no owner resolved at the place" if new.unrouted else ""
    await _audit(cur, order.id, now, SYSTEM, SYSTEM, "create", None, State.NEW, note, {})
    changes.created[(new.category, new.severity)] += 1
    return await transition(
        cur, order, Event.DISPATCH, at=now, actor=SYSTEM, role=SYSTEM, note=note,
        outlets=outlets, changes=changes,
    )  # fmt: skip


async def link_alert(
    cur: AsyncCursor[Any], order: OrderRow, alert_id: int, episode: int, now: datetime
) -> OrderRow:
    """Point the order at the alert episode that recurred; the order as it now is."""
    await cur.execute(
        "UPDATE work_orders SET alert_id = %s, alert_episode = %s, updated_at = %s WHERE id = %s",
        (alert_id, episode, now, order.id),
    )
    return replace(order, alert_id=alert_id, alert_episode=episode, updated_at=now)


async def clear_deadline(cur: AsyncCursor[Any], order: OrderRow, now: datetime) -> OrderRow:
    """No deadline left to run (a breach at the top of the chain); the order as it now is."""
    await cur.execute(
        "UPDATE work_orders SET due_phase = NULL, due_at = NULL, updated_at = %s WHERE id = %s",
        (now, order.id),
    )
    return replace(order, due_phase=None, due_at=None, updated_at=now)


# The row's timestamp column each event sets, and the cycle a reopen starts afresh.
_STAMP = {
    Event.DISPATCH: "dispatched_at",
    Event.ACK: "acknowledged_at",
    Event.ARRIVE: "arrived_at",
    Event.RESOLVE: "resolved_at",
    Event.VERIFY: "verified_at",
    Event.CLOSE: "closed_at",
    Event.CANCEL: "cancelled_at",
}
_CYCLE = ("acknowledged_at", "arrived_at", "resolved_at", "verified_at", "closed_at")


async def transition(
    cur: AsyncCursor[Any],
    order: OrderRow,
    event: Event,
    *,
    at: datetime,
    actor: str,
    role: str,
    note: str = "",
    outlets: Outlets,
    changes: Changes,
    due: Due | None = None,
    owner: Party | None = None,
    detail: Mapping[str, Any] | None = None,
) -> OrderRow:
    """Apply ``event`` (TransitionError if the state refuses it), audit it, notify the parties.

    ``due`` overrides the deadline the new state works towards; ``owner``
    hands the order to another party (an escalation).
    """
    moved = apply(order.machine(), event, at=at, actor=actor, role=role, note=note)
    updates: dict[str, Any] = {
        "state": moved.state.value,
        "escalation_level": moved.escalation_level,
        "resolved_by_role": moved.resolved_by_role,
        "updated_at": at,
    }
    if (stamp := _STAMP.get(event)) is not None:
        updates[stamp] = at
    if event is Event.REOPEN:
        updates.update(dict.fromkeys(_CYCLE))
        updates["reopen_count"] = order.reopen_count + 1
    if owner is not None:
        updates.update(owner_role=owner.role, owner_org=owner.org_id, owner_staff=owner.staff_id)
    dispatched_at = at if event is Event.DISPATCH else order.dispatched_at
    if due is None:
        escalated = at if moved.escalation_level and event is not Event.DISPATCH else None
        due = due_after(moved.state, dispatched_at, order.deadlines, escalated)
    updates.update(due_phase=due.phase, due_at=due.at)
    assignments = ", ".join(f"{column} = %s" for column in updates)
    async with cur.connection.cursor(row_factory=class_row(OrderRow)) as typed:
        await typed.execute(
            f"UPDATE work_orders SET {assignments} WHERE id = %s RETURNING {COLUMNS}",
            (*updates.values(), order.id),
        )
        updated = await typed.fetchone()
    assert updated is not None
    event_id = await _audit(
        cur, order.id, at, actor, role, event.value, order.state, moved.state, note, detail or {}
    )
    changes.transitions[event.value] += 1
    extra = []
    if owner is not None and order.owner_org != owner.org_id:
        previous = Recipient(order.owner_role, order.owner_org, order.owner_staff, "previous_owner")
        extra.append(previous)
    await notify(cur, updated, event.value, event_id, at, note, outlets, changes, extra)
    return updated


async def advance(
    cur: AsyncCursor[Any],
    order: OrderRow,
    event: Event,
    *,
    at: datetime,
    actor: str,
    role: str,
    note: str = "",
    outlets: Outlets,
    changes: Changes,
    detail: Mapping[str, Any] | None = None,
) -> OrderRow:
    """``transition``, then the step that follows it at once (``machine.follow_up``:
    verify → close, reopen → dispatch), both audited and announced."""
    moved = await transition(
        cur, order, event, at=at, actor=actor, role=role, note=note,
        outlets=outlets, changes=changes, detail=detail,
    )  # fmt: skip
    then = follow_up(event)
    if then is None:
        return moved
    event, why = then
    return await transition(
        cur, moved, event, at=at, actor=SYSTEM, role=SYSTEM, note=why,
        outlets=outlets, changes=changes,
    )  # fmt: skip


async def record(
    cur: AsyncCursor[Any],
    order: OrderRow,
    event: str,
    *,
    at: datetime,
    note: str,
    outlets: Outlets,
    changes: Changes,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Audit an event that does not move the state (a recurrence, a breach at the top)."""
    state = State(order.state)
    event_id = await _audit(
        cur, order.id, at, SYSTEM, SYSTEM, event, state, state, note, detail or {}
    )
    await notify(cur, order, event, event_id, at, note, outlets, changes, [])
    return event_id


async def _audit(
    cur: AsyncCursor[Any],
    order_id: int,
    at: datetime,
    actor: str,
    role: str,
    event: str,
    from_state: str | None,
    to_state: State,
    note: str,
    detail: Mapping[str, Any],
) -> int:
    await cur.execute(
        "INSERT INTO work_order_events (order_id, at, actor, role, event, from_state, to_state,"
        " note, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (order_id, at, actor, role, event, from_state, to_state.value, note, _json(detail)),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def notify(
    cur: AsyncCursor[Any],
    order: OrderRow,
    event: str,
    event_id: int,
    at: datetime,
    note: str,
    outlets: Outlets,
    changes: Changes,
    extra: Iterable[Recipient] = (),
) -> None:
    """Queue one message per party and channel in the outbox (same transaction)."""
    contacts = await _contacts(cur, order)
    view = order.public()
    rows = []
    for recipient in (*order.parties(), *extra):
        for way in deliveries(recipient, outlets.prefix, order.street_id, outlets.webhook_orgs):
            key = message_id(order.id, event_id, recipient, way.channel)
            payload = order_notice(
                key=key, event=event, at=at, order=view, recipient=recipient,
                contacts=contacts, note=note,
            )  # fmt: skip
            rows.append(
                Queued(order.id, way.channel, way.destination, json.dumps(payload), key, at)
            )
    await enqueue(cur, rows)
    changes.notices += len(rows)


async def _contacts(cur: AsyncCursor[Any], order: OrderRow) -> list[Contact]:
    # Only a dwelling's own residents: a shared kitchen's alert does not hand
    # out the phone numbers of the whole floor.
    if order.place.get("place_type") != "dwelling" or order.address_id is None:
        return []
    await cur.execute(
        "SELECT r.name, r.phone, r.tags FROM residents r JOIN households h USING (household_id)"
        " WHERE h.address_id = %s ORDER BY r.resident_id",
        (order.address_id,),
    )
    return [Contact(name, phone, tuple(tags)) for name, phone, tags in await cur.fetchall()]


def _json(detail: Mapping[str, Any]) -> str:
    return json.dumps(detail, default=str)
