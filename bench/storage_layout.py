"""Storage layout benchmark: typed columns (A) vs one jsonb column (B) for ``readings``.

Layout A is ``migrations/0001_ingest.sql``: one typed column per protocol-v1 field plus
``extra jsonb``. Layout B is narrow: ``readings(ts, received_at, device_id, kind, seq, data
jsonb)`` with the per-kind fields (and any extras) in ``data``. Both have the same unique index
``(device_id, ts DESC, seq)`` and 1-day chunks.

For each layout, in a scratch database created here and dropped at the end:

1. the same N synthetic readings (fleet mix: heartbeat 40 %, smoke 25 %, ebike 20 %,
   elevator 10 %, fire_lane 5 %; ~6,000 devices; device time over two UTC days = 2 chunks);
2. write path as ``sensord/adapters/database.py`` does it: binary COPY into a temp
   ``ON COMMIT DELETE ROWS`` stage, ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, one
   transaction per batch of 5,000; rows/s is the median of K runs, each on a freshly created
   (empty) hypertable; runs alternate A, B, A, B so drift on a noisy machine hits both;
3. bytes per row from ``hypertable_detailed_size`` after ``VACUUM ANALYZE``;
4. two queries, median ms: latest reading of 100 devices (registry "show", rule-engine
   lookup) and a ``time_bucket('5 minutes', ts)`` count/avg of ebike ``power_w`` over one day.

Usage::

    python -m bench.storage_layout --rows 200000 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from sensord.paths import shipped

DEFAULT_DSN = "postgresql://sensord:sensord@127.0.0.1:5433/sensord"
BATCH = 5_000
DEVICES = {"smoke": 2_500, "ebike": 2_000, "elevator": 1_000, "fire_lane": 500}  # 6,000
MIX = {"heartbeat": 40, "smoke": 25, "ebike": 20, "elevator": 10, "fire_lane": 5}
PREFIX = {"smoke": "SMK", "ebike": "EBK", "elevator": "ELV", "fire_lane": "FLN"}
BASE = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)  # a chunk boundary: chunks are UTC days
SPAN_S = 2 * 86_400
LOCAL = dt.timezone(dt.timedelta(hours=8))

# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------

FIELDS: tuple[str, ...] = (
    "smoke", "obscuration", "temp_c", "battery_pct",
    "charging", "power_w", "current_a",
    "state", "door", "floor", "trapped", "fault_code",
    "blocked", "blocked_s",
    "rssi_dbm", "fw",
)  # fmt: skip
COMMON = ("ts", "received_at", "device_id", "kind", "seq")
COMMON_TYPES = ("timestamptz", "timestamptz", "text", "text", "int8")
FIELD_TYPES = (
    "bool", "float4", "float4", "float4",
    "bool", "float4", "float4",
    "text", "text", "int2", "bool", "text",
    "bool", "int4",
    "int2", "text",
)  # fmt: skip

INGEST_MIGRATION = shipped("migrations") / "0001_ingest.sql"


def migration_statement(start: str, path: Path = INGEST_MIGRATION) -> str:
    """The statement of ``path`` that begins with ``start`` (up to its ``;``), read each run
    so the benchmark measures the schema the daemon migrates to, not a copy that drifts."""
    text = path.read_text()
    begin = text.index(start)
    return text[begin : text.index(";", begin)]


# Layout A: the readings table of migrations/0001_ingest.sql.
DDL_A = migration_statement("CREATE TABLE readings (")

DDL_B = """
CREATE TABLE readings (
    ts           timestamptz      NOT NULL,
    received_at  timestamptz      NOT NULL,
    device_id    text             NOT NULL,
    kind         text             NOT NULL,
    seq          bigint           NOT NULL,
    data         jsonb            NOT NULL,
    CONSTRAINT readings_kind_check
        CHECK (kind IN ('smoke', 'ebike', 'elevator', 'fire_lane', 'heartbeat'))
)"""

# Shared by both layouts, as the migration creates them.
DDL_COMMON = (
    migration_statement("SELECT create_hypertable('readings'"),
    migration_statement("CREATE UNIQUE INDEX readings_device_ts_seq"),
)

# Q2: the same aggregate, read from a typed column or from the jsonb.
Q2_A = """
SELECT time_bucket('5 minutes', ts) AS bucket, count(*), avg(power_w)
FROM readings WHERE kind = 'ebike' AND ts >= %(lo)s AND ts < %(hi)s
GROUP BY bucket ORDER BY bucket"""
Q2_B = """
SELECT time_bucket('5 minutes', ts) AS bucket, count(*), avg((data->>'power_w')::real)
FROM readings WHERE kind = 'ebike' AND ts >= %(lo)s AND ts < %(hi)s
GROUP BY bucket ORDER BY bucket"""
Q1 = """
SELECT r.* FROM unnest(%(ids)s::text[]) AS d(device_id)
CROSS JOIN LATERAL (
    SELECT * FROM readings WHERE readings.device_id = d.device_id ORDER BY ts DESC LIMIT 1
) AS r"""


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    schema: str  # each layout lives in its own schema of the scratch database
    ddl: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    q2: str

    def statements(self) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
        """(create stage, copy into stage, insert from stage), as the daemon builds them."""
        stage = sql.Identifier("readings_stage")
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        create = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE readings) ON COMMIT DELETE ROWS"
        ).format(stage)
        copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(stage, cols)
        insert = sql.SQL(
            "INSERT INTO readings ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING"
        ).format(cols=cols, stage=stage)
        return create, copy, insert


LAYOUT_A = Layout(
    "A typed",
    "layout_a",
    DDL_A,
    (*COMMON, *FIELDS, "extra"),
    (*COMMON_TYPES, *FIELD_TYPES, "jsonb"),
    Q2_A,
)
LAYOUT_B = Layout("B jsonb", "layout_b", DDL_B, (*COMMON, "data"), (*COMMON_TYPES, "jsonb"), Q2_B)
LAYOUTS = (LAYOUT_A, LAYOUT_B)

# --------------------------------------------------------------------------------------------
# synthetic fleet
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded reading, independent of layout: fields holds what the device sent."""

    ts: dt.datetime
    received_at: dt.datetime
    device_id: str
    kind: str
    seq: int
    fields: dict[str, Any]
    extra: dict[str, Any] | None


