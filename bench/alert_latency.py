"""Publish-to-alert latency of a smoke alarm under background load (issue 4).

One private Mosquitto, a scratch database, ``sensord run`` as a child process with the
shipped rules (``smoke_alarm``: ``smoke or obscuration >= 10``, no confirmation delay).
For each configuration and each background rate:

* a paced QoS 1 publisher (raw socket, own process) sends normal smoke readings
  (``smoke: false``, current timestamps) for 1,000 background detectors at the target rate,
  in one burst per 10 ms tick; the achieved rate is what sensord stored in the window;
* every 100-200 ms (uniformly random, so the alarms do not lock onto the batch cut), one
  alarm reading (``smoke: true``, obscuration 15) is published with QoS 1 for a detector
  that has never alarmed (the state machine fires once per detector), and its wall-clock
  time is taken just before the PUBLISH is written to the socket;
* a trigger on the scratch ``alerts`` table sends ``pg_notify`` with ``clock_timestamp()``;
  a LISTEN connection takes the wall-clock time when the notification arrives, which is
  when the alert's transaction has committed (notifications are delivered at commit).

Latency = alert committed (NOTIFY received) - publish. Also reported, per alarm:
``readings.received_at`` (sensord took the message), ``alerts.created_at`` (``now()``, i.e.
the start of the batch's transaction) and the trigger's ``clock_timestamp()`` (the alert
row's INSERT). The alarm's batch is the set of readings that share the alert row's xmin
(one batch, one transaction), which gives when the batch opened and was due. Everything is
on this machine's clock. Batch and commit figures come from sensord's /metrics.

    .venv/bin/python -m bench.alert_latency --rates 0,1000,5000,10000 --samples 150 \\
        --runs 2 --config default --config ingest.batch_max_age_ms=100 \\
        --config ingest.batch_max_age_ms=50

``--config`` is ``default`` or ``section.key=value[,...]`` (passed as SENSORD_* variables);
``--samples-out FILE`` writes every alarm's timestamps as JSON lines.

Needs scripts/services up (TimescaleDB on 5433); starts its own mosquitto on a free port.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import random
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.ingest import daemon
from sensord.adapters.migrations import migrate
from sensord.config import load_settings
from sensord.paths import shipped
from simulators.harness.broker import broker
from simulators.harness.database import ADMIN_DSN, drop_database
from simulators.harness.metrics import scrape
from simulators.harness.mqtt_wire import PUBACK, RawClient, count_acks, publish_packet
from simulators.harness.processes import free_port, proc_cpu

REPO = Path(__file__).resolve().parents[1]
_CTX = mp.get_context("spawn")
BG_DEVICES = 1000
TICK_S = 0.01
WARM_ALARMS = 5
NOTIFY_CHANNEL = "bench_alert"
COMMIT_METRIC = "sensord_ingest_commit_duration_seconds"
BATCH_METRIC = "sensord_ingest_batch_messages"
_BG_PAYLOAD = (
    '{"ts":"%s","seq":%d,"smoke":false,"obscuration":%.1f,"temp_c":%.1f,"battery_pct":%d}'
)


def bg_device(n: int) -> tuple[str, str]:
    """(device_id, street) of background detector n."""
    return f"SMK-{n:06d}", f"jd{n % 20 + 1:02d}"


def alarm_device(n: int) -> tuple[str, str]:
    """(device_id, street) of alarm detector n; each alarms once per database."""
    return f"ALM-{n:06d}", f"jd{n % 20 + 1:02d}"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------------------------
# database
# --------------------------------------------------------------------------------------------


def create_database() -> str:
    """A new, empty scratch database named bench_alert_*; returns its DSN."""
    name = f"bench_alert_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def prepare_database(dsn: str, alarm_devices: int) -> None:
    """Schema, devices, and the commit-time probe on alerts (scratch database only)."""
    migrate(dsn, shipped("migrations"))
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur, cur.copy(
            "COPY devices (device_id, kind, street) FROM STDIN"
        ) as copy:
            for device, street in [*map(bg_device, range(BG_DEVICES)),
                                   *map(alarm_device, range(alarm_devices))]:
                copy.write_row((device, "smoke", street))
        # NOTIFY is delivered when the inserting transaction commits; the payload carries the
        # time of the INSERT itself.
        conn.execute(
            "CREATE FUNCTION bench_alert_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" PERFORM pg_notify('{NOTIFY_CHANNEL}', NEW.device_id || ' ' ||"
            " extract(epoch FROM clock_timestamp())::text); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER bench_alert_notify AFTER INSERT ON alerts FOR EACH ROW"
            " EXECUTE FUNCTION bench_alert_notify()"
        )


class Listener(threading.Thread):
    """LISTENs for the probe; records (time received, INSERT time) per alarm device."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True, name="notify-listener")
        self.dsn = dsn
        self.seen: dict[str, tuple[float, float]] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self.ready.set()
                while not self.stop.is_set():
                    for note in conn.notifies(timeout=0.2):
                        got = time.time()
                        device, inserted = note.payload.split()
                        self.seen.setdefault(device, (got, float(inserted)))
        except BaseException as exc:
            self.error = exc
            self.ready.set()


