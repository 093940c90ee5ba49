"""The registry as a whole, and what each row must satisfy against the other rows.

Also where the derived columns come from (the street, carried down the grid
chain): they are computed from the same whole registry the checks look at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic

from sensord.core.registry.rows import (
    ADDRESSES,
    BUILDINGS,
    COMPOUNDS,
    DEVICES,
    GRID_UNITS,
    HOUSEHOLDS,
    ORGANISATIONS,
    RESIDENTS,
    RESPONSIBILITIES,
    SCOPE_ENTITIES,
    STAFF,
    STAFF_GRID_UNITS,
    STREETS,
    Address,
    Building,
    Compound,
    Device,
    Entity,
    GridUnit,
    Household,
    Key,
    Organisation,
    Problems,
    R,
    Resident,
    Responsibility,
    Staff,
    StaffGridUnit,
)
from sensord.core.registry.vocabulary import LEVELS, PLACES_FOR_KIND


class Registry:
    """Every entity's rows, and where each came from, for the cross-file checks.

    A row read from a file carries its line; a row taken from the database (its
    file was not imported) carries none. Keys of rows that failed validation
    are remembered, so a reference to a bad row is not reported a second time.
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict[Key, Any]] = {}
        self.lines: dict[str, dict[Key, int]] = {}
        self.invalid: dict[str, set[Key]] = {}
        self.unreadable: set[str] = set()
        self._streets: dict[str, str] = {}

    def get(self, entity: Entity[R], ident: str) -> R | None:
        """The row with this single-column key, if any."""
        row: R | None = self.rows.get(entity.name, {}).get((ident,))
        return row

    def ref(self, entity: Entity[R], ident: str, what: str) -> R | str | None:
        """The referenced row; or why the reference is bad; or None if its target is itself bad."""
        row = self.get(entity, ident)
        if row is not None:
            return row
        if entity.name in self.unreadable or (ident,) in self.invalid.get(entity.name, set()):
            return None
        return f"unknown {what} {ident!r}"

    def street_of_grid(self, grid_id: str) -> str:
        """The street at the top of a grid unit's chain (the registry must be valid)."""
        street = self._streets.get(grid_id)
        if street is None:
            unit = self._unit(grid_id)
            street = (
                unit.parent_id if unit.level == LEVELS[0] else self.street_of_grid(unit.parent_id)
            )
            self._streets[grid_id] = street
        return street

    def ancestor(self, grid_id: str, level: str) -> GridUnit | None:
        """The unit of ``level`` above (or at) a grid unit; None where the chain is broken."""
        unit = self.get(GRID_UNITS, grid_id)
        for _ in LEVELS:  # bounded: a broken registry may hold a cycle
            if unit is None or unit.level == level:
                return unit
            if unit.level == LEVELS[0]:
                return None
            unit = self.get(GRID_UNITS, unit.parent_id)
        return None

    def _unit(self, grid_id: str) -> GridUnit:
        unit = self.get(GRID_UNITS, grid_id)
        if unit is None:
            raise KeyError(f"grid unit {grid_id!r} is not in the registry")
        return unit


@dataclass(frozen=True, slots=True)
class CrossRow(Generic[R]):
    """What an entity's rows must satisfy against other rows, and its derived columns."""

    entity: Entity[R]
    check: Callable[[R, Registry], Problems]
    derive: Callable[[R, Registry], tuple[Any, ...]] | None = None  # Entity.derived's values


# --- cross-row checks ------------------------------------------------------------


def _exists(
    reg: Registry, column: str, entity: Entity[Any], ident: str | None, what: str
) -> Problems:
    found = reg.ref(entity, ident, what) if ident is not None else None
    if isinstance(found, str):
        yield column, found


def _at_level(reg: Registry, column: str, grid_id: str, level: str) -> Problems:
    unit = reg.ref(GRID_UNITS, grid_id, "grid unit")
    if isinstance(unit, str):
        yield column, unit
    elif unit is not None and unit.level != level:
        yield column, f"{grid_id!r} is a {unit.level}; expected a {level}"


def _check_grid_unit(row: GridUnit, reg: Registry) -> Problems:
    depth = LEVELS.index(row.level)
    if depth == 0:
        yield from _exists(reg, "parent_id", STREETS, row.parent_id, "street")
    else:
        yield from _at_level(reg, "parent_id", row.parent_id, LEVELS[depth - 1])


def _check_organisation(row: Organisation, reg: Registry) -> Problems:
    yield from _exists(reg, "street_id", STREETS, row.street_id, "street")


def _check_compound(row: Compound, reg: Registry) -> Problems:
    yield from _at_level(reg, "area_id", row.area_id, "residential_area")


