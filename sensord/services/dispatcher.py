"""The dispatcher: alerts become routed work orders; deadlines escalate; telemetry verifies.

Everything is driven from the database, so several instances can run it and a
restart loses nothing: each step claims its rows ``FOR UPDATE SKIP LOCKED``,
changes them with their audit and outbox rows in one transaction, and only then
counts. An alert's firing episode is dispatched once (``alerts.dispatched_episode``);
a deadline is a row's ``due_at``, handled when it is due whoever is running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncCursor
from psycopg_pool import AsyncConnectionPool

from sensord.adapters.metrics import Metrics
from sensord.adapters.order_store import (
    SYSTEM,
    Changes,
    NewOrder,
    OrderRow,
    Outlets,
    advance,
    create_order,
    record,
    select_orders,
    transition,
)
from sensord.clock import Clock
from sensord.core.backoff import Backoff
from sensord.core.context import DeviceContext
from sensord.core.orders.lifecycle import (
    Due,
    Recurrence,
    escalation_target,
    phase_budget,
    recurrence,
)
from sensord.core.orders.machine import TELEMETRY, Event, State
from sensord.core.orders.notices import place_summary
from sensord.core.orders.policy import Policy
from sensord.core.orders.routing import route
from sensord.core.rules.fields import context_fields
from sensord.core.rules.model import Severity, higher_severity
from sensord.services.polling import poll

log = logging.getLogger("sensord.dispatch")

_ORDER_STATES = tuple(s.value for s in State)


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


class Dispatcher:
    """Owns the dispatch loop and the deadline auditor."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        policy: Policy,
        context: Callable[[str], DeviceContext | None],
        outlets: Outlets,
        clock: Clock,
        metrics: Metrics,
        *,
        batch: int = 100,
        audit_grace_s: float = 30.0,
        on_notices: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self.policy = policy
        self._context = context
        self._outlets = outlets
        self._clock = clock
        self._metrics = metrics
        self._batch = batch
        self._grace = timedelta(seconds=audit_grace_s)
        self._on_notices = on_notices
        self.wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, interval_s: float, backoff: Backoff) -> None:
        """Dispatch, escalate and verify every ``interval_s`` (sooner when woken)."""
        await poll(
            self.step, self.wake, interval_s, backoff,
            metrics=self._metrics, operation="dispatch", log=log,
        )  # fmt: skip

    async def step(self) -> bool:
        """One round of the three jobs; True when any of them filled a batch."""
        full = False
        for job in (self._dispatch_alerts, self._escalate_due, self._verify_by_telemetry):
            changes = Changes()
            async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                full |= await job(cur, self._clock.now(), changes) >= self._batch
            self._count(changes)
        if not full:  # a full round runs again at once; the last one arms the timer
            await self._wake_at_next_deadline()
        return full

    async def _wake_at_next_deadline(self) -> None:
        # A deadline is handled when it falls due, not at the next poll: a timer
        # wakes the loop then (the poll still covers other instances' changes).
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT min(due_at) FROM work_orders WHERE due_at IS NOT NULL")
            row = await cur.fetchone()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if row is not None and row[0] is not None:
            delay = max((row[0] - self._clock.now()).total_seconds(), 0.0)
            self._timer = asyncio.get_running_loop().call_later(delay, self.wake.set)

    # --- alerts -> orders

    async def _dispatch_alerts(self, cur: AsyncCursor[Any], now: datetime, changes: Changes) -> int:
        await cur.execute(
            "SELECT id, rule, category, severity, subject, device_id, address_id, episode,"
            " silenced_by IS NOT NULL FROM alerts WHERE dispatched_episode < episode"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (self._batch,),
        )
        alerts = [UndispatchedAlert(*row) for row in await cur.fetchall()]
        for alert in alerts:
            try:
                # A savepoint each: another instance creating the subject's order at
                # the same moment loses this alert only, for the next round (ATTACH).
                async with cur.connection.transaction():
                    if not alert.silenced:  # a maintenance window: no order, by design
                        await self._dispatch(cur, alert, now, changes)
                    await cur.execute(
                        "UPDATE alerts SET dispatched_episode = %s WHERE id = %s",
                        (alert.episode, alert.id),
                    )
            except psycopg.errors.UniqueViolation:
                log.info("order raced by another instance; retried", extra={"alert_id": alert.id})
        return len(alerts)

    async def _dispatch(
        self, cur: AsyncCursor[Any], alert: UndispatchedAlert, now: datetime, changes: Changes
    ) -> None:
        latest = await select_orders(
            cur, "rule = %s AND subject = %s ORDER BY id DESC LIMIT 1 FOR UPDATE",
            (alert.rule, alert.subject),
        )  # fmt: skip
        order = latest[0] if latest else None
        decision = recurrence(
            State(order.state) if order else None,
            order.closed_at if order else None,
            now,
            self.policy.orders.reopen_window_s,
        )
        link = {"alert_id": alert.id, "episode": alert.episode}
        if order is None or decision is Recurrence.CREATE:
            created = await create_order(cur, self._new_order(alert), now, self._outlets, changes)
            log.info(
                "work order created",
                extra={
                    "order_id": created.id,
                    "alert_id": alert.id,
                    "device_id": alert.device_id,
                    "category": created.category,
                    "owner_org": created.owner_org,
                    "unrouted": created.unrouted,
                },
            )
            return
        await cur.execute(
            "UPDATE work_orders SET alert_id = %s, alert_episode = %s, updated_at = %s"
            " WHERE id = %s",
            (alert.id, alert.episode, now, order.id),
        )
        # What the notices show must be the order as it now is: linked to this alert.
        order = replace(order, alert_id=alert.id, alert_episode=alert.episode, updated_at=now)
        if decision is Recurrence.ATTACH:
            await record(
                cur, order, "recur", at=now, note="the alert recurred while the order is open",
                outlets=self._outlets, changes=changes, detail=link,
            )  # fmt: skip
            return
        await advance(
            cur, order, Event.REOPEN, at=now, actor=SYSTEM, role=TELEMETRY,
            note="the problem recurred", outlets=self._outlets, changes=changes, detail=link,
        )  # fmt: skip
        log.info("work order reopened", extra={"order_id": order.id, "alert_id": alert.id})

    def _new_order(self, alert: UndispatchedAlert) -> NewOrder:
        context = self._context(alert.device_id) if alert.device_id else None
        decision = route(self.policy.routes, alert.category, context, context_fields(context))
        severity = higher_severity(alert.severity, decision.severity)
        place = context.place if context else None
        return NewOrder(
            alert_id=alert.id,
            alert_episode=alert.episode,
            rule=alert.rule,
            subject=alert.subject,
            category=alert.category,
            severity=severity,
            street_id=context.device.street_id if context else None,
            device_id=alert.device_id,
            address_id=alert.address_id,
            area_id=place.compound.area_id if place else None,
            place=place_summary(context),
            owner=decision.owner,
            notified=decision.notify,
            unrouted=decision.unrouted,
            deadlines=self.policy.deadlines(alert.category, severity),
        )

    # --- deadlines

    async def _escalate_due(self, cur: AsyncCursor[Any], now: datetime, changes: Changes) -> int:
        due = await select_orders(
            cur, "due_at <= %s ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
            (now, self._batch),
        )  # fmt: skip
        for order in due:
            await self._escalate(cur, order, now, changes)
        return len(due)

    async def _escalate(
        self, cur: AsyncCursor[Any], order: OrderRow, now: datetime, changes: Changes
    ) -> None:
        assert order.due_at is not None and order.due_phase is not None
        phase = order.due_phase
        late_s = round((now - order.due_at).total_seconds(), 3)
        changes.late_s.append(max(late_s, 0.0))
        changes.breaches[phase] += 1
        context = self._context(order.device_id) if order.device_id else None
        target = escalation_target(self.policy.orders.escalation, order.owner_role, context)
        detail = {
            "phase": phase,
            "due_at": order.due_at.isoformat(),
            "late_s": late_s,
            "from": {"role": order.owner_role, "org_id": order.owner_org},
        }
        if target is None:
            # The top of the chain: recorded and announced, nothing above to hand it to.
            await cur.execute(
                "UPDATE work_orders SET due_phase = NULL, due_at = NULL, updated_at = %s"
                " WHERE id = %s",
                (now, order.id),
            )
            topped = replace(order, due_phase=None, due_at=None, updated_at=now)
            await record(
                cur, topped, "breach", at=now, outlets=self._outlets, changes=changes,
                note=f"{phase} deadline missed at the top of the escalation chain", detail=detail,
            )  # fmt: skip
            log.warning("SLA breached at the top of the chain", extra={"order_id": order.id})
            return
        detail["to"] = {"role": target.role, "org_id": target.org_id}
        escalated = await transition(
            cur, order, Event.ESCALATE, at=now, actor=SYSTEM, role=SYSTEM,
            note=f"{phase} deadline missed by {order.owner_org or order.owner_role}",
            outlets=self._outlets, changes=changes, owner=target, detail=detail,
            due=Due(phase, now + phase_budget(order.deadlines, phase)),
        )  # fmt: skip
        changes.escalations[escalated.escalation_level] += 1
        log.warning(
            "work order escalated",
            extra={
                "order_id": order.id,
                "phase": phase,
                "escalation_level": escalated.escalation_level,
                "owner_org": target.org_id,
            },
        )

    # --- verification

    async def _verify_by_telemetry(
        self, cur: AsyncCursor[Any], now: datetime, changes: Changes
    ) -> int:
        # The sensor is back to normal (its alert cleared by the rule, not by
        # hand), has stayed so for the hold time, and has not fired since.
        ready = await select_orders(
            cur,
            "state = 'resolved' AND EXISTS (SELECT 1 FROM alerts a WHERE a.id = alert_id"
            " AND a.state = 'cleared' AND a.clear_reason = 'condition cleared'"
            " AND a.episode = alert_episode"
            " AND a.cleared_at <= %s - make_interval(secs => verify_hold_s))"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (now, self._batch),
        )
        for order in ready:
            await advance(
                cur, order, Event.VERIFY, at=now, actor=SYSTEM, role=TELEMETRY,
                note=f"sensor normal for {order.verify_hold_s} s", outlets=self._outlets,
                changes=changes,
            )  # fmt: skip
            log.info("work order verified by telemetry", extra={"order_id": order.id})
        return len(ready)

    # --- auditor

    async def audit(self) -> None:
        """Sample order and outbox gauges; count deadlines overdue beyond the grace period.

        A deadline that stays overdue longer than ``audit_grace_s`` means the
        escalation loop skipped it: ``sensord_order_deadlines_overdue`` must be 0.
        """
        now = self._clock.now()
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT state, count(*) FROM work_orders GROUP BY state")
            by_state: dict[str, int] = dict(await cur.fetchall())
            await cur.execute(
                "SELECT count(*) FROM work_orders WHERE due_at < %s", (now - self._grace,)
            )
            overdue = (await cur.fetchone() or (0,))[0]
            await cur.execute("SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL")
            pending, oldest = await cur.fetchone() or (0, None)
        for state in _ORDER_STATES:
            self._metrics.orders.labels(state).set(by_state.get(state, 0))
        self._metrics.order_deadlines_overdue.set(overdue)
        self._metrics.order_deadline_audits.inc()
        self._metrics.outbox_pending.set(pending)
        self._metrics.outbox_oldest_age.set(
            max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
        )
        if overdue:
            log.error("deadline auditor: overdue deadlines not handled", extra={"count": overdue})

    def _count(self, changes: Changes) -> None:
        for (category, severity), n in changes.created.items():
            self._metrics.orders_created.labels(category, severity).inc(n)
        for event, n in changes.transitions.items():
            self._metrics.order_transitions.labels(event).inc(n)
        for level, n in changes.escalations.items():
            self._metrics.order_escalations.labels(str(level)).inc(n)
        for phase, n in changes.breaches.items():
            self._metrics.order_sla_breaches.labels(phase).inc(n)
        for late_s in changes.late_s:
            self._metrics.order_escalation_delay.observe(late_s)
        if changes.notices:
            self._on_notices()
