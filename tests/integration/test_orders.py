"""The closed loop end to end, on the real broker and database: incident → alert → routed
order → notification → acknowledgement over MQTT → escalation when ignored → telemetry
verification → closure → recurrence reopens; and a kill -9 in the middle loses and
duplicates nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest

from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.listener import Listener
from simulators.harness.processes import wait_until
from tests.support.fleet import SCENARIOS, run_fleet, wait_for_all_readings
from tests.support.orders import (
    DISPATCH,
    REPLIES,
    command,
    entrapment_order,
    order_events,
    outbox_drained,
    policy_dir,
    reply_to,
    sensor_orders,
    staff_of,
    trap_again,
)

pytestmark = pytest.mark.integration

HMAC_KEY = "a-webhook-hmac-key-of-32-characters"  # at least 32 (sensord/config.py)

# What the shipped policy says for the fleet's incidents: owner role, notified roles.
EXPECTED = {
    "fire": ("property_company", {"ops_centre", "residents_committee"}),  # a shared kitchen
    "elevator_entrapment": ("elevator_vendor", {"property_company", "ops_centre"}),
    "fire_lane_blocked": ("property_company", {"grid_worker"}),
}


def test_each_incident_becomes_one_order_owned_and_notified_as_the_policy_says(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    dsn, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=dsn)
    sensord.start()
    with Listener(broker.port, DISPATCH) as listener:
        records = run_fleet(tmp_path, district, broker.port, seed=5)
        wait_for_all_readings(sensord, records)
        incidents = {
            (r["device_id"], r["expected"]["alert"]) for r in records if r["record"] == "incident"
        }  # type: ignore[index]
        wait_until(lambda: len(sensor_orders(dsn)) >= len(incidents), 30, "an order per incident")
        wait_until(lambda: outbox_drained(dsn), 30, "every notification delivered")
        orders = sensor_orders(dsn)
        assert {(o["device_id"], o["category"]) for o in orders} == incidents
        assert len(orders) == len(incidents)  # exactly one each
        for order in orders:
            owner_role, notified_roles = EXPECTED[order["category"]]
            assert order["owner_role"] == owner_role and order["owner_org"], order
            assert not order["unrouted"]
            assert order["state"] == "dispatched" and order["due_phase"] == "ack"
            assert {p["role"] for p in order["notified"]} == notified_roles
            parties = {order["owner_org"]} | {p["org_id"] for p in order["notified"]}
            topics = {
                topic
                for topic, message in listener.messages()
                if message["order"]["id"] == order["id"] and message["type"] == "order.dispatch"
            }
            assert topics == {f"sensord/v1/jd01/dispatch/{org}" for org in parties}
    metrics = sensord.metrics()
    assert metrics['sensord_orders_created_total{category="fire",severity="major"}'] == 1
    assert metrics['sensord_notifications_sent_total{channel="mqtt"}'] >= 2 * len(incidents)


def test_the_loop_ack_escalate_arrive_resolve_verify_close_reopen(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    dsn, district = demo_district
    # Acknowledge within 20 s of dispatch, on site by 24 s: acknowledging and then
    # not arriving escalates at 24 s, and the new owner gets 20 s for the phase.
    rules = policy_dir(tmp_path, ack_s=20, arrive_s=24, resolve_s=600)
    sensord = daemon(
        SENSORD_DATABASE__DSN=dsn,
        SENSORD_RULES__DIRECTORY=str(rules),
        SENSORD_DISPATCH__AUDIT_INTERVAL_S="1",
    )
    sensord.start()
    with Listener(broker.port, DISPATCH, REPLIES) as listener:
        order = entrapment_order(tmp_path, broker.port, sensord, dsn, district)
        vendor = order["owner_org"]
        technician = staff_of(dsn, vendor)

        # Someone else may not acknowledge; the owner's technician may, once.
        outsider = staff_of(dsn, "ORG-OPS")  # a supervisor, but only the owner acknowledges
        rejected = reply_to(listener, command(broker.port, order, "ack", outsider))
        assert rejected["ok"] is False and rejected["error"] == "unauthorised"
        accepted = reply_to(listener, command(broker.port, order, "ack", technician))
        assert accepted == {**accepted, "ok": True, "state": "acknowledged"}
        again = reply_to(listener, command(broker.port, order, "ack", technician))
        assert again["error"] == "invalid_transition"
        assert "is acknowledged" in again["message"] and "allowed: arrive" in again["message"]

        # Not on site by the deadline: up one level, to the residents' committee.
        wait_until(lambda: sensor_orders(dsn)[0]["escalation_level"] == 1, 40, "escalation at 24 s")
        escalated = sensor_orders(dsn)[0]
        assert escalated["owner_role"] == "residents_committee"
        assert escalated["due_phase"] == "arrive"
        escalation = [e for e in order_events(dsn, order["id"]) if e[0] == "escalate"]
        assert len(escalation) == 1 and escalation[0][3]["phase"] == "arrive"
        assert escalation[0][3]["late_s"] < 5  # handled when due, not at some later sweep
        notified = listener.wait_for(
            lambda t, m: (
                m.get("type") == "order.escalate"
                and m["recipient"]["org_id"] == escalated["owner_org"]
            )
        )
        assert notified["recipient"]["as"] == "owner"
        previous = listener.wait_for(
            lambda t, m: m.get("type") == "order.escalate" and m["recipient"]["org_id"] == vendor
        )
        assert previous["recipient"]["as"] == "previous_owner"

        # The committee's worker arrives and resolves; the elevator has been running
        # normally for longer than the hold, so telemetry verifies and the order closes.
        worker = staff_of(dsn, escalated["owner_org"])
        assert reply_to(listener, command(broker.port, escalated, "arrive", worker))["ok"]
        assert reply_to(listener, command(broker.port, escalated, "resolve", worker))["ok"]
        wait_until(lambda: sensor_orders(dsn)[0]["state"] == "closed", 20, "telemetry verification")
        trail = [(e[0], e[1], e[2]) for e in order_events(dsn, order["id"])]
        assert trail[-2:] == [("verify", "resolved", "verified"), ("close", "verified", "closed")]
        assert ("resolve", "on_site", "resolved") in trail

        # The same elevator traps someone again: the closed order reopens, no new one.
        trap_again(broker.port, order["device_id"])
        wait_until(lambda: sensor_orders(dsn)[0]["reopen_count"] == 1, 20, "the order reopened")
        reopened = sensor_orders(dsn)
        assert len(reopened) == 1 and reopened[0]["state"] == "dispatched"
        assert reopened[0]["due_phase"] == "ack"
    wait_until(
        lambda: sensord.metrics().get("sensord_order_deadline_audits_total", 0) >= 2, 10, "audits"
    )
    metrics = sensord.metrics()
    assert metrics["sensord_order_deadlines_overdue"] == 0
    assert metrics['sensord_order_sla_breaches_total{phase="arrive"}'] == 1
    assert metrics['sensord_order_commands_total{result="rejected"}'] == 2


def test_an_ignored_order_climbs_the_whole_chain_once_per_level(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    dsn, district = demo_district
    rules = policy_dir(tmp_path, ack_s=1, arrive_s=2, resolve_s=3)
    sensord = daemon(SENSORD_DATABASE__DSN=dsn, SENSORD_RULES__DIRECTORY=str(rules))
    sensord.start()
    entrapment_order(tmp_path, broker.port, sensord, dsn, district)
    wait_until(
        lambda: sensor_orders(dsn)[0]["due_at"] is None,
        30,
        "the order to reach the top of the chain",
    )
    order = sensor_orders(dsn)[0]
    events = order_events(dsn, order["id"])
    owners = [e[3]["to"]["role"] for e in events if e[0] == "escalate"]
    assert owners == ["residents_committee", "ops_centre", "district_office"]
    assert [e[0] for e in events].count("breach") == 1  # nothing above the district
    assert order["escalation_level"] == 3 and order["state"] == "dispatched"


@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_a_restart_in_the_middle_of_the_loop_loses_and_duplicates_nothing(
    stop: str,
    tmp_path: Path,
    broker: Broker,
    daemon: Callable[..., Daemon],
    demo_district: tuple[str, Path],
) -> None:
    """kill -9 (at least once, under one message_id) or SIGTERM (exactly once)."""
    dsn, district = demo_district
    rules = policy_dir(tmp_path, ack_s=1, arrive_s=2, resolve_s=3)
    env = {"SENSORD_DATABASE__DSN": dsn, "SENSORD_RULES__DIRECTORY": str(rules)}
    with Listener(broker.port, DISPATCH) as listener:
        sensord = daemon(**env)
        sensord.start()
        records = run_fleet(tmp_path, district, broker.port, 5, SCENARIOS)
        incidents = [r for r in records if r["record"] == "incident"]
        # Killed while orders are being created, escalated and announced.
        wait_until(lambda: bool(sensor_orders(dsn)), 30, "the first order")
        halt = sensord.kill if stop == "kill" else sensord.terminate
        halt()

        def escalations() -> int:
            return len(listener.messages(lambda t, m: m["type"] == "order.escalate"))

        for _ in range(2):
            before = escalations()
            sensord.start()
            # This session's own escalations, not the ones an earlier session sent.
            wait_until(lambda n=before: escalations() > n, 30, "escalations under way")
            halt()
        sensord.start()
        wait_for_all_readings_after_restarts(sensord, dsn, records)

        def settled() -> bool:
            orders = sensor_orders(dsn)
            return (
                len(orders) == len(incidents)
                and all(o["due_at"] is None for o in orders)
                and outbox_drained(dsn)
            )

        wait_until(settled, 60, "every order at the top of the chain and every notice sent")
        orders = sensor_orders(dsn)
        assert {(o["device_id"], o["category"]) for o in orders} == {
            (i["device_id"], i["expected"]["alert"])
            for i in incidents  # type: ignore[index]
        }
        for order in orders:
            events = order_events(dsn, order["id"])
            levels = [e[3]["to"]["role"] for e in events if e[0] == "escalate"]
            assert len(levels) == len(set(levels)), levels  # no level twice
            assert [e[0] for e in events].count("breach") == 1
            assert [e[0] for e in events].count("create") == 1
        with psycopg.connect(dsn) as db:
            keys = {
                row[0]
                for row in db.execute(
                    "SELECT idempotency_key FROM outbox o JOIN work_orders w ON w.id = o.order_id"
                    " WHERE w.category <> 'inspection_due' AND o.channel = 'mqtt'"
                )
            }
        assert keys
        wait_until(
            lambda: keys <= {m["message_id"] for _, m in listener.messages()}, 20, "every notice"
        )
        seen = Counter(m["message_id"] for _, m in listener.messages() if m["message_id"] in keys)
        # At least once: a kill between PUBACK and the outbox commit may repeat a
        # message, always under its own message_id (receivers deduplicate on it).
        repeated = {key: n for key, n in seen.items() if n > 1}
        if stop == "terminate":
            assert repeated == {}  # a clean stop finishes sending before it exits
        else:
            # Each of the 4 sessions sends a row at most once before it is marked sent.
            assert max(seen.values()) <= 4, repeated


def wait_for_all_readings_after_restarts(
    sensord: Daemon, dsn: str, records: list[dict[str, object]]
) -> None:
    """Every reading the fleet published is stored (counted in the database: counters restarted)."""
    total = records[-1]["readings_total"]
    assert isinstance(total, int)

    def stored() -> bool:
        with psycopg.connect(dsn) as db:
            row = db.execute("SELECT count(*) FROM readings").fetchone()
        return row is not None and row[0] >= total

    wait_until(stored, 60, "every reading stored across the restarts")


class _Hook(http.server.BaseHTTPRequestHandler):
    """Refuses every first delivery of a message (HTTP 503), accepts the retry."""

    calls: ClassVar[list[tuple[dict[str, str], bytes, int]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers["Idempotency-Key"]
        status = 200 if any(h["Idempotency-Key"] == key for h, _, _ in self.calls) else 503
        self.calls.append((dict(self.headers), body, status))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhooks_are_signed_retried_with_the_same_key_and_delivered(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    dsn, district = demo_district
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    # http to this host: allowed only with the explicit loopback allowance.
    hooks = {
        org: {"url": url, "secret": HMAC_KEY, "allow_http_loopback": True}
        for org in ("ORG-PM1", "ORG-PM2")
    }
    sensord = daemon(
        SENSORD_DATABASE__DSN=dsn,
        SENSORD_DISPATCH__WEBHOOKS=json.dumps(hooks),
        SENSORD_DISPATCH__RETRY_INITIAL_S="0.2",
    )
    sensord.start()
    try:
        records = run_fleet(tmp_path, district, broker.port, 5, ("kitchen_fire",))
        wait_for_all_readings(sensord, records)
        wait_until(lambda: len(sensor_orders(dsn)) == 1, 30, "the kitchen fire's order")
        wait_until(lambda: outbox_drained(dsn), 30, "the webhook delivered after its retry")
    finally:
        server.shutdown()
        server.server_close()
    order = sensor_orders(dsn)[0]
    assert order["owner_org"] in hooks
    calls = [c for c in _Hook.calls if json.loads(c[1])["order"]["id"] == order["id"]]
    assert [status for _, _, status in calls] == [503, 200]
    (first, body, _), (retry, same_body, _) = calls
    assert first["Idempotency-Key"] == retry["Idempotency-Key"] and body == same_body
    stamp = retry["X-Sensord-Timestamp"]
    expected = hmac.new(HMAC_KEY.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert retry["X-Sensord-Signature"] == f"sha256={expected}"
    with psycopg.connect(dsn) as db:
        row = db.execute(
            "SELECT attempts, last_error FROM outbox WHERE channel = 'webhook' AND order_id = %s",
            (order["id"],),
        ).fetchone()
    assert row == (2, None)
    metrics = sensord.metrics()
    assert metrics['sensord_notification_failures_total{channel="webhook"}'] >= 1


def test_residents_contacts_reach_the_grid_worker_in_full_and_the_company_masked(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    dsn, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=dsn)
    sensord.start()
    with Listener(broker.port, DISPATCH) as listener:
        # A night of charging an e-bike at home: owner the grid worker, the property
        # company notified (docs/orders.md, personal data).
        records = run_fleet(tmp_path, district, broker.port, 3,
                            ("ebike_charging:place=dwelling",),
                            "--duration", "8h", "--start", "22:00")  # fmt: skip
        wait_for_all_readings(sensord, records)
        wait_until(lambda: len(sensor_orders(dsn)) == 1, 30, "the charging order")
        wait_until(lambda: outbox_drained(dsn), 30, "its notices delivered")
        order = sensor_orders(dsn)[0]
        notices = {
            m["recipient"]["role"]: m
            for _, m in listener.messages(lambda t, m: m["order"]["id"] == order["id"])
        }
    with psycopg.connect(dsn) as db:
        residents = db.execute(
            "SELECT r.name, r.phone FROM residents r JOIN households h USING (household_id)"
            " WHERE h.address_id = %s ORDER BY r.resident_id",
            (order["address_id"],),
        ).fetchall()
    assert order["owner_role"] == "grid_worker" and residents
    full = [(c["name"], c["phone"]) for c in notices["grid_worker"]["contacts"]]
    assert full == residents
    masked = notices["property_company"]["contacts"]
    assert len(masked) == len(residents)
    for contact, (name, phone) in zip(masked, residents, strict=True):
        assert contact["name"] != name and contact["name"][0] == name[0] and "*" in contact["name"]
        assert phone is None or (contact["phone"] != phone and contact["phone"][-4:] == phone[-4:])