def _fields(kind: str, ts: dt.datetime, rng: random.Random) -> dict[str, Any]:
    """Kind-specific fields as simulators/protocol.py sends them, with realistic variety."""
    hour = ts.astimezone(LOCAL).hour
    if kind == "smoke":
        alarm = rng.random() < 0.001
        out: dict[str, Any] = {
            "smoke": alarm,
            "obscuration": round(rng.uniform(8, 25) if alarm else rng.uniform(0, 0.8), 2),
            "temp_c": round(rng.uniform(16, 30) + (hour in (11, 12, 17, 18)) * 6, 1),
        }
        if rng.random() < 0.7:  # not every firmware reports battery with telemetry
            out["battery_pct"] = rng.randint(20, 100)
        return out
    if kind == "ebike":
        charging = rng.random() < (0.35 if hour >= 18 or hour < 6 else 0.08)
        power = rng.uniform(120, 420) if charging else rng.uniform(0, 5)
        return {
            "charging": charging,
            "power_w": round(power, 1),
            "current_a": round(power / 220, 2),
        }
    if kind == "elevator":
        fault = rng.random() < 0.002
        out = {
            "state": "fault" if fault else rng.choice(("running", "idle")),
            "door": rng.choice(("open", "closed")),
            "floor": rng.randint(-2, 30),
            "trapped": fault and rng.random() < 0.3,
        }
        if fault:
            out["fault_code"] = rng.choice(("E21", "E07", "E35"))
        return out
    if kind == "fire_lane":
        blocked = rng.random() < 0.03
        return {"blocked": blocked, "blocked_s": rng.randint(60, 3600) if blocked else 0}
    return {  # heartbeat
        "battery_pct": rng.randint(20, 100),
        "rssi_dbm": rng.randint(-110, -55),
        "fw": rng.choice(("2.4.1", "2.4.1", "2.4.1", "2.3.9", "3.0.0-rc2")),
    }


