"""The fleet's schedule: which device publishes what, when, and the ground truth of it.

Pure: the simulated clock is a :class:`Clock` built from a ``now`` passed in;
:func:`plan` places the requested scenarios on devices and times;
:func:`messages` yields every message of the run in simulated-time order,
lazily (memory is bounded by the number of devices, not of messages);
:class:`Truth` counts what was published and renders the truth records.
``simulators/fleet.py`` does the I/O: reads the registry, paces and
publishes, writes the truth file.

Simulated time: ``ts = clock.start + at_s`` where ``at_s`` runs ``speedup``
times faster than wall time from ``clock.wall0``. sensord refuses ``ts``
more than ``ingest.max_future_s`` (60 s) ahead of receipt or 30 days behind
it (``clock_skew``), so a clock is only accepted if every ``ts`` of the run
stays at most :data:`MAX_AHEAD_S` ahead of the wall time it is due at and at most
:data:`MAX_BEHIND` behind it. ``--start auto`` (the default) back-dates the
start so that the simulated end coincides with the wall-clock end.
"""

from __future__ import annotations

import heapq
import json
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any

from simulators.protocol import normal_fields
from simulators.scenarios import (
    DEFINITIONS,
    HOSTILE,
    INDOOR_CHARGING_PLACES,
    LOCAL,
    NIGHT_FROM,
    NIGHT_UNTIL,
    Behaviour,
    ClockSkew,
    Duplicates,
    EbikeCharging,
    Entrapment,
    FleetDevice,
    Incident,
    KitchenFire,
    LaneBlocked,
    LowBattery,
    Malformed,
    ScenarioError,
    ScenarioSpec,
    Silence,
    hostile,
    is_night,
    iso,
    number,
    parse_clock,
    parse_seconds,
    parse_spec,
    topic_of,
)

PREFIX = "sensord/v1"
MAX_AHEAD_S = 30.0  # sensord allows 60 s (ingest.max_future_s); margin for clock differences
MAX_BEHIND = timedelta(days=29)  # sensord allows 30 days
DEFAULT_HEARTBEAT_S = {"smoke": 3600, "ebike": 300, "elevator": 60, "fire_lane": 600}
TRUTH_VERSION = 1
# The truth assumes a device is offline after this many registry heartbeat_s without a message.
OFFLINE_AFTER_HEARTBEATS = 2
_EPS = 1e-6


class ScheduleError(ScenarioError):
    """The run cannot be scheduled as asked (clock out of sensord's window, no targets...)."""


# --- the simulated clock ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clock:
    """Simulated time ``start + at_s``; ``at_s`` is due at wall time ``wall0 + at_s / speedup``."""

    wall0: datetime
    start: datetime
    speedup: float

    def ts(self, at_s: float) -> datetime:
        return self.start + timedelta(seconds=at_s)

    def wall(self, at_s: float) -> datetime:
        return self.wall0 + timedelta(seconds=at_s / self.speedup)


def make_clock(now: datetime, duration_s: float, speedup: float, start: str = "auto") -> Clock:
    """The run's clock from the wall-clock ``now`` and ``--start``.

    ``auto``: the simulated end is the wall-clock end (start back-dated by
    ``duration × (1 − 1/speedup)``); ``now``: simulated time starts at now;
    ``HH:MM``: the latest such street time from which the run stays valid;
    otherwise an ISO-8601 instant with offset.
    """
    if now.tzinfo is None:
        raise ScheduleError("now must be timezone-aware")
    if speedup < 1:
        raise ScheduleError("--speedup must be at least 1")
    if duration_s <= 0:
        raise ScheduleError("--duration must be positive")
    ahead = duration_s * (1 - 1 / speedup)  # how much faster than the wall simulated time gets
    latest = now + timedelta(seconds=MAX_AHEAD_S - ahead)
    wanted = start.strip()
    if wanted == "auto":
        begin = now - timedelta(seconds=ahead)
    elif wanted == "now":
        begin = now
    elif (hour_minute := parse_clock(wanted)) is not None:
        local = latest.astimezone(LOCAL)
        begin = datetime.combine(local.date(), time(*hour_minute), LOCAL)
        if begin > latest:
            begin -= timedelta(days=1)
    else:
        try:
            begin = datetime.fromisoformat(wanted)
        except ValueError:
            raise ScheduleError(f"--start: not auto, now, HH:MM or ISO-8601: {start!r}") from None
        if begin.tzinfo is None:
            raise ScheduleError("--start needs an offset, e.g. 2026-11-26T22:00:00+08:00")
    clock = Clock(now, begin.astimezone(LOCAL), speedup)
    check_clock(clock, duration_s)
    return clock


