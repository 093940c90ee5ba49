"""The work-order state machine (pure): every transition validated and audited.

``new → dispatched → acknowledged → on_site → resolved → verified → closed``,
plus ``cancelled`` (a false alarm; a reason is required) and ``reopened`` (the
problem recurred after it was resolved; the order goes round again).
Closed-loop rule (闭环): an order is ``closed`` only after ``verified``, and a
person may verify only if they are not in the role that resolved it; the
telemetry verifier (the sensor back to normal) is its own role.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from sensord.errors import SensordError


class State(StrEnum):
    """Where an order is."""

    NEW = "new"
    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    ON_SITE = "on_site"
    RESOLVED = "resolved"
    VERIFIED = "verified"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    REOPENED = "reopened"


class Event(StrEnum):
    """What can happen to an order."""

    DISPATCH = "dispatch"
    ACK = "ack"
    ARRIVE = "arrive"
    RESOLVE = "resolve"
    VERIFY = "verify"
    CLOSE = "close"
    CANCEL = "cancel"
    REOPEN = "reopen"
    ESCALATE = "escalate"


TELEMETRY = "telemetry"  # the verifier role of "the sensor is back to normal"

# Being worked on: an owner has it, deadlines run, it can be cancelled or escalated.
OPEN_STATES = frozenset(
    {State.NEW, State.DISPATCHED, State.ACKNOWLEDGED, State.ON_SITE, State.REOPENED}
)
TRANSITIONS: dict[State, dict[Event, State]] = {
    State.NEW: {Event.DISPATCH: State.DISPATCHED},
    State.DISPATCHED: {Event.ACK: State.ACKNOWLEDGED},
    State.ACKNOWLEDGED: {Event.ARRIVE: State.ON_SITE},
    State.ON_SITE: {Event.RESOLVE: State.RESOLVED},
    State.RESOLVED: {Event.VERIFY: State.VERIFIED, Event.REOPEN: State.REOPENED},
    State.VERIFIED: {Event.CLOSE: State.CLOSED, Event.REOPEN: State.REOPENED},
    State.CLOSED: {Event.REOPEN: State.REOPENED},
    State.CANCELLED: {},
    State.REOPENED: {Event.DISPATCH: State.DISPATCHED},
}
for _state in OPEN_STATES:
    TRANSITIONS[_state][Event.CANCEL] = State.CANCELLED
    TRANSITIONS[_state][Event.ESCALATE] = _state  # up the grid; the state stays


# The step that follows an event at once: closure is the verified state's only way
# on, and a reopened order goes straight back to its owner.
FOLLOW_UP: dict[Event, tuple[Event, str]] = {
    Event.VERIFY: (Event.CLOSE, "closed after verification"),
    Event.REOPEN: (Event.DISPATCH, ""),
}


def follow_up(event: Event) -> tuple[Event, str] | None:
    """The event the daemon applies at once after ``event``, and its note; None if none."""
    return FOLLOW_UP.get(event)


class TransitionError(SensordError):
    """An event that the order's state does not allow, or a closed-loop rule broken."""

    def __init__(self, order_id: int, state: State, event: Event, reason: str = "") -> None:
        events = ", ".join(allowed(state)) or "none (final)"
        detail = f"; {reason}" if reason else ""
        super().__init__(
            f"order {order_id} is {state.value}: cannot {event.value}{detail} (allowed: {events})"
        )
        self.order_id = order_id
        self.state = state
        self.event = event


@dataclass(frozen=True, slots=True)
class Audit:
    """One recorded transition: who, when, from, to, note."""

    at: datetime
    actor: str
    role: str
    event: Event
    from_state: State
    to_state: State
    note: str


@dataclass(frozen=True, slots=True)
class Order:
    """A work order's lifecycle state (routing, deadlines and people live elsewhere)."""

    order_id: int
    state: State = State.NEW
    escalation_level: int = 0
    resolved_by_role: str | None = None
    audit: tuple[Audit, ...] = field(default=())


def apply(
    order: Order, event: Event, *, at: datetime, actor: str, role: str, note: str = ""
) -> Order:
    """The order after ``event``; raise TransitionError naming the state and allowed events."""
    target = TRANSITIONS[order.state].get(event)
    if target is None:
        raise TransitionError(order.order_id, order.state, event)
    if event is Event.CANCEL and not note.strip():
        raise TransitionError(order.order_id, order.state, event, "a reason is required")
    if event is Event.VERIFY and role == order.resolved_by_role:
        raise TransitionError(
            order.order_id,
            order.state,
            event,
            f"the resolver's role ({role}) cannot verify; another role or telemetry must",
        )
    entry = Audit(at, actor, role, event, order.state, target, note)
    resolved_by = role if event is Event.RESOLVE else order.resolved_by_role
    if target is State.REOPENED:
        resolved_by = None
    return replace(
        order,
        state=target,
        escalation_level=order.escalation_level + (event is Event.ESCALATE),
        resolved_by_role=resolved_by,
        audit=(*order.audit, entry),
    )


def allowed(state: State) -> tuple[Event, ...]:
    """Events the state accepts, for error messages and the CLI."""
    return tuple(sorted(TRANSITIONS[state]))
