"""A synthetic sub-district's registry as CSV files for ``sensord registry import``.

``full`` has the shape of the central-Shanghai sub-district of docs/DOMAIN
(3 comprehensive grids, 16 residential areas, 40 micro-grids, 658 building
groups, 25,639 addresses, 32,000 residents, 42% of them elderly, shared
public kitchens each with a smoke detector); ``demo`` is the same structure
at a few hundred addresses. Deterministic for a seed: the same seed writes
the same bytes. Everyone in it is made up: names are drawn from common
characters and every phone number starts with 100, which no carrier issues.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sensord.core.registry.csvfiles import render
from sensord.core.registry.rows import (
    ENTITIES,
    Address,
    Building,
    Compound,
    Device,
    GridUnit,
    Household,
    Organisation,
    Resident,
    Responsibility,
    Staff,
    StaffGridUnit,
    Street,
)

STREET = "jd01"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scale:
    """How big the district is; the structure is the same at every scale."""

    areas_per_grid: tuple[int, ...]  # residential areas of each comprehensive grid
    micro_grids: int
    building_groups: int
    addresses: int
    residents: int
    compounds_per_area: tuple[int, int]
    buildings_per_group: tuple[int, ...]  # drawn from, per building group
    property_companies: int
    elevator_vendors: int


SCALES = {
    "full": Scale((5, 5, 6), 40, 658, 25_639, 32_000, (2, 4), (1, 1, 2), 6, 3),
    "demo": Scale((2,), 4, 12, 300, 420, (1, 2), (1,), 1, 1),
}
HEARTBEAT_S = {"smoke": 3600, "ebike": 300, "elevator": 60, "fire_lane": 600}
MODELS = {"smoke": "SD-210", "ebike": "EBG-2", "elevator": "EMU-10", "fire_lane": "FLR-1"}
PREFIXES = {"smoke": "SMK", "ebike": "EB", "elevator": "EL", "fire_lane": "FL"}
ELDERLY_SHARE = 0.42
EBIKE_DWELLING_SHARE = 0.08
SHARED_KITCHENS = 0.95  # share of low-rise buildings with public kitchens
SUBDIVIDED = 1.5  # dwellings per floor of a shared building, relative to others
HOUSEHOLD_SIZES = ((1, 0.30), (2, 0.35), (3, 0.20), (4, 0.10), (5, 0.05))
INSPECTED_FROM = date(2025, 7, 1)  # inspections fall due in the year after this date

SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国文辉力海云峰志宏晓春"
PLACE_WORDS = "康乐华安和平丰顺永兴长宁富民新华光明延安江宁静安曹家宜昌昌平常德武定胶州"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m simulators district``."""
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo")
    parser.add_argument("--out", type=Path, required=True, help="directory for the CSV files")


def main(args: argparse.Namespace) -> int:
    """Write the district's CSV files and print what is in them."""
    tables = generate(args.seed, args.scale)
    write(tables, args.out)
    kinds = Counter(device.kind for device in tables["devices"])
    tags = Counter(tag for resident in tables["residents"] for tag in resident.tags)
    residents = len(tables["residents"])
    print(f"wrote {args.scale} district (seed {args.seed}) to {args.out}")
    for name, rows in tables.items():
        print(f"  {name + '.csv':<22} {len(rows):>7}")
    print("  devices by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    print(
        "  resident tags: "
        + ", ".join(f"{t} {n} ({n / residents:.1%})" for t, n in sorted(tags.items()))
    )
    return 0


def write(tables: dict[str, list[Any]], out: Path) -> None:
    """One CSV per table, rendered exactly as ``sensord registry export`` renders it."""
    out.mkdir(parents=True, exist_ok=True)
    for entity in ENTITIES:
        (out / entity.file).write_text(render(entity, tables[entity.name]), encoding="utf-8")


def generate(seed: int, scale: str) -> dict[str, list[Any]]:
    """Every table's rows for a district of ``scale``; the same seed, the same rows."""
    return _District(random.Random(seed), SCALES[scale]).build()


def apportion(total: int, weights: list[float], rng: random.Random) -> list[int]:
    """``total`` in shares proportional to ``weights`` (jittered), each at least 1."""
    if not 0 < len(weights) <= total:
        raise ValueError(f"cannot split {total} into {len(weights)} positive shares")
    jittered = [w * rng.uniform(0.7, 1.3) for w in weights]
    spare, scale = total - len(weights), sum(jittered)
    shares = [1 + int(spare * w / scale) for w in jittered]
    for index in sorted(range(len(shares)), key=lambda i: -jittered[i])[: total - sum(shares)]:
        shares[index] += 1
    return shares


