"""Rule files and the state rule's state machine (pure core)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.adapters.rule_files import load_rules
from sensord.core.rules.expr import compile_condition
from sensord.core.rules.model import Rule, parse_rules
from sensord.core.rules.state import Outcome, Phase, RuleState, step
from sensord.errors import ExpressionError, RuleError

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def rule(**overrides: object) -> Rule:
    base: dict[str, object] = {
        "name": "lane",
        "type": "state",
        "kinds": ["fire_lane"],
        "category": "fire_lane_blocked",
        "severity": "major",
        "when": "blocked",
        "for_s": 600,
        "clear": "not blocked",
        "clear_for_s": 120,
    }
    return Rule.model_validate({**base, **overrides})


def run(r: Rule, readings: list[tuple[int, dict[str, object]]]) -> list[Outcome]:
    state, outcomes = RuleState(), []
    for seconds, fields in readings:
        state, outcome = step(r, state, fields, T0 + timedelta(seconds=seconds))
        outcomes.append(outcome)
    return outcomes


def test_the_shipped_rules_load() -> None:
    rules = load_rules(REPO / "rules")
    assert {r.category for r in rules.rules} >= {
        "fire",
        "ebike_indoor_charging",
        "elevator_entrapment",
        "fire_lane_blocked",
        "device_offline",
    }


def test_conditions_are_three_valued() -> None:
    condition = compile_condition("smoke or obscuration >= 10")
    assert condition({"smoke": True})
    assert not condition({"smoke": False})  # obscuration unknown: not provably true
    assert not compile_condition("not charging")({})


@pytest.mark.parametrize(
    "text", ["__import__('os')", "a.b", "x + 1", "[i for i in x]", "f(x)", "_x > 1"]
)
def test_conditions_cannot_run_code(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_condition(text)


def test_a_bad_rule_set_reports_every_problem_with_file_and_rule() -> None:
    head = '[[rule]]\ntype="state"\nseverity="major"\n'
    good = head + 'name="ok_rule"\nkinds=["smoke"]\ncategory="fire"\nwhen="smoke"\n'
    bad = (
        head + 'name="bad_one"\nkinds=["gas"]\ncategory="fire"\nwhen="smoke +"\n'
        '[[rule]]\nname="bad_two"\ntype="absence"\nkinds=["smoke"]\ncategory="nope"\n'
        'severity="major"\n'
    )
    with pytest.raises(RuleError) as caught:
        parse_rules([("a.toml", good), ("b.toml", bad), ("c.toml", "[[rule]\n")])
    text = str(caught.value)
    assert "b.toml: bad_one: kinds" in text
    assert "b.toml: bad_one: when" in text
    assert "b.toml: bad_two: category" in text
    assert "c.toml: TOML syntax" in text


def test_fires_only_after_the_for_duration() -> None:
    r = rule()
    outcomes = run(r, [(0, {"blocked": True}), (300, {"blocked": True}), (600, {"blocked": True})])
    assert outcomes == [Outcome.NONE, Outcome.NONE, Outcome.FIRED]


def test_an_interruption_restarts_the_for_duration() -> None:
    r = rule()
    outcomes = run(
        r,
        [
            (0, {"blocked": True}),
            (500, {"blocked": False}),
            (700, {"blocked": True}),
            (1200, {"blocked": True}),
            (1300, {"blocked": True}),
        ],
    )
    assert outcomes == [Outcome.NONE, Outcome.NONE, Outcome.NONE, Outcome.NONE, Outcome.FIRED]


def test_hysteresis_and_clear_duration() -> None:
    r = rule(
        when="obscuration >= 10",
        clear="obscuration < 2",
        for_s=0,
        clear_for_s=60,
        kinds=["smoke"],
        category="fire",
    )
    outcomes = run(
        r,
        [
            (0, {"obscuration": 12}),
            (10, {"obscuration": 5}),
            (20, {"obscuration": 1}),
            (50, {"obscuration": 1}),
            (80, {"obscuration": 1}),
        ],
    )
    assert outcomes == [Outcome.FIRED, Outcome.NONE, Outcome.NONE, Outcome.NONE, Outcome.CLEARED]


def test_a_refire_within_the_cooldown_reopens() -> None:
    r = rule(for_s=0, clear_for_s=0, cooldown_s=600)
    outcomes = run(
        r,
        [
            (0, {"blocked": True}),
            (10, {"blocked": False}),
            (100, {"blocked": True}),
            (200, {"blocked": False}),
            (1000, {"blocked": True}),
        ],
    )
    assert outcomes == [
        Outcome.FIRED,
        Outcome.CLEARED,
        Outcome.REOPENED,
        Outcome.CLEARED,
        Outcome.FIRED,
    ]


def test_a_redelivered_or_late_reading_changes_nothing() -> None:
    r = rule(for_s=0)
    state, first = step(r, RuleState(), {"blocked": True}, T0)
    again, second = step(r, state, {"blocked": True}, T0)
    late, third = step(r, state, {"blocked": False}, T0 - timedelta(seconds=5))
    assert (first, second, third) == (Outcome.FIRED, Outcome.NONE, Outcome.NONE)
    assert again == state == late


readings = st.lists(
    st.tuples(
        st.integers(min_value=-100, max_value=5000),
        st.sampled_from(
            [
                {"obscuration": 12.0},
                {"obscuration": 5.0},
                {"obscuration": 1.0},
                {"obscuration": None},
                {},
            ]
        ),
    ),
    max_size=60,
)


@given(
    readings=readings,
    for_s=st.sampled_from([0, 30, 300]),
    clear_for_s=st.sampled_from([0, 60]),
    hold_s=st.sampled_from([0, 120]),
    cooldown_s=st.sampled_from([0, 600]),
)
def test_never_two_open_alerts_and_hysteresis_holds(
    readings: list[tuple[int, dict[str, object]]],
    for_s: int,
    clear_for_s: int,
    hold_s: int,
    cooldown_s: int,
) -> None:
    r = rule(
        when="obscuration >= 10",
        clear="obscuration < 2",
        kinds=["smoke"],
        category="fire",
        for_s=for_s,
        clear_for_s=clear_for_s,
        hold_s=hold_s,
        cooldown_s=cooldown_s,
    )
    state, open_alerts = RuleState(), 0
    for seconds, fields in readings:
        state, outcome = step(r, state, fields, T0 + timedelta(seconds=seconds))
        if outcome in (Outcome.FIRED, Outcome.REOPENED):
            open_alerts += 1
            assert fields.get("obscuration") == 12.0  # only a firing reading fires
        elif outcome is Outcome.CLEARED:
            open_alerts -= 1
            assert fields.get("obscuration") == 1.0  # only a clearing reading clears
        assert open_alerts in (0, 1)
        assert (state.phase is Phase.FIRING) == (open_alerts == 1)


def test_a_late_reading_raises_but_never_lowers() -> None:
    """Device time only tells old news from new: old news may alarm, never clear."""
    r = rule(for_s=0, clear_for_s=0, cooldown_s=600)
    fired, outcome = step(r, RuleState(), {"blocked": True}, T0, T0)
    assert outcome is Outcome.FIRED
    # Older device time, received later: a clear that cannot clear.
    late = T0 - timedelta(seconds=30)
    same, outcome = step(r, fired, {"blocked": False}, late, T0 + timedelta(seconds=300))
    assert (same, outcome) == (fired, Outcome.NONE)
    cleared, outcome = step(r, fired, {"blocked": False}, T0 + timedelta(seconds=1))
    assert outcome is Outcome.CLEARED
    # An alarm with older device time than the clear, received after it: reopens.
    again, outcome = step(r, cleared, {"blocked": True}, late, T0 + timedelta(seconds=2))
    assert (again.phase, outcome) == (Phase.FIRING, Outcome.REOPENED)


def test_the_windows_run_on_receive_time() -> None:
    r = rule(for_s=600)
    state, _ = step(r, RuleState(), {"blocked": True}, T0, T0)
    # Device time says ten minutes passed; the server says one.
    state, outcome = step(
        r, state, {"blocked": True}, T0 + timedelta(seconds=600), T0 + timedelta(seconds=60)
    )
    assert outcome is Outcome.NONE
    state, outcome = step(
        r, state, {"blocked": True}, T0 + timedelta(seconds=601), T0 + timedelta(seconds=600)
    )
    assert outcome is Outcome.FIRED and state.fired_at == T0 + timedelta(seconds=600)
