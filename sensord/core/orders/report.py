"""The SLA report's statistics over plain order records (pure: no SQL, no clock).

Definitions (``sensord report sla``; docs/status.md cites them):

* An order belongs to the report when it was *created* in ``[from, to)``.
  Cancelled orders are only counted (``cancelled``); every other figure is
  over the *handled* orders, the ones not cancelled.
* Times are seconds from the order's first ``dispatch`` event to its first
  ``ack``, ``arrive`` and ``resolve`` event: the first cycle (a reopened
  order's later cycles do not change them; the reopen rate shows them).
  Median and p90 interpolate linearly between the closest ranks (PostgreSQL's
  ``percentile_cont``, numpy's default); an order without the event is left
  out of that phase's times.
* Compliance: an order *complies* when its first ack, arrival and resolution
  each came within ``sla_ack_s`` / ``sla_arrive_s`` / ``sla_resolve_s`` (at
  most, inclusive) of its first dispatch, and it was never escalated. It is
  *non-compliant* when it was escalated, an event came late, an event is
  missing past its SLA at the report's ``as_of`` time, or it is open with its
  current deadline passed. Otherwise it is *pending* (open, nothing late yet)
  and left out of the percentage: compliant / (compliant + non-compliant).
* Escalations: ``escalate`` events; reopen rate: orders reopened at least
  once / handled.
* Groups: ``org`` the order's current owner organisation (after any
  escalation: the party that answered for it last), ``worker`` the actor of
  the first ``ack`` event, ``area`` the residential area of the place; ``-``
  where there is none. The totals row is computed over all orders afresh,
  not from the groups' figures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from sensord.core.orders.lifecycle import PHASES
from sensord.core.orders.machine import OPEN_STATES, State

Grouping = Literal["worker", "org", "area"]
GROUPINGS: tuple[Grouping, ...] = ("worker", "org", "area")
NONE = "-"  # the group of orders without a worker, owner or area
TOTAL = "total"


@dataclass(frozen=True, slots=True)
class OrderTimes:
    """What the report needs of one order: first-cycle times, its SLA and its groups."""

    order_id: int
    state: str
    created_at: datetime
    dispatched_at: datetime | None  # the first dispatch event
    ack_at: datetime | None  # the first ack event
    arrive_at: datetime | None
    resolve_at: datetime | None
    sla_ack_s: int
    sla_arrive_s: int
    sla_resolve_s: int
    due_at: datetime | None  # the current deadline, if the order has one
    escalations: int
    reopen_count: int
    org: str = NONE
    worker: str = NONE
    area: str = NONE

    def group(self, by: Grouping) -> str:
        """The order's group under ``by``."""
        value: str = getattr(self, by)
        return value or NONE

    def elapsed(self, phase: str) -> float | None:
        """Seconds from the first dispatch to the phase's first event, if both happened."""
        at: datetime | None = getattr(self, f"{phase}_at")
        start = self.dispatched_at or self.created_at
        return None if at is None else (at - start).total_seconds()

    def sla(self, phase: str) -> int:
        """The phase's SLA in seconds from dispatch."""
        value: int = getattr(self, f"sla_{phase}_s")
        return value


class Verdict(StrEnum):
    """An order's standing against its SLA."""

    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"
    PENDING = "pending"
    CANCELLED = "cancelled"


def verdict(order: OrderTimes, as_of: datetime) -> Verdict:
    """Whether the order met its SLA (definitions: the module's docstring)."""
    if order.state == State.CANCELLED:
        return Verdict.CANCELLED
    if order.escalations > 0:
        return Verdict.NON_COMPLIANT
    if order.state in OPEN_STATES and order.due_at is not None and order.due_at <= as_of:
        return Verdict.NON_COMPLIANT
    start = order.dispatched_at or order.created_at
    waiting = False
    for phase in PHASES:
        elapsed = order.elapsed(phase)
        budget = order.sla(phase)
        if elapsed is None:
            if (as_of - start).total_seconds() > budget:
                return Verdict.NON_COMPLIANT
            waiting = True
        elif elapsed > budget:
            return Verdict.NON_COMPLIANT
    return Verdict.PENDING if waiting else Verdict.COMPLIANT


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolated linearly between ranks; None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = ordered[math.floor(rank)], ordered[math.ceil(rank)]
    value = low + (high - low) * (rank - math.floor(rank))
    return min(max(value, low), high)  # rounding never leaves the two ranks


@dataclass(frozen=True, slots=True)
class PhaseTimes:
    """Median and p90 of one phase, over the orders that reached it."""

    count: int
    median: float | None
    p90: float | None


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One row of the report."""

    group: str
    handled: int
    cancelled: int
    compliant: int
    non_compliant: int
    pending: int
    times: dict[str, PhaseTimes]
    escalations: int
    reopened: int

    @property
    def compliance_pct(self) -> float | None:
        """Compliant share of the judged orders (pending ones are not judged yet)."""
        judged = self.compliant + self.non_compliant
        return 100 * self.compliant / judged if judged else None

    @property
    def reopen_rate_pct(self) -> float | None:
        """Share of handled orders reopened at least once."""
        return 100 * self.reopened / self.handled if self.handled else None


def summarise(group: str, orders: Sequence[OrderTimes], as_of: datetime) -> GroupStats:
    """The figures of one group of orders."""
    verdicts = [verdict(order, as_of) for order in orders]
    handled = [o for o, v in zip(orders, verdicts, strict=True) if v is not Verdict.CANCELLED]
    times = {}
    for phase in PHASES:
        elapsed = [s for s in (o.elapsed(phase) for o in handled) if s is not None]
        times[phase] = PhaseTimes(len(elapsed), percentile(elapsed, 50), percentile(elapsed, 90))
    return GroupStats(
        group=group,
        handled=len(handled),
        cancelled=verdicts.count(Verdict.CANCELLED),
        compliant=verdicts.count(Verdict.COMPLIANT),
        non_compliant=verdicts.count(Verdict.NON_COMPLIANT),
        pending=verdicts.count(Verdict.PENDING),
        times=times,
        escalations=sum(o.escalations for o in handled),
        reopened=sum(1 for o in handled if o.reopen_count > 0),
    )


def sla_report(
    orders: Iterable[OrderTimes], by: Grouping, as_of: datetime
) -> tuple[list[GroupStats], GroupStats]:
    """One row per group (sorted, ``-`` last) and the totals row."""
    everything = list(orders)
    groups: dict[str, list[OrderTimes]] = defaultdict(list)
    for order in everything:
        groups[order.group(by)].append(order)
    keys = sorted(groups, key=lambda key: (key == NONE, key))
    rows = [summarise(key, groups[key], as_of) for key in keys]
    return rows, summarise(TOTAL, everything, as_of)
