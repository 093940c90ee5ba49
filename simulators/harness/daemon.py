"""``sensord run`` as a real child process, configured through SENSORD_* variables."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from simulators.harness.metrics import scrape
from simulators.harness.processes import free_port, wait_until


@dataclass
class Daemon:
    """One ``sensord run``; ready once its /metrics reports the MQTT session connected.

    ``config``: passed as ``--config`` (None: the daemon's own lookup). ``inherit_sensord_env``:
    keep the caller's SENSORD_* variables (the demo does; tests and benchmarks start clean).
    """

    env: dict[str, str]
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    config: Path | None = None
    cwd: Path | None = None
    inherit_sensord_env: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait_ready: bool = True, timeout_s: float = 30, step_s: float = 0.2) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if self.inherit_sensord_env or not k.startswith("SENSORD_")
        }
        env.update(self.env)
        env["SENSORD_METRICS__PORT"] = str(self.metrics_port)
        config = ["--config", str(self.config)] if self.config is not None else []
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sensord", *config, "run"],
                env=env,
                stdout=log,
                stderr=log,
                cwd=self.cwd,
            )
        if wait_ready:
            wait_until(self.ready, timeout_s, "daemon ready (mqtt connected)", step_s=step_s)

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

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM and wait (a clean shutdown drains the buffer); kill if it overruns."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.terminate(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running(daemon: Daemon, timeout_s: float = 60, step_s: float = 0.05) -> Iterator[Daemon]:
    """``daemon`` started and ready for the block; stopped (SIGTERM, then kill) after it."""
    try:
        daemon.start(timeout_s=timeout_s, step_s=step_s)
        yield daemon
    finally:
        daemon.stop()
