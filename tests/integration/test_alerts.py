"""Rules on the ingest path, end to end: fleet incidents become exactly the expected alerts."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from simulators.fleet import read_csv_registry
from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.processes import wait_until
from simulators.publisher import Publisher
from simulators.schedule import messages, plan_from_run
from tests.support import REPO
from tests.support.fleet import run_fleet, wait_for_all_readings

pytestmark = pytest.mark.integration


def test_a_night_of_indoor_charging_and_a_failing_battery(
    broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path], tmp_path: Path
) -> None:
    dsn, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=dsn)
    sensord.start()
    # "22:00" is the latest 22:00 +08:00 that lets the 8 simulated hours end by now.
    records = run_fleet(tmp_path, district, broker.port, 3,
                        ("ebike_charging:place=dwelling", "low_battery"),
                        "--duration", "8h", "--start", "22:00")  # fmt: skip
    wait_for_all_readings(sensord, records)
    expected = {
        (str(r["device_id"]), r["expected"]["alert"])  # type: ignore[index]
        for r in records
        if r["record"] == "incident"
    }
    with psycopg.connect(dsn) as db:
        raised = db.execute(
            "SELECT device_id, category FROM alerts WHERE category <> 'inspection_due'"
        ).fetchall()
    assert set(raised) == expected
    assert len(raised) == len(expected)


def test_each_injected_incident_raises_exactly_one_alert_and_nothing_else(
    tmp_path: Path,
    broker: Broker,
    daemon: Callable[..., Daemon],
    demo_district: tuple[str, Path],
) -> None:
    alerts_db, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=alerts_db)
    sensord.start()
    records = run_fleet(tmp_path, district, broker.port, seed=5)
    wait_for_all_readings(sensord, records)
    incidents = [r for r in records if r["record"] == "incident"]
    expected = {(f"device:{i['device_id']}", i["expected"]["alert"]) for i in incidents}  # type: ignore[index]
    with psycopg.connect(alerts_db) as db:
        # Sensor-driven alerts; inspection_due comes from the registry's dates instead.
        rows = db.execute(
            "SELECT subject, category, severity, state, count FROM alerts"
            " WHERE category <> 'inspection_due' ORDER BY id"
        ).fetchall()
        events = db.execute(
            "SELECT count(*) FROM alert_events JOIN alerts ON alerts.id = alert_id"
            " WHERE category <> 'inspection_due'"
        ).fetchone()
        inspections = {
            row[0]
            for row in db.execute(
                "SELECT device_id FROM alerts"
                " WHERE category = 'inspection_due' AND state = 'firing'"
            )
        }
        due = {
            row[0]
            for row in db.execute(
                "SELECT device_id FROM devices WHERE inspection_due <= current_date + 14"
            )
        }
    assert inspections == due  # the scheduled registry check, once at start
    assert {(subject, category) for subject, category, *_ in rows} == expected
    assert len(rows) == len(expected)  # exactly one each, none elsewhere
    by_category = {category: (severity, state) for _, category, severity, state, _ in rows}
    assert by_category["elevator_entrapment"][0] == "critical"
    assert by_category["fire"][0] in ("major", "critical")
    # The incidents ended within the hour, so their alerts cleared.
    assert {state for _, state in by_category.values()} == {"cleared"}
    assert events is not None and events[0] >= 2 * len(rows)
    metrics = sensord.metrics()
    assert metrics['sensord_alerts_fired_total{category="fire",severity="major"}'] == 1


def test_a_restart_neither_duplicates_nor_loses_alert_state(
    tmp_path: Path,
    broker: Broker,
    daemon: Callable[..., Daemon],
    demo_district: tuple[str, Path],
) -> None:
    alerts_db, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=alerts_db)
    sensord.start()
    records = run_fleet(tmp_path, district, broker.port, seed=9)
    wait_for_all_readings(sensord, records)
    with psycopg.connect(alerts_db) as db:
        before = db.execute("SELECT id, state, count FROM alerts ORDER BY id").fetchall()
        states = db.execute("SELECT count(*) FROM rule_state").fetchone()
    assert before and states and states[0] > 0
    assert sensord.terminate() == 0
    sensord.start()  # resumes rule states from the database
    # Replaying the same stream (what a broker redelivers after a crash) changes nothing.
    plan = plan_from_run(records[0], read_csv_registry(district))
    replay = [(m.topic, m.payload) for m in messages(plan)]
    with Publisher(port=broker.port) as publisher:
        publisher.publish(replay)
    try:
        # Every replayed reading committed (as a duplicate), so any alert change it
        # caused is visible below.
        wait_until(
            lambda: (
                sensord.metrics().get("sensord_ingest_received_messages_total", 0) >= len(replay)
                and sensord.metrics().get("sensord_ingest_in_flight_messages", 1) == 0
            ),
            30,
            "the replay to be committed",
        )
    except TimeoutError:
        pytest.fail(f"{len(replay)} {sensord.metrics()} {sensord.log_tail()}")
    with psycopg.connect(alerts_db) as db:
        after = db.execute("SELECT id, state, count FROM alerts ORDER BY id").fetchall()
    assert after == before


def test_a_silent_device_goes_offline_and_its_next_message_clears_it(
    tmp_path: Path,
    broker: Broker,
    daemon: Callable[..., Daemon],
    demo_district: tuple[str, Path],
) -> None:
    alerts_db, _ = demo_district
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "routing.toml").write_text((REPO / "rules" / "routing.toml").read_text())
    shipped = (REPO / "rules" / "sensors.toml").read_text()
    # Real time: 3 missed elevator heartbeats (60 s) would take 3 minutes; 0.05 takes 3 s.
    (rules / "sensors.toml").write_text(
        shipped.replace("missed_heartbeats = 3", "missed_heartbeats = 0.05")
    )
    sensord = daemon(
        SENSORD_DATABASE__DSN=alerts_db,
        SENSORD_RULES__DIRECTORY=str(rules),
        SENSORD_RULES__ABSENCE_CHECK_S="0.5",
    )
    sensord.start()
    with psycopg.connect(alerts_db, autocommit=True) as db:
        elevators = [
            row[0] for row in db.execute("SELECT device_id FROM devices WHERE kind = 'elevator'")
        ]
        street = db.execute("SELECT street FROM devices LIMIT 1").fetchone()

        def open_offline() -> set[str]:
            return {
                row[0]
                for row in db.execute(
                    "SELECT device_id FROM alerts WHERE category = 'device_offline'"
                    " AND state = 'firing'"
                )
            }

        wait_until(lambda: open_offline() == set(elevators), 20, "elevators offline")
        assert street is not None
        back = elevators[0]
        ts = datetime.now(UTC).isoformat()
        with Publisher(port=broker.port) as publisher:
            publisher.publish(
                [
                    (
                        f"sensord/v1/{street[0]}/heartbeat/{back}",
                        json.dumps({"ts": ts, "seq": 1}).encode(),
                    )
                ]
            )
        wait_until(lambda: back not in open_offline(), 10, "the heartbeat to clear it")
        cleared = db.execute(
            "SELECT count(*) FROM alerts WHERE device_id = %s AND state = 'cleared'", (back,)
        ).fetchone()
    assert cleared == (1,)


def test_a_forged_future_reading_does_not_delay_the_real_alarm(
    broker: Broker, daemon: Callable[..., Daemon], demo_district: tuple[str, Path]
) -> None:
    """Issue 11's attack, end to end: one reading dated 50 s ahead (inside the tolerance),
    then the detector's real alarm. The alert fires within a second of the alarm's receipt,
    on the rules' default receive-time clock."""
    dsn, _ = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=dsn, SENSORD_RULES__CLOCK="receive")
    sensord.start()
    with psycopg.connect(dsn, autocommit=True) as db:
        row = db.execute(
            "SELECT device_id, street FROM devices WHERE kind = 'smoke' ORDER BY device_id LIMIT 1"
        ).fetchone()
        assert row is not None
        device, street = row
        topic = f"sensord/v1/{street}/smoke/{device}"

        def stored() -> int:
            found = db.execute(
                "SELECT count(*) FROM readings WHERE device_id = %s", (device,)
            ).fetchone()
            return found[0] if found else 0

        now = datetime.now(UTC)
        forged = {"ts": (now + timedelta(seconds=50)).isoformat(), "seq": 900_000}
        with Publisher(port=broker.port) as publisher:
            publisher.publish([(topic, json.dumps({**forged, "smoke": False}).encode())])
            wait_until(lambda: stored() == 1, 10, "the forged reading to be stored")
            real = {"ts": datetime.now(UTC).isoformat(), "seq": 1, "smoke": True}
            publisher.publish([(topic, json.dumps({**real, "obscuration": 14.0}).encode())])
        wait_until(lambda: stored() == 2, 10, "the real alarm to be stored")
        fired = db.execute(
            "SELECT e.at - r.received_at FROM alerts a"
            " JOIN alert_events e ON e.alert_id = a.id AND e.event = 'fired'"
            " JOIN readings r ON r.device_id = a.device_id AND r.seq = 1"
            " WHERE a.device_id = %s AND a.rule = 'smoke_alarm' AND a.state = 'firing'",
            (device,),
        ).fetchall()
    # Committed with the reading that raised it (same transaction), so no wait is needed.
    assert len(fired) == 1
    assert timedelta(0) <= fired[0][0] < timedelta(seconds=1)
