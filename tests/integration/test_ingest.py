"""The ingest spine end to end: real broker, real TimescaleDB, the daemon as a process."""

from __future__ import annotations

import hashlib
import random
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.database import create_database, drop_database
from simulators.harness.processes import wait_until
from simulators.protocol import SimDevice, encode, reading, topic
from simulators.publisher import Publisher
from tests.support import REPO

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


def valid_messages(
    devices: list[SimDevice], per_device: int, start_seq: int = 0
) -> list[tuple[str, bytes]]:
    rng = random.Random(7)
    base = now() - timedelta(seconds=per_device)
    return [
        reading(device, seq, base + timedelta(seconds=seq), rng)
        for seq in range(start_seq, start_seq + per_device)
        for device in devices
    ]


def count(db: psycopg.Connection, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def assert_identity(metrics: dict[str, float]) -> None:
    dead = sum(v for k, v in metrics.items() if k.startswith("sensord_ingest_dead_letters_total"))
    assert metrics["sensord_ingest_received_messages_total"] == (
        metrics["sensord_ingest_stored_readings_total"]
        + metrics["sensord_ingest_duplicate_readings_total"]
        + dead
        + metrics["sensord_ingest_in_flight_messages"]
    )


def test_valid_and_malformed_messages_land_in_readings_and_dead_letters(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    smoke = devices(20, "smoke")
    elevator = devices(1, "elevator")[0]
    sensord = daemon()
    sensord.start()
    good = valid_messages(smoke, per_device=10)
    ts = now().isoformat()
    bad = {
        "bad_json": (topic(smoke[0]), b'{"ts": "oops'),
        "schema": (topic(smoke[0]), encode({"ts": ts, "seq": 1, "smoke": "yes"})),
        "unknown_device": (
            topic(SimDevice("SMK-nobody", "smoke", "jd01")),
            encode({"ts": ts, "seq": 1, "smoke": False}),
        ),
        "device_kind_mismatch": (
            topic(elevator, "smoke"),
            encode({"ts": ts, "seq": 1, "smoke": False}),
        ),
        "too_large": (topic(smoke[1]), b"{" + b" " * 20_000 + b"}"),
        "clock_skew": (
            topic(smoke[2]),
            encode({"ts": (now() + timedelta(hours=2)).isoformat(), "seq": 1, "smoke": False}),
        ),
        "bad_topic": ("sensord/v1/jd01/gas/GAS-1", encode({"ts": ts, "seq": 1})),
        "device_id_mismatch": (
            topic(smoke[3]),
            encode({"ts": ts, "seq": 1, "smoke": False, "device_id": "X"}),
        ),
    }
    with Publisher(port=broker.port) as publisher:
        publisher.publish(good + list(bad.values()))

    wait_until(
        lambda: count(db, "readings") + count(db, "dead_letters") >= len(good) + len(bad),
        20,
        "all stored",
    )
    time.sleep(0.3)  # anything extra would show up now
    assert count(db, "readings") == len(good)
    rows = db.execute("SELECT reason, topic, payload, detail FROM dead_letters").fetchall()
    # An oversized payload keeps only a prefix (ingest.dead_letter_max_bytes, 4096 by default).
    kept = {r: (t, p[:4096] if r == "too_large" else p) for r, (t, p) in bad.items()}
    assert {reason: (t, bytes(p)) for reason, t, p, _ in rows} == kept
    schema_detail = next(detail for reason, _, _, detail in rows if reason == "schema")
    assert "smoke" in schema_detail

    metrics = sensord.metrics()
    assert metrics["sensord_ingest_stored_readings_total"] == len(good)
    for reason in bad:
        assert metrics[f'sensord_ingest_dead_letters_total{{reason="{reason}"}}'] == 1
    assert_identity(metrics)
    assert metrics["sensord_ingest_in_flight_messages"] == 0
    assert sensord.terminate() == 0


def test_a_redelivered_message_is_stored_once(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    device = devices(1)[0]
    sensord = daemon()
    sensord.start()
    message = valid_messages([device], per_device=1)[0]
    with Publisher(port=broker.port) as publisher:
        publisher.publish([message, message, message])
    wait_until(
        lambda: sensord.metrics()["sensord_ingest_duplicate_readings_total"] == 2,
        10,
        "duplicates counted",
    )
    assert count(db, "readings") == 1
    assert_identity(sensord.metrics())


def test_readings_keep_device_time_and_values(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    device = devices(1, "elevator")[0]
    sensord = daemon()
    sensord.start()
    ts = (now() - timedelta(minutes=3)).replace(microsecond=123000)
    with Publisher(port=broker.port) as publisher:
        publisher.publish(
            [
                reading(
                    device,
                    41,
                    ts,
                    random.Random(1),
                    state="fault",
                    door="closed",
                    floor=5,
                    trapped=True,
                    fault_code="E21",
                    firmware_note="x",
                )
            ]
        )
    wait_until(lambda: count(db, "readings") == 1, 10, "the reading")
    row = db.execute(
        "SELECT ts, kind, seq, state, door, floor, trapped, fault_code, extra, received_at > ts"
        " FROM readings"
    ).fetchone()
    assert row == (
        ts,
        "elevator",
        41,
        "fault",
        "closed",
        5,
        True,
        "E21",
        {"firmware_note": "x"},
        True,
    )


def test_a_device_registered_while_running_is_accepted_without_restart(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    sensord = daemon()
    sensord.start()
    late = devices(1)[0]  # INSERT fires NOTIFY; the daemon reloads its directory
    wait_until(lambda: sensord.metrics()["sensord_registry_devices"] == 1, 10, "directory reload")
    with Publisher(port=broker.port) as publisher:
        publisher.publish(valid_messages([late], per_device=3))
    wait_until(lambda: count(db, "readings") == 3, 10, "readings of the new device")
    assert count(db, "dead_letters") == 0


def test_sigterm_flushes_acknowledges_and_exits_zero(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    fleet = devices(50)
    # Batches would wait 30 s; only the shutdown flush can store them in time.
    sensord = daemon(SENSORD_INGEST__BATCH_MAX_AGE_MS="30000")
    sensord.start()
    messages = valid_messages(fleet, per_device=20)
    with Publisher(port=broker.port) as publisher:
        publisher.publish(messages)
    wait_until(
        lambda: sensord.metrics()["sensord_ingest_in_flight_messages"] == len(messages),
        10,
        "all buffered",
    )
    assert count(db, "readings") == 0
    started = time.monotonic()
    assert sensord.terminate() == 0
    assert time.monotonic() - started < 10
    assert count(db, "readings") == len(messages)
    # Everything was acknowledged: a new session gets nothing redelivered.
    sensord.start()
    time.sleep(1.0)
    metrics = sensord.metrics()
    assert metrics["sensord_ingest_received_messages_total"] == 0
    assert sensord.terminate() == 0


def publish_in_background(
    port: int, messages: list[tuple[str, bytes]], chunk: int
) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with Publisher(port=port) as publisher:
                for start in range(0, len(messages), chunk):
                    publisher.publish(messages[start : start + chunk])
                    time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_stores_every_message_once(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    fleet = devices(100)
    messages = valid_messages(fleet, per_device=200)  # 20,000
    sensord = daemon()
    sensord.start()
    thread, errors = publish_in_background(broker.port, messages, chunk=500)
    wait_until(lambda: count(db, "readings") > 3000, 30, "stream under way")
    sensord.kill()
    killed_at = count(db, "readings")
    time.sleep(1.0)
    sensord.start()
    thread.join(120)
    assert not errors
    wait_until(lambda: count(db, "readings") == len(messages), 60, "every message stored")
    time.sleep(1.0)
    assert count(db, "readings") == len(messages)
    assert killed_at < len(messages)
    distinct = db.execute("SELECT count(DISTINCT (device_id, seq)) FROM readings").fetchone()
    assert distinct == (len(messages),)
    assert sensord.terminate() == 0


@pytest.mark.slow
def test_database_down_for_20_seconds_loses_nothing(
    db: psycopg.Connection,
    database_dsn: str,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    fleet = devices(100)
    messages = valid_messages(fleet, per_device=100)  # 10,000
    sensord = daemon()
    sensord.start()
    thread, errors = publish_in_background(broker.port, messages, chunk=100)
    wait_until(lambda: count(db, "readings") > 1000, 30, "stream under way")
    services = str(REPO / "scripts" / "services")
    subprocess.run([services, "db-stop"], check=True, capture_output=True, timeout=60)
    try:
        time.sleep(20)
        stalled = sensord.metrics()
        assert stalled["sensord_ingest_write_retries_total"] > 0
        assert stalled["sensord_ingest_in_flight_messages"] > 0
    finally:
        subprocess.run([services, "db-start"], check=True, capture_output=True, timeout=120)
    thread.join(120)
    assert not errors
    with psycopg.connect(database_dsn, autocommit=True) as fresh:  # the outage killed `db`
        wait_until(lambda: count(fresh, "readings") == len(messages), 60, "every message stored")
    metrics = sensord.metrics()
    assert metrics["sensord_ingest_stored_readings_total"] == len(messages)
    assert_identity(metrics)
    assert sensord.terminate() == 0


@pytest.mark.slow
def test_broker_restart_resumes_consumption(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    fleet = devices(10)
    sensord = daemon()
    sensord.start()
    first = valid_messages(fleet, per_device=10)
    with Publisher(port=broker.port) as publisher:
        publisher.publish(first)
    wait_until(lambda: count(db, "readings") == len(first), 10, "first burst")
    broker.restart()
    wait_until(sensord.ready, 30, "session back after broker restart")
    second = valid_messages(fleet, per_device=10, start_seq=10)
    with Publisher(port=broker.port) as publisher:
        publisher.publish(second)
    wait_until(lambda: count(db, "readings") == len(first) + len(second), 20, "second burst")
    metrics = sensord.metrics()
    assert metrics["sensord_mqtt_connects_total"] >= 2
    assert sensord.terminate() == 0
    # Messages for the stopped daemon wait in its session, which survives a broker restart.
    third = valid_messages(fleet, per_device=10, start_seq=20)
    with Publisher(port=broker.port) as publisher:
        publisher.publish(third)
    broker.restart()
    sensord.start()
    total = len(first) + len(second) + len(third)
    wait_until(lambda: count(db, "readings") == total, 20, "messages queued across the restart")
    assert sensord.terminate() == 0


def test_two_instances_in_a_shared_subscription_split_the_load(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    fleet = devices(50)
    first = daemon(SENSORD_MQTT__SHARED_GROUP="sensord")
    second = daemon(SENSORD_MQTT__SHARED_GROUP="sensord")
    first.start()
    second.start()
    messages = valid_messages(fleet, per_device=40)
    with Publisher(port=broker.port) as publisher:
        publisher.publish(messages)
    wait_until(lambda: count(db, "readings") == len(messages), 20, "all stored")
    received = [d.metrics()["sensord_ingest_received_messages_total"] for d in (first, second)]
    assert sum(received) == len(messages)
    assert min(received) > 0
    assert first.terminate() == 0
    assert second.terminate() == 0


def test_the_daemon_refuses_to_run_on_an_unmigrated_database(
    broker: Broker, daemon: Callable[..., Daemon]
) -> None:
    dsn = create_database()
    try:
        sensord = daemon(SENSORD_DATABASE__DSN=dsn)
        sensord.start(wait_ready=False)
        assert sensord.process is not None
        assert sensord.process.wait(30) == 2
        assert "sensord migrate" in sensord.log_tail()
    finally:
        drop_database(dsn)


def alerts_of(db: psycopg.Connection, device_id: str) -> list[str]:
    rows = db.execute("SELECT category FROM alerts WHERE device_id = %s", (device_id,))
    return [row[0] for row in rows]


def test_a_reading_the_database_refuses_raises_no_alert_and_costs_only_itself(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    smoke = devices(40, "smoke")
    refused, alarmed = smoke[0], smoke[1]
    # A refusal decode cannot foresee: the database itself rejects this device's rows.
    db.execute(
        "CREATE FUNCTION refuse_reading() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'refused by test' USING ERRCODE = 'check_violation'; END $$"
    )
    db.execute(
        "CREATE TRIGGER refuse_reading BEFORE INSERT ON readings FOR EACH ROW"
        f" WHEN (NEW.device_id = '{refused.device_id}') EXECUTE FUNCTION refuse_reading()"
    )
    try:
        sensord = daemon(SENSORD_INGEST__BATCH_MAX_AGE_MS="500")  # one batch, most likely
        sensord.start()
        base = now() - timedelta(seconds=60)
        quiet = [
            (topic(d), encode({"ts": (base + timedelta(seconds=n)).isoformat(), "seq": n,
                               "smoke": False}))
            for n in range(10)
            for d in smoke[2:]
        ]  # fmt: skip
        alarm = {"ts": now().isoformat(), "seq": 99, "smoke": True, "obscuration": 12.0}
        bad = (topic(refused), encode(alarm))
        good = (topic(alarmed), encode(alarm))
        with Publisher(port=broker.port) as publisher:
            publisher.publish([*quiet[:150], bad, *quiet[150:], good])
        total = len(quiet) + 2
        wait_until(
            lambda: count(db, "readings") + count(db, "dead_letters") >= total, 20, "all stored"
        )
        wait_until(lambda: alerts_of(db, alarmed.device_id) == ["fire"], 10, "the real alarm")
        assert count(db, "readings") == len(quiet) + 1
        rows = db.execute("SELECT reason, topic, payload, detail FROM dead_letters").fetchall()
        assert [(r, t, bytes(p)) for r, t, p, _ in rows] == [("storage_rejected", *bad)]
        assert "refused by test" in rows[0][3]
        assert alerts_of(db, refused.device_id) == []  # its alarm never reached the rules
        metrics = sensord.metrics()
        assert metrics['sensord_ingest_dead_letters_total{reason="storage_rejected"}'] == 1
        assert metrics["sensord_ingest_write_splits_total"] > 0
        assert_identity(metrics)
        assert sensord.terminate() == 0
    finally:
        db.execute("DROP TRIGGER refuse_reading ON readings")
        db.execute("DROP FUNCTION refuse_reading()")


def test_nan_in_an_extra_field_is_a_schema_dead_letter_and_raises_no_alert(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    device = devices(1, "smoke")[0]
    sensord = daemon()
    sensord.start()
    raw = (
        f'{{"ts": "{now().isoformat()}", "seq": 1, "smoke": true, "probe": {{"t": NaN}}}}'
    ).encode()
    with Publisher(port=broker.port) as publisher:
        publisher.publish([(topic(device), raw)])
    wait_until(lambda: count(db, "dead_letters") == 1, 10, "dead-lettered")
    row = db.execute("SELECT reason, detail, payload FROM dead_letters").fetchone()
    assert row is not None
    assert (row[0], row[1], bytes(row[2])) == (
        "schema",
        "probe.t: NaN and Infinity are not numbers",
        raw,
    )
    assert count(db, "readings") == 0
    assert alerts_of(db, device.device_id) == []
    assert sensord.terminate() == 0


def test_oversized_payloads_are_dead_lettered_as_a_prefix_with_size_and_hash(
    db: psycopg.Connection,
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> None:
    device = devices(1, "smoke")[0]
    sensord = daemon(SENSORD_INGEST__DEAD_LETTER_MAX_BYTES="1024")
    sensord.start()
    payloads = [b'{"pad": "' + bytes([65 + n % 26]) * 249_000 + b'"}' for n in range(20)]
    with Publisher(port=broker.port) as publisher:
        publisher.publish([(topic(device), p) for p in payloads])
    wait_until(lambda: count(db, "dead_letters") == len(payloads), 20, "dead-lettered")
    rows = db.execute(
        "SELECT reason, payload, payload_size, payload_sha256 FROM dead_letters ORDER BY id"
    ).fetchall()
    assert sorted((r, bytes(p), n, bytes(h)) for r, p, n, h in rows) == sorted(
        ("too_large", p[:1024], len(p), hashlib.sha256(p).digest()) for p in payloads
    )
    stored = db.execute("SELECT sum(octet_length(payload)) FROM dead_letters").fetchone()
    assert stored is not None and stored[0] == 1024 * len(payloads)
    metrics = sensord.metrics()
    assert metrics['sensord_ingest_truncated_dead_letters_total{reason="too_large"}'] == 20
    assert metrics["sensord_ingest_dead_letter_dropped_bytes_total"] == sum(
        len(p) - 1024 for p in payloads
    )
    assert_identity(metrics)
    assert sensord.terminate() == 0