def check_clock(clock: Clock, duration_s: float) -> None:
    """Refuse a clock whose ``ts`` would leave sensord's window at either end of the run."""
    for at_s in (0.0, duration_s):
        ahead = (clock.ts(at_s) - clock.wall(at_s)).total_seconds()
        if ahead > MAX_AHEAD_S + _EPS:
            raise ScheduleError(
                f"simulated time would run {ahead:.0f} s ahead of the wall clock "
                f"(sensord dead-letters ts > 60 s ahead as clock_skew): use --start auto, "
                f"an earlier --start, or a shorter --duration"
            )
        if -ahead > MAX_BEHIND.total_seconds() + _EPS:
            raise ScheduleError(
                f"simulated time would lag the wall clock by {-ahead / 86400:.1f} days "
                f"(sensord dead-letters ts > 30 days old): use a later --start or a "
                f"shorter --duration"
            )


# --- configuration and plan ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What every device does, besides the scenarios."""

    seed: int = 1
    duration_s: float = 3600.0  # simulated
    telemetry_every_s: float = 60.0  # simulated, per device
    heartbeat_scale: float = 1.0  # × the registry's heartbeat_s
    prefix: str = PREFIX
    max_payload_bytes: int = 16_384


@dataclass(frozen=True)
class Plan:
    """A whole run: devices, settings, clock and incidents. :func:`messages` plays it."""

    devices: tuple[FleetDevice, ...]
    config: FleetConfig
    clock: Clock
    specs: tuple[ScenarioSpec, ...]
    incidents: tuple[Incident, ...]

    def heartbeat_every(self, device: FleetDevice) -> float:
        base = device.heartbeat_s or DEFAULT_HEARTBEAT_S[device.kind]
        return max(1.0, base * self.config.heartbeat_scale)

    def run_record(self) -> dict[str, Any]:
        """The truth file's first line: everything needed to re-plan the same run."""
        c = self.config
        return {
            "record": "run",
            "version": TRUTH_VERSION,
            "seed": c.seed,
            "devices": len(self.devices),
            "devices_by_kind": dict(sorted(Counter(d.kind for d in self.devices).items())),
            "speedup": self.clock.speedup,
            "duration_s": c.duration_s,
            "telemetry_every_s": c.telemetry_every_s,
            "heartbeat_scale": c.heartbeat_scale,
            "prefix": c.prefix,
            "max_payload_bytes": c.max_payload_bytes,
            "clock": {
                "wall0": self.clock.wall0.isoformat(),
                "start": self.clock.start.isoformat(),
            },
            "start": moment(self.clock, 0.0),
            "end": moment(self.clock, c.duration_s),
            "scenarios": [spec.text for spec in self.specs],
        }


def moment(clock: Clock, at_s: float) -> dict[str, str]:
    """A truth-file instant: simulated ``ts`` and the wall-clock time it is due at."""
    return {"ts": iso(clock.ts(at_s)), "wall": iso(clock.wall(at_s))}


def plan_from_run(record: Mapping[str, Any], devices: Sequence[FleetDevice]) -> Plan:
    """The plan a truth file's ``run`` record describes (same devices: same messages)."""
    config = FleetConfig(
        seed=int(record["seed"]),
        duration_s=float(record["duration_s"]),
        telemetry_every_s=float(record["telemetry_every_s"]),
        heartbeat_scale=float(record["heartbeat_scale"]),
        prefix=str(record["prefix"]),
        max_payload_bytes=int(record["max_payload_bytes"]),
    )
    clock = Clock(
        datetime.fromisoformat(record["clock"]["wall0"]),
        datetime.fromisoformat(record["clock"]["start"]),
        float(record["speedup"]),
    )
    return plan(devices, config, clock, [parse_spec(text) for text in record["scenarios"]])


