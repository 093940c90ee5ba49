"""``sensord registry`` on the real TimescaleDB: import, update in place, export, show."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sensord.adapters.migrations import migrate
from sensord.cli import main
from sensord.core.registry.rows import ENTITIES
from sensord.paths import shipped
from simulators.district import generate, write
from simulators.harness.database import create_database, drop_database

pytestmark = pytest.mark.integration

Run = Callable[..., tuple[int, str, str]]
TABLES = [entity.name for entity in ENTITIES]


@pytest.fixture
def registry_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of its own, migrated, that ``sensord`` commands in this test use."""
    try:
        dsn = create_database()
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"TimescaleDB on 127.0.0.1:5433 is not reachable; run scripts/services up ({exc})"
        )
    migrate(dsn, shipped("migrations"))
    monkeypatch.setenv("SENSORD_DATABASE__DSN", dsn)
    yield dsn
    drop_database(dsn)


@pytest.fixture
def sensord(registry_db: str, capsys: pytest.CaptureFixture[str]) -> Run:
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["registry", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def district(tmp_path: Path) -> Path:
    out = tmp_path / "district"
    write(generate(1, "demo"), out)
    return out


def counts(out: str) -> dict[str, tuple[int, int, int, int]]:
    """The per-file table an import prints: file -> inserted, updated, unchanged, deleted."""
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].endswith(".csv"):
            table[parts[0]] = tuple(int(n) for n in parts[1:5])
    return table


def full_counts(out: str) -> dict[str, tuple[int, int, int, int]]:
    """``counts`` of a whole-registry import: every file has its row, so a check over the
    values cannot pass for want of rows."""
    table = counts(out)
    assert set(table) == {entity.file for entity in ENTITIES}, out
    return table


def versions(dsn: str) -> dict[str, set[tuple[str, str]]]:
    """Every row's (ctid, xmin): any write to a row changes it."""
    with psycopg.connect(dsn) as conn:
        return {
            table: {
                tuple(row) for row in conn.execute(f"SELECT ctid::text, xmin::text FROM {table}")
            }
            for table in TABLES
        }


