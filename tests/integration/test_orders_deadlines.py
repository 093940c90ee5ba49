"""The dispatcher's deadlines (and its telemetry verification and recurrences), driven
in-process by a fake clock on a real database.

No daemon, no broker and no waiting: the dispatcher is built on a fresh database
holding the demo district, alerts are inserted as the rule pipeline would leave
them, and each ``step()`` runs at the time the test sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from sensord.adapters.metrics import Metrics
from sensord.adapters.order_queries import OrderRow, load_order, next_deadline
from sensord.adapters.order_store import Changes, Outlets
from sensord.adapters.registry_snapshot import load_snapshot
from sensord.adapters.rule_files import load_policy
from sensord.clock import ManualClock
from sensord.core.orders.lifecycle import escalation_target, phase_budget
from sensord.core.orders.machine import Event
from sensord.paths import shipped
from sensord.services.dispatcher import Dispatcher
from sensord.services.order_actions import act

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
DEVICES = ("SMK-000001", "SMK-000002")  # smoke detectors placed by the demo district


class Harness:
    """A dispatcher on the database, its fake clock and its metrics."""

    def __init__(self, dsn: str, pool: AsyncConnectionPool) -> None:
        self.dsn = dsn
        self.pool = pool
        self.clock = ManualClock(T0)
        self.metrics = Metrics(CollectorRegistry(), process=False)
        self.snapshot = load_snapshot(dsn).snapshot
        self.policy = load_policy(shipped("rules") / "routing.toml")
        self.dispatcher = Dispatcher(
            pool, self.policy, self.snapshot.context, Outlets("sensord/v1"), self.clock,
            self.metrics, batch=10,
        )  # fmt: skip

    def fire(self, device_id: str) -> None:
        """A smoke alert of the device, not dispatched yet."""
        with psycopg.connect(self.dsn, autocommit=True) as db:
            db.execute(
                "INSERT INTO alerts (rule, category, severity, safety, subject, device_id,"
                " address_id, first_seen, last_seen) SELECT 'smoke_alarm', 'fire', 'major',"
                " true, 'device:' || device_id, device_id, address_id, %s, %s FROM devices"
                " WHERE device_id = %s",
                (self.clock.now(), self.clock.now(), device_id),
            )

    async def order_of(self, device_id: str) -> OrderRow:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT id FROM work_orders WHERE device_id = %s", (device_id,))
            row = await cur.fetchone()
            assert row is not None, device_id
            order = await load_order(cur, row[0])
        assert order is not None
        return order

    async def next_deadline(self) -> datetime | None:
        async with self.pool.connection() as conn, conn.cursor() as cur:
            return await next_deadline(cur)

    def escalations(self, order_id: int) -> list[tuple[str, dict[str, object]]]:
        with psycopg.connect(self.dsn) as db:
            return db.execute(
                "SELECT event, detail FROM work_order_events"
                " WHERE order_id = %s AND event = 'escalate' ORDER BY id",
                (order_id,),
            ).fetchall()

    def events(self, order_id: int) -> list[str]:
        with psycopg.connect(self.dsn) as db:
            rows = db.execute(
                "SELECT event FROM work_order_events WHERE order_id = %s ORDER BY id", (order_id,)
            ).fetchall()
        return [event for (event,) in rows]

    def counted(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def harness(dsn: str) -> AsyncIterator[Harness]:
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        yield Harness(dsn, pool)


Scenario = Callable[[Harness], Awaitable[None]]


def run(demo_district: tuple[str, Path], scenario: Scenario) -> None:
    async def main() -> None:
        async with harness(demo_district[0]) as h:
            await scenario(h)

    asyncio.run(main())


async def dispatched(h: Harness, device_id: str) -> OrderRow:
    """Fire the device's alert at the clock's time and let the dispatcher make its order."""
    h.fire(device_id)
    await h.dispatcher.step()
    order = await h.order_of(device_id)
    assert (order.state, order.due_phase) == ("dispatched", "ack")
    return order


def test_the_next_deadline_is_the_earliest_due_at(demo_district: tuple[str, Path]) -> None:
    async def scenario(h: Harness) -> None:
        assert await h.next_deadline() is None
        first = await dispatched(h, DEVICES[0])
        h.clock.advance(30)
        second = await dispatched(h, DEVICES[1])
        assert first.due_at is not None and second.due_at is not None
        assert first.due_at < second.due_at
        assert await h.next_deadline() == first.due_at

    run(demo_district, scenario)


def test_a_missed_deadline_escalates_once_to_the_next_owner(
    demo_district: tuple[str, Path],
) -> None:
    async def scenario(h: Harness) -> None:
        order = await dispatched(h, DEVICES[0])
        assert order.due_at is not None
        target = escalation_target(
            h.policy.orders.escalation, order.owner_role, h.snapshot.context(DEVICES[0])
        )
        assert target is not None, "the demo district places the device under a chain"

        # Up to the deadline: nothing escalates, however often the dispatcher runs.
        h.clock.set(order.due_at - timedelta(milliseconds=1))
        for _ in range(3):
            await h.dispatcher.step()
        assert h.escalations(order.id) == []
        unchanged = await h.order_of(DEVICES[0])
        assert (unchanged.owner_org, unchanged.escalation_level) == (order.owner_org, 0)

        # Past it: handed one level up, with a fresh budget for the phase.
        h.clock.set(order.due_at + timedelta(seconds=2))
        for _ in range(3):
            await h.dispatcher.step()
        [(_, detail)] = h.escalations(order.id)
        escalated = await h.order_of(DEVICES[0])
        assert (escalated.owner_role, escalated.owner_org) == (target.role, target.org_id)
        assert escalated.escalation_level == 1
        assert escalated.due_phase == "ack"
        assert escalated.due_at == h.clock.now() + phase_budget(order.deadlines, "ack")
        assert detail["phase"] == "ack" and detail["late_s"] == 2.0
        assert detail["to"] == {"role": target.role, "org_id": target.org_id}
        assert h.counted("sensord_order_escalations_total", level="1") == 1
        assert h.counted("sensord_order_sla_breaches_total", phase="ack") == 1
        assert await h.next_deadline() == escalated.due_at

    run(demo_district, scenario)


def test_every_deadline_climbs_one_level_until_the_top(demo_district: tuple[str, Path]) -> None:
    async def scenario(h: Harness) -> None:
        order = await dispatched(h, DEVICES[0])
        context = h.snapshot.context(DEVICES[0])
        chain = h.policy.orders.escalation
        owners = [(order.owner_role, order.owner_org)]
        while (target := escalation_target(chain, owners[-1][0], context)) is not None:
            owners.append((target.role, target.org_id))
        assert len(owners) > 1
        current = order
        for level, owner in enumerate(owners[1:], start=1):
            assert current.due_at is not None
            h.clock.set(current.due_at + timedelta(seconds=1))
            await h.dispatcher.step()
            current = await h.order_of(DEVICES[0])
            assert (current.owner_role, current.owner_org, current.escalation_level) == (
                *owner,
                level,
            )
        # The top: the missed deadline is a breach, and nothing is due any more.
        assert current.due_at is not None
        h.clock.set(current.due_at + timedelta(seconds=1))
        await h.dispatcher.step()
        topped = await h.order_of(DEVICES[0])
        assert (topped.due_at, topped.due_phase, topped.escalation_level) == (
            None,
            None,
            len(owners) - 1,
        )
        assert len(h.escalations(order.id)) == len(owners) - 1
        assert h.events(order.id)[-1] == "breach"
        assert await h.next_deadline() is None
        assert h.counted("sensord_order_sla_breaches_total", phase="ack") == len(owners)

    run(demo_district, scenario)


async def resolved(h: Harness, device_id: str) -> OrderRow:
    """A dispatched order of the device, acknowledged, attended and resolved."""
    order = await dispatched(h, device_id)
    async with h.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        for event in (Event.ACK, Event.ARRIVE, Event.RESOLVE):
            await act(
                cur, order.id, event, by="S-00033", role="property_staff", note="",
                now=h.clock.now(), outlets=Outlets("sensord/v1"), changes=Changes(),
            )  # fmt: skip
    return order


def clear_by_reading(
    h: Harness,
    alert_id: int,
    device_id: str,
    at: datetime,
    ts: datetime | None = None,
    seq: int = 7,
) -> None:
    """What the rule's clear writes: a stored reading of ``device_id`` (device time ``ts``,
    received ``at``) clears the alert."""
    ts = at if ts is None else ts
    with psycopg.connect(h.dsn, autocommit=True) as db:
        db.execute(
            "INSERT INTO readings (ts, received_at, device_id, kind, seq, smoke)"
            " SELECT %s, %s, device_id, kind, %s, false FROM devices WHERE device_id = %s",
            (ts, at, seq, device_id),
        )
        db.execute(
            "UPDATE alerts SET state = 'cleared', clear_reason = 'condition cleared',"
            " cleared_at = %s, clear_device_id = %s, clear_ts = %s, clear_seq = %s WHERE id = %s",
            (at, device_id, ts, seq, alert_id),
        )


def test_telemetry_verifies_only_after_the_hold(demo_district: tuple[str, Path]) -> None:
    async def scenario(h: Harness) -> None:
        order = await resolved(h, DEVICES[0])
        cleared_at = h.clock.now()
        # Device time an hour behind: the hold runs on the receive time all the same.
        clear_by_reading(h, order.alert_id, DEVICES[0], cleared_at, cleared_at - timedelta(hours=1))
        hold = timedelta(seconds=order.verify_hold_s)
        h.clock.set(cleared_at + hold - timedelta(milliseconds=1))
        await h.dispatcher.step()
        assert (await h.order_of(DEVICES[0])).state == "resolved"
        h.clock.set(cleared_at + hold)
        await h.dispatcher.step()
        assert (await h.order_of(DEVICES[0])).state == "closed"
        assert h.events(order.id)[-2:] == ["verify", "close"]

    run(demo_district, scenario)


def test_telemetry_does_not_verify_a_clear_from_another_device_or_one_contradicted_since(
    demo_district: tuple[str, Path],
) -> None:
    async def scenario(h: Harness) -> None:
        other = await resolved(h, DEVICES[0])
        contradicted = await resolved(h, DEVICES[1])
        cleared_at = h.clock.now()
        clear_by_reading(h, other.alert_id, DEVICES[1], cleared_at)  # not the alert's device
        clear_by_reading(h, contradicted.alert_id, DEVICES[1], cleared_at, seq=8)
        with psycopg.connect(h.dsn, autocommit=True) as db:
            # The rule saw its condition again after the clear (engine: recurring).
            db.execute(
                "UPDATE alerts SET recurred_at = %s WHERE id = %s",
                (cleared_at + timedelta(seconds=1), contradicted.alert_id),
            )
        h.clock.set(cleared_at + timedelta(seconds=other.verify_hold_s + 3600))
        await h.dispatcher.step()
        assert (await h.order_of(DEVICES[0])).state == "resolved"
        assert (await h.order_of(DEVICES[1])).state == "resolved"

    run(demo_district, scenario)


def test_a_new_episode_while_open_is_attached(demo_district: tuple[str, Path]) -> None:
    async def scenario(h: Harness) -> None:
        order = await dispatched(h, DEVICES[0])
        with psycopg.connect(h.dsn, autocommit=True) as db:
            db.execute("UPDATE alerts SET episode = 2 WHERE id = %s", (order.alert_id,))
        h.clock.advance(5)
        await h.dispatcher.step()
        attached = await h.order_of(DEVICES[0])
        assert (attached.id, attached.alert_episode, attached.state) == (order.id, 2, "dispatched")
        assert attached.updated_at == h.clock.now()
        assert h.events(order.id)[-1] == "recur"

    run(demo_district, scenario)
