"""The housing registry in TimescaleDB: load it, apply an import atomically, look up a place.

An import takes a transaction-scoped advisory lock (imports run one at a
time), reads the whole registry, lets the core validate and diff, and writes
only the rows that changed: each changed table gets one COPY into a temporary
table and one upsert (or delete) from it, so a re-import of the same files
writes nothing, and the ``sensord_registry`` triggers do not fire for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from sensord.core.registry.csvfiles import ParsedFile
from sensord.core.registry.plan import ImportPlan, TableChanges, plan_import
from sensord.core.registry.rows import ENTITIES, DbRow, Entity, Key
from sensord.errors import SensordError

_LOCK_KEY = 0x5E45_0D01  # shared by every `sensord registry import`


class RegistryRejected(SensordError):
    """The database refused the import (a row another table still refers to, a conflict)."""


def run_import(
    conninfo: str, files: Mapping[str, ParsedFile[Any]], *, dry_run: bool = False
) -> ImportPlan:
    """Validate ``files`` against the stored registry and apply them, all or nothing.

    Returns the plan: its errors (nothing applied) or its changes (applied,
    unless ``dry_run``). Raises RegistryRejected if the database refuses.
    """
    with psycopg.connect(conninfo) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                plan = plan_import(files, load(conn))
                if not plan.errors and not dry_run:
                    apply(conn, plan.changes)
        except psycopg.IntegrityError as exc:  # also the keys checked at commit
            raise RegistryRejected(_describe(exc)) from None
    return plan


def read_all(conninfo: str) -> dict[str, dict[Key, DbRow]]:
    """The whole registry as of one instant (one repeatable-read snapshot), for export."""
    with psycopg.connect(conninfo) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            return load(conn)


def read_panorama(conninfo: str, ident: str) -> dict[str, Any] | None:
    """The panorama of a device or an address, on a connection of its own (``panorama``)."""
    with psycopg.connect(conninfo) as conn:
        return panorama(conn, ident)


def load(conn: psycopg.Connection) -> dict[str, dict[Key, DbRow]]:
    """Every registry table as db rows by key (array columns as tuples, like the core's)."""
    tables: dict[str, dict[Key, DbRow]] = {}
    for entity in ENTITIES:
        query = sql.SQL("SELECT {} FROM {}").format(_columns(entity.db_columns), _table(entity))
        with conn.cursor() as cur:
            rows = cur.execute(query).fetchall()
        tables[entity.name] = {
            entity.key(row): tuple(tuple(v) if isinstance(v, list) else v for v in row)
            for row in rows
        }
    return tables


def apply(conn: psycopg.Connection, changes: Mapping[str, TableChanges]) -> None:
    """Write the changes: upserts, then deletes (every key is checked at commit)."""
    for entity in ENTITIES:
        change = changes.get(entity.name)
        if change and change.upserts:
            _upsert(conn, entity, change.upserts)
    for entity in reversed(ENTITIES):
        change = changes.get(entity.name)
        if change and change.deletes:
            _delete(conn, entity, change.deletes)


def _upsert(conn: psycopg.Connection, entity: Entity[Any], rows: Sequence[DbRow]) -> None:
    columns = entity.db_columns
    stage = _stage(conn, entity, columns, rows)
    others = [name for name in columns if name not in entity.key_columns]
    table = _table(entity)
    query = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) ").format(
        table, _columns(columns), _columns(columns), stage, _columns(entity.key_columns)
    )
    if not others:
        query += sql.SQL("DO NOTHING")
    else:
        # The WHERE leaves a row that is already right untouched (no new row
        # version); the core sends only changed rows, so it is a safety net.
        query += sql.SQL("DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in others
            ),
            sql.SQL(", ").join(sql.SQL("{}.{}").format(table, sql.Identifier(n)) for n in others),
            sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(n)) for n in others),
        )
    _expect(conn, query, len(rows), entity)


def _delete(conn: psycopg.Connection, entity: Entity[Any], keys: Sequence[Key]) -> None:
    stage = _stage(conn, entity, entity.key_columns, keys, suffix="gone")
    match = sql.SQL(" AND ").join(
        sql.SQL("t.{0} = s.{0}").format(sql.Identifier(name)) for name in entity.key_columns
    )
    query = sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(
        _table(entity), stage, match
    )
    _expect(conn, query, len(keys), entity)