def edit(path: Path, key: str, column: str, value: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    for index, line in enumerate(lines):
        if line.startswith(key + ","):
            cells = line.rstrip("\n").split(",")
            cells[header.index(column)] = value
            lines[index] = ",".join(cells) + "\n"
    path.write_text("".join(lines))


def test_import_then_reimport_writes_nothing_and_notifies_nobody(
    sensord: Run, registry_db: str, district: Path
) -> None:
    with psycopg.connect(registry_db, autocommit=True) as listener:
        listener.execute("LISTEN sensord_registry")
        code, out, err = sensord("import", str(district))
        assert (code, err) == (0, "")
        notified = {n.payload for n in listener.notifies(timeout=1.0, stop_after=len(TABLES))}
        assert notified == set(TABLES)
        imported = counts(out)
        assert (
            imported["devices.csv"][0]
            == len((district / "devices.csv").read_text().splitlines()) - 1
        )
        assert all(
            updated == unchanged == deleted == 0
            for _, updated, unchanged, deleted in imported.values()
        )
        before = versions(registry_db)

        code, out, _ = sensord("import", str(district))
        assert code == 0
        assert all(c[0] == c[1] == c[3] == 0 for c in full_counts(out).values())
        assert versions(registry_db) == before
        assert list(listener.notifies(timeout=0.5)) == []

    with psycopg.connect(registry_db) as conn:
        # The daemon's directory query sees every device, each in its place's street.
        rows = conn.execute("SELECT device_id, kind, street FROM devices").fetchall()
        assert len(rows) == imported["devices.csv"][0]
        assert {street for _, _, street in rows} == {"jd01"}


def test_a_changed_file_updates_in_place(sensord: Run, registry_db: str, district: Path) -> None:
    assert sensord("import", str(district))[0] == 0
    before = versions(registry_db)
    with psycopg.connect(registry_db) as conn:
        device, address = conn.execute(
            "SELECT device_id, address_id FROM devices WHERE kind = 'ebike' "
            "ORDER BY device_id LIMIT 1"
        ).fetchone() or ("", "")
        other = conn.execute(
            "SELECT address_id FROM addresses WHERE place_type = 'dwelling' AND address_id <> %s "
            "ORDER BY address_id LIMIT 1",
            (address,),
        ).fetchone()
    assert other is not None
    edit(district / "devices.csv", device, "address_id", other[0])
    edit(district / "streets.csv", "jd01", "name", "示范街道（新）")
    residents = (district / "residents.csv").read_text().splitlines(keepends=True)
    (district / "residents.csv").write_text("".join(residents[:-1]))  # one moved away

    code, out, err = sensord("import", str(district))
    assert (code, err) == (0, "")
    changed = counts(out)
    assert changed["devices.csv"][1:] == (1, len(before["devices"]) - 1, 0)
    assert changed["streets.csv"][1] == 1
    assert changed["residents.csv"][3] == 1
    after = versions(registry_db)
    for table in TABLES:
        untouched = {"devices": 1, "streets": 1, "residents": 1}.get(table, 0)
        assert len(before[table] - after[table]) == untouched, table
    with psycopg.connect(registry_db) as conn:
        assert conn.execute(
            "SELECT address_id, street FROM devices WHERE device_id = %s", (device,)
        ).fetchone() == (other[0], "jd01")


def test_export_then_import_round_trips(sensord: Run, district: Path, tmp_path: Path) -> None:
    assert sensord("import", str(district))[0] == 0
    exported = tmp_path / "exported"
    code, out, _ = sensord("export", str(exported))
    assert code == 0 and "devices.csv" in out
    for entity in ENTITIES:
        assert (exported / entity.file).read_bytes() == (district / entity.file).read_bytes()
        # Names and phones: readable by the exporting user only, created so.
        assert stat.S_IMODE((exported / entity.file).stat().st_mode) == 0o600
    code, out, _ = sensord("import", str(exported))
    assert code == 0
    assert all(c[0] == c[1] == c[3] == 0 for c in full_counts(out).values())


def test_a_broken_set_reports_every_bad_row_and_changes_nothing(
    sensord: Run, registry_db: str, district: Path, tmp_path: Path
) -> None:
    assert sensord("import", str(district))[0] == 0
    before = versions(registry_db)
    broken = tmp_path / "broken"
    shutil.copytree(district, broken)
    edit(broken / "devices.csv", "EB-000001", "kind", "smok")
    edit(broken / "devices.csv", "EB-000002", "address_id", "A-999999")
    edit(broken / "devices.csv", "EB-000003", "heartbeat_s", "five")
    edit(broken / "residents.csv", "R-000001", "phone", "12345")
    edit(broken / "addresses.csv", "A-000002", "compound_id", "C-404")
    with (broken / "households.csv").open("a") as extra:
        extra.write("H-999999,A-000001\n")  # a stairwell is no dwelling
    (broken / "device.csv").write_text("device_id\n")

    code, _, err = sensord("import", str(broken))
    assert code == 1
    reported = [line for line in err.splitlines() if not line.startswith("sensord")]
    assert len(reported) == 7
    for fragment in (
        "device.csv: not a registry file",
        "addresses.csv:3: compound_id: unknown compound 'C-404'",
        "households.csv:",
        "residents.csv:2: phone:",
        "devices.csv:2: kind:",
        "devices.csv:3: address_id: unknown address 'A-999999'",
        "devices.csv:4: heartbeat_s: must be a whole number",
    ):
        assert any(fragment in line for line in reported), fragment
    assert "nothing was applied" in err
    assert versions(registry_db) == before
    assert "王" not in err and "100" not in err.replace("A-999999", "")  # no personal data


def test_a_partial_import_keeps_other_tables_and_refuses_dangling_references(
    sensord: Run, registry_db: str, district: Path, tmp_path: Path
) -> None:
    assert sensord("import", str(district))[0] == 0
    before = versions(registry_db)
    only = tmp_path / "only-addresses"
    only.mkdir()
    with psycopg.connect(registry_db) as conn:
        row = conn.execute(
            "SELECT device_id, address_id FROM devices ORDER BY 1 LIMIT 1"
        ).fetchone()
    assert row is not None
    device, address = row
    lines = (district / "addresses.csv").read_text().splitlines(keepends=True)
    (only / "addresses.csv").write_text(
        "".join(line for line in lines if not line.startswith(address + ","))
    )

    code, _, err = sensord("import", str(only))
    assert code == 1
    assert (
        f"devices.csv: address_id: unknown address '{address}', referred to by devices {device}"
        in err
    )
    assert versions(registry_db) == before

    (only / "addresses.csv").write_text("".join(lines))
    code, out, _ = sensord("import", str(only))
    assert code == 0 and list(counts(out)) == ["addresses.csv"]


def test_dry_run_counts_but_writes_nothing(sensord: Run, registry_db: str, district: Path) -> None:
    code, out, _ = sensord("import", "--dry-run", str(district))
    assert code == 0 and "dry run" in out
    assert counts(out)["residents.csv"][0] > 0
    assert all(not rows for rows in versions(registry_db).values())


def test_devices_registered_before_the_registry_follow_the_snapshot(
    sensord: Run, registry_db: str, district: Path, tmp_path: Path
) -> None:
    with psycopg.connect(registry_db) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, street) VALUES ('SMK-OLD', 'smoke', 'jd01')"
        )
    code, out, _ = sensord("import", str(district))
    assert code == 0 and counts(out)["devices.csv"][3] == 1  # not in devices.csv: gone
    with psycopg.connect(registry_db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM devices WHERE device_id = 'SMK-OLD'"
        ).fetchone() == (0,)


