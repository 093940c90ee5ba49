"""Decoding raw MQTT messages: every outcome is a Reading or a PayloadError with a known reason."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.messages import (
    DEAD_LETTER_REASONS,
    READING_COLUMNS,
    DecodeLimits,
    DeviceInfo,
    Reading,
    dead_letter,
    decode,
    truncated,
)
from sensord.errors import PayloadError

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
DEVICES = {
    "SMK-1": DeviceInfo("smoke", "jd01"),
    "EB-1": DeviceInfo("ebike", "jd01"),
    "EL-1": DeviceInfo("elevator", "jd01"),
    "FL-1": DeviceInfo("fire_lane", "jd01"),
}
LIMITS = DecodeLimits()
TS = "2026-11-26T14:00:00.000+08:00"


def payload(**fields: object) -> bytes:
    return json.dumps({"ts": TS, "seq": 7, **fields}).encode()


def reason_of(topic: str, raw: bytes) -> str:
    with pytest.raises(PayloadError) as caught:
        decode(topic, raw, NOW, DEVICES, LIMITS)
    return caught.value.reason


@pytest.mark.parametrize(
    ("topic", "raw", "expected"),
    [
        ("sensord/v1/jd01/smoke/SMK-1", payload(smoke=True, obscuration=12.5), {"smoke": True}),
        ("sensord/v1/jd01/ebike/EB-1", payload(charging=True, power_w=310.0), {"charging": True}),
        (
            "sensord/v1/jd01/elevator/EL-1",
            payload(state="fault", door="closed", floor=7, trapped=True, fault_code="E21"),
            {"state": "fault", "trapped": True, "floor": 7, "fault_code": "E21"},
        ),
        (
            "sensord/v1/jd01/fire_lane/FL-1",
            payload(blocked=True, blocked_s=600),
            {"blocked_s": 600},
        ),
        ("sensord/v1/jd01/heartbeat/EL-1", payload(rssi_dbm=-80, fw="2.4.1"), {"fw": "2.4.1"}),
    ],
)
def test_each_kind_decodes_to_its_columns(
    topic: str, raw: bytes, expected: dict[str, object]
) -> None:
    reading = decode(topic, raw, NOW, DEVICES, LIMITS)
    assert reading.ts == datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    assert reading.seq == 7
    assert reading.received_at == NOW
    for column, value in expected.items():
        assert getattr(reading, column) == value
    assert reading.kind == topic.split("/")[3]


def test_fields_beyond_the_protocol_are_kept_in_extra() -> None:
    reading = decode(
        "sensord/v1/jd01/smoke/SMK-1", payload(smoke=False, hush=True), NOW, DEVICES, LIMITS
    )
    assert reading.extra == {"hush": True}


@pytest.mark.parametrize(
    ("topic", "raw", "reason"),
    [
        ("sensord/v1/jd01/smoke", payload(smoke=False), "bad_topic"),
        ("sensord/v1/jd01/gas/SMK-1", payload(smoke=False), "bad_topic"),
        ("sensord/v1/jd 01/smoke/SMK-1", payload(smoke=False), "bad_topic"),
        ("sensord/v1/jd01/smoke/SMK-1", b"{not json", "bad_json"),
        ("sensord/v1/jd01/smoke/SMK-1", b"\xff\xfe\x00", "bad_json"),
        ("sensord/v1/jd01/smoke/SMK-1", payload(smoke="yes"), "schema"),
        ("sensord/v1/jd01/smoke/SMK-1", payload(), "schema"),
        (
            "sensord/v1/jd01/smoke/SMK-1",
            b'{"ts":"2026-11-26T06:00:00","seq":1,"smoke":false}',
            "schema",
        ),
        ("sensord/v1/jd01/smoke/SMK-1", payload(smoke=False, obscuration=-1), "schema"),
        ("sensord/v1/jd01/smoke/SMK-1", payload(smoke=False, note="\u0000"), "schema"),
        ("sensord/v1/jd01/smoke/SMK-404", payload(smoke=False), "unknown_device"),
        ("sensord/v1/jd01/ebike/SMK-1", payload(charging=True), "device_kind_mismatch"),
        ("sensord/v1/jd02/smoke/SMK-1", payload(smoke=False), "street_mismatch"),
        (
            "sensord/v1/jd01/smoke/SMK-1",
            payload(smoke=False, device_id="SMK-2"),
            "device_id_mismatch",
        ),
        ("sensord/v1/jd01/smoke/SMK-1", b"{" + b" " * 20_000 + b"}", "too_large"),
        (
            "sensord/v1/jd01/smoke/SMK-1",
            json.dumps({"ts": "2026-11-26T07:00:00+00:00", "seq": 1, "smoke": False}).encode(),
            "clock_skew",
        ),
        (
            "sensord/v1/jd01/smoke/SMK-1",
            json.dumps({"ts": "2025-01-01T00:00:00+00:00", "seq": 1, "smoke": False}).encode(),
            "clock_skew",
        ),
    ],
)
def test_each_fault_has_its_reason(topic: str, raw: bytes, reason: str) -> None:
    assert reason_of(topic, raw) == reason


def test_schema_errors_name_the_field() -> None:
    with pytest.raises(PayloadError) as caught:
        decode("sensord/v1/jd01/smoke/SMK-1", payload(smoke=1), NOW, DEVICES, LIMITS)
    assert "smoke" in caught.value.detail
    assert caught.value.device_id == "SMK-1"


def test_reading_columns_match_the_table_order() -> None:
    assert READING_COLUMNS[:5] == ("ts", "received_at", "device_id", "kind", "seq")
    assert READING_COLUMNS[-1] == "extra"
    assert Reading._fields == READING_COLUMNS


TOPICS = st.sampled_from(
    [
        "sensord/v1/jd01/smoke/SMK-1",
        "sensord/v1/jd01/heartbeat/EB-1",
        "sensord/v1/jd01/elevator/EL-1",
        "sensord/v1/jd01/fire_lane/FL-1",
        "sensord/v1/jd01/ebike/EB-1",
    ]
) | st.text(max_size=80)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(topic=TOPICS, raw=st.binary(max_size=300))
def test_any_bytes_give_a_reading_or_a_payload_error(topic: str, raw: bytes) -> None:
    try:
        decode(topic, raw, NOW, DEVICES, LIMITS)
    except PayloadError as exc:
        assert exc.reason in DEAD_LETTER_REASONS


@given(
    topic=TOPICS,
    fields=st.dictionaries(
        st.sampled_from(
            [
                "ts",
                "seq",
                "smoke",
                "charging",
                "state",
                "trapped",
                "blocked",
                "floor",
                "device_id",
                "battery_pct",
                "fw",
                "x",
            ]
        ),
        JSON_VALUES | st.just(TS),
        max_size=8,
    ),
)
def test_any_json_object_gives_a_reading_or_a_payload_error(
    topic: str, fields: dict[str, object]
) -> None:
    raw = json.dumps(fields, allow_nan=True).encode()
    try:
        reading = decode(topic, raw, NOW, DEVICES, LIMITS)
    except PayloadError as exc:
        assert exc.reason in DEAD_LETTER_REASONS
    else:
        assert abs(reading.ts - NOW) <= timedelta(days=30)


NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])


def _with_leaf(value: object, leaf: float, pick: int) -> object:
    """``value`` with one element (chosen by ``pick``) replaced by, or wrapped around, ``leaf``."""
    if isinstance(value, dict) and value:
        key = sorted(value)[pick % len(value)]
        return {**value, key: _with_leaf(value[key], leaf, pick // 2)}
    if isinstance(value, list) and value:
        index = pick % len(value)
        return [*value[:index], _with_leaf(value[index], leaf, pick // 2), *value[index + 1 :]]
    return leaf


@given(
    extra=st.dictionaries(st.sampled_from(["x", "y", "nested"]), JSON_VALUES, min_size=1),
    leaf=NON_FINITE,
    pick=st.integers(min_value=0, max_value=1000),
    spelling=st.sampled_from(["token", "overflow"]),
)
def test_non_finite_numbers_anywhere_in_a_payload_are_schema_errors(
    extra: dict[str, object], leaf: float, pick: int, spelling: str
) -> None:
    fields = _with_leaf(extra, leaf, pick)
    assert isinstance(fields, dict)
    raw = json.dumps({"ts": TS, "seq": 7, "smoke": True, **fields}, allow_nan=True)
    if spelling == "overflow":  # 1e999 parses as Infinity without being spelt so
        raw = raw.replace("-Infinity", "-1e999").replace("Infinity", "1e999")
    with pytest.raises(PayloadError) as caught:
        decode("sensord/v1/jd01/smoke/SMK-1", raw.encode(), NOW, DEVICES, LIMITS)
    assert caught.value.reason == "schema"
    if "\\u0000" not in raw:  # U+0000 is refused first, also as "schema"
        assert "NaN and Infinity" in caught.value.detail or "finite" in caught.value.detail


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_extra_field_is_named(token: str) -> None:
    raw = f'{{"ts": "{TS}", "seq": 7, "smoke": true, "probe": {{"v": [1.0, {token}]}}}}'
    with pytest.raises(PayloadError) as caught:
        decode("sensord/v1/jd01/smoke/SMK-1", raw.encode(), NOW, DEVICES, LIMITS)
    assert (caught.value.reason, caught.value.detail) == (
        "schema",
        "probe.v.1: NaN and Infinity are not numbers",
    )


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_typed_field_is_named(token: str) -> None:
    raw = f'{{"ts": "{TS}", "seq": 7, "smoke": true, "temp_c": {token}}}'
    with pytest.raises(PayloadError) as caught:
        decode("sensord/v1/jd01/smoke/SMK-1", raw.encode(), NOW, DEVICES, LIMITS)
    assert caught.value.reason == "schema"
    assert caught.value.detail.startswith("temp_c: ")


def test_a_dead_letter_keeps_a_bounded_prefix_with_the_size_and_hash() -> None:
    raw = b"x" * 250_000
    letter = dead_letter(NOW, "sensord/v1/jd01/smoke/SMK-1", raw, "too_large", "", None, 1024)
    assert letter.payload == raw[:1024]
    assert (letter.payload_size, letter.payload_sha256) == (250_000, hashlib.sha256(raw).digest())
    assert truncated(letter)
    whole = dead_letter(NOW, "t", b"{}", "bad_json", "", None, 1024)
    assert (whole.payload, whole.payload_size, truncated(whole)) == (b"{}", 2, False)