def _check_building(row: Building, reg: Registry) -> Problems:
    yield from _exists(reg, "compound_id", COMPOUNDS, row.compound_id, "compound")


def _check_address(row: Address, reg: Registry) -> Problems:
    group_problems = list(_at_level(reg, "building_group_id", row.building_group_id, LEVELS[3]))
    yield from group_problems
    compound = reg.ref(COMPOUNDS, row.compound_id, "compound")
    if isinstance(compound, str):
        yield "compound_id", compound
        return  # the building and the area are checked against the right compound only
    building = reg.ref(BUILDINGS, row.building_id, "building") if row.building_id else None
    if isinstance(building, str):
        yield "building_id", building
    elif building is not None and building.compound_id != row.compound_id:
        yield "building_id", f"is in compound {building.compound_id!r}, not {row.compound_id!r}"
    area = reg.get(GRID_UNITS, compound.area_id) if compound is not None else None
    if group_problems or area is None or area.level != "residential_area":
        return
    # The grid and the compounds are two maps of the same ground: they must agree.
    group_area = reg.ancestor(row.building_group_id, "residential_area")
    if group_area is not None and group_area != area:
        yield (
            "building_group_id",
            (
                f"is in residential area {group_area.grid_id!r}; compound {row.compound_id!r} "
                f"is in {area.grid_id!r}"
            ),
        )


def _check_household(row: Household, reg: Registry) -> Problems:
    address = reg.ref(ADDRESSES, row.address_id, "address")
    if isinstance(address, str):
        yield "address_id", address
    elif address is not None and address.place_type != "dwelling":
        yield "address_id", f"{row.address_id!r} is a {address.place_type}, not a dwelling"


def _check_resident(row: Resident, reg: Registry) -> Problems:
    yield from _exists(reg, "household_id", HOUSEHOLDS, row.household_id, "household")


def _check_staff(row: Staff, reg: Registry) -> Problems:
    yield from _exists(reg, "org_id", ORGANISATIONS, row.org_id, "organisation")


def _check_staff_grid_unit(row: StaffGridUnit, reg: Registry) -> Problems:
    yield from _exists(reg, "staff_id", STAFF, row.staff_id, "staff member")
    yield from _exists(reg, "grid_id", GRID_UNITS, row.grid_id, "grid unit")


def _check_responsibility(row: Responsibility, reg: Registry) -> Problems:
    yield from _exists(reg, "org_id", ORGANISATIONS, row.org_id, "organisation")
    scope = SCOPE_ENTITIES[row.scope_type]
    yield from _exists(reg, "scope_id", scope, row.scope_id, row.scope_type)


def _check_device(row: Device, reg: Registry) -> Problems:
    address = reg.ref(ADDRESSES, row.address_id, "address") if row.address_id else None
    if isinstance(address, str):
        yield "address_id", address
    elif address is not None and address.place_type not in PLACES_FOR_KIND[row.kind]:
        yield "address_id", f"a {row.kind} device cannot be at a {address.place_type}"
    yield from _exists(
        reg, "maintainer_org_id", ORGANISATIONS, row.maintainer_org_id, "organisation"
    )


# --- derived columns ----------------------------------------------------------------


def _street_of_unit(row: GridUnit, reg: Registry) -> tuple[str]:
    return (reg.street_of_grid(row.grid_id),)


def _street_of_address(row: Address, reg: Registry) -> tuple[str]:
    return (reg.street_of_grid(row.building_group_id),)


def _street_of_device(row: Device, reg: Registry) -> tuple[str | None]:
    if row.address_id is None:
        return (None,)
    address = reg.get(ADDRESSES, row.address_id)
    return (None if address is None else reg.street_of_grid(address.building_group_id),)


# Every entity but streets refers to other rows; run in apply order (parents first).
CROSS_ROW: Mapping[str, CrossRow[Any]] = {
    rules.entity.name: rules
    for rules in (
        CrossRow(GRID_UNITS, _check_grid_unit, _street_of_unit),
        CrossRow(ORGANISATIONS, _check_organisation),
        CrossRow(COMPOUNDS, _check_compound),
        CrossRow(BUILDINGS, _check_building),
        CrossRow(ADDRESSES, _check_address, _street_of_address),
        CrossRow(HOUSEHOLDS, _check_household),
        CrossRow(RESIDENTS, _check_resident),
        CrossRow(STAFF, _check_staff),
        CrossRow(STAFF_GRID_UNITS, _check_staff_grid_unit),
        CrossRow(RESPONSIBILITIES, _check_responsibility),
        CrossRow(DEVICES, _check_device, _street_of_device),
    )
}
