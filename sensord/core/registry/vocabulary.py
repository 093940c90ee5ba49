"""The registry's terms: each defined once, and imported wherever it is used (simulators too).

A device kind is one of :data:`DEVICE_KINDS`; the topic grammar adds ``heartbeat``
(``core/topics.TOPIC_KINDS``), which is a kind of message, not of device.
"""

from __future__ import annotations

from collections.abc import Mapping

DEVICE_KINDS: tuple[str, ...] = ("smoke", "ebike", "elevator", "fire_lane")
LEVELS = ("comprehensive_grid", "residential_area", "micro_grid", "building_group")
PLACE_TYPES = (
    "dwelling", "public_kitchen", "public_bathroom", "stairwell", "corridor",
    "elevator", "fire_lane", "bike_shed", "shop", "office",
)  # fmt: skip
OUTDOOR_PLACES = frozenset({"fire_lane", "bike_shed"})
ORG_TYPES = (
    "ops_centre", "ops_workstation", "residents_committee", "property_company",
    "owners_committee", "elevator_vendor", "device_vendor", "enforcement",
    "district_office",
)  # fmt: skip
STAFF_ROLES = (
    "grid_leader", "grid_worker", "duty_officer", "building_leader", "property_staff",
    "technician",
)  # fmt: skip
SCOPE_TYPES = ("street", "grid", "compound", "building")
# What a responsibility is held for: one device kind, or every kind ("any"). Not
# an alert category (core/rules/model.CATEGORIES): routing asks by the device's kind.
RESPONSIBILITY_CATEGORIES = ("any", *DEVICE_KINDS)
RESPONSIBILITY_ROLES = ("responder", "maintainer", "supervisor", "enforcer", "notified")
# Where each kind of device can hang; a smoke detector in an elevator car is a typo.
PLACES_FOR_KIND: Mapping[str, frozenset[str]] = {
    "smoke": frozenset(PLACE_TYPES) - {"elevator", "fire_lane"},
    "ebike": frozenset({"dwelling", "corridor", "stairwell", "bike_shed"}),
    "elevator": frozenset({"elevator"}),
    "fire_lane": frozenset({"fire_lane"}),
}
