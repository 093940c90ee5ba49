"""Decisions around the state machine (pure): deadlines, escalation targets, recurrence.

Deadlines count from dispatch: acknowledge by ``ack_s``, on site by
``arrive_s``, resolved by ``resolve_s``. An escalation hands the order to the
next party up the chain with a fresh budget for the phase it is stuck in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sensord.core.context import DeviceContext
from sensord.core.orders.machine import OPEN_STATES, State
from sensord.core.orders.policy import Deadlines
from sensord.core.orders.routing import Party, resolve

PHASES = ("ack", "arrive", "resolve")
_PHASE_OF = {
    State.DISPATCHED: "ack",
    State.ACKNOWLEDGED: "arrive",
    State.ON_SITE: "resolve",
}


@dataclass(frozen=True, slots=True)
class Due:
    """The next deadline of an order, or none (``phase`` None) once it is resolved."""

    phase: str | None
    at: datetime | None


NOTHING_DUE = Due(None, None)


def _offset(deadlines: Deadlines, phase: str) -> int:
    return {"ack": deadlines.ack_s, "arrive": deadlines.arrive_s, "resolve": deadlines.resolve_s}[
        phase
    ]


def due_after(
    state: State,
    dispatched_at: datetime | None,
    deadlines: Deadlines,
    escalated_at: datetime | None = None,
) -> Due:
    """The deadline an order in ``state`` works towards, counted from its dispatch.

    An escalated order's owner took it over at ``escalated_at`` (pass the time
    of the step being made): each later phase gets at least its own budget
    from then, instead of a deadline that passed before they had it.
    """
    phase = _PHASE_OF.get(state)
    if phase is None or dispatched_at is None:
        return NOTHING_DUE
    due = dispatched_at + timedelta(seconds=_offset(deadlines, phase))
    if escalated_at is not None:
        due = max(due, escalated_at + phase_budget(deadlines, phase))
    return Due(phase, due)


def phase_budget(deadlines: Deadlines, phase: str) -> timedelta:
    """What a new owner gets after an escalation: the phase's own share of the SLA."""
    index = PHASES.index(phase)
    own = _offset(deadlines, phase) - (_offset(deadlines, PHASES[index - 1]) if index else 0)
    return timedelta(seconds=max(own, deadlines.ack_s))


def escalation_roles(chain: tuple[str, ...], owner_role: str) -> tuple[str, ...]:
    """Roles above ``owner_role``, nearest first.

    A party outside the grid chain (property company, vendor, maintainer,
    enforcement) is pushed by the chain's second level first: the residents'
    committee of the place, as in the field.
    """
    if owner_role in chain:
        return chain[chain.index(owner_role) + 1 :]
    return chain[1:]


def escalation_target(
    chain: tuple[str, ...], owner_role: str, context: DeviceContext | None
) -> Party | None:
    """The nearest party above the owner that resolves at the place; None at the top
    (or when the registry does not place the device: nothing resolves)."""
    for role in escalation_roles(chain, owner_role):
        party = resolve(role, context)
        if party is not None:
            return party
    return None


class Recurrence(StrEnum):
    """What a new firing episode of an alert does to the subject's latest order."""

    CREATE = "create"  # no order, or the last one is cancelled or too old
    ATTACH = "attach"  # the order is still being worked: note it, nothing else
    REOPEN = "reopen"  # resolved, verified or closed within the window: reopen


_DONE = frozenset({State.RESOLVED, State.VERIFIED, State.CLOSED})


def recurrence(
    latest: State | None, finished_at: datetime | None, now: datetime, window_s: int
) -> Recurrence:
    """Decide for the latest order of the subject (``finished_at``: resolved or closed time)."""
    if latest is None or latest is State.CANCELLED:
        return Recurrence.CREATE
    if latest in OPEN_STATES:
        return Recurrence.ATTACH
    if latest in _DONE and (
        latest is not State.CLOSED
        or finished_at is None
        or now - finished_at <= timedelta(seconds=window_s)
    ):
        return Recurrence.REOPEN
    return Recurrence.CREATE
