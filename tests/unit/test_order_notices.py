"""Order notifications: minimised contacts, idempotency keys, topics, the message."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.context import build_snapshot
from sensord.core.orders.notices import (
    MESSAGE_VERSION,
    Contact,
    Recipient,
    contacts_for,
    dispatch_topic,
    message_id,
    order_notice,
    place_summary,
    reply_topic,
)
from tests.unit.test_context import small

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RESIDENTS = (
    Contact("张小明", "13812341234", ("elderly", "living_alone")),
    Contact("李明", None, ()),
)
MASKED_ROLES = ["property_company", "elevator_vendor", "maintainer", "enforcement"]
CONTACT_ROLES = ["grid_worker", "residents_committee", "ops_centre"]


def to(role: str, org_id: str | None = "ORG", reason: str = "owner") -> Recipient:
    return Recipient(role, org_id, None, reason)


# --- contacts


@pytest.mark.parametrize("role", CONTACT_ROLES)
def test_roles_that_call_on_residents_see_names_and_phones(role: str) -> None:
    assert contacts_for(to(role), RESIDENTS) == [
        {"name": "张小明", "phone": "13812341234", "tags": ["elderly", "living_alone"]},
        {"name": "李明", "phone": None, "tags": []},
    ]


@pytest.mark.parametrize("role", [*MASKED_ROLES, "district_office"])
def test_every_other_role_sees_them_masked_without_tags(role: str) -> None:
    # Tags (elderly, living alone …) only reach the roles that care for the residents
    # (docs/security.md, "Disclosure").
    assert contacts_for(to(role), RESIDENTS) == [
        {"name": "张*明", "phone": "138****1234", "tags": []},
        {"name": "李*", "phone": None, "tags": []},
    ]


@given(
    role=st.sampled_from(MASKED_ROLES),
    name=st.text("张李王小明华AbcZ", min_size=1, max_size=8),
    phone=st.text("0123456789-", min_size=1, max_size=16),
)
def test_a_masked_contact_never_carries_the_name_or_phone(role: str, name: str, phone: str) -> None:
    (seen,) = contacts_for(to(role), [Contact(name, phone, ())])
    assert seen["name"] != name
    assert seen["phone"] != phone
    assert len(seen["name"]) == len(name)


def test_no_contacts_no_list() -> None:
    assert contacts_for(to("grid_worker"), []) == []


# --- message ids


def test_a_message_id_is_deterministic_and_readable() -> None:
    recipient = to("property_company", "PM")
    assert message_id(12, 34, recipient, "mqtt") == "o12-e34-PM-mqtt"
    assert message_id(12, 34, recipient, "mqtt") == message_id(12, 34, to("x", "PM"), "mqtt")
    # An organisation that did not resolve is keyed by its role.
    assert message_id(12, 34, to("ops_centre", None), "webhook") == "o12-e34-ops_centre-webhook"


@given(
    keys=st.sets(
        st.tuples(
            st.integers(1, 10**9),  # order
            st.integers(1, 10**9),  # event
            st.text("ABCXYZ019_-", min_size=1, max_size=12),  # org id
            st.sampled_from(["mqtt", "webhook"]),
        ),
        min_size=2,
        max_size=20,
    )
)
def test_message_ids_differ_per_order_event_organisation_and_channel(
    keys: set[tuple[int, int, str, str]],
) -> None:
    ids = {message_id(o, e, to("role", org), channel) for o, e, org, channel in keys}
    assert len(ids) == len(keys)


# --- topics


def test_dispatch_and_reply_topics() -> None:
    assert dispatch_topic("city", "s1", "PM") == "city/s1/dispatch/PM"
    assert dispatch_topic("city", "s1", None) == "city/s1/dispatch/unrouted"
    assert dispatch_topic("city", None, "PM") == "city/unknown/dispatch/PM"
    assert reply_topic("city", "s1", 42) == "city/s1/orders/42/replies"
    assert reply_topic("a/b", None, "7") == "a/b/unknown/orders/7/replies"


# --- the message


def test_a_notice_carries_everything_the_recipient_may_see() -> None:
    order = {"id": 42, "state": "dispatched", "category": "fire"}
    recipient = Recipient("property_company", "PM", "S-pm", "notified")
    notice = order_notice(
        key="o42-e1-PM-mqtt", event="dispatched", at=T0, order=order,
        recipient=recipient, contacts=RESIDENTS, note="smoke in the kitchen",
    )  # fmt: skip
    assert notice == {
        "v": MESSAGE_VERSION,
        "message_id": "o42-e1-PM-mqtt",
        "type": "order.dispatched",
        "at": "2026-11-26T12:00:00+00:00",
        "recipient": {
            "org_id": "PM",
            "role": "property_company",
            "staff_id": "S-pm",
            "as": "notified",
        },
        "order": order,
        "contacts": contacts_for(recipient, RESIDENTS),
        "note": "smoke in the kitchen",
    }
    assert notice["order"] is not order
    text = json.dumps(notice, ensure_ascii=False)
    assert "张小明" not in text and "13812341234" not in text


def test_the_place_summary_has_counts_not_people() -> None:
    snapshot = build_snapshot(small())
    assert place_summary(None) == {}
    assert place_summary(snapshot.context("SMK-OLD")) == {}  # registered before the registry
    assert place_summary(snapshot.context("EB-D1")) == {
        "label": "1-101",
        "place_type": "dwelling",
        "floor": 1,
        "building": "Building 1",
        "compound": "Compound 1",
        "residents": 1,
        "elderly_living_alone": 1,
    }
