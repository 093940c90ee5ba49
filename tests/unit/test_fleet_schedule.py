"""The fleet's schedule: the simulated clock, placement, every message against the real decoder."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from sensord.core.messages import DecodeLimits, DeviceInfo, decode
from sensord.errors import PayloadError
from simulators.scenarios import LOCAL, FleetDevice, is_night, parse_spec
from simulators.schedule import (
    MAX_AHEAD_S,
    MAX_BEHIND,
    Clock,
    FleetConfig,
    Message,
    Plan,
    ScheduleError,
    Truth,
    make_clock,
    messages,
    plan,
    plan_from_run,
)

NOW = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)  # 14:30 street time
LIMITS = DecodeLimits()


def fleet() -> list[FleetDevice]:
    """A small district: kitchens, dwellings, a shed, lifts, lanes."""
    devices = [
        FleetDevice(f"SMK-{n:06d}", "smoke", "jd01", f"A-{n:06d}", "public_kitchen", 3600)
        for n in range(1, 9)
    ]
    devices += [
        FleetDevice(f"EB-{n:06d}", "ebike", "jd01", f"A-1{n:05d}", "dwelling", 300)
        for n in range(1, 5)
    ]
    devices += [FleetDevice("EB-000099", "ebike", "jd01", "A-200000", "bike_shed", 300)]
    devices += [
        FleetDevice(f"EL-{n:06d}", "elevator", "jd01", f"A-3{n:05d}", "elevator", 60)
        for n in range(1, 3)
    ]
    devices += [
        FleetDevice(f"FL-{n:06d}", "fire_lane", "jd02", f"A-4{n:05d}", "fire_lane", 600)
        for n in range(1, 3)
    ]
    return devices


def directory(devices: list[FleetDevice]) -> dict[str, DeviceInfo]:
    return {d.device_id: DeviceInfo(d.kind, d.street) for d in devices}


def make(
    specs: list[str],
    *,
    seed: int = 1,
    duration_s: float = 3 * 3600,
    speedup: float = 3600,
    start: str = "auto",
    telemetry_every_s: float = 60,
    devices: list[FleetDevice] | None = None,
) -> Plan:
    config = FleetConfig(seed=seed, duration_s=duration_s, telemetry_every_s=telemetry_every_s)
    clock = make_clock(NOW, duration_s, speedup, start)
    return plan(devices or fleet(), config, clock, [parse_spec(s) for s in specs])


def check(run: Plan, lag_s: float = 0.0) -> tuple[list[Message], Truth]:
    """Play the run; assert every message decodes (or fails) exactly as it claims."""
    known = directory(list(run.devices))
    played, truth = [], Truth(run)
    for message in messages(run):
        received = run.clock.wall(message.at_s) + timedelta(seconds=lag_s)
        if message.outcome == "dead_letter":
            with pytest.raises(PayloadError) as caught:
                decode(message.topic, message.payload, received, known, LIMITS)
            assert caught.value.reason == message.reason, (caught.value.detail, message)
        else:
            reading = decode(message.topic, message.payload, received, known, LIMITS)
            assert (reading.device_id, reading.seq) == (message.device_id, message.seq)
            assert reading.ts == datetime.fromisoformat(message.ts or "")
        truth.observe(message)
        played.append(message)
    return played, truth


def fields(message: Message) -> dict[str, Any]:
    value = json.loads(message.payload)
    assert isinstance(value, dict)
    return value


# --- the clock ----------------------------------------------------------------------------------


@given(
    duration=st.floats(1, 28 * 86400),
    speedup=st.floats(1, 1e6),
    share=st.floats(0, 1),
)
def test_auto_start_keeps_every_ts_inside_sensords_window(
    duration: float, speedup: float, share: float
) -> None:
    clock = make_clock(NOW, duration, speedup, "auto")
    at = share * duration
    ahead = (clock.ts(at) - clock.wall(at)).total_seconds()
    assert -MAX_BEHIND.total_seconds() - 1e-3 <= ahead <= 1e-3  # never ahead of the wall
    assert abs((clock.ts(duration) - clock.wall(duration)).total_seconds()) < 1e-3  # ends at now
    assert clock.start.utcoffset() == timedelta(hours=8)


def test_at_speedup_1_simulated_time_is_wall_time() -> None:
    clock = make_clock(NOW, 600, 1, "auto")
    assert clock.start == NOW and clock.ts(30) == clock.wall(30)
    assert make_clock(NOW, 600, 1, "now").start == NOW


def test_a_start_that_would_put_ts_in_the_future_is_refused() -> None:
    with pytest.raises(ScheduleError, match="ahead of the wall clock"):
        make_clock(NOW, 3600, 3600, "now")  # an hour simulated in a second
    with pytest.raises(ScheduleError, match="days"):
        make_clock(NOW, 3600, 1, "2026-10-01T00:00:00+08:00")
    with pytest.raises(ScheduleError, match="offset"):
        make_clock(NOW, 3600, 1, "2026-11-26T00:00:00")
    with pytest.raises(ScheduleError, match="speedup"):
        make_clock(NOW, 3600, 0.5, "auto")


def test_hh_mm_starts_at_the_latest_such_time_that_fits() -> None:
    clock = make_clock(NOW, 8 * 3600, 3600, "22:00")
    local = clock.start.astimezone(LOCAL)
    assert (local.hour, local.minute) == (22, 0)
    assert (clock.ts(8 * 3600) - clock.wall(8 * 3600)).total_seconds() <= MAX_AHEAD_S
    assert NOW - clock.start < timedelta(days=1, hours=8)


# --- every message against the real decoder -------------------------------------------------

SCENARIOS = [
    "kitchen_fire",
    "ebike_charging",
    "elevator_entrapment",
    "fire_lane_blocked",
    "silent",
    "silent:for=5m",
    "low_battery",
    "clock_skew",
    "duplicates:copies=3",
    "malformed",
    "malformed:only=oversized+deep_nesting,each=2",
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(st.sampled_from(SCENARIOS), max_size=5),
    seed=st.integers(0, 2**16),
    hours=st.floats(1, 5),
    speedup=st.sampled_from([1.0, 60.0, 3600.0, 1e6]),
    every=st.floats(30, 600),
    lag=st.floats(0, 120),
)
def test_every_message_decodes_as_the_truth_claims(
    specs: list[str], seed: int, hours: float, speedup: float, every: float, lag: float
) -> None:
    try:
        run = make(
            specs,
            seed=seed,
            duration_s=hours * 3600,
            speedup=speedup,
            start="22:00" if speedup > 1 else "auto",
            telemetry_every_s=every,
        )
    except ScheduleError:
        reject()  # e.g. no night in a daytime run at speedup 1, or not enough free devices
    played, truth = check(run, lag)
    times = [m.at_s for m in played]
    assert times == sorted(times) and all(0 <= t < run.config.duration_s for t in times)
    # Each device's own readings carry strictly increasing seq; identities are unique.
    by_device: dict[str, list[int]] = defaultdict(list)
    identities: Counter[tuple[str, str | None, int | None]] = Counter()
    for m in played:
        if m.outcome == "reading":
            by_device[m.device_id].append(m.seq or 0)
            identities[(m.device_id, m.ts, m.seq)] += 1
    assert all(seqs == sorted(set(seqs)) for seqs in by_device.values())
    assert set(identities.values()) <= {1}
    # A duplicate is byte for byte an earlier reading.
    originals = {(m.topic, m.payload) for m in played if m.outcome == "reading"}
    assert all((m.topic, m.payload) in originals for m in played if m.outcome == "duplicate")
    totals = truth.totals_record()
    assert totals["published_total"] == len(played)
    assert totals["readings_total"] == len(identities)
    assert totals["readings_total"] + totals["dead_letters_total"] + totals[
        "duplicates_published"
    ] == len(played)


def test_the_same_plan_plays_the_same_bytes_and_a_truth_file_replans_it() -> None:
    specs = ["kitchen_fire", "malformed", "duplicates", "clock_skew", "silent"]
    run = make(specs, seed=5)
    first = [(m.at_s, m.topic, m.payload) for m in messages(run)]
    assert first == [(m.at_s, m.topic, m.payload) for m in messages(make(specs, seed=5))]
    record = json.loads(json.dumps(run.run_record()))
    again = plan_from_run(record, fleet())
    assert [(m.at_s, m.topic, m.payload) for m in messages(again)] == first
    assert first != [(m.at_s, m.topic, m.payload) for m in messages(make(specs, seed=6))]


def test_the_messages_are_generated_lazily() -> None:
    run = make([], duration_s=28 * 86400, speedup=1e6)  # ~1.6 million messages in all
    started = time.perf_counter()
    first = list(itertools.islice(messages(run), 1000))
    assert len(first) == 1000 and time.perf_counter() - started < 2


# --- cadence ------------------------------------------------------------------------------------


def test_each_device_publishes_telemetry_and_heartbeats_at_its_rates() -> None:
    run = make([], duration_s=6 * 3600, telemetry_every_s=120)
    counts = Counter((m.device_id, m.kind == "heartbeat") for m in messages(run))
    for device in run.devices:
        assert counts[(device.device_id, False)] == pytest.approx(6 * 3600 / 120, abs=1)
        assert counts[(device.device_id, True)] == pytest.approx(
            6 * 3600 / (device.heartbeat_s or 1), abs=1
        )
    faster = make([], duration_s=6 * 3600, telemetry_every_s=120)
    scaled = Plan(
        faster.devices,
        FleetConfig(duration_s=6 * 3600, telemetry_every_s=120, heartbeat_scale=0.5),
        faster.clock,
        (),
        (),
    )
    beats = Counter(m.device_id for m in messages(scaled) if m.kind == "heartbeat")
    assert beats["SMK-000001"] == pytest.approx(12, abs=1)  # 3600 s × 0.5 over 6 h


# --- scenarios end to end ---------------------------------------------------------------------


def of(run: Plan, scenario: str) -> tuple[int, FleetDevice, float, float | None]:
    (incident,) = [i for i in run.incidents if i.scenario == scenario]
    return incident.id, incident.device, incident.start_s, incident.end_s


def telemetry(played: list[Message], device_id: str) -> list[Message]:
    return [m for m in played if m.device_id == device_id and m.kind != "heartbeat"]


def test_a_kitchen_fire_alarms_holds_and_clears() -> None:
    run = make(["kitchen_fire:rise=90,hold=120,clear=60,peak=20"])
    played, truth = check(run)
    ident, device, start, end = of(run, "kitchen_fire")
    assert device.place_type == "public_kitchen"
    assert end is not None and end - start == 270
    during = [m for m in telemetry(played, device.device_id) if start <= m.at_s <= end]
    smoke = [fields(m)["smoke"] for m in during]
    alarm = smoke.index(True)
    assert smoke[:alarm] == [False] * alarm
    assert smoke[-1] is False and True not in smoke[smoke.index(False, alarm) :]
    assert all(float(fields(m)["obscuration"]) >= 10 for m in during[alarm:] if m.at_s < start + 90)
    temps = [float(fields(m)["temp_c"]) for m in during if m.at_s < start + 210]
    assert temps == sorted(temps) and temps[-1] > temps[0] + 20
    assert len(during) >= 20  # reports every 10 s while burning
    (record,) = [r for r in truth.incident_records() if r["id"] == ident]
    assert record["expected"] == {"alert": "fire", "severity_hint": "critical"}
    assert record["milestones"]["alarm"]["ts"] == during[alarm].ts
    assert record["start"]["ts"] == during[0].ts and record["end"]["ts"] == during[-1].ts


def test_ebike_charging_happens_indoors_at_night() -> None:
    run = make(["ebike_charging:for=40m"], duration_s=10 * 3600, start="20:00")
    played, truth = check(run)
    ident, device, start, end = of(run, "ebike_charging")
    assert device.place_type == "dwelling" and end is not None
    charging = [m for m in telemetry(played, device.device_id) if fields(m)["charging"]]
    assert charging and all(is_night(datetime.fromisoformat(m.ts or "")) for m in charging)
    assert all(150 <= float(fields(m)["power_w"]) <= 400 for m in charging)
    assert all(0.7 <= float(fields(m)["current_a"]) <= 2 for m in charging)
    assert charging[0].at_s == start and charging[-1].at_s >= end - 60
    (record,) = [r for r in truth.incident_records() if r["id"] == ident]
    assert record["expected"]["alert"] == "ebike_indoor_charging"


def test_ebike_charging_without_a_night_in_the_run_is_refused() -> None:
    with pytest.raises(ScheduleError, match="night"):
        make(["ebike_charging"], duration_s=2 * 3600, start="10:00")
    shed = make(["ebike_charging:place=bike_shed"], duration_s=10 * 3600, start="20:00")
    (incident,) = shed.incidents
    assert incident.expected["alert"] is None  # charging in the shed is what sheds are for


def test_an_entrapment_faults_then_releases() -> None:
    run = make(["elevator_entrapment:for=10m,floor=7,fault_code=E21"])
    played, _ = check(run)
    _, device, _, _ = of(run, "elevator_entrapment")
    reports = [fields(m) for m in telemetry(played, device.device_id)]
    trapped = [r for r in reports if r["trapped"]]
    assert len(trapped) >= 600 / 15 - 1
    assert all(
        (r["state"], r["door"], r["floor"], r["fault_code"]) == ("fault", "closed", 7, "E21")
        for r in trapped
    )
    after = reports[reports.index(trapped[-1]) + 1]
    assert after == after | {"trapped": False, "door": "open", "fault_code": None}


def test_a_blocked_fire_lane_counts_then_clears() -> None:
    run = make(["fire_lane_blocked:for=15m"])
    played, _ = check(run)
    _, device, _, _ = of(run, "fire_lane_blocked")
    reports = [fields(m) for m in telemetry(played, device.device_id)]
    blocked = [int(str(r["blocked_s"])) for r in reports if r["blocked"]]
    assert blocked[0] == 0 and blocked == sorted(blocked) and blocked[-1] >= 15 * 60 - 30
    last = max(i for i, r in enumerate(reports) if r["blocked"])
    assert reports[last + 1] == {**reports[last + 1], "blocked": False, "blocked_s": 0}


def test_a_silent_device_publishes_nothing_then_comes_back() -> None:
    run = make(["silent:device=EL-000001,for=20m"])
    played, truth = check(run)
    _, _, start, end = of(run, "silent")
    assert end is not None
    mine = [m.at_s for m in played if m.device_id == "EL-000001"]
    assert not [t for t in mine if start <= t < end]
    assert next(t for t in mine if t >= end) == end  # reports the moment it is back
    gone = make(["silent:device=EL-000001"])  # for good
    played, truth = check(gone)
    _, _, start, end = of(gone, "silent")
    assert end is None and max(m.at_s for m in played if m.device_id == "EL-000001") < start
    (record,) = truth.incident_records()
    assert record["for_good"] and record["expected"]["alert"] == "device_offline"
    last = max((m for m in played if m.device_id == "EL-000001"), key=lambda m: m.at_s)
    assert record["milestones"]["last_seen"]["ts"] == last.ts
    due = datetime.fromisoformat(record["milestones"]["offline_due"]["ts"])
    assert due - datetime.fromisoformat(last.ts or "") == timedelta(seconds=120)  # 2 × 60 s
    # A smoke detector heartbeats hourly: twenty silent minutes are no outage.
    short = make(["silent:device=SMK-000001,for=20m"])
    _, truth = check(short)
    (record,) = truth.incident_records()
    assert record["expected"]["alert"] is None and "offline_due" not in record["milestones"]


def test_a_battery_runs_low() -> None:
    run = make(["low_battery:kind=elevator"])
    played, truth = check(run)
    _, device, start, _ = of(run, "low_battery")
    levels = [
        (m.at_s, float(str(fields(m)["battery_pct"])))
        for m in played
        if m.device_id == device.device_id and "battery_pct" in fields(m)
    ]
    assert [b for t, b in levels if t < start] and all(b >= 45 for t, b in levels if t < start)
    after = [b for t, b in levels if t >= start]
    assert after == sorted(after, reverse=True) and after[-1] < 15
    (record,) = truth.incident_records()
    below = record["milestones"]["below_15"]["ts"]
    first_low = next(m for m in played if m.device_id == device.device_id and m.at_s >= start
                     and float(str(fields(m).get("battery_pct", 100))) < 15)  # fmt: skip
    assert first_low.ts == below  # the device reports the moment it crosses


def test_a_skewed_clock_is_dead_lettered_and_counted() -> None:
    run = make(["clock_skew:hours=3,for=10m"])
    played, truth = check(run)
    ident, _, _, _ = of(run, "clock_skew")
    skewed = [m for m in played if m.incident == ident]
    assert skewed and all(m.reason == "clock_skew" for m in skewed)
    for m in skewed:
        ahead = datetime.fromisoformat(m.ts or "") - run.clock.wall(m.at_s)
        assert abs(ahead - timedelta(hours=3)) < timedelta(seconds=1)
    (record,) = truth.incident_records()
    assert record["expected"] == {"dead_letter": "clock_skew", "count": len(skewed)}


def test_duplicates_replay_exact_bytes() -> None:
    run = make(["duplicates:count=2,copies=3,gap=10"])
    played, truth = check(run)
    records = truth.incident_records()
    assert len(records) == 2
    for record in records:
        copies = [m for m in played if m.incident == record["id"]]
        assert len(copies) == 3 and len({m.payload for m in copies}) == 1
        original = next(
            m for m in played if m.outcome == "reading" and m.payload == copies[0].payload
        )
        assert [c.at_s - original.at_s for c in copies] == pytest.approx([10, 20, 30])
        assert record["expected"] == {"stored": 1, "copies": 3}
        assert record["original"]["seq"] == original.seq


def test_malformed_covers_every_reason_a_device_can_cause() -> None:
    run = make(["malformed:each=2"])
    played, truth = check(run)
    reasons = Counter(m.reason for m in played if m.outcome == "dead_letter")
    assert set(reasons) == {
        "bad_topic", "bad_json", "schema", "unknown_device", "device_kind_mismatch",
        "street_mismatch", "device_id_mismatch", "too_large",
    }  # fmt: skip
    assert sum(reasons.values()) == 16 * 2
    for record in truth.incident_records():
        assert record["expected"]["count"] == 2
        assert record["messages"]["dead_letters"] == {record["expected"]["dead_letter"]: 2}


# --- targets -----------------------------------------------------------------------------------


def test_targets_by_id_kind_place_or_at_random_with_the_seed() -> None:
    assert make(["silent:device=FL-000002"]).incidents[0].device.device_id == "FL-000002"
    assert make(["silent:kind=fire_lane"]).incidents[0].device.kind == "fire_lane"
    assert make(["low_battery:place=bike_shed"]).incidents[0].device.device_id == "EB-000099"
    picks = {make(["silent:count=3"], seed=s).incidents[0].device.device_id for s in range(20)}
    assert len(picks) > 3  # the seed picks
    assert make(["silent:count=3"], seed=4).incidents == make(["silent:count=3"], seed=4).incidents


def test_a_device_is_the_target_of_one_scenario_at_most() -> None:
    run = make(["silent:kind=elevator", "low_battery:kind=elevator"])
    assert len({i.device.device_id for i in run.incidents}) == 2
    with pytest.raises(ScheduleError, match="found 0"):
        make(["silent:count=2,kind=elevator", "low_battery:kind=elevator"])
    with pytest.raises(ScheduleError, match="no device"):
        make(["silent:device=NOPE-1"])
    with pytest.raises(ScheduleError, match="is a smoke device"):
        make(["elevator_entrapment:device=SMK-000001"])


def test_adding_a_scenario_does_not_move_the_others() -> None:
    alone = make(["kitchen_fire"], seed=3).incidents[0]
    with_more = make(["kitchen_fire", "silent"], seed=3).incidents[0]
    assert (alone.device, alone.start_s) == (with_more.device, with_more.start_s)


def test_a_scenario_that_does_not_fit_the_run_is_refused() -> None:
    with pytest.raises(ScheduleError, match="raise --duration"):
        make(["fire_lane_blocked:for=2h"], duration_s=3600)
    with pytest.raises(ScheduleError, match="after the end"):
        make(["kitchen_fire:at=5h"], duration_s=3600)


def test_at_takes_an_offset_or_a_time_of_day() -> None:
    run = make(["kitchen_fire:at=10m", "fire_lane_blocked:at=12:00"], duration_s=4 * 3600)
    fire, lane = run.incidents  # the run is 10:30-14:30 street time
    assert fire.start_s == 600
    assert run.clock.ts(lane.start_s).astimezone(LOCAL).strftime("%H:%M") == "12:00"


def test_a_clock_outside_sensords_window_cannot_be_planned() -> None:
    config = FleetConfig(duration_s=3600)
    clock = Clock(NOW, NOW + timedelta(hours=1), 1.0)
    with pytest.raises(ScheduleError):
        plan(fleet(), config, clock, [])
