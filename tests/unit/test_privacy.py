"""The disclosure policy: its documented table, its own consistency, and the notices obeying it."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.orders.notices import Contact, Recipient, order_notice
from sensord.core.privacy import (
    DISCLOSURE,
    LEVELS,
    OTHER,
    UNROUTED,
    at_least,
    disclosure_for,
    disclosure_table,
)
from sensord.core.registry.vocabulary import ORG_TYPES, PLACE_TYPES

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "security.md"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
NAME, PHONE, FLAT = "张小明", "13812341234", "3号楼 501室"
RESIDENTS = (Contact(NAME, PHONE, ("elderly", "living_alone")),)
REGENERATE = (
    "python -c 'from sensord.core.privacy import disclosure_table; "
    'print(disclosure_table(), end="")\''
)


def documented_table() -> str:
    text = DOC.read_text()
    match = re.search(
        r"^<!-- disclosure table: .*? -->\n(.*?)^<!-- end of disclosure table -->$",
        text,
        re.S | re.M,
    )
    assert match, "docs/security.md has no generated disclosure table"
    return match.group(1)


def test_the_documented_table_is_the_policy() -> None:
    assert documented_table() == disclosure_table(), (
        f"docs/security.md's disclosure table is out of date; regenerate it with: {REGENERATE}"
    )
    assert "\n## Disclosure\n" in DOC.read_text()


def test_every_role_a_route_can_name_has_a_row() -> None:
    routing = tomllib.loads((REPO / "rules" / "routing.toml").read_text())
    named = {route["owner"] for route in routing["route"]}
    named |= {role for route in routing["route"] for role in route.get("notify", ())}
    named |= set(routing["orders"]["escalation"])
    roles = {*ORG_TYPES, "grid_worker", "maintainer"}
    assert named <= roles
    assert roles <= set(DISCLOSURE), sorted(roles - set(DISCLOSURE))


@pytest.mark.parametrize("role", list(DISCLOSURE))
def test_each_row_is_consistent(role: str) -> None:
    rule = DISCLOSURE[role]
    # Only told is never more than owning; tags go only with the full contacts.
    assert at_least(rule.as_owner, rule.notified)
    assert not rule.tags or rule.contacts == "full"
    assert rule.why and "|" not in rule.why


def test_the_unknown_and_the_unrouted_get_the_least() -> None:
    least = DISCLOSURE[OTHER]
    assert disclosure_for("a_new_org_type", "ORG-X") is least
    assert disclosure_for("ops_centre", None) is DISCLOSURE[UNROUTED]  # nobody in particular
    for rule in DISCLOSURE.values():
        assert at_least(rule.notified, least.notified) and at_least(rule.as_owner, least.as_owner)
    assert (least.contacts, least.tags) == ("masked", False)


# --- the notices obey it


def dwelling(**extra: Any) -> dict[str, Any]:
    place = {
        "label": FLAT, "place_type": "dwelling", "floor": 5, "building": "3号楼",
        "compound": "丰顺小区", "residents": 1, "elderly_living_alone": 1,
    }  # fmt: skip
    return {
        "id": 7, "category": "ebike_indoor_charging", "device_id": "EB-000123",
        "address_id": "A-000026", "place": {**place, **extra},
    }  # fmt: skip


def notice(recipient: Recipient, order: dict[str, Any]) -> dict[str, Any]:
    return order_notice(
        key="k", event="dispatch", at=T0, order=order, recipient=recipient,
        contacts=RESIDENTS, note="",
    )  # fmt: skip


def test_the_property_company_told_of_a_home_gets_the_building_and_nothing_personal() -> None:
    # The finding: e-bike charging at home, owned by the grid worker, the company notified.
    told = notice(Recipient("property_company", "ORG-PM1", None, "notified"), dwelling())
    assert told["order"]["place"] == {
        "label": None, "place_type": "dwelling", "floor": None, "building": "3号楼",
        "compound": "丰顺小区", "residents": 1, "elderly_living_alone": None,
    }  # fmt: skip
    assert told["order"]["address_id"] is None and told["order"]["device_id"] is None
    assert told["contacts"] == [{"name": "张*明", "phone": "138****1234", "tags": []}]
    text = json.dumps(told, ensure_ascii=False)
    for secret in (NAME, PHONE, FLAT, '"elderly"', '"living_alone"', "A-000026", "EB-000123"):
        assert secret not in text


def test_the_property_company_owning_a_home_fire_gets_the_door_but_no_tags() -> None:
    owner = notice(Recipient("property_company", "ORG-PM1", None, "owner"), dwelling())
    assert owner["order"]["place"]["label"] == FLAT and owner["order"]["place"]["floor"] == 5
    assert owner["order"]["address_id"] == "A-000026"
    assert owner["order"]["place"]["elderly_living_alone"] is None
    assert owner["contacts"][0]["tags"] == []


def test_the_grid_worker_gets_everything() -> None:
    order = dwelling()
    told = notice(Recipient("grid_worker", "ORG-RC1", "S-1", "owner"), order)
    assert told["order"] == order
    assert told["contacts"] == [{"name": NAME, "phone": PHONE, "tags": ["elderly", "living_alone"]}]


def test_the_owners_committee_gets_no_contacts() -> None:
    assert (
        notice(Recipient("owners_committee", "ORG-OC1", None, "notified"), dwelling())["contacts"]
        == []
    )


@pytest.mark.parametrize("place_type", [p for p in PLACE_TYPES if p != "dwelling"])
def test_a_shared_place_is_given_to_everyone_but_its_tag_counts(place_type: str) -> None:
    order = dwelling(place_type=place_type, label="3号楼 5层 公共厨房")
    told = notice(Recipient("elevator_vendor", "ORG-EV1", None, "notified"), order)
    assert told["order"]["place"] == {**order["place"], "elderly_living_alone": None}
    assert told["order"]["device_id"] == "EB-000123"


def test_an_order_without_a_place_is_passed_on() -> None:
    order = {"id": 1, "device_id": "SMK-OLD", "address_id": None, "place": {}}
    assert notice(Recipient("property_company", "P", None, "owner"), order)["order"] == order


@given(
    role=st.one_of(st.sampled_from(sorted(DISCLOSURE)), st.text(max_size=12)),
    org_id=st.one_of(st.none(), st.just("ORG-1")),
    reason=st.sampled_from(["owner", "notified", "previous_owner"]),
    place_type=st.sampled_from(PLACE_TYPES),
)
def test_no_notice_says_more_than_the_policy(
    role: str, org_id: str | None, reason: str, place_type: str
) -> None:
    rule = disclosure_for(role, org_id)
    order = dwelling(place_type=place_type)
    told = notice(Recipient(role, org_id, None, reason), order)
    text = json.dumps(told, ensure_ascii=False)
    place = told["order"]["place"]
    assert (NAME in text) == (PHONE in text) == (rule.contacts == "full")
    assert ('"elderly"' in text) == rule.tags  # the tag, not the key elderly_living_alone
    assert (place["elderly_living_alone"] is not None) == rule.tags
    assert place["building"] == "3号楼" and place["residents"] == 1
    home = place_type == "dwelling"
    level = rule.level(reason == "owner")
    assert (FLAT in text) == (not home or level == "flat")
    assert ("A-000026" in text) == ("EB-000123" in text) == (not home or level == "flat")
    assert (place["floor"] == 5) == (not home or at_least(level, "floor"))
    assert len(told["contacts"]) == (0 if rule.contacts == "none" else 1)


def test_levels_are_ordered_coarse_to_fine() -> None:
    assert LEVELS == ("building", "floor", "flat")
    assert at_least("flat", "building") and not at_least("building", "floor")
