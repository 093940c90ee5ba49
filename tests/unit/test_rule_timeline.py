"""Scripted timelines over the pure rule engine, on a virtual clock, with the shipped rules.

Each script is a small table of ``(t_seconds, device, fields)``: device time
is ``T0 + t``. The harness feeds the engine the way the daemon does (batches of
readings, the registry context per device), keeps what the daemon keeps in the
database (the changed rule states as JSON, each device's newest stored device
time), and can restart: a new engine built from exactly that, as
``services.alerts.build_pipeline`` builds one. Every alert change is recorded as
``(t_seconds, outcome)`` per rule.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensord.adapters.alert_store import decode_state, encode_state
from sensord.adapters.rule_files import load_rules
from sensord.core.messages import Reading
from sensord.core.rules.engine import DUPLICATE_WINDOW, Key, RuleEngine, subject_of
from sensord.core.rules.fields import EMPTY
from sensord.core.rules.model import RuleSet
from sensord.core.rules.state import Outcome

REPO = Path(__file__).resolve().parents[2]
RULES = load_rules(REPO / "rules")
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
KIND_OF = {"SMK": "smoke", "FL": "fire_lane", "EL": "elevator", "EB": "ebike"}
OPENING = (Outcome.FIRED, Outcome.REOPENED)

Row = tuple[float, str, dict[str, Any]]  # (t seconds, device id, fields)
Context = Callable[[str], Mapping[str, Any]]


def reading(t: float, device: str, fields: Mapping[str, Any], kind: str | None = None) -> Reading:
    """The reading a device sends at T0 + t; same t, same seq (a redelivery is identical)."""
    ts = T0 + timedelta(seconds=t)
    kind = kind or KIND_OF[device.split("-", maxsplit=1)[0]]
    return Reading(ts, ts, device, kind, int(t * 1000), **fields)


@dataclass(frozen=True)
class Change:
    """One alert change the engine decided."""

    t: float
    outcome: Outcome
    rule: str
    subject: str
    severity: str


@dataclass
class Timeline:
    """A RuleEngine driven by scripts, with the daemon's persistence and restarts."""

    rules: RuleSet = RULES
    context: Context = lambda device_id: EMPTY
    changes: list[Change] = field(default_factory=list)
    stored_states: dict[Key, str] = field(default_factory=dict)  # rule_state.state (jsonb)
    # max(ts) of the stored readings per (device, kind), as load_last_seen reads it
    stored_last_ts: dict[tuple[str, str], datetime] = field(default_factory=dict)
    # the readings table's duplicate key (device_id, ts, seq) of every stored reading
    stored_keys: set[tuple[str, datetime, int]] = field(default_factory=set)
    engine: RuleEngine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = RuleEngine(self.rules)

    def feed(self, rows: Iterable[Row], batch: int = 1) -> list[Change]:
        """Run script rows through the engine in batches of ``batch``; the changes they made."""
        return self.feed_readings([reading(*row) for row in rows], batch)

    def feed_readings(self, readings: Sequence[Reading], batch: int = 1) -> list[Change]:
        """Run readings through the engine in batches of ``batch``; the changes they made."""
        made: list[Change] = []
        for start in range(0, len(readings), batch):
            part = readings[start : start + batch]
            evaluation = self.engine.evaluate(part, self.context)
            # What the batch's transaction commits: its readings and the moved states.
            for r in part:
                last = self.stored_last_ts.get((r.device_id, r.kind))
                newest = r.ts if last is None else max(last, r.ts)
                self.stored_last_ts[(r.device_id, r.kind)] = newest
                self.stored_keys.add((r.device_id, r.ts, r.seq))
            for key, state in evaluation.changed.items():
                self.stored_states[key] = json.dumps(encode_state(state))
            made += [
                Change((e.ts - T0).total_seconds(), e.outcome, e.rule.name, e.subject, e.severity)
                for e in evaluation.effects
            ]
        self.changes += made
        return made

    def restart(self) -> None:
        """A new engine from what the database holds, as the daemon builds it on start."""
        states = {key: decode_state(json.loads(text)) for key, text in self.stored_states.items()}
        newest: dict[str, datetime] = {}
        for (device, _kind), ts in self.stored_last_ts.items():
            newest[device] = max(ts, newest.get(device, ts))
        # alert_store.load_recent: the keys within DUPLICATE_WINDOW of each device's newest
        recent = [
            (device, ts, seq)
            for device, ts, seq in self.stored_keys
            if newest[device] - DUPLICATE_WINDOW < ts <= newest[device]
        ]
        self.engine = RuleEngine(self.rules, states, dict(self.stored_last_ts), recent=recent)

    def alerts(self, rule: str, subject: str | None = None) -> list[tuple[float, Outcome]]:
        """Opens and clears of one rule (``updated`` left out), in order."""
        return [
            (c.t, c.outcome)
            for c in self.changes
            if c.rule == rule
            and (subject is None or c.subject == subject)
            and c.outcome is not Outcome.UPDATED
        ]


