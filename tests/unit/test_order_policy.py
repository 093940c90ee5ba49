"""The dispatch policy file: routes, SLAs, escalation; every problem reported at once."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.orders.policy import DEFAULT_CHAIN, Deadlines, Policy, parse_policy
from sensord.core.rules.model import CATEGORIES, Severity
from sensord.errors import RuleError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = (REPO / "rules" / "routing.toml").read_text(encoding="utf-8")
CATCH_ALL = "[[sla]]\nack_s = 60\narrive_s = 600\nresolve_s = 3600\n"


def problems_of(text: str, source: str = "routing.toml") -> list[str]:
    with pytest.raises(RuleError) as caught:
        parse_policy(text, source)
    return caught.value.problems


@pytest.fixture(scope="module")
def shipped() -> Policy:
    return parse_policy(SHIPPED)


def test_the_shipped_policy_parses(shipped: Policy) -> None:
    assert len(shipped.routes) == 12
    assert len(shipped.slas) == 6
    assert shipped.orders.reopen_window_s == 86_400
    assert shipped.orders.verify_hold_s == 300
    assert shipped.orders.escalation == DEFAULT_CHAIN
    last = shipped.slas[-1]
    assert (last.category, last.severity) == (None, None)


@pytest.mark.parametrize(
    ("category", "severity", "expected"),
    [
        # The entry's own verify hold beats the [orders] default.
        ("elevator_entrapment", "critical", Deadlines(120, 1800, 3600, 60)),
        # First match wins: fire's own entry comes before the critical one.
        ("fire", "critical", Deadlines(120, 600, 3600, 300)),
        ("elevator_fault", "critical", Deadlines(300, 1800, 7200, 300)),
        ("fire_lane_blocked", "major", Deadlines(900, 3600, 14400, 600)),
        ("ebike_indoor_charging", "major", Deadlines(900, 3600, 14400, 300)),
        # Nothing specific: the catch-all.
        ("device_offline", "warning", Deadlines(3600, 86400, 259200, 300)),
        ("elevator_fault", "major", Deadlines(3600, 86400, 259200, 300)),
    ],
)
def test_deadlines_first_match_wins(
    shipped: Policy, category: str, severity: str, expected: Deadlines
) -> None:
    assert shipped.deadlines(category, severity) == expected


@given(
    category=st.sampled_from(CATEGORIES),
    severity=st.sampled_from(get_args(Severity)),
)
def test_every_order_gets_the_first_matching_sla(category: str, severity: str) -> None:
    policy = parse_policy(SHIPPED)
    # The matching rule written out here, not Sla.matches: a bug there must show.
    first = next(
        s for s in policy.slas if s.category in (None, category) and s.severity in (None, severity)
    )
    got = policy.deadlines(category, severity)
    assert (got.ack_s, got.arrive_s, got.resolve_s) == (
        first.ack_s,
        first.arrive_s,
        first.resolve_s,
    )
    hold = policy.orders.verify_hold_s if first.verify_hold_s is None else first.verify_hold_s
    assert got.verify_hold_s == hold


def test_a_zero_verify_hold_is_kept_not_replaced_by_the_default() -> None:
    policy = parse_policy(CATCH_ALL + "verify_hold_s = 0\n[orders]\nverify_hold_s = 900\n")
    assert policy.deadlines("fire", "critical").verify_hold_s == 0


def test_defaults_without_routes_or_orders_table() -> None:
    policy = parse_policy(CATCH_ALL)
    assert policy.routes == ()
    assert policy.orders.escalation == DEFAULT_CHAIN
    assert policy.deadlines("fire", "info") == Deadlines(60, 600, 3600, 300)


def test_every_problem_is_listed_at_once() -> None:
    text = """
[[route]]
category = "flood"
owner = "grid_worker"

[[route]]
category = "fire"
owner = "property_company"
owners = ["x"]

[orders]
escalation = ["ops_centre"]
reopen_window = 60

[[sla]]
category = "meteor"
ack_s = 60
arrive_s = 600
resolve_s = 3600

[[sla]]
category = "fire"
ack_s = 0
arrive_s = 600
resolve_s = 3600
ack = 5

[[sla]]
category = "fire"
ack_s = 60
arrive_s = 600
resolve_s = 3600

[alarms]
x = 1
"""
    problems = problems_of(text, "policy.toml")
    assert all(p.startswith("policy.toml: ") for p in problems)
    joined = "\n".join(problems)
    for fragment in (
        "route #1: category: Value error, unknown category 'flood'",
        "route #2: owners: Extra inputs are not permitted",
        "sla #1: category: Value error, unknown category 'meteor'",
        "sla #2: ack_s: Input should be greater than 0",
        "sla #2: ack: Extra inputs are not permitted",
        "[orders]: escalation: Value error, escalation needs at least two distinct roles",
        "[orders]: reopen_window: Extra inputs are not permitted",
        "the last [[sla]] must match every order",
        "unknown table 'alarms'",
    ):
        assert fragment in joined, fragment
    assert len(problems) == 9


def test_the_last_sla_must_be_a_catch_all() -> None:
    problems = problems_of(CATCH_ALL + 'severity = "critical"\n')
    assert problems == [
        "routing.toml: the last [[sla]] must match every order (no category/severity)"
    ]


def test_a_missing_catch_all_is_reported_even_when_the_last_sla_is_also_invalid() -> None:
    # Every problem at once: fixing ack_s must not reveal a second, older problem.
    problems = problems_of('[[sla]]\ncategory = "fire"\nack_s = 0\narrive_s = 1\nresolve_s = 2\n')
    assert any("ack_s" in p for p in problems)
    assert any("the last [[sla]] must match every order" in p for p in problems)


def test_at_least_one_sla_is_required() -> None:
    assert problems_of("[orders]\nreopen_window_s = 60\n") == [
        "routing.toml: at least one [[sla]] is required"
    ]


@pytest.mark.parametrize(
    "chain", [[], ["ops_centre"], ["grid_worker", "ops_centre", "grid_worker"]]
)
def test_an_escalation_chain_needs_two_distinct_roles(chain: list[str]) -> None:
    roles = ", ".join(f'"{role}"' for role in chain)
    problems = problems_of(f"{CATCH_ALL}[orders]\nescalation = [{roles}]\n")
    assert len(problems) == 1
    assert "[orders]: escalation:" in problems[0]


def test_a_toml_syntax_error_is_one_problem() -> None:
    problems = problems_of("[[sla]\nack_s = 1\n")
    assert len(problems) == 1
    assert problems[0].startswith("routing.toml: TOML syntax:")


@pytest.mark.parametrize("table", ["route", "sla"])
def test_a_top_level_value_instead_of_an_array_of_tables_is_a_rule_error(table: str) -> None:
    # `route = 5` is valid TOML; the file is still bad and must say so as RuleError.
    problems = problems_of(f"{table} = 5\n" + ("" if table == "sla" else CATCH_ALL))
    assert any(table in p for p in problems)
