"""The README demo: the demo district, the daemon, an hour of fleet traffic with incidents.

Steps: generate the demo district and import it (`sensord registry import`),
start `sensord run`, run the fleet simulator for one simulated hour in about
a second with a kitchen fire, an elevator entrapment, a blocked fire lane,
hostile payloads and replayed duplicates, then compare what the database holds
with the simulator's ground truth and print the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

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


def main(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the database matches the simulator's ground truth."""
    args.out.mkdir(parents=True, exist_ok=True)
    district = args.out / "district"
    truth = args.out / "truth.jsonl"
    log = args.out / "sensord.log"
    # A fresh database each run: the simulated hour ends now, and readings of an
    # earlier run would be newer than its beginning (the rule engine ignores late data).
    args.dsn = fresh_database(args.dsn, DEMO_DATABASE)
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
    daemon = start_daemon(args, log)
    try:
        since = datetime.now(UTC)
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
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        print(f"\nsensord stopped with exit code {code} (log: {log})")
    ok = (stored, dead) == (totals["readings_total"], totals["dead_letters_total"])
    print("ground truth: " + ("matched" if ok else "NOT matched"))
    return 0 if ok and code == 0 else 1


def fresh_database(dsn: str, name: str) -> str:
    """Drop and create database ``name`` on ``dsn``'s server; return its DSN."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


def _python(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", *argv], check=True, env=env)


def start_daemon(args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    """``sensord run`` in the background, logging to a file; returns it once it is ready."""
    env = dict(
        os.environ,
        SENSORD_LOG__FORMAT="text",
        SENSORD_METRICS__PORT=str(args.metrics_port),
        SENSORD_MQTT__PORT=str(args.mqtt_port),
        SENSORD_DATABASE__DSN=args.dsn,
    )
    with log.open("ab") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sensord", "run"], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"sensord exited with {daemon.returncode}; see {log}")
        if scrape(args.metrics_port).get("sensord_mqtt_connected") == 1.0:
            print(
                f"sensord running (pid {daemon.pid}), "
                f"metrics on http://127.0.0.1:{args.metrics_port}/metrics"
            )
            return daemon
        time.sleep(0.2)
    daemon.kill()
    raise SystemExit(f"sensord did not become ready; see {log}")


def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics by their full name (labels included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


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
    print("  (work orders and dispatch: issue 5, not built yet)")
    metrics = scrape(metrics_port)
    print("\nsensord metrics:")
    for name in (
        "sensord_ingest_received_messages_total",
        "sensord_ingest_stored_readings_total",
        "sensord_ingest_duplicate_readings_total",
        "sensord_ingest_in_flight_messages",
    ):
        print(f"  {name} {metrics.get(name, float('nan')):.0f}")
