"""A private Mosquitto: the shipped configuration for tests, a tuned one for the benchmarks.

Both run the real binary on their own port; the machine's broker on 127.0.0.1:1883 is never
touched. :class:`Broker` needs a source checkout (it reads ``deploy/mosquitto/sensord.conf``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.harness.mqtt_wire import HOST
from simulators.harness.processes import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
BROKER_CONFIG = REPO / "deploy" / "mosquitto" / "sensord.conf"


def listening(process: subprocess.Popen[bytes] | None, port: int, log: Path) -> bool:
    """Whether mosquitto accepts connections on ``port``; raises with its log if it exited."""
    if process is not None and process.poll() is not None:
        text = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(f"mosquitto exited ({process.returncode}): {text[-2000:]}")
    try:
        socket.create_connection((HOST, port), timeout=0.2).close()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class ListenerTls:
    """TLS on a listener: the CA clients are checked against, the broker's certificate and key.

    ``require_certificate``: a client without a certificate signed by the CA is refused;
    ``use_identity_as_username``: the certificate's CN is then the client's user name.
    """

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False
    use_identity_as_username: bool = False

    def lines(self) -> str:
        """The listener's TLS settings (they apply to the listener line before them)."""
        return (
            f"cafile {self.cafile}\ncertfile {self.certfile}\nkeyfile {self.keyfile}\n"
            "tls_version tlsv1.2\n"  # the minimum, in Mosquitto 2.0
            f"require_certificate {str(self.require_certificate).lower()}\n"
            f"use_identity_as_username {str(self.use_identity_as_username).lower()}\n"
        )


@dataclass
class Broker:
    """A private mosquitto with the shipped sensord config and on-disk persistence.

    ``tls``: the listener speaks TLS only (MQTT over TLS on ``port``).
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    tls: ListenerTls | None = None
    # A directory written by `sensord broker config`: authentication and the generated ACL
    # instead of anonymous access, client id = username on the listener.
    auth_dir: Path | None = None
    # With auth_dir: the listener sensord connects to. Clients of ``port`` take their
    # username as client id; this one keeps the client's own (sensord's two sessions).
    sensord_port: int = field(default_factory=free_port)

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def overrides(self) -> str:
        """The lines appended to the shipped config after the listener."""
        access = (
            f"use_username_as_clientid true\nlistener {self.sensord_port} 127.0.0.1\n"
            f"include_dir {self.auth_dir}\n"
            if self.auth_dir is not None
            else "allow_anonymous true\n"
        )
        return (
            f"{access}"
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
        )

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shipped = BROKER_CONFIG.read_text()
        self.config_path.write_text(
            # user root: mosquitto started as root otherwise drops to user mosquitto,
            # which cannot write the persistence file into pytest's private tmp dirs.
            f"{shipped}\n# test overrides\nuser root\n"
            f"listener {self.port} 127.0.0.1\n{self.tls.lines() if self.tls else ''}"
            f"{self.overrides()}"
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
        return listening(self.process, self.port, self.workdir / "mosquitto.log")


# Settings for a benchmark broker. None removes a line (= mosquitto's default).
BENCH_SETTINGS: dict[str, Any] = {
    "allow_anonymous": "true",
    "persistence": "false",
    # 0 = unlimited. Messages beyond the in-flight window are "queued" even for a connected
    # client, so a finite limit silently drops QoS 1 messages under load (see --probe queue).
    "max_queued_messages": 0,
    "max_queued_bytes": 0,
    # 0 = no broker-side cap; the client's v5 Receive Maximum then governs (see --probe inflight).
    "max_inflight_messages": 0,
    "max_inflight_bytes": 0,
    "set_tcp_nodelay": "true",
    "sys_interval": 10,
    "log_type": ["error", "warning", "notice", "information"],
    "connection_messages": "true",
}


def write_config(
    port: int,
    tmpdir: str | Path,
    *,
    tls_port: int | None = None,
    tls: ListenerTls | None = None,
    **settings: Any,
) -> Path:
    """The benchmark broker's config; with ``tls``, a second listener on ``tls_port``."""
    tmp = Path(tmpdir)
    merged = {**BENCH_SETTINGS, **settings}
    # stderr (unbuffered, redirected to mosquitto-PORT.log): "log_dest file" is block-buffered
    lines = ["log_dest stderr"]
    for key, val in merged.items():
        if val is None:
            continue
        for v in val if isinstance(val, list) else [val]:
            lines.append(f"{key} {v}")
    lines.append(f"listener {port} {HOST}")
    if tls is not None and tls_port is not None:
        lines += [f"listener {tls_port} {HOST}", *tls.lines().splitlines()]
    path = tmp / f"mosquitto-{port}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_broker(
    port: int,
    tmpdir: str | Path,
    *,
    tls_port: int | None = None,
    tls: ListenerTls | None = None,
    **settings: Any,
) -> subprocess.Popen[bytes]:
    """Start a private mosquitto on 127.0.0.1:port (config + log in tmpdir); returns when it
    accepts connections. ``settings`` override/extend :data:`BENCH_SETTINGS` (None = omit)."""
    if port == 1883:
        raise ValueError("1883 is the machine's broker; use a private port")
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        raise RuntimeError(f"port {port} is already in use (a leftover broker?)")
    conf = write_config(port, tmpdir, tls_port=tls_port, tls=tls, **settings)
    log = Path(tmpdir, f"mosquitto-{port}.log")
    with log.open("ab") as logf:
        proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=logf
        )
    proc.tmpdir = str(tmpdir)  # type: ignore[attr-defined]
    try:
        wait_until(lambda: listening(proc, port, log), 5, f"mosquitto on {port}", step_s=0.05)
    except TimeoutError:
        stop_broker(proc)
        raise RuntimeError(f"mosquitto did not listen on {port}") from None
    return proc


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def broker(
    port: int,
    tmpdir: str | Path | None = None,
    *,
    tls_port: int | None = None,
    tls: ListenerTls | None = None,
    **settings: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    own = tmpdir is None
    tdir = tempfile.mkdtemp(prefix="mqtt-bench-") if own else str(tmpdir)
    proc = start_broker(port, tdir, tls_port=tls_port, tls=tls, **settings)
    try:
        yield proc
    finally:
        stop_broker(proc)
        if own:
            shutil.rmtree(tdir, ignore_errors=True)


def broker_log(proc: subprocess.Popen[bytes], port: int) -> str:
    p = Path(proc.tmpdir, f"mosquitto-{port}.log")  # type: ignore[attr-defined]
    return p.read_text() if p.exists() else ""
