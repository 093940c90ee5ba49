"""The README demo: the demo district, the daemon, an hour of fleet traffic with incidents.

Steps: generate the demo district and import it (`sensord registry import`),
start `sensord run`, run the fleet simulator for one simulated hour in about
a second with a kitchen fire, an elevator entrapment, a blocked fire lane,
hostile payloads and replayed duplicates, then compare what the database holds
with the simulator's ground truth and print the summary.

Then the closed loop: simulated responders (simulators/responders.py) answer
the work orders over MQTT, except the blocked fire lane's first owner, so that
order escalates; telemetry verifies and closes the orders; the demo prints the
orders and `sensord report sla`. The shipped SLAs run 60x faster in the demo
(one demo second is one minute), so an ignored order escalates within seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from sensord.paths import shipped
from simulators.harness.daemon import Daemon
from simulators.harness.database import fresh_database
from simulators.harness.metrics import scrape_or_empty
from simulators.responders import Responders, staff_by_org

DEFAULT_DSN = "postgresql://sensord:sensord@127.0.0.1:5433/sensord"
DEMO_DATABASE = "sensord_demo"
SCENARIOS = (
    "kitchen_fire",
    "elevator_entrapment",
    "fire_lane_blocked:for=15m",
    "malformed",
    "duplicates:count=3",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m simulators demo``."""
    parser.add_argument("--dsn", default=os.environ.get("SENSORD_DATABASE__DSN", DEFAULT_DSN))
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--metrics-port", type=int, default=9464)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument(
        "--database", default=DEMO_DATABASE, help="created afresh on --dsn's server each run"
    )
    parser.add_argument(
        "--sla-speedup", type=float, default=60.0, help="divide the shipped SLAs by this"
    )


