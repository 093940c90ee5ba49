"""The housing registry's pure core: CSV rows, their validation, cross-file checks and diffs.

One CSV file per table (docs/registry.md). Everything here takes text or rows
and returns rows, errors or changes: the CLI reads and writes the files,
``adapters/registry_store`` moves rows to and from the database.

A row is a NamedTuple of its CSV columns. The database row ("db row") is the
same tuple followed by the entity's derived columns (the street, carried down
the grid chain), which no file holds.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Generic, NamedTuple, TypeVar

from sensord.errors import CellError

Key = tuple[str, ...]
DbRow = tuple[Any, ...]

KINDS = ("smoke", "ebike", "elevator", "fire_lane")
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
CATEGORIES = ("any", *KINDS)
RESPONSIBILITY_ROLES = ("responder", "maintainer", "supervisor", "enforcer", "notified")
# Where each kind of device can hang; a smoke detector in an elevator car is a typo.
PLACES_FOR_KIND: Mapping[str, frozenset[str]] = {
    "smoke": frozenset(PLACE_TYPES) - {"elevator", "fire_lane"},
    "ebike": frozenset({"dwelling", "corridor", "stairwell", "bike_shed"}),
    "elevator": frozenset({"elevator"}),
    "fire_lane": frozenset({"fire_lane"}),
}


# --- cells -------------------------------------------------------------------


Parser = Callable[[str], Any]


def _pattern(regex: str, hint: str) -> Parser:
    compiled = re.compile(regex)

    def parse(text: str) -> str:
        if not compiled.fullmatch(text):
            raise CellError(f"must be {hint}")
        return text

    return parse


_ident = _pattern(r"[A-Za-z0-9_.-]{1,64}", "1-64 characters of A-Z a-z 0-9 _ . -")
_street = _pattern(r"[A-Za-z0-9_-]{1,64}", "1-64 characters of A-Z a-z 0-9 _ -")
_phone = _pattern(
    r"1[0-9]{10}|0[0-9]{2,3}-[0-9]{7,8}", "an 11-digit mobile number or a 0AA(A)-NNNNNNN(N) line"
)
_duty_phone = _pattern(r"[0-9][0-9-]{2,19}", "3-20 digits and dashes")
_TAG = re.compile(r"[a-z][a-z0-9_]{0,31}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_INTEGER = re.compile(r"-?[0-9]{1,9}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _text(text: str) -> str:
    if len(text) > 200:
        raise CellError("must be at most 200 characters")
    if text != text.strip():
        raise CellError("must not start or end with whitespace")
    if _UNPRINTABLE.search(text):
        raise CellError("must not contain control characters")
    return text


def _choice(values: Sequence[str]) -> Parser:
    allowed = frozenset(values)
    hint = "one of " + ", ".join(values)

    def parse(text: str) -> str:
        if text not in allowed:
            raise CellError(f"must be {hint}")
        return text

    return parse


def _integer(low: int, high: int) -> Parser:
    def parse(text: str) -> int:
        if not _INTEGER.fullmatch(text):
            raise CellError("must be a whole number")
        value = int(text)
        if not low <= value <= high:
            raise CellError(f"must be between {low} and {high}")
        return value

    return parse


def _date(text: str) -> date:
    if not _DATE.fullmatch(text):
        raise CellError("must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CellError("is not a calendar date") from None


def _tags(text: str) -> tuple[str, ...]:
    tags = text.split(";")
    if not all(_TAG.fullmatch(tag) for tag in tags):
        raise CellError("must be tags separated by ; (a-z 0-9 _, starting with a letter, ≤ 32)")
    if len(set(tags)) != len(tags):
        raise CellError("must not repeat a tag")
    return tuple(sorted(tags))  # sorted, so the same set always compares (and exports) equal


@dataclass(frozen=True, slots=True)
class Column:
    """One CSV column: how its text becomes a value; an empty optional cell is ``empty``."""

    name: str
    parse: Parser
    required: bool = True
    empty: Any = None


def format_cell(value: Any) -> str:
    """A value as its CSV text; the inverse of the column's parser."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ";".join(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# --- rows --------------------------------------------------------------------


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
    """A registry table and its CSV file: columns, key, checks and derived columns."""

    name: str
    row: Callable[..., R]
    columns: tuple[Column, ...]
    key_size: int = 1
    row_check: Callable[[R], Problems] | None = None  # within one row
    check: Callable[[R, Registry], Problems] | None = None  # against other rows
    derived: tuple[str, ...] = ()  # database-only columns, after the CSV ones
    derive: Callable[[R, Registry], tuple[Any, ...]] | None = None

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


# --- the registry as a whole ---------------------------------------------------


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


