"""Work orders (issue 5): alarm → owner notified, escalation lateness, dispatcher and outbox
throughput, against ``sensord run`` as a real process.

Every run uses one private Mosquitto (simulators.harness.broker.Broker: the shipped
``deploy/mosquitto/sensord.conf``) and three fresh databases, each migrated and holding the
demo district (``simulators district --seed 1 --scale demo``, imported with
``sensord registry import``):

1. **latency** (shipped policy). A QoS 1 paho subscriber on ``sensord/v1/+/dispatch/#``
   takes the wall time each notification arrives. For every smoke detector (``smoke: true``,
   obscuration 20) and every elevator (``trapped: true``) of the registry, one at a time with
   a random gap, one alarm reading with the current time is published (QoS 1); latency =
   first ``order.dispatch`` for that device's incident with ``recipient.as == "owner"``
   arrived − just before the PUBLISH. Stages from the database: ``alerts.created_at`` (the
   ingest batch's transaction began), ``work_orders.created_at`` (the dispatcher's step
   began), the owner's ``outbox.sent_at`` (the relay had the broker's PUBACK). Measured idle
   and, on a second database, with ``--rate`` msg/s of normal smoke readings from
   bench.alert_latency's paced background publisher (its 1,000 background detectors are
   registered first; the 37 whose names collide with the demo's detectors in other streets
   are dead-lettered as street mismatches, ~3.7 % of the load).
2. **escalation** (third database; rules/ copied with one catch-all SLA ``ack_s = 2``, as
   tests/integration/test_orders.py ``policy_dir`` writes it; nobody acknowledges): the same
   alarms, then every order climbs the chain every 2 s; ``late_s`` of every ``escalate``
   event in ``work_order_events``; ``sensord_order_deadlines_overdue`` scraped (audit every
   second).
3. **throughput** (on the latency database): the daemon stopped, ``--orders`` firing alerts
   inserted directly (rule ``smoke_alarm``, subjects ``bench:<n>``, the demo's smoke
   detectors in turn, so routing resolves), the daemon started again; orders/s = orders ÷
   (first order's ``created_at`` → all orders visible, polled every 20 ms); notifications/s
   = their outbox rows ÷ (first order's ``created_at`` → last ``sent_at``).

    .venv/bin/python -m bench.dispatch --runs 3 [--orders 2000] [--rate 5000] [--json]

Needs scripts/services up (TimescaleDB on 5433); never touches the machine's broker on 1883.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from bench.alert_latency import BackgroundLoad, bg_device, machine_jiffies, ms, pct
from bench.ingest import daemon
from sensord.adapters.migrations import migrate
from sensord.paths import shipped
from simulators.district import generate, write
from simulators.harness.broker import Broker
from simulators.harness.database import create_database, drop_database
from simulators.harness.listener import Listener
from simulators.harness.metrics import scrape
from simulators.harness.processes import proc_cpu, wait_until
from simulators.protocol import SimDevice, reading
from simulators.publisher import Publisher

REPO = Path(__file__).resolve().parents[1]

DISPATCH = "sensord/v1/+/dispatch/#"
ALARM_SEQ = 10**9  # far above any background seq: never taken for a redelivery
ALARMS: dict[
    str, tuple[dict[str, Any], str]
] = {  # kind -> (reading overrides, the order's category)
    "smoke": ({"smoke": True, "obscuration": 20.0}, "fire"),
    "elevator": ({"state": "fault", "trapped": True, "door": "closed"}, "elevator_entrapment"),
}
STAGES = ("published", "alert_txn", "order_created", "outbox_sent", "arrived")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# databases, policy, notifications
# --------------------------------------------------------------------------------------------


def fresh_database(district: Path, background_devices: bool = False) -> str:
    """A new database, migrated, the demo district imported by the real CLI."""
    dsn = create_database()
    migrate(dsn, shipped("migrations"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORD_")}
    env["SENSORD_DATABASE__DSN"] = dsn
    subprocess.run(
        [sys.executable, "-m", "sensord", "registry", "import", str(district)],
        cwd=REPO, env=env, check=True, capture_output=True,
    )  # fmt: skip
    if background_devices:  # bench.alert_latency's background detectors (no place)
        with psycopg.connect(dsn) as conn:
            conn.cursor().executemany(
                "INSERT INTO devices (device_id, kind, street) VALUES (%s, 'smoke', %s)"
                " ON CONFLICT DO NOTHING",
                [bg_device(n) for n in range(1000)],
            )
    return dsn


def short_sla_rules(workdir: Path, ack_s: int) -> Path:
    """rules/ with one catch-all SLA (as tests/integration/test_orders.py ``policy_dir``)."""
    rules = workdir / "rules-short-sla"
    rules.mkdir(exist_ok=True)
    shutil.copy(REPO / "rules" / "sensors.toml", rules / "sensors.toml")
    routing = re.sub(
        r"\n\[\[sla\]\].*", "", (REPO / "rules" / "routing.toml").read_text(), flags=re.S
    )
    routing += f"\n[[sla]]\nack_s = {ack_s}\narrive_s = 3600\nresolve_s = 7200\n"
    (rules / "routing.toml").write_text(routing)
    return rules


def alarm_devices(dsn: str) -> list[SimDevice]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT device_id, kind, street FROM devices WHERE kind = ANY(%s)"
            " AND address_id IS NOT NULL ORDER BY kind DESC, device_id",
            (list(ALARMS),),
        ).fetchall()
    return [SimDevice(*row) for row in rows]


def one(dsn: str, sql: str, params: Sequence[Any] | None = None) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def settled(dsn: str) -> bool:
    """No alert waiting for the dispatcher and no notification waiting for the relay."""
    pending = one(
        dsn,
        "SELECT (SELECT count(*) FROM alerts WHERE dispatched_episode < episode)"
        " + (SELECT count(*) FROM outbox WHERE sent_at IS NULL)",
    )
    return bool(pending == 0)


def wait_settled(dsn: str, quiet_s: float = 1.0, timeout_s: float = 60) -> None:
    """Until the start-up work (inspection_due orders) is done and stays done ``quiet_s``."""
    since = [math.inf]

    def quiet() -> bool:
        now = time.monotonic()
        since[0] = min(since[0], now) if settled(dsn) else math.inf
        return now - since[0] >= quiet_s

    wait_until(quiet, timeout_s, "start-up orders dispatched and announced", step_s=0.1)


class TimedListener(Listener):
    """The harness Listener that also keeps each message's arrival time."""

    def __init__(self, port: int, *topics: str) -> None:
        super().__init__(port, *topics)
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self._arrived = threading.Condition()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        got = time.time()
        super()._on_message(client, userdata, message)
        with self._arrived:
            self.arrivals.append((got, self.received[-1][1]))
            self._arrived.notify_all()

    def first(
        self, where: Callable[[dict[str, Any]], bool], after: float, timeout_s: float
    ) -> tuple[float, dict[str, Any]] | None:
        """The first message ``where`` accepts that arrived after ``after`` (waiting)."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            seen = 0
            while True:
                for got, message in self.arrivals[seen:]:
                    if got >= after and where(message):
                        return got, message
                seen = len(self.arrivals)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._arrived.wait(left)


def owner_dispatch(device: SimDevice) -> Callable[[dict[str, Any]], bool]:
    category = ALARMS[device.kind][1]
    return lambda m: (
        m.get("type") == "order.dispatch"
        and m["recipient"]["as"] == "owner"
        and m["order"]["device_id"] == device.device_id
        and m["order"]["category"] == category
    )


# --------------------------------------------------------------------------------------------
# 1. latency
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    device: str
    kind: str
    published: float
    arrived: float = math.nan
    order_id: int = 0
    alert_txn: float = math.nan  # alerts.created_at: the ingest batch's transaction began
    order_created: float = math.nan  # work_orders.created_at: the dispatcher's step began
    outbox_sent: float = math.nan  # the owner's outbox row: sent_at (after the PUBACK)

    def span(self, start: str, end: str) -> float:
        return float(getattr(self, end) - getattr(self, start))


def publish_alarms(
    port: int,
    devices: Sequence[SimDevice],
    rng: random.Random,
    gap: tuple[float, float],
    listener: TimedListener | None,
) -> list[Sample]:
    """One alarm per device in turn; with a listener, wait for the owner's notification
    before the next alarm."""
    samples = []
    with Publisher(port=port) as publisher:
        for k, device in enumerate(devices):
            time.sleep(rng.uniform(*gap))
            overrides, _ = ALARMS[device.kind]
            message = reading(device, ALARM_SEQ + k, datetime.now(UTC), rng, **overrides)
            sample = Sample(device.device_id, device.kind, time.time())
            publisher.publish([message])
            if listener is not None:
                found = listener.first(owner_dispatch(device), sample.published, 15)
                if found:
                    sample.arrived, notice = found
                    sample.order_id = int(notice["order"]["id"])
            samples.append(sample)
    return samples


def add_stages(dsn: str, samples: Sequence[Sample]) -> None:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT w.id, extract(epoch FROM a.created_at)::float8,"
            " extract(epoch FROM w.created_at)::float8,"
            " (SELECT extract(epoch FROM min(o.sent_at))::float8 FROM outbox o"
            "  WHERE o.order_id = w.id AND o.channel = 'mqtt'"
            "  AND o.payload->>'type' = 'order.dispatch'"
            "  AND o.payload->'recipient'->>'as' = 'owner')"
            " FROM work_orders w JOIN alerts a ON a.id = w.alert_id WHERE w.id = ANY(%s)",
            ([s.order_id for s in samples if s.order_id],),
        ).fetchall()
    stages = {row[0]: row[1:] for row in rows}
    for s in samples:
        if s.order_id in stages:
            s.alert_txn, s.order_created, s.outbox_sent = (
                math.nan if v is None else v for v in stages[s.order_id]
            )


@dataclass
class Latency:
    load: str
    samples: list[Sample]
    background_msg_s: float = 0.0
    dead_letters: float = 0.0

    def values(self, start: str = "published", end: str = "arrived") -> list[float]:
        return sorted(v for s in self.samples if not math.isnan(v := s.span(start, end)))

    def summary(self) -> dict[str, float]:
        lat = self.values()
        return {
            "samples": len(self.samples),
            "missing": len(self.samples) - len(lat),
            **{f"p{q}_ms": pct(lat, q) * 1000 for q in (50, 90, 99)},
            "max_ms": (lat[-1] if lat else math.nan) * 1000,
            **{
                f"{a}->{b}_p50_ms": pct(self.values(a, b), 50) * 1000
                for a, b in itertools.pairwise(STAGES)
            },
            "background_msg_s": self.background_msg_s,
            "dead_letters": self.dead_letters,
        }


def measure_latency(
    district: Path,
    broker: Broker,
    workdir: Path,
    rng: random.Random,
    gap: tuple[float, float],
    rate: float,
    seq0: int,
    orders: int,
) -> tuple[Latency, Throughput | None]:
    """Alarms on a fresh database (background ``rate`` msg/s); then, idle, the throughput."""
    dsn = fresh_database(district, background_devices=rate > 0)
    client_id = f"bench-dispatch-{uuid.uuid4().hex[:6]}"
    throughput = None
    try:
        devices = alarm_devices(dsn)
        listener = TimedListener(broker.port, DISPATCH)
        with listener:
            with daemon(dsn, broker.port, client_id, workdir / "sensord.log") as (_, mport):
                wait_settled(dsn)
                load = BackgroundLoad(broker.port, rate, seq0, len(devices) * 2 + 60)
                try:
                    load.start()
                    time.sleep(3.0 if rate else 0.0)  # the load runs before the first alarm
                    dead0 = dead_letters(mport)
                    samples = publish_alarms(broker.port, devices, rng, gap, listener)
                    dead = dead_letters(mport) - dead0
                    bg = load.stop()
                finally:
                    load.close()
                wait_settled(dsn, quiet_s=0.2)
            add_stages(dsn, samples)
            result = Latency("idle" if rate <= 0 else f"{rate:,.0f} msg/s", samples, bg.rate, dead)
            if orders:
                throughput = measure_throughput(dsn, broker.port, client_id, workdir, orders)
        return result, throughput
    finally:
        drop_database(dsn)


def dead_letters(metrics_port: int) -> float:
    return sum(
        v
        for k, v in scrape(metrics_port).items()
        if k.startswith("sensord_ingest_dead_letters_total")
    )


# --------------------------------------------------------------------------------------------
# 2. escalation lateness
# --------------------------------------------------------------------------------------------


@dataclass
class Escalation:
    late_s: list[float]
    orders: int
    overdue_max: float  # sensord_order_deadlines_overdue, highest scraped
    audits: float
    seconds: float

    def summary(self) -> dict[str, float]:
        late = sorted(self.late_s)
        return {
            "escalations": len(late), "orders": self.orders,
            "p50_s": pct(late, 50), "p90_s": pct(late, 90), "p99_s": pct(late, 99),
            "max_s": late[-1] if late else math.nan,
            "overdue_max": self.overdue_max, "audits": self.audits, "seconds": self.seconds,
        }  # fmt: skip


def measure_escalation(
    district: Path,
    broker: Broker,
    workdir: Path,
    rng: random.Random,
    gap: tuple[float, float],
    ack_s: int,
) -> Escalation:
    dsn = fresh_database(district)
    overrides = {
        "SENSORD_RULES__DIRECTORY": str(short_sla_rules(workdir, ack_s)),
        "SENSORD_DISPATCH__AUDIT_INTERVAL_S": "1",
    }
    client_id = f"bench-escalate-{uuid.uuid4().hex[:6]}"
    try:
        log_path = workdir / "sensord.log"
        with daemon(dsn, broker.port, client_id, log_path, overrides) as (_, mport):
            t0 = time.monotonic()
            publish_alarms(broker.port, alarm_devices(dsn), rng, gap, None)
            overdue = [0.0]

            def at_the_top() -> bool:  # every order has run out of chain: nothing more due
                overdue[0] = max(
                    overdue[0], scrape(mport).get("sensord_order_deadlines_overdue", 0.0)
                )
                return bool(
                    one(dsn, "SELECT count(*) FROM work_orders WHERE due_at IS NOT NULL") == 0
                )

            wait_until(at_the_top, 120, "every order escalated to the top", step_s=0.5)
            seconds = time.monotonic() - t0
            metrics = scrape(mport)
        with psycopg.connect(dsn) as conn:
            late = [float(r[0]) for r in conn.execute(
                "SELECT (detail->>'late_s')::float8 FROM work_order_events"
                " WHERE event = 'escalate'")]  # fmt: skip
            orders = one(dsn, "SELECT count(*) FROM work_orders")
        return Escalation(
            late, orders, max(overdue[0], metrics.get("sensord_order_deadlines_overdue", 0.0)),
            metrics.get("sensord_order_deadline_audits_total", 0.0), seconds,
        )  # fmt: skip
    finally:
        drop_database(dsn)


# --------------------------------------------------------------------------------------------
# 3. throughput
# --------------------------------------------------------------------------------------------


@dataclass
class Throughput:
    orders: int
    orders_s: float
    notifications: int
    notifications_s: float
    order_seconds: float
    drain_seconds: float
    early_orders: int  # already created when the daemon reported itself connected
    sensord_cpu_s: float  # from connected to drained
    machine_busy: float  # share of all cores busy, connected to drained

    def summary(self) -> dict[str, float]:
        return asdict(self)


def insert_alerts(dsn: str, n: int) -> None:
    """``n`` firing smoke alerts, subjects ``bench:<k>``, on the demo's detectors in turn."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "WITH d AS (SELECT device_id, address_id, row_number() OVER (ORDER BY device_id) - 1"
            "  AS k, count(*) OVER () AS m FROM devices WHERE kind = 'smoke'"
            "  AND address_id IS NOT NULL)"
            " INSERT INTO alerts (rule, category, severity, safety, subject, device_id,"
            " address_id, first_seen, last_seen)"
            " SELECT 'smoke_alarm', 'fire', 'major', true, 'bench:' || g, d.device_id,"
            " d.address_id, now(), now() FROM generate_series(0, %s - 1) g"
            " JOIN d ON d.k = g %% d.m",
            (n,),
        )