class _District:
    """Builds the rows top-down: grid, compounds and buildings, places, people, devices."""

    def __init__(self, rng: random.Random, scale: Scale) -> None:
        self.rng = rng
        self.scale = scale
        self.tables: dict[str, list[Any]] = {entity.name: [] for entity in ENTITIES}
        self.counters: Counter[str] = Counter()
        self.elevator_vendor: dict[str, str] = {}  # building -> the vendor maintaining its cars

    def next_id(self, prefix: str, width: int) -> str:
        self.counters[prefix] += 1
        return f"{prefix}-{self.counters[prefix]:0{width}d}"

    def add(self, table: str, row: T) -> T:
        self.tables[table].append(row)
        return row

    def build(self) -> dict[str, list[Any]]:
        self.add("streets", Street(STREET, "示范街道"))
        groups = self.grid()
        buildings, outdoor = self.compounds_and_buildings(groups)
        dwellings = self.places(buildings, outdoor)
        self.people(dwellings)
        self.organisations()
        self.devices(dwellings)
        return self.tables

    # --- grid: street > comprehensive grids > areas > micro-grids > building groups

    def grid(self) -> dict[str, list[GridUnit]]:
        """Building groups by residential area."""
        rng, scale = self.rng, self.scale
        areas: list[GridUnit] = []
        for g, area_count in enumerate(scale.areas_per_grid, 1):
            cg = self.add(
                "grid_units",
                GridUnit(f"{STREET}-cg{g}", "comprehensive_grid", STREET, f"第{g}综合网格"),
            )
            for _ in range(area_count):
                n = len(areas) + 1
                name = f"{self.word()}居民区"
                areas.append(
                    self.add(
                        "grid_units",
                        GridUnit(f"{STREET}-ra{n:02d}", "residential_area", cg.grid_id, name),
                    )
                )
        micro: list[GridUnit] = []
        for area, count in zip(
            areas, apportion(scale.micro_grids, [1.0] * len(areas), rng), strict=True
        ):
            for _ in range(count):
                n = len(micro) + 1
                micro.append(
                    self.add(
                        "grid_units",
                        GridUnit(f"{STREET}-mg{n:02d}", "micro_grid", area.grid_id, f"第{n}街坊"),
                    )
                )
        groups: dict[str, list[GridUnit]] = {area.grid_id: [] for area in areas}
        n = 0
        for mg, count in zip(
            micro, apportion(scale.building_groups, [1.0] * len(micro), rng), strict=True
        ):
            for _ in range(count):
                n += 1
                unit = GridUnit(f"{STREET}-bg{n:03d}", "building_group", mg.grid_id, f"第{n}楼组")
                groups[mg.parent_id].append(self.add("grid_units", unit))
        return groups

    def word(self) -> str:
        start = self.rng.randrange(0, len(PLACE_WORDS) - 1, 2)
        return PLACE_WORDS[start : start + 2]

    # --- compounds, buildings, places

    def compounds_and_buildings(
        self, groups: dict[str, list[GridUnit]]
    ) -> tuple[list[tuple[Building, GridUnit]], list[tuple[Compound, GridUnit]]]:
        """Buildings with their building group; and a building group per compound for outdoors."""
        rng = self.rng
        buildings: list[tuple[Building, GridUnit]] = []
        outdoor: list[tuple[Compound, GridUnit]] = []
        for area_id, area_groups in groups.items():
            count = min(len(area_groups), rng.randint(*self.scale.compounds_per_area))
            compounds = [
                self.add("compounds", Compound(self.next_id("C", 3), f"{self.word()}小区", area_id))
                for _ in range(count)
            ]
            for index, group in enumerate(area_groups):
                compound = compounds[index % count]
                if index < count:
                    outdoor.append((compound, group))
                for _ in range(rng.choice(self.scale.buildings_per_group)):
                    building_id = self.next_id("B", 5)
                    floors = rng.choices((2, 3, 5, 6, 7, 12, 18), (20, 20, 25, 20, 6, 6, 3))[0]
                    if index == len(area_groups) - 1:
                        floors = rng.choice((7, 12, 18))  # every area has a block with lifts
                    name = f"{building_id[2:].lstrip('0')}号楼"
                    building = Building(building_id, compound.compound_id, name, floors)
                    buildings.append((self.add("buildings", building), group))
        return buildings, outdoor

    def place(
        self,
        kind: str,
        group: GridUnit,
        compound: str,
        building: Building | None,
        label: str,
        floor: int | None,
    ) -> Address:
        address = Address(
            self.next_id("A", 6),
            kind,
            group.grid_id,
            compound,
            building.building_id if building else None,
            label,
            floor,
        )
        return self.add("addresses", address)

    def places(
        self,
        buildings: list[tuple[Building, GridUnit]],
        outdoor: list[tuple[Compound, GridUnit]],
    ) -> list[Address]:
        """Shared places first (their number follows from the buildings), then dwellings."""
        rng = self.rng
        shared: set[str] = set()
        for building, group in buildings:
            floors = building.floors or 1
            self.place(
                "stairwell", group, building.compound_id, building, f"{building.name} 楼梯间", None
            )
            # Old lane houses and walk-ups share a kitchen on each floor.
            if floors <= 6 and rng.random() < SHARED_KITCHENS:
                shared.add(building.building_id)
                for floor in range(1, floors + 1):
                    self.place(
                        "public_kitchen",
                        group,
                        building.compound_id,
                        building,
                        f"{building.name} {floor}层 公共厨房",
                        floor,
                    )
            if floors >= 7:
                for car in range(1, 2 + (floors >= 12)):
                    self.place(
                        "elevator",
                        group,
                        building.compound_id,
                        building,
                        f"{building.name} {car}号电梯",
                        None,
                    )
        for compound, group in outdoor:
            for lane in range(1, rng.randint(1, 3) + 1):
                self.place(
                    "fire_lane",
                    group,
                    compound.compound_id,
                    None,
                    f"{compound.name} {lane}号消防通道",
                    None,
                )
            self.place(
                "bike_shed", group, compound.compound_id, None, f"{compound.name} 非机动车棚", None
            )
        remaining = self.scale.addresses - len(self.tables["addresses"])
        # Shared buildings are subdivided into more, smaller dwellings per floor,
        # which is how 72% of all dwellings come to share a kitchen.
        weights = [
            (b.floors or 1) * (SUBDIVIDED if b.building_id in shared else 1.0) for b, _ in buildings
        ]
        shares = apportion(remaining, weights, rng)
        dwellings: list[Address] = []
        for (building, group), count in zip(buildings, shares, strict=True):
            floors = building.floors or 1
            rooms: Counter[int] = Counter()
            for unit in range(count):
                floor = 1 + unit * floors // count
                rooms[floor] += 1
                room = f"{floor}{rooms[floor]:02d}室"
                dwellings.append(
                    self.place(
                        "dwelling",
                        group,
                        building.compound_id,
                        building,
                        f"{building.name} {room}",
                        floor,
                    )
                )
        return dwellings

    # --- households and residents

    def people(self, dwellings: list[Address]) -> None:
        rng = self.rng
        sizes = [size for size, _ in HOUSEHOLD_SIZES]
        weights = [weight for _, weight in HOUSEHOLD_SIZES]
        # Residents of one-person households are more often elderly; others
        # are drawn so that the whole population comes out at ELDERLY_SHARE.
        singles = HOUSEHOLD_SIZES[0][1] / sum(s * w for s, w in HOUSEHOLD_SIZES)
        alone_p = 0.65
        others_p = (ELDERLY_SHARE - singles * alone_p) / (1 - singles)
        left = self.scale.residents
        for dwelling in rng.sample(dwellings, len(dwellings)):
            if left == 0:
                break
            size = min(left, rng.choices(sizes, weights)[0])
            left -= size
            household = self.add("households", Household(self.next_id("H", 6), dwelling.address_id))
            for _ in range(size):
                elderly = rng.random() < (alone_p if size == 1 else others_p)
                tags = {"elderly"} if elderly else set()
                if size == 1:
                    tags.add("living_alone")
                if rng.random() < (0.05 if elderly else 0.015):
                    tags.add("disabled")
                if elderly and rng.random() < 0.03:
                    tags.add("bedridden")
                phone = None if rng.random() < 0.1 else self.phone()
                resident = Resident(
                    self.next_id("R", 6),
                    household.household_id,
                    self.name(),
                    phone,
                    tuple(sorted(tags)),
                )
                self.add("residents", resident)
        if left:
            raise ValueError("not enough dwellings for the residents; raise addresses")

    def name(self) -> str:
        given = "".join(self.rng.choice(GIVEN) for _ in range(self.rng.choice((1, 2, 2))))
        return self.rng.choice(SURNAMES) + given

    def phone(self) -> str:
        return f"100{self.rng.randrange(10**8):08d}"

    # --- organisations, staff, who answers for what

    def organisations(self) -> None:
        units = {unit.grid_id: unit for unit in self.tables["grid_units"]}
        grids = [u for u in units.values() if u.level == "comprehensive_grid"]
        areas = [u for u in units.values() if u.level == "residential_area"]
        ops = self.org("ORG-OPS", "ops_centre", "示范街道城市运行中心", "021-60000000")
        self.cover(ops, "street", STREET, "any", "supervisor")
        self.crew(ops, "duty_officer", 4, [g.grid_id for g in grids])
        for n, grid in enumerate(grids, 1):
            station = self.org(f"ORG-WS{n}", "ops_workstation", f"{grid.name}城运工作站", None)
            self.cover(station, "grid", grid.grid_id, "any", "supervisor")
            self.crew(station, "duty_officer", 2, [grid.grid_id])
        for n, area in enumerate(areas, 1):
            committee = self.org(
                f"ORG-RC{n:02d}", "residents_committee", f"{area.name}居委会", None
            )
            self.cover(committee, "grid", area.grid_id, "any", "responder")
            for micro in (u for u in units.values() if u.parent_id == area.grid_id):
                self.crew(committee, "grid_leader", 1, [micro.grid_id])
                self.crew(committee, "grid_worker", self.rng.randint(2, 3), [micro.grid_id])
                for group in (u for u in units.values() if u.parent_id == micro.grid_id):
                    self.crew(committee, "building_leader", 1, [group.grid_id])
        compounds = self.tables["compounds"]
        for n in range(1, self.scale.property_companies + 1):
            company = self.org(
                f"ORG-PM{n}",
                "property_company",
                f"{self.word()}物业管理有限公司",
                f"021-6100{n:04d}",
            )
            # Each company manages a run of neighbouring compounds.
            served = [
                c
                for i, c in enumerate(compounds)
                if i * self.scale.property_companies // len(compounds) == n - 1
            ]
            for compound in served:
                self.cover(company, "compound", compound.compound_id, "any", "responder")
            self.crew(company, "property_staff", 2, sorted({c.area_id for c in served}))
        vendors = [
            self.org(
                f"ORG-EV{n}",
                "elevator_vendor",
                f"{self.word()}电梯工程有限公司",
                f"021-6200{n:04d}",
            )
            for n in range(1, self.scale.elevator_vendors + 1)
        ]
        for vendor in vendors:
            self.crew(vendor, "technician", 2, [g.grid_id for g in grids])
        lifted = sorted(
            {a.building_id for a in self.tables["addresses"] if a.place_type == "elevator"}
        )
        for index, building_id in enumerate(lifted):
            vendor = vendors[index % len(vendors)]
            self.elevator_vendor[building_id] = vendor.org_id
            self.cover(vendor, "building", building_id, "elevator", "maintainer")
        devices = self.org("ORG-DV1", "device_vendor", "示范智能传感科技有限公司", "021-63000000")
        for kind in ("smoke", "ebike", "fire_lane"):
            self.cover(devices, "street", STREET, kind, "maintainer")
        enforcement = self.org("ORG-ENF", "enforcement", "示范街道城管执法中队", "021-64000000")
        for kind in ("fire_lane", "ebike"):  # blocked lanes; repeated indoor charging
            self.cover(enforcement, "street", STREET, kind, "enforcer")
        # The top of the escalation chain (grid worker -> committee -> ops centre -> district).
        district = self.org("ORG-DIST", "district_office", "示范区城市运行管理中心", "021-65000000")
        self.cover(district, "street", STREET, "any", "supervisor")

    def org(self, org_id: str, org_type: str, name: str, phone: str | None) -> Organisation:
        return self.add("organisations", Organisation(org_id, org_type, name, STREET, phone))

    def cover(self, org: Organisation, scope: str, scope_id: str, category: str, role: str) -> None:
        self.add("responsibilities", Responsibility(org.org_id, scope, scope_id, category, role))

    def crew(self, org: Organisation, role: str, count: int, grid_ids: list[str]) -> None:
        for _ in range(count):
            member = Staff(self.next_id("S", 5), org.org_id, role, self.name(), self.phone())
            self.add("staff", member)
            for grid_id in grid_ids:
                self.add("staff_grid_units", StaffGridUnit(member.staff_id, grid_id))

    # --- devices

    def devices(self, dwellings: list[Address]) -> None:
        rng = self.rng
        placed: list[tuple[str, Address]] = []
        for address in self.tables["addresses"]:
            if address.place_type == "public_kitchen":
                placed.append(("smoke", address))
            elif address.place_type in ("elevator", "fire_lane"):
                placed.append((address.place_type, address))
            elif address.place_type == "bike_shed":
                placed += [("ebike", address)] * rng.randint(2, 4)
        count = round(len(dwellings) * EBIKE_DWELLING_SHARE)
        placed += [("ebike", address) for address in rng.sample(dwellings, count)]
        for kind, address in placed:
            installed = date(2021, 1, 1) + timedelta(days=rng.randrange(4 * 365))
            due = date(INSPECTED_FROM.year, installed.month, min(installed.day, 28))
            if due < INSPECTED_FROM:
                due = due.replace(year=due.year + 1)
            maintainer = (
                self.elevator_vendor[address.building_id or ""] if kind == "elevator" else "ORG-DV1"
            )
            device = Device(
                self.next_id(PREFIXES[kind], 6),
                kind,
                address.address_id,
                MODELS[kind],
                installed,
                HEARTBEAT_S[kind],
                due if kind in ("smoke", "elevator") else None,
                maintainer,
            )
            self.add("devices", device)
