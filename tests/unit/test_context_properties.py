"""The snapshot builder against a naive reference, over random registries (hypothesis)."""

from __future__ import annotations

from collections import Counter
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.core.context import (
    SCOPE_ORDER,
    DeviceRow,
    OrganisationRow,
    RegistryRows,
    ResidentTagsRow,
    StaffCoverRow,
    build_snapshot,
)
from sensord.core.registry.rows import Address, Building, Compound, GridUnit, Responsibility, Street
from sensord.core.registry.vocabulary import (
    DEVICE_KINDS,
    LEVELS,
    OUTDOOR_PLACES,
    PLACE_TYPES,
    RESPONSIBILITY_CATEGORIES,
    RESPONSIBILITY_ROLES,
    STAFF_ROLES,
)

STREET = "s1"
ORGS = ("O1", "O2", "O3", "O4")
TAGS = ("elderly", "living_alone", "disabled")


@st.composite
def registries(draw: st.DrawFn) -> RegistryRows:
    units: list[GridUnit] = []
    parents = [STREET]
    for level in LEVELS:
        below = []
        for parent in parents:
            for n in range(draw(st.integers(1, 2))):
                grid_id = f"{parent}.{level[0]}{n}"
                units.append(GridUnit(grid_id, level, parent, f"name of {grid_id}"))
                below.append(grid_id)
        parents = below
    areas = [u.grid_id for u in units if u.level == "residential_area"]
    groups = [u for u in units if u.level == "building_group"]
    compounds = [
        Compound(f"C{n}", f"compound {n}", draw(st.sampled_from(areas)))
        for n in range(draw(st.integers(1, 3)))
    ]
    buildings = [
        Building(f"B{n}", draw(st.sampled_from(compounds)).compound_id, f"b{n}", None)
        for n in range(draw(st.integers(0, 4)))
    ]
    addresses: list[Address] = []
    for n in range(draw(st.integers(1, 12))):
        compound = draw(st.sampled_from(compounds))
        # A building group of the compound's residential area (grandchild of the area).
        inside = [g for g in groups if g.grid_id.startswith(compound.area_id + ".")]
        group = draw(st.sampled_from(inside)).grid_id
        own = [b.building_id for b in buildings if b.compound_id == compound.compound_id]
        place_type = draw(st.sampled_from(PLACE_TYPES))
        building = draw(st.sampled_from(own)) if own else None
        if building is None:
            place_type = draw(st.sampled_from(sorted(OUTDOOR_PLACES)))
        elif place_type in OUTDOOR_PLACES:
            building = None
        floor = draw(st.none() | st.integers(1, 3))
        addresses.append(
            Address(f"A{n}", place_type, group, compound.compound_id, building, f"l{n}", floor)
        )
    dwellings = [a.address_id for a in addresses if a.place_type == "dwelling"]
    resident_tags = []
    for address_id in dwellings:
        sets = draw(st.lists(st.frozensets(st.sampled_from(TAGS)), max_size=3, unique=True))
        for tags in sets:
            resident_tags.append(
                ResidentTagsRow(address_id, tuple(sorted(tags)), draw(st.integers(1, 3)))
            )
    scopes = (
        [("street", STREET)]
        + [("grid", u.grid_id) for u in units]
        + [("compound", c.compound_id) for c in compounds]
        + [("building", b.building_id) for b in buildings]
    )
    responsibilities = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ORGS),
                st.sampled_from(scopes),
                st.sampled_from(RESPONSIBILITY_CATEGORIES),
                st.sampled_from(RESPONSIBILITY_ROLES),
            ),
            max_size=25,
            unique_by=lambda r: (r[0], r[1], r[2]),
        )
    )
    staff = draw(
        st.lists(
            st.tuples(
                st.sampled_from(("S1", "S2", "S3", "S4", "S5")),
                st.sampled_from([u.grid_id for u in units]),
            ),
            max_size=12,
            unique=True,
        )
    )
    roles = {staff_id: STAFF_ROLES[int(staff_id[1]) % len(STAFF_ROLES)] for staff_id, _ in staff}
    devices = [
        DeviceRow(
            f"D-{a.address_id}", draw(st.sampled_from(DEVICE_KINDS)), STREET, a.address_id, None,
            None, 60, date(2026, 1, 1), None,
        )
        for a in addresses
    ]  # fmt: skip
    devices.append(DeviceRow("D-old", "smoke", STREET, None, None, None, None, None, None))
    return RegistryRows(
        streets=[Street(STREET, "street")],
        grid_units=units,
        organisations=[OrganisationRow(o, "ops_centre", o, None) for o in ORGS],
        compounds=compounds,
        buildings=buildings,
        addresses=addresses,
        resident_tags=resident_tags,
        staff=[StaffCoverRow(s, ORGS[0], roles[s], g) for s, g in staff],
        responsibilities=[Responsibility(o, t, i, c, r) for o, (t, i), c, r in responsibilities],
        devices=devices,
    )


