"""The registry's row types and its entities (tables): columns, keys, files, apply order.

A row is a NamedTuple of its CSV columns, parsed by the entity's :class:`Column`
list; what a row must satisfy against other rows is ``checks``'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, NamedTuple, TypeVar

from sensord.core.registry.cells import (
    Column,
    choice,
    duty_phone,
    ident,
    integer,
    iso_date,
    phone,
    street,
    tags,
    text,
)
from sensord.core.registry.vocabulary import (
    DEVICE_KINDS,
    LEVELS,
    ORG_TYPES,
    OUTDOOR_PLACES,
    PLACE_TYPES,
    RESPONSIBILITY_CATEGORIES,
    RESPONSIBILITY_ROLES,
    SCOPE_TYPES,
    STAFF_ROLES,
)

Key = tuple[str, ...]
DbRow = tuple[Any, ...]


class Street(NamedTuple):
    """A street (街道): the tenant, top of the grid chain."""

    street_id: str
    name: str


class GridUnit(NamedTuple):
    """A grid unit; a comprehensive grid's parent is its street, the others' the unit above."""

    grid_id: str
    level: str
    parent_id: str
    name: str


class Organisation(NamedTuple):
    """An organisation that responds, maintains, supervises or enforces."""

    org_id: str
    org_type: str
    name: str
    street_id: str
    phone: str | None


class Compound(NamedTuple):
    """A residential compound (小区) in one residential area."""

    compound_id: str
    name: str
    area_id: str


class Building(NamedTuple):
    """A building of a compound."""

    building_id: str
    compound_id: str
    name: str
    floors: int | None


class Address(NamedTuple):
    """A place with an address: a dwelling or a shared place."""

    address_id: str
    place_type: str
    building_group_id: str
    compound_id: str
    building_id: str | None
    label: str
    floor: int | None


class Household(NamedTuple):
    """A household living at a dwelling."""

    household_id: str
    address_id: str


class Resident(NamedTuple):
    """A resident; ``name`` and ``phone`` are personal data."""

    resident_id: str
    household_id: str
    name: str
    phone: str | None
    tags: tuple[str, ...]


class Staff(NamedTuple):
    """A member of an organisation's staff; ``name`` and ``phone`` are personal data."""

    staff_id: str
    org_id: str
    role: str
    name: str
    phone: str | None


class StaffGridUnit(NamedTuple):
    """A grid unit a member of staff covers."""

    staff_id: str
    grid_id: str


class Responsibility(NamedTuple):
    """An organisation's role for a category of issue within a scope."""

    org_id: str
    scope_type: str
    scope_id: str
    category: str
    role: str


class Device(NamedTuple):
    """A sensor at a place. ``address_id`` and ``heartbeat_s`` are None only for
    devices registered before the registry existed (migration 0001)."""

    device_id: str
    kind: str
    address_id: str | None
    model: str | None
    installed_on: date | None
    heartbeat_s: int | None
    inspection_due: date | None
    maintainer_org_id: str | None


R = TypeVar("R", bound=tuple[Any, ...])
Problems = Iterator[tuple[str, str]]  # (column, reason)


@dataclass(frozen=True, slots=True)
class Entity(Generic[R]):
    """A registry table and its CSV file: columns, key, the check within one row, and
    the names of its derived columns (computed in ``checks``)."""

    name: str
    row: Callable[..., R]
    columns: tuple[Column, ...]
    key_size: int = 1
    row_check: Callable[[R], Problems] | None = None  # within one row
    derived: tuple[str, ...] = ()  # database-only columns, after the CSV ones

    @property
    def file(self) -> str:
        """The CSV file's name."""
        return f"{self.name}.csv"

    @property
    def header(self) -> tuple[str, ...]:
        """The CSV columns, in file order."""
        return tuple(column.name for column in self.columns)

    @property
    def db_columns(self) -> tuple[str, ...]:
        """The database columns the registry writes: CSV columns, then derived ones."""
        return self.header + self.derived

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns of the primary key."""
        return self.header[: self.key_size]

    def key(self, row: DbRow) -> Key:
        """A row's primary key."""
        return tuple(row[: self.key_size])


