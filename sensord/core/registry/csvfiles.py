"""Registry CSV files: one file's text to rows and errors (file, line, column), rows to text.

Formula injection: a spreadsheet runs a cell that starts with ``= + - @``, tab
or CR as a formula (``=HYPERLINK(...)`` in a resident's name). ``render``
writes such a cell with a ``'`` in front, as OWASP recommends, and so also a
cell that already starts with ``'`` (otherwise the two could not be told
apart); ``parse_file`` strips exactly that one ``'`` again, so export → import
→ export is byte-identical.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

from sensord.core.registry.cells import format_cell
from sensord.core.registry.rows import APPLY_ORDER, ENTITY_BY_FILE, DbRow, Entity, Key, R
from sensord.errors import CellError


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
        return (APPLY_ORDER[entity.name] if entity else -1, self.line or 0, self.column or "")


FORMULA_STARTS = frozenset("=+-@\t\r")
QUOTE = "'"


def neutralise(cell: str) -> str:
    """``cell`` as a spreadsheet may open it safely: ``'`` before a formula's first character."""
    return QUOTE + cell if cell[:1] in FORMULA_STARTS or cell[:1] == QUOTE else cell


def restore(cell: str) -> str:
    """The inverse of :func:`neutralise`: the cell with that one ``'`` removed again."""
    if cell[:1] == QUOTE and (cell[1:2] in FORMULA_STARTS or cell[1:2] == QUOTE):
        return cell[1:]
    return cell


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
                cells = ["" if index is None else restore(record[index]) for index in layout]
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


def render(entity: Entity[Any], rows: Iterable[DbRow]) -> str:
    """A CSV file's text: the header, then the rows by key (derived columns dropped).

    Import reads it back to the same rows; the same rows always render to the same bytes.
    Every cell goes through :func:`neutralise`.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(entity.header)
    width = len(entity.columns)
    for row in sorted(rows, key=entity.key):
        writer.writerow([neutralise(format_cell(value)) for value in row[:width]])
    return out.getvalue()
