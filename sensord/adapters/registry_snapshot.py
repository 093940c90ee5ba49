"""Read the registry rows a :class:`~sensord.core.context.RegistrySnapshot` is built from.

One read-only REPEATABLE READ transaction, so every table is read as of the
same instant and the rows are consistent (every reference resolves). Only
the columns the daemon needs are read: no resident's or staff member's name
or phone ever enters the daemon's memory; residents arrive already counted
per dwelling and combination of tags.

Synchronous on purpose: the directory runs :func:`load_snapshot` in a worker
thread (``asyncio.to_thread``), so neither decoding ~60,000 rows nor building
the snapshot holds the event loop for more than one GIL switch interval.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from sensord.core.context import (
    DeviceRow,
    OrganisationRow,
    RegistryRows,
    RegistrySnapshot,
    ResidentTagsRow,
    StaffCoverRow,
    build_snapshot,
)
from sensord.core.registry.rows import Address, Building, Compound, GridUnit, Responsibility, Street

_STREETS = "SELECT street_id, name FROM streets"
_GRID_UNITS = "SELECT grid_id, level, parent_id, name FROM grid_units"
_ORGANISATIONS = "SELECT org_id, org_type, name, phone FROM organisations"
_COMPOUNDS = "SELECT compound_id, name, area_id FROM compounds"
_BUILDINGS = "SELECT building_id, compound_id, name, floors FROM buildings"
_ADDRESSES = """
SELECT address_id, place_type, building_group_id, compound_id, building_id, label, floor
FROM addresses
"""
# Counted in the database: the daemon learns how many residents of a dwelling
# carry each combination of tags, and nothing else about them.
_RESIDENT_TAGS = """
SELECT h.address_id, r.tags, count(*)::int
FROM residents r JOIN households h ON h.household_id = r.household_id
GROUP BY h.address_id, r.tags
"""
_STAFF = """
SELECT s.staff_id, s.org_id, s.role, sg.grid_id
FROM staff_grid_units sg JOIN staff s ON s.staff_id = sg.staff_id
"""
_RESPONSIBILITIES = "SELECT org_id, scope_type, scope_id, category, role FROM responsibilities"
_DEVICES = """
SELECT device_id, kind, street, address_id, model, installed_on, heartbeat_s,
       inspection_due, maintainer_org_id
FROM devices
"""

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    """A snapshot and what building it cost."""

    snapshot: RegistrySnapshot
    read_s: float  # connect, query, decode rows
    build_s: float  # resolve every device's context
    rows: int  # rows read, all tables


def read_rows(conn: psycopg.Connection) -> RegistryRows:
    """Every row the snapshot needs, from one REPEATABLE READ, read-only transaction."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    with conn.transaction():
        conn.execute("SET LOCAL statement_timeout = '60s'")  # never hold a snapshot for long
        return RegistryRows(
            streets=_fetch(conn, _STREETS, Street._make),
            grid_units=_fetch(conn, _GRID_UNITS, GridUnit._make),
            organisations=_fetch(conn, _ORGANISATIONS, OrganisationRow._make),
            compounds=_fetch(conn, _COMPOUNDS, Compound._make),
            buildings=_fetch(conn, _BUILDINGS, Building._make),
            addresses=_fetch(conn, _ADDRESSES, Address._make),
            resident_tags=_fetch(
                conn, _RESIDENT_TAGS, lambda r: ResidentTagsRow(r[0], tuple(r[1]), r[2])
            ),
            staff=_fetch(conn, _STAFF, StaffCoverRow._make),
            responsibilities=_fetch(conn, _RESPONSIBILITIES, Responsibility._make),
            devices=_fetch(conn, _DEVICES, DeviceRow._make),
        )


def load_snapshot(conninfo: str) -> LoadedSnapshot:
    """Connect, read the rows, build the snapshot (blocking: run it in a thread)."""
    started = time.perf_counter()
    with psycopg.connect(conninfo) as conn:
        rows = read_rows(conn)
    read = time.perf_counter()
    snapshot = build_snapshot(rows)
    built = time.perf_counter()
    count = sum(len(getattr(rows, f.name)) for f in dataclasses.fields(rows))
    return LoadedSnapshot(snapshot, read - started, built - read, count)


def _fetch(conn: psycopg.Connection, query: str, make: Callable[[Any], R]) -> tuple[R, ...]:
    with conn.cursor() as cur:
        cur.execute(query)
        return tuple(make(row) for row in cur)
