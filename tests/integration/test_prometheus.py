"""sensord as Prometheus sees it: promtool lints a live scrape, a real Prometheus scrapes the
daemon with the shipped example config and loads the shipped alert rules.

Needs Debian's prometheus package (scripts/prometheus-tools, run by scripts/test). Without
it the tests skip, except under CI (CI set), where they fail.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sensord import __version__
from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.processes import free_port, wait_until
from simulators.protocol import SimDevice, reading, topic
from simulators.publisher import Publisher
from tests.support import REPO

pytestmark = pytest.mark.integration

PROMETHEUS = Path(os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus"))
PROMTOOL = Path(os.environ.get("PROMTOOL_BIN", "/usr/bin/promtool"))
SHIPPED = REPO / "deploy" / "prometheus"
ALERTS = [
    "SensordDown",
    "SensordIngestStalled",
    "SensordDeadLetterSpike",
    "SensordBrokerDisconnected",
    "SensordDatabaseErrors",
    "SensordOutboxBacklog",
    "SensordNotificationFailures",
    "SensordSLABreachRate",
    "SensordDeadlineAuditFailed",
    "SensordRestarting",
    "SensordEventLoopLag",
]


@pytest.fixture(autouse=True)
def prometheus_installed() -> None:
    """Skip without promtool and prometheus (before any service starts); under CI, fail."""
    for binary in (PROMTOOL, PROMETHEUS):
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            why = f"{binary} is missing: scripts/prometheus-tools installs Debian's prometheus"
            if os.environ.get("CI"):
                pytest.fail(why)
            pytest.skip(why)


def publish(broker: Broker, smoke: list[SimDevice], start_seq: int) -> int:
    """Two readings per device and one malformed message; returns the readings published."""
    rng = random.Random(start_seq)
    base = datetime.now(UTC) - timedelta(seconds=10)
    messages = [
        reading(device, seq, base + timedelta(seconds=seq), rng)
        for seq in range(start_seq, start_seq + 2)
        for device in smoke
    ]
    with Publisher(port=broker.port) as publisher:
        publisher.publish([*messages, (topic(smoke[0]), b'{"ts": "oops')])
    return len(messages)


def wait_for_ingest(sensord: Daemon, stored: int, dead: int) -> None:
    def done() -> bool:
        metrics = sensord.metrics()
        return (
            metrics["sensord_ingest_stored_readings_total"] == stored
            and metrics['sensord_ingest_dead_letters_total{reason="bad_json"}'] == dead
        )

    wait_until(done, 20, f"{stored} readings and {dead} dead letters counted")


@pytest.fixture
def sensord(
    broker: Broker,
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
) -> tuple[Daemon, list[SimDevice]]:
    """A running daemon that has stored 6 readings and dead-lettered 1 message."""
    smoke = devices(3, "smoke")
    running = daemon()
    running.start()
    wait_for_ingest(running, publish(broker, smoke, 0), 1)
    return running, smoke


def test_promtool_finds_no_problems_in_a_live_scrape(
    sensord: tuple[Daemon, list[SimDevice]],
) -> None:
    url = f"http://127.0.0.1:{sensord[0].metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read()
    assert b"sensord_ingest_stored_readings_total 6.0" in text
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    problems = (lint.stdout + lint.stderr).decode()
    assert (lint.returncode, problems) == (0, "")


class Prometheus:
    """/usr/bin/prometheus on a free port with its own storage, driven over its HTTP API."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.port = free_port()
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
            )

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}{path}?{query}", timeout=5
        ) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=promql)["result"]
        return result

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            wait_until(predicate, 30, what, step_s=0.25)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\nprometheus log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[Daemon], Prometheus]]:
    """Start a Prometheus with the shipped prometheus.yml and alert rules scraping a daemon.

    The copy differs from the shipped file only in the target's port and in 1 s scrape
    and evaluation intervals; the rules file sits next to it as in the documented install.
    """
    started: list[Prometheus] = []

    def start(daemon: Daemon) -> Prometheus:
        workdir = tmp_path / "prometheus"
        workdir.mkdir()
        config = (SHIPPED / "prometheus.yml").read_text()
        target = f'targets: ["127.0.0.1:{daemon.metrics_port}"]'
        config, targets = re.subn(r'targets: \["127\.0\.0\.1:9464"\]', target, config)
        config, intervals = re.subn(
            r"(?m)^(\s*(?:scrape|evaluation)_interval:) 15s", r"\1 1s", config
        )
        assert (targets, intervals) == (1, 2), "the shipped prometheus.yml changed shape"
        (workdir / "prometheus.yml").write_text(config)
        shutil.copy(SHIPPED / "sensord-alerts.yml", workdir / "sensord-alerts.yml")
        server = Prometheus(workdir, workdir / "prometheus.yml")
        started.append(server)
        server.wait_for(server.ready, "prometheus ready")
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.slow
def test_a_real_prometheus_scrapes_sensord_and_loads_the_alert_rules(
    sensord: tuple[Daemon, list[SimDevice]],
    broker: Broker,
    prometheus_for: Callable[[Daemon], Prometheus],
) -> None:
    daemon, smoke = sensord
    prometheus = prometheus_for(daemon)

    def present(promql: str) -> Callable[[], bool]:
        return lambda: bool(prometheus.query(promql))

    first = 'sensord_ingest_stored_readings_total{job="sensord"} == 6'
    prometheus.wait_for(present(first), first)
    # Counters move between scrapes: 6 more readings and another dead letter.
    wait_for_ingest(daemon, 6 + publish(broker, smoke, 2), 2)
    expected = [
        'up{job="sensord"} == 1',
        'sensord_ingest_stored_readings_total{job="sensord"} == 12',
        'increase(sensord_ingest_stored_readings_total{job="sensord"}[1m]) > 0',
        'sensord_ingest_dead_letters_total{job="sensord", reason="bad_json"} == 2',
        'sensord_ingest_dead_letters_total{job="sensord", reason="schema"} == 0',
        'sensord_mqtt_connected{job="sensord"} == 1',
        f'sensord_build_info{{job="sensord", version="{__version__}"}}',
        'process_resident_memory_bytes{job="sensord"} > 0',
    ]
    for promql in expected:
        prometheus.wait_for(present(promql), promql)

    def rules_evaluated() -> bool:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = [rule for group in groups if group["name"] == "sensord" for rule in group["rules"]]
        assert [rule["name"] for rule in rules] == ALERTS
        errors = {rule["name"]: rule["lastError"] for rule in rules if rule.get("lastError")}
        assert not errors, errors
        return all(rule["health"] == "ok" for rule in rules)

    prometheus.wait_for(rules_evaluated, "every sensord alert rule evaluated without error")
    alerts = prometheus.get("/api/v1/alerts")["alerts"]
    firing = [a for a in alerts if a["state"] == "firing"]
    assert firing == [], "a healthy daemon fires no alert"
    # Most rules hold for minutes before they fire, so "none firing" says little on its
    # own: nothing may even be pending, except the dead-letter ratio this test provoked
    # (2 malformed messages among a handful).
    pending = {a["labels"]["alertname"] for a in alerts if a["state"] == "pending"}
    assert pending <= {"SensordDeadLetterSpike"}, pending
