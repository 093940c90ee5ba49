"""The rules the store used to hold: the step that follows an event at once, and the
channels a recipient is told on (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from sensord.core.orders.machine import (
    TELEMETRY,
    TRANSITIONS,
    Event,
    Order,
    State,
    apply,
    follow_up,
)
from sensord.core.orders.notices import Delivery, Recipient, deliveries, dispatch_topic

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ORGS = st.sampled_from(["ORG-PM1", "ORG-OPS", "ORG-RC1", None])


def test_verify_closes_and_reopen_dispatches() -> None:
    assert follow_up(Event.VERIFY) == (Event.CLOSE, "closed after verification")
    assert follow_up(Event.REOPEN) == (Event.DISPATCH, "")


@given(st.sampled_from(list(Event)))
def test_only_verify_and_reopen_have_a_follow_up(event: Event) -> None:
    assert (follow_up(event) is not None) == (event in {Event.VERIFY, Event.REOPEN})


@given(st.sampled_from(list(State)), st.sampled_from(list(Event)))
def test_a_follow_up_is_always_accepted_by_the_state_it_leads_to(
    state: State, event: Event
) -> None:
    # Whatever state accepts the event, the machine accepts the follow-up after it:
    # the daemon's own step can never be refused in the same transaction.
    then = follow_up(event)
    target = TRANSITIONS[state].get(event)
    if then is None or target is None:
        return
    order = Order(1, state, resolved_by_role="grid_worker")
    moved = apply(order, event, at=T0, actor="x", role=TELEMETRY, note="why")
    closed = apply(moved, then[0], at=T0, actor="sensord", role="sensord", note=then[1])
    assert closed.state in {State.CLOSED, State.DISPATCHED}


@given(ORGS, st.frozensets(st.sampled_from(["ORG-PM1", "ORG-OPS", "ORG-VEN"])))
def test_mqtt_always_and_a_webhook_only_where_configured(
    org_id: str | None, webhook_orgs: frozenset[str]
) -> None:
    recipient = Recipient("property_company", org_id, None, "owner")
    found = deliveries(recipient, "sensord/v1", "jd01", webhook_orgs)
    assert found[0] == Delivery("mqtt", dispatch_topic("sensord/v1", "jd01", org_id))
    webhooks = [d for d in found if d.channel == "webhook"]
    if org_id in webhook_orgs:
        assert webhooks == [Delivery("webhook", org_id)]
    else:
        assert webhooks == []
    assert len(found) == 1 + len(webhooks)


def test_an_unresolved_organisation_goes_to_the_unrouted_topic() -> None:
    recipient = Recipient("ops_centre", None, None, "owner")
    assert deliveries(recipient, "sensord/v1", None, frozenset({"ORG-OPS"})) == (
        Delivery("mqtt", "sensord/v1/unknown/dispatch/unrouted"),
    )
