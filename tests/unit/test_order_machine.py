"""The work-order state machine: closed loop, audit, clear errors (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sensord.core.orders.machine import (
    TELEMETRY,
    Event,
    Order,
    State,
    TransitionError,
    allowed,
    apply,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def walk(*steps: tuple[Event, str]) -> Order:
    order = Order(1)
    for n, (event, role) in enumerate(steps):
        order = apply(
            order,
            event,
            at=T0 + timedelta(minutes=n),
            actor=f"{role}-1",
            role=role,
            note="false alarm" if event is Event.CANCEL else "",
        )
    return order


HAPPY = (
    (Event.DISPATCH, "sensord"), (Event.ACK, "grid_worker"), (Event.ARRIVE, "grid_worker"),
    (Event.RESOLVE, "grid_worker"), (Event.VERIFY, TELEMETRY), (Event.CLOSE, "sensord"),
)  # fmt: skip


def test_the_closed_loop() -> None:
    order = walk(*HAPPY)
    assert order.state is State.CLOSED
    assert [a.to_state for a in order.audit][-2:] == [State.VERIFIED, State.CLOSED]


def test_the_resolver_cannot_verify_their_own_work() -> None:
    with pytest.raises(TransitionError, match="resolver's role"):
        walk(*HAPPY[:4], (Event.VERIFY, "grid_worker"))


def test_an_invalid_event_names_the_state_and_the_allowed_events() -> None:
    with pytest.raises(TransitionError) as caught:
        walk((Event.DISPATCH, "sensord"), (Event.RESOLVE, "grid_worker"))
    message = str(caught.value)
    assert "is dispatched: cannot resolve" in message
    assert "ack" in message and "cancel" in message


def test_cancel_needs_a_reason_and_reopen_goes_round_again() -> None:
    with pytest.raises(TransitionError, match="reason"):
        apply(Order(1), Event.CANCEL, at=T0, actor="x", role="ops_centre", note=" ")
    order = walk(*HAPPY, (Event.REOPEN, "sensord"), (Event.DISPATCH, "sensord"))
    assert order.state is State.DISPATCHED
    assert order.resolved_by_role is None


class OrderMachine(RuleBasedStateMachine):
    """Any sequence of events: closed only after verified; every change audited."""

    def __init__(self) -> None:
        super().__init__()
        self.order = Order(7)
        self.clock = T0

    @rule(
        event=st.sampled_from(list(Event)),
        role=st.sampled_from(["grid_worker", "property_company", "ops_centre", TELEMETRY]),
    )
    def happen(self, event: Event, role: str) -> None:
        self._try(event, role)

    @rule(
        data=st.data(),
        role=st.sampled_from(["grid_worker", "property_company", "ops_centre", TELEMETRY]),
    )
    def work_on(self, data: st.DataObject, role: str) -> None:
        # An event the state accepts, short of cancelling (which ends the order): without
        # this, most runs cancel early and `closed` is rarely reached.
        events = [e for e in allowed(self.order.state) if e is not Event.CANCEL]
        if events:
            self._try(data.draw(st.sampled_from(events)), role)

    def _try(self, event: Event, role: str) -> None:
        self.clock += timedelta(minutes=1)
        before = self.order
        try:
            self.order = apply(
                before, event, at=self.clock, actor="someone", role=role, note="reason"
            )
        except TransitionError as exc:
            assert exc.state is before.state
            assert self.order is before
        else:
            assert len(self.order.audit) == len(before.audit) + 1
            assert self.order.audit[-1].from_state is before.state

    @invariant()
    def closed_only_after_verified(self) -> None:
        states = [a.to_state for a in self.order.audit]
        for index, state in enumerate(states):
            if state is State.CLOSED:
                assert index > 0 and states[index - 1] is State.VERIFIED

    @invariant()
    def the_audit_is_the_history(self) -> None:
        if self.order.audit:
            assert self.order.audit[-1].to_state is self.order.state
        for earlier, later in zip(self.order.audit, self.order.audit[1:], strict=False):
            assert later.from_state is earlier.to_state


TestOrderMachine = OrderMachine.TestCase
