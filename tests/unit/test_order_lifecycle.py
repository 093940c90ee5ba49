"""Decisions around the order machine: deadlines, escalation targets, recurrence."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.context import DeviceContext, build_snapshot
from sensord.core.orders.lifecycle import (
    NOTHING_DUE,
    Due,
    Recurrence,
    due_after,
    escalation_roles,
    escalation_target,
    phase_budget,
    recurrence,
)
from sensord.core.orders.machine import State
from sensord.core.orders.policy import DEFAULT_CHAIN, Deadlines
from sensord.core.orders.routing import Party
from tests.unit.test_context import small

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
FIRE = Deadlines(ack_s=120, arrive_s=600, resolve_s=3600, verify_hold_s=300)


def smoke_detector(without_org: str | None = None) -> DeviceContext:
    """The kitchen smoke detector of test_context's registry (PM, RC, DV, OPS answer for it)."""
    rows = small()
    if without_org is not None:
        kept = [r for r in rows.responsibilities if r.org_id != without_org]
        rows = dataclasses.replace(rows, responsibilities=kept)
    context = build_snapshot(rows).context("SMK-K1")
    assert context is not None
    return context


# --- deadlines


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (State.DISPATCHED, Due("ack", T0 + timedelta(seconds=120))),
        (State.ACKNOWLEDGED, Due("arrive", T0 + timedelta(seconds=600))),
        (State.ON_SITE, Due("resolve", T0 + timedelta(seconds=3600))),
        *[
            (state, NOTHING_DUE)
            for state in (
                State.NEW, State.RESOLVED, State.VERIFIED, State.CLOSED, State.CANCELLED,
                State.REOPENED,
            )
        ],
    ],
)  # fmt: skip
def test_the_next_deadline_counts_from_dispatch(state: State, expected: Due) -> None:
    assert due_after(state, T0, FIRE) == expected


def test_nothing_is_due_before_the_order_is_dispatched() -> None:
    assert due_after(State.DISPATCHED, None, FIRE) == NOTHING_DUE


def test_a_new_owner_gets_the_phase_share_of_the_sla() -> None:
    assert phase_budget(FIRE, "ack") == timedelta(seconds=120)
    assert phase_budget(FIRE, "arrive") == timedelta(seconds=480)
    assert phase_budget(FIRE, "resolve") == timedelta(seconds=3000)
    # A share thinner than the acknowledgement time is raised to it.
    tight = Deadlines(ack_s=600, arrive_s=700, resolve_s=800, verify_hold_s=0)
    assert phase_budget(tight, "arrive") == timedelta(seconds=600)
    assert phase_budget(tight, "resolve") == timedelta(seconds=600)


@given(
    ack=st.integers(1, 10**6),
    arrive=st.integers(1, 10**6),
    resolve=st.integers(1, 10**6),
    phase=st.sampled_from(["ack", "arrive", "resolve"]),
)
def test_a_phase_budget_is_never_below_the_ack_time(
    ack: int, arrive: int, resolve: int, phase: str
) -> None:
    deadlines = Deadlines(ack, arrive, resolve, 0)
    budget = phase_budget(deadlines, phase)
    assert budget >= timedelta(seconds=ack)
    offsets = {"ack": (0, ack), "arrive": (ack, arrive), "resolve": (arrive, resolve)}
    start, end = offsets[phase]
    assert budget == timedelta(seconds=max(end - start, ack))


# --- escalation


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        ("grid_worker", ("residents_committee", "ops_centre", "district_office")),
        ("ops_centre", ("district_office",)),
        ("district_office", ()),
        # Outside the chain: the chain's second level pushes first.
        ("property_company", ("residents_committee", "ops_centre", "district_office")),
        ("elevator_vendor", ("residents_committee", "ops_centre", "district_office")),
        ("maintainer", ("residents_committee", "ops_centre", "district_office")),
    ],
)
def test_escalation_roles_are_the_roles_above_the_owner(
    owner: str, expected: tuple[str, ...]
) -> None:
    assert escalation_roles(DEFAULT_CHAIN, owner) == expected