def generate(n: int, seed: int = 20261125) -> list[Event]:
    """N readings in arrival order; (device_id, ts, seq) are unique, seq rises per device."""
    rng = random.Random(seed)
    devices = {
        kind: [f"{PREFIX[kind]}-{i:06d}" for i in range(count)] for kind, count in DEVICES.items()
    }
    everyone = [d for ids in devices.values() for d in ids]
    kind_of = {d: kind for kind, ids in devices.items() for d in ids}
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=n)
    draws: list[tuple[float, str, str]] = []
    for kind in kinds:
        device = rng.choice(everyone if kind == "heartbeat" else devices[kind])
        draws.append((round(rng.uniform(0, SPAN_S), 3), device, kind))
    draws.sort()
    seq = {d: rng.randint(0, 500_000) for d in everyone}
    events = []
    for offset, device, kind in draws:
        ts = BASE + dt.timedelta(seconds=offset)
        seq[device] += 1
        extra = {"vendor_temp_raw": rng.randint(0, 4095)} if rng.random() < 0.01 else None
        events.append(
            Event(
                ts,
                ts + dt.timedelta(milliseconds=rng.randint(40, 1500)),
                device,
                kind,
                seq[device],
                _fields(kind_of[device] if kind != "heartbeat" else kind, ts, rng),
                extra,
            )
        )
    return events


