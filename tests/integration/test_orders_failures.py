"""Work orders when things go wrong: a broker that refuses, a database that refuses a value,
an escalated owner's deadlines, an upgrade with alert history, commands without request ids,
a bad webhook URL. Each test pinned a bug found in review (they failed before the fix).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sensord.adapters.migrations import migrate
from sensord.paths import shipped
from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.database import create_database, drop_database
from simulators.harness.listener import Listener
from simulators.harness.processes import wait_until
from tests.support.fleet import run_fleet, wait_for_all_readings
from tests.support.orders import (
    DISPATCH,
    REPLIES,
    command,
    entrapment_order,
    policy_dir,
    reply_to,
    sensor_orders,
    staff_of,
    trap_again,
)

pytestmark = pytest.mark.integration


class AclBroker(Broker):
    """The private broker with an ACL: user ``sensord`` may not publish dispatch notices."""

    def overrides(self) -> str:
        acl = self.workdir / "acl"
        acl.write_text(
            "topic readwrite #\n"  # anonymous clients: the fleet and the listener
            "user sensord\n"
            "topic read sensord/v1/#\n"
            "topic write sensord/v1/+/orders/+/replies\n"
        )
        return (
            f"allow_anonymous true\nacl_file {acl}\n"
            f"persistence_location {self.workdir}/\nlog_dest file {self.workdir}/mosquitto.log\n"
        )


def test_a_publish_the_broker_refuses_is_not_marked_sent(
    tmp_path: Path, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    # gmqtt drops the MQTT 5 PUBACK reason code; a notice the broker refuses (0x87,
    # not authorised by its ACL) was once marked sent. It must stay pending.
    dsn, district = demo_district
    broker = AclBroker(tmp_path / "acl-broker")
    broker.start()
    try:
        sensord = daemon(
            SENSORD_DATABASE__DSN=dsn,
            SENSORD_MQTT__PORT=str(broker.port),
            SENSORD_MQTT__USERNAME="sensord",
        )
        sensord.start()
        with Listener(broker.port, DISPATCH) as listener:
            records = run_fleet(tmp_path, district, broker.port, 5, ("kitchen_fire",))
            wait_for_all_readings(sensord, records)
            wait_until(lambda: len(sensor_orders(dsn)) == 1, 30, "the kitchen fire's order")
            order_id = sensor_orders(dsn)[0]["id"]

            def refused() -> bool:
                with psycopg.connect(dsn) as db:
                    row = db.execute(
                        "SELECT count(*) FROM outbox WHERE order_id = %s AND attempts >= 1"
                        " AND sent_at IS NULL AND last_error LIKE 'the broker refused it%%'",
                        (order_id,),
                    ).fetchone()
                return row is not None and row[0] > 0

            wait_until(refused, 20, "the relay's attempt, refused by the broker")
            failures = 'sensord_notification_failures_total{channel="mqtt"}'
            assert sensord.metrics()[failures] >= 1
            with psycopg.connect(dsn) as db:
                sent = {
                    row[0]
                    for row in db.execute(
                        "SELECT idempotency_key FROM outbox WHERE sent_at IS NOT NULL"
                    )
                }
            received = {m["message_id"] for _, m in listener.messages()}
            assert sent <= received, f"marked sent but never delivered: {sorted(sent - received)}"
    finally:
        broker.stop()


def test_a_command_the_database_cannot_store_is_answered_and_acknowledged(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    # A NUL in `note` once reached the database as a DataError that escaped the
    # handler: no reply, no PUBACK, redelivered on every reconnect (a poison command).
    dsn, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=dsn)
    sensord.start()
    with Listener(broker.port, REPLIES) as listener:
        order = entrapment_order(tmp_path, broker.port, sensord, dsn, district)
        technician = staff_of(dsn, order["owner_org"])
        sent = command(broker.port, order, "ack", technician, note="a\u0000b")
        reply = reply_to(listener, sent)
        assert reply["ok"] is False and reply["error"] == "invalid"
        # Acknowledged to the broker: the daemon's next session does not get it again
        # (its reply could not show that: a repeated request id queues no second reply).
        assert sensord.terminate() == 0
        sensord.start()
        time.sleep(2)
        assert sensord.metrics()['sensord_order_commands_total{result="rejected"}'] == 0


def test_an_escalated_owner_that_acknowledges_in_time_gets_time_to_arrive(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    # Deadlines count from the first dispatch; after an escalation gave the new owner
    # a fresh ack budget, the arrive deadline could already be past when they
    # acknowledged in time. The new owner gets at least the phase's own budget.
    dsn, district = demo_district
    rules = policy_dir(tmp_path, ack_s=3, arrive_s=4, resolve_s=600)
    sensord = daemon(
        SENSORD_DATABASE__DSN=dsn,
        SENSORD_RULES__DIRECTORY=str(rules),
        SENSORD_DISPATCH__INTERVAL_S="0.2",
    )
    sensord.start()
    with Listener(broker.port, REPLIES) as listener:
        entrapment_order(tmp_path, broker.port, sensord, dsn, district)
        wait_until(lambda: sensor_orders(dsn)[0]["escalation_level"] == 1, 10, "ack escalation")
        escalated = sensor_orders(dsn)[0]
        assert escalated["due_phase"] == "ack"  # the committee has its own 3 s to acknowledge
        # Acknowledge after dispatch + arrive_s, but before the committee's own deadline.
        ack_at = escalated["dispatched_at"].timestamp() + 4.3
        time.sleep(max(ack_at - time.time(), 0))
        assert datetime.now(UTC) < escalated["due_at"], "too slow to act within the budget"
        worker = staff_of(dsn, escalated["owner_org"])
        assert reply_to(listener, command(broker.port, escalated, "ack", worker))["ok"]
        acked = sensor_orders(dsn)[0]
        assert acked["state"] == "acknowledged" and acked["due_phase"] == "arrive"
        assert acked["due_at"] > acked["acknowledged_at"], (
            "the arrive deadline was already past when it was set",
            acked["due_at"],
            acked["acknowledged_at"],
        )


def test_upgrading_to_0005_does_not_turn_the_alert_history_into_orders(tmp_path: Path) -> None:
    # 0005 adds alerts.dispatched_episode DEFAULT 0 and episode DEFAULT 1: without its
    # backfill every alert stored before the upgrade, cleared months ago or not, would
    # become an order (escalated and announced) on the first start after it.
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(shipped("migrations").glob("000[1-4]_*.sql")):
        (before / path.name).write_text(path.read_text())
    dsn = create_database()
    try:
        migrate(dsn, before)
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(
                "INSERT INTO alerts (rule, category, severity, subject, state, first_seen,"
                " last_seen, cleared_at, clear_reason) VALUES ('smoke', 'fire', 'major',"
                " 'device:SMK-1', 'cleared', now() - interval '90 days',"
                " now() - interval '90 days', now() - interval '89 days', 'condition cleared')"
            )
        migrate(dsn, shipped("migrations"))
        with psycopg.connect(dsn) as db:
            row = db.execute(
                "SELECT count(*) FROM alerts WHERE state = 'cleared'"
                " AND dispatched_episode < episode"
            ).fetchone()
        assert row == (0,), "a long-cleared alert waits to be dispatched as a new order"
    finally:
        drop_database(dsn)


def test_a_repeated_command_without_request_id_still_gets_its_reply(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    # Replies were once keyed by the payload's hash when there was no request_id: an
    # "arrive" sent too early is refused with a reply; the same "arrive" after the
    # ack is applied, and its reply must not be dropped as a duplicate.
    dsn, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=dsn)
    sensord.start()
    with Listener(broker.port, REPLIES) as listener:
        order = entrapment_order(tmp_path, broker.port, sensord, dsn, district)
        technician = staff_of(dsn, order["owner_org"])

        def send(event: str) -> None:
            command(broker.port, order, event, technician, with_request_id=False)

        def replies() -> list[dict[str, object]]:
            return [m for t, m in listener.messages() if t.endswith("/replies")]

        send("arrive")  # too early: refused
        wait_until(lambda: len(replies()) == 1, 20, "the refusal")
        send("ack")
        wait_until(lambda: len(replies()) == 2, 20, "the ack's reply")
        send("arrive")  # the same bytes as the refused one; now accepted
        wait_until(lambda: sensor_orders(dsn)[0]["state"] == "on_site", 20, "on site")
        wait_until(lambda: len(replies()) == 3, 10, "the second arrive's reply")
        assert [r["ok"] for r in replies()] == [False, True, True]


def test_a_malformed_webhook_url_is_refused_at_start_naming_the_key(
    daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    # httpx raises InvalidURL for it, outside its HTTPError family: refused up front.
    dsn, _ = demo_district
    hooks = {"ORG-PM1": {"url": "http://[::1", "secret": "s" * 32, "allow_http_loopback": True}}
    sensord = daemon(SENSORD_DATABASE__DSN=dsn, SENSORD_DISPATCH__WEBHOOKS=json.dumps(hooks))
    sensord.start(wait_ready=False)
    assert sensord.process is not None
    assert sensord.process.wait(30) == 78  # EX_CONFIG: systemd does not restart it
    assert "dispatch.webhooks.ORG-PM1.url" in sensord.log_tail()


def test_a_recurrence_while_open_is_announced_with_the_new_alert(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    # The order is relinked to the recurring alert; its "recur" notice once carried
    # the row read before that, with the previous alert's id.
    dsn, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=dsn)
    sensord.start()
    with Listener(broker.port, DISPATCH) as listener:
        order = entrapment_order(tmp_path, broker.port, sensord, dsn, district)
        assert order["state"] == "dispatched"  # nobody acknowledged: still open
        trap_again(broker.port, order["device_id"])
        recur = listener.wait_for(lambda t, m: m["type"] == "order.recur")
    with psycopg.connect(dsn) as db:
        row = db.execute(
            "SELECT max(id) FROM alerts WHERE subject = %s", (f"device:{order['device_id']}",)
        ).fetchone()
    assert row is not None and row[0] != order["alert_id"]  # a new alert, after the clear
    assert recur["order"]["alert_id"] == row[0] == sensor_orders(dsn)[0]["alert_id"]
    assert recur["order"]["id"] == order["id"] and len(sensor_orders(dsn)) == 1
