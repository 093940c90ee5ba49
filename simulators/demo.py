"""The README demo: import the demo district, run the daemon, publish a burst, print what landed."""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from simulators.protocol import SimDevice, encode, reading, topic
from simulators.publisher import Publisher

DEFAULT_DSN = "postgresql://sensord:sensord@127.0.0.1:5433/sensord"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m simulators demo``."""
    parser.add_argument("--dsn", default=os.environ.get("SENSORD_DATABASE__DSN", DEFAULT_DSN))
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--readings", type=int, default=25, help="readings per device")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))


def main(args: argparse.Namespace) -> int:
    """Run the demo; 0 when everything published was stored or dead-lettered."""
    rng = random.Random(args.seed)
    args.log = args.out / "sensord.log"
    import_district(args)
    with psycopg.connect(args.dsn, autocommit=True) as db:
        fleet = [
            SimDevice(*row)
            for row in db.execute("SELECT device_id, kind, street FROM devices ORDER BY device_id")
        ]
        print(f"{len(fleet)} devices in the registry")
        before = totals(db)
        daemon, metrics_port = start_daemon(args)
        try:
            good = burst(fleet, args.readings, rng)
            bad = malformed(fleet, rng)
            print(
                f"publishing {len(good)} readings and {len(bad)} malformed messages "
                f"to 127.0.0.1:{args.mqtt_port} ..."
            )
            started = time.monotonic()
            since = datetime.now(UTC)
            with Publisher(port=args.mqtt_port) as publisher:
                publisher.publish(good + bad)
            expected = before[0] + before[1] + len(good) + len(bad)
            deadline = time.monotonic() + 60
            while sum(totals(db)) < expected and time.monotonic() < deadline:
                time.sleep(0.1)
            elapsed = time.monotonic() - started
            summary(db, before, since, (len(good), len(bad)), elapsed, metrics_port)
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
            print(f"\nsensord stopped with exit code {code} (log: {args.log})")
        stored, dead = totals(db)
        return 0 if (stored - before[0], dead - before[1]) == (len(good), len(bad)) else 1


def import_district(args: argparse.Namespace) -> None:
    """Generate the demo district and load it with `sensord registry import` (a no-op re-run)."""
    district = args.out / "district"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "simulators",
            "district",
            "--seed",
            str(args.seed),
            "--scale",
            "demo",
            "--out",
            str(district),
        ],
        check=True,
    )
    env = dict(os.environ, SENSORD_DATABASE__DSN=args.dsn)
    subprocess.run(
        [sys.executable, "-m", "sensord", "registry", "import", str(district)], check=True, env=env
    )


def burst(fleet: list[SimDevice], per_device: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """Normal readings and heartbeats, seq numbers continuing from the wall clock."""
    now = datetime.now(UTC)
    base_seq = int(now.timestamp())  # a re-run publishes new seq numbers, not duplicates
    messages = []
    for n in range(per_device):
        ts = now - timedelta(seconds=per_device - n)
        for device in fleet:
            kind = "heartbeat" if n % 5 == 4 else None
            messages.append(reading(device, base_seq + n, ts, rng, kind=kind))
    return messages


def malformed(fleet: list[SimDevice], rng: random.Random) -> list[tuple[str, bytes]]:
    """One message per dead-letter reason a real fleet produces."""
    smoke = next(device for device in fleet if device.kind == "smoke")
    other = next(device for device in fleet if device.kind != "smoke")
    ts = datetime.now(UTC).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return [
        (topic(smoke), b'{"ts": "2026-11-26T14:00:00+08:00", "seq": 1, "smoke": tru'),
        (topic(smoke), encode({"ts": ts, "seq": 1, "smoke": "yes"})),
        (
            topic(SimDevice("SMK-UNREGISTERED", "smoke", smoke.street)),
            encode({"ts": ts, "seq": 1, "smoke": False}),
        ),
        (topic(other, "smoke"), encode({"ts": ts, "seq": 1, "smoke": False})),
        (topic(smoke), encode({"ts": future, "seq": 2, "smoke": False})),
        (f"sensord/v1/{smoke.street}/gas/GAS-1", encode({"ts": ts, "seq": 1})),
        (topic(smoke), b"\x00" * 20_000),
    ]


def start_daemon(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int]:
    """``sensord run`` in the background, logging to a file; returns it once it is ready."""
    args.log.parent.mkdir(parents=True, exist_ok=True)
    port = 9464
    env = dict(
        os.environ,
        SENSORD_LOG__FORMAT="text",
        SENSORD_METRICS__PORT=str(port),
        SENSORD_MQTT__PORT=str(args.mqtt_port),
        SENSORD_DATABASE__DSN=args.dsn,
    )
    with args.log.open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sensord", "run"], env=env, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"sensord exited with {daemon.returncode}; see {args.log}")
        if scrape(port).get("sensord_mqtt_connected") == 1.0:
            print(f"sensord running (pid {daemon.pid}), metrics on http://127.0.0.1:{port}/metrics")
            return daemon, port
        time.sleep(0.2)
    daemon.kill()
    raise SystemExit(f"sensord did not become ready; see {args.log}")


def scrape(port: int) -> dict[str, float]:
    """The unlabelled samples of /metrics (enough for the summary)."""
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


def totals(db: psycopg.Connection) -> tuple[int, int]:
    """(readings, dead letters) in the database."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM dead_letters)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def summary(
    db: psycopg.Connection,
    before: tuple[int, int],
    since: datetime,
    published: tuple[int, int],
    elapsed: float,
    metrics_port: int,
) -> None:
    """Print what was stored and dead-lettered by this run."""
    stored, dead = totals(db)
    good, bad = published
    print(
        f"\nstored {stored - before[0]}/{good} readings and {dead - before[1]}/{bad} dead letters "
        f"in {elapsed:.2f} s"
    )
    print("\nreadings of this run by kind:")
    for kind, n, latest in db.execute(
        "SELECT kind, count(*), max(ts) FROM readings "
        "WHERE received_at >= %s GROUP BY kind ORDER BY kind",
        (since,),
    ):
        print(f"  {kind:<10} {n:>6}   latest device ts {latest:%Y-%m-%d %H:%M:%S%z}")
    print("\ndead letters of this run:")
    for reason, detail, size in db.execute(
        "SELECT reason, detail, octet_length(payload) FROM dead_letters "
        "WHERE received_at >= %s ORDER BY id",
        (since,),
    ):
        print(f"  {reason:<22} {size:>6} bytes  {detail[:70]}")
    metrics = scrape(metrics_port)
    print("\nsensord metrics:")
    for name in (
        "sensord_ingest_received_messages_total",
        "sensord_ingest_stored_readings_total",
        "sensord_ingest_duplicate_readings_total",
        "sensord_ingest_in_flight_messages",
    ):
        print(f"  {name} {metrics.get(name, float('nan')):.0f}")
