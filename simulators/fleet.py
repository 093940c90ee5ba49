"""``python -m simulators fleet``: every registered device publishing, with incidents on demand.

Reads the registry (CSV files of ``sensord registry export`` or ``python -m
simulators district``, or the database), plays the schedule of
``simulators/schedule.py`` against the clock, publishes each message over
MQTT v5 with QoS 1, and writes the ground truth (docs/simulators.md).

This module is the I/O shell: the registry, the wall clock, the broker and
the truth file. What is published when, with which fields and which
expected outcome, is decided by the pure ``schedule`` and ``scenarios``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sensord.core.registry.csvfiles import parse_file
from sensord.core.registry.rows import ADDRESSES, DEVICES, GRID_UNITS, Entity
from simulators.scenarios import (
    DEFINITIONS,
    HOSTILE,
    FleetDevice,
    ScenarioError,
    iso,
    parse_seconds,
    parse_spec,
)
from simulators.schedule import PREFIX, FleetConfig, Plan, Truth, make_clock, messages, plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m simulators fleet``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--registry", type=Path, metavar="DIR", help="registry CSV directory")
    source.add_argument("--dsn", help="read the registry from this database instead")
    parser.add_argument("--host", default="127.0.0.1", help="MQTT broker (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--speedup", type=float, default=60.0, help="simulated seconds per wall second (≥ 1)"
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--duration", default="1h", help="simulated length of the run (90s, 15m, 2h; default 1h)"
    )
    length.add_argument("--wall-duration", help="wall-clock length instead (× speedup simulated)")
    parser.add_argument(
        "--start",
        default="auto",
        help="simulated start: auto (end at now), now, HH:MM (+08:00, latest valid), or ISO-8601",
    )
    parser.add_argument(
        "--telemetry-every", default="60s", help="simulated interval of each device's telemetry"
    )
    parser.add_argument(
        "--heartbeat-scale",
        type=float,
        default=1.0,
        help="× each device's registry heartbeat_s (0.1: ten times as often)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME[:k=v,...]",
        help="inject a scenario (repeatable); --list-scenarios shows them",
    )
    parser.add_argument("--truth", type=Path, metavar="FILE", help="ground truth file (JSON lines)")
    parser.add_argument("--window", type=int, default=1000, help="QoS 1 messages in flight")
    parser.add_argument("--max-payload-bytes", type=int, default=16_384)
    parser.add_argument("--topic-prefix", default=PREFIX)
    parser.add_argument("--dry-run", action="store_true", help="plan and count, publish nothing")
    parser.add_argument("--quiet", action="store_true", help="no per-incident summary lines")
    parser.add_argument(
        "--list-scenarios", action="store_true", help="print the scenarios and exit"
    )


def main(args: argparse.Namespace) -> int:
    """Run the fleet; 0 when every message was acknowledged by the broker."""
    if args.list_scenarios:
        print(describe_scenarios())
        return 0
    if args.registry is None and args.dsn is None:
        print("fleet: give --registry DIR or --dsn DSN", file=sys.stderr)
        return 2
    try:
        devices = read_csv_registry(args.registry) if args.registry else read_db_registry(args.dsn)
        run = make_plan(args, devices, datetime.now(UTC))
    except (ScenarioError, RegistryUnreadable) as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 2
    truth = Truth(run)
    source = str(args.registry) if args.registry else "database"
    print(
        f"fleet: {len(run.devices)} devices from {source}, {len(run.incidents)} incident(s), "
        f"{run.config.duration_s:.0f} s simulated at ×{run.clock.speedup:g} "
        f"(~{run.config.duration_s / run.clock.speedup:.1f} s wall)"
    )
    try:
        if args.dry_run:
            stats = play(run, None, truth)
        else:
            with StreamPublisher(args.host, args.port, window=args.window) as publisher:
                stats = play(run, publisher, truth)
    except (OSError, TimeoutError, RuntimeError) as exc:
        print(f"fleet: publishing failed: {exc}", file=sys.stderr)
        if args.truth:
            write_truth(args.truth, truth, interrupted=True)
        return 1
    except KeyboardInterrupt:
        print("fleet: interrupted", file=sys.stderr)
        if args.truth:
            write_truth(args.truth, truth, interrupted=True)
        return 130
    if args.truth:
        write_truth(args.truth, truth, **stats.record())
    summary(run, truth, stats, dry_run=args.dry_run, quiet=args.quiet)
    return 0


def make_plan(args: argparse.Namespace, devices: Sequence[FleetDevice], now: datetime) -> Plan:
    """The run the command line asks for; ScenarioError says what is wrong with it."""
    if args.wall_duration:
        duration = parse_seconds(args.wall_duration) * args.speedup
    else:
        duration = parse_seconds(args.duration)
    config = FleetConfig(
        seed=args.seed,
        duration_s=duration,
        telemetry_every_s=parse_seconds(args.telemetry_every),
        heartbeat_scale=args.heartbeat_scale,
        prefix=args.topic_prefix,
        max_payload_bytes=args.max_payload_bytes,
    )
    clock = make_clock(now, duration, args.speedup, args.start)
    return plan(devices, config, clock, [parse_spec(text) for text in args.scenario])


def describe_scenarios() -> str:
    """``--list-scenarios``: names, what they do, their parameters."""
    lines = ["scenarios (--scenario NAME[:key=value,...]; lists joined with +):"]
    for definition in DEFINITIONS.values():
        lines.append(f"  {definition.name:<20} {definition.summary}")
        params = ", ".join(definition.params) or "-"
        lines.append(f"  {'':<20} kinds {'/'.join(definition.kinds)}; own parameters: {params}")
    lines.append("  common: device=ID+ID, kind=K, place=TYPE, count=N, at=S|HH:MM, for=S")
    lines.append("malformed variants (only=A+B) and the dead-letter reason each must get:")
    lines += [f"  {variant:<20} {reason}" for variant, reason in HOSTILE.items()]
    return "\n".join(lines)


# --- the registry -----------------------------------------------------------------------------


class RegistryUnreadable(ScenarioError):
    """The registry files or database cannot be read."""


def read_csv_registry(directory: Path) -> list[FleetDevice]:
    """Devices with their place and street from ``devices.csv``, ``addresses.csv``,
    ``grid_units.csv`` (validated cell by cell as the importer does)."""

    def rows(entity: Entity[Any]) -> list[Any]:
        path = directory / entity.file
        try:
            parsed = parse_file(entity, path.read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise RegistryUnreadable(f"{path}: {exc.strerror}") from None
        if parsed.errors:
            raise RegistryUnreadable("; ".join(str(error) for error in parsed.errors[:5]))
        return list(parsed.rows.values())

    units = {unit.grid_id: unit for unit in rows(GRID_UNITS)}
    addresses = {address.address_id: address for address in rows(ADDRESSES)}

    def street(grid_id: str) -> str:
        unit = units.get(grid_id)
        for _ in range(len(units) + 1):
            if unit is None:
                break
            if unit.level == "comprehensive_grid":
                return str(unit.parent_id)
            unit = units.get(unit.parent_id)
        raise RegistryUnreadable(f"grid unit {grid_id} does not lead up to a street")

    devices = []
    for device in rows(DEVICES):
        address = addresses.get(device.address_id)
        if address is None:
            raise RegistryUnreadable(f"device {device.device_id}: unknown address")
        devices.append(
            FleetDevice(
                device.device_id,
                device.kind,
                street(address.building_group_id),
                address.address_id,
                address.place_type,
                device.heartbeat_s,
            )
        )
    return devices


def read_db_registry(dsn: str) -> list[FleetDevice]:
    """Every registered device, its street, place and heartbeat, from the database."""
    import psycopg

    query = (
        "SELECT d.device_id, d.kind, d.street, d.address_id, a.place_type, d.heartbeat_s "
        "FROM devices d LEFT JOIN addresses a ON a.address_id = d.address_id "
        "ORDER BY d.device_id"
    )
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return [FleetDevice(*row) for row in conn.execute(query)]
    except psycopg.Error as exc:
        raise RegistryUnreadable(f"cannot read the registry: {exc}") from None


# --- publishing -------------------------------------------------------------------------------


class StreamPublisher:
    """paho-mqtt, MQTT v5, QoS 1; at most ``window`` messages unacknowledged at any time.

    ``send`` blocks once the window is full until the oldest is acknowledged,
    so memory stays bounded however long the run; ``flush`` waits for all.
    """

    def __init__(
        self, host: str, port: int, *, window: int = 1000, timeout_s: float = 30.0
    ) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sim-fleet-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._host, self._port, self._window, self._timeout_s = host, port, window, timeout_s
        self._pending: deque[mqtt.MQTTMessageInfo] = deque()

    def __enter__(self) -> StreamPublisher:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        deadline = time.monotonic() + 10
        while not self._client.is_connected():
            if time.monotonic() > deadline:
                self._client.loop_stop()
                raise TimeoutError(f"no CONNACK from {self._host}:{self._port}")
            time.sleep(0.01)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def send(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish refused: {mqtt.error_string(info.rc)}")
        self._pending.append(info)
        while len(self._pending) > self._window:
            self._settle(self._pending.popleft())

    def flush(self) -> None:
        while self._pending:
            self._settle(self._pending.popleft())

    def _settle(self, info: mqtt.MQTTMessageInfo) -> None:
        info.wait_for_publish(self._timeout_s)
        if not info.is_published():
            raise TimeoutError(f"broker did not acknowledge message {info.mid}")


@dataclass
class Stats:
    """How the run went in wall-clock terms."""

    started: datetime
    elapsed_s: float
    published: int
    max_lag_s: float

    @property
    def rate(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def record(self) -> dict[str, Any]:
        return {
            "wall_started": iso(self.started),
            "wall_elapsed_s": round(self.elapsed_s, 3),
            "publish_rate_msg_s": round(self.rate, 1),
            "max_lag_s": round(self.max_lag_s, 3),
        }


def play(
    run: Plan,
    publisher: StreamPublisher | None,
    truth: Truth,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Stats:
    """Publish every message of the run no earlier than its wall time (``--dry-run``: none).

    A message is due ``at_s / speedup`` after the start; when publishing falls
    behind, messages go out as fast as the broker acknowledges them and the
    largest delay is reported (``ts`` stays as scheduled: further in the
    past than planned, never in the future).
    """
    started, t0 = datetime.now(UTC), clock()
    speedup, lag = run.clock.speedup, 0.0
    published = 0
    for message in messages(run):
        if publisher is not None:
            delay = t0 + message.at_s / speedup - clock()
            if delay > 0.001:
                sleep(delay)
            else:
                lag = max(lag, -delay)
            publisher.send(message.topic, message.payload)
        truth.observe(message)
        published += 1
    if publisher is not None:
        publisher.flush()
    return Stats(started, clock() - t0, published, lag)


# --- output -----------------------------------------------------------------------------------


def write_truth(path: Path, truth: Truth, **extra: Any) -> None:
    """The truth file: a ``run`` line, one ``incident`` line each, a ``totals`` line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in truth.records(**extra):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def summary(run: Plan, truth: Truth, stats: Stats, *, dry_run: bool, quiet: bool) -> None:
    """What was published, per kind and per incident, and how fast."""
    totals = truth.totals_record()
    first = run.run_record()
    verb = "planned (dry run)" if dry_run else "published"
    print(
        f"{verb} {totals['published_total']} messages ({totals['published_bytes']:,} bytes) "
        f"in {stats.elapsed_s:.2f} s: {stats.rate:,.0f} msg/s; max lag {stats.max_lag_s:.3f} s"
    )
    print(f"  simulated {first['start']['ts']} -> {first['end']['ts']}")
    print("  by topic kind: " + _counts(totals["published"]))
    print(f"  readings to store: {totals['readings_total']} ({_counts(totals['readings'])})")
    print(f"  exact duplicates: {totals['duplicates_published']}")
    dead = _counts(totals["dead_letters"]) or "-"
    print(f"  dead letters: {totals['dead_letters_total']} ({dead})")
    if quiet:
        return
    for record in truth.incident_records():
        expected = record["expected"]
        outcome = (
            f"alert {expected['alert']}"
            if expected.get("alert")
            else f"dead letter {expected['dead_letter']} ×{expected['count']}"
            if "dead_letter" in expected
            else f"stored once, {expected['copies']} copies"
            if "stored" in expected
            else "no alert"
        )
        variant = f" {record['params']['variant']}" if "variant" in record["params"] else ""
        print(
            f"  #{record['id']:<3} {record['scenario']}{variant} {record['device_id']} "
            f"{record['start']['ts']} -> {record['end']['ts']}: {outcome}"
        )


def _counts(counter: dict[str, int] | Iterable[tuple[str, int]]) -> str:
    items = counter.items() if isinstance(counter, dict) else counter
    return ", ".join(f"{name} {count}" for name, count in items)
