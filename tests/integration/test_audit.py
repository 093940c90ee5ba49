"""Least privilege and the audit chain (migrations/0007) on the real TimescaleDB."""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sensord.adapters.migrations import migrate
from sensord.cli import main as sensord_main
from sensord.paths import shipped
from simulators.harness.database import (
    RUNTIME_PASSWORD,
    create_database,
    drop_database,
    runtime_dsn,
)

pytestmark = pytest.mark.integration

_ALERT = (
    "INSERT INTO alerts (rule, category, severity, subject, first_seen, last_seen)"
    " VALUES ('smoke', 'smoke', 'critical', %s, now(), now()) RETURNING id"
)
_ORDER = (
    "INSERT INTO work_orders (alert_id, alert_episode, rule, subject, category, severity, state,"
    " owner_role, sla_ack_s, sla_arrive_s, sla_resolve_s, verify_hold_s, created_at, updated_at)"
    " VALUES (%s, 1, 'smoke', 'device:SMK-1', 'smoke', 'critical', 'new', 'responder',"
    " 60, 600, 3600, 0, now(), now()) RETURNING id"
)
_EVENT = (
    "INSERT INTO work_order_events (order_id, at, actor, role, event, to_state)"
    " VALUES (%s, now(), %s, 'responder', 'ack', 'acknowledged')"
)


@pytest.fixture
def owner_dsn() -> Iterator[str]:
    """A fresh database migrated by its owner."""
    dsn = create_database()
    try:
        migrate(dsn, shipped("migrations"))
        yield dsn
    finally:
        drop_database(dsn)


@pytest.fixture
def order_id(owner_dsn: str) -> int:
    """An alert and its work order, written by the runtime login."""
    with psycopg.connect(runtime_dsn(owner_dsn), autocommit=True) as conn:
        alert = conn.execute(_ALERT, ("device:SMK-1",)).fetchone()
        assert alert is not None
        order = conn.execute(_ORDER, (alert[0],)).fetchone()
        assert order is not None
        return int(order[0])


def _verify(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    """``sensord audit verify`` as the runtime login: (exit status, stdout, stderr)."""
    monkeypatch.setenv("SENSORD_DATABASE__DSN", runtime_dsn(dsn))
    monkeypatch.setenv("SENSORD_DATABASE__PASSWORD", RUNTIME_PASSWORD)
    capsys.readouterr()
    status = sensord_main(["audit", "verify", *extra])
    out = capsys.readouterr()
    return status, out.out, out.err


def _events(dsn: str, order_id: int, actors: list[str]) -> list[int]:
    with psycopg.connect(runtime_dsn(dsn), autocommit=True) as conn:
        for actor in actors:
            conn.execute(_EVENT, (order_id, actor))
        rows = conn.execute("SELECT id FROM work_order_events ORDER BY chain_seq").fetchall()
    return [row[0] for row in rows]


def _as_owner_without_guard(dsn: str, table: str, statement: str) -> None:
    """What only the owner can do: switch the append-only trigger off, change, switch it on."""
    with psycopg.connect(dsn) as conn:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER audit_append_only")
        conn.execute(statement)
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER audit_append_only")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE work_order_events SET actor = 'duty-officer-7'",
        "DELETE FROM work_order_events",
        "TRUNCATE work_order_events",
        "UPDATE alert_events SET actor = 'someone'",
        "DELETE FROM alert_events",
        "TRUNCATE alert_events CASCADE",
        "ALTER TABLE work_order_events DISABLE TRIGGER audit_append_only",
        "UPDATE audit_chain_heads SET chain_seq = 0",
        "DROP TABLE readings",
        "UPDATE readings SET smoke = false",
        "DELETE FROM readings",
        "TRUNCATE readings",
        "CREATE TABLE mine (x int)",
        "SELECT drop_chunks('readings', older_than => interval '1 hour')",
        "SELECT sensord_expire_readings(interval '1 hour')",
    ],
)
def test_the_runtime_role_cannot_rewrite_the_audit_trail_or_the_readings(
    owner_dsn: str, order_id: int, statement: str
) -> None:
    _events(owner_dsn, order_id, ["sensord"])
    with (
        psycopg.connect(runtime_dsn(owner_dsn), autocommit=True) as conn,
        pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.RaiseException)),
    ):
        conn.execute(statement)