def _row_check_address(row: Address) -> Problems:
    if row.building_id is None and row.place_type not in OUTDOOR_PLACES:
        yield "building_id", f"required for a {row.place_type} (only fire_lane, bike_shed omit it)"


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


_SCOPES: Mapping[str, Entity[Any]]  # filled in once the entities exist


def _check_responsibility(row: Responsibility, reg: Registry) -> Problems:
    yield from _exists(reg, "org_id", ORGANISATIONS, row.org_id, "organisation")
    yield from _exists(reg, "scope_id", _SCOPES[row.scope_type], row.scope_id, row.scope_type)


def _check_device(row: Device, reg: Registry) -> Problems:
    address = reg.ref(ADDRESSES, row.address_id, "address") if row.address_id else None
    if isinstance(address, str):
        yield "address_id", address
    elif address is not None and address.place_type not in PLACES_FOR_KIND[row.kind]:
        yield "address_id", f"a {row.kind} device cannot be at a {address.place_type}"
    yield from _exists(
        reg, "maintainer_org_id", ORGANISATIONS, row.maintainer_org_id, "organisation"
    )


def _street_of_unit(row: GridUnit, reg: Registry) -> tuple[str]:
    return (reg.street_of_grid(row.grid_id),)


def _street_of_address(row: Address, reg: Registry) -> tuple[str]:
    return (reg.street_of_grid(row.building_group_id),)


def _street_of_device(row: Device, reg: Registry) -> tuple[str | None]:
    if row.address_id is None:
        return (None,)
    address = reg.get(ADDRESSES, row.address_id)
    return (None if address is None else reg.street_of_grid(address.building_group_id),)


# --- the entities, in the order they are applied (parents first) ------------------

_name = Column("name", _text)

STREETS = Entity("streets", Street, (Column("street_id", _street), _name))
GRID_UNITS = Entity(
    "grid_units",
    GridUnit,
    (Column("grid_id", _ident), Column("level", _choice(LEVELS)), Column("parent_id", _ident),
     _name),
    check=_check_grid_unit,
    derived=("street_id",),
    derive=_street_of_unit,
)  # fmt: skip
ORGANISATIONS = Entity(
    "organisations",
    Organisation,
    (Column("org_id", _ident), Column("org_type", _choice(ORG_TYPES)), _name,
     Column("street_id", _street), Column("phone", _duty_phone, required=False)),
    check=_check_organisation,
)  # fmt: skip
COMPOUNDS = Entity(
    "compounds",
    Compound,
    (Column("compound_id", _ident), _name, Column("area_id", _ident)),
    check=_check_compound,
)
BUILDINGS = Entity(
    "buildings",
    Building,
    (Column("building_id", _ident), Column("compound_id", _ident), _name,
     Column("floors", _integer(1, 200), required=False)),
    check=_check_building,
)  # fmt: skip
ADDRESSES = Entity(
    "addresses",
    Address,
    (Column("address_id", _ident), Column("place_type", _choice(PLACE_TYPES)),
     Column("building_group_id", _ident), Column("compound_id", _ident),
     Column("building_id", _ident, required=False), Column("label", _text),
     Column("floor", _integer(-10, 200), required=False)),
    row_check=_row_check_address,
    check=_check_address,
    derived=("street_id",),
    derive=_street_of_address,
)  # fmt: skip
HOUSEHOLDS = Entity(
    "households",
    Household,
    (Column("household_id", _ident), Column("address_id", _ident)),
    check=_check_household,
)
RESIDENTS = Entity(
    "residents",
    Resident,
    (Column("resident_id", _ident), Column("household_id", _ident), _name,
     Column("phone", _phone, required=False), Column("tags", _tags, required=False, empty=())),
    check=_check_resident,
)  # fmt: skip
STAFF = Entity(
    "staff",
    Staff,
    (Column("staff_id", _ident), Column("org_id", _ident), Column("role", _choice(STAFF_ROLES)),
     _name, Column("phone", _phone, required=False)),
    check=_check_staff,
)  # fmt: skip
STAFF_GRID_UNITS = Entity(
    "staff_grid_units",
    StaffGridUnit,
    (Column("staff_id", _ident), Column("grid_id", _ident)),
    key_size=2,
    check=_check_staff_grid_unit,
)
RESPONSIBILITIES = Entity(
    "responsibilities",
    Responsibility,
    (Column("org_id", _ident), Column("scope_type", _choice(SCOPE_TYPES)),
     Column("scope_id", _ident), Column("category", _choice(CATEGORIES)),
     Column("role", _choice(RESPONSIBILITY_ROLES))),
    key_size=4,
    check=_check_responsibility,
)  # fmt: skip
DEVICES = Entity(
    "devices",
    Device,
    (Column("device_id", _ident), Column("kind", _choice(KINDS)), Column("address_id", _ident),
     Column("model", _text, required=False), Column("installed_on", _date, required=False),
     Column("heartbeat_s", _integer(10, 604_800)),
     Column("inspection_due", _date, required=False),
     Column("maintainer_org_id", _ident, required=False)),
    check=_check_device,
    derived=("street",),
    derive=_street_of_device,
)  # fmt: skip