def main(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the database matches the simulator's ground truth."""
    args.out.mkdir(parents=True, exist_ok=True)
    district = args.out / "district"
    truth = args.out / "truth.jsonl"
    log = args.out / "sensord.log"
    # A fresh database each run: the simulated hour ends now, and readings of an
    # earlier run would be newer than its beginning (the rule engine ignores late data).
    args.dsn = fresh_database(args.dsn, args.database)
    env = dict(os.environ, SENSORD_DATABASE__DSN=args.dsn)
    _python("sensord", "migrate", env=env)
    _python(
        "simulators",
        "district",
        "--seed",
        str(args.seed),
        "--scale",
        "demo",
        "--out",
        str(district),
    )
    _python("sensord", "registry", "import", str(district), env=env)
    rules = demo_rules(args.out / "rules", args.sla_speedup)
    stack = contextlib.ExitStack()
    daemon = start_daemon(args, log, rules)
    responders = Responders(args.mqtt_port, staff_by_org(district), ignore={IGNORED}, delay_s=0.5)
    try:
        since = datetime.now(UTC)
        stack.enter_context(responders)  # listening before the first order is dispatched
        fleet = [
            "fleet",
            "--dsn",
            args.dsn,
            "--port",
            str(args.mqtt_port),
            "--seed",
            str(args.seed),
            "--speedup",
            "3600",
            "--duration",
            "1h",
            "--truth",
            str(truth),
            "--quiet",
        ]
        for scenario in SCENARIOS:
            fleet += ["--scenario", scenario]
        _python("simulators", *fleet)
        records = [json.loads(line) for line in truth.read_text().splitlines()]
        totals = next(r for r in records if r["record"] == "totals")
        stored, dead = wait_for(args.dsn, since, totals)
        summary(args.dsn, since, records, totals, stored, dead, args.metrics_port)
        closed = closed_loop(args.dsn, records, env)
    finally:
        stack.close()
        code = daemon.terminate(30)
        print(f"\nsensord stopped with exit code {code} (log: {log})")
    ok = (stored, dead) == (totals["readings_total"], totals["dead_letters_total"])
    print("ground truth: " + ("matched" if ok else "NOT matched"))
    print("closed loop: " + ("every incident's order closed" if closed else "NOT closed"))
    return 0 if ok and closed and code == 0 else 1


IGNORED = "fire_lane_blocked"  # its first owner never answers: the order escalates
SENSOR_ORDERS = "category <> 'inspection_due'"  # inspection orders come from registry dates


def demo_rules(directory: Path, speedup: float) -> Path:
    """The shipped rules; the dispatch policy's SLAs and holds ``speedup`` times shorter."""
    directory.mkdir(parents=True, exist_ok=True)
    source = shipped("rules")
    for path in source.glob("*.toml"):
        text = path.read_text(encoding="utf-8")
        if path.name == "routing.toml":
            text = re.sub(
                r"^((?:ack|arrive|resolve|verify_hold)_s = )(\d+)",
                lambda m: f"{m[1]}{max(1, round(int(m[2]) / speedup))}",
                text,
                flags=re.M,
            )
        (directory / path.name).write_text(text, encoding="utf-8")
    return directory


def closed_loop(dsn: str, records: list[dict[str, Any]], env: dict[str, str]) -> bool:
    """Wait (90 s at most) until every incident's order is closed; print orders and the report."""
    devices = {
        r["device_id"]
        for r in records
        if r["record"] == "incident" and r.get("expected", {}).get("alert")
    }
    deadline = time.monotonic() + 90
    with psycopg.connect(dsn, autocommit=True) as db:
        while time.monotonic() < deadline:
            rows = db.execute(
                f"SELECT device_id, state FROM work_orders WHERE {SENSOR_ORDERS}"
            ).fetchall()
            if {d for d, state in rows if state == "closed"} >= devices:
                break
            time.sleep(0.5)
        orders = db.execute(
            "SELECT o.id, o.category, o.severity, o.state, o.owner_role, o.owner_org,"
            " o.escalation_level, o.device_id, (SELECT string_agg(e.event, ' > ' ORDER BY e.id)"
            " FROM work_order_events e WHERE e.order_id = o.id)"
            f" FROM work_orders o WHERE {SENSOR_ORDERS} ORDER BY o.id"
        ).fetchall()
        other = db.execute(
            f"SELECT category, state, count(*) FROM work_orders WHERE NOT ({SENSOR_ORDERS})"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    print("\nwork orders of the incidents (owner now; level = escalations):")
    for oid, category, severity, state, role, org, level, device, trail in orders:
        print(
            f"  #{oid} {category:<20} {severity:<8} {state:<9} {role}:{org} level {level} {device}"
        )
        print(f"      {trail}")
    print("  other orders: " + ", ".join(f"{c} {s} {n}" for c, s, n in other))
    today = datetime.now(UTC).date()
    print("\nSLA report (sensord report sla --by org):")
    subprocess.run(
        [sys.executable, "-m", "sensord", "report", "sla", "--from", str(today),
         "--to", str(today + timedelta(days=1)), "--by", "org"],
        env=env, check=False,
    )  # fmt: skip
    return {device for *_, state, _, _, _, device, _ in orders if state == "closed"} >= devices


def _python(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", *argv], check=True, env=env)


def start_daemon(args: argparse.Namespace, log: Path, rules: Path) -> Daemon:
    """``sensord run`` in the background, logging to a file; returns it once it is ready."""
    env = {
        "SENSORD_LOG__FORMAT": "text",
        "SENSORD_MQTT__PORT": str(args.mqtt_port),
        "SENSORD_DATABASE__DSN": args.dsn,
        "SENSORD_RULES__DIRECTORY": str(rules),
        "SENSORD_RULES__CLOCK": "device",  # the fleet runs --speedup times faster than the wall
    }
    daemon = Daemon(env, log, metrics_port=args.metrics_port, inherit_sensord_env=True)
    try:
        daemon.start(timeout_s=30, step_s=0.2)
    except RuntimeError:
        raise SystemExit(
            f"sensord exited with {daemon.process and daemon.process.returncode}; see {log}"
        ) from None
    except TimeoutError:
        daemon.kill()
        raise SystemExit(f"sensord did not become ready; see {log}") from None
    print(
        f"sensord running (pid {daemon.pid}), "
        f"metrics on http://127.0.0.1:{args.metrics_port}/metrics"
    )
    return daemon


def counts(db: psycopg.Connection, since: datetime) -> tuple[int, int]:
    """(readings, dead letters) received since the run started."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM readings WHERE received_at >= %s),"
        " (SELECT count(*) FROM dead_letters WHERE received_at >= %s)",
        (since, since),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_for(dsn: str, since: datetime, totals: dict[str, Any]) -> tuple[int, int]:
    """Wait (30 s at most) until the database holds what the truth says was published."""
    expected = (totals["readings_total"], totals["dead_letters_total"])
    deadline = time.monotonic() + 30
    with psycopg.connect(dsn, autocommit=True) as db:
        while (got := counts(db, since)) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
    return got


def summary(
    dsn: str,
    since: datetime,
    records: list[dict[str, Any]],
    totals: dict[str, Any],
    stored: int,
    dead: int,
    metrics_port: int,
) -> None:
    """Print what was published, stored and dead-lettered, and the incidents injected."""
    print(
        f"\npublished {totals['published_total']} messages "
        f"({totals['duplicates_published']} exact replays); "
        f"stored {stored}/{totals['readings_total']} readings, "
        f"{dead}/{totals['dead_letters_total']} dead letters"
    )
    with psycopg.connect(dsn, autocommit=True) as db:
        print("\nreadings of this run by kind:")
        for kind, n in db.execute(
            "SELECT kind, count(*) FROM readings WHERE received_at >= %s "
            "GROUP BY kind ORDER BY kind",
            (since,),
        ):
            print(f"  {kind:<10} {n:>6}   (truth {totals['readings'].get(kind, 0)})")
        print("\ndead letters of this run by reason:")
        for reason, n in db.execute(
            "SELECT reason, count(*) FROM dead_letters "
            "WHERE received_at >= %s GROUP BY reason ORDER BY reason",
            (since,),
        ):
            print(f"  {reason:<22} {n:>4}   (truth {totals['dead_letters'].get(reason, 0)})")
    print("\nincidents injected, and the alerts sensord raised for them:")
    with psycopg.connect(dsn, autocommit=True) as db:
        for incident in (r for r in records if r["record"] == "incident"):
            expected = incident.get("expected", {})
            if incident["scenario"] in ("malformed", "duplicates"):
                continue
            raised = db.execute(
                "SELECT id, category, severity, state FROM alerts WHERE device_id = %s"
                " AND category <> 'inspection_due' ORDER BY id",
                (incident["device_id"],),
            ).fetchall()
            got = ", ".join(f"#{i} {c} {sev} ({st})" for i, c, sev, st in raised) or "none"
            print(
                f"  {incident['scenario']:<20} {incident['device_id']:<11} "
                f"{incident.get('place_type') or '-':<15} expected {expected.get('alert')}: {got}"
            )
        other = db.execute(
            "SELECT category, count(*) FROM alerts GROUP BY category ORDER BY category"
        ).fetchall()
    print("  all alerts: " + ", ".join(f"{c} {n}" for c, n in other))
    metrics = scrape_or_empty(metrics_port)
    print("\nsensord metrics:")
    for name in (
        "sensord_ingest_received_messages_total",
        "sensord_ingest_stored_readings_total",
        "sensord_ingest_duplicate_readings_total",
        "sensord_ingest_in_flight_messages",
    ):
        print(f"  {name} {metrics.get(name, float('nan')):.0f}")