def test_show_prints_the_panoramic_view_masked_by_default(
    sensord: Run, registry_db: str, district: Path
) -> None:
    assert sensord("import", str(district))[0] == 0
    with psycopg.connect(registry_db) as conn:
        conn.execute(
            "INSERT INTO readings (ts, received_at, device_id, kind, seq, smoke, obscuration)"
            " VALUES (%s, %s, 'SMK-000001', 'smoke', 1, true, 12.5)",
            (datetime(2026, 1, 5, 8, tzinfo=UTC), datetime(2026, 1, 5, 8, tzinfo=UTC)),
        )
        kitchen = conn.execute(
            "SELECT address_id FROM devices WHERE device_id = 'SMK-000001'"
        ).fetchone()
    assert kitchen is not None

    code, out, _ = sensord("show", "SMK-000001", "--json")
    assert code == 0
    view = json.loads(out)
    assert (view["device_id"], view["kind"], view["address_id"]) == (
        "SMK-000001",
        "smoke",
        kitchen[0],
    )
    assert view["place_type"] == "public_kitchen"
    assert [unit["level"] for unit in view["grid_chain"]] == [
        "street", "comprehensive_grid", "residential_area", "micro_grid", "building_group",
    ]  # fmt: skip
    assert view["grid_chain"][0]["grid_id"] == "jd01"
    types = {r["org_type"] for r in view["responsible"]}
    assert {"ops_centre", "residents_committee", "property_company"} <= types
    assert all({"org_id", "org_type", "role"} <= set(r) for r in view["responsible"])
    assert view["residents"] and all(isinstance(r["tags"], list) for r in view["residents"])
    assert all("*" in r["name"] for r in view["residents"])
    assert all(r["phone"] is None or "****" in r["phone"] for r in view["residents"])
    assert all("*" in s["name"] for s in view["staff"])
    (mine,) = [d for d in view["devices"] if d["device_id"] == "SMK-000001"]
    assert mine["last_reading"]["smoke"] is True and mine["last_reading"]["seq"] == 1

    code, out, _ = sensord("show", "SMK-000001", "--json", "--unmask")
    unmasked = json.loads(out)
    assert code == 0 and not any("*" in r["name"] for r in unmasked["residents"])

    code, out, _ = sensord("show", kitchen[0])
    assert code == 0 and "public_kitchen" in out and "residents on this floor" in out

    assert sensord("show", "NOPE-1")[0] == 1


