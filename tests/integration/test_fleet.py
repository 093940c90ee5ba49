"""The fleet simulator against the real daemon: what the truth file claims is what gets stored."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from sensord.config import IngestConfig
from simulators.fleet import read_csv_registry
from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.processes import wait_until
from simulators.schedule import messages, plan_from_run
from tests.support import REPO

pytestmark = pytest.mark.integration


def test_a_demo_fleet_with_malformed_and_duplicates_is_stored_as_the_truth_says(
    tmp_path: Path,
    broker: Broker,
    daemon: Callable[..., Daemon],
    demo_district: tuple[str, Path],
) -> None:
    fleet_db, district = demo_district
    sensord = daemon(SENSORD_DATABASE__DSN=fleet_db)
    sensord.start()

    truth_file = tmp_path / "truth.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "simulators", "fleet", "--registry", str(district),
         "--port", str(broker.port), "--seed", "7", "--speedup", "3600", "--duration", "1h",
         "--scenario", "malformed:each=2", "--scenario", "duplicates:count=3,copies=2",
         "--truth", str(truth_file)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run, *incidents, totals = [json.loads(line) for line in truth_file.read_text().splitlines()]
    assert totals["wall_elapsed_s"] < 20  # an hour of a 75-device district in about a second
    assert totals["readings_total"] > 4000 and totals["dead_letters_total"] == 32

    def settled() -> bool:
        metrics = sensord.metrics()
        return (
            metrics.get("sensord_ingest_received_messages_total", 0) >= totals["published_total"]
            and metrics.get("sensord_ingest_in_flight_messages", 1) == 0
        )

    try:
        wait_until(settled, 60, "the daemon to take in every published message")
    except TimeoutError:
        pytest.fail(f"{totals}\n{sensord.metrics()}\n{sensord.log_tail()}")

    # The same run, re-planned from the truth file's first line: every message it published.
    replayed = list(messages(plan_from_run(run, read_csv_registry(district))))
    expected_readings = {
        (m.device_id, datetime.fromisoformat(m.ts or ""), m.seq)
        for m in replayed
        if m.outcome == "reading"
    }
    # A dead letter keeps a bounded prefix of the payload, with the whole one's size and hash.
    kept = IngestConfig().dead_letter_max_bytes
    expected_dead = Counter(
        (m.topic, m.payload[:kept], m.reason, len(m.payload), hashlib.sha256(m.payload).digest())
        for m in replayed
        if m.reason
    )
    assert len(expected_readings) == totals["readings_total"]

    with psycopg.connect(fleet_db) as db:
        stored = db.execute("SELECT device_id, ts, seq FROM readings").fetchall()
        assert len(stored) == totals["readings_total"]  # every reading once, duplicates not again
        assert {tuple(row) for row in stored} == expected_readings
        by_kind: dict[str, int] = dict(
            db.execute("SELECT kind, count(*) FROM readings GROUP BY kind").fetchall()
        )
        assert by_kind == totals["readings"]
        dead = Counter(
            (topic, bytes(payload), reason, size, bytes(sha256))
            for topic, payload, reason, size, sha256 in db.execute(
                "SELECT topic, payload, reason, payload_size, payload_sha256 FROM dead_letters"
            )
        )
        assert dead == expected_dead  # each malformed message, byte for byte, with its reason
        reasons: dict[str, int] = dict(
            db.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall()
        )
        assert reasons == totals["dead_letters"]
        for incident in incidents:
            if incident["scenario"] == "duplicates":
                original = incident["original"]
                row = db.execute(
                    "SELECT count(*) FROM readings WHERE device_id = %s AND seq = %s AND ts = %s",
                    (incident["device_id"], original["seq"], original["ts"]),
                ).fetchone()
                copies = row[0] if row else 0
                assert copies == incident["expected"]["stored"] == 1
            else:
                claimed = incident["expected"]
                row = db.execute(
                    "SELECT count(*) FROM dead_letters WHERE reason = %s", (claimed["dead_letter"],)
                ).fetchone()
                assert row is not None and row[0] >= claimed["count"] > 0
    assert (
        sensord.metrics()["sensord_ingest_duplicate_readings_total"]
        == (totals["duplicates_published"])
    )
