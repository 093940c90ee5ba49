"""End-to-end ingest benchmark: publisher at full speed -> Mosquitto -> sensord -> TimescaleDB.

Measured in one run, on one private broker, alternating per repetition:
  * bare paho-mqtt subscriber (manual ack, no processing): the ceiling the target refers to;
  * bare gmqtt subscriber (ack after the async handler, no processing): sensord's library;
  * sensord itself (validation, batching, COPY, commit, then PUBACK), as a real process.
"live": the consumer is connected while a QoS 1 publisher runs flat out; the figure is
messages / (publisher start -> last message stored, or counted for the bare subscribers).
"drain": N messages are queued in the consumer's offline session first; the figure is
messages / (first message received -> last stored).

    python -m bench.ingest --messages 100000 --runs 3

--tls: in every repetition sensord runs a second time, connected over TLS to a second listener
of the same broker (certificates made at start; publisher and bare subscribers stay on TCP).

Needs scripts/services up (TimescaleDB on 5433); starts its own mosquitto on --port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.mqtt_ceiling import run_once
from bench.mqtt_publishers import publish_detailed
from sensord.adapters.migrations import migrate
from sensord.paths import shipped
from simulators.harness.broker import ListenerTls, broker
from simulators.harness.daemon import Daemon, running
from simulators.harness.database import create_database, drop_database
from simulators.harness.metrics import scrape
from simulators.harness.processes import proc_cpu
from simulators.harness.tls import Pki

REPO = Path(__file__).resolve().parents[1]
DEVICES = 1000


@dataclass
class Run:
    consumer: str
    mode: str
    rate: float
    cpu_s: float
    rss_mib: float
    publisher_rate: float
    capacity_waits: float = float("nan")  # sensord only: messages that waited for buffer space
    read_pauses: float = float("nan")  # sensord only: times reading from the broker paused


def register_devices(dsn: str) -> None:
    """The device ids bench.mqtt_ceiling.reading() publishes for."""
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy("COPY devices (device_id, kind, street) FROM STDIN") as copy,
    ):
        for dev in range(DEVICES):
            copy.write_row((f"SMK-{dev:06d}", "smoke", f"jd{dev % 20 + 1:02d}"))


@contextlib.contextmanager
def daemon(
    dsn: str,
    mqtt_port: int,
    client_id: str,
    log: Path,
    overrides: Mapping[str, str] | None = None,
) -> Iterator[tuple[int, int]]:
    """sensord run as a child process; yields (pid, metrics port) once connected.

    ``overrides``: extra SENSORD_* variables (e.g. a batch age under test).
    """
    env = {
        "SENSORD_DATABASE__DSN": dsn,
        "SENSORD_MQTT__PORT": str(mqtt_port),
        "SENSORD_MQTT__CLIENT_ID": client_id,
        "SENSORD_INGEST__MAX_PAST_DAYS": "36500",  # the readings carry a fixed 2026-11-26 base
        "SENSORD_LOG__LEVEL": "WARNING",
        **(overrides or {}),
    }
    with running(Daemon(env, log, cwd=REPO)) as sensord:
        yield sensord.pid, sensord.metrics_port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_stored(port: int, n: int, timeout_s: float = 600) -> float:
    """Poll /metrics until n readings are stored; return time.monotonic() at that point."""
    deadline = time.monotonic() + timeout_s
    while True:
        if scrape(port).get("sensord_ingest_stored_readings_total", 0) >= n:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} readings not stored in {timeout_s}s")
        time.sleep(0.02)


def sensord_live(
    dsn: str, port: int, n: int, start: int, log: Path, env: Mapping[str, str] | None = None
) -> Run:
    with daemon(dsn, port, f"bench-sensord-{uuid.uuid4().hex[:6]}", log, env) as (pid, mport):
        cpu0 = proc_cpu(pid)
        pub = publish_detailed("127.0.0.1", port, n, devices=DEVICES, start=start)
        done = wait_stored(mport, n)
        return Run(consumer(env), "live", n / (done - pub.t0), proc_cpu(pid) - cpu0, rss_mib(pid),
                   pub.rate, *backpressure(mport))


def sensord_drain(
    dsn: str, port: int, n: int, start: int, log: Path, env: Mapping[str, str] | None = None
) -> Run:
    client_id = f"bench-sensord-{uuid.uuid4().hex[:6]}"
    with daemon(dsn, port, client_id, log, env):
        pass  # creates the persistent session
    pub = publish_detailed("127.0.0.1", port, n, devices=DEVICES, start=start)
    with daemon(dsn, port, client_id, log, env) as (pid, mport):
        cpu0 = proc_cpu(pid)
        wait_stored(mport, n)
        done_wall = time.time()
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT extract(epoch FROM min(received_at)) FROM readings "
                               "WHERE seq >= %s", (start // DEVICES,)).fetchone()
        first = float(row[0]) if row and row[0] is not None else done_wall
        return Run(consumer(env), "drain", n / (done_wall - first), proc_cpu(pid) - cpu0,
                   rss_mib(pid), pub.rate, *backpressure(mport))


def consumer(env: Mapping[str, str] | None) -> str:
    return "sensord tls" if env else "sensord"


def tls_env(pki: Pki, port: int) -> dict[str, str]:
    """sensord's settings for the benchmark broker's TLS listener."""
    return {"SENSORD_MQTT__PORT": str(port), "SENSORD_MQTT__TLS": "true",
            "SENSORD_MQTT__TLS_CA_FILE": str(pki.ca.cert)}  # fmt: skip


def backpressure(metrics_port: int) -> tuple[float, float]:
    """(capacity waits, read pauses) so far: how often the broker overran the buffer."""
    metrics = scrape(metrics_port)
    return (metrics.get("sensord_ingest_capacity_waits_total", 0.0),
            metrics.get("sensord_mqtt_read_pauses_total", 0.0))


def bare(lib: str, mode: str, port: int, n: int, broker_pid: int) -> Run:
    result = run_once(lib, mode, port, n, broker_pid=broker_pid, devices=DEVICES)
    return Run(f"bare {lib}", mode, result.rate, result.sub_cpu, float("nan"), result.pub_rate)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=18850)
    parser.add_argument("--modes", default="live,drain")
    parser.add_argument("--tls", action="store_true", help="also sensord over TLS (port + 1)")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    n = args.messages
    dsn = create_database()
    runs: list[Run] = []
    try:
        migrate(dsn, shipped("migrations"))
        register_devices(dsn)
        workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
        log = workdir / "sensord.log"
        pki = Pki.make(workdir / "pki") if args.tls else None
        tls = ListenerTls(pki.ca.cert, pki.server.cert, pki.server.key) if pki else None
        # user root: else mosquitto drops to user mosquitto, which cannot read the private keys
        as_root = {"user": "root"} if tls else {}
        with broker(args.port, workdir, tls_port=args.port + 1, tls=tls, **as_root) as proc:
            offset = 0
            for rep in range(args.runs):
                for mode in modes:
                    for lib in ("paho", "gmqtt"):
                        runs.append(bare(lib, mode, args.port, n, proc.pid))
                        print(f"run {rep + 1} {mode:5} bare {lib:6} {runs[-1].rate:9.0f} msg/s",
                              flush=True)
                    measure = sensord_live if mode == "live" else sensord_drain
                    for env in [None] + ([tls_env(pki, args.port + 1)] if pki else []):
                        runs.append(measure(dsn, args.port, n, offset, log, env))
                        offset += n
                        last = runs[-1]
                        print(f"run {rep + 1} {mode:5} {last.consumer:11} {last.rate:9.0f} msg/s "
                              f"(cpu {last.cpu_s:.1f}s, rss {last.rss_mib:.0f} MiB, "
                              f"{last.capacity_waits:.0f} capacity waits, "
                              f"{last.read_pauses:.0f} read pauses)", flush=True)
    finally:
        drop_database(dsn)
    report(runs, n, args)
    return 0


def report(runs: list[Run], n: int, args: argparse.Namespace) -> None:
    tls = " --tls" if args.tls else ""
    print(f"\n`python -m bench.ingest --messages {n} --runs {args.runs}{tls}` on "
          f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| mode | consumer | median msg/s | runs | CPU s / run | µs CPU / msg | peak RSS MiB "
          "| publisher msg/s |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for mode in dict.fromkeys(r.mode for r in runs):
        for consumer in dict.fromkeys(r.consumer for r in runs):
            rs = [r for r in runs if r.mode == mode and r.consumer == consumer]
            cpu = statistics.median(r.cpu_s for r in rs)
            print(f"| {mode} | {consumer} | {statistics.median(r.rate for r in rs):,.0f} | "
                  f"{' / '.join(f'{r.rate:,.0f}' for r in rs)} | {cpu:.2f} | "
                  f"{cpu / n * 1e6:.1f} | {statistics.median(r.rss_mib for r in rs):.0f} | "
                  f"{statistics.median(r.publisher_rate for r in rs):,.0f} |")
        ratios = []
        per_run = [r for r in runs if r.mode == mode]
        paho = [r.rate for r in per_run if r.consumer == "bare paho"]
        for ours_name in dict.fromkeys(r.consumer for r in per_run if r.consumer != "bare paho"
                                       and r.consumer.startswith("sensord")):
            ours = [r.rate for r in per_run if r.consumer == ours_name]
            ratios = [o / p for o, p in zip(ours, paho, strict=True)]
            print(f"\n{mode}: {ours_name} / bare paho, per run: "
                  f"{', '.join(f'{x:.0%}' for x in ratios)}; "
                  f"median {statistics.median(ratios):.0%}\n")


if __name__ == "__main__":
    sys.exit(main())