def rows_for(layout: Layout, events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """The rows the decoder would hand the writer for this layout (built outside the timing)."""
    if layout is LAYOUT_A:
        return [
            (e.ts, e.received_at, e.device_id, e.kind, e.seq, *map(e.fields.get, FIELDS), e.extra)
            for e in events
        ]
    return [
        (e.ts, e.received_at, e.device_id, e.kind, e.seq, {**e.fields, **(e.extra or {})})
        for e in events
    ]


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    layout: Layout
    rows_per_s: list[float] = field(default_factory=list)
    copy_s: list[float] = field(default_factory=list)
    insert_s: list[float] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    day_chunk: dict[str, int] = field(default_factory=dict)
    q1_ms: list[float] = field(default_factory=list)
    q2_ms: list[float] = field(default_factory=list)
    q2_serial_ms: list[float] = field(default_factory=list)
    index_bytes: dict[str, int] = field(default_factory=dict)


def connect(dsn: str, layout: Layout) -> psycopg.Connection:
    """An autocommit connection whose ``readings`` is the layout's."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(layout.schema)))
    return conn


def recreate(conn: psycopg.Connection, layout: Layout) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(layout.schema)))
    conn.execute("DROP TABLE IF EXISTS readings")
    conn.execute(layout.ddl)
    for stmt in DDL_COMMON:
        conn.execute(stmt)


def write_run(dsn: str, layout: Layout, rows: Sequence[tuple[Any, ...]], res: Result) -> None:
    """One write-path run on an empty table."""
    create_stage, copy_stage, insert = layout.statements()
    with connect(dsn, layout) as conn:
        recreate(conn, layout)
        conn.execute(create_stage)
        conn.autocommit = False
        t_copy = t_insert = 0.0
        start = time.perf_counter()
        for lo in range(0, len(rows), BATCH):
            batch = rows[lo : lo + BATCH]
            with conn.transaction(), conn.cursor() as cur:
                t0 = time.perf_counter()
                with cur.copy(copy_stage) as copy:
                    copy.set_types(layout.types)
                    for row in batch:
                        copy.write_row(row)
                t1 = time.perf_counter()
                cur.execute(insert)
                stored = cur.rowcount
                t_copy += t1 - t0
                t_insert += time.perf_counter() - t1
            if stored != len(batch):
                raise RuntimeError(f"{layout.name}: stored {stored} of {len(batch)}")
        elapsed = time.perf_counter() - start
    res.rows_per_s.append(len(rows) / elapsed)
    res.copy_s.append(t_copy)
    res.insert_s.append(t_insert)


def measure_size(dsn: str, res: Result) -> None:
    with connect(dsn, res.layout) as conn:
        conn.execute("VACUUM ANALYZE readings")
        row = conn.execute(
            "SELECT table_bytes, index_bytes, toast_bytes, total_bytes, "
            "(SELECT count(*) FROM readings) FROM hypertable_detailed_size('readings')"
        ).fetchone()
        assert row is not None
        res.sizes = dict(zip(("table", "index", "toast", "total", "rows"), row, strict=True))
        # The first UTC day's chunk: what one full day of this sample costs.
        row = conn.execute(
            "SELECT s.table_bytes, s.index_bytes, s.toast_bytes, s.total_bytes, "
            "(SELECT count(*) FROM readings WHERE ts >= %(lo)s AND ts < %(hi)s) "
            "FROM chunks_detailed_size('readings') s "
            "JOIN timescaledb_information.chunks c "
            "  ON c.chunk_schema = s.chunk_schema AND c.chunk_name = s.chunk_name "
            "WHERE c.hypertable_schema = %(schema)s AND c.hypertable_name = 'readings' "
            "  AND c.range_start = %(lo)s",
            {"lo": BASE, "hi": BASE + dt.timedelta(days=1), "schema": res.layout.schema},
        ).fetchone()
        assert row is not None
        res.day_chunk = dict(zip(("table", "index", "toast", "total", "rows"), row, strict=True))
        res.index_bytes = dict(
            conn.execute(
                "SELECT indexname, hypertable_index_size(format('%I.%I', schemaname, indexname)) "
                "FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'readings'"
            ).fetchall()
        )


def measure_queries(dsn: str, res: Result, id_sets: Sequence[list[str]], q2_runs: int) -> None:
    day = {"lo": BASE, "hi": BASE + dt.timedelta(days=1)}
    with connect(dsn, res.layout) as conn:
        conn.execute(Q1, {"ids": id_sets[0]}).fetchall()  # warm-up
        conn.execute(res.layout.q2, day).fetchall()
        for ids in id_sets:
            t0 = time.perf_counter()
            got = conn.execute(Q1, {"ids": ids}).fetchall()
            res.q1_ms.append((time.perf_counter() - t0) * 1000)
            if len(got) != len(ids):
                raise RuntimeError(f"{res.layout.name}: Q1 returned {len(got)} of {len(ids)}")
        for _ in range(q2_runs):
            t0 = time.perf_counter()
            got = conn.execute(res.layout.q2, day).fetchall()
            res.q2_ms.append((time.perf_counter() - t0) * 1000)
            if len(got) != 288:
                raise RuntimeError(f"{res.layout.name}: Q2 returned {len(got)} buckets")
        # The planner may give one layout a parallel worker and not the other; on 2 shared
        # cores that is noise, so Q2 is also timed in one process.
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute(res.layout.q2, day).fetchall()
        for _ in range(q2_runs):
            t0 = time.perf_counter()
            conn.execute(res.layout.q2, day).fetchall()
            res.q2_serial_ms.append((time.perf_counter() - t0) * 1000)


@contextlib.contextmanager
def scratch_database(dsn: str) -> Iterator[str]:
    """Create a scratch database next to ``dsn``'s; yield its DSN; drop it whatever happens."""
    name = f"sensord_bench_layout_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        scratch = psycopg.conninfo.make_conninfo(dsn, dbname=name)
        with psycopg.connect(scratch, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        yield scratch
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def versions(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
            "current_setting('shared_buffers'), current_setting('jit')"
        ).fetchone()
    assert row is not None
    pg, ts, sb, jit = row
    return f"PostgreSQL {pg}, TimescaleDB {ts}, shared_buffers {sb}, jit {jit}"


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _med(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(results: Sequence[Result]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    head = ["metric", *(r.layout.name for r in results)]
    out = [line(head), line(["---"] + ["---:"] * len(results))]

    def add(metric: str, fmt: str, values: Sequence[float]) -> None:
        out.append(line([metric, *(format(v, fmt) for v in values)]))

    def spread(values: Sequence[float]) -> str:
        return f"{min(values):,.0f}–{max(values):,.0f}"

    add("write rows/s (median)", ",.0f", [_med(r.rows_per_s) for r in results])
    out.append(line(["write rows/s (min–max)", *(spread(r.rows_per_s) for r in results)]))
    add("  COPY to stage, s (median)", ".2f", [_med(r.copy_s) for r in results])
    add("  INSERT…SELECT, s (median)", ".2f", [_med(r.insert_s) for r in results])
    for part in ("table", "index", "toast", "total"):
        add(
            f"bytes/row {part}",
            ",.1f",
            [r.sizes[part] / r.sizes["rows"] for r in results],
        )
    for name in results[0].index_bytes:
        add(
            f"  index {name}, bytes/row",
            ",.1f",
            [r.index_bytes[name] / r.sizes["rows"] for r in results],
        )
    add("1-day chunk total, MiB", ",.1f", [r.day_chunk["total"] / 2**20 for r in results])
    add("1-day chunk index, MiB", ",.1f", [r.day_chunk["index"] / 2**20 for r in results])
    add("Q1 latest of 100 devices, ms (median)", ".2f", [_med(r.q1_ms) for r in results])
    add("Q2 5-min ebike power_w, 1 day, ms (median)", ".1f", [_med(r.q2_ms) for r in results])
    add("Q2 without parallel workers, ms (median)", ".1f", [_med(r.q2_serial_ms) for r in results])
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storage_layout", description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--q1-runs", type=int, default=30, help="Q1 repetitions (other devices each)")
    ap.add_argument("--q2-runs", type=int, default=15)
    ap.add_argument("--dsn", default=os.environ.get("SENSORD_BENCH_DSN", DEFAULT_DSN))
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    events = generate(args.rows, args.seed)
    rows = {layout.name: rows_for(layout, events) for layout in LAYOUTS}
    mix = {k: sum(e.kind == k for e in events) / len(events) for k in MIX}
    print(
        f"generated {len(events):,} readings in {time.perf_counter() - t0:.1f} s; "
        f"devices {len({e.device_id for e in events}):,}; "
        + ", ".join(f"{k} {v:.0%}" for k, v in mix.items()),
        flush=True,
    )
    rng = random.Random(args.seed + 1)
    fleet = sorted({e.device_id for e in events})
    id_sets = [rng.sample(fleet, 100) for _ in range(args.q1_runs)]
    del events

    results = {layout.name: Result(layout) for layout in LAYOUTS}
    with scratch_database(args.dsn) as dsn:
        env = versions(dsn)
        print(f"nproc {os.cpu_count()}; {env}", flush=True)
        for run in range(args.runs):
            for layout in LAYOUTS if run % 2 == 0 else LAYOUTS[::-1]:
                res = results[layout.name]
                write_run(dsn, layout, rows[layout.name], res)
                print(
                    f"run {run + 1}/{args.runs} {layout.name}: {res.rows_per_s[-1]:,.0f} rows/s "
                    f"(COPY {res.copy_s[-1]:.2f} s, INSERT {res.insert_s[-1]:.2f} s)",
                    flush=True,
                )
        # The last run's table of each layout is still there: size it, then query it.
        for res in results.values():
            measure_size(dsn, res)
            measure_queries(dsn, res, id_sets, args.q2_runs)
    print()
    print(
        f"rows {args.rows:,}, runs {args.runs}, batch {BATCH:,}; "
        f"Q1 x{args.q1_runs}, Q2 x{args.q2_runs}; {env}; nproc {os.cpu_count()}"
    )
    print(table(list(results.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
