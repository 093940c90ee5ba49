"""The fleet simulator as tests drive it: one simulated hour at 3600x, and its truth records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from simulators.harness.daemon import Daemon
from simulators.harness.processes import wait_until
from tests.support import REPO

SCENARIOS = ("kitchen_fire", "elevator_entrapment", "fire_lane_blocked:for=20m")


def run_fleet(
    tmp_path: Path,
    district: Path,
    port: int,
    seed: int,
    scenarios: tuple[str, ...] = SCENARIOS,
    *options: str,
) -> list[dict[str, object]]:
    """One simulated hour (or ``options``) of the district with ``scenarios``; the truth records."""
    truth = tmp_path / f"truth-{seed}.jsonl"
    command = [
        sys.executable,
        "-m",
        "simulators",
        "fleet",
        "--registry",
        str(district),
        "--port",
        str(port),
        "--seed",
        str(seed),
        "--speedup",
        "3600",
        "--truth",
        str(truth),
        "--quiet",
        *(options or ("--duration", "1h")),
    ]
    for scenario in scenarios:
        command += ["--scenario", scenario]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in truth.read_text().splitlines()]


def wait_for_all_readings(sensord: Daemon, records: list[dict[str, object]]) -> None:
    """Until the daemon has stored every reading the truth file's totals announce."""
    total = records[-1]["readings_total"]
    assert isinstance(total, int)
    wait_until(
        lambda: sensord.metrics().get("sensord_ingest_stored_readings_total", 0) >= total,
        60,
        "every reading stored",
    )