ENTITIES: tuple[Entity[Any], ...] = (
    STREETS, GRID_UNITS, ORGANISATIONS, COMPOUNDS, BUILDINGS, ADDRESSES, HOUSEHOLDS,
    RESIDENTS, STAFF, STAFF_GRID_UNITS, RESPONSIBILITIES, DEVICES,
)  # fmt: skip
ENTITY_BY_FILE: Mapping[str, Entity[Any]] = {entity.file: entity for entity in ENTITIES}
_SCOPES = {"street": STREETS, "grid": GRID_UNITS, "compound": COMPOUNDS, "building": BUILDINGS}
_ORDER = {entity.name: index for index, entity in enumerate(ENTITIES)}


# --- errors -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    """Why a row (or a whole file, when ``line`` is None) cannot be imported."""

    file: str
    line: int | None
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.column is None:
            return f"{where}: {self.reason}"
        return f"{where}: {self.column}: {self.reason}"

    def sort_key(self) -> tuple[int, int, str]:
        """Files in apply order, then lines."""
        entity = ENTITY_BY_FILE.get(self.file)
        return (_ORDER[entity.name] if entity else -1, self.line or 0, self.column or "")


# --- parsing ----------------------------------------------------------------------


def parse_row(entity: Entity[R], cells: Sequence[str]) -> R | list[tuple[str, str]]:
    """The row for cells given in the entity's column order, or every (column, reason) wrong."""
    values: list[Any] = []
    problems: list[tuple[str, str]] = []
    for column, text in zip(entity.columns, cells, strict=True):
        if text == "":
            if column.required:
                problems.append((column.name, "required"))
            values.append(column.empty)
            continue
        try:
            values.append(column.parse(text))
        except CellError as exc:
            problems.append((column.name, str(exc)))
            values.append(None)
    if problems:
        return problems
    row = entity.row(*values)
    if entity.row_check is not None:
        problems.extend(entity.row_check(row))
    return problems or row


@dataclass
class ParsedFile(Generic[R]):
    """One file's valid rows by key, their lines, the keys of bad rows, and the errors."""

    entity: Entity[R]
    rows: dict[Key, R] = field(default_factory=dict)
    lines: dict[Key, int] = field(default_factory=dict)
    invalid: set[Key] = field(default_factory=set)
    unreadable: bool = False
    errors: list[RowError] = field(default_factory=list)


def parse_file(entity: Entity[R], text: str) -> ParsedFile[R]:
    """Every row of one CSV file (already decoded), with every error found in it.

    The header names the columns, in any order; optional columns may be left out.
    """
    parsed = ParsedFile(entity)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        layout = _layout(entity, header, parsed)
        if header is None or layout is None:
            parsed.unreadable = True
            return parsed
        line = reader.line_num + 1
        for record in reader:
            if len(record) == len(header):
                cells = ["" if index is None else record[index] for index in layout]
                _parse_record(entity, cells, line, parsed)
            elif record:  # a blank line is not a row
                why = f"{len(record)} cells; the header has {len(header)}"
                parsed.errors.append(RowError(entity.file, line, None, why))
            line = reader.line_num + 1
    except csv.Error as exc:
        parsed.errors.append(RowError(entity.file, reader.line_num, None, f"bad CSV: {exc}"))
        parsed.unreadable = True
    return parsed


def _layout(
    entity: Entity[Any], header: list[str] | None, parsed: ParsedFile[Any]
) -> list[int | None] | None:
    """For each column, its index in the file's records (None: left out, read as empty);
    None if the header is unusable (the errors say why)."""
    file = entity.file
    if not header:
        expected = ",".join(entity.header)
        parsed.errors.append(RowError(file, 1, None, f"no header; expected {expected}"))
        return None
    errors = [
        RowError(file, 1, name, "unknown column") for name in header if name not in entity.header
    ]
    errors += [
        RowError(file, 1, name, "repeated column")
        for name in sorted(set(header))
        if header.count(name) > 1
    ]
    errors += [
        RowError(file, 1, column.name, "missing column")
        for column in entity.columns
        if column.required and column.name not in header
    ]
    parsed.errors.extend(errors)
    if errors:
        return None
    return [header.index(name) if name in header else None for name in entity.header]


