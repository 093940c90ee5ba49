"""The state rule's per-subject state machine: ``for`` to fire, hysteresis to clear, flap control.

Pure: every step takes the reading's fields, its device time and the server's
time of receipt, and returns the new state and what happened (docs/rules.md,
"Time"). The windows (``for_s``, ``clear_for_s``, ``hold_s``, ``cooldown_s``)
run on receive time, which a device cannot set. Device time only tells new
news from old: a reading no newer (by device time) than the newest one seen
for the pair is *late*; a late reading whose condition holds still raises (an
alarm is never ignored), but a late reading can never clear, start a clear or
restart a ``for`` window. Redeliveries are dropped before this, by the engine.

States: ``ok`` -> (condition holds for ``for_s``) -> ``firing`` -> (clear
condition holds for ``clear_for_s`` and the alert is at least ``hold_s`` old)
-> ``cleared``. A firing within ``cooldown_s`` of the clear reopens the same
alert (``reopened``) instead of opening a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sensord.core.rules.model import Rule


class Phase(StrEnum):
    """Where a (rule, subject) pair is."""

    OK = "ok"
    FIRING = "firing"
    CLEARED = "cleared"


class Outcome(StrEnum):
    """What one step did to the alert."""

    NONE = "none"
    FIRED = "fired"  # open a new alert
    REOPENED = "reopened"  # re-open the alert cleared within the cooldown
    UPDATED = "updated"  # the open alert saw another matching reading
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class RuleState:
    """Everything a (rule, subject) pair remembers; persisted so a restart resumes it.

    ``last_ts`` is device time (the newest reading seen); the other times are
    the server's receive times.
    """

    phase: Phase = Phase.OK
    last_ts: datetime | None = None
    pending_since: datetime | None = None  # condition true since (towards for_s)
    fired_at: datetime | None = None
    clearing_since: datetime | None = None  # clear condition true since (towards clear_for_s)
    cleared_at: datetime | None = None


def step(
    rule: Rule,
    state: RuleState,
    fields: dict[str, object],
    ts: datetime,
    at: datetime | None = None,
) -> tuple[RuleState, Outcome]:
    """Apply one reading (its fields, device time ``ts``, receive time ``at``) to the pair."""
    assert rule.when is not None, "only state rules have a state machine"
    at = ts if at is None else at
    if state.last_ts is not None and ts <= state.last_ts:
        return _late(rule, state, fields, at)
    # The constructor, not dataclasses.replace: this runs for every reading and rule.
    state = RuleState(
        state.phase, ts, state.pending_since, state.fired_at, state.clearing_since, state.cleared_at
    )
    if state.phase is Phase.FIRING:
        return _while_firing(rule, state, fields, at)
    return _while_quiet(rule, state, fields, at)


def _late(
    rule: Rule, state: RuleState, fields: dict[str, object], at: datetime
) -> tuple[RuleState, Outcome]:
    """Old news: it may raise (or interrupt a clear), never lower."""
    assert rule.when is not None
    if rule.when.truth(fields) is not True:
        return state, Outcome.NONE
    if state.phase is Phase.FIRING:
        if state.clearing_since is None:
            return state, Outcome.NONE
        # A clear in progress meets an alarm: the quiet period starts over.
        return RuleState(Phase.FIRING, state.last_ts, None, state.fired_at, None, None), (
            Outcome.NONE
        )
    return _while_quiet(rule, state, fields, at)


def _while_quiet(
    rule: Rule, state: RuleState, fields: dict[str, object], at: datetime
) -> tuple[RuleState, Outcome]:
    assert rule.when is not None
    holds = rule.when.truth(fields)
    if holds is not True:
        if holds is False and state.pending_since is not None:
            # Known false: the `for` duration starts over; unknown keeps it.
            state = RuleState(
                state.phase, state.last_ts, None, state.fired_at, None, state.cleared_at
            )
        return state, Outcome.NONE
    since = state.pending_since or at
    if at - since < timedelta(seconds=rule.for_s):
        pending = RuleState(
            state.phase, state.last_ts, since, state.fired_at, None, state.cleared_at
        )
        return pending, Outcome.NONE
    reopen = (
        state.phase is Phase.CLEARED
        and state.cleared_at is not None
        and at - state.cleared_at < timedelta(seconds=rule.cooldown_s)
    )
    fired = RuleState(
        Phase.FIRING, state.last_ts, None, state.fired_at if reopen else at, None, None
    )
    return fired, Outcome.REOPENED if reopen else Outcome.FIRED


def _while_firing(
    rule: Rule, state: RuleState, fields: dict[str, object], at: datetime
) -> tuple[RuleState, Outcome]:
    assert rule.when is not None
    ts = state.last_ts
    if not rule.clears(fields):
        matched = rule.when(fields)
        firing = RuleState(Phase.FIRING, ts, None, state.fired_at, None, None)
        return firing, Outcome.UPDATED if matched else Outcome.NONE
    since = state.clearing_since or at
    old_enough = state.fired_at is None or at - state.fired_at >= timedelta(seconds=rule.hold_s)
    if at - since >= timedelta(seconds=rule.clear_for_s) and old_enough:
        return RuleState(Phase.CLEARED, ts, None, state.fired_at, None, at), Outcome.CLEARED
    return RuleState(Phase.FIRING, ts, None, state.fired_at, since, None), Outcome.NONE
