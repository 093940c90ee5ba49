"""The SLA report's statistics (pure): percentiles, compliance, grouping, totals."""

from __future__ import annotations

import random
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.orders.report import (
    NONE,
    TOTAL,
    OrderTimes,
    Verdict,
    percentile,
    sla_report,
    summarise,
    verdict,
)

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
AS_OF = T0 + timedelta(days=2)
SECONDS = st.lists(st.floats(min_value=0, max_value=1e7, allow_nan=False), min_size=1)


def order(
    ack: float | None = 60,
    arrive: float | None = 600,
    resolve: float | None = 1800,
    *,
    state: str = "closed",
    order_id: int = 1,
    **fields: object,
) -> OrderTimes:
    """An order dispatched at T0 with its first ack/arrive/resolve ``n`` seconds later."""

    def at(seconds: float | None) -> datetime | None:
        return None if seconds is None else T0 + timedelta(seconds=seconds)

    made = OrderTimes(
        order_id=order_id,
        state=state,
        created_at=T0,
        dispatched_at=T0,
        ack_at=at(ack),
        arrive_at=at(arrive),
        resolve_at=at(resolve),
        sla_ack_s=300,
        sla_arrive_s=1200,
        sla_resolve_s=3600,
        due_at=None,
        escalations=0,
        reopen_count=0,
    )
    return replace(made, **fields)  # type: ignore[arg-type]


# --- percentiles ---------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([10, 20, 30, 40], 90) == pytest.approx(37)
    assert percentile([5], 90) == 5
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="outside"):
        percentile([1], 101)


@given(SECONDS, st.floats(min_value=0, max_value=100))
def test_percentile_stays_within_the_values(values: list[float], q: float) -> None:
    result = percentile(values, q)
    assert result is not None
    assert min(values) <= result <= max(values)


@given(SECONDS, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_percentile_grows_with_q(values: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    assert percentile(values, low) <= percentile(values, high)  # type: ignore[operator]


@given(SECONDS, st.randoms(use_true_random=False))
def test_percentile_is_the_median_and_ignores_order(
    values: list[float], rnd: random.Random
) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert percentile(shuffled, 50) == pytest.approx(statistics.median(values))
    assert percentile(shuffled, 0) == min(values)
    assert percentile(shuffled, 100) == max(values)


# --- compliance --------------------------------------------------------------------


def test_in_time_on_every_phase_complies() -> None:
    assert verdict(order(), AS_OF) is Verdict.COMPLIANT
    # exactly at the SLA still complies
    assert verdict(order(300, 1200, 3600), AS_OF) is Verdict.COMPLIANT


@pytest.mark.parametrize(
    ("made", "why"),
    [
        (order(ack=301), "ack late"),
        (order(arrive=1201), "arrival late"),
        (order(resolve=3601), "resolution late"),
        (order(escalations=1), "escalated, even if every phase was in time"),
        (order(None, None, None, state="dispatched"), "open, ack missing past its SLA"),
        (
            order(state="reopened", due_at=AS_OF - timedelta(seconds=1)),
            "open again with its current deadline passed",
        ),
    ],
)
def test_non_compliance(made: OrderTimes, why: str) -> None:
    assert verdict(made, AS_OF) is Verdict.NON_COMPLIANT, why


def test_open_orders_within_their_deadlines_are_pending() -> None:
    fresh = order(None, None, None, state="dispatched")
    assert verdict(fresh, T0 + timedelta(seconds=299)) is Verdict.PENDING
    on_site = order(60, 600, None, state="on_site")
    assert verdict(on_site, T0 + timedelta(seconds=3000)) is Verdict.PENDING
    assert verdict(on_site, T0 + timedelta(seconds=3601)) is Verdict.NON_COMPLIANT


def test_cancelled_orders_are_not_judged() -> None:
    assert verdict(order(ack=9999, state="cancelled"), AS_OF) is Verdict.CANCELLED


@given(
    st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000)
)
def test_being_faster_never_loses_compliance(ack: int, arrive: int, resolve: int, cut: int) -> None:
    ack, arrive, resolve = sorted((ack, arrive, resolve))
    slow = order(ack, arrive, resolve)
    fast = order(*(max(0, t - cut) for t in (ack, arrive, resolve)))
    if verdict(slow, AS_OF) is Verdict.COMPLIANT:
        assert verdict(fast, AS_OF) is Verdict.COMPLIANT


# --- groups ------------------------------------------------------------------------


def test_summary_of_a_group() -> None:
    orders = [
        order(60, 600, 1800, order_id=1),
        order(120, 900, 2400, order_id=2, reopen_count=1),
        order(600, 1500, 4000, order_id=3, escalations=2),
        order(30, None, None, order_id=4, state="acknowledged"),  # arrival missing past its SLA
        order(10, 20, 30, order_id=5, state="cancelled"),
    ]
    stats = summarise("PC-01", orders, AS_OF)
    assert (stats.handled, stats.cancelled) == (4, 1)
    assert (stats.compliant, stats.non_compliant, stats.pending) == (2, 2, 0)
    assert stats.compliance_pct == 50
    assert stats.times["ack"].count == 4
    assert stats.times["ack"].median == 90  # 30, 60, 120, 600
    assert stats.times["ack"].p90 == pytest.approx(456)  # 120 + 0.7 * 480
    assert stats.times["resolve"].count == 3
    assert stats.times["resolve"].median == 2400
    assert stats.escalations == 2
    assert stats.reopened == 1
    assert stats.reopen_rate_pct == 25


def test_empty_figures_are_none() -> None:
    stats = summarise("x", [order(state="cancelled")], AS_OF)
    assert stats.handled == 0
    assert stats.compliance_pct is None
    assert stats.reopen_rate_pct is None
    assert stats.times["ack"].median is None


def test_report_groups_sorted_with_none_last_and_totals_over_everything() -> None:
    orders = [
        order(60, order_id=1, worker="W-2", org="PC-01"),
        order(400, order_id=2, worker="W-1", org="PC-01"),
        order(None, None, None, order_id=3, state="dispatched", worker=NONE, org="RC-01"),
    ]
    rows, totals = sla_report(orders, "worker", AS_OF)
    assert [row.group for row in rows] == ["W-1", "W-2", NONE]
    assert [row.compliant for row in rows] == [0, 1, 0]
    assert totals.group == TOTAL
    assert (totals.handled, totals.compliant, totals.non_compliant) == (3, 1, 2)
    assert totals.times["ack"].median == 230
    rows, _ = sla_report(orders, "org", AS_OF)
    assert [(row.group, row.handled) for row in rows] == [("PC-01", 2), ("RC-01", 1)]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", NONE]),
            st.sampled_from(["dispatched", "on_site", "closed", "cancelled", "reopened"]),
            st.integers(0, 5000),
            st.integers(0, 2),
        ),
        max_size=30,
    )
)
def test_groups_add_up_to_the_totals(specs: list[tuple[str, str, int, int]]) -> None:
    orders = [
        order(ack, ack + 500, ack + 2000, state=state, order_id=n, area=area, escalations=esc)
        for n, (area, state, ack, esc) in enumerate(specs)
    ]
    rows, totals = sla_report(orders, "area", AS_OF)
    for name in ("handled", "cancelled", "compliant", "non_compliant", "pending", "escalations"):
        assert sum(getattr(row, name) for row in rows) == getattr(totals, name)
    for row in [*rows, totals]:
        assert row.compliant + row.non_compliant + row.pending == row.handled
        pct = row.compliance_pct
        assert pct is None or 0 <= pct <= 100
