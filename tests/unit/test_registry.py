"""The registry core: CSV rows, every error with file/line/column, cross-file checks, diffs."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.cli.registry import read_directory
from sensord.core.privacy import mask_name, mask_phone
from sensord.core.registry import vocabulary
from sensord.core.registry.cells import format_cell
from sensord.core.registry.csvfiles import RowError, parse_file, parse_row, render
from sensord.core.registry.plan import ImportPlan, TableChanges, plan_import
from sensord.core.registry.rows import DEVICES, ENTITIES, ENTITY_BY_FILE, DbRow, Entity, Key
from simulators.district import generate

BY_NAME = {entity.name: entity for entity in ENTITIES}
# The demo district's rows in file order (by key), as `render` writes them.
DEMO = {name: sorted(rows, key=BY_NAME[name].key) for name, rows in generate(1, "demo").items()}
Tables = dict[str, dict[Key, DbRow]]


def demo_texts() -> dict[str, str]:
    return {entity.name: render(entity, DEMO[entity.name]) for entity in ENTITIES}


def plan(texts: dict[str, str], current: Tables | None = None) -> ImportPlan:
    files = {name: parse_file(BY_NAME[name], text) for name, text in texts.items()}
    return plan_import(files, current or {})


def applied(current: Tables, done: ImportPlan) -> Tables:
    """What the database holds after the plan is applied."""
    assert not done.errors
    after = {name: dict(rows) for name, rows in current.items()}
    for name, change in done.changes.items():
        table = after.setdefault(name, {})
        for row in change.upserts:
            table[BY_NAME[name].key(row)] = row
        for key in change.deletes:
            del table[key]
    return after


def edit(text: str, line: int, column: str, value: str) -> str:
    """The CSV text with one cell replaced (``line`` counts the header as 1)."""
    records = list(csv.reader(io.StringIO(text)))
    records[line - 1][records[0].index(column)] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(records)
    return out.getvalue()


def line_of(text: str, key: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(key + ","))


def errors_of(done: ImportPlan) -> set[tuple[str, int | None, str | None]]:
    return {(error.file, error.line, error.column) for error in done.errors}


# --- whole imports -------------------------------------------------------------------


def test_demo_district_plans_as_inserts_then_as_a_noop() -> None:
    first = plan(demo_texts())
    assert first.errors == []
    assert {name: c.inserted for name, c in first.changes.items()} == {
        name: len(rows) for name, rows in DEMO.items()
    }
    current = applied({}, first)
    again = plan(demo_texts(), current)
    assert all(not c.upserts and not c.deletes for c in again.changes.values())
    assert {name: c.unchanged for name, c in again.changes.items()} == {
        name: len(rows) for name, rows in DEMO.items()
    }


def test_street_is_derived_down_the_chain() -> None:
    current = applied({}, plan(demo_texts()))
    assert {row[-1] for row in current["devices"].values()} == {"jd01"}
    assert {row[-1] for row in current["addresses"].values()} == {"jd01"}
    assert {row[-1] for row in current["grid_units"].values()} == {"jd01"}
    assert DEVICES.db_columns[-1] == "street"


def test_a_changed_file_updates_inserts_and_deletes_only_what_changed() -> None:
    current = applied({}, plan(demo_texts()))
    texts = demo_texts()
    device = DEMO["devices"][0]
    other = next(
        a
        for a in DEMO["addresses"]
        if a.place_type == "dwelling" and a.address_id != device.address_id
    )
    texts["devices"] = edit(texts["devices"], 2, "address_id", other.address_id)
    resident_lines = texts["residents"].splitlines(keepends=True)
    texts["residents"] = "".join(resident_lines[:2] + resident_lines[3:])  # drop line 3
    texts["residents"] += f"R-999999,{DEMO['households'][0].household_id},王小明,,elderly\n"
    done = plan(texts, current)
    assert done.errors == []
    devices, residents = done.changes["devices"], done.changes["residents"]
    assert (devices.inserted, devices.updated, devices.deleted) == (0, 1, 0)
    assert devices.upserts[0][:3] == (device.device_id, device.kind, other.address_id)
    assert (residents.inserted, residents.updated, residents.deleted) == (1, 0, 1)
    assert residents.deletes == [(DEMO["residents"][1].resident_id,)]
    untouched = {name for name, c in done.changes.items() if not c.upserts and not c.deletes}
    assert untouched == {e.name for e in ENTITIES} - {"devices", "residents"}


def test_a_file_left_out_keeps_its_rows_and_still_constrains_the_others() -> None:
    current = applied({}, plan(demo_texts()))
    only_devices = plan({"devices": demo_texts()["devices"]}, current)
    assert only_devices.errors == []
    assert set(only_devices.changes) == {"devices"}
    # Dropping an address a stored device still stands at is refused.
    device = DEMO["devices"][0]
    lines = demo_texts()["addresses"].splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(device.address_id + ",")]
    done = plan({"addresses": "".join(kept)}, current)
    assert len(done.errors) >= 1
    refused = next(e for e in done.errors if e.file == "devices.csv")
    assert refused.line is None and refused.column == "address_id"
    assert device.device_id in refused.reason and "not imported" in refused.reason
    assert done.changes == {}


def test_every_bad_row_is_reported_not_just_the_first() -> None:
    texts = demo_texts()
    kitchen = next(a for a in DEMO["addresses"] if a.place_type == "public_kitchen")
    texts["devices"] = edit(texts["devices"], 2, "kind", "smok")
    texts["devices"] = edit(texts["devices"], 3, "heartbeat_s", "5")
    texts["devices"] = edit(texts["devices"], 4, "address_id", "A-999999")
    texts["devices"] = edit(texts["devices"], 5, "installed_on", "2024-02-30")
    texts["residents"] = edit(texts["residents"], 2, "phone", "1234")
    texts["residents"] = edit(texts["residents"], 3, "tags", "Elderly")
    texts["households"] += f"H-999999,{kitchen.address_id}\n"
    texts["grid_units"] = edit(texts["grid_units"], 2, "parent_id", "jd01-ra01")
    done = plan(texts)
    households = len(texts["households"].splitlines())
    assert errors_of(done) == {
        ("grid_units.csv", 2, "parent_id"),
        ("households.csv", households, "address_id"),
        ("residents.csv", 2, "phone"),
        ("residents.csv", 3, "tags"),
        ("devices.csv", 2, "kind"),
        ("devices.csv", 3, "heartbeat_s"),
        ("devices.csv", 4, "address_id"),
        ("devices.csv", 5, "installed_on"),
    }
    assert done.changes == {}
    order = [entity.file for entity in ENTITIES]
    assert [e.file for e in done.errors] == sorted((e.file for e in done.errors), key=order.index)


def test_a_reference_to_a_bad_row_is_not_reported_twice() -> None:
    texts = demo_texts()
    device = DEMO["devices"][0]
    line = line_of(texts["addresses"], device.address_id)
    texts["addresses"] = edit(texts["addresses"], line, "place_type", "kitchen")
    assert errors_of(plan(texts)) == {("addresses.csv", line, "place_type")}


@pytest.mark.parametrize(
    ("name", "key_prefix", "column", "value", "reason"),
    [
        ("addresses", "A-", "building_id", "", "required for a"),
        ("addresses", "A-", "compound_id", "C-999", "unknown compound"),
        ("compounds", "C-", "area_id", "jd01-mg01", "expected a residential_area"),
        ("devices", "SMK-", "address_id", "<fire_lane>", "cannot be at a fire_lane"),
        ("devices", "SMK-", "maintainer_org_id", "ORG-NOPE", "unknown organisation"),
        ("responsibilities", "ORG-OPS", "scope_id", "jd99", "unknown street"),
        ("staff_grid_units", "S-", "grid_id", "jd01-zz", "unknown grid unit"),
        ("organisations", "ORG-OPS", "street_id", "jd 01", "must be"),
    ],
)
def test_cross_and_row_checks(
    name: str, key_prefix: str, column: str, value: str, reason: str
) -> None:
    texts = demo_texts()
    line = next(
        n for n, text in enumerate(texts[name].splitlines(), 1) if text.startswith(key_prefix)
    )
    if value == "<fire_lane>":
        value = next(a.address_id for a in DEMO["addresses"] if a.place_type == "fire_lane")
    texts[name] = edit(texts[name], line, column, value)
    done = plan(texts)
    assert [(e.file, e.line, e.column) for e in done.errors] == [(f"{name}.csv", line, column)]
    assert reason in done.errors[0].reason


def test_address_must_sit_in_its_compounds_residential_area() -> None:
    tables = generate(1, "demo")
    area2 = next(c for c in tables["compounds"] if c.area_id.endswith("ra02"))
    texts = demo_texts()
    address = next(
        a for a in DEMO["addresses"] if a.building_id is None and a.compound_id != area2.compound_id
    )
    line = line_of(texts["addresses"], address.address_id)
    texts["addresses"] = edit(texts["addresses"], line, "compound_id", area2.compound_id)
    done = plan(texts)
    assert [(e.line, e.column) for e in done.errors] == [(line, "building_group_id")]
    assert "residential area" in done.errors[0].reason


# --- files --------------------------------------------------------------------------


def test_header_problems_are_reported_per_column() -> None:
    parsed = parse_file(DEVICES, "device_id,kind,colour,colour\nSMK-1,smoke,red,red\n")
    assert {(e.line, e.column, e.reason) for e in parsed.errors} == {
        (1, "colour", "unknown column"),
        (1, "colour", "repeated column"),
        (1, "address_id", "missing column"),
        (1, "heartbeat_s", "missing column"),
    }
    assert parsed.unreadable


def test_optional_columns_may_be_left_out_and_columns_reordered() -> None:
    parsed = parse_file(DEVICES, "heartbeat_s,address_id,kind,device_id\n60,A-1,smoke,SMK-1\n")
    assert parsed.errors == []
    (row,) = parsed.rows.values()
    assert row == DEVICES.row("SMK-1", "smoke", "A-1", None, None, 60, None, None)


def test_cell_count_blank_lines_duplicates_and_bad_quoting() -> None:
    text = 'street_id,name\njd01,一\n\njd02,二,extra\njd01,again\n"jd03","multi\nline"\njd04,ok\n'
    parsed = parse_file(BY_NAME["streets"], text)
    assert {(e.line, e.column) for e in parsed.errors} == {
        (4, None),
        (5, "street_id"),
        (6, "name"),  # a line break is a control character
    }
    assert set(parsed.rows) == {("jd01",), ("jd04",)}
    assert parsed.lines[("jd04",)] == 8
    broken = parse_file(BY_NAME["streets"], 'street_id,name\njd01,"open\n')
    assert broken.unreadable and "bad CSV" in broken.errors[0].reason


def test_empty_file_is_an_error() -> None:
    parsed = parse_file(DEVICES, "")
    assert parsed.unreadable
    assert parsed.errors[0].line == 1 and "no header" in parsed.errors[0].reason


def test_read_directory_handles_bom_bad_encoding_and_stray_files(tmp_path: Path) -> None:
    (tmp_path / "streets.csv").write_bytes("\ufeffstreet_id,name\njd01,示范\n".encode())
    (tmp_path / "compounds.csv").write_bytes(b"compound_id,name,area_id\nC-1,\xff\xfe,ra\n")
    (tmp_path / "device.csv").write_text("device_id\n")
    (tmp_path / "notes.txt").write_text("ignored")
    files, strays = read_directory(tmp_path)
    assert files["streets"].errors == [] and ("jd01",) in files["streets"].rows
    assert files["compounds"].unreadable
    assert (files["compounds"].errors[0].line, files["compounds"].errors[0].reason) == (
        2,
        "not UTF-8",
    )
    assert [s.file for s in strays] == ["device.csv"]


def test_render_is_sorted_and_parses_back_to_the_same_rows() -> None:
    for entity in ENTITIES:
        rows = list(reversed(DEMO[entity.name]))
        parsed = parse_file(entity, render(entity, rows))
        assert parsed.errors == []
        assert list(parsed.rows.values()) == sorted(rows, key=entity.key)


def test_row_error_text() -> None:
    assert str(RowError("devices.csv", 12, "address_id", "unknown address 'A-1'")) == (
        "devices.csv:12: address_id: unknown address 'A-1'"
    )
    assert str(RowError("device.csv", None, None, "not a registry file")) == (
        "device.csv: not a registry file"
    )


# --- any cell text: a row, or errors that name the column ------------------------------

_EXAMPLES: dict[str, list[str]] = {}
for _entity in ENTITIES:
    for _index, _column in enumerate(_entity.columns):
        _EXAMPLES.setdefault(_column.name, []).extend(
            format_cell(row[_index]) for row in DEMO[_entity.name][:20]
        )
_EXAMPLES["phone"] += ["021-12345678", "13812345678"]
_EXAMPLES["tags"] += ["elderly;disabled", "a;a", "x" * 33]
_EXAMPLES["floor"] += ["-10", "201", "007", "-0", "1.5", "１"]


def _cells(entity: Entity[Any]) -> st.SearchStrategy[list[str]]:
    def cell(name: str) -> st.SearchStrategy[str]:
        return st.one_of(st.sampled_from(_EXAMPLES[name]), st.text(max_size=80))

    return st.tuples(*(cell(column.name) for column in entity.columns)).map(list)


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda entity: entity.name)
@given(data=st.data())
def test_any_cells_give_a_row_or_errors_naming_columns(
    entity: Entity[Any], data: st.DataObject
) -> None:
    cells = data.draw(_cells(entity))
    result = parse_row(entity, cells)
    if isinstance(result, list):
        assert result
        assert {column for column, _ in result} <= set(entity.header)
        for (column, reason), text in (
            (problem, cells[entity.header.index(problem[0])]) for problem in result
        ):
            # A reason never repeats what was in the cell: it may be a name or a phone.
            # (The allowed values a reason lists are the registry's own words, and the
            # reason's wording is what the same column says of any other bad value.)
            if len(text) >= 3 and text not in ("", column):
                # The same column's wording for another bad value, and for a value of the same
                # shape (its white space and control characters kept, everything else ☃),
                # which fails for the same reason: " end" fails as "must not start or end
                # with whitespace" says, without that reason repeating the cell.
                shape = "".join(c if c.isspace() or not c.isprintable() else "\u2603" for c in text)
                wording = _reason_for(entity, cells, column, "\u2603\u2603\u2603") + (
                    _reason_for(entity, cells, column, shape)
                )
                assert text not in _without_vocabulary(reason) or text in wording
    else:
        again = parse_row(entity, [format_cell(value) for value in result])
        assert again == result


def _reason_for(entity: Entity[Any], cells: list[str], column: str, value: str) -> str:
    """What parsing says of ``column`` when it holds ``value`` instead."""
    changed = list(cells)
    changed[entity.header.index(column)] = value
    result = parse_row(entity, changed)
    reasons = [r for c, r in result if c == column] if isinstance(result, list) else []
    return reasons[0] if reasons else ""


def _without_vocabulary(reason: str) -> str:
    for word in sorted(VOCABULARY, key=len, reverse=True):
        reason = reason.replace(word, " ")
    return reason


VOCABULARY = {
    *vocabulary.DEVICE_KINDS, *vocabulary.LEVELS, *vocabulary.PLACE_TYPES, *vocabulary.ORG_TYPES,
    *vocabulary.STAFF_ROLES, *vocabulary.SCOPE_TYPES, *vocabulary.RESPONSIBILITY_CATEGORIES,
    *vocabulary.RESPONSIBILITY_ROLES,
}  # fmt: skip


# --- personal data ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "masked"), [("张", "*"), ("张明", "张*"), ("张小明", "张*明"), ("欧阳小明", "欧**明")]
)
def test_mask_name(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("13812341234", "138****1234"), ("021-12345678", "021*****5678"), ("12345", "*****")],
)
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_changes_count_deleted() -> None:
    assert TableChanges([], [("a",), ("b",)], 0, 0, 3).deleted == 2
    assert ENTITY_BY_FILE["devices.csv"] is DEVICES