def _stage(
    conn: psycopg.Connection,
    entity: Entity[Any],
    columns: Sequence[str],
    rows: Sequence[DbRow],
    suffix: str = "stage",
) -> sql.Identifier:
    """A temporary table of the rows, typed like the target's columns, filled by COPY."""
    stage = sql.Identifier(f"registry_{suffix}_{entity.name}")
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            stage, _columns(columns), _table(entity)
        )
    )
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, _columns(columns))) as copy,
    ):
        for row in rows:
            copy.write_row([list(v) if isinstance(v, tuple) else v for v in row])
    return stage


def _expect(conn: psycopg.Connection, query: sql.Composed, count: int, entity: Entity[Any]) -> None:
    with conn.cursor() as cur:
        cur.execute(query)
        if cur.rowcount != count:
            # Only a write outside `sensord registry import` can cause this.
            raise RegistryRejected(
                f"{entity.name} changed during the import ({cur.rowcount} of {count} rows "
                "written); nothing was applied, run the import again"
            )


def _describe(exc: psycopg.Error) -> str:
    # Only the primary message and, for a foreign key, its detail (ids only):
    # other details quote the whole failing row, personal data included.
    diag = exc.diag
    message = diag.message_primary or type(exc).__name__
    if isinstance(exc, psycopg.errors.ForeignKeyViolation) and diag.message_detail:
        message += f" ({diag.message_detail})"
    return f"the database refused the import, nothing was applied: {message}"


def _table(entity: Entity[Any]) -> sql.Identifier:
    return sql.Identifier(entity.name)


def _columns(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, names))


# --- the panoramic view -------------------------------------------------------------

_DEVICE = """
SELECT device_id, kind, address_id, street, model, installed_on, heartbeat_s,
       inspection_due, maintainer_org_id
FROM devices WHERE device_id = %s
"""
_PLACE = """
SELECT a.address_id, a.place_type, a.label, a.floor, a.street_id, a.building_group_id,
       a.compound_id, c.name AS compound_name, a.building_id, b.name AS building_name, b.floors
FROM addresses a
JOIN compounds c ON c.compound_id = a.compound_id
LEFT JOIN buildings b ON b.building_id = a.building_id
WHERE a.address_id = %s
"""
_CHAIN = """
WITH RECURSIVE chain AS (
    SELECT grid_id, level, name, parent_unit, 0 AS up FROM grid_units WHERE grid_id = %(group)s
    UNION ALL
    SELECT g.grid_id, g.level, g.name, g.parent_unit, chain.up + 1
    FROM grid_units g JOIN chain ON g.grid_id = chain.parent_unit
)
SELECT grid_id, level, name FROM (
    SELECT street_id AS grid_id, 'street' AS level, name, 99 AS up
    FROM streets WHERE street_id = %(street)s
    UNION ALL
    SELECT grid_id, level, name, up FROM chain
) units ORDER BY up DESC
"""
_RESPONSIBLE = """
SELECT r.org_id, o.org_type, o.name AS org_name, r.role, r.category, r.scope_type, r.scope_id
FROM unnest(%(types)s::text[], %(ids)s::text[]) WITH ORDINALITY AS s(scope_type, scope_id, rank)
JOIN responsibilities r ON r.scope_type = s.scope_type AND r.scope_id = s.scope_id
JOIN organisations o ON o.org_id = r.org_id
WHERE %(kind)s::text IS NULL OR r.category IN ('any', %(kind)s::text)
ORDER BY s.rank DESC, r.role, r.org_id
"""
_STAFF = """
SELECT s.staff_id, s.org_id, o.org_type, s.role, s.name, s.phone,
       array_agg(c.grid_id ORDER BY c.rank DESC) AS covers
FROM unnest(%(grids)s::text[]) WITH ORDINALITY AS c(grid_id, rank)
JOIN staff_grid_units sg ON sg.grid_id = c.grid_id
JOIN staff s ON s.staff_id = sg.staff_id
JOIN organisations o ON o.org_id = s.org_id
WHERE s.org_id = ANY(%(orgs)s)
GROUP BY s.staff_id, o.org_type
ORDER BY max(c.rank) DESC, s.role, s.staff_id
"""
_RESIDENTS = """
SELECT r.resident_id, r.household_id, h.address_id, r.name, r.phone, r.tags
FROM households h JOIN residents r ON r.household_id = h.household_id
WHERE h.address_id = ANY(%s)
ORDER BY h.address_id, h.household_id, r.resident_id
"""
_NEARBY_DWELLINGS = """
SELECT address_id FROM addresses
WHERE place_type = 'dwelling' AND CASE
    WHEN %(building)s::text IS NULL THEN building_group_id = %(group)s
    ELSE building_id = %(building)s AND (%(floor)s::int IS NULL OR floor = %(floor)s) END
"""
_DEVICES = """
SELECT d.device_id, d.kind, d.model, d.installed_on, d.heartbeat_s, d.inspection_due,
       d.maintainer_org_id, last.reading AS last_reading
FROM devices d
LEFT JOIN LATERAL (
    SELECT jsonb_strip_nulls(to_jsonb(r) - 'device_id') AS reading
    FROM readings r WHERE r.device_id = d.device_id ORDER BY r.ts DESC LIMIT 1
) last ON true
WHERE d.address_id = %(address)s OR d.device_id = %(device)s
ORDER BY d.device_id
"""


