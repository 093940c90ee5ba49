"""The state rule's per-subject state machine: ``for`` to fire, hysteresis to clear, flap control.

Pure: every step takes the reading's fields and its device time and returns
the new state and what happened. Device time orders the steps; a reading no
newer than the last one seen for the subject (a redelivery, a late message)
changes nothing, so replaying a stream can never raise a second alert.

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
    """Everything a (rule, subject) pair remembers; persisted so a restart resumes it."""

    phase: Phase = Phase.OK
    last_ts: datetime | None = None
    pending_since: datetime | None = None  # condition true since (towards for_s)
    fired_at: datetime | None = None
    clearing_since: datetime | None = None  # clear condition true since (towards clear_for_s)
    cleared_at: datetime | None = None


def step(
    rule: Rule, state: RuleState, fields: dict[str, object], ts: datetime
) -> tuple[RuleState, Outcome]:
    """Apply one reading (its fields, its device time) to the pair's state."""
    assert rule.when is not None, "only state rules have a state machine"
    if state.last_ts is not None and ts <= state.last_ts:
        return state, Outcome.NONE
    # The constructor, not dataclasses.replace: this runs for every reading and rule.
    state = RuleState(
        state.phase, ts, state.pending_since, state.fired_at, state.clearing_since, state.cleared_at
    )
    if state.phase is Phase.FIRING:
        return _while_firing(rule, state, fields, ts)
    return _while_quiet(rule, state, fields, ts)


def _while_quiet(
    rule: Rule, state: RuleState, fields: dict[str, object], ts: datetime
) -> tuple[RuleState, Outcome]:
    assert rule.when is not None
    holds = rule.when.truth(fields)
    if holds is not True:
        if holds is False and state.pending_since is not None:
            # Known false: the `for` duration starts over; unknown keeps it.
            state = RuleState(state.phase, ts, None, state.fired_at, None, state.cleared_at)
        return state, Outcome.NONE
    since = state.pending_since or ts
    if ts - since < timedelta(seconds=rule.for_s):
        pending = RuleState(state.phase, ts, since, state.fired_at, None, state.cleared_at)
        return pending, Outcome.NONE
    reopen = (
        state.phase is Phase.CLEARED
        and state.cleared_at is not None
        and ts - state.cleared_at < timedelta(seconds=rule.cooldown_s)
    )
    fired = RuleState(Phase.FIRING, ts, None, state.fired_at if reopen else ts, None, None)
    return fired, Outcome.REOPENED if reopen else Outcome.FIRED


def _while_firing(
    rule: Rule, state: RuleState, fields: dict[str, object], ts: datetime
) -> tuple[RuleState, Outcome]:
    assert rule.when is not None
    if not rule.clears(fields):
        matched = rule.when(fields)
        firing = RuleState(Phase.FIRING, ts, None, state.fired_at, None, None)
        return firing, Outcome.UPDATED if matched else Outcome.NONE
    since = state.clearing_since or ts
    old_enough = state.fired_at is None or ts - state.fired_at >= timedelta(seconds=rule.hold_s)
    if ts - since >= timedelta(seconds=rule.clear_for_s) and old_enough:
        return RuleState(Phase.CLEARED, ts, None, state.fired_at, None, ts), Outcome.CLEARED
    return RuleState(Phase.FIRING, ts, None, state.fired_at, since, None), Outcome.NONE
