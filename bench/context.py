"""Registry snapshot benchmark at ``full`` scale: load time, memory, lookup cost, NOTIFY reload.

Generates the ``full`` district (``python -m simulators district --seed 1 --scale full``),
imports it into a scratch database with ``sensord registry import``, then measures in
this process (which has done nothing else, so its RSS is a clean baseline):

  * load: DB -> snapshot (``load_snapshot``: connect, one REPEATABLE READ read, build),
    split into read and build, median of --runs;
  * memory: RSS before / after the first load and after --runs reloads (the old
    snapshot freed each time), and tracemalloc's peak (rows and snapshot both alive)
    and retained (the snapshot alone) for one load;
  * lookups: ``snapshot.context(id)``, ``snapshot.device(id)`` and the decoder's
    ``devices.get(id)`` over every device in random order, with a fresh id string
    per lookup as a parsed topic gives; ns per lookup, median of --runs;
  * NOTIFY reload: a running RegistryDirectory (LISTEN, debounce, thread, swap);
    one device row changes, and the time from COMMIT to the new snapshot being in
    place is measured, with the reload's own duration and the event loop's
    longest stall meanwhile; median of --runs.

    python -m bench.context --runs 7

Needs scripts/services up (TimescaleDB on 5433).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from sensord.adapters.directory import DEBOUNCE_S, RegistryDirectory
from sensord.adapters.metrics import Metrics
from sensord.adapters.migrations import migrate
from sensord.adapters.registry_snapshot import LoadedSnapshot, load_snapshot
from sensord.core.backoff import Backoff
from sensord.core.context import RegistrySnapshot, SnapshotStats
from sensord.paths import shipped
from simulators.harness.database import create_database, drop_database

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def rss() -> int:
    """Resident set size of this process, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def prepare(dsn: str, workdir: Path) -> tuple[str, float]:
    """Generate the full district and import it; return the importer's summary and its time."""
    out = workdir / "district"
    subprocess.run(
        [sys.executable, "-m", "simulators", "district", "--seed", "1", "--scale", "full",
         "--out", str(out)],
        check=True, cwd=REPO, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORD_")}
    env["SENSORD_DATABASE__DSN"] = dsn
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sensord", "registry", "import", str(out)],
        check=True, cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout, time.perf_counter() - started


def deep_size(root: object) -> tuple[int, Counter[str]]:
    """sys.getsizeof over every distinct object reachable from ``root``; and objects by type."""
    seen: set[int] = set()
    size = 0
    kinds: Counter[str] = Counter()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        kinds[type(obj).__name__] += 1
        if isinstance(obj, str | int | float | bool) or obj is None:
            continue
        if isinstance(obj, tuple | list | frozenset | set):
            stack.extend(obj)
        elif hasattr(obj, "keys") and hasattr(obj, "values"):
            stack.extend(obj.keys())
            stack.extend(obj.values())
            if isinstance(obj, MappingProxyType):
                size += sys.getsizeof(dict(obj))  # the dict behind the proxy
        elif (slots := getattr(type(obj), "__slots__", None)) is not None:
            stack.extend(getattr(obj, name) for name in slots)
    return size, kinds


def measure_memory(dsn: str, reloads: int) -> dict[str, Any]:
    gc.collect()
    base = rss()
    first = load_snapshot(dsn)
    gc.collect()
    after_first = rss()
    keep: LoadedSnapshot = first
    for _ in range(reloads):
        keep = load_snapshot(dsn)  # the previous snapshot is freed here, as in the daemon
    gc.collect()
    steady = rss()
    del first
    gc.collect()
    tracemalloc.start()
    before_traced = tracemalloc.get_traced_memory()[0]
    traced = load_snapshot(dsn)
    peak = tracemalloc.get_traced_memory()[1] - before_traced
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - before_traced
    tracemalloc.stop()
    del traced
    size, kinds = deep_size(keep.snapshot)
    return {
        "rss_base": base,
        "rss_first": after_first - base,
        "rss_steady": steady - base,
        "traced_peak": peak,
        "traced_retained": retained,
        "deep_size": size,
        "kinds": kinds,
        "snapshot": keep.snapshot,
        "rows": keep.rows,
    }


def measure_load(dsn: str, runs: int) -> list[tuple[float, float]]:
    """(read_s, build_s) per load; each snapshot is dropped before the next, as in the daemon."""
    return [(loaded.read_s, loaded.build_s) for loaded in map(load_snapshot, [dsn] * runs)]


def time_lookups(lookup: Callable[[str], object], ids: list[str], runs: int) -> float:
    """Median ns per lookup, loop overhead included (see the baseline row)."""
    per_run = []
    for _ in range(runs):
        fresh = [("" + i).encode().decode() for i in ids]  # new str objects: hashed on lookup
        started = time.perf_counter_ns()
        for device_id in fresh:
            lookup(device_id)
        per_run.append((time.perf_counter_ns() - started) / len(fresh))
    return statistics.median(per_run)


def measure_lookups(snapshot: RegistrySnapshot, runs: int) -> dict[str, float]:
    ids = list(snapshot.contexts)
    random.Random(1).shuffle(ids)
    ids = ids * 20  # ~100,000 lookups per run
    devices = snapshot.devices

    def nothing(device_id: str) -> None:
        return None

    gc.disable()
    try:
        return {
            "baseline": time_lookups(nothing, ids, runs),
            "context": time_lookups(snapshot.context, ids, runs),
            "device": time_lookups(snapshot.device, ids, runs),
            "devices.get": time_lookups(devices.get, ids, runs),
            "unknown": time_lookups(snapshot.context, [i + "x" for i in ids[:5000]] * 20, runs),
        }
    finally:
        gc.enable()


async def measure_notify(dsn: str, runs: int) -> dict[str, list[float]]:
    metrics = Metrics(CollectorRegistry(), process=False)
    directory = RegistryDirectory(dsn, dsn, metrics)
    await directory.open()
    follow = asyncio.create_task(directory.follow(3600, Backoff(0.5, 5)))
    stalls: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        # The longest time the event loop could not run a 1 ms sleep: what ingest would feel.
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append(time.perf_counter() - started - 0.001)

    full_gcs: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        # Full collections stop every thread; a reload's new objects trigger them.
        if phase == "start":
            on_gc.started = time.perf_counter()  # type: ignore[attr-defined]
        elif info["generation"] == 2:
            full_gcs.append(time.perf_counter() - on_gc.started)  # type: ignore[attr-defined]

    gc.callbacks.append(on_gc)
    ticking = asyncio.create_task(ticker())
    result: dict[str, list[float]] = {
        "latency": [], "reload": [], "stall": [], "full_gcs": [], "full_gc_s": []
    }  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        device_id = conn.execute("SELECT min(device_id) FROM devices").fetchone()[0]  # type: ignore[index]
        for run in range(runs):
            await asyncio.sleep(0.5)
            stalls.clear()
            full_gcs.clear()
            current = directory.snapshot()
            before = (
                metrics.registry.get_sample_value("sensord_registry_reload_duration_seconds_sum")
                or 0.0
            )
            await asyncio.to_thread(
                conn.execute,
                "UPDATE devices SET model = %s WHERE device_id = %s",
                (f"BENCH-{run}", device_id),
            )
            committed = time.perf_counter()
            while directory.snapshot() is current:  # noqa: ASYNC110 - polling is the measurement
                await asyncio.sleep(0.0005)
            result["latency"].append(time.perf_counter() - committed)
            after = (
                metrics.registry.get_sample_value("sensord_registry_reload_duration_seconds_sum")
                or 0.0
            )
            result["reload"].append(after - before)
            result["stall"].append(max(stalls, default=0.0))
            result["full_gcs"].append(len(full_gcs))
            result["full_gc_s"].append(max(full_gcs, default=0.0))
            context = directory.context(device_id)
            assert context is not None and context.device.model == f"BENCH-{run}"
    result["tracked"] = [float(len(gc.get_objects()))]  # with the directory's snapshot alive
    stop.set()
    await ticking
    gc.callbacks.remove(on_gc)
    follow.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follow
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    dsn = create_database()
    try:
        migrate(dsn, shipped("migrations"))
        with tempfile.TemporaryDirectory(prefix="bench-context-") as workdir:
            summary, import_s = prepare(dsn, Path(workdir))
        print(summary, flush=True)
        memory = measure_memory(dsn, args.runs)
        print("memory measured", flush=True)
        loads = measure_load(dsn, args.runs)
        print("load measured", flush=True)
        lookups = measure_lookups(memory["snapshot"], args.runs)
        print("lookups measured", flush=True)
        stats = memory.pop("snapshot").stats  # the directory below holds the only snapshot
        gc.collect()
        notify = asyncio.run(measure_notify(dsn, args.runs))
        with psycopg.connect(dsn) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    finally:
        drop_database(dsn)
    report(args, stats, memory, loads, lookups, notify, import_s, server)
    return 0


def report(
    args: argparse.Namespace,
    stats: SnapshotStats,
    memory: dict[str, Any],
    loads: list[tuple[float, float]],
    lookups: dict[str, float],
    notify: dict[str, list[float]],
    import_s: float,
    server: str,
) -> None:
    med = statistics.median
    ms = 1000
    total = [read + build for read, build in loads]
    print(
        f"\n`python -m bench.context --runs {args.runs}` on {platform.node()}: {cpu_model()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL {server}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print(
        f"`full` district, seed 1: {stats.devices:,} devices, {stats.addresses:,} addresses, "
        f"{stats.residents:,} residents, {stats.grid_units} grid units, {stats.organisations} "
        f"organisations, {stats.staff} staff, {stats.responsibilities} responsibilities; "
        f"{memory['rows']:,} rows read per load (residents counted per dwelling and tag set "
        f"in SQL). Import (`sensord registry import`, for reference): {import_s:.2f} s.\n"
    )
    print("| measure | median | runs / notes |")
    print("|---|---:|---|")
    print(f"| load: DB → snapshot, total | {med(total) * ms:.0f} ms | "
          f"{' / '.join(f'{t * ms:.0f}' for t in total)} ms |")  # fmt: skip
    print(f"| … read (connect, 10 queries, decode) | {med(r for r, _ in loads) * ms:.0f} ms | "
          "one REPEATABLE READ, read-only transaction |")  # fmt: skip
    print(f"| … build (resolve every device) | {med(b for _, b in loads) * ms:.0f} ms | "
          "in a worker thread in the daemon |")  # fmt: skip
    print(f"| memory: tracemalloc retained (the snapshot) | "
          f"{memory['traced_retained'] / MIB:.1f} MiB | "
          f"{memory['traced_retained'] / stats.devices / 1024:.2f} KiB per device |")  # fmt: skip
    print(f"| memory: tracemalloc peak during a load | {memory['traced_peak'] / MIB:.1f} MiB | "
          "rows and snapshot both alive |")  # fmt: skip
    print(f"| memory: sum of sys.getsizeof, reachable objects | "
          f"{memory['deep_size'] / MIB:.1f} MiB | cross-check of the retained figure |"
          )  # fmt: skip
    print(f"| RSS: after the first load | +{memory['rss_first'] / MIB:.1f} MiB | "
          f"over {memory['rss_base'] / MIB:.0f} MiB before (interpreter, modules) |")  # fmt: skip
    print(f"| RSS: after {args.runs} more reloads | +{memory['rss_steady'] / MIB:.1f} MiB | "
          "each replaced snapshot freed; allocator high-water |")  # fmt: skip
    base = lookups["baseline"]
    for name, label in (
        ("context", "`snapshot.context(id)`"),
        ("device", "`snapshot.device(id)`"),
        ("devices.get", "`devices.get(id)` (the decoder's)"),
        ("unknown", "`snapshot.context(id)`, unknown id"),
    ):
        print(f"| lookup {label} | {lookups[name]:.0f} ns | {lookups[name] - base:.0f} ns "
              f"net of the {base:.0f} ns loop and call baseline; fresh id strings, "
              "random order, 100k lookups/run |")  # fmt: skip
    print(f"| NOTIFY → new snapshot in place | {med(notify['latency']) * ms:.0f} ms | "
          f"{' / '.join(f'{t * ms:.0f}' for t in notify['latency'])} ms; "
          f"includes the {DEBOUNCE_S * ms:.0f} ms debounce |")  # fmt: skip
    print(f"| … of which the reload (thread: read + build + swap) | "
          f"{med(notify['reload']) * ms:.0f} ms | "
          f"{' / '.join(f'{t * ms:.0f}' for t in notify['reload'])} ms |")  # fmt: skip
    print(f"| event loop's longest stall during a reload | {med(notify['stall']) * ms:.1f} ms | "
          f"{' / '.join(f'{t * ms:.1f}' for t in notify['stall'])} ms |")  # fmt: skip
    print(f"| full GC collections per reload, longest | "
          f"{med(notify['full_gcs']):.0f}, {med(notify['full_gc_s']) * ms:.1f} ms | "
          f"{' / '.join(f'{n:.0f}' for n in notify['full_gcs'])}; "
          f"{' / '.join(f'{t * ms:.1f}' for t in notify['full_gc_s'])} ms; "
          f"{notify['tracked'][0]:,.0f} GC-tracked objects in this process |")  # fmt: skip
    kinds = memory["kinds"]
    shown = ("DeviceContext", "DeviceRecord", "Place", "ResidentSummary", "Responsibilities",
             "Responsible", "StaffRef", "GridLink", "DeviceInfo", "str")  # fmt: skip
    print("\nObjects in the snapshot: " + ", ".join(f"{k} {kinds[k]:,}" for k in shown))


if __name__ == "__main__":
    sys.exit(main())
