"""``sensord orders`` and ``sensord report sla`` as subprocesses on a real database.

Orders are created by the real store (``order_store.create_order``) on the
demo district's registry; the command line then drives them through the
closed loop, and the report is checked against orders whose events were
applied at chosen times through ``order_actions.act``, the command line's path.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sensord.adapters.order_queries import load_order
from sensord.adapters.order_store import (
    SYSTEM,
    Changes,
    NewOrder,
    Outlets,
    create_order,
    transition,
)
from sensord.core.orders.machine import Event
from sensord.core.orders.policy import Deadlines
from sensord.core.orders.routing import Party
from sensord.services.order_actions import act

pytestmark = pytest.mark.integration

OUTLETS = Outlets("sensord/v1")
OWNER = Party("property_company", "ORG-PM1")
NOTIFIED = (Party("ops_centre", "ORG-OPS"),)
SLA = Deadlines(ack_s=300, arrive_s=1200, resolve_s=3600, verify_hold_s=0)
PUBLIC_KEYS = {
    "id", "state", "category", "severity", "owner_org", "owner_role", "alert_id",
    "device_id", "deadline", "escalation_level",
}  # fmt: skip
STAFF = "S-00033"  # property_staff of ORG-PM1 in the demo district
COLLEAGUE = "S-00034"  # property_staff too
DUTY_OFFICER = "S-00001"  # ORG-OPS


def sensord(dsn: str, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m sensord ARGV`` against ``dsn`` (no config file: defaults and the DSN)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORD_")}
    env["SENSORD_DATABASE__DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "sensord", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def new_order(dsn: str, device_id: str, at: datetime, deadlines: Deadlines = SLA) -> int:
    """An alert of the device and its work order, created (and dispatched) at ``at``."""
    async with (
        await psycopg.AsyncConnection.connect(dsn) as conn,
        conn.transaction(),
        conn.cursor() as cur,
    ):
        await cur.execute(
            "SELECT d.address_id, c.area_id, a.label FROM devices d"
            " JOIN addresses a USING (address_id) JOIN compounds c USING (compound_id)"
            " WHERE d.device_id = %s",
            (device_id,),
        )
        place = await cur.fetchone()
        assert place is not None
        address_id, area_id, label = place
        await cur.execute(
            "INSERT INTO alerts (rule, category, severity, safety, subject, device_id,"
            " address_id, first_seen, last_seen) VALUES ('smoke_alarm', 'fire', 'major', true,"
            " %s, %s, %s, %s, %s) RETURNING id",
            (f"device:{device_id}", device_id, address_id, at, at),
        )
        alert = await cur.fetchone()
        assert alert is not None
        new = NewOrder(
            alert_id=alert[0],
            alert_episode=1,
            rule="smoke_alarm",
            subject=f"device:{device_id}",
            category="fire",
            severity="major",
            street_id="jd01",
            device_id=device_id,
            address_id=address_id,
            area_id=area_id,
            place={"label": label, "place_type": "public_kitchen"},
            owner=OWNER,
            notified=NOTIFIED,
            unrouted=False,
            deadlines=deadlines,
        )
        order = await create_order(cur, new, at, OUTLETS, Changes())
        return order.id


# --- orders ---------------------------------------------------------------------------


Orders = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def dispatched(demo_district: tuple[str, Path], tmp_path: Path) -> tuple[int, Orders]:
    """A new order, dispatched to ORG-PM1 now; and ``sensord orders ...`` on its database."""
    dsn, _ = demo_district
    order_id = asyncio.run(new_order(dsn, "SMK-000001", datetime.now(UTC)))

    def orders(*argv: str) -> subprocess.CompletedProcess[str]:
        return sensord(dsn, tmp_path, "orders", *argv)

    return order_id, orders


def test_list_and_refusals(dispatched: tuple[int, Orders]) -> None:
    order_id, orders = dispatched
    listed = orders("list", "--json")
    assert listed.returncode == 0, listed.stderr
    [shown] = json.loads(listed.stdout)
    assert set(shown) >= PUBLIC_KEYS
    assert (shown["id"], shown["state"], shown["owner_org"]) == (order_id, "dispatched", "ORG-PM1")
    assert shown["deadline"] is not None and shown["escalation_level"] == 0
    header, row = orders("list").stdout.splitlines()
    assert header.split() == [
        "ID", "STATE", "CATEGORY", "SEVERITY", "OWNER", "DEADLINE", "LEVEL", "DEVICE",
    ]  # fmt: skip
    assert row.split()[:5] == [str(order_id), "dispatched", "fire", "major", "ORG-PM1"]
    assert json.loads(orders("list", "--org", "ORG-X", "--json").stdout) == []
    assert json.loads(orders("list", "--category", "fire", "--json").stdout) != []

    # refused: a skipped step names the state and what it allows; a cancel needs a reason
    skipped = orders("arrive", str(order_id), "--by", STAFF)
    assert skipped.returncode == 1
    assert "is dispatched" in skipped.stderr
    assert "allowed: ack, cancel, escalate" in skipped.stderr
    unexplained = orders("cancel", str(order_id), "--by", STAFF)
    assert unexplained.returncode != 0
    assert "a reason is required" in unexplained.stderr
    blank = orders("cancel", str(order_id), "--by", STAFF, "--note", "  ")
    assert blank.returncode != 0 and "a reason is required" in blank.stderr
    missing = orders("ack", "999999", "--by", STAFF)
    assert missing.returncode == 1 and "order 999999 does not exist" in missing.stderr
    assert json.loads(orders("show", str(order_id), "--json").stdout)["state"] == "dispatched"
    assert orders("show", "999999").returncode == 1


def test_the_closed_loop(demo_district: tuple[str, Path], dispatched: tuple[int, Orders]) -> None:
    dsn, _ = demo_district
    order_id, orders = dispatched
    acked = orders("ack", str(order_id), "--by", STAFF)
    assert acked.returncode == 0, acked.stderr
    assert f"order {order_id} acknowledged" in acked.stdout
    assert "as property_staff" in acked.stdout  # the role from the registry
    arrived = orders("arrive", str(order_id), "--by", STAFF, "--json")
    assert arrived.returncode == 0, arrived.stderr
    on_site = json.loads(arrived.stdout)
    assert set(on_site) >= PUBLIC_KEYS and on_site["state"] == "on_site"
    resolved = orders("resolve", str(order_id), "--by", STAFF, "--note", "pan fire put out")
    assert resolved.returncode == 0 and f"order {order_id} resolved" in resolved.stdout

    same_role = orders("verify", str(order_id), "--by", COLLEAGUE)
    assert same_role.returncode == 1
    assert "is resolved" in same_role.stderr and "cannot verify" in same_role.stderr
    verified = orders("verify", str(order_id), "--by", DUTY_OFFICER, "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["state"] == "closed"
    assert "no open orders" in orders("list").stdout
    closed = json.loads(orders("list", "--state", "closed", "--json").stdout)
    assert [o["id"] for o in closed] == [order_id]

    # someone not in the registry acts as "operator"; a reopen dispatches again
    reopened = orders("reopen", str(order_id), "--by", "desk-7", "--note", "smoke again")
    assert reopened.returncode == 0 and f"order {order_id} dispatched" in reopened.stdout

    detail = orders("show", str(order_id), "--json")
    assert detail.returncode == 0, detail.stderr
    shown = json.loads(detail.stdout)
    assert set(shown) >= PUBLIC_KEYS and shown["reopen_count"] == 1
    trail = [(e["event"], e["actor"], e["role"], e["to_state"]) for e in shown["events"]]
    assert trail == [
        ("create", SYSTEM, SYSTEM, "new"),
        ("dispatch", SYSTEM, SYSTEM, "dispatched"),
        ("ack", STAFF, "property_staff", "acknowledged"),
        ("arrive", STAFF, "property_staff", "on_site"),
        ("resolve", STAFF, "property_staff", "resolved"),
        ("verify", DUTY_OFFICER, "duty_officer", "verified"),
        ("close", SYSTEM, SYSTEM, "closed"),
        ("reopen", "desk-7", "operator", "reopened"),
        ("dispatch", SYSTEM, SYSTEM, "dispatched"),
    ]
    assert shown["events"][4]["note"] == "pan fire put out"
    # every transition queued notifications, which the relay has not delivered (no daemon)
    keys = {m["id"]: m for m in shown["outbox"]}
    assert keys
    assert all(m["sent_at"] is None and m["attempts"] == 0 for m in keys.values())
    with psycopg.connect(dsn) as conn:
        queued = conn.execute(
            "SELECT e.event, count(o.id) FROM work_order_events e"
            " LEFT JOIN outbox o"
            " ON o.idempotency_key LIKE 'o' || e.order_id || '-e' || e.id || '-%%'"
            " WHERE e.order_id = %s AND e.event <> 'create' GROUP BY e.id, e.event ORDER BY e.id",
            (order_id,),
        ).fetchall()
    assert len(queued) == 8 and all(count == 2 for _, count in queued), queued  # owner + ops

    text = orders("show", str(order_id))
    assert text.returncode == 0
    assert f"order {order_id}: dispatched" in text.stdout
    assert "audit trail:" in text.stdout and "pan fire put out" in text.stdout
    assert "resolved → verified" in text.stdout and "pending" in text.stdout


# --- report ---------------------------------------------------------------------------


Step = tuple[Event, float, str, str, str]  # event, seconds after dispatch, by, role, note


def cycle(by: str, ack: float, arrive: float, resolve: float) -> list[Step]:
    """Ack, arrival and resolution by a member of property staff, seconds after dispatch."""
    events = (Event.ACK, Event.ARRIVE, Event.RESOLVE)
    return [
        (e, s, by, "property_staff", "")
        for e, s in zip(events, (ack, arrive, resolve), strict=True)
    ]


async def scenario(dsn: str, day: datetime) -> dict[str, int]:
    """Orders created on ``day`` (and one the day before) with events at chosen seconds."""
    start = day + timedelta(hours=8)
    ids: dict[str, int] = {}
    plan: dict[str, list[Step]] = {
        "fast": cycle(STAFF, 60, 600, 1800),
        "reopened": [  # first cycle in time; the second cycle's times do not count
            *cycle(STAFF, 120, 900, 2400),
            (Event.VERIFY, 2500, DUTY_OFFICER, "duty_officer", ""),
            (Event.REOPEN, 5000, DUTY_OFFICER, "duty_officer", "again"),
            *cycle(STAFF, 5010, 5020, 5030),
        ],
        "late_ack": cycle(COLLEAGUE, 400, 1000, 3000),
        # escalated at 301 s (by the dispatcher, below), then in time
        "escalated": cycle(COLLEAGUE, 320, 700, 2000),
        "cancelled": [
            (Event.ACK, 30, STAFF, "property_staff", ""),
            (Event.CANCEL, 40, STAFF, "property_staff", "false alarm: cooking steam"),
        ],
        "waiting": [],  # no ack yet, with a long SLA: pending
    }
    for n, (name, steps) in enumerate(plan.items()):
        at = start + timedelta(hours=n)
        long = Deadlines(10**8, 2 * 10**8, 3 * 10**8, 0)
        ids[name] = await new_order(dsn, f"SMK-00000{n + 1}", at, long if not steps else SLA)
        async with (
            await psycopg.AsyncConnection.connect(dsn) as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            if name == "escalated":
                order = await load_order(cur, ids[name])
                assert order is not None
                await transition(
                    cur, order, Event.ESCALATE, at=at + timedelta(seconds=301), actor=SYSTEM,
                    role=SYSTEM, outlets=OUTLETS, changes=Changes(),
                )  # fmt: skip
            for event, seconds, by, role, note in steps:
                await act(
                    cur, ids[name], event, by=by, role=role, note=note,
                    now=at + timedelta(seconds=seconds), outlets=OUTLETS, changes=Changes(),
                )  # fmt: skip
    ids["day_before"] = await new_order(dsn, "SMK-000009", day - timedelta(minutes=1))
    return ids


def test_sla_report_in_csv_and_markdown(demo_district: tuple[str, Path], tmp_path: Path) -> None:
    dsn, _ = demo_district
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)
    asyncio.run(scenario(dsn, day))
    window = ["--from", f"{day.date()}", "--to", f"{(day + timedelta(days=1)).date()}"]

    out = tmp_path / "by-worker.csv"
    done = sensord(
        dsn, tmp_path, "report", "sla", *window, "--by", "worker", "--format", "csv",
        "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    rows = {row["worker"]: row for row in csv.DictReader(io.StringIO(out.read_text()))}
    assert list(rows) == [STAFF, COLLEAGUE, "-", "total"]
    expected: dict[str, dict[str, Any]] = {
        STAFF: {
            "handled": "2", "cancelled": "1", "ack_median_s": "90", "ack_p90_s": "114",
            "arrive_median_s": "750", "arrive_p90_s": "870", "resolve_median_s": "2100",
            "resolve_p90_s": "2340", "compliant": "2", "non_compliant": "0", "pending": "0",
            "compliance_pct": "100", "escalations": "0", "reopen_rate_pct": "50",
        },
        COLLEAGUE: {
            "handled": "2", "cancelled": "0", "ack_median_s": "360", "ack_p90_s": "392",
            "arrive_median_s": "850", "arrive_p90_s": "970", "resolve_median_s": "2500",
            "resolve_p90_s": "2900", "compliant": "0", "non_compliant": "2", "pending": "0",
            "compliance_pct": "0", "escalations": "1", "reopen_rate_pct": "0",
        },
        "-": {
            "handled": "1", "cancelled": "0", "ack_median_s": "", "compliant": "0",
            "pending": "1", "compliance_pct": "", "reopen_rate_pct": "0",
        },
        "total": {
            "handled": "5", "cancelled": "1", "ack_median_s": "220", "ack_p90_s": "376",
            "compliant": "2", "non_compliant": "2", "pending": "1", "compliance_pct": "50",
            "escalations": "1", "reopen_rate_pct": "20",
        },
    }  # fmt: skip
    for worker, figures in expected.items():
        assert {k: rows[worker][k] for k in figures} == figures, worker

    markdown = sensord(dsn, tmp_path, "report", "sla", *window, "--by", "worker")
    assert markdown.returncode == 0, markdown.stderr
    lines = markdown.stdout.splitlines()
    assert lines[0].startswith("## SLA by worker: orders created")
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| worker | handled | cancelled | ack_median_s | ack_p90_s |")
    cells = {
        line.split("|")[1].strip().strip("*"): [c.strip().strip("*") for c in line.split("|")[2:-1]]
        for line in table[2:]
    }
    assert cells[STAFF][:4] == ["2", "1", "90", "114"]
    assert cells["-"][2] == "-"  # no times: a dash in Markdown, empty in CSV
    assert cells["total"][-3:] == ["50", "1", "20"]

    by_org = sensord(dsn, tmp_path, "report", "sla", *window, "--by", "org", "--format", "csv")
    orgs = [row["org"] for row in csv.DictReader(io.StringIO(by_org.stdout))]
    assert orgs == ["ORG-PM1", "total"]
    by_area = sensord(dsn, tmp_path, "report", "sla", *window, "--by", "area", "--format", "csv")
    areas = [(row["area"], row["handled"]) for row in csv.DictReader(io.StringIO(by_area.stdout))]
    assert [(a.split()[0], n) for a, n in areas] == [
        ("jd01-ra01", "4"), ("jd01-ra02", "1"), ("total", "5"),
    ], areas  # fmt: skip
    assert all(len(a.split()) == 2 for a, _ in areas[:-1])  # the id and the area's name

    backwards = sensord(dsn, tmp_path, "report", "sla", "--from", "2026-02-02", "--to",
                        "2026-02-01", "--by", "org")  # fmt: skip
    assert backwards.returncode == 2 and "--to must be after --from" in backwards.stderr
    assert sensord(dsn, tmp_path, "report", "sla", "--from", "2026-02-31", "--to",
                   "2026-03-01", "--by", "org").returncode == 2  # fmt: skip