def plan(
    devices: Sequence[FleetDevice],
    config: FleetConfig,
    clock: Clock,
    specs: Sequence[ScenarioSpec],
) -> Plan:
    """Place each scenario on its targets and in time; deterministic for ``config.seed``.

    Each scenario draws from its own generator (seed, position, name), so
    adding a scenario does not move the others. A device is the target of
    one scenario at most, unless named explicitly with ``device=``.
    """
    if not devices:
        raise ScheduleError("the registry has no devices")
    if config.telemetry_every_s < 1:
        raise ScheduleError("--telemetry-every must be at least 1 s")
    if config.heartbeat_scale <= 0:
        raise ScheduleError("--heartbeat-scale must be positive")
    check_clock(clock, config.duration_s)
    ordered = tuple(sorted(devices, key=lambda d: d.device_id))
    known = {d.device_id for d in ordered}
    if len(known) != len(ordered):
        raise ScheduleError("device ids are not unique")
    used: set[str] = set()
    incidents: list[Incident] = []
    for index, spec in enumerate(specs):
        rng = random.Random(f"{config.seed}/{index}/{spec.name}")
        placer = _Placer(spec, config, clock, rng, len(incidents), known)
        targets = _targets(spec, ordered, used, rng)
        new = placer.incidents(targets)
        incidents += new
        if DEFINITIONS[spec.name].per_device:
            used.update(incident.device.device_id for incident in new)
    return Plan(ordered, config, clock, tuple(specs), tuple(incidents))


def _targets(
    spec: ScenarioSpec, devices: Sequence[FleetDevice], used: set[str], rng: random.Random
) -> list[FleetDevice]:
    definition = DEFINITIONS[spec.name]
    by_id = {d.device_id: d for d in devices}
    if "device" in spec.params:
        chosen = []
        for device_id in spec.params["device"].split("+"):
            device = by_id.get(device_id)
            if device is None:
                raise ScheduleError(f"{spec.text}: no device {device_id!r} in the registry")
            if device.kind not in definition.kinds:
                raise ScheduleError(f"{spec.text}: {device_id} is a {device.kind} device")
            chosen.append(device)
        return chosen
    kinds = tuple(spec.params["kind"].split("+")) if "kind" in spec.params else definition.kinds
    if not set(kinds) <= set(definition.kinds):
        raise ScheduleError(f"{spec.text}: {spec.name} applies to {', '.join(definition.kinds)}")
    places = tuple(spec.params["place"].split("+")) if "place" in spec.params else definition.places
    candidates = [d for d in devices if d.kind in kinds and (not places or d.place_type in places)]
    if not definition.per_device:  # malformed: each variant picks one of these
        return [d for d in candidates if d.device_id not in used] or candidates
    candidates = [d for d in candidates if d.device_id not in used]
    count = int(number(spec, "count", definition.default_count, 1, 10_000))
    if len(candidates) < count:
        where = f" at {'/'.join(places)}" if places else ""
        raise ScheduleError(
            f"{spec.text}: needs {count} {'/'.join(kinds)} device(s){where} not already "
            f"used by another scenario; found {len(candidates)}"
        )
    return rng.sample(candidates, count)


