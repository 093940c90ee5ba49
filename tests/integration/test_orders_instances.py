"""Two daemons on one database and one broker (a shared subscription): every incident
still becomes exactly one order, every order climbs the escalation chain once per
level, the top is breached once, and every notice is queued once per party and
channel and delivered — whichever instance happened to do each step.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from psycopg.rows import dict_row

from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.processes import wait_until
from tests.support.fleet import SCENARIOS, run_fleet
from tests.support.orders import order_events, outbox_drained, policy_dir, sensor_orders

pytestmark = pytest.mark.integration

CHAIN = ["residents_committee", "ops_centre", "district_office"]  # above every fleet owner
_KEY = re.compile(r"o(?P<order>\d+)-e(?P<event>\d+)-(?P<to>.+)-(?P<channel>mqtt|webhook)")


def all_orders(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as db, db.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM work_orders ORDER BY id")
        return cur.fetchall()


def stored_readings(dsn: str) -> int:
    with psycopg.connect(dsn) as db:
        row = db.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def expected_notices(order: dict[str, Any], dsn: str) -> dict[int, set[str]]:
    """Per notifying event of the order: the recipients (org id, or role) it must reach.

    The owner after the event, every notified party of another organisation, and on
    an escalation the previous owner (one message per organisation: the key is per org).
    """
    with psycopg.connect(dsn) as db:
        rows = db.execute(
            "SELECT id, event, detail FROM work_order_events WHERE order_id = %s ORDER BY id",
            (order["id"],),
        ).fetchall()
    escalations = [detail for _, event, detail in rows if event == "escalate"]
    owner = escalations[0]["from"] if escalations else {
        "role": order["owner_role"], "org_id": order["owner_org"]
    }  # fmt: skip
    expected: dict[int, set[str]] = {}
    for event_id, event, detail in rows:
        if event == "create":
            continue  # the dispatch right after it announces the order
        previous = owner
        if event == "escalate":
            owner = detail["to"]
        recipients = {owner["org_id"] or owner["role"]} | {
            p.get("org_id") or p["role"]
            for p in order["notified"]
            if p.get("org_id") != owner["org_id"]
        }
        if event == "escalate" and previous["org_id"] != owner["org_id"]:
            recipients.add(previous["org_id"] or previous["role"])
        expected[event_id] = recipients
    return expected


def transitions(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("sensord_order_transitions_total{"))


def test_two_instances_share_the_work_and_do_every_step_once(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    dsn, district = demo_district
    rules = policy_dir(tmp_path, ack_s=1, arrive_s=2, resolve_s=3)
    env = {
        "SENSORD_DATABASE__DSN": dsn,
        "SENSORD_RULES__DIRECTORY": str(rules),
        "SENSORD_MQTT__SHARED_GROUP": "sensord",
        "SENSORD_DISPATCH__INTERVAL_S": "0.2",  # both poll often: both get a share
        "SENSORD_DISPATCH__AUDIT_INTERVAL_S": "1",
    }
    instances = [daemon(**env), daemon(**env)]  # the factory gives each its own client id
    for instance in instances:
        instance.start()
    records = run_fleet(tmp_path, district, broker.port, 5, SCENARIOS)
    total = records[-1]["readings_total"]
    assert isinstance(total, int)
    wait_until(lambda: stored_readings(dsn) >= total, 60, "every reading stored by the pair")
    incidents = {
        (r["device_id"], cast(dict[str, str], r["expected"])["alert"])
        for r in records
        if r["record"] == "incident"
    }

    def settled() -> bool:
        orders = all_orders(dsn)
        return (
            len(sensor_orders(dsn)) >= len(incidents)
            and all(o["due_at"] is None for o in orders)
            and outbox_drained(dsn)
        )

    wait_until(settled, 90, "every order at the top of the chain and every notice sent")

    # Exactly one order per incident, although both instances dispatch.
    orders = sensor_orders(dsn)
    assert sorted((o["device_id"], o["category"]) for o in orders) == sorted(incidents)

    for order in all_orders(dsn):
        events = order_events(dsn, order["id"])
        names = [e[0] for e in events]
        levels = [e[3]["to"]["role"] for e in events if e[0] == "escalate"]
        assert len(levels) == len(set(levels)), (order["id"], levels)  # no level twice
        assert names.count("create") == 1 and names.count("breach") == 1, (order["id"], names)
        assert order["escalation_level"] == len(levels)
        if order["category"] != "inspection_due":
            assert levels == CHAIN, (order["id"], levels)
            assert order["owner_role"] == "district_office"

    # Each notifying event queued one row per party per channel (mqtt only here):
    # neither instance queued a second copy under another key, none is missing.
    with psycopg.connect(dsn) as db:
        outbox = db.execute(
            "SELECT order_id, idempotency_key, destination, sent_at IS NOT NULL FROM outbox"
        ).fetchall()
    assert all(sent for *_, sent in outbox)
    queued: dict[int, Counter[str]] = {}
    for order_id, key, destination, _ in outbox:
        found = _KEY.fullmatch(key)
        assert found is not None and int(found["order"]) == order_id, key
        assert found["channel"] == "mqtt" and destination.endswith(f"/dispatch/{found['to']}")
        queued.setdefault(int(found["event"]), Counter())[found["to"]] += 1
    expected: set[int] = set()
    for order in all_orders(dsn):
        for event_id, recipients in expected_notices(order, dsn).items():
            expected.add(event_id)
            assert queued.get(event_id) == Counter(dict.fromkeys(recipients, 1)), (
                order["id"],
                event_id,
            )
    assert set(queued) == expected  # and no notices under events that notify nobody

    # Both instances stay up, and both took part (polling every 0.2 s, SKIP LOCKED).
    shares = [transitions(instance.metrics()) for instance in instances]
    assert all(instance.process and instance.process.poll() is None for instance in instances)
    assert all(share > 0 for share in shares), shares
