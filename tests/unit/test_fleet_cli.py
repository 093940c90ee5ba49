"""``python -m simulators fleet`` without a broker: registry files, pacing, the truth file."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from simulators.__main__ import main as simulators_main
from simulators.district import generate, write
from simulators.fleet import play, read_csv_registry
from simulators.schedule import FleetConfig, Truth, make_clock, messages, plan


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("district")
    write(generate(1, "demo"), out)
    return out


def test_the_registry_files_give_every_device_its_street_and_place(district: Path) -> None:
    devices = read_csv_registry(district)
    assert Counter(d.kind for d in devices) == {
        "smoke": 38,
        "ebike": 25,
        "elevator": 6,
        "fire_lane": 6,
    }
    assert {d.street for d in devices} == {"jd01"}
    places: dict[str, set[str | None]] = {d.kind: set() for d in devices}
    for d in devices:
        places[d.kind].add(d.place_type)
    assert places == {
        "smoke": {"public_kitchen"},
        "ebike": {"dwelling", "bike_shed"},
        "elevator": {"elevator"},
        "fire_lane": {"fire_lane"},
    }
    assert {d.heartbeat_s for d in devices if d.kind == "elevator"} == {60}


def test_a_dry_run_writes_the_truth_file(
    district: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth = tmp_path / "truth.jsonl"
    code = simulators_main(
        ["fleet", "--registry", str(district), "--dry-run", "--speedup", "3600",
         "--duration", "1h", "--scenario", "malformed", "--scenario", "duplicates:count=2",
         "--scenario", "kitchen_fire", "--truth", str(truth)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "planned (dry run)" in out and "kitchen_fire" in out
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    run, *incidents, totals = records
    assert run["record"] == "run" and run["devices"] == 75 and run["speedup"] == 3600
    assert totals["record"] == "totals"
    assert [r["scenario"] for r in incidents].count("malformed") == 16
    assert all(r["record"] == "incident" for r in incidents)
    for record in incidents:
        assert {"device_id", "kind", "address_id", "place_type", "start", "end", "expected"} <= set(
            record
        )
        for edge in ("start", "end"):
            assert datetime.fromisoformat(record[edge]["ts"]).utcoffset() is not None
            assert datetime.fromisoformat(record[edge]["wall"]).utcoffset() is not None
    dead: Counter[str] = Counter()
    for record in incidents:
        if "dead_letter" in record["expected"]:
            dead[record["expected"]["dead_letter"]] += record["expected"]["count"]
    assert dead == totals["dead_letters"]
    assert totals["published_total"] == (
        totals["readings_total"] + totals["dead_letters_total"] + totals["duplicates_published"]
    )
    assert totals["duplicates_published"] == 4
    # ~75 devices × 60 telemetry + heartbeats: a few thousand messages
    assert 4000 < totals["readings_total"] < 7000


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "--registry DIR or --dsn"),
        (["--scenario", "volcano"], "unknown scenario"),
        (["--scenario", "kitchen_fire:device=NOPE-1"], "no device"),
        (["--speedup", "3600", "--start", "now"], "ahead of the wall clock"),
        (["--duration", "soon"], "not a duration"),
    ],
)
def test_a_bad_command_line_exits_2_saying_why(
    district: Path, argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ["--registry", str(district)] if argv else []
    assert simulators_main(["fleet", *source, "--dry-run", *argv]) == 2
    assert complaint in capsys.readouterr().err


def test_a_missing_registry_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulators_main(["fleet", "--registry", str(tmp_path), "--dry-run"]) == 2
    assert ".csv" in capsys.readouterr().err


class FakePublisher:
    def __init__(self, now: list[float]) -> None:
        self.now = now
        self.sent: list[tuple[float, str]] = []

    def send(self, topic: str, payload: bytes) -> None:
        self.sent.append((self.now[0], topic))

    def flush(self) -> None:
        pass


def test_messages_go_out_when_due_in_wall_time(district: Path) -> None:
    devices = read_csv_registry(district)
    now = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    run = plan(devices, FleetConfig(duration_s=600), make_clock(now, 600, 60, "auto"), [])
    wall = [0.0]

    def sleep(seconds: float) -> None:
        assert seconds > 0
        wall[0] += seconds

    publisher: Any = FakePublisher(wall)
    truth = Truth(run)
    stats = play(run, publisher, truth, clock=lambda: wall[0], sleep=sleep)
    assert stats.published == len(publisher.sent) == truth.total > 0
    assert wall[0] == pytest.approx(10, abs=0.5)  # 600 s simulated at ×60
    assert stats.max_lag_s == 0
    due = [m.at_s / 60 for m in messages(run)]
    assert all(sent >= when - 0.001 for (sent, _), when in zip(publisher.sent, due, strict=True))