def measure_throughput(dsn: str, port: int, client_id: str, workdir: Path, n: int) -> Throughput:
    """With the daemon stopped, queue ``n`` alerts; start it; time orders and notifications."""
    insert_alerts(dsn, n)
    count = "SELECT count(*) FROM work_orders WHERE subject LIKE 'bench:%'"
    with daemon(dsn, port, client_id, workdir / "sensord.log") as (pid, _):
        early = one(dsn, count)
        cpu0, busy0 = proc_cpu(pid), machine_jiffies()
        wait_until(lambda: one(dsn, count) >= n, 300, f"{n} orders", step_s=0.02)
        all_orders = time.time()
        wait_until(lambda: settled(dsn), 300, "the outbox drained", step_s=0.05)
        cpu, busy1 = proc_cpu(pid) - cpu0, machine_jiffies()
    with psycopg.connect(dsn) as conn:
        first, rows, last_sent = conn.execute(
            "SELECT extract(epoch FROM min(w.created_at))::float8, count(o.id),"
            " extract(epoch FROM max(o.sent_at))::float8"
            " FROM work_orders w JOIN outbox o ON o.order_id = w.id"
            " WHERE w.subject LIKE 'bench:%'"
        ).fetchone() or (math.nan, 0, math.nan)
    order_s, drain_s = all_orders - first, last_sent - first
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    return Throughput(n, n / order_s, rows, rows / drain_s, order_s, drain_s, early, cpu, busy)


