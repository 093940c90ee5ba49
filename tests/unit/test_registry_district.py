"""The synthetic district: deterministic, the documented shape, and valid for the importer."""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sensord.core.registry.csvfiles import parse_file, render
from sensord.core.registry.plan import plan_import
from sensord.core.registry.rows import ENTITIES
from simulators.district import apportion, generate, main


def shape(tables: dict[str, list[Any]]) -> dict[str, int]:
    levels = Counter(unit.level for unit in tables["grid_units"])
    return {
        "comprehensive_grids": levels["comprehensive_grid"],
        "residential_areas": levels["residential_area"],
        "micro_grids": levels["micro_grid"],
        "building_groups": levels["building_group"],
        "addresses": len(tables["addresses"]),
        "residents": len(tables["residents"]),
        "devices": len(tables["devices"]),
    }


def assert_well_formed(tables: dict[str, list[Any]]) -> None:
    kitchens = {a.address_id for a in tables["addresses"] if a.place_type == "public_kitchen"}
    smoke = Counter(d.address_id for d in tables["devices"] if d.kind == "smoke")
    assert set(smoke) == kitchens and set(smoke.values()) == {1}  # one detector per kitchen
    kinds = Counter(device.kind for device in tables["devices"])
    assert set(kinds) == {"smoke", "ebike", "elevator", "fire_lane"}
    sheds = {a.address_id for a in tables["addresses"] if a.place_type == "bike_shed"}
    ebike_places = {d.address_id for d in tables["devices"] if d.kind == "ebike"}
    assert ebike_places & sheds and ebike_places - sheds  # sheds and dwellings
    files = {
        entity.name: parse_file(entity, render(entity, tables[entity.name])) for entity in ENTITIES
    }
    planned = plan_import(files, {})
    assert planned.errors == []


@pytest.mark.parametrize("seed", [1, 7])
def test_demo_has_the_same_structure_small(seed: int) -> None:
    tables = generate(seed, "demo")
    got = shape(tables)
    assert got["comprehensive_grids"] == 1
    assert got["residential_areas"] == 2
    assert got["micro_grids"] == 4
    assert got["building_groups"] == 12
    assert 200 <= got["addresses"] <= 400
    assert 50 <= got["devices"] <= 90
    assert_well_formed(tables)


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        main(argparse.Namespace(seed=seed, scale="demo", out=tmp_path / name))
    files = [entity.file for entity in ENTITIES]
    assert [(tmp_path / "a" / f).read_bytes() for f in files] == [
        (tmp_path / "b" / f).read_bytes() for f in files
    ]
    assert (tmp_path / "a" / "residents.csv").read_bytes() != (
        tmp_path / "c" / "residents.csv"
    ).read_bytes()


def test_people_are_obviously_synthetic() -> None:
    tables = generate(1, "demo")
    phones = [p.phone for p in tables["residents"] + tables["staff"] if p.phone]
    assert phones and all(phone.startswith("100") and len(phone) == 11 for phone in phones)


def test_full_matches_the_real_sub_district() -> None:
    tables = generate(1, "full")
    assert shape(tables) | {"devices": 0} == {
        "comprehensive_grids": 3,
        "residential_areas": 16,
        "micro_grids": 40,
        "building_groups": 658,
        "addresses": 25_639,
        "residents": 32_000,
        "devices": 0,
    }
    assert 3_000 <= len(tables["devices"]) <= 8_000
    tags = Counter(tag for resident in tables["residents"] for tag in resident.tags)
    assert tags["elderly"] / 32_000 == pytest.approx(0.42, abs=0.02)
    assert 0 < tags["living_alone"] < tags["elderly"]
    assert_well_formed(tables)


@pytest.mark.parametrize(
    ("total", "weights"), [(10, [1.0] * 10), (658, [1.0] * 40), (99, [1.0, 5.0])]
)
def test_apportion_is_exact_and_positive(total: int, weights: list[float]) -> None:
    shares = apportion(total, weights, random.Random(1))
    assert sum(shares) == total and min(shares) >= 1 and len(shares) == len(weights)
