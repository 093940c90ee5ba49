"""Real services for integration tests: a private Mosquitto, a fresh database, the daemon.

Nothing here mocks the broker or the database: the broker is the Mosquitto
binary run with the shipped ``deploy/mosquitto/sensord.conf``; the database is
a new database on the project's TimescaleDB (``scripts/services up``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
ADMIN_DSN = os.environ.get(
    "SENSORD_TEST_ADMIN_DSN", "postgresql://sensord:sensord@127.0.0.1:5433/sensord"
)
MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
BROKER_CONFIG = REPO / "deploy" / "mosquitto" / "sensord.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(step_s)


@dataclass
class Broker:
    """A private mosquitto with the shipped sensord config and on-disk persistence."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shipped = BROKER_CONFIG.read_text()
        self.config_path.write_text(
            # user root: mosquitto started as root otherwise drops to user mosquitto,
            # which cannot write the persistence file into pytest's private tmp dirs.
            f"{shipped}\n# test overrides\nuser root\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._listening, 10, f"mosquitto on {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # clean stop writes the persistence file
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.workdir / "mosquitto.log").read_text(errors="replace")
            raise RuntimeError(f"mosquitto exited: {log[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True


def create_database() -> str:
    """A new database with the schema migrated; returns its DSN."""
    name = f"sensord_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def drop_database(dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        for attempt in range(50):
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.InsufficientPrivilege:
                # A server-side worker still holds it (a database server configured
                # with TimescaleDB background workers); it lets go within seconds.
                if attempt == 49:
                    raise
                time.sleep(0.2)


def scrape(port: int) -> dict[str, float]:
    """Every sample of the daemon's /metrics as {name{labels}: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@dataclass
class Daemon:
    """``sensord run`` as a real child process, configured through SENSORD_* variables."""

    env: dict[str, str]
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORD_")}
        env.update(self.env)
        env["SENSORD_METRICS__PORT"] = str(self.metrics_port)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sensord", "--config", str(REPO / "config.toml"), "run"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
        log.close()
        if wait_ready:
            wait_until(self.ready, 30, "daemon ready (mqtt connected)", step_s=0.2)

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"daemon exited:\n{self.log_tail()}")
        try:
            return self.metrics().get("sensord_mqtt_connected") == 1.0
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
