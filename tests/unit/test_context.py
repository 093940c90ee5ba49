"""The registry snapshot: chains, residents' tags, most specific responsibility first, sharing."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import pytest

from sensord.core.context import (
    EMPTY,
    NO_RESIDENTS,
    DeviceRow,
    OrganisationRow,
    RegistryInconsistent,
    RegistryRows,
    RegistrySnapshot,
    ResidentTagsRow,
    StaffCoverRow,
    build_snapshot,
)
from sensord.core.messages import DecodeLimits, DeviceInfo, decode
from sensord.core.registry.rows import Address, Building, Compound, GridUnit, Responsibility, Street
from sensord.errors import PayloadError
from simulators.district import generate


def device(
    device_id: str,
    kind: str,
    address_id: str | None,
    maintainer: str | None = None,
    street: str = "s1",
) -> DeviceRow:
    return DeviceRow(
        device_id, kind, street, address_id, "M-1", date(2024, 1, 2), 60, date(2026, 1, 2),
        maintainer,
    )  # fmt: skip


def small() -> RegistryRows:
    """One street; two building groups in one micro-grid; a compound of two buildings."""
    return RegistryRows(
        streets=[Street("s1", "Street One")],
        grid_units=[
            GridUnit("cg1", "comprehensive_grid", "s1", "Grid 1"),
            GridUnit("ra1", "residential_area", "cg1", "Area 1"),
            GridUnit("mg1", "micro_grid", "ra1", "Micro 1"),
            GridUnit("bg1", "building_group", "mg1", "Group 1"),
            GridUnit("bg2", "building_group", "mg1", "Group 2"),
        ],
        organisations=[
            OrganisationRow("OPS", "ops_centre", "Ops", "021-1"),
            OrganisationRow("RC", "residents_committee", "Committee", None),
            OrganisationRow("PM", "property_company", "Property", "021-2"),
            OrganisationRow("EV", "elevator_vendor", "Lifts", None),
            OrganisationRow("DV", "device_vendor", "Sensors", None),
            OrganisationRow("ENF", "enforcement", "Enforcer", None),
        ],
        compounds=[Compound("C1", "Compound 1", "ra1")],
        buildings=[Building("B1", "C1", "Building 1", 6), Building("B2", "C1", "B 2", 12)],
        addresses=[
            Address("D1-1", "dwelling", "bg1", "C1", "B1", "1-101", 1),
            Address("D1-2", "dwelling", "bg1", "C1", "B1", "1-102", 1),
            Address("D2-1", "dwelling", "bg1", "C1", "B1", "1-201", 2),
            Address("D3-1", "dwelling", "bg2", "C1", "B2", "2-101", 1),
            Address("K1", "public_kitchen", "bg1", "C1", "B1", "kitchen 1F", 1),
            Address("ST1", "stairwell", "bg1", "C1", "B1", "stairs", None),
            Address("EL2", "elevator", "bg2", "C1", "B2", "lift", None),
            Address("FL1", "fire_lane", "bg1", "C1", None, "lane", None),
        ],
        resident_tags=[
            ResidentTagsRow("D1-1", ("elderly", "living_alone"), 1),
            ResidentTagsRow("D1-2", (), 2),
            ResidentTagsRow("D1-2", ("elderly",), 1),
            ResidentTagsRow("D2-1", ("disabled", "elderly"), 1),
            ResidentTagsRow("D3-1", ("elderly", "living_alone"), 1),
        ],
        staff=[
            StaffCoverRow("S-lead", "RC", "grid_leader", "mg1"),
            StaffCoverRow("S-work", "RC", "grid_worker", "mg1"),
            StaffCoverRow("S-bl1", "RC", "building_leader", "bg1"),
            StaffCoverRow("S-bl2", "RC", "building_leader", "bg2"),
            StaffCoverRow("S-duty", "OPS", "duty_officer", "cg1"),
            StaffCoverRow("S-pm", "PM", "property_staff", "ra1"),
            StaffCoverRow("S-pm", "PM", "property_staff", "mg1"),
        ],
        responsibilities=[
            Responsibility("OPS", "street", "s1", "any", "supervisor"),
            Responsibility("DV", "street", "s1", "smoke", "maintainer"),
            Responsibility("ENF", "street", "s1", "fire_lane", "enforcer"),
            Responsibility("RC", "grid", "ra1", "any", "responder"),
            Responsibility("RC", "grid", "bg1", "smoke", "notified"),
            Responsibility("PM", "compound", "C1", "any", "responder"),
            Responsibility("PM", "compound", "C1", "smoke", "responder"),
            Responsibility("EV", "building", "B2", "elevator", "maintainer"),
        ],
        devices=[
            device("SMK-K1", "smoke", "K1", "DV"),
            device("SMK-ST1", "smoke", "ST1", "DV"),
            device("EB-D1", "ebike", "D1-1"),
            device("EL-2", "elevator", "EL2", "EV"),
            device("FL-1", "fire_lane", "FL1"),
            device("SMK-OLD", "smoke", None),  # registered before the registry
        ],
    )


@pytest.fixture(scope="module")
def snap() -> RegistrySnapshot:
    return build_snapshot(small())


def ctx(snap: RegistrySnapshot, device_id: str) -> Any:
    found = snap.context(device_id)
    assert found is not None
    return found


def test_the_grid_chain_runs_from_the_street_down_to_the_building_group(
    snap: RegistrySnapshot,
) -> None:
    chain = ctx(snap, "SMK-K1").grid_chain
    assert [(link.grid_id, link.level, link.name) for link in chain] == [
        ("s1", "street", "Street One"),
        ("cg1", "comprehensive_grid", "Grid 1"),
        ("ra1", "residential_area", "Area 1"),
        ("mg1", "micro_grid", "Micro 1"),
        ("bg1", "building_group", "Group 1"),
    ]
    assert ctx(snap, "EL-2").grid_chain[-1].grid_id == "bg2"


def test_place_building_compound_and_device_upkeep(snap: RegistrySnapshot) -> None:
    context = ctx(snap, "SMK-K1")
    place = context.place
    assert (place.address_id, place.place_type, place.label, place.floor) == (
        "K1", "public_kitchen", "kitchen 1F", 1,
    )  # fmt: skip
    assert (place.building.building_id, place.building.floors) == ("B1", 6)
    assert (place.compound.compound_id, place.compound.area_id) == ("C1", "ra1")
    assert (place.building_group_id, place.street_id) == ("bg1", "s1")
    record = context.device
    assert (record.device_id, record.kind, record.model, record.heartbeat_s) == (
        "SMK-K1", "smoke", "M-1", 60,
    )  # fmt: skip
    assert record.inspection_due == date(2026, 1, 2)
    assert record.maintainer_org_id == "DV"
    assert record.maintainer.org_type == "device_vendor"
    outdoors = ctx(snap, "FL-1").place
    assert outdoors.building is None and outdoors.compound.compound_id == "C1"


def test_most_specific_scope_first_and_the_exact_category_before_any(
    snap: RegistrySnapshot,
) -> None:
    smoke = ctx(snap, "SMK-K1")
    got = [(r.org_id, r.category, r.role, r.scope_type, r.scope_level) for r in smoke.responsible]
    assert got == [
        ("PM", "smoke", "responder", "compound", "compound"),
        ("PM", "any", "responder", "compound", "compound"),
        ("RC", "smoke", "notified", "grid", "building_group"),
        ("RC", "any", "responder", "grid", "residential_area"),
        ("DV", "smoke", "maintainer", "street", "street"),
        ("OPS", "any", "supervisor", "street", "street"),
    ]  # fmt: skip
    # The most specific holder of a role wins.
    assert smoke.first("responder").org_id == "PM"
    assert smoke.first("responder").category == "smoke"
    assert smoke.first("maintainer").org_id == "DV"
    assert smoke.first("enforcer") is None
    # Another category at the same place: the committee's smoke-only notice is gone.
    lane = smoke.responsible_for("fire_lane")
    assert [(r.org_id, r.role) for r in lane] == [
        ("PM", "responder"), ("RC", "responder"), ("ENF", "enforcer"), ("OPS", "supervisor"),
    ]  # fmt: skip
    assert smoke.first("enforcer", "fire_lane").org_id == "ENF"
    assert [r.org_id for r in smoke.responsible_for("any")] == ["PM", "RC", "OPS"]
    # The building's own entry beats everything above it.
    lift = ctx(snap, "EL-2")
    assert lift.responsible[0].org_id == "EV"
    assert lift.responsible[0].scope_type == "building"
    assert lift.first("maintainer").org_id == "EV"
    assert not lift.unassigned


def test_a_device_nobody_answers_for_resolves_with_an_empty_list_and_a_flag() -> None:
    rows = small()
    rows = dataclasses.replace(
        rows, responsibilities=[r for r in rows.responsibilities if r.category != "any"]
    )
    snap = build_snapshot(rows)
    ebike = ctx(snap, "EB-D1")
    assert ebike.responsible == ()
    assert ebike.unassigned
    assert ebike.first("responder") is None
    assert ebike.place.address_id == "D1-1"  # the rest still resolves
    assert len(ebike.grid_chain) == 5
    assert not ctx(snap, "SMK-K1").unassigned
    assert snap.stats.unassigned == 1
    assert [d for d, c in snap.contexts.items() if c.unassigned] == ["EB-D1"]


def test_residents_of_a_place_are_summarised_as_counts(snap: RegistrySnapshot) -> None:
    kitchen = ctx(snap, "SMK-K1").residents  # floor 1 of B1: D1-1 and D1-2
    assert kitchen.residents_of == "floor"
    assert kitchen.residents == 4
    assert kitchen.tags == {"elderly", "living_alone"}
    assert dict(kitchen.tag_counts) == {"elderly": 2, "living_alone": 1}
    assert kitchen.elderly_living_alone == 1
    assert kitchen.count("elderly") == 2
    assert kitchen.count() == 4
    stairs = ctx(snap, "SMK-ST1").residents  # no floor: the whole building B1
    assert (stairs.residents_of, stairs.residents) == ("building", 5)
    assert stairs.count("disabled") == 1
    lane = ctx(snap, "FL-1").residents  # outdoors: building group bg1
    assert (lane.residents_of, lane.residents) == ("building_group", 5)
    own = ctx(snap, "EB-D1").residents
    assert (own.residents_of, own.residents, own.elderly_living_alone) == ("dwelling", 1, 1)
    lift = ctx(snap, "EL-2").residents  # B2: one elderly person living alone
    assert (lift.residents_of, lift.residents, lift.elderly_living_alone) == ("building", 1, 1)


def test_staff_covering_the_chain_most_specific_unit_first(snap: RegistrySnapshot) -> None:
    staff = ctx(snap, "SMK-K1").staff
    assert [(s.staff_id, s.role, s.covers) for s in staff] == [
        ("S-bl1", "building_leader", ("bg1",)),
        ("S-lead", "grid_leader", ("mg1",)),
        ("S-work", "grid_worker", ("mg1",)),
        ("S-pm", "property_staff", ("mg1", "ra1")),
        ("S-duty", "duty_officer", ("cg1",)),
    ]
    assert [s.staff_id for s in ctx(snap, "SMK-K1").staff_of("PM")] == ["S-pm"]
    assert "S-bl1" not in {s.staff_id for s in ctx(snap, "EL-2").staff}


def test_a_device_registered_before_the_registry_has_its_street_only(
    snap: RegistrySnapshot,
) -> None:
    old = ctx(snap, "SMK-OLD")
    assert old.place is None
    assert [link.grid_id for link in old.grid_chain] == ["s1"]
    assert old.residents is NO_RESIDENTS
    assert old.staff == ()
    assert [r.org_id for r in old.responsible] == ["DV", "OPS"]  # street-scoped only
    assert snap.stats.unplaced == 1
    # A street that is not in the registry at all: no chain, nobody answers.
    lone = build_snapshot(RegistryRows(devices=[device("X-1", "smoke", None, street="jd99")]))
    assert lone.device("X-1") == DeviceInfo("smoke", "jd99")
    assert ctx(lone, "X-1").grid_chain == ()
    assert ctx(lone, "X-1").unassigned


def test_lookups_are_shared_frozen_objects(snap: RegistrySnapshot) -> None:
    assert snap.device("SMK-K1") == DeviceInfo("smoke", "s1")
    assert snap.device("nobody") is None and snap.context("nobody") is None
    assert snap.context("SMK-K1") is snap.context("SMK-K1")
    # One DeviceInfo per (kind, street); one chain and staff list per building group.
    assert snap.device("SMK-K1") is snap.device("SMK-ST1")
    assert ctx(snap, "SMK-K1").grid_chain is ctx(snap, "FL-1").grid_chain
    assert ctx(snap, "SMK-K1").staff is ctx(snap, "SMK-ST1").staff
    assert ctx(snap, "SMK-K1").responsibilities is ctx(snap, "SMK-ST1").responsibilities
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx(snap, "SMK-K1").unassigned = True
    with pytest.raises(TypeError):
        snap.devices["new"] = DeviceInfo("smoke", "s1")  # type: ignore[index]
    assert len(snap) == 6 and len(EMPTY) == 0 and EMPTY.context("SMK-K1") is None


def test_the_decoder_checks_topics_against_the_snapshot(snap: RegistrySnapshot) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    payload = b'{"ts": "2026-01-01T00:00:00Z", "seq": 1, "smoke": false}'
    reading = decode("sensord/v1/s1/smoke/SMK-K1", payload, now, snap.devices, DecodeLimits())
    assert reading.device_id == "SMK-K1"
    with pytest.raises(PayloadError) as unknown:
        decode("sensord/v1/s1/smoke/SMK-GONE", payload, now, snap.devices, DecodeLimits())
    assert unknown.value.reason == "unknown_device"
    with pytest.raises(PayloadError) as street:
        decode("sensord/v1/s2/smoke/SMK-K1", payload, now, snap.devices, DecodeLimits())
    assert street.value.reason == "street_mismatch"


@pytest.mark.parametrize(
    ("change", "table", "target"),
    [
        (lambda r: {"devices": [device("D", "smoke", "NOWHERE")]}, "devices", "NOWHERE"),
        (lambda r: {"devices": [device("D", "smoke", "K1", "NOORG")]}, "devices", "NOORG"),
        (
            lambda r: {"grid_units": [u for u in r.grid_units if u.grid_id != "mg1"]},
            "grid_units",
            "mg1",
        ),
        (
            lambda r: {
                "responsibilities": [Responsibility("GHOST", "street", "s1", "any", "notified")]
            },
            "responsibilities",
            "GHOST",
        ),
    ],
)
def test_a_dangling_reference_is_an_error_naming_it(change: Any, table: str, target: str) -> None:
    rows = small()
    with pytest.raises(RegistryInconsistent) as raised:
        build_snapshot(dataclasses.replace(rows, **change(rows)))
    assert (raised.value.table, raised.value.target) == (table, target)


# --- the synthetic district ------------------------------------------------------------


def district_rows(tables: dict[str, list[Any]]) -> RegistryRows:
    """The district generator's tables as the snapshot reader would read them."""
    units = {u.grid_id: u for u in tables["grid_units"]}
    addresses = {a.address_id: a for a in tables["addresses"]}

    def street_of(grid_id: str) -> str:
        unit = units[grid_id]
        return unit.parent_id if unit.level == "comprehensive_grid" else street_of(unit.parent_id)

    household_at = {h.household_id: h.address_id for h in tables["households"]}
    tags = Counter((household_at[r.household_id], r.tags) for r in tables["residents"])
    staff = {s.staff_id: s for s in tables["staff"]}
    return RegistryRows(
        streets=[Street(s.street_id, s.name) for s in tables["streets"]],
        grid_units=[GridUnit(*u) for u in tables["grid_units"]],
        organisations=[
            OrganisationRow(o.org_id, o.org_type, o.name, o.phone) for o in tables["organisations"]
        ],
        compounds=[Compound(*c) for c in tables["compounds"]],
        buildings=[Building(*b) for b in tables["buildings"]],
        addresses=[Address(*a) for a in tables["addresses"]],
        resident_tags=[ResidentTagsRow(a, t, n) for (a, t), n in tags.items()],
        staff=[
            StaffCoverRow(c.staff_id, staff[c.staff_id].org_id, staff[c.staff_id].role, c.grid_id)
            for c in tables["staff_grid_units"]
        ],
        responsibilities=[Responsibility(*r) for r in tables["responsibilities"]],
        devices=[
            DeviceRow(
                d.device_id,
                d.kind,
                street_of(addresses[d.address_id].building_group_id),
                d.address_id,
                d.model,
                d.installed_on,
                d.heartbeat_s,
                d.inspection_due,
                d.maintainer_org_id,
            )
            for d in tables["devices"]
        ],
    )


