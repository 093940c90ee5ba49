"""Inbound order commands: topics, payload validation, who may do what."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.orders.commands import (
    COMMAND_EVENTS,
    Actor,
    Command,
    CommandRejected,
    CommandTopic,
    authorise,
    check_sender,
    command_subscription,
    parse_command,
    parse_command_topic,
)
from sensord.core.orders.machine import Event
from sensord.core.orders.notices import reply_topic
from sensord.errors import SensordError

PREFIX = "city"


# --- topics


def test_the_subscription_covers_every_street_and_order() -> None:
    assert command_subscription(PREFIX) == "city/+/orders/+/events/+"


@pytest.mark.parametrize(
    ("topic", "prefix", "expected"),
    [
        ("city/s1/orders/42/events/staff.S1", "city", CommandTopic("s1", 42, "staff.S1")),
        (
            "a/b/Street_9-x/orders/007/events/app.ORG-PM1",
            "a/b",
            CommandTopic("Street_9-x", 7, "app.ORG-PM1"),
        ),
        (
            "city/s1/orders/999999999999999999/events/staff.x",
            "city",
            CommandTopic("s1", 10**18 - 1, "staff.x"),
        ),
    ],
)
def test_a_command_topic_names_the_street_and_order(
    topic: str, prefix: str, expected: CommandTopic
) -> None:
    assert parse_command_topic(topic, prefix) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "city",
        "town/s1/orders/42/events",
        "cityx/s1/orders/42/events",
        "city/s1/orders/42/replies",
        "city/s1/orders/42/events/more",
        "city/s1/orders/42/events",  # the sender-less topic of before: gone
        "city/s1/orders/42/events/device.SMK-1",  # devices and gateways never command
        "city/s1/orders/42/events/sensord.main",
        "city/s1/orders/42/events/staff.",
        "city/s1/orders/42/events/staff.S1/x",
        "city/s1/orders/4x/events",
        "city/s1/orders/-1/events",
        "city/s1/orders//events",
        "city/s1/orders/1000000000000000000/events",  # 19 digits
        "city//orders/42/events",
        "city/a/b/orders/42/events",
        "city/s+/orders/42/events",
        "city/s#/orders/42/events",
        "city/" + "s" * 65 + "/orders/42/events",
        "city/s1/dispatch/PM",
        "city/s1/smoke/SMK-1/readings",
    ],
)
def test_any_other_topic_is_not_a_command(topic: str) -> None:
    assert parse_command_topic(topic, PREFIX) is None


@given(
    street=st.text("abcXYZ019_-", min_size=1, max_size=64),
    order_id=st.integers(0, 10**18 - 1),
    sender=st.sampled_from(["staff.S-1", "app.ORG-PM1", "staff.a.b"]),
)
def test_a_command_topic_round_trips_and_its_reply_topic_is_not_a_command(
    street: str, order_id: int, sender: str
) -> None:
    topic = f"{PREFIX}/{street}/orders/{order_id}/events/{sender}"
    assert parse_command_topic(topic, PREFIX) == CommandTopic(street, order_id, sender)
    assert parse_command_topic(reply_topic(PREFIX, street, order_id), PREFIX) is None


# --- payloads


def payload(**fields: object) -> bytes:
    return json.dumps({"event": "ack", "by": "S-work", **fields}).encode()


def test_a_minimal_and_a_full_command() -> None:
    assert parse_command(payload()) == Command(event="ack", by="S-work")
    full = parse_command(payload(event="cancel", note="误报 false alarm", request_id="r-1"))
    assert (full.event, full.note, full.request_id) == ("cancel", "误报 false alarm", "r-1")


def test_every_command_event_is_a_machine_event_and_parses() -> None:
    for name in COMMAND_EVENTS:
        assert parse_command(payload(event=name)).event == Event(name).value


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b"{", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[]", "payload"),
        (b'"ack"', "payload"),
        (b'{"by": "S-work"}', "event"),
        (payload(colour="red"), "colour"),
        (payload(event="close"), "event"),
        (payload(event="ACK"), "event"),
        (payload(by=5), "by"),
        (payload(by=""), "by"),
        (payload(by="x" * 65), "by"),
        (payload(note=True), "note"),
        (payload(note="x" * 501), "note"),
        (payload(request_id=1), "request_id"),
        (payload(request_id="r" * 65), "request_id"),
    ],
)
def test_a_bad_command_is_rejected_as_invalid_naming_the_field(raw: bytes, names: str) -> None:
    with pytest.raises(CommandRejected) as caught:
        parse_command(raw)
    assert caught.value.code == "invalid"
    assert str(caught.value).startswith(names)
    assert isinstance(caught.value, SensordError)


def test_the_longest_note_and_ids_are_accepted() -> None:
    command = parse_command(payload(by="b" * 64, note="n" * 500, request_id="r" * 64))
    assert len(command.note) == 500


def test_deeply_nested_json_is_rejected_not_raised() -> None:
    # Well under the 16 KiB payload limit; json.loads raises RecursionError on it.
    with pytest.raises(CommandRejected) as caught:
        parse_command(b"[" * 10_000)
    assert caught.value.code == "invalid"


# --- authorisation

OWNER = Actor("S-pm", "PM", "property_company", "property_staff")
PARTY = Actor("S-work", "RC", "residents_committee", "grid_worker")
CENTRE = Actor("S-duty", "OPS", "ops_centre", "duty_officer")
DISTRICT = Actor("S-dist", "DIST", "district_office", "inspector")
STRANGER = Actor("S-lift", "EV", "elevator_vendor", "technician")
ACTORS = {"owner": OWNER, "party": PARTY, "centre": CENTRE, "district": DISTRICT, "other": STRANGER}
ALLOWED = {
    Event.ACK: {"owner"},
    Event.ARRIVE: {"owner"},
    Event.RESOLVE: {"owner"},
    Event.CANCEL: {"owner", "centre", "district"},
    Event.VERIFY: {"owner", "party", "centre", "district"},
    Event.REOPEN: {"owner", "party", "centre", "district"},
}


@pytest.mark.parametrize("event", list(ALLOWED))
@pytest.mark.parametrize("who", list(ACTORS))
def test_who_may_send_what(event: Event, who: str) -> None:
    actor = ACTORS[who]
    if who in ALLOWED[event]:
        authorise(event, actor, "PM", {"RC"})
        return
    with pytest.raises(CommandRejected) as caught:
        authorise(event, actor, "PM", {"RC"})
    assert caught.value.code == "unauthorised"
    assert f"{actor.staff_id} ({actor.org_id}) may not {event.value}" in str(caught.value)


def test_the_centre_works_an_order_it_owns() -> None:
    authorise(Event.ACK, CENTRE, "OPS", set())


def test_an_unrouted_order_has_no_owner_staff() -> None:
    with pytest.raises(CommandRejected):
        authorise(Event.ACK, OWNER, None, set())
    authorise(Event.CANCEL, CENTRE, None, set())


@pytest.mark.parametrize("event", list(ALLOWED))
def test_someone_not_in_the_registry_may_do_nothing(event: Event) -> None:
    with pytest.raises(CommandRejected) as caught:
        authorise(event, None, "PM", {"RC"})
    assert caught.value.code == "unauthorised"


# --- the authenticated sender (issue 11)

staff_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)


@given(staff_ids, staff_ids)
def test_a_member_of_staff_speaks_only_for_themselves(sender: str, by: str) -> None:
    actor = Actor(by, "PM", "property_company", "property_staff")
    if sender == by:
        check_sender(f"staff.{sender}", by, actor)
        return
    with pytest.raises(CommandRejected) as caught:
        check_sender(f"staff.{sender}", by, actor)
    assert (caught.value.code, caught.value.refusal) == ("unauthorised", "by_not_sender")


@given(staff_ids, st.sampled_from(["PM", "OPS", "RC"]))
def test_an_app_speaks_only_for_its_own_organisations_staff(app_org: str, staff_org: str) -> None:
    actor = Actor("S-1", staff_org, "property_company", "property_staff")
    if app_org == staff_org:
        check_sender(f"app.{app_org}", "S-1", actor)
        return
    with pytest.raises(CommandRejected) as caught:
        check_sender(f"app.{app_org}", "S-1", actor)
    assert caught.value.refusal == "outside_app_org"
    assert f"S-1 is not staff of {app_org}" in str(caught.value)


def test_an_unknown_by_is_refused_and_named() -> None:
    with pytest.raises(CommandRejected) as caught:
        check_sender("app.PM", "S-ghost", None)
    assert caught.value.refusal == "unknown_staff"


@pytest.mark.parametrize("category", ["fire", "elevator_entrapment", "fire_lane_blocked"])
@pytest.mark.parametrize("who", list(ACTORS))
def test_only_the_ops_centre_cancels_a_safety_order(category: str, who: str) -> None:
    """Whatever its category: a site's own safety rule is as safe as a shipped one."""
    actor = ACTORS[who]
    if actor.org_type == "ops_centre":
        authorise(Event.CANCEL, actor, "PM", {"RC"}, category, safety=True)
        return
    with pytest.raises(CommandRejected) as caught:
        authorise(Event.CANCEL, actor, "PM", {"RC"}, category, safety=True)
    assert caught.value.code == "unauthorised"
    if who in ALLOWED[Event.CANCEL]:
        assert caught.value.refusal == "safety_cancel"


def test_other_orders_are_cancelled_as_before() -> None:
    authorise(Event.CANCEL, OWNER, "PM", set(), "fire_lane_blocked")
    authorise(Event.ACK, OWNER, "PM", set(), "fire")
