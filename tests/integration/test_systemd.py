"""sd_notify and the watchdog as systemd sees them, without systemd.

The test plays the service manager's side: it binds the datagram socket named
by NOTIFY_SOCKET, receives every notification with the sender's credentials
(SO_PASSCRED, as systemd does for NotifyAccess=main) and drives the broker and
a TCP proxy in front of the database to check when READY=1, WATCHDOG=1 and
STOPPING=1 are (and are not) sent.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from simulators.harness.broker import Broker
from simulators.harness.daemon import Daemon
from simulators.harness.processes import free_port, wait_until
from simulators.protocol import SimDevice, reading
from simulators.publisher import Publisher
from tests.support import REPO

pytestmark = pytest.mark.integration

UNIT = REPO / "deploy" / "systemd" / "sensord.service"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Notification:
    """One datagram: when it arrived, who sent it, its KEY=value lines."""

    at: float
    pid: int
    fields: dict[str, str]


class NotifySocket:
    """The service manager's end of sd_notify: an AF_UNIX datagram socket on a path."""

    def __init__(self) -> None:
        # A short directory: sun_path holds 107 bytes, pytest's tmp_path can be longer.
        self._dir = Path(tempfile.mkdtemp(prefix="sensord-notify-"))
        self.path = str(self._dir / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(self.path)
        self._sock.settimeout(0.1)
        self._lock = threading.Lock()
        self._received: list[Notification] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-socket", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data, ancillary, _flags, _addr = self._sock.recvmsg(
                    4096, socket.CMSG_SPACE(_UCRED.size)
                )
            except TimeoutError:
                continue
            except OSError:
                return
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(payload[: _UCRED.size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self._received.append(Notification(time.monotonic(), pid, fields))

    def received(self, key: str | None = None, value: str | None = None) -> list[Notification]:
        """Notifications so far, optionally only those carrying KEY (=value)."""
        with self._lock:
            found = list(self._received)
        if key is not None:
            found = [n for n in found if key in n.fields]
        if value is not None:
            found = [n for n in found if n.fields.get(key or "") == value]
        return found

    def wait_for(self, key: str, value: str, timeout_s: float) -> Notification:
        """The first notification with KEY=value, waiting up to timeout_s for it."""
        wait_until(lambda: bool(self.received(key, value)), timeout_s, f"{key}={value}", 0.02)
        return self.received(key, value)[0]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class TcpProxy:
    """A TCP forwarder to the test database that the test can refuse, pause and resume.

    refuse(): new connections are closed at once (the database looks down).
    pause(): no byte moves in either direction (a hung server or network):
    established connections hang, as does whatever waits on them.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._accepting = threading.Event()
        self._accepting.set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="db-proxy", daemon=True).start()

    def refuse(self) -> None:
        self._accepting.clear()

    def accept(self) -> None:
        self._accepting.set()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def dsn(self, dsn: str) -> str:
        """``dsn`` (a URL) with host and port pointing at the proxy."""
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        return (
            f"postgresql://{info['user']}:{info['password']}@127.0.0.1:{self.port}/{info['dbname']}"
        )

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._accepting.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                if not self._flowing.wait(0.1):
                    continue
                readable, _, _ = select.select([src], [], [], 0.1)
                if not readable or not self._flowing.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def db_proxy(database_dsn: str) -> Iterator[TcpProxy]:
    info = psycopg.conninfo.conninfo_to_dict(database_dsn)
    proxy = TcpProxy(str(info["host"]), int(info["port"]))
    yield proxy
    proxy.close()


def _pings_between(notify: NotifySocket, start: float, end: float) -> list[Notification]:
    return [n for n in notify.received("WATCHDOG", "1") if start <= n.at <= end]


def test_ready_only_once_database_and_broker_session_are_up_then_stopping_on_sigterm(
    broker: Broker,
    daemon: Callable[..., Daemon],
    database_dsn: str,
    db_proxy: TcpProxy,
    notify: NotifySocket,
) -> None:
    broker.stop()
    db_proxy.refuse()
    sensord = daemon(NOTIFY_SOCKET=notify.path, SENSORD_DATABASE__DSN=db_proxy.dsn(database_dsn))
    sensord.start(wait_ready=False)
    assert sensord.process is not None

    # Database down (and broker down): it says what it waits for, and is not ready.
    wait_until(lambda: bool(notify.received("STATUS")), 15, "a STATUS= notification")
    assert "waiting for the database" in notify.received("STATUS")[0].fields["STATUS"]
    time.sleep(2.5)
    assert not notify.received("READY"), sensord.log_tail()

    # Database up, broker still down: still not ready.
    db_proxy.accept()
    wait_until(lambda: "broker unreachable" in sensord.log_tail(200), 15, "a broker attempt")
    time.sleep(2.0)
    assert not notify.received("READY"), sensord.log_tail()

    # Broker up: READY=1 comes, and only once the session is subscribed.
    broker.start()
    ready = notify.wait_for("READY", "1", 20)
    assert sensord.metrics()["sensord_mqtt_connected"] == 1.0
    assert ready.fields.get("STATUS", "").startswith("ingesting")
    assert len(notify.received("READY")) == 1

    # No WATCHDOG_USEC: no pings.
    time.sleep(1.0)
    assert not notify.received("WATCHDOG")

    # SIGTERM: STOPPING=1 first, then a clean exit.
    code = sensord.terminate(timeout_s=30)
    assert code == 0, sensord.log_tail()
    stopping = notify.wait_for("STOPPING", "1", 1)
    assert stopping.at > ready.at
    # Every notification came from the main process (systemd's NotifyAccess=main).
    assert {n.pid for n in notify.received()} == {sensord.process.pid}


def test_watchdog_pings_at_half_the_watchdog_interval(
    daemon: Callable[..., Daemon], notify: NotifySocket
) -> None:
    sensord = daemon(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="2000000")  # WatchdogSec=2s
    sensord.start(wait_ready=False)
    ready = notify.wait_for("READY", "1", 30)
    time.sleep(5.2)
    pings = _pings_between(notify, ready.at, time.monotonic())
    assert sensord.terminate() == 0, sensord.log_tail()

    assert pings, sensord.log_tail()
    assert pings[0].at - ready.at < 0.5  # the first right after READY
    gaps = sorted(b.at - a.at for a, b in itertools.pairwise(pings))
    assert 4 <= len(gaps) <= 6, gaps
    assert 0.9 <= gaps[len(gaps) // 2] <= 1.2, gaps  # WatchdogSec / 2
    assert gaps[-1] < 1.6, gaps  # never close to WatchdogSec


def test_a_wedged_writer_withholds_the_pings_until_it_is_unstuck(
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
    db: psycopg.Connection,
    broker: Broker,
    database_dsn: str,
    db_proxy: TcpProxy,
    notify: NotifySocket,
) -> None:
    (device,) = devices(1, "smoke")
    sensord = daemon(
        NOTIFY_SOCKET=notify.path,
        WATCHDOG_USEC="1000000",  # WatchdogSec=1s: a ping every 0.5 s
        SENSORD_SHUTDOWN__TIMEOUT_S="2",  # a writer busy longer than this is wedged
        SENSORD_DATABASE__DSN=db_proxy.dsn(database_dsn),
    )
    sensord.start(wait_ready=False)
    ready = notify.wait_for("READY", "1", 30)
    wait_until(lambda: len(notify.received("WATCHDOG")) >= 2, 5, "pings")

    # The database hangs (every byte held) while a reading waits to be written.
    db_proxy.pause()
    wedged_at = time.monotonic()
    with Publisher("127.0.0.1", broker.port) as publisher:
        message = reading(device, 1, datetime.now(UTC), random.Random(1))
        assert publisher.publish([message], timeout_s=10) == 1

    # Within timeout_s + one interval the pings stop, and stay stopped.
    time.sleep(2.0 + 0.5 + 1.0)
    quiet_from = time.monotonic()
    time.sleep(3.0)
    assert not _pings_between(notify, quiet_from, time.monotonic()), sensord.log_tail()
    last = _pings_between(notify, ready.at, quiet_from)[-1]
    assert last.at - wedged_at < 2.0 + 0.5 + 0.5
    assert "writer wedged" in sensord.log_tail(200)

    # The database answers again: the batch commits and the pings resume.
    db_proxy.resume()
    resumed = time.monotonic()
    wait_until(
        lambda: bool(_pings_between(notify, resumed, time.monotonic())), 5, "pings to resume"
    )
    wait_until(
        lambda: db.execute("SELECT count(*) FROM readings").fetchone() == (1,), 10, "the reading"
    )
    assert sensord.terminate() == 0, sensord.log_tail()


def _unit_seconds(key: str) -> float:
    """A ``KEY=<n>s`` setting of the shipped unit, in seconds."""
    for line in UNIT.read_text().splitlines():
        if line.startswith(f"{key}="):
            return float(line.partition("=")[2].removesuffix("s"))
    raise LookupError(key)


@pytest.mark.slow
def test_stop_while_wedged_says_stopping_at_once_and_ends_within_the_units_stop_timeout(
    daemon: Callable[..., Daemon],
    devices: Callable[..., list[SimDevice]],
    broker: Broker,
    database_dsn: str,
    db_proxy: TcpProxy,
    notify: NotifySocket,
) -> None:
    """What WatchdogSignal=SIGTERM does when the database hangs: a clean stop that
    fits TimeoutStopSec (the unit allows it timeout_s plus what psycopg adds)."""
    (device,) = devices(1, "smoke")
    timeout_s = 2.0
    sensord = daemon(
        NOTIFY_SOCKET=notify.path,
        SENSORD_SHUTDOWN__TIMEOUT_S=str(timeout_s),
        SENSORD_DATABASE__DSN=db_proxy.dsn(database_dsn),
    )
    sensord.start(wait_ready=False)
    notify.wait_for("READY", "1", 30)
    db_proxy.pause()
    with Publisher("127.0.0.1", broker.port) as publisher:
        message = reading(device, 1, datetime.now(UTC), random.Random(2))
        assert publisher.publish([message], timeout_s=10) == 1
    time.sleep(1.0)  # the batch is in a writer, which waits on the database

    assert sensord.process is not None
    signalled = time.monotonic()
    sensord.process.send_signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING", "1", 2)
    assert stopping.at - signalled < 0.5  # at once, not after the flush
    margin = _unit_seconds("TimeoutStopSec") - 15.0  # the unit's budget past timeout_s
    try:
        code = sensord.process.wait(timeout_s + margin)
    except subprocess.TimeoutExpired:
        pytest.fail(f"running {timeout_s + margin:.0f} s after SIGTERM:\n{sensord.log_tail()}")
    assert code == 0, sensord.log_tail()
    assert "stopped with messages unacknowledged" in sensord.log_tail(200)


def test_sighup_from_execreload_reloads_and_does_not_stop_the_daemon(
    daemon: Callable[..., Daemon], notify: NotifySocket
) -> None:
    sensord = daemon(NOTIFY_SOCKET=notify.path)
    sensord.start(wait_ready=False)
    notify.wait_for("READY", "1", 30)
    assert sensord.process is not None
    sensord.process.send_signal(signal.SIGHUP)  # systemctl reload sensord
    time.sleep(1.5)
    assert sensord.process.poll() is None, f"SIGHUP ended the daemon:\n{sensord.log_tail()}"
    assert "SIGHUP: reloading" in sensord.log_tail(200)
    assert sensord.terminate() == 0, sensord.log_tail()


def test_status_and_log_never_carry_the_database_password(
    daemon: Callable[..., Daemon], database_dsn: str, db_proxy: TcpProxy, notify: NotifySocket
) -> None:
    # STATUS= is readable by every user (systemctl status). libpq's key=value
    # spelling, with the password inline; the database stays unreachable.
    secret = f"pw-{uuid.uuid4().hex}"
    info = psycopg.conninfo.conninfo_to_dict(db_proxy.dsn(database_dsn)) | {"password": secret}
    db_proxy.refuse()
    sensord = daemon(
        NOTIFY_SOCKET=notify.path, SENSORD_DATABASE__DSN=psycopg.conninfo.make_conninfo(**info)
    )
    sensord.start(wait_ready=False)
    wait_until(lambda: "database not reachable yet" in sensord.log_tail(), 15, "a retry")
    assert sensord.terminate() == 0, sensord.log_tail()
    assert secret not in sensord.log_path.read_text()
    statuses = [n.fields["STATUS"] for n in notify.received("STATUS")]
    assert statuses
    assert not [status for status in statuses if secret in status]


# Runs in the child before it execs the daemon: the unit's seccomp filter,
# RestrictAddressFamilies= and MemoryDenyWriteExecute=, applied with libseccomp.
_SECCOMP_EXEC = """
import ctypes, ctypes.util, json, os, sys
spec = json.loads(sys.argv[1])
lib = ctypes.CDLL(ctypes.util.find_library("seccomp"), use_errno=True)
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, EQ = 0x7FFF0000, 4
ctx = lib.seccomp_init(0x00050000 | spec["errno"])
for name in spec["allow"]:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0 and name != "socket":
        assert lib.seccomp_rule_add_array(ctx, ALLOW, nr, 0, None) == 0, name
socket_nr = lib.seccomp_syscall_resolve_name(b"socket")
for family in spec["families"]:
    rule = Cmp(0, EQ, family, 0)
    assert lib.seccomp_rule_add_array(ctx, ALLOW, socket_nr, 1, ctypes.byref(rule)) == 0
libc = ctypes.CDLL(None, use_errno=True)
if spec["mdwe"] and libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE (Linux >= 6.3)
    print("sandbox: no PR_SET_MDWE here, W^X not enforced", file=sys.stderr)
assert lib.seccomp_load(ctypes.c_void_p(ctx)) == 0, "seccomp_load"
os.execv(sys.argv[2], sys.argv[2:])
"""


_PROBE = """
import mmap, socket
for attempt in (lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW),
                lambda: mmap.mmap(-1, 4096, prot=7)):
    try:
        attempt()
        print("allowed")
    except OSError:
        print("refused")
"""


def _syscall_group(name: str) -> set[str]:
    """A systemd syscall group (as this systemd-analyze defines it), nested groups expanded."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        entry = line.strip()
        if entry.startswith("@"):
            names |= _syscall_group(entry)
        elif entry and not entry.startswith("#"):
            names.add(entry)
    return names


def _unit_sandbox(unit: Path) -> dict[str, object]:
    """The unit's SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute=."""
    allow: set[str] = set()
    deny: set[str] = set()
    spec: dict[str, object] = {"errno": errno.EPERM, "families": [], "mdwe": False}
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "SystemCallFilter":
            names = value.removeprefix("~").split()
            target = deny if value.startswith("~") else allow
            for name in names:
                target |= _syscall_group(name) if name.startswith("@") else {name}
        elif key == "SystemCallErrorNumber":
            spec["errno"] = getattr(errno, value)
        elif key == "RestrictAddressFamilies":
            spec["families"] = [int(getattr(socket, family)) for family in value.split()]
        elif key == "MemoryDenyWriteExecute":
            spec["mdwe"] = value == "yes"
    # With an allow list systemd always permits @default as well.
    spec["allow"] = sorted((allow | _syscall_group("@default")) - deny)
    return spec


def test_the_daemon_runs_inside_the_units_sandbox(
    tmp_path: Path,
    broker: Broker,
    database_dsn: str,
    devices: Callable[..., list[SimDevice]],
    db: psycopg.Connection,
    notify: NotifySocket,
) -> None:
    """ExecStartPre and ExecStart under the unit's syscall filter, address families,
    W^X, no_new_privs and no capabilities: nothing they need is refused.

    Not reproduced here: User= (this venv's interpreter may sit in root's home,
    so the child keeps uid 0, without any capability) and the mount-namespace
    settings (ProtectSystem=, PrivateTmp=, ...): the daemon writes no files.
    """
    if shutil.which("systemd-analyze") is None or shutil.which("setpriv") is None:
        pytest.skip("needs systemd-analyze and setpriv (scripts/check-unit installs systemd)")
    spec = _unit_sandbox(UNIT)
    assert spec["allow"] and spec["families"], "the unit has no SystemCallFilter/families"
    sandbox = [
        "setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all",
        "--ambient-caps=-all", sys.executable, "-c", _SECCOMP_EXEC, json.dumps(spec),
    ]  # fmt: skip
    sensord = [sys.executable, "-m", "sensord", "--config", str(REPO / "config.toml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORD_")} | {
        "SENSORD_DATABASE__DSN": database_dsn,
        "SENSORD_MQTT__PORT": str(broker.port),
        "SENSORD_MQTT__CLIENT_ID": f"sensord-test-{uuid.uuid4().hex[:8]}",
        "SENSORD_METRICS__PORT": str(free_port()),
        "SENSORD_INGEST__BATCH_MAX_AGE_MS": "50",
        "SENSORD_LOG__FORMAT": "text",
        "PYTHONDONTWRITEBYTECODE": "1",
        "NOTIFY_SOCKET": notify.path,
        "WATCHDOG_USEC": "2000000",
    }
    # The filter bites: a packet socket and a writable+executable mapping are refused.
    probe = subprocess.run(
        [*sandbox, sys.executable, "-c", _PROBE],
        check=False, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    refused = probe.stdout.split()
    assert refused[0] == "refused", probe
    assert refused[1] == "refused" or "no PR_SET_MDWE" in probe.stderr, probe

    migrate = subprocess.run(
        [*sandbox, *sensord, "migrate"],
        check=False, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr

    smoke = devices(3, "smoke")
    log_path = tmp_path / "sandboxed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*sandbox, *sensord, "run"], env=env, stdout=log, stderr=log)
    try:
        notify.wait_for("READY", "1", 30)
        rng = random.Random(3)
        messages = [reading(d, n, datetime.now(UTC), rng) for n in range(50) for d in smoke]
        with Publisher("127.0.0.1", broker.port) as publisher:
            assert publisher.publish(messages, timeout_s=30) == len(messages)
        wait_until(
            lambda: db.execute("SELECT count(*) FROM readings").fetchone() == (len(messages),),
            20,
            "the readings",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert notify.received("WATCHDOG", "1") and notify.received("STOPPING", "1")
    assert "Operation not permitted" not in log_path.read_text()