def test_escalation_roles_follow_a_custom_chain() -> None:
    chain = ("property_company", "ops_centre", "district_office")
    assert escalation_roles(chain, "property_company") == ("ops_centre", "district_office")
    assert escalation_roles(chain, "grid_worker") == ("ops_centre", "district_office")


@pytest.mark.parametrize(
    ("owner", "expected"),
    [
        ("grid_worker", Party("residents_committee", "RC")),
        ("property_company", Party("residents_committee", "RC")),
        ("residents_committee", Party("ops_centre", "OPS")),
    ],
)
def test_the_target_is_the_nearest_party_resolving_at_the_place(
    owner: str, expected: Party
) -> None:
    assert escalation_target(DEFAULT_CHAIN, owner, smoke_detector()) == expected


def test_a_role_that_does_not_resolve_is_skipped() -> None:
    context = smoke_detector(without_org="RC")
    assert escalation_target(DEFAULT_CHAIN, "grid_worker", context) == Party("ops_centre", "OPS")


def test_without_a_context_nothing_resolves_and_nothing_is_above() -> None:
    assert escalation_target(DEFAULT_CHAIN, "grid_worker", None) is None
    assert escalation_target(DEFAULT_CHAIN, "property_company", None) is None


def test_nothing_escalates_past_the_top() -> None:
    # Above the ops centre there is only the district office, which nothing resolves here.
    assert escalation_target(DEFAULT_CHAIN, "ops_centre", smoke_detector()) is None
    assert escalation_target(DEFAULT_CHAIN, "district_office", smoke_detector()) is None


# --- recurrence

ACTIVE = (State.NEW, State.DISPATCHED, State.ACKNOWLEDGED, State.ON_SITE, State.REOPENED)
WINDOW = 86_400


def test_no_order_creates_one() -> None:
    assert recurrence(None, None, T0, WINDOW) is Recurrence.CREATE


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(0), Recurrence.REOPEN),
        (timedelta(seconds=WINDOW), Recurrence.REOPEN),
        (timedelta(seconds=WINDOW, microseconds=1), Recurrence.CREATE),
        (timedelta(days=30), Recurrence.CREATE),
    ],
)
def test_a_closed_order_reopens_within_the_window_inclusive(
    offset: timedelta, expected: Recurrence
) -> None:
    assert recurrence(State.CLOSED, T0, T0 + offset, WINDOW) is expected


@given(
    window_s=st.integers(0, 30 * 86_400),
    delta_us=st.integers(-(10**6), 60 * 86_400 * 10**6),
    near=st.integers(-2, 2),
    use_near=st.booleans(),
)
def test_reopen_iff_closed_within_the_window(
    window_s: int, delta_us: int, near: int, use_near: bool
) -> None:
    if use_near:  # straddle the boundary to the microsecond
        delta_us = window_s * 10**6 + near
    now = T0 + timedelta(microseconds=delta_us)
    decision = recurrence(State.CLOSED, T0, now, window_s)
    within = delta_us <= window_s * 10**6
    assert decision is (Recurrence.REOPEN if within else Recurrence.CREATE)


@given(
    finished=st.none() | st.just(T0),
    delta_s=st.integers(0, 365 * 86_400),
    window_s=st.integers(0, 30 * 86_400),
)
def test_cancelled_creates_active_attaches_resolved_or_verified_reopens(
    finished: datetime | None, delta_s: int, window_s: int
) -> None:
    now = T0 + timedelta(seconds=delta_s)
    assert recurrence(State.CANCELLED, finished, now, window_s) is Recurrence.CREATE
    for state in ACTIVE:
        assert recurrence(state, finished, now, window_s) is Recurrence.ATTACH
    # Not yet closed: the loop is still open, so a recurrence sends it round again.
    for state in (State.RESOLVED, State.VERIFIED):
        assert recurrence(state, finished, now, window_s) is Recurrence.REOPEN