def alert_rows(
    dsn: str, devices: Sequence[str], since: float, until: float
) -> dict[str, tuple[float, ...]]:
    """device -> (alerts.created_at, readings.received_at of its alarm, and of its batch the
    first and last received_at and the size), epoch seconds.

    A batch is one transaction, so the readings that share the alert row's xmin are the
    alarm's batch."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "WITH batch AS (SELECT xmin::text AS x, extract(epoch FROM min(received_at))::float8"
            "  AS first, extract(epoch FROM max(received_at))::float8 AS last, count(*) AS n"
            "  FROM readings WHERE received_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)"
            "  GROUP BY 1)"
            " SELECT a.device_id, extract(epoch FROM a.created_at)::float8,"
            " (SELECT extract(epoch FROM min(r.received_at))::float8 FROM readings r"
            "  WHERE r.device_id = a.device_id), b.first, b.last, b.n"
            " FROM alerts a LEFT JOIN batch b ON b.x = a.xmin::text"
            " WHERE a.rule = 'smoke_alarm' AND a.device_id = ANY(%s)",
            (since - 5, until + 60, list(devices)),
        ).fetchall()
    return {str(row[0]): tuple(math.nan if v is None else float(v) for v in row[1:])
            for row in rows}


# --------------------------------------------------------------------------------------------
# daemon
# --------------------------------------------------------------------------------------------


def env_overrides(spec: str) -> dict[str, str]:
    """'default' or 'section.key=value[,section.key=value]' -> SENSORD_* variables."""
    if spec == "default":
        return {}
    out = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        section, _, name = key.strip().partition(".")
        if not (section and name and value):
            raise ValueError(f"bad --config item {part!r}: want section.key=value")
        out[f"SENSORD_{section.upper()}__{name.upper()}"] = value.strip()
    return out


# --------------------------------------------------------------------------------------------
# background publisher (own process)
# --------------------------------------------------------------------------------------------


def _read_acks(sock: Any, buf: bytearray, timeout: float) -> tuple[int, int]:
    """Wait up to ``timeout`` for data; (PUBACKs, PUBACK errors) it completed."""
    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        return 0, 0
    data = sock.recv(1 << 18)
    if not data:
        raise ConnectionError("broker closed the connection")
    buf += data
    return count_acks(buf)


def _background_worker(
    port: int, rate: float, seq0: int, max_s: float, conn: Any, go: Any, stop: Any
) -> None:
    """Publish normal readings at ``rate`` msg/s (one burst per tick) until ``stop``."""
    try:
        topics = []
        for n in range(BG_DEVICES):
            device, street = bg_device(n)
            topics.append(f"sensord/v1/{street}/smoke/{device}".encode())
        c = RawClient(port, f"bench-bg-{os.getpid()}", clean_start=True)
        window = min(c.connack_props.get("receive_maximum") or 65535, 65534)
        sock, buf = c.sock, bytearray(c.buf)
        sock.settimeout(None)
        sock.setblocking(True)
        conn.send(("ready", window))
        go.wait()
        cpu0 = time.process_time()
        t0 = time.monotonic()
        sent = acked = errors = starved = 0
        next_tick = t0
        while not stop.is_set() and time.monotonic() - t0 < max_s:
            now = time.monotonic()
            due = int(rate * (now - t0)) - sent
            k = min(due, window - (sent - acked))
            if due > k:
                starved += 1  # the broker's window, not the clock, held us back
            if k > 0:
                ts = now_iso()
                pkts = []
                for i in range(sent, sent + k):
                    payload = _BG_PAYLOAD % (ts, seq0 + i, (i * 7 % 50) / 10,
                                             18 + (i * 13 % 120) / 10, 100 - i // 1000 % 50)
                    pkts.append(publish_packet(topics[i % BG_DEVICES], payload.encode(),
                                               i % 65535 + 1))
                sock.sendall(b"".join(pkts))
                sent += k
            next_tick += TICK_S
            if next_tick < time.monotonic() - 1.0:
                next_tick = time.monotonic()  # starved of CPU for a while: do not spin
            while (left := next_tick - time.monotonic()) > 0:
                a, e = _read_acks(sock, buf, left)
                acked += a
                errors += e
        t1 = time.monotonic()
        deadline = t1 + 10
        while acked < sent and time.monotonic() < deadline:
            a, e = _read_acks(sock, buf, 0.5)
            acked += a
            errors += e
        c.disconnect()
        conn.send(("done", sent, acked, errors, t0, t1, time.process_time() - cpu0, starved))
    except Exception as exc:  # report to the parent instead of dying silently
        conn.send(("error", repr(exc)))


@dataclass
class Background:
    sent: int = 0
    acked: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    starved_ticks: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class BackgroundLoad:
    """The paced publisher process; rate 0 starts nothing."""

    def __init__(self, port: int, rate: float, seq0: int, max_s: float) -> None:
        self.rate = rate
        self.result = Background()
        self._proc: Any = None
        if rate <= 0:
            return
        self._pipe, child = _CTX.Pipe()
        self._go, self._stop = _CTX.Event(), _CTX.Event()
        self._proc = _CTX.Process(
            target=_background_worker,
            args=(port, rate, seq0, max_s, child, self._go, self._stop),
            daemon=True,
        )
        self._proc.start()
        _expect(self._pipe, "ready", 60)

    def start(self) -> None:
        if self._proc is not None:
            self._go.set()

    def stop(self) -> Background:
        if self._proc is None:
            return self.result
        try:
            self._stop.set()
            _, sent, acked, errors, t0, t1, cpu, starved = _expect(self._pipe, "done", 30)
            self.result = Background(sent, acked, errors, t1 - t0, cpu, starved)
        finally:
            self.close()
        return self.result

    def close(self) -> None:
        if self._proc is None:
            return
        self._stop.set()
        self._go.set()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc = None


def _expect(conn: Any, tag: str, timeout: float) -> tuple[Any, ...]:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {tag!r} from the background publisher in {timeout} s")
    msg = conn.recv()
    if msg[0] == "error":
        raise RuntimeError(f"background publisher failed: {msg[1]}")
    if msg[0] != tag:
        raise RuntimeError(f"expected {tag!r}, got {msg!r}")
    return tuple(msg)


# --------------------------------------------------------------------------------------------
# alarms
# --------------------------------------------------------------------------------------------


class Alarms:
    """QoS 1 alarm publisher; hands out fresh alarm devices."""

    def __init__(self, port: int) -> None:
        self.client = RawClient(port, f"bench-alarm-{uuid.uuid4().hex[:6]}", clean_start=True,
                                keepalive=3600)
        self.next_device = 0
        self.published = 0

    def publish(self) -> tuple[str, float]:
        """One alarm for a fresh device; (device_id, wall time just before the write)."""
        device, street = alarm_device(self.next_device)
        self.next_device += 1
        payload = json.dumps({"ts": now_iso(), "seq": 1, "smoke": True, "obscuration": 15.0,
                              "temp_c": 31.5, "battery_pct": 90}, separators=(",", ":"))
        pkt = publish_packet(f"sensord/v1/{street}/smoke/{device}".encode(), payload.encode(),
                             self.client.next_mid())
        t_pub = time.time()
        self.client.sock.sendall(pkt)
        ptype, _, body = self.client.read_packet(10)  # the broker's PUBACK, not sensord's
        if ptype != PUBACK or (len(body) >= 3 and body[2] >= 0x80):
            raise RuntimeError(f"alarm not accepted by the broker: {ptype:#x} {body!r}")
        self.published += 1
        return device, t_pub

    def close(self) -> None:
        self.client.disconnect()


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def histogram(samples: dict[str, float], name: str) -> tuple[list[tuple[float, float]], float,
                                                             float]:
    """(cumulative buckets [(le, count)], count, sum) of one histogram in a scrape."""
    prefix = f'{name}_bucket{{le="'
    buckets = sorted((float(k[len(prefix):-2]), v) for k, v in samples.items()
                     if k.startswith(prefix))
    return buckets, samples.get(f"{name}_count", 0.0), samples.get(f"{name}_sum", 0.0)


def histogram_delta(a: dict[str, float], b: dict[str, float], name: str) -> tuple[
    list[tuple[float, float]], float, float
]:
    ba, ca, sa = histogram(a, name)
    bb, cb, sb = histogram(b, name)
    before = dict(ba)
    return [(le, v - before.get(le, 0.0)) for le, v in bb], cb - ca, sb - sa


def bucket_quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float:
    """Upper bound of the bucket holding quantile q."""
    if count <= 0:
        return math.nan
    for le, cum in buckets:
        if cum >= q * count:
            return le
    return math.inf


# --------------------------------------------------------------------------------------------
# one measurement
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    device: str
    published: float
    committed: float = math.nan  # NOTIFY received
    inserted: float = math.nan  # trigger clock_timestamp()
    created: float = math.nan  # alerts.created_at = now() = transaction start
    received: float = math.nan  # readings.received_at
    batch_first: float = math.nan  # first received_at in the alarm's batch (transaction)
    batch_last: float = math.nan  # last received_at in it: about when the batch was cut
    batch_n: float = math.nan  # messages in the alarm's batch
    due: float = math.nan  # when the batch was due: first + max age, unless full or later


@dataclass
class Result:
    config: str
    target: float
    samples: list[Sample]
    stored_rate: float
    background: Background
    seconds: float
    batches: float
    batch_mean: float
    commit_mean: float
    commit_p99: float
    sensord_cpu: float
    machine_busy: float  # share of all cores busy during the window, everything included
    started: float  # wall clock of the window
    dead_letters: float
    lost: int
    notes: list[str] = field(default_factory=list)
    run: int = 1

    def latencies(self, start: str = "published", end: str = "committed") -> list[float]:
        return sorted(getattr(s, end) - getattr(s, start) for s in self.samples
                      if not math.isnan(getattr(s, end) - getattr(s, start)))


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def stored_total(m: dict[str, float]) -> float:
    return m.get("sensord_ingest_stored_readings_total", 0.0)


def dead_total(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("sensord_ingest_dead_letters_total"))


def wait_caught_up(mport: int, expected: int, timeout_s: float) -> bool:
    """Until sensord has committed ``expected`` messages since it started (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = scrape(mport)
        if stored_total(m) + dead_total(m) >= expected and m.get(
            "sensord_ingest_in_flight_messages", 0
        ) == 0:
            return True
        time.sleep(0.1)
    return False


def measure(
    config: str, target: float, n_samples: int, *, dsn: str, broker_port: int, pid: int,
    mport: int, alarms: Alarms, listener: Listener, seq0: int, warmup_s: float,
    gap: tuple[float, float], rng: random.Random, policy: tuple[float, int],
) -> tuple[Result, int]:
    """One background rate: returns the result and the background messages published."""
    budget = warmup_s + n_samples * (gap[1] + 0.05) + 30
    load = BackgroundLoad(broker_port, target, seq0, budget)
    samples: list[Sample] = []
    notes: list[str] = []
    try:
        load.start()
        time.sleep(warmup_s)
        m1, cpu1, t1, j1 = scrape(mport), proc_cpu(pid), time.monotonic(), machine_jiffies()
        started = time.time()
        deadline = t1 + n_samples * (gap[1] + 0.05) + 20
        next_at = time.monotonic()
        while len(samples) < n_samples and time.monotonic() < deadline:
            next_at += rng.uniform(*gap)
            time.sleep(max(0.0, next_at - time.monotonic()))
            device, t_pub = alarms.publish()
            samples.append(Sample(device, t_pub))
        if len(samples) < n_samples:
            notes.append(f"only {len(samples)} of {n_samples} alarms in the time budget")
        m2, cpu2, t2, j2 = scrape(mport), proc_cpu(pid), time.monotonic(), machine_jiffies()
        bg = load.stop()
    finally:
        load.close()
    devices = [s.device for s in samples]
    wait_deadline = time.monotonic() + 30
    while time.monotonic() < wait_deadline and not all(d in listener.seen for d in devices):
        time.sleep(0.05)
    rows = alert_rows(dsn, devices, started, time.time())
    lost = 0
    for s in samples:
        if s.device in listener.seen:
            s.committed, s.inserted = listener.seen[s.device]
        if s.device in rows:
            (s.created, s.received, s.batch_first, s.batch_last, s.batch_n) = rows[s.device]
            age_s, max_items = policy
            s.due = s.batch_last if s.batch_n >= max_items else max(
                s.batch_last, s.batch_first + age_s)
        else:
            lost += 1
    seconds = t2 - t1
    _, batch_n, batch_sum = histogram_delta(m1, m2, BATCH_METRIC)
    commit_b, commit_n, commit_sum = histogram_delta(m1, m2, COMMIT_METRIC)
    result = Result(
        config=config, target=target, samples=samples,
        stored_rate=max(0.0, stored_total(m2) - stored_total(m1) - len(samples)) / seconds,
        background=bg, seconds=seconds, batches=batch_n,
        batch_mean=batch_sum / batch_n if batch_n else math.nan,
        commit_mean=commit_sum / commit_n if commit_n else math.nan,
        commit_p99=bucket_quantile(commit_b, commit_n, 0.99),
        sensord_cpu=(cpu2 - cpu1) / seconds,
        machine_busy=(j2[0] - j1[0]) / max(1, j2[1] - j1[1]), started=started,
        dead_letters=dead_total(m2) - dead_total(m1), lost=lost, notes=notes,
    )
    if bg.errors:
        notes.append(f"{bg.errors} background PUBACK errors")
    if bg.starved_ticks:
        notes.append(f"background publisher held by the broker window on {bg.starved_ticks} "
                     "ticks")
    return result, bg.sent


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (0..100) of sorted values."""
    if not values:
        return math.nan
    pos = (len(values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def ms(x: float) -> str:
    return "–" if math.isnan(x) else ("∞" if math.isinf(x) else f"{x * 1000:,.0f}")


def report(results: list[Result], argv: Sequence[str], target_ms: float) -> None:
    if max((r.run for r in results), default=1) > 1:
        for r in results:
            r.config = f"{r.config} (run {r.run})"
    load = os.getloadavg()
    print(f"\n`.venv/bin/python -m bench.alert_latency {' '.join(argv)}` on "
          f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M %Z')}, "
          f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) at "
          "the end\n")
    print("Publish → alert committed (NOTIFY from the alert's transaction received), ms:\n")
    print("| config | background target msg/s | achieved msg/s | samples | p50 | p90 | p99 "
          f"| max | p99 < {target_ms:.0f} ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        lat = r.latencies()
        ok = "yes" if pct(lat, 99) < target_ms / 1000 else "**no**"
        lost = f" ({r.lost} lost)" if r.lost else ""
        print(f"| {r.config} | {r.target:,.0f} | {r.stored_rate:,.0f} | {len(lat)}{lost} | "
              f"{ms(pct(lat, 50))} | {ms(pct(lat, 90))} | {ms(pct(lat, 99))} | "
              f"{ms(lat[-1] if lat else math.nan)} | {ok} |")
    print("\nWhere the time goes, p50 / p99 over the alarms, ms. Stages: publish → sensord "
          "took the message (`readings.received_at`) → its batch was due (first message + "
          "`batch_max_age_ms`, or the last message if later or the batch was full; the batch "
          "is the transaction, found by the alert row's xmin) → the transaction began "
          "(`alerts.created_at` = `now()`; the rule engine evaluates the batch just before) → "
          "alert row inserted (trigger `clock_timestamp()`; after the batch's COPY) → committed "
          "(NOTIFY received). Batches/s and commit time from sensord's /metrics over the same "
          "window (commit p99 is a bucket upper bound).\n")
    print("| config | bg msg/s | alarm's batch msgs (p50) | → received | → batch due "
          "| → txn start | → alert insert | → committed | created_at − publish | batches/s "
          "| commit ms mean (p99 ≤) | sensord CPU (one core = 100 %) | machine busy (all cores) |")
    print("|---|---:|---:|---|---|---|---|---|---|---:|---|---:|---:|")
    for r in results:
        stages = ("published", "received", "due", "created", "inserted", "committed")
        cells = " | ".join(f"{ms(pct(p, 50))} / {ms(pct(p, 99))}" for p in
                           (r.latencies(a, b) for a, b in itertools.pairwise(stages)))
        created = r.latencies("published", "created")
        sizes = sorted(s.batch_n for s in r.samples if not math.isnan(s.batch_n))
        print(f"| {r.config} | {r.target:,.0f} | {pct(sizes, 50):,.0f} | {cells} | "
              f"{ms(pct(created, 50))} / {ms(pct(created, 99))} | {r.batches / r.seconds:.1f} "
              f"| {r.commit_mean * 1000:.0f} ({ms(r.commit_p99)}) | {r.sensord_cpu:.0%} | "
              f"{r.machine_busy:.0%} |")
    notes = [(r, n) for r in results for n in r.notes]
    if any(r.dead_letters for r in results):
        notes += [(r, f"{r.dead_letters:.0f} dead letters") for r in results if r.dead_letters]
    for r, n in notes:
        print(f"\nnote: {r.config} @ {r.target:,.0f}: {n}")


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_config(
    config: str, overrides: dict[str, str], rates: Sequence[float], args: argparse.Namespace,
    *, dsn: str, port: int, log: Path, alarms: Alarms, listener: Listener, seq: int,
    rng: random.Random,
) -> tuple[list[Result], int]:
    """Every rate against one daemon; returns the results and the next background seq."""
    gap_lo, gap_hi = (float(x) / 1000 for x in args.gap_ms.split(","))
    results = []
    shipped = load_settings(REPO / "config.toml").ingest  # what the daemon runs with by default
    policy = (
        int(overrides.get("SENSORD_INGEST__BATCH_MAX_AGE_MS", shipped.batch_max_age_ms)) / 1000,
        int(overrides.get("SENSORD_INGEST__BATCH_MAX_ITEMS", shipped.batch_max_items)),
    )
    client_id = f"bench-alert-{uuid.uuid4().hex[:6]}"
    with daemon(dsn, port, client_id, log, overrides) as (pid, mport):
        expected = 0
        for _ in range(WARM_ALARMS):  # first-use costs, not measured
            alarms.publish()
            expected += 1
            time.sleep(0.05)
        wait_caught_up(mport, expected, 30)
        for rate in rates:
            result, bg_sent = measure(
                config, rate, args.samples, dsn=dsn, broker_port=port, pid=pid, mport=mport,
                alarms=alarms, listener=listener, seq0=seq,
                warmup_s=args.warmup if rate else 0.5, gap=(gap_lo, gap_hi), rng=rng,
                policy=policy,
            )
            seq += bg_sent
            expected += bg_sent + len(result.samples)
            if not wait_caught_up(mport, expected, 120):
                result.notes.append("sensord had not caught up 120 s after the run")
            results.append(result)
            lat = result.latencies()
            print(f"{config:>30} @ {rate:>6,.0f}: stored {result.stored_rate:>7,.0f} msg/s, "
                  f"{len(lat)} alarms, p50 {ms(pct(lat, 50))} p99 {ms(pct(lat, 99))} max "
                  f"{ms(lat[-1] if lat else math.nan)} ms; batches {result.batch_mean:,.0f} "
                  f"msgs, commit {result.commit_mean * 1000:.0f} ms mean", flush=True)
    return results, seq


def parse_args(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0,1000,5000,10000",
                        help="background msg/s, comma-separated")
    parser.add_argument("--samples", type=int, default=150, help="alarms per rate")
    parser.add_argument("--config", action="append", default=None,
                        help="'default' or section.key=value[,...]; repeatable")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of background load before the first alarm")
    parser.add_argument("--gap-ms", default="100,200", help="alarm spacing range, ms")
    parser.add_argument("--port", type=int, default=0, help="broker port (0: a free one)")
    parser.add_argument("--target-ms", type=float, default=250.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="repeat the configs x rates sweep")
    parser.add_argument("--samples-out", type=Path, help="write every alarm as JSON lines")
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print Markdown tables."""
    argv = sys.argv[1:] if argv is None else argv
    parser, args = parse_args(argv)
    rates = [float(x) for x in args.rates.split(",")]
    configs = args.config or ["default"]
    overrides = {c: env_overrides(c) for c in configs}
    port = args.port or free_port()
    if port == 1883:
        parser.error("1883 is the machine's broker")
    signal.signal(signal.SIGTERM, _sigterm)

    results: list[Result] = []
    dsn = create_database()
    listener = Listener(dsn)
    workdir = Path(tempfile.mkdtemp(prefix="bench-alert-"))
    ok = False
    try:
        prepare_database(
            dsn, args.runs * len(configs) * (WARM_ALARMS + len(rates) * args.samples)
        )
        listener.start()
        listener.ready.wait(10)
        if listener.error:
            raise listener.error
        with broker(port, workdir):
            alarms = Alarms(port)
            try:
                seq = 0
                for config in [c for _ in range(args.runs) for c in configs]:
                    done, seq = run_config(config, overrides[config], rates, args, dsn=dsn,
                                           port=port, log=workdir / "sensord.log",
                                           alarms=alarms, listener=listener, seq=seq,
                                           rng=random.Random(args.seed + len(results)))
                    for r in done:
                        r.run = 1 + len(results) // (len(configs) * len(rates))
                    results += done
            finally:
                alarms.close()
        ok = True
    finally:
        listener.stop.set()
        listener.join(5)
        drop_database(dsn)
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)
    if args.samples_out:
        write_samples(args.samples_out, results)
    report(results, argv, args.target_ms)
    return 0


def write_samples(path: Path, results: Sequence[Result]) -> None:
    with path.open("w") as out:
        for run, r in enumerate(results):
            for s in r.samples:
                out.write(json.dumps({"result": run, "config": r.config, "rate": r.target,
                                      **s.__dict__}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