def test_the_runtime_role_appends_and_expires_and_even_the_owner_cannot_edit_in_place(
    owner_dsn: str, order_id: int
) -> None:
    ids = _events(owner_dsn, order_id, ["sensord", "staff-1"])
    assert len(ids) == 2
    with psycopg.connect(runtime_dsn(owner_dsn), autocommit=True) as conn:
        assert conn.execute("SELECT sensord_expire_readings(interval '30 days')").fetchone() == (0,)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        for statement in (
            "UPDATE work_order_events SET actor = 'x'",
            "DELETE FROM work_order_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)


def test_concurrent_appends_from_two_instances_form_one_chain(
    owner_dsn: str,
    order_id: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    per_instance = 150
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def instance(name: str) -> None:
        try:
            with psycopg.connect(runtime_dsn(owner_dsn), autocommit=True) as conn:
                start.wait()
                for n in range(per_instance):
                    with conn.transaction():
                        conn.execute(_EVENT, (order_id, f"{name}-{n}"))
                        if n % 3 == 0:  # several rows per transaction too
                            conn.execute(_EVENT, (order_id, f"{name}-{n}-b"))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=instance, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with psycopg.connect(owner_dsn) as conn:
        rows = conn.execute(
            "SELECT chain_seq, prev_hash, hash FROM work_order_events ORDER BY chain_seq"
        ).fetchall()
    expected = 2 * (per_instance + len(range(0, per_instance, 3)))
    assert [row[0] for row in rows] == list(range(1, expected + 1))
    assert all(row[1] == before[2] for before, row in itertools.pairwise(rows))
    status, out, _ = _verify(owner_dsn, monkeypatch, capsys)
    assert status == 0, out
    assert f"work_order_events: intact, {expected} rows" in out


def test_verify_passes_untouched_and_names_the_row_an_owner_edited(
    owner_dsn: str,
    order_id: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = _events(owner_dsn, order_id, ["sensord", "staff-1", "staff-2", "staff-3"])
    status, out, err = _verify(owner_dsn, monkeypatch, capsys)
    assert status == 0, err
    assert "work_order_events: intact, 4 rows" in out and "alert_events: intact, 0 rows" in out

    _as_owner_without_guard(
        owner_dsn,
        "work_order_events",
        f"UPDATE work_order_events SET actor = 'duty-officer-7' WHERE id = {ids[1]}",
    )
    status, _, err = _verify(owner_dsn, monkeypatch, capsys)
    assert status == 1
    assert f"BROKEN at chain position 2: edited: row id {ids[1]} no longer matches" in err


def test_verify_names_a_deleted_row_and_rows_deleted_from_the_end(
    owner_dsn: str,
    order_id: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = _events(owner_dsn, order_id, ["sensord", "staff-1", "staff-2", "staff-3"])
    _as_owner_without_guard(
        owner_dsn, "work_order_events", f"DELETE FROM work_order_events WHERE id = {ids[1]}"
    )
    status, _, err = _verify(owner_dsn, monkeypatch, capsys, "--table", "work_order_events")
    assert status == 1
    assert f"position 2: deleted: position 2 missing before row id {ids[2]}" in err

    # Deleted from the end: the table's head still says how long the chain was.
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("ALTER TABLE work_order_events DISABLE TRIGGER audit_append_only")
        conn.execute(f"DELETE FROM work_order_events WHERE id >= {ids[1]}")
    status, _, err = _verify(owner_dsn, monkeypatch, capsys)
    assert status == 1
    assert "position 2: deleted: positions 2..4 missing at the end" in err


def test_a_recorded_head_catches_a_chain_the_owner_rebuilt(
    owner_dsn: str,
    order_id: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with psycopg.connect(runtime_dsn(owner_dsn), autocommit=True) as conn:
        alert = conn.execute(_ALERT, ("device:SMK-2",)).fetchone()
        assert alert is not None
        for event in ("fired", "acknowledged"):
            conn.execute(
                "INSERT INTO alert_events (alert_id, event) VALUES (%s, %s)", (alert[0], event)
            )
    status, out, _ = _verify(owner_dsn, monkeypatch, capsys, "--table", "alert_events")
    assert status == 0
    head = out.split("head ")[1].strip()
    assert head.startswith("alert_events:2:")

    # The owner rewrites the actor and recomputes every hash and the head: the chain holds...
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("ALTER TABLE alert_events DISABLE TRIGGER audit_append_only")
        conn.execute("UPDATE alert_events SET actor = 'nobody' WHERE chain_seq = 2")
        conn.execute(
            "UPDATE alert_events a SET hash = alert_event_digest(prev_hash, a) WHERE chain_seq = 2"
        )
        conn.execute(
            "UPDATE audit_chain_heads SET hash ="
            " (SELECT hash FROM alert_events WHERE chain_seq = 2) WHERE table_name = 'alert_events'"
        )
    assert _verify(owner_dsn, monkeypatch, capsys, "--table", "alert_events")[0] == 0
    # ...but not against the head recorded before.
    status, _, err = _verify(owner_dsn, monkeypatch, capsys, "--head", head)
    assert status == 1
    assert "is not the row recorded at position 2: the chain was rebuilt" in err


def test_an_upgraded_database_chains_the_history_it_had(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(shipped("migrations").glob("*.sql")):
        if path.name < "0007":
            shutil.copy(path, before)
    dsn = create_database()
    try:
        migrate(dsn, before)
        with psycopg.connect(dsn, autocommit=True) as conn:
            alert = conn.execute(_ALERT, ("device:SMK-3",)).fetchone()
            assert alert is not None
            for event in ("fired", "updated", "cleared"):
                conn.execute(
                    "INSERT INTO alert_events (alert_id, event) VALUES (%s, %s)", (alert[0], event)
                )
        assert [m.version for m in migrate(dsn, shipped("migrations"))][:1] == [7]
        with psycopg.connect(runtime_dsn(dsn), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO alert_events (alert_id, event) VALUES (%s, 'reopened')", (alert[0],)
            )
        status, out, err = _verify(dsn, monkeypatch, capsys)
        assert status == 0, err
        assert "alert_events: intact, 4 rows, head alert_events:4:" in out
    finally:
        drop_database(dsn)