class _Placer:
    """Turns one spec and its targets into incidents (times, parameters, expected outcome)."""

    def __init__(
        self,
        spec: ScenarioSpec,
        config: FleetConfig,
        clock: Clock,
        rng: random.Random,
        first_id: int,
        known: set[str],
    ) -> None:
        self.spec, self.config, self.clock, self.rng = spec, config, clock, rng
        self.next_id = first_id + 1
        self.known = known

    def incidents(self, targets: list[FleetDevice]) -> list[Incident]:
        name = self.spec.name
        if name == "malformed":
            return self.malformed(targets)
        return [getattr(self, name)(device) for device in targets]

    # --- timing

    def span(self, length: float) -> float:
        """Start (offset) of an incident of ``length``: ``at=`` or random in the first part."""
        duration = self.config.duration_s
        if length >= duration:
            raise ScheduleError(
                f"{self.spec.text}: needs {length:.0f} s of simulated time but the run has "
                f"{duration:.0f} s; raise --duration"
            )
        text = self.spec.params.get("at")
        if text is None:
            latest = duration - length - 1.0
            return min(latest, self.rng.uniform(0.1, 0.4) * duration)
        at = self.at(text)
        if at + length >= duration:
            raise ScheduleError(f"{self.spec.text}: at={text} leaves too little of the run")
        return at

    def at(self, text: str) -> float:
        hour_minute = parse_clock(text)
        if hour_minute is None:
            at = parse_seconds(text)
        else:
            local = self.clock.start.astimezone(LOCAL)
            when = datetime.combine(local.date(), time(*hour_minute), LOCAL)
            if when < local:
                when += timedelta(days=1)
            at = (when - local).total_seconds()
        if at >= self.config.duration_s:
            raise ScheduleError(f"{self.spec.text}: at={text} is after the end of the run")
        return at

    def length(self, default: float, low: float = 10.0) -> float:
        return number(self.spec, "for", default, low, 365 * 86400.0)

    def make(
        self,
        device: FleetDevice,
        start: float,
        end: float | None,
        behaviour: Behaviour,
        params: dict[str, Any],
        expected: dict[str, Any],
    ) -> Incident:
        incident = Incident(
            self.next_id, self.spec.name, device, start, end, behaviour, params, expected
        )
        self.next_id += 1
        return incident

    def alert(self, behaviour: Behaviour, **more: Any) -> dict[str, Any]:
        return {"alert": behaviour.alert, "severity_hint": behaviour.severity, **more}

    # --- one method per scenario

    def kitchen_fire(self, device: FleetDevice) -> Incident:
        rise = number(self.spec, "rise", 90, 20, 600)
        clear = number(self.spec, "clear", 60, 20, 3600)
        hold = number(self.spec, "hold", 120, 0, 86400)
        if "for" in self.spec.params:
            hold = self.length(rise + hold + clear) - rise - clear
            if hold < 0:
                raise ScheduleError(f"{self.spec.text}: for= is shorter than rise + clear")
        peak = number(self.spec, "peak", round(self.rng.uniform(15, 25), 1), 11, 100)
        fire = KitchenFire(rise_s=rise, hold_s=hold, clear_s=clear, peak=peak)
        start = self.span(fire.length)
        params = {"rise_s": rise, "hold_s": hold, "clear_s": clear, "peak_obscuration": peak}
        return self.make(device, start, start + fire.length, fire, params, self.alert(fire))

    def ebike_charging(self, device: FleetDevice) -> Incident:
        length = self.length(1800, 60)
        power = number(self.spec, "power", round(self.rng.uniform(150, 400), 1), 1, 5000)
        charge = EbikeCharging(power_w=power)
        start = self.night(length) if "at" not in self.spec.params else self.span(length)
        indoor = device.place_type in INDOOR_CHARGING_PLACES
        night = is_night(self.clock.ts(start)) and is_night(self.clock.ts(start + length - 1))
        expected: dict[str, Any] = self.alert(charge) if indoor and night else {"alert": None}
        if not indoor:
            expected["note"] = f"charging at a {device.place_type} is allowed"
        elif not night:
            expected["note"] = "charging outside 22:00-06:00 is not an alert"
        params = {"power_w": power, "for_s": length}
        return self.make(device, start, start + length, charge, params, expected)

    def night(self, length: float) -> float:
        """The first start, a little into a night, with the whole charge inside that night."""
        duration = self.config.duration_s
        begin = self.clock.start.astimezone(LOCAL)
        day = begin.date() - timedelta(days=1)
        while (day_start := datetime.combine(day, time(NIGHT_FROM), LOCAL)) < begin + timedelta(
            seconds=duration
        ):
            night_end = datetime.combine(day + timedelta(days=1), time(NIGHT_UNTIL), LOCAL)
            low = max(0.0, (day_start - begin).total_seconds())
            high = min(duration - 1.0, (night_end - begin).total_seconds()) - length
            if high >= low:
                return low + self.rng.uniform(0, min(high - low, 1800.0))
            day += timedelta(days=1)
        raise ScheduleError(
            f"{self.spec.text}: the run has no {length:.0f} s of simulated night "
            f"({NIGHT_FROM:02d}:00-{NIGHT_UNTIL:02d}:00 +08:00); pass --start 22:00, a longer "
            f"--duration, or at=..."
        )

    def elevator_entrapment(self, device: FleetDevice) -> Incident:
        length = self.length(600)
        floor = int(number(self.spec, "floor", self.rng.randint(2, 17), -10, 200))
        code = self.spec.params.get("fault_code", self.rng.choice(("E21", "E30", "E35")))
        if len(code) > 64:
            raise ScheduleError(f"{self.spec.text}: fault_code is at most 64 characters")
        trapped = Entrapment(floor=floor, fault_code=code)
        start = self.span(length)
        params = {"floor": floor, "fault_code": code, "for_s": length}
        return self.make(device, start, start + length, trapped, params, self.alert(trapped))

    def fire_lane_blocked(self, device: FleetDevice) -> Incident:
        length = self.length(900)
        blocked = LaneBlocked()
        start = self.span(length)
        return self.make(
            device, start, start + length, blocked, {"for_s": length}, self.alert(blocked)
        )

    def silent(self, device: FleetDevice) -> Incident:
        text = self.spec.params.get("for", "forever")
        forever = text in ("forever", "good")
        length = 60.0 if forever else self.length(0, 1)
        start = self.span(length)
        end = None if forever else start + length
        severity = "major" if device.kind in ("smoke", "elevator") else "minor"
        heartbeat_s = device.heartbeat_s or DEFAULT_HEARTBEAT_S[device.kind]
        expected = {
            "alert": "device_offline",  # Truth drops it if the silence is too short
            "severity_hint": severity,
            "heartbeat_s": heartbeat_s,
            "heartbeat_every_s": max(1.0, heartbeat_s * self.config.heartbeat_scale),
            "assumed_offline_after_s": OFFLINE_AFTER_HEARTBEATS * heartbeat_s,
        }
        params = {"for_s": None if forever else length, "for_good": forever}
        return self.make(device, start, end, Silence(), params, expected)

    def low_battery(self, device: FleetDevice) -> Incident:
        begin = number(self.spec, "from", 25, 15.5, 100)
        end_pct = number(self.spec, "to", 8, 0, 14.5)
        decline = self.length(min(1800.0, self.config.duration_s * 0.5), 1)
        battery = LowBattery(start_pct=begin, end_pct=end_pct, decline_s=decline)
        start = self.span(battery.crossing_u() + 1)
        params = {"from_pct": begin, "to_pct": end_pct, "decline_s": decline}
        return self.make(device, start, None, battery, params, self.alert(battery, below=15))

    def clock_skew(self, device: FleetDevice) -> Incident:
        length = self.length(600)
        hours = number(self.spec, "hours", 3, 0.25, 24 * 365)
        skew = ClockSkew(skew_s=hours * 3600)
        start = self.span(length)
        expected = {"dead_letter": "clock_skew", "count": 0}
        params = {"hours_ahead": hours, "for_s": length}
        return self.make(device, start, start + length, skew, params, expected)

    def duplicates(self, device: FleetDevice) -> Incident:
        copies = int(number(self.spec, "copies", 2, 1, 100))
        gap = number(self.spec, "gap", 5, 0, 3600)
        start = self.span(gap * copies + 1)
        expected = {"stored": 1, "copies": copies}
        params = {"copies": copies, "gap_s": gap}
        # Zero length: the copies follow the device's first valid message from ``start`` on.
        behaviour = Duplicates(copies=copies, gap_s=gap)
        return self.make(device, start, start, behaviour, params, expected)

    def malformed(self, targets: list[FleetDevice]) -> list[Incident]:
        only = self.spec.params.get("only")
        variants = only.split("+") if only else list(HOSTILE)
        unknown = [v for v in variants if v not in HOSTILE]
        if unknown:
            raise ScheduleError(
                f"{self.spec.text}: unknown variant(s) {', '.join(unknown)}; "
                f"known: {', '.join(HOSTILE)}"
            )
        each = int(number(self.spec, "each", 1, 1, 1000))
        start = self.span(len(variants) * each + 1)
        if not targets:
            raise ScheduleError(f"{self.spec.text}: no device matches")
        incidents = []
        for index, variant in enumerate(variants):
            device = self.rng.choice(targets)
            ghost = f"GHOST-{self.rng.randrange(16**8):08x}"
            while ghost in self.known:
                ghost = f"GHOST-{self.rng.randrange(16**8):08x}"
            begin = start + index * each
            incidents.append(
                self.make(
                    device,
                    begin,
                    begin + each - 1,
                    Malformed(variant=variant, each=each),
                    {"variant": variant, "each": each, "ghost_id": ghost},
                    {"dead_letter": HOSTILE[variant], "count": each},
                )
            )
        return incidents


