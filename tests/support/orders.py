"""Work orders as the integration tests drive them: short-SLA policies, the orders and
their audit trail from the database, commands over MQTT and their replies."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from simulators.harness.daemon import Daemon
from simulators.harness.listener import Listener
from simulators.harness.processes import wait_until
from simulators.protocol import SimDevice, reading
from simulators.publisher import Publisher
from tests.support import REPO
from tests.support.fleet import run_fleet, wait_for_all_readings

DISPATCH = "sensord/v1/+/dispatch/#"
REPLIES = "sensord/v1/+/orders/+/replies"


def policy_dir(
    tmp_path: Path, *, ack_s: int, arrive_s: int, resolve_s: int, hold_s: int = 1
) -> Path:
    """The shipped rules with one catch-all SLA of the given (short) deadlines."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "sensors.toml").write_text((REPO / "rules" / "sensors.toml").read_text())
    shipped = (REPO / "rules" / "routing.toml").read_text()
    routing = re.sub(r"\n\[\[sla\]\].*", "", shipped, flags=re.S)
    routing += (
        f"\n[[sla]]\nack_s = {ack_s}\narrive_s = {arrive_s}\nresolve_s = {resolve_s}\n"
        f"verify_hold_s = {hold_s}\n"
    )
    (rules / "routing.toml").write_text(routing)
    return rules


def sensor_orders(dsn: str) -> list[dict[str, Any]]:
    """Orders of sensor incidents (inspection_due orders come from the registry's dates)."""
    with psycopg.connect(dsn) as db, db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM work_orders WHERE category <> 'inspection_due' ORDER BY id")
        return cur.fetchall()


def order_events(dsn: str, order_id: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(event, from, to, detail) of an order's audit trail, in order."""
    with psycopg.connect(dsn) as db:
        return db.execute(
            "SELECT event, from_state, to_state, detail FROM work_order_events"
            " WHERE order_id = %s ORDER BY id",
            (order_id,),
        ).fetchall()


def outbox_drained(dsn: str) -> bool:
    """Whether every queued notification has been delivered."""
    with psycopg.connect(dsn) as db:
        row = db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
    return row is not None and row[0] == 0


def staff_of(dsn: str, org_id: str) -> str:
    """The first member of staff of an organisation."""
    with psycopg.connect(dsn) as db:
        row = db.execute(
            "SELECT staff_id FROM staff WHERE org_id = %s ORDER BY staff_id LIMIT 1", (org_id,)
        ).fetchone()
    assert row is not None, org_id
    return str(row[0])


def command(
    port: int,
    order: dict[str, Any],
    event: str,
    by: str,
    *,
    with_request_id: bool = True,
    principal: str = "",
    **extra: str,
) -> str:
    """Publish a command on the order's topic as ``principal`` (default: ``staff.<by>``);
    return its request id ("" without one)."""
    request_id = f"{event}-{random.getrandbits(32):08x}" if with_request_id else ""
    body = {"event": event, "by": by, **extra}
    if request_id:
        body["request_id"] = request_id
    sender = principal or f"staff.{by}"
    topic = f"sensord/v1/{order['street_id']}/orders/{order['id']}/events/{sender}"
    with Publisher(port=port) as publisher:
        publisher.publish([(topic, json.dumps(body).encode())])
    return request_id


def entrapment_order(
    tmp_path: Path, port: int, sensord: Daemon, dsn: str, district: Path
) -> dict[str, Any]:
    """The fleet's elevator entrapment (seed 11), its readings stored and its one order made."""
    records = run_fleet(tmp_path, district, port, 11, ("elevator_entrapment",))
    wait_for_all_readings(sensord, records)
    wait_until(lambda: len(sensor_orders(dsn)) == 1, 30, "the entrapment's order")
    return sensor_orders(dsn)[0]


def reply_to(listener: Listener, request_id: str) -> dict[str, Any]:
    """The reply to the command with ``request_id``, waiting for it."""
    return listener.wait_for(lambda t, m: t.endswith("/replies") and m["request_id"] == request_id)


def trap_again(port: int, device_id: str) -> None:
    """A new entrapment reported by the elevator, now."""
    device = SimDevice(device_id, "elevator", "jd01")
    now = datetime.now(UTC)
    trapped = reading(
        device, 10_000, now, random.Random(1), state="fault", trapped=True, door="closed"
    )
    with Publisher(port=port) as publisher:
        publisher.publish([trapped])
