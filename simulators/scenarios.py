"""Incidents the fleet simulator injects, as pure functions of simulated time.

A scenario is asked for on the command line as ``NAME[:key=value,...]``
(:func:`parse_spec`). Planning turns it into one :class:`Incident` per
target device: when it starts and ends (seconds since the start of the run)
and a :class:`Behaviour`, the state machine that says what the device reports
``u`` seconds into the incident. Hostile traffic (:func:`hostile`) is built
here too, each variant with the dead-letter reason sensord must give it.

Nothing here does I/O or reads a clock: times are passed in, randomness comes
from the ``random.Random`` passed in, so every function is deterministic and
can be tested with hypothesis against ``sensord.core.messages.decode``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sensord.core.registry.vocabulary import DEVICE_KINDS

LOCAL = timezone(timedelta(hours=8))  # the street's local time (China Standard Time)
NIGHT_FROM, NIGHT_UNTIL = 22, 6  # e-bike charging indoors is an alert between these hours
ALARM_OBSCURATION = 10.0  # %/m at which a detector goes into alarm...
RESET_OBSCURATION = 5.0  # ...and below which it resets (hysteresis)
LOW_BATTERY_PCT = 15.0
INDOOR_CHARGING_PLACES = frozenset({"dwelling", "corridor", "stairwell"})


class ScenarioError(ValueError):
    """A scenario cannot be parsed or planned; the message says which and why."""


# --- the devices scenarios act on ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """A registered device as the fleet needs it: identity, topic street, place, cadence."""

    device_id: str
    kind: str
    street: str
    address_id: str | None = None
    place_type: str | None = None
    heartbeat_s: int | None = None  # the registry's; None for devices registered without one


# --- command-line values ----------------------------------------------------------------------

_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_seconds(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` as seconds."""
    match = _SECONDS.fullmatch(text.strip())
    if match is None:
        raise ScenarioError(f"not a duration: {text!r} (e.g. 90, 90s, 15m, 2h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_clock(text: str) -> tuple[int, int] | None:
    """``HH:MM`` as (hour, minute); None if ``text`` is not a time of day."""
    match = _CLOCK.fullmatch(text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def iso(moment: datetime) -> str:
    """ISO-8601 with milliseconds and the street's offset, as devices send ``ts``."""
    return moment.astimezone(LOCAL).isoformat(timespec="milliseconds")


def is_night(moment: datetime) -> bool:
    """Between 22:00 and 06:00 street time."""
    hour = moment.astimezone(LOCAL).hour
    return hour >= NIGHT_FROM or hour < NIGHT_UNTIL


# --- scenario requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """One ``--scenario NAME[:key=value,...]`` as given."""

    name: str
    params: Mapping[str, str]
    text: str


@dataclass(frozen=True, slots=True)
class Definition:
    """What a scenario is: the devices it may target, its parameters and defaults, its outcome."""

    name: str
    summary: str
    kinds: tuple[str, ...]  # device kinds it applies to
    places: tuple[str, ...] = ()  # default place types of its targets (empty: any)
    params: tuple[str, ...] = ()  # its own parameters, beyond the common ones
    default_count: int = 1
    per_device: bool = True  # one incident per target (malformed: one per variant)


COMMON_PARAMS = ("device", "kind", "place", "count", "at", "for")
DEFINITIONS: Mapping[str, Definition] = {
    d.name: d
    for d in (
        Definition(
            "kitchen_fire",
            "smoke in a shared public kitchen: obscuration rises to alarm, holds, clears",
            ("smoke",),
            ("public_kitchen",),
            ("rise", "hold", "clear", "peak"),
        ),
        Definition(
            "ebike_charging",
            "an e-bike charging indoors at night (charging, 150-400 W)",
            ("ebike",),
            ("dwelling",),
            ("power",),
        ),
        Definition(
            "elevator_entrapment",
            "a car stops with a passenger trapped (fault, door closed), then is released",
            ("elevator",),
            (),
            ("fault_code", "floor"),
        ),
        Definition(
            "fire_lane_blocked",
            "a fire lane is blocked (blocked_s counting up), then cleared",
            ("fire_lane",),
        ),
        Definition(
            "silent",
            "a device stops publishing, heartbeats included, for a while or for good",
            DEVICE_KINDS,
        ),
        Definition(
            "low_battery",
            "battery_pct declines below 15 %",
            DEVICE_KINDS,
            (),
            ("from", "to"),
        ),
        Definition(
            "clock_skew",
            "a device's clock runs hours ahead: its messages carry ts in the future",
            DEVICE_KINDS,
            (),
            ("hours",),
        ),
        Definition(
            "duplicates",
            "exact re-publication of an earlier valid message (stored once)",
            DEVICE_KINDS,
            (),
            ("copies", "gap"),
        ),
        Definition(
            "malformed",
            "hostile and broken messages, each with the dead-letter reason it must get",
            DEVICE_KINDS,
            (),
            ("only", "each"),
            per_device=False,
        ),
    )
}
ALIASES = {name.replace("_", "-"): name for name in DEFINITIONS} | {
    "fire": "kitchen_fire",
    "ebike": "ebike_charging",
    "entrapment": "elevator_entrapment",
    "fire_lane": "fire_lane_blocked",
    "offline": "silent",
    "battery": "low_battery",
    "skew": "clock_skew",
    "replay": "duplicates",
    "hostile": "malformed",
}


def parse_spec(text: str) -> ScenarioSpec:
    """``NAME[:key=value,...]``; list values are joined with ``+`` (``device=A+B``)."""
    name, _, rest = text.strip().partition(":")
    name = ALIASES.get(name, name)
    definition = DEFINITIONS.get(name)
    if definition is None:
        raise ScenarioError(f"unknown scenario {name!r}; known: {', '.join(DEFINITIONS)}")
    params: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ScenarioError(f"{text}: expected key=value, got {item!r}")
        if key not in COMMON_PARAMS + definition.params:
            allowed = ", ".join(COMMON_PARAMS + definition.params)
            raise ScenarioError(f"{text}: unknown parameter {key!r} for {name} ({allowed})")
        if key in params:
            raise ScenarioError(f"{text}: parameter {key!r} given twice")
        params[key] = value
    return ScenarioSpec(name, params, text.strip())


def number(spec: ScenarioSpec, key: str, default: float, low: float, high: float) -> float:
    """A numeric parameter (durations take units), checked against [low, high]."""
    text = spec.params.get(key)
    value = default if text is None else parse_seconds(text)
    if not low <= value <= high:
        raise ScenarioError(f"{spec.text}: {key} must be between {low:g} and {high:g}")
    return value


# --- behaviours: what a device reports u seconds into an incident -------------------------


@dataclass(frozen=True)
class Behaviour:
    """An incident's state machine. ``u`` is seconds since the incident started.

    ``telemetry``/``heartbeat`` return field overrides while the incident is
    active (0 ≤ u < length); ``ended`` the overrides of the report made the
    moment it ends. A device reports on change: at every ``telemetry_at``
    moment (relative), and every ``interval_s`` while active.
    """

    alert: str | None = None
    severity: str | None = None
    interval_s: float | None = None
    silent: bool = False
    skew_s: float = 0.0

    def telemetry(self, u: float) -> dict[str, Any]:
        return {}

    def heartbeat(self, u: float) -> dict[str, Any]:
        return {}

    def ended(self) -> dict[str, Any]:
        return {}

    def telemetry_at(self) -> tuple[float, ...]:
        return (0.0,)

    def heartbeat_at(self) -> tuple[float, ...]:
        return ()

    def milestones(self) -> dict[str, float]:
        """Named moments (relative) worth asserting on, e.g. when the alarm sounds."""
        return {}


@dataclass(frozen=True)
class KitchenFire(Behaviour):
    """Obscuration rises linearly to ``peak`` over ``rise_s`` (alarm at 10 %/m), holds,
    then decays exponentially to background over ``clear_s`` (reset below 5 %/m)."""

    rise_s: float = 90.0
    hold_s: float = 120.0
    clear_s: float = 60.0
    peak: float = 18.0  # %/m
    base: float = 0.4
    temp0: float = 26.0
    temp_peak: float = 58.0
    alert: str | None = "fire"
    severity: str | None = "critical"
    interval_s: float | None = 10.0

    @property
    def length(self) -> float:
        return self.rise_s + self.hold_s + self.clear_s

    def obscuration(self, u: float) -> float:
        if u < self.rise_s:
            return self.base + (self.peak - self.base) * u / self.rise_s
        if u < self.rise_s + self.hold_s:
            return self.peak * (1 + 0.04 * math.sin(u / 7))
        v = u - self.rise_s - self.hold_s
        return self.peak * math.exp(-math.log(self.peak / self.base) * v / self.clear_s)

    def temperature(self, u: float) -> float:
        heating = self.rise_s + self.hold_s
        if u < heating:
            return self.temp0 + (self.temp_peak - self.temp0) * u / heating
        v = (u - heating) / self.clear_s
        return self.temp_peak - (self.temp_peak - self.temp0) * min(1.0, v)

    def alarm_u(self) -> float:
        return self.rise_s * (ALARM_OBSCURATION - self.base) / (self.peak - self.base)

    def reset_u(self) -> float:
        decay = math.log(self.peak / self.base) / self.clear_s
        return self.rise_s + self.hold_s + math.log(self.peak / RESET_OBSCURATION) / decay

    def telemetry(self, u: float) -> dict[str, Any]:
        obscuration = self.obscuration(u)
        smoke = self.alarm_u() - 1e-6 <= u < self.reset_u() - 1e-6
        return {
            "smoke": smoke,
            "obscuration": round(obscuration, 2),
            "temp_c": round(self.temperature(u), 1),
        }

    def ended(self) -> dict[str, Any]:
        return {"smoke": False, "obscuration": round(self.base, 2), "temp_c": self.temp0 + 2}

    def telemetry_at(self) -> tuple[float, ...]:
        return (0.0, self.alarm_u(), self.rise_s, self.rise_s + self.hold_s, self.reset_u())

    def milestones(self) -> dict[str, float]:
        return {"alarm": self.alarm_u(), "reset": self.reset_u()}


@dataclass(frozen=True)
class EbikeCharging(Behaviour):
    """A charger's load signature: ``power_w`` near its rating, current = power / 215 V."""

    power_w: float = 280.0
    alert: str | None = "ebike_indoor_charging"
    severity: str | None = "major"
    interval_s: float | None = 60.0

    def telemetry(self, u: float) -> dict[str, Any]:
        power = self.power_w * (1 + 0.03 * math.sin(u / 90))
        if 150 <= self.power_w <= 400:  # keep a typical charger inside its typical band
            power = min(400.0, max(150.0, power))
        current = min(2.0, max(0.7, power / 215))
        return {"charging": True, "power_w": round(power, 1), "current_a": round(current, 2)}

    def ended(self) -> dict[str, Any]:
        return {"charging": False, "power_w": 0.0, "current_a": 0.0}


@dataclass(frozen=True)
class Entrapment(Behaviour):
    """The car faults between floors with the door closed and someone inside; released at end."""

    floor: int = 5
    fault_code: str = "E21"
    alert: str | None = "elevator_entrapment"
    severity: str | None = "critical"
    interval_s: float | None = 15.0

    def telemetry(self, u: float) -> dict[str, Any]:
        return {
            "state": "fault",
            "trapped": True,
            "door": "closed",
            "floor": self.floor,
            "fault_code": self.fault_code,
        }

    def ended(self) -> dict[str, Any]:
        return {
            "state": "idle",
            "trapped": False,
            "door": "open",
            "floor": self.floor,
            "fault_code": None,
        }


@dataclass(frozen=True)
class LaneBlocked(Behaviour):
    """Something stands in the fire lane; the sensor counts how long."""

    alert: str | None = "fire_lane_blocked"
    severity: str | None = "major"
    interval_s: float | None = 30.0

    def telemetry(self, u: float) -> dict[str, Any]:
        return {"blocked": True, "blocked_s": int(u)}

    def ended(self) -> dict[str, Any]:
        return {"blocked": False, "blocked_s": 0}


@dataclass(frozen=True)
class Silence(Behaviour):
    """Nothing at all: no telemetry, no heartbeat. At the end the device reports again."""

    alert: str | None = "device_offline"
    severity: str | None = "minor"
    silent: bool = True

    def telemetry_at(self) -> tuple[float, ...]:
        return ()


@dataclass(frozen=True)
class LowBattery(Behaviour):
    """battery_pct falls linearly from ``start_pct`` to ``end_pct`` over ``decline_s``, then stays.

    Heartbeats of every kind and smoke telemetry carry it; the device sends an
    extra heartbeat the moment it crosses 15 %.
    """

    start_pct: float = 25.0
    end_pct: float = 8.0
    decline_s: float = 1800.0
    alert: str | None = "battery_low"
    severity: str | None = "minor"

    def battery(self, u: float) -> float:
        share = min(1.0, max(0.0, u / self.decline_s))
        return round(self.start_pct - (self.start_pct - self.end_pct) * share, 1)

    def crossing_u(self) -> float:
        if self.start_pct < LOW_BATTERY_PCT:
            return 0.0
        # When it reads 14.9 (reports are rounded to 0.1 %): surely below 15.
        share = (self.start_pct - (LOW_BATTERY_PCT - 0.1)) / (self.start_pct - self.end_pct)
        return self.decline_s * min(1.0, share)

    def telemetry(self, u: float) -> dict[str, Any]:
        return {"battery_pct": self.battery(u)}

    def heartbeat(self, u: float) -> dict[str, Any]:
        return {"battery_pct": self.battery(u)}

    def telemetry_at(self) -> tuple[float, ...]:
        return ()

    def heartbeat_at(self) -> tuple[float, ...]:
        return (0.0, self.crossing_u())

    def milestones(self) -> dict[str, float]:
        return {"below_15": self.crossing_u()}


@dataclass(frozen=True)
class ClockSkew(Behaviour):
    """Every message of the device carries ``ts`` = wall time + ``skew_s``."""

    skew_s: float = 3 * 3600.0

    def telemetry_at(self) -> tuple[float, ...]:
        return ()


@dataclass(frozen=True)
class Duplicates(Behaviour):
    """The device's first valid message at or after the start is published ``copies`` more
    times, ``gap_s`` apart (a gateway replaying its buffer after a reconnect)."""

    copies: int = 2
    gap_s: float = 5.0

    def telemetry_at(self) -> tuple[float, ...]:
        return ()


@dataclass(frozen=True)
class Malformed(Behaviour):
    """``each`` messages of one hostile variant, one simulated second apart."""

    variant: str = "bad_json"
    each: int = 1

    def telemetry_at(self) -> tuple[float, ...]:
        return ()


# --- incidents ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """One scenario acting on one device from ``start_s`` to ``end_s`` (simulated seconds
    since the start of the run; ``end_s`` None: until the run ends, "for good")."""

    id: int
    scenario: str
    device: FleetDevice
    start_s: float
    end_s: float | None
    behaviour: Behaviour
    params: Mapping[str, Any] = field(default_factory=dict)
    expected: Mapping[str, Any] = field(default_factory=dict)

    def active(self, at_s: float) -> bool:
        return self.start_s <= at_s and (self.end_s is None or at_s < self.end_s)


# --- hostile payloads -------------------------------------------------------------------------

# variant -> the dead-letter reason sensord must assign (docs/protocol.md)
HOSTILE: Mapping[str, str] = {
    "bad_json": "bad_json",  # truncated document
    "not_utf8": "bad_json",  # an invalid UTF-8 byte inside a string
    "deep_nesting": "bad_json",  # 2,000 nested arrays (4 KB): beyond the parser's depth limit
    "not_object": "schema",  # a JSON array, not an object
    "wrong_type": "schema",  # "true" for a boolean
    "missing_field": "schema",  # the kind's required field left out
    "out_of_range": "schema",
    "naive_ts": "schema",  # ts without an offset
    "nul_escape": "schema",  # \u0000 inside a string
    "oversized": "too_large",
    "bad_topic": "bad_topic",  # unknown kind in the topic
    # Not a wrong depth: sensord subscribes to <prefix>/+/+/+ and never receives such a topic.
    "topic_chars": "bad_topic",  # a device id with a character outside [A-Za-z0-9_.-]
    "wrong_kind": "device_kind_mismatch",
    "unknown_device": "unknown_device",
    "street_mismatch": "street_mismatch",
    "device_id_mismatch": "device_id_mismatch",
}
_REQUIRED = {"smoke": "smoke", "ebike": "charging", "elevator": "trapped", "fire_lane": "blocked"}
_WRONG_TYPE = {"smoke": "true", "ebike": 1, "elevator": "no", "fire_lane": "yes"}
_OUT_OF_RANGE = {
    "smoke": ("obscuration", 250.0),
    "ebike": ("current_a", -1.5),
    "elevator": ("floor", 999),
    "fire_lane": ("blocked_s", -5),
}
NESTING_DEPTH = 2000


def topic_of(prefix: str, street: str, kind: str, device_id: str) -> str:
    return f"{prefix}/{street}/{kind}/{device_id}"


def _encode(fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def hostile(
    variant: str,
    device: FleetDevice,
    fields: dict[str, Any],
    *,
    prefix: str,
    max_payload_bytes: int,
    ghost_id: str,
) -> tuple[str, bytes, str]:
    """(topic, payload, expected dead-letter reason) of one hostile message.

    ``fields`` is the valid reading the device would have sent (ts, seq and
    its kind's fields); each variant breaks exactly one thing about it, so
    the first check of docs/protocol.md that fails is the one named.
    ``ghost_id`` is a device id that is not registered.
    """
    body = dict(fields)
    topic = topic_of(prefix, device.street, device.kind, device.device_id)
    if variant in _TOPIC_FAULTS:
        topic, payload = _TOPIC_FAULTS[variant](prefix, device, ghost_id), _encode(body)
    elif variant in _RAW_FAULTS:
        payload = _RAW_FAULTS[variant](body)
    else:
        _BODY_FAULTS[variant](body, device, ghost_id, max_payload_bytes)
        payload = _encode(body)
    # Size is checked first: with a small --max-payload-bytes, deep nesting is too large.
    reason = "too_large" if len(payload) > max_payload_bytes else HOSTILE[variant]
    return topic, payload, reason


def _truncated(body: dict[str, Any]) -> bytes:
    raw = _encode(body)
    return raw[: max(1, len(raw) - 7)]


def _not_utf8(body: dict[str, Any]) -> bytes:
    body["fw"] = "@@"
    return _encode(body).replace(b"@@", b"\xff\xfe")


def _deep(body: dict[str, Any]) -> bytes:
    head = _encode(body)[:-1] + b',"x":'
    return head + b"[" * NESTING_DEPTH + b"]" * NESTING_DEPTH + b"}"


def _wrong_type(body: dict[str, Any], device: FleetDevice, ghost: str, limit: int) -> None:
    body[_REQUIRED[device.kind]] = _WRONG_TYPE[device.kind]


def _missing(body: dict[str, Any], device: FleetDevice, ghost: str, limit: int) -> None:
    body.pop(_REQUIRED[device.kind], None)


def _out_of_range(body: dict[str, Any], device: FleetDevice, ghost: str, limit: int) -> None:
    name, value = _OUT_OF_RANGE[device.kind]
    body[name] = value


def _naive_ts(body: dict[str, Any], device: FleetDevice, ghost: str, limit: int) -> None:
    body["ts"] = str(body["ts"])[:19]


def _nul(body: dict[str, Any], device: FleetDevice, ghost: str, limit: int) -> None:
    body["note"] = "kitchen\x00"  # json.dumps writes it as the escape \u0000


def _oversized(body: dict[str, Any], device: FleetDevice, ghost: str, limit: int) -> None:
    body["pad"] = ""
    body["pad"] = "x" * (limit + 1024 - len(_encode(body)))


def _other_id(body: dict[str, Any], device: FleetDevice, ghost: str, limit: int) -> None:
    body["device_id"] = ghost


def _unknown_kind(prefix: str, device: FleetDevice, ghost: str) -> str:
    return topic_of(prefix, device.street, "gas", device.device_id)


def _bad_characters(prefix: str, device: FleetDevice, ghost: str) -> str:
    return topic_of(prefix, device.street, device.kind, device.device_id[:60] + "@x")


def _other_kind(prefix: str, device: FleetDevice, ghost: str) -> str:
    other = next(k for k in DEVICE_KINDS if k != device.kind)
    return topic_of(prefix, device.street, other, device.device_id)


def _ghost(prefix: str, device: FleetDevice, ghost: str) -> str:
    return topic_of(prefix, device.street, device.kind, ghost)


def _other_street(prefix: str, device: FleetDevice, ghost: str) -> str:
    street = "jd99" if device.street != "jd99" else "jd98"
    return topic_of(prefix, street, device.kind, device.device_id)


_RAW_FAULTS: Mapping[str, Callable[[dict[str, Any]], bytes]] = {
    "bad_json": _truncated,
    "not_utf8": _not_utf8,
    "deep_nesting": _deep,
    "not_object": lambda body: _encode([body]),
}
_BODY_FAULTS: Mapping[str, Callable[[dict[str, Any], FleetDevice, str, int], None]] = {
    "wrong_type": _wrong_type,
    "missing_field": _missing,
    "out_of_range": _out_of_range,
    "naive_ts": _naive_ts,
    "nul_escape": _nul,
    "oversized": _oversized,
    "device_id_mismatch": _other_id,
}
_TOPIC_FAULTS: Mapping[str, Callable[[str, FleetDevice, str], str]] = {
    "bad_topic": _unknown_kind,
    "topic_chars": _bad_characters,
    "wrong_kind": _other_kind,
    "unknown_device": _ghost,
    "street_mismatch": _other_street,
}