def reachable_strings(root: object) -> set[str]:
    """Every string reachable from ``root`` through slots, tuples, sets and mappings."""
    seen: set[int] = set()
    found: set[str] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found.add(obj)
        elif isinstance(obj, tuple | list | frozenset | set):
            stack.extend(obj)
        elif hasattr(obj, "keys") and hasattr(obj, "values"):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif hasattr(type(obj), "__slots__"):
            stack.extend(getattr(obj, name) for name in type(obj).__slots__)
    return found


def test_the_demo_district_resolves_every_device_and_keeps_nothing_personal() -> None:
    tables = generate(1, "demo")
    snap = build_snapshot(district_rows(tables))
    assert len(snap) == len(tables["devices"])
    assert snap.stats.unplaced == 0 and snap.stats.unassigned == 0
    assert snap.stats.residents == len(tables["residents"])
    for context in snap.contexts.values():
        assert context.place is not None
        assert [link.level for link in context.grid_chain] == [
            "street", "comprehensive_grid", "residential_area", "micro_grid", "building_group",
        ]  # fmt: skip
        assert context.first("supervisor") is not None
        assert context.staff
    kitchens = [
        c for c in snap.contexts.values() if c.place and c.place.place_type == "public_kitchen"
    ]
    assert kitchens and all(c.residents.residents_of == "floor" for c in kitchens)
    assert sum(c.residents.residents for c in kitchens) > 0
    personal = {r.name for r in tables["residents"]} | {r.phone for r in tables["residents"]}
    personal |= {s.name for s in tables["staff"]} | {s.phone for s in tables["staff"]}
    strings = reachable_strings(snap)
    assert {a.label for a in tables["addresses"] if a.place_type == "public_kitchen"} <= strings
    assert not personal & strings