def every(step: float, start: float, end: float, device: str, **fields: Any) -> list[Row]:
    """Readings of one device every ``step`` seconds from ``start`` to ``end`` inclusive."""
    count = int((end - start) // step) + 1
    return [(start + i * step, device, dict(fields)) for i in range(count)]


# --- kitchen fire -----------------------------------------------------------------


def test_kitchen_fire_alarms_at_once_and_clears_after_two_quiet_minutes() -> None:
    timeline = Timeline()
    timeline.feed(
        [
            (0, "SMK-K", {"smoke": False, "obscuration": 0.3}),
            *every(30, 30, 300, "SMK-K", smoke=True, obscuration=14.0),
            (330, "SMK-K", {"smoke": False, "obscuration": 4.0}),  # between the thresholds
            *every(30, 360, 600, "SMK-K", smoke=False, obscuration=1.5),
        ]
    )
    # Fires on the first smoke reading; quiet (< 2 %/m) from 360 on, so clears at 480.
    assert timeline.alerts("smoke_alarm") == [(30, Outcome.FIRED), (480, Outcome.CLEARED)]
    assert {c.rule for c in timeline.changes} == {"smoke_alarm"}


def test_a_reading_above_the_clear_threshold_restarts_the_quiet_period() -> None:
    timeline = Timeline()
    timeline.feed(
        [
            (0, "SMK-K", {"smoke": True, "obscuration": 14.0}),
            *every(30, 300, 390, "SMK-K", smoke=False, obscuration=1.0),
            (420, "SMK-K", {"smoke": False, "obscuration": 3.0}),  # the fumes come back a bit
            *every(30, 450, 600, "SMK-K", smoke=False, obscuration=1.0),
        ]
    )
    assert timeline.alerts("smoke_alarm") == [(0, Outcome.FIRED), (570, Outcome.CLEARED)]


def test_a_brief_burst_of_smoke_stays_open_for_the_hold_time() -> None:
    timeline = Timeline()
    timeline.feed(
        [
            (0, "SMK-K", {"smoke": True, "obscuration": 12.0}),
            *every(30, 30, 400, "SMK-K", smoke=False, obscuration=0.5),
        ]
    )
    # Quiet for two minutes at 150, but smoke_alarm's hold_s keeps it open until 300.
    assert timeline.alerts("smoke_alarm") == [(0, Outcome.FIRED), (300, Outcome.CLEARED)]


# --- fire lane: delay, flapping, cooldown -----------------------------------------


def test_fire_lane_blocked_nine_minutes_twice_with_a_gap_raises_nothing() -> None:
    timeline = Timeline()
    timeline.feed(
        [
            *every(60, 0, 540, "FL-1", blocked=True),  # 9 minutes
            (600, "FL-1", {"blocked": False}),  # 1 minute clear
            *every(60, 660, 1200, "FL-1", blocked=True),  # 9 minutes again
            *every(60, 1260, 1800, "FL-1", blocked=False),
        ]
    )
    assert timeline.changes == []


def test_fire_lane_blocked_eleven_minutes_raises_one_alert_at_ten() -> None:
    timeline = Timeline()
    timeline.feed(every(60, 0, 660, "FL-1", blocked=True))
    assert timeline.alerts("fire_lane_blocked") == [(600, Outcome.FIRED)]
    assert [c.outcome for c in timeline.changes] == [Outcome.FIRED, Outcome.UPDATED]


def test_a_missing_field_neither_fires_nor_restarts_the_delay() -> None:
    timeline = Timeline()
    timeline.feed(
        [
            *every(60, 0, 240, "FL-1", blocked=True),
            (300, "FL-1", {"blocked_s": 300}),  # blocked unknown: the delay runs on
            *every(60, 360, 600, "FL-1", blocked=True),
        ]
    )
    assert timeline.alerts("fire_lane_blocked") == [(600, Outcome.FIRED)]


def test_fire_lane_blocked_again_within_the_cooldown_reopens_the_same_alert() -> None:
    timeline = Timeline()
    timeline.feed(
        [
            *every(60, 0, 660, "FL-1", blocked=True),
            *every(60, 720, 840, "FL-1", blocked=False),  # clear for two minutes
            *every(60, 900, 1560, "FL-1", blocked=True),  # 11 minutes, 60 s after the clear
        ]
    )
    assert timeline.alerts("fire_lane_blocked") == [
        (600, Outcome.FIRED),
        (840, Outcome.CLEARED),
        (1500, Outcome.REOPENED),  # the for_s delay applies again; one alert, reopened
    ]
    state = timeline.engine.state(("fire_lane_blocked", subject_of("FL-1")))
    assert state is not None and state.fired_at == T0 + timedelta(seconds=600)


def test_fire_lane_blocked_after_the_cooldown_raises_a_new_alert() -> None:
    timeline = Timeline()
    timeline.feed(
        [
            *every(60, 0, 660, "FL-1", blocked=True),
            *every(60, 720, 840, "FL-1", blocked=False),
            *every(60, 3000, 3600, "FL-1", blocked=True),  # cooldown (30 min) long over
        ]
    )
    assert timeline.alerts("fire_lane_blocked") == [
        (600, Outcome.FIRED),
        (840, Outcome.CLEARED),
        (3600, Outcome.FIRED),
    ]


# --- restart in the middle of a window ----------------------------------------------

LANE = [
    *every(60, 0, 660, "FL-1", blocked=True),
    *every(60, 720, 900, "FL-1", blocked=False),
    *every(60, 960, 1800, "FL-1", blocked=True),
]
SMOKE = [
    *every(30, 0, 120, "SMK-1", smoke=False, obscuration=0.2),
    *every(30, 150, 240, "SMK-1", smoke=True, obscuration=15.0),
    *every(30, 270, 900, "SMK-1", smoke=False, obscuration=0.5),
]
SCRIPT = sorted([*LANE, *SMOKE], key=lambda row: row[0])


def _without_restart() -> list[tuple[float, Outcome, str]]:
    timeline = Timeline()
    timeline.feed(SCRIPT, batch=3)
    return [(c.t, c.outcome, c.rule) for c in timeline.changes]


@pytest.mark.parametrize("at", [0, 60, 240, 300, 540, 600, 630, 780, 1200, 1500, 1620])
def test_a_restart_anywhere_fires_and_clears_at_the_same_times(at: float) -> None:
    """Including in the middle of fire_lane_blocked's for window and smoke_alarm's quiet one."""
    timeline = Timeline()
    timeline.feed([row for row in SCRIPT if row[0] <= at], batch=3)
    timeline.restart()
    # The broker redelivers what was unacknowledged at the crash: already stored, no effect.
    assert timeline.feed([row for row in SCRIPT if at - 90 <= row[0] <= at]) == []
    timeline.feed([row for row in SCRIPT if row[0] > at], batch=3)
    assert [(c.t, c.outcome, c.rule) for c in timeline.changes] == _without_restart()


def test_the_script_of_the_restart_test_does_what_it_says() -> None:
    by_rule = {
        rule: [(t, o) for t, o, r in _without_restart() if r == rule and o is not Outcome.UPDATED]
        for rule in ("smoke_alarm", "fire_lane_blocked")
    }
    assert by_rule == {
        # quiet from 270, two minutes at 390, but held open until 150 + hold_s 300
        "smoke_alarm": [(150, Outcome.FIRED), (450, Outcome.CLEARED)],
        "fire_lane_blocked": [
            (600, Outcome.FIRED),
            (840, Outcome.CLEARED),  # two clear minutes from 720
            (1560, Outcome.REOPENED),  # blocked again 960..1560, within the cooldown
        ],
    }


# --- escalation by the place's context ------------------------------------------------

DWELLING_ALONE = {"address_id": "A-1", "place_type": "dwelling", "elderly_living_alone": 1}
DWELLING = {"address_id": "A-2", "place_type": "dwelling", "elderly_living_alone": 0}
KITCHEN = {"address_id": "A-3", "place_type": "public_kitchen", "elderly_living_alone": 0}


@pytest.mark.parametrize(
    ("context", "severity"),
    [(DWELLING_ALONE, "critical"), (DWELLING, "major"), (KITCHEN, "major"), ({}, "major")],
)
def test_smoke_escalates_in_the_home_of_an_elderly_person_living_alone(
    context: Mapping[str, Any], severity: str
) -> None:
    timeline = Timeline(context=lambda device_id: context)
    timeline.feed([(0, "SMK-1", {"smoke": True, "obscuration": 11.0})])
    assert [(c.outcome, c.severity) for c in timeline.changes] == [(Outcome.FIRED, severity)]


def test_escalation_looks_at_each_device_s_own_place() -> None:
    places = {"SMK-1": DWELLING_ALONE, "SMK-2": KITCHEN}
    timeline = Timeline(context=lambda device_id: places[device_id])
    timeline.feed(
        [
            (0, "SMK-1", {"smoke": True, "obscuration": 11.0}),
            (0, "SMK-2", {"smoke": True, "obscuration": 11.0}),
        ],
        batch=2,
    )
    assert {c.subject: c.severity for c in timeline.changes} == {
        "device:SMK-1": "critical",
        "device:SMK-2": "major",
    }


# --- redelivery ---------------------------------------------------------------------


def test_redelivered_readings_change_nothing() -> None:
    timeline = Timeline()
    first = timeline.feed(LANE, batch=5)
    states = dict(timeline.stored_states)
    assert timeline.feed(LANE, batch=5) == []  # the whole stream again
    assert timeline.feed(LANE, batch=len(LANE)) == []  # as one batch
    assert timeline.stored_states == states
    assert [c.outcome for c in first if c.outcome is not Outcome.UPDATED] == [
        Outcome.FIRED,
        Outcome.CLEARED,
        Outcome.REOPENED,
    ]


def test_a_reading_at_the_same_device_time_with_other_values_changes_nothing() -> None:
    timeline = Timeline()
    timeline.feed(every(60, 0, 600, "FL-1", blocked=True))
    assert (
        timeline.feed([(600, "FL-1", {"blocked": False}), (600, "FL-1", {"blocked": True})]) == []
    )
    assert timeline.alerts("fire_lane_blocked") == [(600, Outcome.FIRED)]


def test_duplicates_inside_one_batch_count_once() -> None:
    timeline = Timeline()
    rows = every(60, 0, 600, "FL-1", blocked=True)
    doubled = [row for row in rows for _ in range(2)]
    assert [c.outcome for c in timeline.feed(doubled, batch=len(doubled))] == [Outcome.FIRED]


# --- a known gap, pinned: late readings of another kind across a restart ----------------


def test_a_late_reading_counts_the_same_with_or_without_a_restart() -> None:
    script: list[tuple[float, str, dict[str, Any], str]] = [
        (0, "SMK-1", {"smoke": False, "obscuration": 0.2}, "smoke"),
        (100, "SMK-1", {"battery_pct": 80.0}, "heartbeat"),  # newer device time, other kind
        (60, "SMK-1", {"smoke": True, "obscuration": 20.0}, "smoke"),  # late, but new for smoke
    ]
    readings = [reading(t, device, fields, kind) for t, device, fields, kind in script]
    straight = Timeline()
    straight.feed_readings(readings)
    restarted = Timeline()
    restarted.feed_readings(readings[:2])
    restarted.restart()
    restarted.feed_readings(readings[2:])
    assert straight.alerts("smoke_alarm") == [(60, Outcome.FIRED)]
    assert restarted.alerts("smoke_alarm") == straight.alerts("smoke_alarm")


def test_a_detector_without_obscuration_clears_after_two_quiet_minutes() -> None:
    timeline = Timeline()
    timeline.feed([(0, "SMK-1", {"smoke": True}), *every(30, 30, 900, "SMK-1", smoke=False)])
    assert timeline.alerts("smoke_alarm") == [(0, Outcome.FIRED), (300, Outcome.CLEARED)]


# --- properties -----------------------------------------------------------------------

FIELDS: dict[str, list[dict[str, Any]]] = {
    "smoke": [
        {"smoke": True, "obscuration": 15.0},
        {"smoke": False, "obscuration": 5.0},
        {"smoke": False, "obscuration": 0.5},
        {"smoke": False},
        {"smoke": False, "obscuration": 0.5, "battery_pct": 10.0},
    ],
    "fire_lane": [{"blocked": True}, {"blocked": False}, {"blocked_s": 5}],
    "elevator": [
        {"state": "fault", "trapped": True},
        {"state": "fault", "trapped": False},
        {"state": "running", "trapped": False},
        {"state": "idle", "trapped": False},
    ],
    "ebike": [{"charging": True, "power_w": 250.0}, {"charging": False, "power_w": 0.0}],
    "heartbeat": [{"battery_pct": 10.0}, {"battery_pct": 50.0}, {}],
}
DEVICES = {"SMK-1": "smoke", "SMK-2": "smoke", "FL-1": "fire_lane", "EL-1": "elevator"}
DEVICES |= {"EB-1": "ebike"}


@st.composite
def device_streams(draw: st.DrawFn, monotonic: bool) -> list[Reading]:
    """Per device a stream of readings (steps of 0-400 s, or -100-400 s), interleaved at random."""
    streams: list[list[Reading]] = []
    for device, kind in DEVICES.items():
        t, stream = 0.0, []
        for _ in range(draw(st.integers(0, 25))):
            t += draw(st.integers(1 if monotonic else -100, 400))
            reading_kind = draw(st.sampled_from([kind, kind, kind, "heartbeat"]))
            fields = draw(st.sampled_from(FIELDS[reading_kind]))
            stream.append(reading(t, device, fields, reading_kind))
        streams.append(stream)
    order = draw(st.permutations([i for i, s in enumerate(streams) for _ in s]))
    cursors = [0] * len(streams)
    merged = []
    for index in order:  # each device's own order is kept; the devices interleave
        merged.append(streams[index][cursors[index]])
        cursors[index] += 1
    return merged


def _state_rule_changes(changes: Iterable[Change]) -> dict[tuple[str, str], list[Outcome]]:
    state_rules = {r.name for r in RULES.rules if r.type == "state"}
    per_pair: dict[tuple[str, str], list[Outcome]] = {}
    for c in changes:
        if c.rule in state_rules and c.outcome is not Outcome.UPDATED:
            per_pair.setdefault((c.rule, c.subject), []).append(c.outcome)
    return per_pair


@settings(deadline=None)
@given(readings=device_streams(monotonic=False), batch=st.integers(1, 8))
def test_never_two_open_alerts_per_rule_and_subject(readings: list[Reading], batch: int) -> None:
    timeline = Timeline()
    timeline.feed_readings(readings, batch)
    for (rule, subject), outcomes in _state_rule_changes(timeline.changes).items():
        opens = [o in OPENING for o in outcomes]
        # open, clear, open, clear, ...: never two opens (or two clears) in a row,
        # and the first change of a pair opens a brand-new alert.
        assert opens == [i % 2 == 0 for i in range(len(outcomes))], (rule, subject, outcomes)
        assert outcomes[0] is Outcome.FIRED, (rule, subject, outcomes)


@settings(deadline=None)
@given(readings=device_streams(monotonic=False), batch=st.integers(1, 8))
def test_each_device_s_alerts_do_not_depend_on_the_others_or_on_batching(
    readings: list[Reading], batch: int
) -> None:
    together = Timeline()
    together.feed_readings(readings, batch)
    alone = Timeline()
    for device in DEVICES:
        alone.feed_readings([r for r in readings if r.device_id == device])
    assert _state_rule_changes(together.changes) == _state_rule_changes(alone.changes)


# Device times may go backwards (late readings): the guard is per (device, kind), in
# memory and after a restart alike, so restarts still change nothing.
@settings(deadline=None)
@given(
    readings=device_streams(monotonic=False),
    batch=st.integers(1, 8),
    restarts=st.sets(st.integers(0, 130), max_size=4),
)
def test_restarts_change_nothing_even_with_late_readings(
    readings: list[Reading], batch: int, restarts: set[int]
) -> None:
    straight = Timeline()
    straight.feed_readings(readings, batch)
    restarted = Timeline()
    cuts = sorted({0, len(readings), *(i for i in restarts if i < len(readings))})
    for start, end in itertools.pairwise(cuts):
        restarted.feed_readings(readings[start:end], batch)
        restarted.restart()
        assert restarted.feed_readings(readings[max(0, end - 3) : end]) == []  # redelivery
    assert _state_rule_changes(restarted.changes) == _state_rule_changes(straight.changes)
    assert [(c.t, c.outcome, c.rule, c.subject, c.severity) for c in restarted.changes] == [
        (c.t, c.outcome, c.rule, c.subject, c.severity) for c in straight.changes
    ]


# --- device clocks (issue 11): windows on receive time, late readings only raise ---------

TOLERANCE = 60.0  # ingest.max_future_s: a reading's ts is at most this far ahead of receipt


def arrived(
    r: float, device: str, fields: Mapping[str, Any], ahead: float = 0.0, seq: int | None = None
) -> Reading:
    """A reading received at T0 + r whose device time is ``ahead`` seconds off receipt."""
    kind = KIND_OF[device.split("-", maxsplit=1)[0]]
    ts = T0 + timedelta(seconds=r + ahead)
    number = int(r * 1000) if seq is None else seq
    return Reading(ts, T0 + timedelta(seconds=r), device, kind, number, **fields)


QUIET = {"smoke": False, "obscuration": 0.3}
SMOKE_ON = {"smoke": True, "obscuration": 14.0}


def _smoke_opens_and_clears(timeline: Timeline) -> list[Outcome]:
    return [o for _, o in timeline.alerts("smoke_alarm")]


def test_a_forged_future_reading_hides_no_later_alarm() -> None:
    """The attack: one reading 290 s ahead, then the real detector alarms; today's engine
    dropped 17 real smoke readings as "not newer". Now the first real one fires."""
    timeline = Timeline()
    real = [arrived(r, "SMK-K", QUIET) for r in range(0, 100, 30)]
    forged = [arrived(100, "SMK-K", QUIET, ahead=290, seq=999_999)]
    fire = [arrived(r, "SMK-K", SMOKE_ON) for r in range(130, 650, 30)]
    made = timeline.feed_readings([*real, *forged, *fire])
    assert [(c.t, c.outcome) for c in made if c.outcome is not Outcome.UPDATED] == [
        (130, Outcome.FIRED)
    ]
    state = timeline.engine.state(("smoke_alarm", subject_of("SMK-K")))
    assert state is not None and state.fired_at == T0 + timedelta(seconds=130)  # receive time


def test_forged_future_clears_every_two_minutes_do_not_clear_a_real_fire() -> None:
    """The attack: future-dated ``smoke: false`` every 2 min during a real fire cleared it;
    now every real smoke reading (late news or not) starts the quiet period over."""
    timeline = Timeline()
    fire = [arrived(r, "SMK-K", SMOKE_ON) for r in range(0, 1800, 30)]
    forged = [
        arrived(r, "SMK-K", {"smoke": False, "obscuration": 0.0}, ahead=TOLERANCE, seq=10**6 + r)
        for r in range(15, 1800, 120)
    ]
    stream = sorted([*fire, *forged], key=lambda reading: reading.received_at)
    timeline.feed_readings(stream, batch=3)
    assert _smoke_opens_and_clears(timeline) == [Outcome.FIRED]
    # The fire goes out: two quiet minutes of receive time clear it as before.
    timeline.feed_readings([arrived(r, "SMK-K", QUIET) for r in range(1800, 2000, 30)])
    assert timeline.alerts("smoke_alarm")[-1] == (1920, Outcome.CLEARED)


def test_a_late_clear_clears_nothing_and_a_late_alarm_still_fires() -> None:
    timeline = Timeline()
    timeline.feed_readings([arrived(0, "SMK-K", SMOKE_ON)])
    # Device time an hour behind, received for three minutes: old news cannot clear.
    timeline.feed_readings([arrived(r, "SMK-K", QUIET, ahead=-3600) for r in range(30, 400, 30)])
    assert _smoke_opens_and_clears(timeline) == [Outcome.FIRED]
    other = Timeline()
    other.feed_readings([arrived(0, "SMK-J", QUIET, ahead=TOLERANCE)])
    other.feed_readings([arrived(10, "SMK-J", SMOKE_ON, ahead=-300)])  # buffered, late
    assert _smoke_opens_and_clears(other) == [Outcome.FIRED]


def test_device_time_racing_ahead_shortens_no_window() -> None:
    """fire_lane_blocked: blocked 10 min then clear 2 min, counted on receive time."""
    timeline = Timeline()
    # ts runs ten times faster than the server clock (a device with a broken RTC).
    racing = [arrived(r, "FL-1", {"blocked": True}, ahead=9 * r) for r in range(0, 700, 6)]
    timeline.feed_readings([r for r in racing if r.ts - r.received_at <= timedelta(seconds=60)])
    assert timeline.alerts("fire_lane_blocked") == []
    timeline = Timeline()
    timeline.feed_readings([arrived(r, "FL-1", {"blocked": True}) for r in range(0, 660, 60)])
    assert [o for _, o in timeline.alerts("fire_lane_blocked")] == [Outcome.FIRED]
    # Clears 60 s ahead, then 119 s of receive time: not two minutes yet.
    timeline.feed_readings(
        [arrived(r, "FL-1", {"blocked": False}, ahead=TOLERANCE) for r in (700, 759, 819)]
    )
    assert [o for _, o in timeline.alerts("fire_lane_blocked")] == [Outcome.FIRED]
    timeline.feed_readings([arrived(820, "FL-1", {"blocked": False}, ahead=TOLERANCE)])
    assert [o for _, o in timeline.alerts("fire_lane_blocked")][-1] is Outcome.CLEARED


def test_a_redelivery_is_recognised_by_its_key_not_its_device_time() -> None:
    timeline = Timeline()
    first = [
        arrived(0, "SMK-K", SMOKE_ON),
        *(arrived(r, "SMK-K", QUIET) for r in range(30, 400, 30)),
    ]
    timeline.feed_readings(first)
    assert _smoke_opens_and_clears(timeline) == [Outcome.FIRED, Outcome.CLEARED]
    # The broker redelivers the alarm 400 s later (same ts and seq, new receipt): nothing.
    again = first[0]._replace(received_at=T0 + timedelta(seconds=400))
    assert timeline.feed_readings([again]) == []
    # A new alarm with an old ts is not a redelivery: it reopens.
    late = first[0]._replace(received_at=T0 + timedelta(seconds=410), seq=123)
    assert [c.outcome for c in timeline.feed_readings([late])] == [Outcome.REOPENED]


SMOKE_FIELDS = [*FIELDS["smoke"], {"smoke": True}]


@st.composite
def one_device(draw: st.DrawFn) -> list[Reading]:
    """One device's readings in receive order, each ts anywhere from a day behind receipt to
    the tolerance ahead, any fields, seq from a small range (keys collide: redeliveries)."""
    out: list[Reading] = []
    r = 0.0
    for _ in range(draw(st.integers(1, 60))):
        r += draw(st.integers(1, 60))
        ahead = draw(st.sampled_from([-86400.0, -600.0, -30.0, 0.0, 1.0, 30.0, TOLERANCE]))
        kind = draw(st.sampled_from(["smoke", "smoke", "heartbeat"]))
        fields = draw(st.sampled_from(SMOKE_FIELDS if kind == "smoke" else FIELDS["heartbeat"]))
        ts = T0 + timedelta(seconds=r + ahead)
        seq = draw(st.integers(0, 20))
        out.append(Reading(ts, T0 + timedelta(seconds=r), "SMK-1", kind, seq, **fields))
    return out


@settings(deadline=None, max_examples=300)
@given(readings=one_device(), batch=st.integers(1, 5))
def test_no_readings_within_the_tolerance_make_the_engine_ignore_a_later_alarm(
    readings: list[Reading], batch: int
) -> None:
    """After every batch holding an alarm reading not seen before (its key new; a repeated
    key is a redelivery, which the database drops too) from a clock within the tolerance of
    receipt, smoke_alarm is firing: the alarm was ignored for 0 s, less than the tolerance,
    however the readings before it were dated (a day behind to the tolerance ahead).
    Nothing after it in the batch can clear it unless the batch goes on for two alarm-free
    minutes."""
    timeline = Timeline()
    seen: set[tuple[datetime, int]] = set()
    key = ("smoke_alarm", subject_of("SMK-1"))
    for start in range(0, len(readings), batch):
        part = readings[start : start + batch]
        timeline.feed_readings(part, batch=len(part))
        alarm: Reading | None = None  # the batch's last honest, new alarm
        for r in part:
            honest = abs(r.ts - r.received_at) <= timedelta(seconds=TOLERANCE)
            new = (r.ts, r.seq) not in seen
            if r.kind == "smoke" and bool(r.smoke) and honest and new:
                alarm = r
            seen.add((r.ts, r.seq))
        # A batch that goes on for two alarm-free minutes of receive time after its alarm
        # may rightly clear it (found by hypothesis: readings a day behind are replays).
        if alarm is not None and part[-1].received_at - alarm.received_at < timedelta(minutes=2):
            state = timeline.engine.state(key)
            assert state is not None and state.phase.value == "firing", part


@settings(deadline=None, max_examples=200)
@given(readings=one_device())
def test_no_forged_readings_clear_an_alert_while_the_detector_keeps_alarming(
    readings: list[Reading],
) -> None:
    """The real detector alarms every 30 s for as long as the stream lasts; whatever the
    other readings say and however they are dated, the alert opens once and never clears."""
    end = max(r.received_at for r in readings)
    span = int((end - T0).total_seconds())
    real = [arrived(r, "SMK-1", SMOKE_ON, seq=10**7 + r) for r in range(0, span + 1, 30)]
    merged = sorted([*real, *readings], key=lambda reading: reading.received_at)
    timeline = Timeline()
    timeline.feed_readings(merged, batch=4)
    assert _smoke_opens_and_clears(timeline) == [Outcome.FIRED]


def test_a_condition_holding_again_after_the_clear_marks_it_recurring() -> None:
    """Not yet for for_s, so no reopen; but telemetry must not verify that clear."""
    timeline = Timeline()
    timeline.feed(
        [*every(60, 0, 660, "FL-1", blocked=True), *every(60, 720, 840, "FL-1", blocked=False)]
    )
    assert [o for _, o in timeline.alerts("fire_lane_blocked")][-1] is Outcome.CLEARED
    evaluation = timeline.engine.evaluate(
        [reading(900, "FL-1", {"blocked": True})], lambda d: EMPTY
    )
    key = ("fire_lane_blocked", subject_of("FL-1"))
    assert evaluation.effects == [] and evaluation.recurring == {key: T0 + timedelta(seconds=900)}
