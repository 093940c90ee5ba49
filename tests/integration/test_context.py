"""The registry snapshot on the real TimescaleDB: resolution, reloads without restart, failures.

The daemon runs on a database of its own here, filled by the registry
importer from the demo district; in-process tests drive the directory
(``adapters/directory``) directly to check what it resolves against
``sensord registry show``'s SQL, and how it reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from sensord.adapters.directory import RegistryDirectory
from sensord.adapters.metrics import Metrics
from sensord.adapters.migrations import migrate
from sensord.adapters.registry_snapshot import LoadedSnapshot, load_snapshot
from sensord.adapters.registry_store import panorama, run_import
from sensord.cli.registry import read_directory
from sensord.core.backoff import Backoff
from sensord.core.context import DeviceContext
from sensord.paths import shipped
from simulators.district import generate, write
from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.database import create_database, drop_database
from simulators.harness.processes import wait_until
from simulators.protocol import SimDevice, reading
from simulators.publisher import Publisher

pytestmark = pytest.mark.integration


@pytest.fixture
def registry_db() -> Iterator[str]:
    """A migrated database of its own (the importer's deletes must not meet other tests' rows)."""
    try:
        dsn = create_database()
    except psycopg.OperationalError as exc:
        pytest.fail(f"TimescaleDB on 127.0.0.1:5433 is not reachable ({exc})")
    migrate(dsn, shipped("migrations"))
    yield dsn
    drop_database(dsn)


@pytest.fixture
def district(tmp_path: Path) -> Path:
    out = tmp_path / "district"
    write(generate(1, "demo"), out)
    return out


def import_registry(dsn: str, directory: Path) -> None:
    files, strays = read_directory(directory)
    assert not strays
    plan = run_import(dsn, files)
    assert plan.errors == []


def drop_device(directory: Path, device_id: str) -> Path:
    """A copy of devices.csv without one device, alone in a new directory."""
    out = directory.parent / f"without-{device_id}"
    out.mkdir()
    lines = (directory / "devices.csv").read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(device_id + ",")]
    assert len(kept) == len(lines) - 1
    (out / "devices.csv").write_text("".join(kept))
    return out


def device_ids(directory: Path, kind: str) -> list[str]:
    lines = (directory / "devices.csv").read_text().splitlines()[1:]
    return [line.split(",")[0] for line in lines if line.split(",")[1] == kind]


def publish(port: int, device: SimDevice, seq: int) -> None:
    ts = datetime.now(UTC) - timedelta(seconds=1)
    with Publisher(port=port) as publisher:
        publisher.publish([reading(device, seq, ts, random.Random(seq))])


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def stored(dsn: str, device_id: str) -> int:
    return int(rows(dsn, "SELECT count(*) FROM readings WHERE device_id = %s", device_id)[0][0])


def dead(dsn: str, device_id: str) -> list[str]:
    return [
        r[0] for r in rows(dsn, "SELECT reason FROM dead_letters WHERE device_id = %s", device_id)
    ]


# --- the daemon, as a process ---------------------------------------------------------


def test_the_daemon_loads_the_imported_registry_and_stores_its_devices_readings(
    registry_db: str, district: Path, broker: Broker, daemon: Callable[..., Daemon]
) -> None:
    import_registry(registry_db, district)
    sensord = daemon(SENSORD_DATABASE__DSN=registry_db)
    sensord.start()
    metrics = sensord.metrics()
    devices = len((district / "devices.csv").read_text().splitlines()) - 1
    assert metrics["sensord_registry_devices"] == devices
    assert metrics['sensord_registry_reloads_total{result="ok"}'] >= 1
    assert metrics['sensord_registry_reloads_total{result="error"}'] == 0
    assert metrics["sensord_registry_reload_duration_seconds_count"] >= 1
    log = sensord.log_path.read_text()
    assert "registry snapshot loaded" in log and f"devices={devices} unplaced=0 unassigned=0" in log
    for kind in ("smoke", "ebike", "elevator", "fire_lane"):
        publish(broker.port, SimDevice(device_ids(district, kind)[0], kind, "jd01"), 1)
    for kind in ("smoke", "ebike", "elevator", "fire_lane"):
        device_id = device_ids(district, kind)[0]
        wait_until(lambda d=device_id: stored(registry_db, d) == 1, 10, f"{device_id} stored")
    assert rows(registry_db, "SELECT count(*) FROM dead_letters") == [(0,)]
    assert sensord.terminate() == 0


def test_an_import_that_adds_a_device_is_picked_up_without_restart(
    registry_db: str, district: Path, broker: Broker, daemon: Callable[..., Daemon]
) -> None:
    late = device_ids(district, "smoke")[-1]
    import_registry(registry_db, district)
    import_registry(registry_db, drop_device(district, late))
    sensord = daemon(SENSORD_DATABASE__DSN=registry_db)
    sensord.start()
    before = sensord.metrics()["sensord_registry_devices"]
    publish(broker.port, SimDevice(late, "smoke", "jd01"), 1)
    wait_until(lambda: dead(registry_db, late) == ["unknown_device"], 10, "dead-lettered first")

    import_registry(registry_db, district)  # the device is back: NOTIFY, reload
    wait_until(lambda: sensord.metrics()["sensord_registry_devices"] == before + 1, 10, "reload")
    publish(broker.port, SimDevice(late, "smoke", "jd01"), 2)
    wait_until(lambda: stored(registry_db, late) == 1, 10, "the reading stored")
    assert dead(registry_db, late) == ["unknown_device"]  # only the one before the import
    assert sensord.terminate() == 0


def test_a_device_removed_from_the_registry_is_dead_lettered_after_the_refresh(
    registry_db: str, district: Path, broker: Broker, daemon: Callable[..., Daemon]
) -> None:
    gone = device_ids(district, "elevator")[0]
    import_registry(registry_db, district)
    sensord = daemon(SENSORD_DATABASE__DSN=registry_db)
    sensord.start()
    before = sensord.metrics()["sensord_registry_devices"]
    publish(broker.port, SimDevice(gone, "elevator", "jd01"), 1)
    wait_until(lambda: stored(registry_db, gone) == 1, 10, "stored while registered")

    import_registry(registry_db, drop_device(district, gone))
    wait_until(lambda: sensord.metrics()["sensord_registry_devices"] == before - 1, 10, "reload")
    publish(broker.port, SimDevice(gone, "elevator", "jd01"), 2)
    wait_until(lambda: dead(registry_db, gone) == ["unknown_device"], 10, "dead-lettered")
    assert stored(registry_db, gone) == 1
    metrics = sensord.metrics()
    assert metrics['sensord_ingest_dead_letters_total{reason="unknown_device"}'] == 1
    assert sensord.terminate() == 0


# --- the directory, in process ---------------------------------------------------------


def check_against_panorama(context: DeviceContext, view: dict[str, Any]) -> None:
    """What the snapshot resolved equals what `sensord registry show` computes in SQL."""
    place = context.place
    assert place is not None
    assert (place.address_id, place.place_type, place.label, place.floor, place.street_id) == (
        view["address_id"], view["place_type"], view["label"], view["floor"], view["street_id"],
    )  # fmt: skip
    if view["building"] is None:
        assert place.building is None
    else:
        assert place.building is not None
        assert (place.building.building_id, place.building.name, place.building.floors) == (
            view["building"]["building_id"], view["building"]["name"], view["building"]["floors"],
        )  # fmt: skip
    assert (place.compound.compound_id, place.compound.name) == (
        view["compound"]["compound_id"], view["compound"]["name"],
    )  # fmt: skip
    assert [(g.grid_id, g.level, g.name) for g in context.grid_chain] == [
        (g["grid_id"], g["level"], g["name"]) for g in view["grid_chain"]
    ]
    # Responsible: the same entries, in the same order of scopes (most specific first).
    mine = [(r.org_id, r.role, r.category, r.scope_type, r.scope_id) for r in context.responsible]
    theirs = [
        (r["org_id"], r["role"], r["category"], r["scope_type"], r["scope_id"])
        for r in view["responsible"]
    ]
    assert sorted(mine) == sorted(theirs)
    assert [m[3:] for m in mine] == [t[3:] for t in theirs]
    org_types = {r["org_id"]: r["org_type"] for r in view["responsible"]}
    assert {r.org_id: r.org.org_type for r in context.responsible} == org_types
    # Staff: the show lists the responsible organisations' staff; the snapshot has them all.
    orgs = {r.org_id for r in context.responsible}
    assert {(s.staff_id, s.role, s.covers) for s in context.staff if s.org_id in orgs} == {
        (s["staff_id"], s["role"], tuple(s["covers"])) for s in view["staff"]
    }
    # Residents: the same people, counted by combination of tags.
    assert context.residents.residents_of == view["residents_of"]
    assert dict(context.residents.tag_sets) == Counter(
        frozenset(r["tags"]) for r in view["residents"]
    )
    device = next(d for d in view["devices"] if d["device_id"] == context.device_id)
    record = context.device
    assert (record.kind, record.model, record.heartbeat_s, record.maintainer_org_id) == (
        view["kind"], device["model"], device["heartbeat_s"], device["maintainer_org_id"],
    )  # fmt: skip
    due = device["inspection_due"]
    assert (record.inspection_due.isoformat() if record.inspection_due else None) == due


def test_every_device_resolves_as_registry_show_does(registry_db: str, district: Path) -> None:
    import_registry(registry_db, district)
    loaded = load_snapshot(registry_db)
    snapshot = loaded.snapshot
    ids = [row[0] for row in rows(registry_db, "SELECT device_id FROM devices")]
    assert len(snapshot) == len(ids) > 0
    with psycopg.connect(registry_db) as conn:
        for device_id in ids:
            context = snapshot.context(device_id)
            view = panorama(conn, device_id)
            assert context is not None and view is not None
            check_against_panorama(context, view)


def directory_for(dsn: str, metrics: Metrics, **kwargs: Any) -> RegistryDirectory:
    return RegistryDirectory(dsn, dsn, metrics, debounce_s=0.1, **kwargs)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def test_one_import_is_one_reload_and_a_rollback_none(registry_db: str, district: Path) -> None:
    metrics = Metrics(CollectorRegistry(), process=False)
    ok = "sensord_registry_reloads_total"

    async def scenario() -> None:
        directory = directory_for(registry_db, metrics)
        await directory.open()
        assert len(directory.snapshot()) == 0
        follow = asyncio.create_task(directory.follow(3600, Backoff(0.05, 0.2)))
        try:
            # Twelve tables change in one transaction: twelve notifications, one reload.
            await asyncio.to_thread(import_registry, registry_db, district)
            await until(lambda: len(directory.snapshot()) > 0, 10, "the import's reload")
            await asyncio.sleep(0.5)
            assert value(metrics, ok, result="ok") == 2  # start, then the import
            assert directory.context(device_ids(district, "smoke")[0]) is not None
            # A transaction that rolls back notifies nobody.
            with psycopg.connect(registry_db) as conn:
                conn.execute("DELETE FROM devices")
                conn.rollback()
            await asyncio.sleep(0.5)
            assert value(metrics, ok, result="ok") == 2
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow

    asyncio.run(scenario())


def test_a_failed_reload_keeps_the_last_snapshot_and_recovers(
    registry_db: str, district: Path
) -> None:
    import_registry(registry_db, district)
    metrics = Metrics(CollectorRegistry(), process=False)
    failing = False

    def loader(conninfo: str) -> LoadedSnapshot:
        if failing:
            raise psycopg.OperationalError("the database went away")
        return load_snapshot(conninfo)

    async def scenario() -> None:
        nonlocal failing
        directory = directory_for(registry_db, metrics, loader=loader)
        first = await directory.open()
        follow = asyncio.create_task(directory.follow(3600, Backoff(0.05, 0.2)))
        try:
            failing = True
            with psycopg.connect(registry_db, autocommit=True) as conn:
                conn.execute("NOTIFY sensord_registry, 'devices'")
            await until(
                lambda: value(metrics, "sensord_registry_reloads_total", result="error") >= 2,
                10,
                "failed reloads, retried",
            )
            assert directory.snapshot() is first  # the last good one serves on
            assert directory.context(device_ids(district, "smoke")[0]) is not None
            assert value(metrics, "sensord_database_errors_total", operation="registry") >= 2
            failing = False
            await until(lambda: directory.snapshot() is not first, 10, "a reload after recovery")
            assert len(directory.snapshot()) == len(first)
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow

    asyncio.run(scenario())


def test_the_periodic_refresh_catches_a_change_without_a_notification(
    registry_db: str, district: Path
) -> None:
    import_registry(registry_db, district)
    metrics = Metrics(CollectorRegistry(), process=False)
    gone = device_ids(district, "fire_lane")[0]

    async def scenario() -> None:
        directory = directory_for(registry_db, metrics)
        await directory.open()
        assert directory.context(gone) is not None
        follow = asyncio.create_task(directory.follow(0.5, Backoff(0.05, 0.2)))
        try:
            with psycopg.connect(registry_db) as conn:
                # As if the notification were lost: the trigger is off for this change.
                conn.execute("ALTER TABLE devices DISABLE TRIGGER devices_changed")
                conn.execute("DELETE FROM devices WHERE device_id = %s", (gone,))
                conn.execute("ALTER TABLE devices ENABLE TRIGGER devices_changed")
                conn.commit()
            await until(lambda: directory.context(gone) is None, 5, "the periodic reload")
            assert directory.devices().get(gone) is None
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow

    asyncio.run(scenario())