# --- the messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message of the run and what sensord must make of it.

    ``outcome``: ``reading`` (stored once), ``duplicate`` (an exact copy of an
    earlier reading: not stored again) or ``dead_letter`` (with ``reason``).
    """

    at_s: float
    topic: str
    payload: bytes
    device_id: str
    kind: str  # the topic's kind ("heartbeat", a device kind, or what a hostile topic says)
    outcome: str
    reason: str | None = None
    incident: int | None = None
    seq: int | None = None
    ts: str | None = None


@dataclass
class _DeviceState:
    device: FleetDevice
    seq: int
    battery: int
    heartbeat_every: float
    incidents: list[Incident]
    telemetry_marks: list[float]  # report-on-change moments, ascending
    heartbeat_marks: list[float]
    pending_duplicates: list[Incident] = field(default_factory=list)


_TELEMETRY, _HEARTBEAT, _INJECT, _REPLAY = range(4)


def messages(run: Plan) -> Iterator[Message]:
    """Every message of the run, in order of simulated time; deterministic for the plan."""
    return _Player(run).play()


class _Player:
    """A heap of the next event of each device (telemetry, heartbeat), of hostile
    injections and of pending replays; popping it in order plays the run."""

    def __init__(self, run: Plan) -> None:
        self.run = run
        self.rng = random.Random(run.config.seed)
        self.end = run.config.duration_s
        self.heap: list[tuple[float, int, int, int]] = []
        self.order = 0
        self.replays: dict[int, Message] = {}
        by_device: dict[str, list[Incident]] = {}
        for incident in run.incidents:
            if incident.scenario != "malformed":
                by_device.setdefault(incident.device.device_id, []).append(incident)
        self.states: list[_DeviceState] = []
        self.index_of: dict[str, int] = {}
        for device in run.devices:
            mine = by_device.get(device.device_id, [])
            state = _DeviceState(
                device,
                seq=self.rng.randrange(100_000),
                battery=self.rng.randint(45, 100),
                heartbeat_every=run.heartbeat_every(device),
                incidents=mine,
                telemetry_marks=sorted(_marks(mine, telemetry=True)),
                heartbeat_marks=sorted(_marks(mine, telemetry=False)),
                pending_duplicates=[i for i in mine if isinstance(i.behaviour, Duplicates)],
            )
            index = len(self.states)
            self.index_of[device.device_id] = index
            self.states.append(state)
            first = self.rng.uniform(0, run.config.telemetry_every_s)
            self.push(min(first, _next_mark(state.telemetry_marks, -1.0)), _TELEMETRY, index)
            first = self.rng.uniform(0, state.heartbeat_every)
            self.push(min(first, _next_mark(state.heartbeat_marks, -1.0)), _HEARTBEAT, index)
        self.injections = [i for i in run.incidents if i.scenario == "malformed"]
        for index, incident in enumerate(self.injections):
            assert isinstance(incident.behaviour, Malformed)
            for k in range(incident.behaviour.each):
                self.push(incident.start_s + k, _INJECT, index)

    def push(self, at_s: float, what: int, index: int) -> None:
        if at_s < self.end:
            heapq.heappush(self.heap, (at_s, self.order, what, index))
            self.order += 1

    def play(self) -> Iterator[Message]:
        while self.heap:
            at_s, _, what, index = heapq.heappop(self.heap)
            if what == _REPLAY:
                yield self.replays.pop(index)
            elif what == _INJECT:
                incident = self.injections[index]
                state = self.states[self.index_of[incident.device.device_id]]
                yield _hostile(self.run, state, incident, at_s, self.rng)
            else:
                yield from self.device_event(at_s, what == _TELEMETRY, index)

    def device_event(self, at_s: float, telemetry: bool, index: int) -> Iterator[Message]:
        state = self.states[index]
        active = [i for i in state.incidents if i.active(at_s)]
        if not any(i.behaviour.silent for i in active):
            message = _emit(self.run, state, at_s, active, telemetry, self.rng)
            yield message
            if message.outcome == "reading" and state.pending_duplicates:
                self.schedule_replays(state, message)
        if telemetry:
            intervals = [i.behaviour.interval_s for i in active if i.behaviour.interval_s]
            step = min([self.run.config.telemetry_every_s, *intervals])
            self.push(min(at_s + step, _next_mark(state.telemetry_marks, at_s)), _TELEMETRY, index)
        else:
            step = state.heartbeat_every
            self.push(min(at_s + step, _next_mark(state.heartbeat_marks, at_s)), _HEARTBEAT, index)

    def schedule_replays(self, state: _DeviceState, message: Message) -> None:
        """Copies of the device's first valid message at or after a duplicates incident starts."""
        at_s = message.at_s
        for incident in [i for i in state.pending_duplicates if i.start_s <= at_s]:
            state.pending_duplicates.remove(incident)
            behaviour = incident.behaviour
            assert isinstance(behaviour, Duplicates)
            for n in range(1, behaviour.copies + 1):
                replay_at = min(at_s + behaviour.gap_s * n, max(at_s, self.end - 1e-3))
                self.replays[self.order] = replace(
                    message, at_s=replay_at, outcome="duplicate", incident=incident.id
                )
                self.push(replay_at, _REPLAY, self.order)