def panorama(conn: psycopg.Connection, ident: str) -> dict[str, Any] | None:
    """Everything known around a device or an address, unmasked; None if neither exists.

    Responsible organisations are those whose scope holds the place, for the
    device's kind (any kind for an address); staff, those of these
    organisations who cover a unit of the grid chain. Residents are the
    people a place concerns: a dwelling's own; for a shared place, those
    living on its floor of its building, in its building, or (outdoors) in
    its building group.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        device = cur.execute(_DEVICE, (ident,)).fetchone()
        address_id = device["address_id"] if device else ident
        place = cur.execute(_PLACE, (address_id,)).fetchone() if address_id else None
        if device is None and place is None:
            return None
        view: dict[str, Any] = {
            "device_id": device["device_id"] if device else None,
            "kind": device["kind"] if device else None,
            "address_id": address_id,
            "place_type": place["place_type"] if place else None,
            "label": place["label"] if place else None,
            "floor": place["floor"] if place else None,
            "street_id": place["street_id"] if place else device["street"] if device else None,
            "building": None,
            "compound": None,
            "grid_chain": [],
            "responsible": [],
            "staff": [],
            "residents_of": None,
            "residents": [],
        }
        if place is not None:
            _surroundings(cur, view, place)
        cur.execute(_DEVICES, {"address": address_id, "device": ident})
        view["devices"] = [_jsonable(row) for row in cur.fetchall()]
    return view


def _surroundings(cur: psycopg.Cursor[dict[str, Any]], view: dict[str, Any], place: Any) -> None:
    if place["building_id"]:
        view["building"] = {
            "building_id": place["building_id"],
            "name": place["building_name"],
            "floors": place["floors"],
        }
    view["compound"] = {"compound_id": place["compound_id"], "name": place["compound_name"]}
    chain = cur.execute(
        _CHAIN, {"group": place["building_group_id"], "street": place["street_id"]}
    ).fetchall()
    view["grid_chain"] = chain
    scopes = [("street", place["street_id"])]
    scopes += [("grid", unit["grid_id"]) for unit in chain[1:]]
    scopes += [("compound", place["compound_id"])]
    if place["building_id"]:
        scopes.append(("building", place["building_id"]))
    view["responsible"] = cur.execute(
        _RESPONSIBLE,
        {"types": [t for t, _ in scopes], "ids": [i for _, i in scopes], "kind": view["kind"]},
    ).fetchall()
    orgs = sorted({row["org_id"] for row in view["responsible"]})
    view["staff"] = cur.execute(
        _STAFF, {"grids": [unit["grid_id"] for unit in chain[1:]], "orgs": orgs}
    ).fetchall()
    view["residents_of"] = _served_by(place)
    if view["residents_of"] == "dwelling":
        dwellings = [place["address_id"]]
    else:
        cur.execute(
            _NEARBY_DWELLINGS,
            {
                "group": place["building_group_id"],
                "building": place["building_id"],
                "floor": place["floor"],
            },
        )
        dwellings = [row["address_id"] for row in cur.fetchall()]
    view["residents"] = cur.execute(_RESIDENTS, (dwellings,)).fetchall()


def _served_by(place: Mapping[str, Any]) -> str:
    """Whose residents a place concerns: its own, its floor's, its building's, or its group's."""
    if place["place_type"] == "dwelling":
        return "dwelling"
    if place["building_id"] is None:
        return "building_group"
    return "building" if place["floor"] is None else "floor"


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: v.isoformat() if isinstance(v, date) else v for key, v in row.items()}