def _parse_record(entity: Entity[R], cells: list[str], line: int, parsed: ParsedFile[R]) -> None:
    result = parse_row(entity, cells)
    if isinstance(result, list):
        parsed.errors.extend(RowError(entity.file, line, col, why) for col, why in result)
        parsed.invalid.add(tuple(cells[: entity.key_size]))
        return
    key = entity.key(result)
    first = parsed.lines.get(key)
    if first is not None:
        parsed.errors.append(
            RowError(
                entity.file, line, entity.key_columns[0], f"duplicate key; first at line {first}"
            )
        )
        return
    parsed.rows[key] = result
    parsed.lines[key] = line


# --- planning an import -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Changes:
    """What an import does to one table."""

    upserts: list[DbRow]  # inserted and updated rows, as db rows
    deletes: list[Key]
    inserted: int
    updated: int
    unchanged: int

    @property
    def deleted(self) -> int:
        """Rows removed."""
        return len(self.deletes)


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """Either errors (apply nothing) or the changes per imported file, in apply order."""

    errors: list[RowError]
    changes: dict[str, Changes]


def plan_import(
    files: Mapping[str, ParsedFile[Any]], current: Mapping[str, Mapping[Key, DbRow]]
) -> ImportPlan:
    """Validate the imported files against each other and the rest of the registry; diff.

    ``files``: the parsed files, by entity name (a file left out of the import
    keeps its rows). ``current``: the database's db rows, by entity name and key.
    Each imported file is a full snapshot of its table: rows absent from it are
    deleted, which is refused when a row that stays still refers to them.
    """
    reg = Registry()
    errors: list[RowError] = []
    for entity in ENTITIES:
        parsed = files.get(entity.name)
        if parsed is None:
            width = len(entity.columns)
            reg.rows[entity.name] = {
                key: entity.row(*row[:width]) for key, row in current.get(entity.name, {}).items()
            }
            continue
        errors.extend(parsed.errors)
        reg.rows[entity.name] = dict(parsed.rows)
        reg.lines[entity.name] = parsed.lines
        reg.invalid[entity.name] = parsed.invalid
        if parsed.unreadable:
            reg.unreadable.add(entity.name)
    errors.extend(_cross_check(reg))
    if errors:
        return ImportPlan(sorted(errors, key=RowError.sort_key), {})
    changes = {
        entity.name: _diff(_db_rows(entity, reg), current.get(entity.name, {}))
        for entity in ENTITIES
        if entity.name in files
    }
    return ImportPlan([], changes)


def _cross_check(reg: Registry) -> Iterator[RowError]:
    for entity in ENTITIES:
        if entity.check is None:
            continue
        lines = reg.lines.get(entity.name)
        for key, row in reg.rows[entity.name].items():
            for column, reason in entity.check(row, reg):
                if lines is not None:
                    yield RowError(entity.file, lines[key], column, reason)
                else:
                    # The row is in the database and its file was not imported:
                    # an imported file dropped (or broke) what it refers to.
                    yield RowError(
                        entity.file,
                        None,
                        column,
                        f"{reason}, referred to by {entity.name} {'/'.join(key)} in the database "
                        f"({entity.file} not imported)",
                    )


def _db_rows(entity: Entity[Any], reg: Registry) -> dict[Key, DbRow]:
    rows: dict[Key, Any] = reg.rows[entity.name]
    if entity.derive is None:
        return rows
    derive = entity.derive
    return {key: (*row, *derive(row, reg)) for key, row in rows.items()}


def _diff(new: Mapping[Key, DbRow], old: Mapping[Key, DbRow]) -> Changes:
    upserts: list[DbRow] = []
    inserted = updated = 0
    for key in sorted(new):
        row, before = new[key], old.get(key)
        if before is None:
            inserted += 1
            upserts.append(row)
        elif before != row:
            updated += 1
            upserts.append(row)
    deletes = sorted(key for key in old if key not in new)
    return Changes(upserts, deletes, inserted, updated, len(new) - inserted - updated)


# --- export -------------------------------------------------------------------------


def render(entity: Entity[Any], rows: Iterable[DbRow]) -> str:
    """A CSV file's text: the header, then the rows by key (derived columns dropped).

    Import reads it back to the same rows; the same rows always render to the same bytes.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(entity.header)
    width = len(entity.columns)
    for row in sorted(rows, key=entity.key):
        writer.writerow([format_cell(value) for value in row[:width]])
    return out.getvalue()


# --- personal data --------------------------------------------------------------------


def mask_name(name: str) -> str:
    """张小明 -> 张*明, 张明 -> 张*: enough to tell people apart, not to identify them."""
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_phone(phone: str) -> str:
    """13812341234 -> 138****1234; 021-12345678 -> 021*****5678."""
    if len(phone) < 8:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
