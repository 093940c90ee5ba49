"""Absence rules (device_offline) on the pure engine: server clock, restart-safe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sensord.adapters.rule_files import load_rules
from sensord.core.messages import Reading
from sensord.core.rules.engine import RuleEngine
from sensord.core.rules.state import Outcome

RULES = load_rules(Path(__file__).resolve().parents[2] / "rules")
START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FLEET = {"FL-1": ("fire_lane", 600), "EL-1": ("elevator", 60)}  # heartbeat_s from the registry


def no_context(device_id: str) -> dict[str, object]:
    return {}


def heartbeat(device_id: str, at: datetime) -> Reading:
    return Reading(at, at, device_id, "heartbeat", int(at.timestamp()))


def offline(engine: RuleEngine, at: datetime) -> list[tuple[Outcome, str]]:
    return [(e.outcome, e.device_id) for e in engine.check_absence(at, FLEET, no_context).effects]


def test_a_device_never_heard_from_fires_after_three_intervals_from_the_start() -> None:
    engine = RuleEngine(RULES, started_at=START)
    assert offline(engine, START + timedelta(seconds=179)) == []
    assert offline(engine, START + timedelta(seconds=181)) == [(Outcome.FIRED, "EL-1")]
    assert offline(engine, START + timedelta(seconds=400)) == []  # once, not every check
    assert offline(engine, START + timedelta(seconds=1801)) == [(Outcome.FIRED, "FL-1")]


def test_the_next_message_clears_it() -> None:
    engine = RuleEngine(RULES, started_at=START)
    offline(engine, START + timedelta(seconds=200))
    back = START + timedelta(seconds=210)
    effects = engine.evaluate([heartbeat("EL-1", back)], no_context).effects
    assert [(e.outcome, e.rule.category) for e in effects] == [(Outcome.CLEARED, "device_offline")]
    assert offline(engine, back + timedelta(seconds=179)) == []
    assert offline(engine, back + timedelta(seconds=181)) == [(Outcome.FIRED, "EL-1")]


def test_a_redelivered_message_does_not_bring_an_offline_device_back() -> None:
    """The broker sending an evaluated message again says nothing about the device now."""
    engine = RuleEngine(RULES, started_at=START)
    beat = heartbeat("EL-1", START + timedelta(seconds=10))
    engine.evaluate([beat], no_context)
    assert offline(engine, START + timedelta(seconds=200)) == [(Outcome.FIRED, "EL-1")]
    again = beat._replace(received_at=START + timedelta(seconds=210))
    assert engine.evaluate([again], no_context).effects == []
    later = heartbeat("EL-1", START + timedelta(seconds=220))
    effects = engine.evaluate([later], no_context).effects
    assert [(e.outcome, e.rule.category) for e in effects] == [(Outcome.CLEARED, "device_offline")]


def test_a_restart_raises_no_storm_and_forgets_no_device() -> None:
    before = RuleEngine(RULES, started_at=START)
    before.evaluate([heartbeat("FL-1", START), heartbeat("EL-1", START)], no_context)
    fired = before.check_absence(START + timedelta(seconds=200), FLEET, no_context)
    assert [e.device_id for e in fired.effects] == ["EL-1"]
    # Restart 10 minutes later: states and last receipts come back from the database.
    restart = START + timedelta(minutes=10)
    after = RuleEngine(
        RULES, fired.changed, started_at=restart, last_received={"FL-1": START, "EL-1": START}
    )
    assert offline(after, restart) == []  # EL-1 is already offline; FL-1 still within 30 min
    assert offline(after, START + timedelta(seconds=1801)) == [(Outcome.FIRED, "FL-1")]


def test_inspection_due_fires_within_the_horizon_and_clears_when_the_date_moves() -> None:
    engine = RuleEngine(RULES, started_at=START)
    today = START.date()

    def check(due: dict[str, tuple[str, object]]) -> list[tuple[Outcome, str]]:
        evaluation = engine.check_inspections(START, due, no_context)  # type: ignore[arg-type]
        return [(e.outcome, e.device_id) for e in evaluation.effects]

    soon = {"EL-1": ("elevator", today + timedelta(days=10)), "EL-2": ("elevator", None)}
    assert check(soon) == [(Outcome.FIRED, "EL-1")]
    assert check(soon) == []  # once
    inspected = {"EL-1": ("elevator", today + timedelta(days=365)), "EL-2": ("elevator", None)}
    assert check(inspected) == [(Outcome.CLEARED, "EL-1")]


def test_outdated_firmware_fires_on_a_heartbeat_and_clears_on_upgrade() -> None:
    engine = RuleEngine(RULES)

    def beat(fw: str, minutes: int) -> list[tuple[Outcome, str]]:
        at = START + timedelta(minutes=minutes)
        reading = Reading(at, at, "EL-1", "heartbeat", minutes, fw=fw)
        return [
            (e.outcome, e.rule.category) for e in engine.evaluate([reading], no_context).effects
        ]

    assert beat("2.3.9", 0) == [(Outcome.FIRED, "firmware_outdated")]
    assert beat("2.3.9", 1) == [(Outcome.UPDATED, "firmware_outdated")]
    assert beat("2.10.0", 2) == [(Outcome.CLEARED, "firmware_outdated")]  # numeric, not text order
    assert beat("beta", 3) == []  # not a version: unknown, neither fires nor clears