def test_the_schema_refuses_an_inconsistent_registry(
    sensord: Run, registry_db: str, district: Path
) -> None:
    assert sensord("import", str(district))[0] == 0
    refused = {
        # A device's street is its place's street.
        "UPDATE devices SET street = 'jd02' WHERE device_id = 'SMK-000001'": "devices_address",
        # A household lives at a dwelling.
        "INSERT INTO households (household_id, address_id) SELECT 'H-X', address_id"
        " FROM addresses WHERE place_type = 'stairwell' LIMIT 1": (
            "households_address_id_place_type_fkey"
        ),
        # A parent is exactly one level up.
        "UPDATE grid_units SET parent_id = 'jd01-cg1' WHERE grid_id = 'jd01-bg001'": (
            "grid_units_parent"
        ),
        # A place lies in its building's compound.
        "UPDATE addresses SET compound_id = 'C-002' WHERE address_id = 'A-000002'": (
            "addresses_building"
        ),
        # Only outdoor places may lie outside a building.
        "UPDATE addresses SET building_id = NULL WHERE address_id = 'A-000002'": (
            "addresses_indoors"
        ),
        # Nothing still referred to can go.
        "DELETE FROM organisations WHERE org_id = 'ORG-ENF'": "responsibilities_org_id_fkey",
    }
    for statement, constraint in refused.items():
        with (
            psycopg.connect(registry_db) as conn,
            pytest.raises(psycopg.IntegrityError) as caught,
            conn.transaction(),
        ):
            conn.execute(statement)
        assert caught.value.diag.constraint_name == constraint, statement


def test_one_import_may_rewrite_rows_that_refer_to_each_other(
    sensord: Run, registry_db: str, district: Path
) -> None:
    """A dwelling becomes a shop while its household moves out, in the same import."""
    assert sensord("import", str(district))[0] == 0
    with psycopg.connect(registry_db) as conn:
        household, dwelling = conn.execute(
            "SELECT h.household_id, h.address_id FROM households h WHERE NOT EXISTS"
            " (SELECT 1 FROM devices d WHERE d.address_id = h.address_id) ORDER BY 1 LIMIT 1"
        ).fetchone() or ("", "")
        (empty,) = conn.execute(
            "SELECT a.address_id FROM addresses a WHERE a.place_type = 'dwelling' AND NOT EXISTS"
            " (SELECT 1 FROM households h WHERE h.address_id = a.address_id) ORDER BY 1 LIMIT 1"
        ).fetchone() or ("",)
    edit(district / "addresses.csv", dwelling, "place_type", "shop")
    edit(district / "households.csv", household, "address_id", empty)
    code, out, err = sensord("import", str(district))
    assert (code, err) == (0, "")
    assert counts(out)["addresses.csv"][1] == counts(out)["households.csv"][1] == 1


@pytest.mark.slow
def test_full_scale_imports_exports_and_reimports_identically(sensord: Run, tmp_path: Path) -> None:
    full = tmp_path / "full"
    write(generate(1, "full"), full)
    code, out, err = sensord("import", str(full))
    assert (code, err) == (0, "")
    assert counts(out)["addresses.csv"][0] == 25_639
    assert counts(out)["residents.csv"][0] == 32_000
    exported = tmp_path / "exported"
    assert sensord("export", str(exported))[0] == 0
    for entity in ENTITIES:
        assert (exported / entity.file).read_bytes() == (full / entity.file).read_bytes()
    code, out, _ = sensord("import", str(exported))
    assert code == 0
    assert all(c[0] == c[1] == c[3] == 0 for c in full_counts(out).values())