def _marks(incidents: list[Incident], *, telemetry: bool) -> Iterator[float]:
    for incident in incidents:
        behaviour = incident.behaviour
        relative = behaviour.telemetry_at() if telemetry else behaviour.heartbeat_at()
        yield from (incident.start_s + r for r in relative)
        if telemetry and incident.end_s is not None and (relative or behaviour.silent):
            yield incident.end_s  # the device reports the end (release, clear, back online)


def _next_mark(marks: list[float], after: float) -> float:
    for mark in marks:  # a handful per device at most
        if mark > after + _EPS:
            return mark
    return float("inf")


def _emit(
    run: Plan,
    state: _DeviceState,
    at_s: float,
    active: list[Incident],
    telemetry: bool,
    rng: random.Random,
) -> Message:
    device, clock = state.device, run.clock
    kind = device.kind if telemetry else "heartbeat"
    fields: dict[str, Any] = normal_fields(kind, rng)
    if "battery_pct" in fields:
        fields["battery_pct"] = state.battery
    for incident in active:
        u = at_s - incident.start_s
        behaviour = incident.behaviour
        fields.update(behaviour.telemetry(u) if telemetry else behaviour.heartbeat(u))
    ended = [
        i
        for i in state.incidents
        if telemetry and i.end_s is not None and abs(i.end_s - at_s) < _EPS
    ]
    for incident in ended:
        fields.update(incident.behaviour.ended())
    state.seq += 1
    skewed = [i for i in active if i.behaviour.skew_s]
    ts = clock.ts(at_s)
    outcome, reason = "reading", None
    if skewed:
        ts = clock.wall(at_s) + timedelta(seconds=skewed[0].behaviour.skew_s)
        outcome, reason = "dead_letter", "clock_skew"
    stamp = iso(ts)
    payload = _encode({"ts": stamp, "seq": state.seq, **fields})
    owners = skewed or active or ended
    return Message(
        at_s,
        topic_of(run.config.prefix, device.street, kind, device.device_id),
        payload,
        device.device_id,
        kind,
        outcome,
        reason,
        owners[0].id if owners else None,
        state.seq,
        stamp,
    )


