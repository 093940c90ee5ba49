"""Protocol-v1 readings as a device would publish them (docs/protocol.md).

Deterministic given the ``random.Random`` passed in; no I/O.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PREFIX = "sensord/v1"


@dataclass(frozen=True, slots=True)
class SimDevice:
    """A simulated device: who it is and where it publishes."""

    device_id: str
    kind: str
    street: str


def topic(device: SimDevice, kind: str | None = None) -> str:
    """The device's topic for ``kind`` (default its own kind; ``heartbeat`` for liveness)."""
    return f"{PREFIX}/{device.street}/{kind or device.kind}/{device.device_id}"


def encode(fields: dict[str, Any]) -> bytes:
    """Compact JSON, as constrained devices send it."""
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def normal_fields(kind: str, rng: random.Random) -> dict[str, Any]:
    """Kind-specific fields of an everyday, nothing-wrong reading."""
    if kind == "smoke":
        return {
            "smoke": False,
            "obscuration": round(rng.uniform(0.0, 0.8), 2),
            "temp_c": round(rng.uniform(16.0, 30.0), 1),
            "battery_pct": rng.randint(40, 100),
        }
    if kind == "ebike":
        return {"charging": False, "power_w": round(rng.uniform(0, 5), 1), "current_a": 0.0}
    if kind == "elevator":
        return {
            "state": rng.choice(("running", "idle")),
            "door": rng.choice(("open", "closed")),
            "floor": rng.randint(1, 18),
            "trapped": False,
            "fault_code": None,
        }
    if kind == "fire_lane":
        return {"blocked": False, "blocked_s": 0}
    if kind == "heartbeat":
        return {
            "battery_pct": rng.randint(40, 100),
            "rssi_dbm": rng.randint(-105, -60),
            "fw": "2.4.1",
        }
    raise ValueError(f"unknown kind {kind!r}")


def reading(
    device: SimDevice,
    seq: int,
    ts: datetime,
    rng: random.Random,
    kind: str | None = None,
    **overrides: Any,
) -> tuple[str, bytes]:
    """One reading (topic, payload) with the common fields, normal values and overrides."""
    kind = kind or device.kind
    fields: dict[str, Any] = {"ts": ts.isoformat(timespec="milliseconds"), "seq": seq}
    fields.update(normal_fields(kind, rng))
    fields.update(overrides)
    return topic(device, kind), encode(fields)