def _row_check_address(row: Address) -> Problems:
    if row.building_id is None and row.place_type not in OUTDOOR_PLACES:
        yield "building_id", f"required for a {row.place_type} (only fire_lane, bike_shed omit it)"


# --- the entities, in the order they are applied (parents first) ------------------

_name = Column("name", text)

STREETS = Entity("streets", Street, (Column("street_id", street), _name))
GRID_UNITS = Entity(
    "grid_units",
    GridUnit,
    (Column("grid_id", ident), Column("level", choice(LEVELS)), Column("parent_id", ident),
     _name),
    derived=("street_id",),
)  # fmt: skip
ORGANISATIONS = Entity(
    "organisations",
    Organisation,
    (Column("org_id", ident), Column("org_type", choice(ORG_TYPES)), _name,
     Column("street_id", street), Column("phone", duty_phone, required=False)),
)  # fmt: skip
COMPOUNDS = Entity(
    "compounds",
    Compound,
    (Column("compound_id", ident), _name, Column("area_id", ident)),
)
BUILDINGS = Entity(
    "buildings",
    Building,
    (Column("building_id", ident), Column("compound_id", ident), _name,
     Column("floors", integer(1, 200), required=False)),
)  # fmt: skip
ADDRESSES = Entity(
    "addresses",
    Address,
    (Column("address_id", ident), Column("place_type", choice(PLACE_TYPES)),
     Column("building_group_id", ident), Column("compound_id", ident),
     Column("building_id", ident, required=False), Column("label", text),
     Column("floor", integer(-10, 200), required=False)),
    row_check=_row_check_address,
    derived=("street_id",),
)  # fmt: skip
HOUSEHOLDS = Entity(
    "households",
    Household,
    (Column("household_id", ident), Column("address_id", ident)),
)
RESIDENTS = Entity(
    "residents",
    Resident,
    (Column("resident_id", ident), Column("household_id", ident), _name,
     Column("phone", phone, required=False), Column("tags", tags, required=False, empty=())),
)  # fmt: skip
STAFF = Entity(
    "staff",
    Staff,
    (Column("staff_id", ident), Column("org_id", ident), Column("role", choice(STAFF_ROLES)),
     _name, Column("phone", phone, required=False)),
)  # fmt: skip
STAFF_GRID_UNITS = Entity(
    "staff_grid_units",
    StaffGridUnit,
    (Column("staff_id", ident), Column("grid_id", ident)),
    key_size=2,
)
RESPONSIBILITIES = Entity(
    "responsibilities",
    Responsibility,
    (Column("org_id", ident), Column("scope_type", choice(SCOPE_TYPES)),
     Column("scope_id", ident), Column("category", choice(RESPONSIBILITY_CATEGORIES)),
     Column("role", choice(RESPONSIBILITY_ROLES))),
    key_size=4,
)  # fmt: skip
DEVICES = Entity(
    "devices",
    Device,
    (Column("device_id", ident), Column("kind", choice(DEVICE_KINDS)),
     Column("address_id", ident), Column("model", text, required=False),
     Column("installed_on", iso_date, required=False),
     Column("heartbeat_s", integer(10, 604_800)),
     Column("inspection_due", iso_date, required=False),
     Column("maintainer_org_id", ident, required=False)),
    derived=("street",),
)  # fmt: skip

ENTITIES: tuple[Entity[Any], ...] = (
    STREETS, GRID_UNITS, ORGANISATIONS, COMPOUNDS, BUILDINGS, ADDRESSES, HOUSEHOLDS,
    RESIDENTS, STAFF, STAFF_GRID_UNITS, RESPONSIBILITIES, DEVICES,
)  # fmt: skip
ENTITY_BY_FILE: Mapping[str, Entity[Any]] = {entity.file: entity for entity in ENTITIES}
APPLY_ORDER: Mapping[str, int] = {entity.name: index for index, entity in enumerate(ENTITIES)}
# The entity a responsibility's scope_id refers to, by its scope_type.
SCOPE_ENTITIES: Mapping[str, Entity[Any]] = {
    "street": STREETS, "grid": GRID_UNITS, "compound": COMPOUNDS, "building": BUILDINGS,
}  # fmt: skip
