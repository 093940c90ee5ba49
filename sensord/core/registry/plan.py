"""Planning an import: validate the imported files against each other and the stored
registry, then diff each imported table against what is stored."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sensord.core.registry.checks import CROSS_ROW, Registry
from sensord.core.registry.csvfiles import ParsedFile, RowError
from sensord.core.registry.rows import ENTITIES, DbRow, Entity, Key


@dataclass(frozen=True, slots=True)
class TableChanges:
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
    changes: dict[str, TableChanges]


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
        rules = CROSS_ROW.get(entity.name)
        if rules is None:
            continue
        lines = reg.lines.get(entity.name)
        for key, row in reg.rows[entity.name].items():
            for column, reason in rules.check(row, reg):
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
    rules = CROSS_ROW.get(entity.name)
    if rules is None or rules.derive is None:
        return rows
    derive = rules.derive
    return {key: (*row, *derive(row, reg)) for key, row in rows.items()}


def _diff(new: Mapping[Key, DbRow], old: Mapping[Key, DbRow]) -> TableChanges:
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
    return TableChanges(upserts, deletes, inserted, updated, len(new) - inserted - updated)