# --------------------------------------------------------------------------------------------
# runs and report
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    run: int
    latency: list[Latency] = field(default_factory=list)
    escalation: Escalation | None = None
    throughput: Throughput | None = None


def one_run(k: int, args: argparse.Namespace, district: Path, workdir: Path) -> Run:
    rng = random.Random(args.seed + k)
    gap = (args.gap_ms[0] / 1000, args.gap_ms[1] / 1000)
    run = Run(k + 1)
    broker = Broker(workdir / f"broker-{k}")
    broker.start()
    try:
        idle, run.throughput = measure_latency(
            district, broker, workdir, rng, gap, 0, 0, args.orders
        )
        run.latency.append(idle)
        log(
            f"run {k + 1}: idle latency p50 {ms(pct(idle.values(), 50))} ms, "
            f"max {ms(idle.values()[-1])} ms; throughput {run.throughput}"
        )
        if args.rate > 0:
            loaded, _ = measure_latency(
                district, broker, workdir, rng, gap, args.rate, k * 10**6, 0
            )
            run.latency.append(loaded)
            log(
                f"run {k + 1}: {loaded.load} latency p50 {ms(pct(loaded.values(), 50))} ms, "
                f"max {ms(loaded.values()[-1])} ms, background {loaded.background_msg_s:,.0f}"
            )
        run.escalation = measure_escalation(district, broker, workdir, rng, gap, args.ack_s)
        log(f"run {k + 1}: escalation {run.escalation.summary()}")
    finally:
        broker.stop()
    return run


