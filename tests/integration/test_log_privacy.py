"""The daemon's log carries no personal data and no secrets, whatever it is sent.

The real daemon, with the demo district and both passwords configured through
SENSORD_* variables, logging JSON at DEBUG (everything it has to say): a fire
in the home of an elderly resident living alone, hostile messages carrying a
resident's name and phone, a reload and a stop. Its stderr must then hold no
name or phone from the registry and neither password, and be one JSON event
per line.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.processes import wait_until
from simulators.publisher import Publisher

pytestmark = pytest.mark.integration

# The demo district has smoke detectors in its public kitchens only: the test
# installs one in the home of an elderly resident living alone.
_ELDERLY_ALONE = """
    SELECT a.address_id, a.street_id, r.name, r.phone
    FROM residents r
    JOIN households h ON h.household_id = r.household_id
    JOIN addresses a ON a.address_id = h.address_id
    WHERE r.tags @> ARRAY['elderly', 'living_alone'] AND r.phone IS NOT NULL
    ORDER BY r.resident_id
    LIMIT 1
"""
_INSTALL = """
    INSERT INTO devices (device_id, kind, street, address_id, model, heartbeat_s)
    VALUES (%s, 'smoke', %s, %s, 'SD-210', 3600)
"""
DEVICE = "SMK-PRIVACY1"


def _without_password(dsn: str) -> tuple[str, str]:
    """``postgresql://user:pw@host/db`` -> (``postgresql://user@host/db``, ``pw``)."""
    scheme, rest = dsn.split("://", 1)
    credentials, where = rest.split("@", 1)
    user, password = credentials.split(":", 1)
    return f"{scheme}://{user}@{where}", password


def _appears(value: str, text: str) -> bool:
    """``value`` in ``text`` as is, as UTF-8 bytes repr, or \\u-escaped."""
    forms = {value, repr(value.encode())[2:-1], value.encode("unicode_escape").decode()}
    return any(form in text for form in forms)


def _events(daemon: Daemon) -> tuple[str, list[dict[str, object]]]:
    text = daemon.log_path.read_text(encoding="utf-8")
    events = [json.loads(line) for line in text.splitlines()]  # every line is one JSON event
    for event in events:
        assert isinstance(event, dict)
        assert {"ts", "level", "logger", "msg"} <= set(event), event
    return text, events


def test_the_log_holds_no_personal_data_and_no_secrets(
    broker: Broker,
    daemon: Callable[..., Daemon],
    demo_district: tuple[str, Path],
) -> None:
    dsn, _ = demo_district
    bare_dsn, db_password = _without_password(dsn)
    mqtt_password = f"mqtt-pw-{uuid.uuid4().hex}"
    wrong_db_password = f"db-pw-{uuid.uuid4().hex}"
    common = {
        "SENSORD_DATABASE__DSN": bare_dsn,
        "SENSORD_MQTT__USERNAME": "sensord",
        "SENSORD_MQTT__PASSWORD": mqtt_password,  # the test broker admits anyone
        "SENSORD_LOG__FORMAT": "json",
        "SENSORD_LOG__LEVEL": "DEBUG",
    }
    with psycopg.connect(dsn) as db:
        home = db.execute(_ELDERLY_ALONE).fetchone()
        assert home is not None, "the demo district has an elderly resident living alone"
        address_id, street, name, phone = home
        db.execute(_INSTALL, (DEVICE, street, address_id))
        people = db.execute(
            "SELECT name, phone FROM residents UNION ALL SELECT name, phone FROM staff"
        ).fetchall()
    device_id = DEVICE

    # A wrong database password first: the start-up retries log the connection error.
    refused = daemon(**common, SENSORD_DATABASE__PASSWORD=wrong_db_password)
    refused.start(wait_ready=False)
    wait_until(
        lambda: refused.log_path.read_text().count("database not reachable yet") >= 2,
        30,
        "two refused connection attempts",
    )
    assert refused.terminate() == 0

    sensord = daemon(**common, SENSORD_DATABASE__PASSWORD=db_password)
    sensord.start()
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    topic = f"sensord/v1/{street}/smoke/{device_id}"
    fire = {"ts": now, "seq": 1, "smoke": True, "obscuration": 14.0, "temp_c": 48.0}
    hostile = [
        (topic, f'{{"ts": "{now}", "seq": 2, "note": "{name} {phone}"'.encode()),  # bad_json
        (topic, json.dumps({"ts": now, "seq": "3", "owner": name, "phone": phone}).encode()),
        (f"sensord/v1/{street}/smoke/{phone}", json.dumps({"ts": now, "seq": 4}).encode()),
        (f"sensord/v1/{street}/smoke/{name}", json.dumps({"ts": now, "seq": 5}).encode()),
    ]
    with Publisher(port=broker.port) as publisher:
        publisher.publish([(topic, json.dumps(fire).encode()), *hostile])
    with psycopg.connect(dsn, autocommit=True) as db:
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM alerts WHERE device_id = %s AND severity = 'critical'",
                    (device_id,),
                ).fetchone()
                == (1,)
            ),
            20,
            "the critical fire alert",
        )
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM dead_letters WHERE topic = ANY(%s)",
                    ([topic for topic, _ in hostile],),
                ).fetchone()
                == (len(hostile),)
            ),
            20,
            "every hostile message dead-lettered",
        )
        # The order's notices carry the residents' names and phones in full (the grid
        # worker's copy): they must have gone out before the log is read.
        wait_until(lambda: _notices_sent(db, device_id), 20, "the fire order's notices sent")
    assert sensord.process is not None
    sensord.process.send_signal(signal.SIGHUP)  # a reload logs the registry's counts
    wait_until(lambda: "SIGHUP: reloading" in sensord.log_path.read_text(), 10, "the reload")
    assert sensord.terminate() == 0

    for run in (refused, sensord):
        raw, events = _events(run)
        assert events, f"{run.log_path} is empty"
        # The file, and its strings decoded: a name may hide in a bytes repr (\\xe7...).
        text = raw + "\n".join(str(value) for event in events for value in event.values())
        leaked = sorted(
            {value for person in people for value in person if value and _appears(value, text)}
        )
        assert not leaked, f"personal data in the log: {len(leaked)} values, e.g. {leaked[:1]}"
        assert mqtt_password not in text
        assert wrong_db_password not in text
        for form in (f":{db_password}@", f"password={db_password}", f'password": "{db_password}'):
            assert form not in text
    _, refused_events = _events(refused)
    errors = [e for e in refused_events if e["msg"] == "database not reachable yet"]
    assert errors and all("password authentication failed" in str(e["error"]) for e in errors)
    _, events = _events(sensord)
    assert any(e["msg"] == "sensord stopped" for e in events)


def _notices_sent(db: psycopg.Connection, device_id: str) -> bool:
    row = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE o.sent_at IS NULL) FROM outbox o"
        " JOIN work_orders w ON w.id = o.order_id WHERE w.device_id = %s",
        (device_id,),
    ).fetchone()
    return row is not None and row[0] > 0 and row[1] == 0
