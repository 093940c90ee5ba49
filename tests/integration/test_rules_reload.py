"""SIGHUP reloads the rule directory of the running daemon: all or nothing, never fatal."""

from __future__ import annotations

import random
import shutil
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from sensord.adapters.migrations import migrate
from sensord.paths import shipped
from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.database import create_database, drop_database
from simulators.harness.processes import wait_until
from simulators.protocol import SimDevice, reading
from simulators.publisher import Publisher
from tests.support import REPO

pytestmark = pytest.mark.integration

OK = 'sensord_rules_reloads_total{result="ok"}'
ERROR = 'sensord_rules_reloads_total{result="error"}'
LANES = [SimDevice(f"FL-reload-{n}", "fire_lane", "jd01") for n in range(3)]
BROKEN = """\
[[rule]]
name = "gas_leak"
type = "state"
kinds = ["gas"]
category = "fire"
severity = "major"
when = "ppm >"
"""


@pytest.fixture
def reload_db() -> Iterator[str]:
    dsn = create_database()
    migrate(dsn, shipped("migrations"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for lane in LANES:
            conn.execute(
                "INSERT INTO devices (device_id, kind, street) VALUES (%s, %s, %s)",
                (lane.device_id, lane.kind, lane.street),
            )
    yield dsn
    drop_database(dsn)


def on_a_copy_of_the_rules(
    tmp_path: Path, daemon: Callable[..., Daemon], dsn: str
) -> tuple[Path, Daemon]:
    """A started daemon reading its rules and routing policy from a copy we can edit."""
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    sensord = daemon(SENSORD_DATABASE__DSN=dsn, SENSORD_RULES__DIRECTORY=str(rules))
    sensord.start()
    return rules, sensord


def blocked_for(lane: SimDevice, seconds: int, start: datetime) -> list[tuple[str, bytes]]:
    """The lane reports blocked every 30 s for ``seconds`` from ``start`` (device time)."""
    rng = random.Random(1)
    return [
        reading(lane, seq, start + timedelta(seconds=30 * seq), rng, blocked=True)
        for seq in range(seconds // 30 + 1)
    ]


def publish_and_store(sensord: Daemon, broker: Broker, messages: list[tuple[str, bytes]]) -> None:
    before = sensord.metrics().get("sensord_ingest_stored_readings_total", 0)
    with Publisher(port=broker.port) as publisher:
        publisher.publish(messages)
    wait_until(
        lambda: sensord.metrics()["sensord_ingest_stored_readings_total"] >= before + len(messages),
        30,
        "the readings to be stored",
    )


def alerted(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as db:
        rows = db.execute("SELECT device_id FROM alerts WHERE rule = 'fire_lane_blocked'")
        return {str(device) for (device,) in rows.fetchall()}


def hup(sensord: Daemon, counter: str, expected: float, timeout_s: float = 15) -> None:
    assert sensord.process is not None
    sensord.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: sensord.metrics()[counter] == expected, timeout_s, f"{counter} == {expected}"
    )
    assert sensord.process.poll() is None, sensord.log_tail()


def test_sighup_refuses_a_broken_rule_set_keeps_running_and_applies_a_fixed_edit(
    tmp_path: Path,
    broker: Broker,
    daemon: Callable[..., Daemon],
    reload_db: str,
) -> None:
    rules, sensord = on_a_copy_of_the_rules(tmp_path, daemon, reload_db)
    assert (sensord.metrics()[OK], sensord.metrics()[ERROR]) == (0, 0)

    # A half-written file: the whole set is refused, the running set stays.
    (rules / "broken.toml").write_text(BROKEN)
    hup(sensord, ERROR, 1)
    log = sensord.log_path.read_text()
    assert "rule reload refused" in log
    assert "broken.toml: gas_leak: kinds" in log and "broken.toml: gas_leak: when" in log
    assert sensord.metrics()[OK] == 0

    # Still the shipped set: 11 minutes blocked fires (for_s 600), 3 minutes does not.
    start = datetime.now(UTC) - timedelta(minutes=20)
    publish_and_store(
        sensord, broker, blocked_for(LANES[0], 660, start) + blocked_for(LANES[1], 180, start)
    )
    assert alerted(reload_db) == {LANES[0].device_id}

    # Fixed: the next SIGHUP loads it.
    (rules / "broken.toml").unlink()
    hup(sensord, OK, 1)
    assert sensord.metrics()[ERROR] == 1

    # An edit takes effect from the next batch: fire_lane_blocked now fires after 2 minutes.
    shipped = (rules / "sensors.toml").read_text()
    edited = shipped.replace("for_s = 600 ", "for_s = 120 ")
    assert edited != shipped
    (rules / "sensors.toml").write_text(edited)
    hup(sensord, OK, 2)
    publish_and_store(sensord, broker, blocked_for(LANES[2], 180, start))
    assert alerted(reload_db) == {LANES[0].device_id, LANES[2].device_id}
    assert sensord.terminate() == 0


def test_a_condition_with_is_is_refused_like_any_invalid_file(
    tmp_path: Path,
    broker: Broker,
    daemon: Callable[..., Daemon],
    reload_db: str,
) -> None:
    rules, sensord = on_a_copy_of_the_rules(tmp_path, daemon, reload_db)
    (rules / "extra.toml").write_text(
        BROKEN.replace('kinds = ["gas"]', 'kinds = ["fire_lane"]').replace(
            'when = "ppm >"', 'when = "blocked is True"'
        )
    )
    try:
        hup(sensord, ERROR, 1, timeout_s=5)
        assert sensord.metrics()[OK] == 0
        assert "extra.toml: gas_leak: when" in sensord.log_path.read_text()
    finally:
        assert sensord.terminate() == 0


POLICY_OK = 'sensord_dispatch_policy_reloads_total{result="ok"}'
POLICY_ERROR = 'sensord_dispatch_policy_reloads_total{result="error"}'


def test_sighup_reloads_the_routing_policy_all_or_nothing(
    tmp_path: Path, broker: Broker, daemon: Callable[..., Daemon], reload_db: str
) -> None:
    rules, sensord = on_a_copy_of_the_rules(tmp_path, daemon, reload_db)
    shipped = (rules / "routing.toml").read_text()
    # A route to an unknown category and no catch-all SLA: refused, the running policy stays.
    (rules / "routing.toml").write_text(
        shipped.replace('category = "fire_lane_blocked"', 'category = "gas"', 1).replace(
            "[[sla]]\nack_s = 3600", '[[sla]]\ncategory = "fire"\nack_s = 3600'
        )
    )
    hup(sensord, POLICY_ERROR, 1)
    log = sensord.log_path.read_text()
    assert "routing reload refused" in log
    assert "route #" in log and "the last [[sla]] must match every order" in log
    assert sensord.metrics()[POLICY_OK] == 0
    # Fixed: loaded on the next SIGHUP; the daemon never stopped.
    (rules / "routing.toml").write_text(shipped)
    hup(sensord, POLICY_OK, 1)
    assert sensord.terminate() == 0