def _hostile(
    run: Plan, state: _DeviceState, incident: Incident, at_s: float, rng: random.Random
) -> Message:
    device = state.device
    state.seq += 1
    fields = {"ts": iso(run.clock.ts(at_s)), "seq": state.seq, **normal_fields(device.kind, rng)}
    topic, payload, reason = hostile(
        incident.params["variant"],
        device,
        fields,
        prefix=run.config.prefix,
        max_payload_bytes=run.config.max_payload_bytes,
        ghost_id=incident.params["ghost_id"],
    )
    kind = topic.split("/")[-2]
    return Message(at_s, topic, payload, device.device_id, kind, "dead_letter", reason, incident.id)


def _encode(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


# --- ground truth ---------------------------------------------------------------------------------


@dataclass
class _Observed:
    published: int = 0
    readings: int = 0
    duplicates: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    first_at: float | None = None
    last_at: float | None = None
    original: dict[str, Any] | None = None


class Truth:
    """What the run published, as sensord must see it; ``observe`` each message once sent."""

    def __init__(self, run: Plan) -> None:
        self.run = run
        self.published: Counter[str] = Counter()
        self.readings: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.duplicates = 0
        self.bytes = 0
        self.observed = {incident.id: _Observed() for incident in run.incidents}
        self.silences = {i.device.device_id: i for i in run.incidents if i.behaviour.silent}
        self.last_seen: dict[int, float] = {}  # silent incident -> its device's last message

    def observe(self, message: Message) -> None:
        self.published[message.kind] += 1
        self.bytes += len(message.payload)
        if message.outcome == "reading":
            self.readings[message.kind] += 1
        elif message.outcome == "duplicate":
            self.duplicates += 1
        else:
            self.dead_letters[message.reason or "?"] += 1
        silence = self.silences.get(message.device_id)
        if silence is not None and message.at_s < silence.start_s and message.outcome == "reading":
            self.last_seen[silence.id] = message.at_s
        if message.incident is None:
            return
        seen = self.observed[message.incident]
        seen.published += 1
        if message.outcome == "reading":
            seen.readings += 1
        elif message.outcome == "duplicate":
            seen.duplicates += 1
            if seen.original is None:
                seen.original = {"topic": message.topic, "seq": message.seq, "ts": message.ts}
        else:
            seen.dead_letters[message.reason or "?"] += 1
        if seen.first_at is None:
            seen.first_at = message.at_s
        seen.last_at = message.at_s

    @property
    def total(self) -> int:
        return sum(self.published.values())

    def incident_records(self) -> list[dict[str, Any]]:
        """One object per incident; see docs/simulators.md for the fields."""
        clock, duration = self.run.clock, self.run.config.duration_s
        records = []
        for incident in self.run.incidents:
            seen = self.observed[incident.id]
            device = incident.device
            start, end = incident.start_s, incident.end_s
            if incident.scenario == "duplicates":
                start = seen.first_at if seen.first_at is not None else start
                end = seen.last_at if seen.last_at is not None else start
            expected = dict(incident.expected)
            if "dead_letter" in expected:
                expected["count"] = seen.dead_letters[expected["dead_letter"]]
            milestones = {
                name: moment(clock, start + offset)
                for name, offset in incident.behaviour.milestones().items()
                if start + offset < duration
            }
            if incident.behaviour.silent:
                last = self.last_seen.get(incident.id, 0.0)
                due = last + expected["assumed_offline_after_s"]
                milestones["last_seen"] = moment(clock, last)
                if due < (end if end is not None else duration):
                    milestones["offline_due"] = moment(clock, due)
                else:
                    expected["alert"] = None
                    expected["note"] = "the silence ends (or the run does) before the threshold"
            record: dict[str, Any] = {
                "record": "incident",
                "id": incident.id,
                "scenario": incident.scenario,
                "device_id": device.device_id,
                "kind": device.kind,
                "address_id": device.address_id,
                "place_type": device.place_type,
                "street": device.street,
                "start": moment(clock, start),
                "end": moment(clock, end if end is not None else duration),
                "for_good": end is None,
                "params": dict(incident.params),
                "milestones": milestones,
                "expected": expected,
                "messages": {
                    "published": seen.published,
                    "readings": seen.readings,
                    "duplicates": seen.duplicates,
                    "dead_letters": dict(sorted(seen.dead_letters.items())),
                },
            }
            if seen.original is not None:
                record["original"] = seen.original
            records.append(record)
        return records

    def totals_record(self, **extra: Any) -> dict[str, Any]:
        """Counts to assert stored rows against: readings by kind, dead letters by reason."""
        return {
            "record": "totals",
            "published": dict(sorted(self.published.items())),
            "published_total": self.total,
            "published_bytes": self.bytes,
            "readings": dict(sorted(self.readings.items())),
            "readings_total": sum(self.readings.values()),
            "duplicates_published": self.duplicates,
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "dead_letters_total": sum(self.dead_letters.values()),
            **extra,
        }

    def records(self, **extra: Any) -> list[dict[str, Any]]:
        """The whole truth file: run, incidents, totals."""
        return [self.run.run_record(), *self.incident_records(), self.totals_record(**extra)]