def as_json(runs: Sequence[Run], argv: Sequence[str]) -> dict[str, Any]:
    def median_of(rows: list[dict[str, float]]) -> dict[str, float]:
        return {key: statistics.median(r[key] for r in rows) for key in rows[0]} if rows else {}

    latency: dict[str, Any] = {}
    for load in dict.fromkeys(lat.load for r in runs for lat in r.latency):
        rows = [lat.summary() for r in runs for lat in r.latency if lat.load == load]
        pooled = sorted(
            v for r in runs for lat in r.latency if lat.load == load for v in lat.values()
        )
        latency[load] = {
            "runs": rows, "median": median_of(rows),
            "pooled_ms": {f"p{q}": pct(pooled, q) * 1000 for q in (50, 90, 99)}
            | {"max": pooled[-1] * 1000 if pooled else math.nan, "samples": len(pooled)},
        }  # fmt: skip
    escalation = [r.escalation.summary() for r in runs if r.escalation]
    throughput = [r.throughput.summary() for r in runs if r.throughput]
    loadavg = os.getloadavg()
    return {
        "command": "python -m bench.dispatch " + " ".join(argv),
        "host": platform.node(), "cores": os.cpu_count(), "python": platform.python_version(),
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"), "loadavg": loadavg,
        "latency": latency,
        "escalation": {"runs": escalation, "median": median_of(escalation)},
        "throughput": {"runs": throughput, "median": median_of(throughput)},
    }  # fmt: skip


