"""Attacks on a real Mosquitto started with `sensord broker config`'s files (issue 11).

Each attack is refused — by the broker's ACL (MQTT v5 PUBACK 0x87, not authorised) or by
sensord with a reason and a counter — while legitimate traffic in the same run is stored
once and dispatched as before.
"""

from __future__ import annotations

import json
import random
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sensord.cli import main as sensord_main
from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.listener import Listener
from simulators.harness.mqtt_wire import RawClient
from simulators.harness.processes import wait_until
from simulators.protocol import SimDevice, reading
from tests.support.orders import REPLIES, reply_to, sensor_orders

NOT_AUTHORISED = 0x87


@dataclass
class Secured:
    """The demo district behind a broker with the generated config, and sensord on it."""

    dsn: str
    broker: Broker
    sensord: Daemon
    secrets: dict[str, str]  # username -> password
    detector: SimDevice  # a kitchen smoke detector, with its own credential
    other: SimDevice  # the gateway's device
    property_org: str
    officer: str  # a duty officer of the ops centre
    pm_staff: str  # a member of the property company's staff

    def client(self, user: str, client_id: str = "") -> RawClient:
        return RawClient(
            self.broker.port, client_id or user, username=user, password=self.secrets[user]
        )


def issue(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """(username, password) of a new credential, from the command's one-time output."""
    assert sensord_main(["credentials", "issue", *args]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    return lines["username"], lines["password"]


def one(dsn: str, sql: str) -> str:
    with psycopg.connect(dsn) as db:
        row = db.execute(sql).fetchone()
    assert row is not None, sql
    return str(row[0])


@pytest.fixture
def secured(
    tmp_path: Path,
    demo_district: tuple[str, Path],
    daemon: Callable[..., Daemon],
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Secured]:
    dsn, _ = demo_district
    kitchen = (
        "d.address_id IN (SELECT address_id FROM addresses WHERE place_type = 'public_kitchen')"
    )
    detector_id = one(
        dsn,
        f"SELECT device_id FROM devices d WHERE kind = 'smoke' AND {kitchen} ORDER BY 1 LIMIT 1",
    )
    other_id = one(
        dsn,
        f"SELECT device_id FROM devices WHERE kind = 'smoke' AND device_id <> '{detector_id}'"
        " ORDER BY 1 LIMIT 1",
    )
    street = one(dsn, f"SELECT street FROM devices WHERE device_id = '{detector_id}'")
    other_street = one(dsn, f"SELECT street FROM devices WHERE device_id = '{other_id}'")
    property_org = one(
        dsn,
        "SELECT org_id FROM organisations WHERE org_type = 'property_company' ORDER BY 1 LIMIT 1",
    )
    officer = one(
        dsn,
        "SELECT staff_id FROM staff JOIN organisations USING (org_id)"
        " WHERE org_type = 'ops_centre' ORDER BY 1 LIMIT 1",
    )
    pm_staff = one(dsn, f"SELECT staff_id FROM staff WHERE org_id = '{property_org}' ORDER BY 1")
    secrets = dict(
        [
            issue(capsys, "staff", pm_staff),
            issue(capsys, "sensord", "main"),
            issue(capsys, "device", detector_id),
            issue(capsys, "gateway", "gw1", "--devices", other_id),
            issue(capsys, "staff", officer),
            issue(capsys, "app", property_org),
        ]
    )
    auth = tmp_path / "auth"
    assert sensord_main(["broker", "config", "--out", str(auth)]) == 0
    capsys.readouterr()
    broker = Broker(tmp_path / "secured-broker", auth_dir=auth)
    broker.start()
    try:
        sensord = daemon(
            SENSORD_DATABASE__DSN=dsn,
            SENSORD_MQTT__PORT=str(broker.sensord_port),
            SENSORD_MQTT__USERNAME="sensord.main",
            SENSORD_MQTT__PASSWORD=secrets["sensord.main"],
            SENSORD_MQTT__CLIENT_ID="sensord-main",
        )
        sensord.start()
        yield Secured(
            dsn,
            broker,
            sensord,
            secrets,
            SimDevice(detector_id, "smoke", street),
            SimDevice(other_id, "smoke", other_street),
            property_org,
            officer,
            pm_staff,
        )
        sensord.stop()
    finally:
        broker.stop()


def stored(dsn: str, device_id: str) -> int:
    with psycopg.connect(dsn) as db:
        row = db.execute("SELECT count(*) FROM readings WHERE device_id = %s", (device_id,))
        return int(row.fetchone()[0])  # type: ignore[index]


def test_the_generated_files_are_owner_only(tmp_path: Path, secured: Secured) -> None:
    auth = tmp_path / "auth"
    for name in ("passwords", "acl", "sensord-auth.conf"):
        assert stat.S_IMODE((auth / name).stat().st_mode) == 0o600, name
    assert secured.secrets["sensord.main"] not in (auth / "passwords").read_text()


def test_anonymous_and_wrong_passwords_are_refused(secured: Secured) -> None:
    with pytest.raises(ConnectionError, match="CONNACK reason 0x87"):
        RawClient(secured.broker.port, "anon")
    with pytest.raises(ConnectionError, match=r"CONNACK reason 0x8[67]"):
        RawClient(secured.broker.port, "x", username="gateway.gw1", password="guess")  # noqa: S106


def test_a_gateway_cannot_publish_for_a_device_not_its_own(secured: Secured) -> None:
    rng = random.Random(1)
    now = datetime.now(UTC)
    fake = reading(secured.detector, 1, now, rng, smoke=True, obscuration=12.0)
    own = reading(secured.other, 1, now, rng)
    gateway = secured.client("gateway.gw1")
    try:
        assert gateway.publish_acked(*fake) == NOT_AUTHORISED  # the forged fire alarm
        assert gateway.publish_acked(*own) == 0  # its own device's reading
    finally:
        gateway.disconnect()
    # The real detector, with its own credential, raises the real alarm.
    device = secured.client(f"device.{secured.detector.device_id}")
    try:
        assert device.publish_acked(*reading(secured.detector, 2, now, rng, smoke=True)) == 0
        # ...and may not publish as the other device either.
        assert device.publish_acked(*reading(secured.other, 3, now, rng)) == NOT_AUTHORISED
    finally:
        device.disconnect()
    wait_until(
        lambda: stored(secured.dsn, secured.other.device_id) == 1, 20, "the gateway's reading"
    )
    wait_until(lambda: len(sensor_orders(secured.dsn)) == 1, 30, "the real fire's order")
    assert stored(secured.dsn, secured.detector.device_id) == 1  # the real one, once
    with psycopg.connect(secured.dsn) as db:
        seqs = [r[0] for r in db.execute(
            "SELECT seq FROM readings WHERE device_id = %s", (secured.detector.device_id,)
        )]  # fmt: skip
    assert seqs == [2]


def test_nobody_but_sensord_publishes_notices(secured: Secured) -> None:
    fake = json.dumps({"v": 1, "type": "order.dispatch", "order_id": 1}).encode()
    topic = f"sensord/v1/{secured.detector.street}/dispatch/{secured.property_org}"
    with Listener(
        secured.broker.port,
        f"sensord/v1/+/dispatch/{secured.property_org}",
        username=f"app.{secured.property_org}",
        password=secured.secrets[f"app.{secured.property_org}"],
    ) as app:
        for user in (
            "gateway.gw1",
            f"device.{secured.detector.device_id}",
            f"staff.{secured.officer}",
        ):
            client = secured.client(user)
            try:
                assert client.publish_acked(topic, fake) == NOT_AUTHORISED, user
                reply = f"sensord/v1/{secured.detector.street}/orders/1/replies"
                assert client.publish_acked(reply, b'{"ok": true}') == NOT_AUTHORISED, user
            finally:
                client.disconnect()
        # A real notice reaches the app: the detector's alarm, dispatched by sensord.
        device = secured.client(f"device.{secured.detector.device_id}")
        try:
            now = datetime.now(UTC)
            rng = random.Random(2)
            assert device.publish_acked(*reading(secured.detector, 1, now, rng, smoke=True)) == 0
        finally:
            device.disconnect()
        wait_until(lambda: len(sensor_orders(secured.dsn)) == 1, 30, "the fire's order")
        order_id = sensor_orders(secured.dsn)[0]["id"]
        # The demo district's one property company owns a kitchen fire: it is told.
        wait_until(
            lambda: app.messages(lambda t, m: m.get("order", {}).get("id") == order_id),
            30,
            "the real notice",
        )
        assert all("message_id" in m for _, m in app.messages())  # none of them the forgery


def test_sensord_client_id_cannot_be_taken_over(secured: Secured) -> None:
    # Clients take their username as client id: asking for sensord's gives the gateway its own.
    connects = "sensord_mqtt_connects_total"
    before = secured.sensord.metrics().get(connects)
    hijacker = secured.client("gateway.gw1", client_id="sensord-main")
    try:
        rng = random.Random(3)
        now = datetime.now(UTC)
        assert hijacker.publish_acked(*reading(secured.other, 1, now, rng)) == 0
    finally:
        hijacker.disconnect()
    # sensord's session was not taken over: it is still connected and stores the reading.
    wait_until(lambda: stored(secured.dsn, secured.other.device_id) == 1, 20, "the reading")
    assert secured.sensord.metrics().get(connects) == before
    log = (secured.broker.workdir / "mosquitto.log").read_text()
    assert "as gateway.gw1 (" in log  # the broker named the hijacker by its username
    assert "Client sensord.main already connected" not in log


def fire_order(secured: Secured) -> dict[str, object]:
    """The detector's real alarm, and the order it raised (owned by the property company)."""
    device = secured.client(f"device.{secured.detector.device_id}")
    try:
        alarm = reading(secured.detector, 1, datetime.now(UTC), random.Random(4), smoke=True)
        assert device.publish_acked(*alarm) == 0
    finally:
        device.disconnect()
    wait_until(lambda: len(sensor_orders(secured.dsn)) == 1, 30, "the fire's order")
    order = sensor_orders(secured.dsn)[0]
    assert order["owner_org"] == secured.property_org
    return order


def send(secured: Secured, user: str, order: dict[str, object], segment: str, **body: str) -> int:
    """Publish a command as ``user`` on ``…/events/<segment>``; the PUBACK's reason code."""
    topic = f"sensord/v1/{order['street_id']}/orders/{order['id']}/events/{segment}"
    client = secured.client(user)
    try:
        return client.publish_acked(topic, json.dumps(body).encode())
    finally:
        client.disconnect()


def test_commands_are_bound_to_the_sender(secured: Secured) -> None:
    app = f"app.{secured.property_org}"
    officer = f"staff.{secured.officer}"
    order = fire_order(secured)
    listener = Listener(
        secured.broker.port,
        REPLIES,
        username=f"staff.{secured.pm_staff}",
        password=secured.secrets[f"staff.{secured.pm_staff}"],
    )
    with listener:
        # The app writes on the officer's segment: the broker refuses it.
        assert send(secured, app, order, officer, event="verify", by=secured.officer) == 0x87
        # On its own segment, as the officer: sensord refuses it, with a reason.
        code = send(secured, app, order, app, event="verify", by=secured.officer, request_id="v1")
        assert code == 0
        reply = reply_to(listener, "v1")
        assert reply["ok"] is False and reply["error"] == "unauthorised"
        assert f"{secured.officer} is not staff of {secured.property_org}" in reply["message"]
        # Cancelling the fire as the officer, then as its own staff: refused both times.
        send(
            secured, app, order, app, event="cancel", by=secured.officer, note="x", request_id="c1"
        )
        assert "is not staff of" in reply_to(listener, "c1")["message"]
        send(
            secured, app, order, app, event="cancel", by=secured.pm_staff, note="x", request_id="c2"
        )
        assert "only by the city-operations centre" in reply_to(listener, "c2")["message"]
        # A member of staff speaks for nobody else.
        send(secured, officer, order, officer, event="verify", by=secured.pm_staff, request_id="o1")
        assert "`by` must be" in reply_to(listener, "o1")["message"]
        # Legitimate: the app acknowledges as its own staff member.
        send(secured, app, order, app, event="ack", by=secured.pm_staff, request_id="a1")
        assert reply_to(listener, "a1")["ok"] is True
    metrics = secured.sensord.metrics()
    refusals = "sensord_order_command_refusals_total"
    assert metrics[f'{refusals}{{reason="outside_app_org"}}'] == 2
    assert metrics[f'{refusals}{{reason="safety_cancel"}}'] == 1
    assert metrics[f'{refusals}{{reason="by_not_sender"}}'] == 1
    with psycopg.connect(secured.dsn) as db:
        trail = db.execute(
            "SELECT event, actor FROM work_order_events WHERE order_id = %s ORDER BY id",
            (order["id"],),
        ).fetchall()
        state = db.execute("SELECT state FROM work_orders WHERE id = %s", (order["id"],))
        assert state.fetchone() == ("acknowledged",)
    assert ("ack", secured.pm_staff) in trail
    assert all(actor != secured.officer for _, actor in trail)
