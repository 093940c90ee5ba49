"""The daemon's view of the housing registry: device → place → residents → grid → who answers.

Pure: a :class:`RegistrySnapshot` is built from plain rows (what
``adapters/registry_snapshot`` reads in one repeatable-read transaction) and
never changes afterwards. Everything a message needs is resolved once, at
build time, per device; a lookup at ingest or rule-evaluation time is one
dict access returning a shared, frozen :class:`DeviceContext`::

    snapshot = build_snapshot(rows)
    snapshot.device("SMK-000123")      # DeviceInfo(kind, street): what decode() checks
    ctx = snapshot.context("SMK-000123")
    ctx.place.label, ctx.grid_chain[-1].name        # where, and its building group
    ctx.residents.elderly_living_alone              # who lives around it (counts only)
    ctx.first("responder")                          # the most specific responder
    ctx.responsible_for("fire_lane")                # who answers for another category here

The resolution follows docs/registry.md ("The panoramic view"), with three
differences the daemon needs: residents are summarised as counts per tag
(no names, no phones: the daemon keeps no personal data); ``staff`` are all
staff covering a unit of the grid chain, whichever organisation they belong
to (``sensord registry show`` lists only the responsible organisations'
staff; filter with :meth:`DeviceContext.staff_of`); and within one scope an
entry for the exact category comes before an ``any`` entry, then roles in
the order responder, maintainer, supervisor, enforcer, notified (``show``
orders a scope's entries by role name), so that "the first responder" is
the most specific one.

Memory: strings and dates are interned per build, and every part that many
devices share is one object: a building group's grid chain and staff, the
responsibilities of a (building group, compound, building), a residents'
summary. bench/context.py measures it at ``full`` scale.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import NamedTuple, TypeVar, cast

from sensord.core.messages import DeviceInfo
from sensord.core.registry.rows import Address, Building, Compound, GridUnit, Responsibility, Street
from sensord.core.registry.vocabulary import (
    LEVELS,
    RESPONSIBILITY_CATEGORIES,
    RESPONSIBILITY_ROLES,
    STAFF_ROLES,
)
from sensord.errors import SensordError

ELDERLY = "elderly"
LIVING_ALONE = "living_alone"
STREET_LEVEL = "street"

# Most specific scope first: the place's building, its compound, then the grid
# chain from the building group up to the street (as `sensord registry show`).
SCOPE_ORDER: tuple[str, ...] = ("building", "compound", *reversed(LEVELS), STREET_LEVEL)
_SCOPE_RANK = {scope: rank for rank, scope in enumerate(SCOPE_ORDER)}
_CATEGORY_INDEX = {category: index for index, category in enumerate(RESPONSIBILITY_CATEGORIES)}
_ROLE_RANK = {role: rank for rank, role in enumerate(RESPONSIBILITY_ROLES)}
_STAFF_RANK = {role: rank for rank, role in enumerate(STAFF_ROLES)}


class RegistryInconsistent(SensordError):
    """A row refers to a row that is not there (the database's keys make this a bug)."""

    def __init__(self, table: str, key: str, column: str, target: str) -> None:
        super().__init__(f"{table} {key!r}: {column} refers to unknown {target!r}")
        self.table = table
        self.key = key
        self.column = column
        self.target = target


# --- input rows: the columns the daemon reads, and nothing personal -------------------
# Streets, grid units, compounds, buildings, addresses and responsibilities are
# read whole, as the registry's own row types (core/registry/rows).


class OrganisationRow(NamedTuple):
    """``organisations``; the phone is a duty line, not a person's."""

    org_id: str
    org_type: str
    name: str
    phone: str | None


class ResidentTagsRow(NamedTuple):
    """How many residents of a dwelling carry exactly ``tags`` (sorted); no one's identity."""

    address_id: str
    tags: tuple[str, ...]
    residents: int


class StaffCoverRow(NamedTuple):
    """A member of staff and one grid unit they cover (``staff`` ⋈ ``staff_grid_units``)."""

    staff_id: str
    org_id: str
    role: str
    grid_id: str


class DeviceRow(NamedTuple):
    """``devices``; ``address_id`` is None for a device registered before the registry."""

    device_id: str
    kind: str
    street: str
    address_id: str | None
    model: str | None
    installed_on: date | None
    heartbeat_s: int | None
    inspection_due: date | None
    maintainer_org_id: str | None


@dataclass(frozen=True, slots=True)
class RegistryRows:
    """Everything a snapshot is built from, as read in one transaction."""

    streets: Sequence[Street] = ()
    grid_units: Sequence[GridUnit] = ()
    organisations: Sequence[OrganisationRow] = ()
    compounds: Sequence[Compound] = ()
    buildings: Sequence[Building] = ()
    addresses: Sequence[Address] = ()
    resident_tags: Sequence[ResidentTagsRow] = ()
    staff: Sequence[StaffCoverRow] = ()
    responsibilities: Sequence[Responsibility] = ()
    devices: Sequence[DeviceRow] = ()


# --- the resolved, shared, frozen parts --------------------------------------------


@dataclass(frozen=True, slots=True)
class OrganisationRef:
    """An organisation that responds, maintains, supervises, enforces or is notified."""

    org_id: str
    org_type: str
    name: str
    phone: str | None


@dataclass(frozen=True, slots=True)
class GridLink:
    """One level of a place's grid chain; ``level`` is ``street`` for the first."""

    grid_id: str
    level: str
    name: str


@dataclass(frozen=True, slots=True)
class CompoundRef:
    """A residential compound (小区) and its residential area."""

    compound_id: str
    name: str
    area_id: str


@dataclass(frozen=True, slots=True)
class BuildingRef:
    """A building of a compound."""

    building_id: str
    name: str
    floors: int | None


@dataclass(frozen=True, slots=True)
class Place:
    """Where a device hangs. ``building`` is None outdoors (a fire lane, a bicycle shed)."""

    address_id: str
    place_type: str
    label: str
    floor: int | None
    building: BuildingRef | None
    compound: CompoundRef
    building_group_id: str
    street_id: str


@dataclass(frozen=True, slots=True)
class ResidentSummary:
    """The residents a place concerns, as counts: no names, no phones, no ids.

    ``residents_of`` says whose they are (docs/registry.md): ``dwelling`` (its
    own), ``floor`` (its floor of its building: a public kitchen), ``building``
    (a stairwell or an elevator without a floor), ``building_group``
    (outdoors), or None for a device without a place.
    """

    residents_of: str | None
    residents: int
    tags: frozenset[str]
    tag_counts: tuple[tuple[str, int], ...]  # per tag, sorted by tag
    tag_sets: tuple[tuple[frozenset[str], int], ...]  # residents per exact combination of tags
    elderly_living_alone: int

    def count(self, *tags: str) -> int:
        """How many of these residents carry every one of ``tags`` (all of them if none)."""
        wanted = frozenset(tags)
        return sum(n for have, n in self.tag_sets if wanted <= have)


@dataclass(frozen=True, slots=True)
class Responsible:
    """An organisation's role at a place, and the scope and category it holds it by."""

    org: OrganisationRef
    role: str
    category: str
    scope_type: str  # street, grid, compound or building
    scope_id: str
    scope_level: str  # scope_type, or the grid unit's level for a grid scope

    @property
    def org_id(self) -> str:
        """The organisation's id."""
        return self.org.org_id


@dataclass(frozen=True, slots=True)
class Responsibilities:
    """Who answers for a place, per category; each list most specific scope first.

    Order within a list: scope (building, compound, building group, micro-grid,
    residential area, comprehensive grid, street), then an entry for the exact
    category before an ``any`` entry of the same scope, then role (responder,
    maintainer, supervisor, enforcer, notified), then org_id.
    """

    by_category: tuple[tuple[Responsible, ...], ...]  # aligned with RESPONSIBILITY_CATEGORIES

    def for_category(self, category: str) -> tuple[Responsible, ...]:
        """Entries for ``category`` or ``any``; for ``any`` itself, the ``any`` entries only."""
        return self.by_category[_CATEGORY_INDEX[category]]

    def first(self, category: str, role: str) -> Responsible | None:
        """The most specific organisation holding ``role`` for ``category`` here."""
        for entry in self.by_category[_CATEGORY_INDEX[category]]:
            if entry.role == role:
                return entry
        return None


@dataclass(frozen=True, slots=True)
class StaffRef:
    """A member of staff covering a unit of the place's grid chain (no name, no phone)."""

    staff_id: str
    org_id: str
    role: str
    covers: tuple[str, ...]  # the chain's units they cover, most specific first


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device and its upkeep."""

    device_id: str
    kind: str
    street_id: str
    address_id: str | None
    model: str | None
    installed_on: date | None
    heartbeat_s: int | None
    inspection_due: date | None
    maintainer: OrganisationRef | None

    @property
    def maintainer_org_id(self) -> str | None:
        """The maintaining organisation's id, if any."""
        return None if self.maintainer is None else self.maintainer.org_id


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """Everything the rule engine and the dispatcher need to know around one device.

    A device registered before the registry (no place) has ``place`` None, a
    grid chain of its street alone (empty if the street is not registered),
    no residents, no staff, and only street-scoped responsibilities.
    ``unassigned`` is True when no organisation answers for the device's kind
    at its place: ``responsible`` is then empty and routing must fall back
    (to the street's duty desk, by configuration).
    """

    device: DeviceRecord
    place: Place | None
    grid_chain: tuple[GridLink, ...]  # street first, building group last
    residents: ResidentSummary
    responsibilities: Responsibilities
    responsible: tuple[Responsible, ...]  # for the device's kind: responsibilities.for_category
    staff: tuple[StaffRef, ...]  # most specific covered unit first, then role, then id
    unassigned: bool

    @property
    def device_id(self) -> str:
        """The device's id."""
        return self.device.device_id

    @property
    def kind(self) -> str:
        """The device's kind."""
        return self.device.kind

    def responsible_for(self, category: str) -> tuple[Responsible, ...]:
        """Who answers here for ``category`` (an issue of another kind than the device's)."""
        return self.responsibilities.for_category(category)

    def first(self, role: str, category: str | None = None) -> Responsible | None:
        """The most specific holder of ``role`` for ``category`` (default: the device's kind)."""
        return self.responsibilities.first(category or self.device.kind, role)

    def staff_of(self, org_id: str) -> tuple[StaffRef, ...]:
        """The staff of one organisation covering this place's chain."""
        return tuple(member for member in self.staff if member.org_id == org_id)


@dataclass(frozen=True, slots=True)
class SnapshotStats:
    """What a snapshot was built from, for the reload log and the metrics."""

    devices: int = 0
    unplaced: int = 0  # devices without a place (registered before the registry)
    unassigned: int = 0  # devices no organisation answers for
    addresses: int = 0
    residents: int = 0
    grid_units: int = 0
    organisations: int = 0
    staff: int = 0
    responsibilities: int = 0


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """The registry as of one instant, resolved per device; never changes once built."""

    devices: Mapping[str, DeviceInfo]  # read-only; what decode() looks devices up in
    contexts: Mapping[str, DeviceContext]  # read-only
    stats: SnapshotStats

    def device(self, device_id: str) -> DeviceInfo | None:
        """Kind and street of a registered device; None if it is not registered."""
        return self.devices.get(device_id)

    def context(self, device_id: str) -> DeviceContext | None:
        """The device's resolved context; None if it is not registered."""
        return self.contexts.get(device_id)

    def __len__(self) -> int:
        return len(self.devices)


EMPTY = RegistrySnapshot(MappingProxyType({}), MappingProxyType({}), SnapshotStats())
NO_RESIDENTS = ResidentSummary(None, 0, frozenset(), (), (), 0)


# --- building ----------------------------------------------------------------------

H = TypeVar("H", bound=Hashable)


class _Interner:
    """One object per distinct value for the snapshot's life (dict-based, freed with it)."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, Hashable] = {}

    def __call__(self, value: H) -> H:
        # Only str, date, frozenset[str] and GridLink go in: equal values are of one type.
        return cast(H, self._seen.setdefault(value, value))

    def opt(self, value: H | None) -> H | None:
        return None if value is None else self(value)


def build_snapshot(rows: RegistryRows) -> RegistrySnapshot:
    """Resolve every device's context from ``rows``.

    Raises RegistryInconsistent if a row refers to a row that is not in ``rows``
    (impossible for rows read in one transaction: every reference is a key).
    """
    return _Builder(rows).build()


class _Builder:
    def __init__(self, rows: RegistryRows) -> None:
        self.rows = rows
        self.i = _Interner()
        i = self.i
        self.streets = {r.street_id: r for r in rows.streets}
        self.units = {r.grid_id: r for r in rows.grid_units}
        self.orgs = {
            r.org_id: OrganisationRef(i(r.org_id), i(r.org_type), i(r.name), i.opt(r.phone))
            for r in rows.organisations
        }
        self.compound_rows = {r.compound_id: r for r in rows.compounds}
        self.building_rows = {r.building_id: r for r in rows.buildings}
        self.addresses = {r.address_id: r for r in rows.addresses}
        # Each responsibility resolved once; per scope in the order of Responsibilities.
        self.scoped: dict[tuple[str, str], list[Responsible]] = defaultdict(list)
        for row in rows.responsibilities:
            self.scoped[row.scope_type, row.scope_id].append(self.responsible(row))
        for entries in self.scoped.values():
            entries.sort(key=lambda e: (e.category == "any", _ROLE_RANK[e.role], e.org.org_id))
        self.covering: dict[str, list[StaffCoverRow]] = defaultdict(list)
        for cover in rows.staff:
            self.covering[cover.grid_id].append(StaffCoverRow._make(map(i, cover)))
        # Residents by dwelling, then indexed by the scopes a shared place looks at.
        self.dwelling_tags: dict[str, list[tuple[frozenset[str], int]]] = defaultdict(list)
        for tags in rows.resident_tags:
            self.dwelling_tags[tags.address_id].append((i(frozenset(tags.tags)), tags.residents))
        self.near: dict[tuple[str, Hashable], list[str]] = defaultdict(list)
        for address_id in self.dwelling_tags:
            dwelling = self.addresses.get(address_id)
            if dwelling is None:
                raise RegistryInconsistent("residents", address_id, "address_id", address_id)
            self.near["building_group", dwelling.building_group_id].append(address_id)
            if dwelling.building_id is not None:
                self.near["building", dwelling.building_id].append(address_id)
                self.near["floor", (dwelling.building_id, dwelling.floor)].append(address_id)
        # Memos: each shared part is built once.
        self.chains: dict[str, tuple[GridLink, ...]] = {}
        self.street_chains: dict[str, tuple[GridLink, ...]] = {}
        self.compounds: dict[str, CompoundRef] = {}
        self.buildings: dict[str, BuildingRef] = {}
        self.places: dict[str, Place] = {}
        self.summaries: dict[tuple[str, Hashable], ResidentSummary] = {}
        self.summary_pool: dict[tuple[object, ...], ResidentSummary] = {}
        self.responsibilities: dict[tuple[str, ...], Responsibilities] = {}
        self.staff: dict[tuple[str, ...], tuple[StaffRef, ...]] = {}
        self.staff_pool: dict[tuple[str, tuple[str, ...]], StaffRef] = {}
        self.infos: dict[tuple[str, str], DeviceInfo] = {}

    def responsible(self, row: Responsibility) -> Responsible:
        i = self.i
        key = "|".join(row)
        org = self.org(row.org_id, "responsibilities", key)
        level = row.scope_type
        if level == "grid":
            unit = self.units.get(row.scope_id)
            if unit is None:
                raise RegistryInconsistent("responsibilities", key, "scope_id", row.scope_id)
            level = unit.level
        return Responsible(
            org, i(row.role), i(row.category), i(row.scope_type), i(row.scope_id), i(level)
        )

    def build(self) -> RegistrySnapshot:
        contexts: dict[str, DeviceContext] = {}
        devices: dict[str, DeviceInfo] = {}
        unplaced = unassigned = 0
        for row in self.rows.devices:
            context = self.device_context(row)
            contexts[context.device.device_id] = context
            key = (context.device.kind, context.device.street_id)
            info = self.infos.get(key)
            if info is None:
                info = self.infos[key] = DeviceInfo(*key)
            devices[context.device.device_id] = info
            unplaced += context.place is None
            unassigned += context.unassigned
        stats = SnapshotStats(
            devices=len(contexts),
            unplaced=unplaced,
            unassigned=unassigned,
            addresses=len(self.addresses),
            residents=sum(row.residents for row in self.rows.resident_tags),
            grid_units=len(self.units),
            organisations=len(self.orgs),
            staff=len({cover.staff_id for cover in self.rows.staff}),
            responsibilities=len(self.rows.responsibilities),
        )
        return RegistrySnapshot(
            MappingProxyType(devices),
            MappingProxyType(contexts),
            stats,
        )

    # --- per device

    def device_context(self, row: DeviceRow) -> DeviceContext:
        i = self.i
        maintainer = None
        if row.maintainer_org_id is not None:
            maintainer = self.org(row.maintainer_org_id, "devices", row.device_id)
        record = DeviceRecord(
            i(row.device_id),
            i(row.kind),
            i(row.street),
            i.opt(row.address_id),
            i.opt(row.model),
            i.opt(row.installed_on),
            row.heartbeat_s,
            i.opt(row.inspection_due),
            maintainer,
        )
        if row.address_id is None:
            place = None
            chain = self.street_chain(row.street)
            residents = NO_RESIDENTS
            scope_key: tuple[str, ...] = (row.street,)
            staff: tuple[StaffRef, ...] = ()
        else:
            place = self.place(row.address_id, row.device_id)
            chain = self.chain(place.building_group_id, "addresses", place.address_id)
            residents = self.residents(place)
            scope_key = (
                place.street_id,
                place.building_group_id,
                place.compound.compound_id,
                "" if place.building is None else place.building.building_id,
            )
            staff = self.staff_for(chain)
        responsibilities = self.responsibilities_for(scope_key, chain, place)
        responsible = responsibilities.for_category(record.kind)
        return DeviceContext(
            record,
            place,
            chain,
            residents,
            responsibilities,
            responsible,
            staff,
            unassigned=not responsible,
        )

    def org(self, org_id: str, table: str, key: str) -> OrganisationRef:
        org = self.orgs.get(org_id)
        if org is None:
            raise RegistryInconsistent(table, key, "org_id", org_id)
        return org

    # --- place

    def place(self, address_id: str, device_id: str) -> Place:
        place = self.places.get(address_id)
        if place is not None:
            return place
        row = self.addresses.get(address_id)
        if row is None:
            raise RegistryInconsistent("devices", device_id, "address_id", address_id)
        i = self.i
        chain = self.chain(row.building_group_id, "addresses", address_id)
        building = None
        if row.building_id is not None:
            building = self.building(row.building_id, address_id)
        place = self.places[address_id] = Place(
            i(row.address_id),
            i(row.place_type),
            i(row.label),
            row.floor,
            building,
            self.compound(row.compound_id, address_id),
            i(row.building_group_id),
            chain[0].grid_id,
        )
        return place

    def building(self, building_id: str, address_id: str) -> BuildingRef:
        ref = self.buildings.get(building_id)
        if ref is None:
            row = self.building_rows.get(building_id)
            if row is None:
                raise RegistryInconsistent("addresses", address_id, "building_id", building_id)
            ref = self.buildings[building_id] = BuildingRef(
                self.i(row.building_id), self.i(row.name), row.floors
            )
        return ref

    def compound(self, compound_id: str, address_id: str) -> CompoundRef:
        ref = self.compounds.get(compound_id)
        if ref is None:
            row = self.compound_rows.get(compound_id)
            if row is None:
                raise RegistryInconsistent("addresses", address_id, "compound_id", compound_id)
            i = self.i
            ref = self.compounds[compound_id] = CompoundRef(
                i(row.compound_id), i(row.name), i(row.area_id)
            )
        return ref

    # --- grid chain

    def chain(self, building_group_id: str, table: str, key: str) -> tuple[GridLink, ...]:
        """Street first, then the comprehensive grid ... down to ``building_group_id``."""
        chain = self.chains.get(building_group_id)
        if chain is not None:
            return chain
        i = self.i
        links: list[GridLink] = []
        unit_id, referrer, column = building_group_id, (table, key), "building_group_id"
        for _ in LEVELS:  # bounded: never loops on a broken registry
            unit = self.units.get(unit_id)
            if unit is None:
                raise RegistryInconsistent(referrer[0], referrer[1], column, unit_id)
            links.append(i(GridLink(i(unit.grid_id), i(unit.level), i(unit.name))))
            referrer, column = ("grid_units", unit.grid_id), "parent_id"
            if unit.level == LEVELS[0]:
                break
            unit_id = unit.parent_id
        else:
            raise RegistryInconsistent(referrer[0], referrer[1], column, unit_id)
        top = self.units[links[-1].grid_id]
        street = self.streets.get(top.parent_id)
        if street is None:
            raise RegistryInconsistent("grid_units", top.grid_id, "parent_id", top.parent_id)
        links.append(i(GridLink(i(street.street_id), STREET_LEVEL, i(street.name))))
        links.reverse()
        chain = self.chains[building_group_id] = tuple(links)
        return chain

    def street_chain(self, street_id: str) -> tuple[GridLink, ...]:
        chain = self.street_chains.get(street_id)
        if chain is None:
            street = self.streets.get(street_id)
            chain = self.street_chains[street_id] = (
                ()
                if street is None
                else (
                    self.i(GridLink(self.i(street.street_id), STREET_LEVEL, self.i(street.name))),
                )
            )
        return chain

    # --- residents

    def residents(self, place: Place) -> ResidentSummary:
        scope: tuple[str, Hashable]
        if place.place_type == "dwelling":
            scope = ("dwelling", place.address_id)
        elif place.building is None:
            scope = ("building_group", place.building_group_id)
        elif place.floor is None:
            scope = ("building", place.building.building_id)
        else:
            scope = ("floor", (place.building.building_id, place.floor))
        summary = self.summaries.get(scope)
        if summary is None:
            own = scope[0] == "dwelling"
            dwellings = [place.address_id] if own else self.near.get(scope, [])
            combined: Counter[frozenset[str]] = Counter()
            for address_id in dwellings:
                for tags, n in self.dwelling_tags.get(address_id, ()):
                    combined[tags] += n
            summary = self.summaries[scope] = self.summary(scope[0], combined)
        return summary

    def summary(self, residents_of: str, tag_sets: Counter[frozenset[str]]) -> ResidentSummary:
        ordered = tuple(sorted(tag_sets.items(), key=lambda item: sorted(item[0])))
        pooled = self.summary_pool.get((residents_of, ordered))
        if pooled is not None:
            return pooled
        per_tag: Counter[str] = Counter()
        for tags, n in ordered:
            for tag in tags:
                per_tag[tag] += n
        alone = sum(n for tags, n in ordered if ELDERLY in tags and LIVING_ALONE in tags)
        summary = ResidentSummary(
            self.i(residents_of),
            sum(n for _, n in ordered),
            self.i(frozenset(per_tag)),
            tuple(sorted(per_tag.items())),
            ordered,
            alone,
        )
        self.summary_pool[residents_of, ordered] = summary
        return summary

    # --- responsibilities

    def responsibilities_for(
        self, key: tuple[str, ...], chain: tuple[GridLink, ...], place: Place | None
    ) -> Responsibilities:
        resolved = self.responsibilities.get(key)
        if resolved is not None:
            return resolved
        scopes: list[tuple[str, str]] = []  # most specific first
        if place is not None:
            if place.building is not None:
                scopes.append(("building", place.building.building_id))
            scopes.append(("compound", place.compound.compound_id))
        scopes += [("grid", link.grid_id) for link in reversed(chain[1:])]
        scopes.append((STREET_LEVEL, key[0]))
        entries = [entry for scope in scopes for entry in self.scoped.get(scope, ())]
        # Each scope's entries are sorted already; filtering keeps the order.
        resolved = self.responsibilities[key] = Responsibilities(
            tuple(
                tuple(entry for entry in entries if entry.category in (category, "any"))
                if category != "any"
                else tuple(entry for entry in entries if entry.category == "any")
                for category in RESPONSIBILITY_CATEGORIES
            )
        )
        return resolved

    # --- staff

    def staff_for(self, chain: tuple[GridLink, ...]) -> tuple[StaffRef, ...]:
        units = tuple(link.grid_id for link in reversed(chain[1:]))  # most specific first
        staff = self.staff.get(units)
        if staff is not None:
            return staff
        covers: dict[str, list[str]] = {}
        members: dict[str, StaffCoverRow] = {}
        for grid_id in units:
            for row in self.covering.get(grid_id, ()):
                covers.setdefault(row.staff_id, []).append(grid_id)
                members[row.staff_id] = row
        refs = []
        for row in members.values():
            key = (row.staff_id, tuple(covers[row.staff_id]))
            ref = self.staff_pool.get(key)
            if ref is None:
                ref = self.staff_pool[key] = StaffRef(row.staff_id, row.org_id, row.role, key[1])
            refs.append(ref)
        refs.sort(key=lambda s: (units.index(s.covers[0]), _STAFF_RANK[s.role], s.staff_id))
        staff = self.staff[units] = tuple(refs)
        return staff