def report(doc: dict[str, Any]) -> None:
    la = doc["loadavg"]
    print(
        f"\n`{doc['command']}` on {doc['host']} ({doc['cores']} cores), {doc['finished']}, "
        f"load average {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} at the end\n"
    )
    print(
        "Alarm published → owner's `order.dispatch` received, ms (median of the runs; per run):\n"
    )
    print("| load | samples / run | p50 | p90 | p99 | max | all runs pooled p50 / p99 / max |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for load, lat in doc["latency"].items():
        med, runs, pooled = lat["median"], lat["runs"], lat["pooled_ms"]
        cells = " | ".join(
            f"**{med[key]:,.0f}** ({' / '.join(f'{r[key]:,.0f}' for r in runs)})"
            for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")
        )
        missing = sum(r["missing"] for r in runs)
        print(
            f"| {load} | {med['samples']:.0f}{f' ({missing} missing)' if missing else ''} | "
            f"{cells} | {pooled['p50']:,.0f} / {pooled['p99']:,.0f} / {pooled['max']:,.0f} |"
        )
    print(
        "\nWhere the time goes, p50 ms (median of the runs): publish → ingest transaction "
        "began (`alerts.created_at`) → dispatcher step began (`work_orders.created_at`) → "
        "owner's notification PUBACKed (`outbox.sent_at`) → received by the subscriber:\n"
    )
    names = [f"{a}->{b}_p50_ms" for a, b in itertools.pairwise(STAGES)]
    print(
        "| load | "
        + " | ".join(n.removesuffix("_p50_ms").replace("->", " → ") for n in names)
        + " | background achieved msg/s | dead "
        "letters |"
    )
    print("|---|" + "---:|" * (len(names) + 2))
    for load, lat in doc["latency"].items():
        med = lat["median"]
        print(
            f"| {load} | "
            + " | ".join(f"{med[n]:,.0f}" for n in names)
            + f" | {med['background_msg_s']:,.0f} | {med['dead_letters']:,.0f} |"
        )
    print_runs(
        "Escalation lateness, `late_s` of every `escalate` event (catch-all SLA ack_s = 2, "
        "nobody acknowledging)",
        ["orders", "escalations", "p50 s", "p90 s", "p99 s", "max s",
         "`sensord_order_deadlines_overdue` max", "audits"],
        doc["escalation"],
        lambda r: [f"{r['orders']:.0f}", f"{r['escalations']:.0f}",
                   *(f"{r[k]:.3f}" for k in ("p50_s", "p90_s", "p99_s", "max_s")),
                   f"{r['overdue_max']:.0f}", f"{r['audits']:.0f}"],
    )  # fmt: skip
    print_runs(
        "Dispatcher and outbox throughput (alerts queued while stopped, then started)",
        ["orders", "orders/s", "s", "notifications", "notifications/s", "s",
         "sensord CPU ms / order", "machine busy (all cores)"],
        doc["throughput"],
        lambda r: [f"{r['orders']:.0f}", f"{r['orders_s']:,.0f}", f"{r['order_seconds']:.2f}",
                   f"{r['notifications']:.0f}", f"{r['notifications_s']:,.0f}",
                   f"{r['drain_seconds']:.2f}",
                   f"{r['sensord_cpu_s'] / r['orders'] * 1000:.2f}",
                   f"{r['machine_busy']:.0%}"],
    )  # fmt: skip


def print_runs(
    title: str,
    columns: Sequence[str],
    part: dict[str, Any],
    cells: Callable[[dict[str, Any]], list[str]],
) -> None:
    """One row per run and a median row, if the part was measured."""
    if not part["runs"]:
        return
    print(f"\n{title}:\n")
    print("| run | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    rows = [(str(k), r) for k, r in enumerate(part["runs"], 1)]
    for label, r in [*rows, ("**median**", part["median"])]:
        print(f"| {label} | " + " | ".join(cells(r)) + " |")


@contextmanager
def demo_district() -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    ok = False
    try:
        write(generate(1, "demo"), workdir / "district")
        yield workdir
        ok = True
    finally:
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--orders", type=int, default=2000, help="alerts for the throughput")
    parser.add_argument(
        "--rate",
        type=float,
        default=5000,
        help="background msg/s for the loaded latency (0: idle only)",
    )
    parser.add_argument("--ack-s", type=int, default=2, help="catch-all SLA for escalations")
    parser.add_argument(
        "--gap-ms",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=(100.0, 200.0),
        help="alarm spacing range, ms",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    with demo_district() as workdir:
        runs = [one_run(k, args, workdir / "district", workdir) for k in range(args.runs)]
    doc = as_json(runs, argv)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
