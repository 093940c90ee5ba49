"""The README's demo command, end to end: ground truth matched and every incident's order closed."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from simulators.harness.broker import Broker
from simulators.harness.processes import free_port
from tests.support import REPO

pytestmark = pytest.mark.integration
ADMIN = "postgresql://sensord:sensord@127.0.0.1:5433/sensord"


def test_the_demo_runs_the_whole_loop(tmp_path: Path, broker: Broker) -> None:
    database = f"sensord_demo_test_{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, "-m", "simulators", "demo", "--dsn", ADMIN, "--database", database,
        "--mqtt-port", str(broker.port), "--metrics-port", str(free_port()),
        "--out", str(tmp_path / "demo"),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=240, check=False
        )
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "ground truth: matched" in out
    assert "closed loop: every incident's order closed" in out
    assert "escalate > ack > arrive > resolve > verify > close" in out  # the ignored fire lane
    assert "| **total** |" in out  # the SLA report