def naive_chain(rows: RegistryRows, group: str) -> list[str]:
    parent = {u.grid_id: u.parent_id for u in rows.grid_units}
    chain = [group]
    while chain[-1] != STREET:
        chain.append(parent[chain[-1]])
    return chain[::-1]


def naive_scopes(rows: RegistryRows, address: Address | None) -> dict[tuple[str, str], str]:
    """Every scope holding the place -> its level."""
    held = {("street", STREET): "street"}
    if address is not None:
        level = {u.grid_id: u.level for u in rows.grid_units}
        held |= {("grid", g): level[g] for g in naive_chain(rows, address.building_group_id)[1:]}
        held[("compound", address.compound_id)] = "compound"
        if address.building_id:
            held[("building", address.building_id)] = "building"
    return held


def naive_residents(rows: RegistryRows, address: Address) -> Counter[frozenset[str]]:
    places = {a.address_id: a for a in rows.addresses}

    def concerned(dwelling: Address) -> bool:
        if address.place_type == "dwelling":
            return dwelling.address_id == address.address_id
        if address.building_id is None:
            return dwelling.building_group_id == address.building_group_id
        if address.floor is None:
            return dwelling.building_id == address.building_id
        return (dwelling.building_id, dwelling.floor) == (address.building_id, address.floor)

    counted: Counter[frozenset[str]] = Counter()
    for row in rows.resident_tags:
        if concerned(places[row.address_id]):
            counted[frozenset(row.tags)] += row.residents
    return counted


@settings(max_examples=150, deadline=None)
@given(registries())
def test_every_device_resolves_as_the_naive_reference_does(rows: RegistryRows) -> None:
    snap = build_snapshot(rows)
    addresses = {a.address_id: a for a in rows.addresses}
    assert set(snap.contexts) == {d.device_id for d in rows.devices}
    for row in rows.devices:
        context = snap.context(row.device_id)
        assert context is not None
        assert snap.device(row.device_id) is not None
        address = addresses.get(row.address_id or "")
        # Chain: street first, each unit the parent of the next.
        if address is None:
            assert [link.grid_id for link in context.grid_chain] == [STREET]
        else:
            assert [link.grid_id for link in context.grid_chain] == naive_chain(
                rows, address.building_group_id
            )
        # Responsibilities: every entry whose scope holds the place, ordered by specificity.
        held = naive_scopes(rows, address)
        for category in RESPONSIBILITY_CATEGORIES:
            wanted = (category, "any") if category != "any" else ("any",)
            expected = sorted(
                (
                    r
                    for r in rows.responsibilities
                    if (r.scope_type, r.scope_id) in held and r.category in wanted
                ),
                key=lambda r: (
                    SCOPE_ORDER.index(held[r.scope_type, r.scope_id]),
                    r.category == "any",
                    RESPONSIBILITY_ROLES.index(r.role),
                    r.org_id,
                ),
            )
            got = context.responsible_for(category)
            assert [(e.org_id, e.scope_type, e.scope_id, e.category, e.role) for e in got] == [
                (r.org_id, r.scope_type, r.scope_id, r.category, r.role) for r in expected
            ]
            # The most specific holder of each role wins.
            for role in RESPONSIBILITY_ROLES:
                first = context.first(role, category)
                holders = [r for r in expected if r.role == role]
                if not holders:
                    assert first is None
                else:
                    assert first is not None
                    best = min(SCOPE_ORDER.index(held[r.scope_type, r.scope_id]) for r in holders)
                    assert SCOPE_ORDER.index(first.scope_level) == best
        assert context.unassigned == (not context.responsible_for(row.kind))
        assert context.responsible == context.responsible_for(row.kind)
        # Residents: counted as the docs say, for the right population.
        if address is not None:
            counted = naive_residents(rows, address)
            assert dict(context.residents.tag_sets) == dict(+counted)
            assert context.residents.residents == sum(counted.values())
            assert context.residents.elderly_living_alone == sum(
                n for tags, n in counted.items() if {"elderly", "living_alone"} <= tags
            )
            # Staff: exactly those covering a unit of the chain.
            chain = set(naive_chain(rows, address.building_group_id)[1:])
            assert {s.staff_id for s in context.staff} == {
                s.staff_id for s in rows.staff if s.grid_id in chain
            }
