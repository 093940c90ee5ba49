"""Protocol v1 payloads: validation of raw MQTT messages into readings or dead letters.

Pure: takes the topic, the raw bytes, the time of receipt and the device
directory; returns a :class:`Reading` row or raises :class:`PayloadError`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from sensord.core.topics import PREFIX, parse_topic
from sensord.errors import PayloadError

DEAD_LETTER_REASONS: tuple[str, ...] = (
    "bad_topic",
    "bad_json",
    "schema",
    "unknown_device",
    "device_kind_mismatch",
    "device_id_mismatch",
    "street_mismatch",
    "too_large",
    "clock_skew",
)

Percent = Annotated[float, Field(ge=0, le=100)]
NonNegative = Annotated[float, Field(ge=0, le=1e6)]


class _Payload(BaseModel):
    # strict: a sensor that sends "true" or 1 for a boolean is misconfigured,
    # and guessing would put wrong alarms in the database.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True, allow_inf_nan=False)

    ts: AwareDatetime
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)]
    device_id: str | None = None


class SmokePayload(_Payload):
    """Smoke detector in a shared public kitchen, stairwell or dwelling."""

    smoke: bool
    obscuration: Annotated[float, Field(ge=0, le=100)] | None = None  # %/m
    temp_c: Annotated[float, Field(ge=-50, le=200)] | None = None
    battery_pct: Percent | None = None


class EbikePayload(_Payload):
    """E-bike indoor-charging monitor (电管家) on a dwelling's or shed's circuit."""

    charging: bool
    power_w: NonNegative | None = None
    current_a: NonNegative | None = None


class ElevatorPayload(_Payload):
    """Elevator car monitor."""

    state: Literal["running", "idle", "fault"]
    trapped: bool
    door: Literal["open", "closed"] | None = None
    floor: Annotated[int, Field(ge=-10, le=200)] | None = None
    fault_code: Annotated[str, Field(max_length=64)] | None = None


class FireLanePayload(_Payload):
    """Fire-lane obstruction sensor."""

    blocked: bool
    blocked_s: Annotated[int, Field(ge=0, le=10**8)] | None = None


class HeartbeatPayload(_Payload):
    """Liveness message any device sends on its heartbeat interval."""

    battery_pct: Percent | None = None
    rssi_dbm: Annotated[int, Field(ge=-200, le=0)] | None = None
    fw: Annotated[str, Field(max_length=64)] | None = None


PAYLOAD_MODELS: Mapping[str, type[_Payload]] = {
    "smoke": SmokePayload,
    "ebike": EbikePayload,
    "elevator": ElevatorPayload,
    "fire_lane": FireLanePayload,
    "heartbeat": HeartbeatPayload,
}


class Reading(NamedTuple):
    """One stored reading, in the column order of the ``readings`` table."""

    ts: datetime
    received_at: datetime
    device_id: str
    kind: str
    seq: int
    smoke: bool | None = None
    obscuration: float | None = None
    temp_c: float | None = None
    battery_pct: float | None = None
    charging: bool | None = None
    power_w: float | None = None
    current_a: float | None = None
    state: str | None = None
    door: str | None = None
    floor: int | None = None
    trapped: bool | None = None
    fault_code: str | None = None
    blocked: bool | None = None
    blocked_s: int | None = None
    rssi_dbm: int | None = None
    fw: str | None = None
    extra: dict[str, Any] | None = None  # fields beyond the protocol, kept as sent


READING_COLUMNS: tuple[str, ...] = Reading._fields
_VALUE_COLUMNS: tuple[str, ...] = READING_COLUMNS[5:-1]
_NUL_ESCAPE = b"\\u0000"


class DeadLetter(NamedTuple):
    """A message that could not be stored as a reading, kept with its raw bytes.

    ``payload`` is at most a bounded prefix of what was received (see
    :func:`dead_letter`); ``payload_size`` and ``payload_sha256`` describe the
    whole message, so a truncated one can still be matched against a capture.
    """

    received_at: datetime
    topic: str
    payload: bytes
    reason: str
    detail: str
    device_id: str | None
    payload_size: int
    payload_sha256: bytes


DEAD_LETTER_COLUMNS: tuple[str, ...] = DeadLetter._fields


def dead_letter(
    received_at: datetime,
    topic: str,
    payload: bytes,
    reason: str,
    detail: str,
    device_id: str | None,
    max_kept: int,
) -> DeadLetter:
    """A dead letter keeping at most ``max_kept`` bytes of ``payload``, with its size and hash."""
    return DeadLetter(
        received_at,
        topic,
        payload[:max_kept],
        reason,
        detail,
        device_id,
        len(payload),
        hashlib.sha256(payload).digest(),
    )


def truncated(letter: DeadLetter) -> bool:
    """Whether the dead letter keeps only a prefix of the message."""
    return len(letter.payload) < letter.payload_size


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the ingest path needs to know of a registered device."""

    kind: str
    street: str


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds a message must respect to be stored."""

    max_payload_bytes: int = 16_384
    max_future: timedelta = timedelta(seconds=60)  # ingest.max_future_s
    max_past: timedelta = timedelta(days=30)


def decode(
    topic: str,
    payload: bytes,
    received_at: datetime,
    devices: Mapping[str, DeviceInfo],
    limits: DecodeLimits,
    prefix: str = PREFIX,
) -> Reading:
    """Validate one MQTT message into a reading.

    Raises PayloadError with a reason from DEAD_LETTER_REASONS; never anything else.
    """
    if len(payload) > limits.max_payload_bytes:
        raise PayloadError("too_large", f"{len(payload)} bytes > {limits.max_payload_bytes}")
    where = parse_topic(topic, prefix)
    if _NUL_ESCAPE in payload:
        # PostgreSQL text and jsonb cannot hold U+0000; refuse it here rather
        # than fail the whole batch's transaction.
        raise PayloadError("schema", "strings must not contain U+0000", where.device_id)
    device = devices.get(where.device_id)
    if device is None:
        raise PayloadError("unknown_device", "device is not in the registry", where.device_id)
    if where.kind not in ("heartbeat", device.kind):
        raise PayloadError(
            "device_kind_mismatch",
            f"registered as {device.kind}, published on {where.kind}",
            where.device_id,
        )
    if where.street != device.street:
        raise PayloadError(
            "street_mismatch",
            f"registered in {device.street}, published under {where.street}",
            where.device_id,
        )
    model = _validate(PAYLOAD_MODELS[where.kind], payload, where.device_id)
    extra = model.__pydantic_extra__
    if extra:
        # The typed fields refuse NaN and ±Infinity (allow_inf_nan=False); fields
        # beyond the protocol are not validated, and the JSON parser accepts
        # NaN, Infinity and overflowing literals (1e999) in them. jsonb cannot
        # hold those, and a reading the database refuses must not reach the rules.
        bad = _non_finite(extra, "")  # named by its path, bounded: keys come from the device
        if bad is not None:
            raise PayloadError(
                "schema", f"{bad[:120]}: NaN and Infinity are not numbers", where.device_id
            )
    if model.device_id is not None and model.device_id != where.device_id:
        raise PayloadError(
            "device_id_mismatch", "payload device_id differs from the topic", where.device_id
        )
    skew = model.ts - received_at
    if skew > limits.max_future:
        raise PayloadError("clock_skew", f"ts is {skew} ahead of receipt", where.device_id)
    if -skew > limits.max_past:
        raise PayloadError("clock_skew", f"ts is {-skew} behind receipt", where.device_id)
    values = model.__dict__
    return Reading._make(
        (
            model.ts,
            received_at,
            where.device_id,
            where.kind,
            model.seq,
            *[values.get(column) for column in _VALUE_COLUMNS],
            extra or None,
        )
    )


def _non_finite(value: object, path: str) -> str | None:
    """The path of the first NaN or ±Infinity in a decoded JSON value, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _non_finite(item, f"{path}.{index}")
            if found is not None:
                return found
    return None


def _validate(model: type[_Payload], payload: bytes, device_id: str) -> _Payload:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise _payload_error(exc, device_id) from None


def _payload_error(exc: ValidationError, device_id: str) -> PayloadError:
    errors = exc.errors(include_url=False, include_input=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return PayloadError("bad_json", errors[0]["msg"], device_id)
    details = "; ".join(_describe(error) for error in errors[:3])
    if len(errors) > 3:
        details += f"; and {len(errors) - 3} more"
    return PayloadError("schema", details, device_id)


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "<payload>"
    return f"{field}: {error['msg']}"
