"""Count rules: a second indoor-charging alert of a dwelling within 30 days is a repeat offence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sensord.adapters.rule_files import load_rules
from sensord.core.messages import Reading
from sensord.core.rules.engine import RuleEngine
from sensord.core.rules.state import Outcome

RULES = load_rules(Path(__file__).resolve().parents[2] / "rules")
NIGHT = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)  # 22:00 +08:00


def place(device_id: str) -> dict[str, object]:
    return {"address_id": "A-0001", "place_type": "dwelling"}


def charging(device_id: str, start: datetime, minutes: int) -> list[Reading]:
    """A charging episode long enough to fire (2 min) and to clear afterwards (5 min).

    Received as sent: the rule windows run on receive time.
    """
    on = [
        Reading(
            start + timedelta(minutes=m),
            start + timedelta(minutes=m),
            device_id,
            "ebike",
            m,
            charging=True,
            power_w=300.0,
        )
        for m in range(minutes)
    ]
    off = [
        Reading(
            start + timedelta(minutes=minutes + m),
            start + timedelta(minutes=minutes + m),
            device_id,
            "ebike",
            minutes + m,
            charging=False,
            power_w=0.0,
        )
        for m in range(7)
    ]
    return on + off


def fired(engine: RuleEngine, readings: list[Reading]) -> list[str]:
    effects = engine.evaluate(readings, place).effects
    return [e.rule.category for e in effects if e.outcome is Outcome.FIRED]


def test_the_second_offence_within_the_window_fires_repeat_offence() -> None:
    engine = RuleEngine(RULES)
    assert fired(engine, charging("EB-1", NIGHT, 10)) == ["ebike_indoor_charging"]
    later = NIGHT + timedelta(days=3)
    assert fired(engine, charging("EB-1", later, 10)) == ["ebike_indoor_charging", "repeat_offence"]


def test_offences_further_apart_than_the_window_do_not_count() -> None:
    engine = RuleEngine(RULES)
    fired(engine, charging("EB-1", NIGHT, 10))
    assert fired(engine, charging("EB-1", NIGHT + timedelta(days=31), 10)) == [
        "ebike_indoor_charging"
    ]


def test_the_window_survives_a_restart_through_the_alert_history() -> None:
    history = [("ebike_indoor_charging", "EB-1", "A-0001", NIGHT)]
    engine = RuleEngine(RULES, history=history)
    later = NIGHT + timedelta(days=3)
    assert "repeat_offence" in fired(engine, charging("EB-1", later, 10))
