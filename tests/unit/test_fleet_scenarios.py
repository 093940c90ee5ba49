"""Fleet scenarios: parsing, incident state machines, hostile payloads vs the real decoder."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensord.core.messages import DecodeLimits, DeviceInfo, decode
from sensord.core.registry.vocabulary import DEVICE_KINDS
from sensord.errors import PayloadError
from simulators.protocol import normal_fields
from simulators.scenarios import (
    DEFINITIONS,
    HOSTILE,
    LOCAL,
    EbikeCharging,
    Entrapment,
    FleetDevice,
    KitchenFire,
    LaneBlocked,
    LowBattery,
    ScenarioError,
    hostile,
    is_night,
    iso,
    parse_seconds,
    parse_spec,
)

NOW = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
device_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,40}", fullmatch=True)
streets = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)


# --- command-line values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0), ("1.5h", 5400)],
)
def test_durations_take_units(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "-5", "5x", "h", "1 hour"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ScenarioError):
        parse_seconds(text)


def test_a_spec_names_a_scenario_and_its_parameters() -> None:
    spec = parse_spec("fire:device=SMK-000001+SMK-000002,peak=20,at=10m")
    assert spec.name == "kitchen_fire"
    assert dict(spec.params) == {"device": "SMK-000001+SMK-000002", "peak": "20", "at": "10m"}
    assert parse_spec("elevator-entrapment").name == "elevator_entrapment"
    assert parse_spec("malformed").params == {}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("volcano", "unknown scenario"),
        ("kitchen_fire:colour=red", "unknown parameter"),
        ("kitchen_fire:peak", "expected key=value"),
        ("kitchen_fire:peak=1,peak=2", "given twice"),
        ("silent:hours=3", "unknown parameter"),  # another scenario's parameter
    ],
)
def test_a_bad_spec_says_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ScenarioError, match=complaint):
        parse_spec(text)


def test_every_scenario_of_the_brief_exists() -> None:
    assert set(DEFINITIONS) == {
        "kitchen_fire", "ebike_charging", "elevator_entrapment", "fire_lane_blocked", "silent",
        "low_battery", "malformed", "duplicates", "clock_skew",
    }  # fmt: skip


def test_night_is_22_to_06_street_time() -> None:
    def local(hour: int) -> datetime:
        return datetime(2026, 11, 26, hour, 30, tzinfo=LOCAL)

    assert [h for h in range(24) if is_night(local(h))] == [0, 1, 2, 3, 4, 5, 22, 23]
    assert iso(datetime(2026, 11, 26, 14, 0, tzinfo=UTC)) == "2026-11-26T22:00:00.000+08:00"


# --- state machines ---------------------------------------------------------------------------

fires = st.builds(
    KitchenFire,
    rise_s=st.floats(20, 600),
    hold_s=st.floats(0, 3600),
    clear_s=st.floats(20, 3600),
    peak=st.floats(11, 100),
)


@given(fire=fires, share=st.floats(0, 1, exclude_max=True))
def test_a_fire_alarms_above_10_and_resets_below_5(fire: KitchenFire, share: float) -> None:
    u = share * fire.length
    fields = fire.telemetry(u)
    assert 0 <= fields["obscuration"] <= 100 * 1.05
    assert -50 <= fields["temp_c"] <= 200
    assert fields["smoke"] == (fire.alarm_u() - 1e-6 <= u < fire.reset_u() - 1e-6)
    if fields["smoke"]:
        assert fire.obscuration(u) >= 5 - 1e-6
    if u < fire.rise_s and fields["smoke"]:
        assert fire.obscuration(u) >= 10 - 1e-6
    assert 0 < fire.alarm_u() < fire.rise_s < fire.reset_u() < fire.length


@given(fire=fires)
def test_a_fire_rises_then_clears(fire: KitchenFire) -> None:
    steps = [fire.length * k / 50 for k in range(50)]
    heating = [fire.temperature(u) for u in steps if u < fire.rise_s + fire.hold_s]
    assert heating == sorted(heating)
    rising = [fire.obscuration(u) for u in steps if u < fire.rise_s]
    assert rising == sorted(rising)
    assert fire.telemetry(fire.alarm_u())["smoke"] is True
    assert fire.telemetry(fire.reset_u())["smoke"] is False
    assert fire.obscuration(fire.length) == pytest.approx(fire.base)
    assert fire.ended()["smoke"] is False


@given(power=st.floats(150, 400), u=st.floats(0, 10 * 3600))
def test_an_ebike_draws_a_charger_load(power: float, u: float) -> None:
    fields = EbikeCharging(power_w=power).telemetry(u)
    assert fields["charging"] is True
    assert 150 <= fields["power_w"] <= 400
    assert 0.7 <= fields["current_a"] <= 2.0
    assert EbikeCharging().ended()["charging"] is False


def test_an_entrapment_is_a_closed_car_in_fault_then_a_release() -> None:
    trapped = Entrapment(floor=7, fault_code="E21").telemetry(30)
    assert trapped == {
        "state": "fault", "trapped": True, "door": "closed", "floor": 7, "fault_code": "E21",
    }  # fmt: skip
    released = Entrapment(floor=7).ended()
    assert released["trapped"] is False and released["state"] != "fault"


@given(st.lists(st.floats(0, 86400), min_size=2))
def test_a_blocked_lane_counts_up(moments: list[float]) -> None:
    counts = [LaneBlocked().telemetry(u)["blocked_s"] for u in sorted(moments)]
    assert counts == sorted(counts) and all(isinstance(c, int) and c >= 0 for c in counts)
    assert LaneBlocked().ended() == {"blocked": False, "blocked_s": 0}


@given(
    start=st.floats(15.5, 100),
    end=st.floats(0, 14.5),
    decline=st.floats(1, 86400),
    share=st.floats(0, 2),
)
def test_a_battery_declines_across_15(
    start: float, end: float, decline: float, share: float
) -> None:
    battery = LowBattery(start_pct=start, end_pct=end, decline_s=decline)
    cross = battery.crossing_u()
    assert battery.battery(cross) < 15 <= battery.battery(0)
    u = share * decline
    assert end - 0.05 <= battery.battery(u) <= start + 0.05
    assert battery.battery(u) >= battery.battery(u + 1) - 1e-9


# --- hostile payloads against the real decoder ----------------------------------------------


@given(
    variant=st.sampled_from(sorted(HOSTILE)),
    kind=st.sampled_from(DEVICE_KINDS),
    device_id=device_ids,
    street=streets,
    seq=st.integers(0, 2**40),
    ago=st.floats(0, 29 * 86400),
    seed=st.integers(0, 2**32),
    limit=st.one_of(st.just(16_384), st.integers(256, 65_536)),
)
def test_every_hostile_message_gets_the_reason_the_truth_claims(
    variant: str,
    kind: str,
    device_id: str,
    street: str,
    seq: int,
    ago: float,
    seed: int,
    limit: int,
) -> None:
    device = FleetDevice(device_id, kind, street)
    fields = {
        "ts": iso(NOW - timedelta(seconds=ago)),
        "seq": seq,
        **normal_fields(kind, random.Random(seed)),
    }
    ghost = "GHOST-" + device_id[:40] + "x"
    topic, payload, reason = hostile(
        variant, device, fields, prefix="sensord/v1", max_payload_bytes=limit, ghost_id=ghost
    )
    if limit >= 8192:  # the default 16 KiB and anything near it
        assert reason == HOSTILE[variant]
    directory = {device_id: DeviceInfo(kind, street)}
    limits = DecodeLimits(max_payload_bytes=limit)
    with pytest.raises(PayloadError) as caught:
        decode(topic, payload, NOW, directory, limits)
    assert caught.value.reason == reason, caught.value.detail
    # The same reading unbroken is valid: the variant alone is what breaks it.
    good = f"sensord/v1/{street}/{kind}/{device_id}"
    assert decode(good, json.dumps(fields).encode(), NOW, directory, limits).seq == seq


def test_hostile_payloads_are_what_they_say() -> None:
    device = FleetDevice("SMK-000001", "smoke", "jd01")
    fields = {"ts": iso(NOW), "seq": 1, "smoke": False}

    def make(variant: str) -> tuple[str, bytes, str]:
        return hostile(
            variant, device, fields, prefix="sensord/v1", max_payload_bytes=16_384, ghost_id="G-1"
        )

    assert len(make("oversized")[1]) == 16_384 + 1024
    assert b"[" * 2000 in make("deep_nesting")[1]
    assert b"\\u0000" in make("nul_escape")[1]
    assert make("wrong_kind")[0] == "sensord/v1/jd01/ebike/SMK-000001"
    assert make("unknown_device")[0] == "sensord/v1/jd01/smoke/G-1"
    assert json.loads(make("device_id_mismatch")[1])["device_id"] == "G-1"
    assert json.loads(make("wrong_type")[1])["smoke"] == "true"
