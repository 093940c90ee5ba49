"""MQTT consumer ceiling benchmark for sensord (Mosquitto 2.0 + gmqtt / paho, MQTT v5, QoS 1).

Measures how fast a *bare* QoS 1 subscriber can consume when PUBACK is sent only after the
handler has run (the mode the daemon uses: gmqtt ``optimistic_acknowledgement=False``), so we
know the ceiling before any JSON parsing or database work is added.

Everything runs against a *private* mosquitto started on its own port; the machine's broker on
127.0.0.1:1883 is never touched.

Usage::

    python -m bench.mqtt_ceiling --port 18830 --messages 200000 --runs 3
    python -m bench.mqtt_ceiling --port 18830 --pub-compare          # choose the publisher
    python -m bench.mqtt_ceiling --port 18840 --probe all            # broker/gmqtt behaviour

Library use::

    with broker(18830) as proc:
        secs = publish("127.0.0.1", 18830, 100_000)
        res = gmqtt_bare("127.0.0.1", 18830, 100_000, receive_maximum=1000)

Subscribers and publisher workers run in separate processes (``spawn``; a script using the
library needs the ``if __name__ == "__main__":`` guard) so that they do not share a GIL; CPU
time is taken with ``resource.getrusage`` inside the subscriber process and from
``/proc/<pid>/stat`` for the broker.

Publisher: a raw-socket MQTT v5 client with pre-encoded PUBLISH packets and a PUBACK-counted
window capped by the broker's CONNACK Receive Maximum (~90-105k msg/s on 2 cores, bound by
mosquitto's single thread); paho 2.2 managed ~12k msg/s and gmqtt has no publish window.

What ``--probe all`` found on mosquitto 2.0.11 (see the report that came with this file):
* v5 subscriber: the broker sends up to the client's Receive Maximum unacknowledged, whatever
  max_inflight_messages is; that setting applies only to v3.1.1 clients and v5 clients that send
  no Receive Maximum, and is advertised as the CONNACK Receive Maximum (client->broker).
* With a backlog queued, every PUBACK releases up to Receive Maximum more messages, so the
  window does not bound what a consumer holds (--probe resume / window).
* Beyond max_queued_messages, QoS 1 messages are dropped silently (success PUBACK to the
  publisher); $SYS/broker/publish/messages/dropped counts them.
* $share/<group>/... round-robins to offline members with persistent sessions too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SUB_FILTER = "sensord/v1/+/+/+"
MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
_CTX = mp.get_context("spawn")

# --------------------------------------------------------------------------------------------
# readings
# --------------------------------------------------------------------------------------------

_TZ = dt.timezone(dt.timedelta(hours=8))
_BASE = dt.datetime(2026, 11, 26, 14, 0, 0, tzinfo=_TZ)


def reading(i: int, devices: int = 1000) -> tuple[str, bytes]:
    """The i-th reading: device ``i % devices``, seq ``i // devices``; (topic, payload).

    Distinct i give distinct (device_id, seq) pairs, so every message is a distinct row.
    """
    dev = i % devices
    seq = i // devices
    street = f"jd{dev % 20 + 1:02d}"
    device_id = f"SMK-{dev:06d}"
    ts = _BASE + dt.timedelta(seconds=30 * seq, milliseconds=dev % 1000)
    payload = {
        "ts": ts.isoformat(timespec="milliseconds"),
        "seq": seq,
        "smoke": False,
        "obscuration": round((i * 7 % 50) / 10, 1),
        "temp_c": round(18 + (i * 13 % 120) / 10, 1),
        "battery_pct": 100 - (seq % 100),
    }
    topic = f"sensord/v1/{street}/smoke/{device_id}"
    return topic, json.dumps(payload, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------
# minimal MQTT v5 codec (publisher and probes; no library overhead, no library-side limits)
# --------------------------------------------------------------------------------------------

PUBLISH, PUBACK, CONNACK, SUBACK, DISCONNECT = 0x30, 0x40, 0x20, 0x90, 0xE0
DISCONNECT_PKT = b"\xe0\x00"

# property id -> wire type (1, 2, 4 byte ints; "vbi"; "str"; "bin"; "pair")
_PROP_TYPES: dict[int, Any] = {
    0x01: 1, 0x02: 4, 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "vbi", 0x11: 4,
    0x12: "str", 0x13: 2, 0x15: "str", 0x16: "bin", 0x17: 1, 0x19: 1, 0x1A: "str",
    0x1C: "str", 0x1F: "str", 0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: "pair",
    0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}
PROP_NAMES = {
    0x11: "session_expiry", 0x21: "receive_maximum", 0x22: "topic_alias_max",
    0x24: "max_qos", 0x25: "retain_available", 0x27: "max_packet_size",
    0x28: "wildcard_sub", 0x29: "sub_id", 0x2A: "shared_sub", 0x13: "server_keepalive",
    0x12: "assigned_client_id", 0x1F: "reason_string",
}


def _vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        n, b = divmod(n, 128)
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _read_vbi(buf: bytes | bytearray, i: int) -> tuple[int, int] | None:
    """(value, next index) or None if incomplete."""
    mult, val = 1, 0
    for _ in range(4):
        if i >= len(buf):
            return None
        b = buf[i]
        i += 1
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, i
        mult *= 128
    raise ValueError("malformed variable byte integer")


def _s(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def parse_props(b: bytes) -> dict[str, Any]:
    ln, i = _read_vbi(b, 0)  # type: ignore[misc]
    end = i + ln
    out: dict[str, Any] = {}
    while i < end:
        pid = b[i]
        i += 1
        kind = _PROP_TYPES[pid]
        if kind in (1, 2, 4):
            val: Any = int.from_bytes(b[i : i + kind], "big")
            i += kind
        elif kind == "vbi":
            val, i = _read_vbi(b, i)  # type: ignore[misc]
        elif kind == "pair":
            k = b[i + 2 : i + 2 + int.from_bytes(b[i : i + 2], "big")]
            i += 2 + len(k)
            v = b[i + 2 : i + 2 + int.from_bytes(b[i : i + 2], "big")]
            i += 2 + len(v)
            val = (k.decode(), v.decode())
        else:
            n = int.from_bytes(b[i : i + 2], "big")
            val = bytes(b[i + 2 : i + 2 + n])
            val = val.decode() if kind == "str" else val
            i += 2 + n
        out[PROP_NAMES.get(pid, hex(pid))] = val
    return out


def connect_packet(
    client_id: str,
    *,
    clean_start: bool = True,
    keepalive: int = 60,
    session_expiry: int = 0,
    receive_maximum: int | None = None,
) -> bytes:
    props = b""
    if session_expiry:
        props += b"\x11" + struct.pack("!I", session_expiry)
    if receive_maximum is not None:
        props += b"\x21" + struct.pack("!H", receive_maximum)
    body = (
        _s(b"MQTT")
        + bytes([5, 0x02 if clean_start else 0])
        + struct.pack("!H", keepalive)
        + _vbi(len(props))
        + props
        + _s(client_id.encode())
    )
    return b"\x10" + _vbi(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, mid: int, qos: int = 1) -> bytes:
    body = _s(topic) + (struct.pack("!H", mid) if qos else b"") + b"\x00" + payload
    return bytes([0x30 | (qos << 1)]) + _vbi(len(body)) + body


def subscribe_packet(mid: int, topic_filter: str, qos: int = 1) -> bytes:
    body = struct.pack("!H", mid) + b"\x00" + _s(topic_filter.encode()) + bytes([qos])
    return b"\x82" + _vbi(len(body)) + body


def puback_packet(mid: int, reason: int = 0) -> bytes:
    return b"\x40\x02" + struct.pack("!H", mid) if reason == 0 else (
        b"\x40\x03" + struct.pack("!HB", mid, reason)
    )


@dataclasses.dataclass
class InPublish:
    topic: str
    payload: bytes
    qos: int
    mid: int | None
    dup: bool


def parse_publish(flags: int, body: bytes) -> InPublish:
    tl = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + tl].decode()
    i = 2 + tl
    qos = (flags >> 1) & 3
    mid = None
    if qos:
        mid = int.from_bytes(body[i : i + 2], "big")
        i += 2
    pl, i = _read_vbi(body, i)  # type: ignore[misc]
    return InPublish(topic, bytes(body[i + pl :]), qos, mid, bool(flags & 0x08))


class RawClient:
    """Blocking MQTT v5 client over a plain socket, for probes: it does exactly what it is told
    (in particular it never acknowledges anything on its own)."""

    def __init__(
        self,
        port: int,
        client_id: str,
        *,
        host: str = HOST,
        clean_start: bool = True,
        session_expiry: int = 0,
        receive_maximum: int | None = None,
        keepalive: int = 60,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self._mid = 0
        self.sock.sendall(
            connect_packet(
                client_id,
                clean_start=clean_start,
                keepalive=keepalive,
                session_expiry=session_expiry,
                receive_maximum=receive_maximum,
            )
        )
        ptype, _, body = self.read_packet(10)
        if ptype != CONNACK:
            raise ConnectionError(f"expected CONNACK, got {ptype:#x}")
        self.session_present = bool(body[0] & 1)
        self.reason = body[1]
        self.connack_props = parse_props(body[2:]) if len(body) > 2 else {}
        if self.reason:
            raise ConnectionError(f"CONNACK reason {self.reason:#x}")

    def next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    def _take(self) -> tuple[int, int, bytes] | None:
        if len(self.buf) < 2:
            return None
        r = _read_vbi(self.buf, 1)
        if r is None:
            return None
        ln, i = r
        if len(self.buf) < i + ln:
            return None
        hdr = self.buf[0]
        body = bytes(self.buf[i : i + ln])
        del self.buf[: i + ln]
        return hdr & 0xF0, hdr & 0x0F, body

    def read_packet(self, timeout: float) -> tuple[int, int, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            p = self._take()
            if p is not None:
                return p
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 18)
            if not data:
                raise ConnectionError("connection closed by broker")
            self.buf += data

    def packets_until_quiet(self, quiet: float = 1.0, limit: float = 60.0) -> list[Any]:
        """Read packets until none arrives for ``quiet`` seconds; PUBLISHes are parsed."""
        out: list[Any] = []
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                ptype, flags, body = self.read_packet(quiet)
            except TimeoutError:
                break
            out.append(parse_publish(flags, body) if ptype == PUBLISH else (ptype, flags, body))
        return out

    def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        self.sock.sendall(subscribe_packet(self.next_mid(), topic_filter, qos))
        while True:
            ptype, _, body = self.read_packet(10)
            if ptype == SUBACK:
                return body[-1]  # reason code of the (single) filter
            if ptype == PUBLISH:  # a session resumed with messages: push back is not needed
                continue

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.sock.sendall(publish_packet(topic.encode(), payload, self.next_mid(), qos))

    def puback(self, mid: int, reason: int = 0) -> None:
        self.sock.sendall(puback_packet(mid, reason))

    def disconnect(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(DISCONNECT_PKT)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def create_session(
    port: int,
    client_id: str,
    *,
    host: str = HOST,
    topic_filter: str = SUB_FILTER,
    session_expiry: int = 3600,
) -> None:
    """Create a fresh persistent session (clean start, subscribe QoS 1, disconnect)."""
    c = RawClient(port, client_id, host=host, clean_start=True, session_expiry=session_expiry)
    rc = c.subscribe(topic_filter, 1)
    if rc != 1:
        raise RuntimeError(f"SUBACK reason {rc:#x} for {topic_filter}")
    c.disconnect()


# --------------------------------------------------------------------------------------------
# broker
# --------------------------------------------------------------------------------------------

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


def write_config(port: int, tmpdir: str | Path, **settings: Any) -> Path:
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
    path = tmp / f"mosquitto-{port}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_broker(port: int, tmpdir: str | Path, **settings: Any) -> subprocess.Popen[bytes]:
    """Start a private mosquitto on 127.0.0.1:port (config + log in tmpdir); returns when it
    accepts connections. ``settings`` override/extend :data:`BENCH_SETTINGS` (None = omit)."""
    if port == 1883:
        raise ValueError("1883 is the machine's broker; use a private port")
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
        raise RuntimeError(f"port {port} is already in use (a leftover broker?)")
    conf = write_config(port, tmpdir, **settings)
    log = Path(tmpdir, f"mosquitto-{port}.log")
    with log.open("ab") as logf:
        proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=logf
        )
    proc.tmpdir = str(tmpdir)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited ({proc.returncode}): {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return proc
        time.sleep(0.05)
    stop_broker(proc)
    raise RuntimeError(f"mosquitto did not listen on {port}")


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def broker(port: int, tmpdir: str | Path | None = None, **settings: Any) -> Iterator[
    subprocess.Popen[bytes]
]:
    own = tmpdir is None
    tdir = tempfile.mkdtemp(prefix="mqtt-bench-") if own else str(tmpdir)
    proc = start_broker(port, tdir, **settings)
    try:
        yield proc
    finally:
        stop_broker(proc)
        if own:
            shutil.rmtree(tdir, ignore_errors=True)


def broker_log(proc: subprocess.Popen[bytes], port: int) -> str:
    p = Path(proc.tmpdir, f"mosquitto-{port}.log")  # type: ignore[attr-defined]
    return p.read_text() if p.exists() else ""


def proc_cpu(pid: int) -> float:
    """user+system CPU seconds of a process, from /proc (for the broker)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------------------------
# publisher
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PubResult:
    n: int
    seconds: float
    rate: float
    t0: float  # time.monotonic() (system-wide CLOCK_MONOTONIC) when publishing started
    t1: float  # ... when the last PUBACK arrived
    errors: int  # PUBACKs with reason >= 0x80
    window: int  # in-flight window actually used per connection
    broker_receive_maximum: int | None
    cpu: float  # publisher CPU seconds (all workers)
    impl: str
    connections: int


def count_acks(buf: bytearray) -> tuple[int, int]:
    """Consume the complete packets at the head of ``buf``: (PUBACKs, PUBACKs with an error).

    Raises ConnectionError on a broker DISCONNECT.
    """
    acked = errors = 0
    i, n = 0, len(buf)
    while i + 2 <= n:
        b1 = buf[i + 1]
        if b1 < 128:
            rl, hl = b1, 2
        else:
            r2 = _read_vbi(buf, i + 1)
            if r2 is None:
                break
            rl, j = r2
            hl = j - i
        if i + hl + rl > n:
            break
        t = buf[i] & 0xF0
        if t == PUBACK:
            acked += 1
            if rl >= 3 and buf[i + hl + 2] >= 0x80:
                errors += 1
        elif t == DISCONNECT:
            raise ConnectionError(f"broker DISCONNECT {bytes(buf[i:i + hl + rl])!r}")
        i += hl + rl
    del buf[:i]
    return acked, errors


def _raw_pub_worker(
    port: int, host: str, lo: int, hi: int, devices: int, window: int, cid: str,
    conn: Any, go: Any, batch: int,
) -> None:
    try:
        pkts = []
        for k, i in enumerate(range(lo, hi)):
            topic, payload = reading(i, devices)
            pkts.append(publish_packet(topic.encode(), payload, k % 65535 + 1))
        c = RawClient(port, cid, host=host, clean_start=True)
        brm = c.connack_props.get("receive_maximum")
        win = min(window, brm or 65535, 65534)
        sock, buf = c.sock, bytearray(c.buf)
        sock.settimeout(None)
        sock.setblocking(True)
        conn.send(("ready", brm, win))
        go.wait()
        cpu0 = _self_cpu()
        t0 = time.monotonic()
        total, sent, acked, errors = len(pkts), 0, 0, 0
        while acked < total:
            free = win - (sent - acked)
            if free > 0 and sent < total:
                k = min(free, batch, total - sent)
                sock.sendall(b"".join(pkts[sent : sent + k]))
                sent += k
                wait = False
            else:
                wait = True
            if wait:
                r, _, _ = select.select([sock], [], [], 60)
                if not r:
                    raise TimeoutError(f"no PUBACK for 60 s (sent {sent}, acked {acked})")
            try:
                data = sock.recv(1 << 18, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError(f"broker closed (sent {sent}, acked {acked})")
            buf += data
            new_acks, new_errors = count_acks(buf)
            acked += new_acks
            errors += new_errors
        t1 = time.monotonic()
        cpu = _self_cpu() - cpu0
        c.disconnect()
        conn.send(("done", t0, t1, errors, cpu))
    except Exception as exc:  # report to the parent instead of dying silently
        conn.send(("error", repr(exc)))


def _paho_pub_worker(
    port: int, host: str, lo: int, hi: int, devices: int, window: int, cid: str,
    conn: Any, go: Any, batch: int,
) -> None:
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    try:
        msgs = [reading(i, devices) for i in range(lo, hi)]
        total = len(msgs)
        done = threading.Event()
        connected = threading.Event()
        st = {"acked": 0, "errors": 0}

        # paho keys its outgoing queue by packet id: more than 65535 queued messages overwrite
        # each other, so bound what is handed to it.
        room = threading.Semaphore(min(2 * window, 30000))

        def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
            room.release()
            st["acked"] += 1
            if rc.is_failure:
                st["errors"] += 1
            if st["acked"] == total:
                done.set()

        brm: dict[str, Any] = {}

        def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
            brm["rm"] = getattr(props, "ReceiveMaximum", None)
            connected.set()

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(window)
        c.max_queued_messages_set(0)
        c.on_publish = on_publish
        c.on_connect = on_connect
        c.connect(host, port)
        c.loop_start()
        connected.wait(10)
        win = min(window, brm.get("rm") or 65535)
        conn.send(("ready", brm.get("rm"), win))
        go.wait()
        cpu0 = _self_cpu()
        t0 = time.monotonic()
        for topic, payload in msgs:
            room.acquire()
            c.publish(topic, payload, qos=1)
        if not done.wait(120):
            raise TimeoutError(f"paho publisher: {st['acked']}/{total} acked")
        t1 = time.monotonic()
        cpu = _self_cpu() - cpu0
        c.disconnect()
        c.loop_stop()
        conn.send(("done", t0, t1, st["errors"], cpu))
    except Exception as exc:
        conn.send(("error", repr(exc)))


_PUB_WORKERS = {"raw": _raw_pub_worker, "paho": _paho_pub_worker}


def publish_detailed(
    host: str,
    port: int,
    n: int,
    *,
    devices: int = 1000,
    connections: int = 1,
    window: int = 10000,
    impl: str = "raw",
    start: int = 0,
    batch: int = 1000,
    client_prefix: str = "bench-pub",
) -> PubResult:
    """Publish readings ``start .. start+n-1`` with QoS 1 over ``connections`` connections
    (one process each), each keeping at most ``window`` (and at most the broker's CONNACK
    Receive Maximum) PUBLISHes un-acknowledged. Returns once every PUBACK is in."""
    worker = _PUB_WORKERS[impl]
    go = _CTX.Event()
    procs, pipes = [], []
    for k in range(connections):
        lo = start + n * k // connections
        hi = start + n * (k + 1) // connections
        a, b = _CTX.Pipe()
        p = _CTX.Process(
            target=worker,
            args=(port, host, lo, hi, devices, window, f"{client_prefix}-{k}", b, go, batch),
            daemon=True,
        )
        p.start()
        procs.append(p)
        pipes.append(a)
    try:
        infos = [_expect(a, "ready", 120) for a in pipes]
        go.set()
        dones = [_expect(a, "done", 600) for a in pipes]
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    t0 = min(d[1] for d in dones)
    t1 = max(d[2] for d in dones)
    return PubResult(
        n=n, seconds=t1 - t0, rate=n / (t1 - t0), t0=t0, t1=t1,
        errors=sum(d[3] for d in dones), window=infos[0][2],
        broker_receive_maximum=infos[0][1], cpu=sum(d[4] for d in dones), impl=impl,
        connections=connections,
    )


def publish(
    host: str, port: int, n: int, *, devices: int = 1000, connections: int = 1, **kw: Any
) -> float:
    """Publish n distinct readings with QoS 1 as fast as possible; returns seconds."""
    return publish_detailed(host, port, n, devices=devices, connections=connections, **kw).seconds


def _expect(conn: Any, tag: str, timeout: float) -> tuple[Any, ...]:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {tag!r} from child in {timeout} s")
    msg = conn.recv()
    if msg[0] == "error":
        raise RuntimeError(f"child failed: {msg[1]}")
    if msg[0] != tag:
        raise RuntimeError(f"expected {tag!r}, got {msg!r}")
    return msg  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# bare subscribers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SubResult:
    lib: str
    n: int
    received: int
    dups: int
    t_connect: float  # monotonic, just before CONNECT
    t_ready: float  # monotonic, CONNACK received (subscriber ready)
    t_first: float
    t_last: float  # N-th (or last) message handled
    cpu: float  # subscriber process CPU seconds between t_connect and t_last

    @property
    def seconds(self) -> float:
        return self.t_last - self.t_connect

    @property
    def rate(self) -> float:
        """msg/s from CONNECT to the last message (drain mode's figure)."""
        return self.received / self.seconds if self.seconds > 0 else float("nan")


async def _gmqtt_bare(
    host: str, port: int, n: int, receive_maximum: int, client_id: str, session_expiry: int,
    clean_start: bool, idle_timeout: float, on_ready: Callable[[], None] | None, parse: bool,
) -> SubResult:
    from gmqtt import Client

    st: dict[str, Any] = {"count": 0, "dups": 0, "t_first": 0.0, "t_last": 0.0}
    done = asyncio.Event()
    loads = json.loads

    async def on_message(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        st["count"] += 1
        if props.get("dup"):
            st["dups"] += 1
        if parse:
            loads(payload)
        if st["count"] == 1:
            st["t_first"] = time.monotonic()
        if st["count"] == n:
            st["t_last"] = time.monotonic()
            done.set()
        return 0  # PUBACK reason code; sent only now (optimistic_acknowledgement=False)

    client = Client(
        client_id,
        clean_session=clean_start,
        optimistic_acknowledgement=False,
        receive_maximum=receive_maximum,
        session_expiry_interval=session_expiry,
    )
    client.on_message = on_message
    cpu0 = _self_cpu()
    t_connect = time.monotonic()
    await client.connect(host, port, keepalive=60)
    t_ready = time.monotonic()
    if on_ready:
        on_ready()
    last, last_change = 0, time.monotonic()
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 1.0)
        if st["count"] != last:
            last, last_change = st["count"], time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            st["t_last"] = last_change
            break
    cpu = _self_cpu() - cpu0
    await asyncio.sleep(0.3)  # let the last PUBACKs go out
    await client.disconnect()
    return SubResult(
        "gmqtt", n, st["count"], st["dups"], t_connect, t_ready, st["t_first"], st["t_last"], cpu
    )


def gmqtt_bare(
    host: str,
    port: int,
    n: int,
    *,
    receive_maximum: int = 65535,
    client_id: str = "bench-gmqtt",
    session_expiry: int = 3600,
    clean_start: bool = False,
    idle_timeout: float = 20.0,
    on_ready: Callable[[], None] | None = None,
    parse: bool = False,
) -> SubResult:
    """gmqtt 0.8.0, MQTT v5, QoS 1, optimistic_acknowledgement=False, async on_message that
    returns 0 (PUBACK after the handler). Counts n messages; see SubResult.rate."""
    return asyncio.run(
        _gmqtt_bare(host, port, n, receive_maximum, client_id, session_expiry, clean_start,
                    idle_timeout, on_ready, parse)
    )


def paho_bare(
    host: str,
    port: int,
    n: int,
    *,
    receive_maximum: int = 65535,
    client_id: str = "bench-paho",
    session_expiry: int = 3600,
    clean_start: bool = False,
    idle_timeout: float = 20.0,
    on_ready: Callable[[], None] | None = None,
    parse: bool = False,
) -> SubResult:
    """paho-mqtt 2.x, MQTTv5, manual_ack=True, client.ack(mid, qos) in on_message."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    st: dict[str, Any] = {"count": 0, "dups": 0, "t_first": 0.0, "t_last": 0.0, "t_ready": 0.0}
    loads = json.loads

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        st["count"] += 1
        if msg.dup:
            st["dups"] += 1
        if parse:
            loads(msg.payload)
        c.ack(msg.mid, msg.qos)
        if st["count"] == 1:
            st["t_first"] = time.monotonic()
        if st["count"] == n:
            st["t_last"] = time.monotonic()

    def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        st["t_ready"] = time.monotonic()
        if on_ready:
            on_ready()

    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    c.on_message = on_message
    c.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry
    props.ReceiveMaximum = receive_maximum
    cpu0 = _self_cpu()
    t_connect = time.monotonic()
    c.connect(host, port, keepalive=60, clean_start=clean_start, properties=props)
    last, last_change = 0, time.monotonic()
    while st["count"] < n:
        rc = c.loop(timeout=1.0)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"paho loop rc={rc}")
        if st["count"] != last:
            last, last_change = st["count"], time.monotonic()
        elif time.monotonic() - last_change > idle_timeout:
            st["t_last"] = last_change
            break
    cpu = _self_cpu() - cpu0
    c.disconnect()
    for _ in range(5):
        c.loop(timeout=0.05)
    return SubResult(
        "paho", n, st["count"], st["dups"], t_connect, st["t_ready"], st["t_first"],
        st["t_last"], cpu,
    )


SUBSCRIBERS: dict[str, Callable[..., SubResult]] = {"gmqtt": gmqtt_bare, "paho": paho_bare}


# --------------------------------------------------------------------------------------------
# measurement modes
# --------------------------------------------------------------------------------------------


def _sub_child(
    lib: str, mode: str, host: str, port: int, n: int, rm: int, client_id: str, conn: Any,
    parse: bool,
) -> None:
    try:
        create_session(port, client_id, host=host)
        conn.send(("session",))
        if mode == "drain":
            _expect(conn, "go", 600)
        res = SUBSCRIBERS[lib](
            host, port, n, receive_maximum=rm, client_id=client_id,
            on_ready=(lambda: conn.send(("ready",))) if mode == "live" else None, parse=parse,
        )
        conn.send(("result", dataclasses.asdict(res)))
    except Exception as exc:
        conn.send(("error", repr(exc)))


@dataclasses.dataclass
class RunResult:
    lib: str
    mode: str
    rm: int
    n: int
    received: int
    rate: float  # subscriber msg/s (drain: CONNECT -> N-th; live: publisher start -> N-th)
    sub_cpu: float
    broker_cpu: float
    pub_rate: float
    pub_cpu: float
    lag: float  # live: seconds the subscriber finished after the publisher's last PUBACK
    dups: int


def run_once(
    lib: str,
    mode: str,
    port: int,
    n: int,
    *,
    rm: int = 65535,
    host: str = HOST,
    broker_pid: int | None = None,
    devices: int = 1000,
    connections: int = 1,
    parse: bool = False,
) -> RunResult:
    """One measurement. drain: prefill n messages into an offline persistent session, then time
    reconnect -> N-th message. live: subscriber connected while the publisher runs flat out."""
    a, b = _CTX.Pipe()
    cid = f"bench-{lib}"
    p = _CTX.Process(
        target=_sub_child, args=(lib, mode, host, port, n, rm, cid, b, parse), daemon=True
    )
    p.start()
    try:
        _expect(a, "session", 60)
        if mode == "drain":
            pub = publish_detailed(host, port, n, devices=devices, connections=connections)
            time.sleep(0.5)
            bcpu0 = proc_cpu(broker_pid) if broker_pid else float("nan")
            a.send(("go",))
        else:
            _expect(a, "ready", 60)
            bcpu0 = proc_cpu(broker_pid) if broker_pid else float("nan")
            pub = publish_detailed(host, port, n, devices=devices, connections=connections)
        res = SubResult(**_expect(a, "result", 900)[1])
        bcpu = (proc_cpu(broker_pid) - bcpu0) if broker_pid else float("nan")
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
    if mode == "drain":
        rate, lag = res.rate, 0.0
    else:
        rate = res.received / (res.t_last - pub.t0)
        lag = res.t_last - pub.t1
    return RunResult(lib, mode, rm, n, res.received, rate, res.cpu, bcpu, pub.rate, pub.cpu,
                     lag, res.dups)


def _fmt_rate(x: float) -> str:
    return f"{x / 1000:.1f}k"


def bench(
    port: int,
    n: int,
    runs: int,
    *,
    libs: list[str],
    modes: list[str],
    rms: list[int],
    connections: int = 1,
    parse: bool = False,
    out: Any = sys.stdout,
) -> list[RunResult]:
    results: list[RunResult] = []
    with broker(port) as proc:
        # warm-up (imports, broker allocations)
        run_once(libs[0], "drain", port, min(n, 20000), rm=rms[-1], broker_pid=proc.pid)
        for r in range(runs):
            for lib in libs:
                for mode in modes:
                    for rm in rms:
                        rr = run_once(lib, mode, port, n, rm=rm, broker_pid=proc.pid,
                                      connections=connections, parse=parse)
                        results.append(rr)
                        print(f"  run {r + 1}/{runs} {lib:5} {mode:5} RM={rm:<5} "
                              f"{rr.received}/{n} sub {rr.rate:8.0f} msg/s  "
                              f"subCPU {rr.sub_cpu:5.2f}s brokerCPU {rr.broker_cpu:5.2f}s  "
                              f"pub {rr.pub_rate:8.0f} msg/s dups={rr.dups}",
                              file=out, flush=True)
    print_table(results, out)
    return results


def print_table(results: list[RunResult], out: Any = sys.stdout) -> None:
    keys = sorted({(r.lib, r.mode, r.rm) for r in results})
    hdr = (f"{'lib':6} {'mode':5} {'RM':>5} | {'median msg/s':>12} | {'runs msg/s':28} | "
           f"{'sub CPU s':>9} {'us/msg':>6} | {'broker CPU s':>12} | {'pub msg/s (med)':>15}"
           f" | lost")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for k in keys:
        rs = [r for r in results if (r.lib, r.mode, r.rm) == k]
        med = statistics.median(r.rate for r in rs)
        cpu = statistics.median(r.sub_cpu for r in rs)
        bcpu = statistics.median(r.broker_cpu for r in rs)
        prate = statistics.median(r.pub_rate for r in rs)
        lost = sum(r.n - r.received for r in rs)
        runs = " ".join(_fmt_rate(r.rate) for r in rs)
        print(f"{k[0]:6} {k[1]:5} {k[2]:>5} | {med:12.0f} | {runs:28} | {cpu:9.2f} "
              f"{cpu / rs[0].n * 1e6:6.1f} | {bcpu:12.2f} | {prate:15.0f} | {lost}", file=out)


def pub_compare(port: int, n: int, runs: int, out: Any = sys.stdout) -> None:
    """Publisher choice: publisher rate into an offline persistent session (drain prefill)."""
    variants = [("raw", 1, 10000), ("raw", 2, 10000), ("raw", 1, 1000), ("raw", 1, 100),
                ("paho", 1, 1000), ("paho", 1, 10000)]
    _pub_compare(port, n, runs, variants, {}, "bench broker (max_inflight_messages 0)", out)
    _pub_compare(port, n, runs, [("raw", 1, 10000), ("raw", 2, 10000)],
                 {"max_inflight_messages": None},
                 "max_inflight_messages default (20 -> CONNACK Receive Maximum 20)", out)


def _pub_compare(port: int, n: int, runs: int, variants: list[tuple[str, int, int]],
                 settings: dict[str, Any], label: str, out: Any) -> None:
    print(f"-- {label}", file=out)
    with broker(port, **settings) as proc:
        for impl, conns, win in variants:
            rates, cpus, bcpus = [], [], []
            for _ in range(runs):
                create_session(port, "bench-pubcmp")
                b0 = proc_cpu(proc.pid)
                r = publish_detailed(HOST, port, n, impl=impl, connections=conns, window=win)
                bcpus.append(proc_cpu(proc.pid) - b0)
                rates.append(r.rate)
                cpus.append(r.cpu)
                assert r.errors == 0, r
            print(f"pub {impl:4} conns={conns} window={win:<5} (broker RM "
                  f"{r.broker_receive_maximum}): median {statistics.median(rates):8.0f} msg/s  "
                  f"runs {' '.join(_fmt_rate(x) for x in rates)}  pubCPU "
                  f"{statistics.median(cpus):.2f}s brokerCPU {statistics.median(bcpus):.2f}s",
                  file=out, flush=True)


# --------------------------------------------------------------------------------------------
# probes: broker / gmqtt behaviour that decides the daemon's configuration
# --------------------------------------------------------------------------------------------


def _raw_pub(port: int, n: int, start: int = 0) -> None:
    """Simple blocking QoS 1 publish with all PUBACKs awaited (small n)."""
    publish_detailed(HOST, port, n, start=start, window=1000, client_prefix="probe-pub")


def _count_unacked(lib: str, port: int, rm: int | None, n: int) -> tuple[int, dict[str, Any]]:
    """Connect a never-acking subscriber with Receive Maximum rm, publish n, count arrivals."""
    cid = f"probe-noack-{lib}"
    create_session(port, cid)
    if lib == "raw":
        c = RawClient(port, cid, clean_start=False, session_expiry=3600, receive_maximum=rm)
        _raw_pub(port, n)
        got = [p for p in c.packets_until_quiet(1.5) if isinstance(p, InPublish)]
        props = c.connack_props
        c.close()
        return len(got), props
    conn_a, conn_b = _CTX.Pipe()
    p = _CTX.Process(target=_noack_child, args=(lib, port, rm, cid, conn_b), daemon=True)
    p.start()
    _expect(conn_a, "ready", 30)
    _raw_pub(port, n)
    conn_a.send(("stop",))
    msg = _expect(conn_a, "count", 30)
    p.join(5)
    if p.is_alive():
        p.kill()
    return msg[1], {}


def _noack_child(lib: str, port: int, rm: int | None, cid: str, conn: Any) -> None:
    try:
        if lib == "gmqtt":
            asyncio.run(_gmqtt_noack(port, rm, cid, conn))
        else:
            _paho_noack(port, rm, cid, conn, v311=lib == "paho311")
    except Exception as exc:
        conn.send(("error", repr(exc)))


async def _gmqtt_noack(port: int, rm: int | None, cid: str, conn: Any) -> None:
    from gmqtt import Client

    count = 0
    never = asyncio.Event()
    # the never-completing handlers are cancelled at exit; gmqtt's done-callback then raises
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)

    async def on_message(*_: Any) -> int:
        nonlocal count
        count += 1
        await never.wait()
        return 0

    kw = {"receive_maximum": rm} if rm is not None else {}
    c = Client(cid, clean_session=False, optimistic_acknowledgement=False,
               session_expiry_interval=3600, **kw)
    c.on_message = on_message
    await c.connect(HOST, port)
    conn.send(("ready",))
    while not conn.poll():  # noqa: ASYNC110 - waiting on a multiprocessing Pipe
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)
    last = -1
    while last != count:  # until quiet
        last = count
        await asyncio.sleep(1.0)
    conn.send(("count", count))
    c._connection._transport.abort()


def _paho_noack(port: int, rm: int | None, cid: str, conn: Any, v311: bool = False) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    st = {"count": 0}

    def on_message(c: Any, u: Any, msg: Any) -> None:
        st["count"] += 1  # and never c.ack()

    if v311:  # v3.1.1 has no Receive Maximum; persistent session = clean_session False
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid,
                        protocol=mqtt.MQTTv311, manual_ack=True, clean_session=False)
        c.on_message = on_message
        c.connect(HOST, port)
    else:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        c.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        if rm is not None:
            props.ReceiveMaximum = rm
        c.connect(HOST, port, clean_start=False, properties=props)
    c.loop(1.0)
    conn.send(("ready",))
    while not conn.poll():
        c.loop(0.1)
    end = time.monotonic() + 1.5
    last = -1
    while time.monotonic() < end or last != st["count"]:
        if time.monotonic() >= end:
            last = st["count"]
            end = time.monotonic() + 1.0
        c.loop(0.1)
    conn.send(("count", st["count"]))
    sock = c.socket()
    if sock is not None:
        sock.close()


def probe_inflight(port: int, out: Any = sys.stdout) -> None:
    """How many unacknowledged QoS 1 PUBLISHes does mosquitto send a v5 client with Receive
    Maximum R, depending on max_inflight_messages?"""
    print("\n== inflight: unacked QoS 1 PUBLISHes received by a never-acking v5 subscriber",
          file=out)
    configs: list[tuple[str, Any]] = [("default(20)", None), ("0", 0), ("5000", 5000),
                                      ("100", 100)]
    for label, mim in configs:
        with broker(port, max_inflight_messages=mim) as _:
            for lib, rm in [("raw", 10), ("raw", 100), ("raw", 1000), ("raw", 65535),
                            ("raw", None), ("gmqtt", 1000), ("paho", 1000), ("gmqtt", 65535),
                            ("paho311", None)]:
                if label == "100" and lib not in ("raw", "paho311"):
                    continue
                n = min(max(3 * (rm or 65535), 12000), 70000)
                got, props = _count_unacked(lib, port, rm, n)
                print(f"max_inflight_messages={label:11} {lib:7} RM={rm!s:<5} published={n:<5} "
                      f"-> received {got:5} unacked  CONNACK props {props}", file=out,
                      flush=True)


def probe_resume(port: int, out: Any = sys.stdout) -> None:
    """Receive Maximum when a session with a backlog is resumed: the backlog is queued while
    the client is away, then the client reconnects with Receive Maximum R and never acks."""
    print("\n== inflight on session resume: backlog queued offline, reconnect with RM=R, no "
          "acks", file=out)
    backlog = 5000
    for label, mim in [("default(20)", None), ("0", 0), ("5000", 5000)]:
        with broker(port, max_inflight_messages=mim) as _:
            for rm_create, rm in [(None, 10), (None, 1000), (10, 10), (1000, 10), (100, 1000)]:
                cid = "probe-resume"
                c = RawClient(port, cid, clean_start=True, session_expiry=3600,
                              receive_maximum=rm_create)
                c.subscribe(SUB_FILTER, 1)
                c.disconnect()
                _raw_pub(port, backlog)
                c = RawClient(port, cid, clean_start=False, session_expiry=3600,
                              receive_maximum=rm)
                first = [p for p in c.packets_until_quiet(1.5) if isinstance(p, InPublish)]
                # then ack one and see how many more come (steady state after the burst)
                if first and first[0].mid is not None:
                    c.puback(first[0].mid)
                more = [p for p in c.packets_until_quiet(1.0) if isinstance(p, InPublish)]
                c.close()
                print(f"max_inflight_messages={label:11} session created with RM={rm_create!s:5}"
                      f" resumed with RM={rm:<5}: {len(first):5} unacked PUBLISHes on resume; "
                      f"+{len(more)} after 1 PUBACK", file=out, flush=True)
            # live traffic after the resume burst, same connection settings
            c = RawClient(port, "probe-resume", clean_start=True, session_expiry=3600,
                          receive_maximum=10)
            c.subscribe(SUB_FILTER, 1)
            _raw_pub(port, 1000)
            live = [p for p in c.packets_until_quiet(1.5) if isinstance(p, InPublish)]
            c.close()
            print(f"max_inflight_messages={label:11} (control) connected with RM=10, 1000 "
                  f"published live: {len(live)} unacked", file=out, flush=True)


def probe_window(port: int, out: Any = sys.stdout) -> None:
    """Does Receive Maximum bound what a *batching* consumer holds unacknowledged when the
    broker has a backlog? The consumer acks everything it holds every 20 ms ("commit")."""
    print("\n== window under backlog: consumer with Receive Maximum R acks in 20 ms batches",
          file=out)
    backlog = 20000
    for label, settings in [("max_inflight_messages 0", {}),
                            ("max_inflight_messages 20 (default)",
                             {"max_inflight_messages": None})]:
        print(f"-- {label}, max_queued_messages 0", file=out)
        _probe_window(port, backlog, settings, out)


def _probe_window(port: int, backlog: int, settings: dict[str, Any], out: Any) -> None:
    with broker(port, **settings) as _:
        for rm in (10, 100, 1000):
            for how in ("offline backlog", "online backlog"):
                cid = "probe-window"
                create_session(port, cid)
                if how == "offline backlog":
                    _raw_pub(port, backlog)
                    c = RawClient(port, cid, clean_start=False, session_expiry=3600,
                                  receive_maximum=rm)
                else:
                    c = RawClient(port, cid, clean_start=False, session_expiry=3600,
                                  receive_maximum=rm)
                    _raw_pub(port, backlog)
                pending: list[int] = []
                got, max_pending, commits = 0, 0, 0
                next_commit = time.monotonic() + 0.02
                while got < backlog:
                    try:
                        ptype, flags, body = c.read_packet(max(0.0, next_commit -
                                                               time.monotonic()) or 0.001)
                        if ptype == PUBLISH:
                            ip = parse_publish(flags, body)
                            assert ip.mid is not None
                            pending.append(ip.mid)
                            got += 1
                            max_pending = max(max_pending, len(pending))
                    except TimeoutError:
                        pass
                    if time.monotonic() >= next_commit:
                        if pending:
                            c.sock.sendall(b"".join(puback_packet(m) for m in pending))
                            pending.clear()
                            commits += 1
                        next_commit = time.monotonic() + 0.02
                        if got and commits > 10000:
                            break
                c.disconnect()
                print(f"RM={rm:<5} {how}: max unacknowledged held by the consumer "
                      f"{max_pending:6} (= {max_pending / rm:.0f} x RM) over {commits} commits",
                      file=out, flush=True)


def _sys_snapshot(port: int, secs: float = 2.5) -> dict[str, str]:
    c = RawClient(port, "probe-sys")
    c.subscribe("$SYS/#", 0)
    vals: dict[str, str] = {}
    for p in c.packets_until_quiet(quiet=secs, limit=secs + 0.5):
        if isinstance(p, InPublish):
            vals[p.topic] = p.payload.decode(errors="replace")
    c.disconnect()
    return vals


def probe_queue(port: int, out: Any = sys.stdout) -> None:
    """QoS 1 for a disconnected persistent session beyond max_queued_messages."""
    print("\n== queue overflow: offline persistent session, 5000 QoS 1 published", file=out)
    cases: list[tuple[str, dict[str, Any]]] = [
                         ("defaults (max_queued_messages 1000, max_inflight 20)",
                          {"max_queued_messages": None, "max_inflight_messages": None}),
                         ("max_queued_messages 1000, max_inflight_messages 0",
                          {"max_queued_messages": None, "max_inflight_messages": 0}),
                         ("max_queued_messages 0 (unlimited)", {})]
    for label, extra in cases:
        with broker(port, sys_interval=1, **extra) as proc:
            cid = "probe-queue"
            create_session(port, cid)
            before = _sys_snapshot(port)
            pub = publish_detailed(HOST, port, 5000, window=1000, client_prefix="probe-pub")
            time.sleep(1.2)
            after = _sys_snapshot(port)
            c = RawClient(port, cid, clean_start=False, session_expiry=3600,
                          receive_maximum=65535)
            got: list[InPublish] = []
            for p in c.packets_until_quiet(1.5):
                if isinstance(p, InPublish):
                    got.append(p)
                    assert p.mid is not None
                    c.puback(p.mid)
            c.disconnect()
            seqs = sorted(json.loads(p.payload)["seq"] * 1000 + int(p.topic[-6:]) for p in got)
            print(f"[{label}] received {len(got)} of 5000; reading indexes "
                  f"{seqs[0] if seqs else '-'}..{seqs[-1] if seqs else '-'}; publisher saw "
                  f"{pub.errors} PUBACK errors", file=out)
            changed = {k: (before.get(k), v) for k, v in after.items()
                       if before.get(k) != v and any(w in k for w in
                       ("dropped", "messages/stored", "store/messages/count"))}
            for k, (b, a) in sorted(changed.items()):
                print(f"    $SYS {k}: {b} -> {a}", file=out)
            drops = [ln for ln in broker_log(proc, port).splitlines() if "drop" in ln.lower()]
            print(f"    broker log lines mentioning 'drop': {len(drops)}"
                  + (f", e.g. {drops[0]!r}" if drops else ""), file=out, flush=True)


def probe_queue_online(port: int, out: Any = sys.stdout) -> None:
    """A connected subscriber that stops acking (e.g. DB stall): what beyond RM is kept?"""
    print("\n== queue overflow while connected: RM=100 subscriber stops acking, 5000 published",
          file=out)
    for label, extra in [("max_queued_messages 1000 (default)", {"max_queued_messages": None}),
                         ("max_queued_messages 0", {})]:
        with broker(port, **extra) as proc:
            cid = "probe-queue-online"
            create_session(port, cid)
            c = RawClient(port, cid, clean_start=False, session_expiry=3600,
                          receive_maximum=100)
            _raw_pub(port, 5000)
            total = 0
            while True:
                got = [p for p in c.packets_until_quiet(1.0) if isinstance(p, InPublish)]
                if not got:
                    break
                total += len(got)
                for p in got:
                    assert p.mid is not None
                    c.puback(p.mid)
            c.disconnect()
            drops = [ln for ln in broker_log(proc, port).splitlines() if "drop" in ln.lower()]
            print(f"[{label}] received {total} of 5000 after acking resumed; log: "
                  f"{drops[:1]}", file=out, flush=True)


def probe_shared(port: int, out: Any = sys.stdout) -> None:
    """$share/<group>/... with persistent sessions on mosquitto 2.0.11."""
    print("\n== shared subscription $share/g/sensord/v1/+/+/+ with persistent sessions",
          file=out)
    flt = "$share/g/" + SUB_FILTER
    with broker(port) as _:
        a = RawClient(port, "share-a", session_expiry=3600)
        b = RawClient(port, "share-b", session_expiry=3600)
        print(f"CONNACK props: {a.connack_props}; SUBACK a={a.subscribe(flt):#x} "
              f"b={b.subscribe(flt):#x}", file=out)

        def drain(c: RawClient) -> list[InPublish]:
            got = [p for p in c.packets_until_quiet(1.0) if isinstance(p, InPublish)]
            for p in got:
                assert p.mid is not None
                c.puback(p.mid)
            return got

        _raw_pub(port, 100, start=0)
        print(f"both online, 100 published: a={len(drain(a))} b={len(drain(b))}", file=out)
        b.disconnect()
        time.sleep(0.3)
        _raw_pub(port, 100, start=100)
        got_a = drain(a)
        b = RawClient(port, "share-b", clean_start=False, session_expiry=3600)
        got_b = drain(b)
        print(f"b offline (session kept, present on return={b.session_present}), 100 published:"
              f" a={len(got_a)} online; b got {len(got_b)} on reconnect", file=out)
        a.disconnect()
        b.disconnect()
        time.sleep(0.3)
        _raw_pub(port, 100, start=200)
        a = RawClient(port, "share-a", clean_start=False, session_expiry=3600)
        got_a = drain(a)
        b = RawClient(port, "share-b", clean_start=False, session_expiry=3600)
        got_b = drain(b)
        print(f"both offline, 100 published: a got {len(got_a)} and b got {len(got_b)} on "
              f"reconnect", file=out)
        # non-shared subscriber that died hard (no DISCONNECT) vs shared group
        b.close()  # abrupt: socket closed without DISCONNECT
        time.sleep(0.3)
        _raw_pub(port, 100, start=300)
        got_a = drain(a)
        b = RawClient(port, "share-b", clean_start=False, session_expiry=3600)
        got_b = drain(b)
        print(f"b dropped without DISCONNECT, 100 published: a={len(got_a)} online; b got "
              f"{len(got_b)} on reconnect", file=out, flush=True)
        a.disconnect()
        b.disconnect()


def probe_gmqtt(port: int, out: Any = sys.stdout) -> None:
    print("\n== gmqtt 0.8.0, optimistic_acknowledgement=False", file=out)
    tmpdir = tempfile.mkdtemp(prefix="mqtt-bench-")
    holder = [start_broker(port, tmpdir)]  # _gmqtt_session_lost replaces the broker
    try:
        asyncio.run(_gmqtt_exceptions(port, out))
        asyncio.run(_gmqtt_drop(port, out, release="before_reconnect"))
        asyncio.run(_gmqtt_drop(port, out, release="after_reconnect"))
        asyncio.run(_gmqtt_session_lost(port, out, holder))
    finally:
        stop_broker(holder[0])
        shutil.rmtree(tmpdir, ignore_errors=True)


def _redelivered(port: int, cid: str) -> list[InPublish]:
    """Reconnect the session with a raw client and ack whatever the broker redelivers."""
    c = RawClient(port, cid, clean_start=False, session_expiry=3600)
    got = [p for p in c.packets_until_quiet(1.0) if isinstance(p, InPublish)]
    for p in got:
        assert p.mid is not None
        c.puback(p.mid)
    c.disconnect()
    return got


def _gmqtt_client(cid: str, rm: int = 100) -> Any:
    from gmqtt import Client

    c = Client(cid, clean_session=False, optimistic_acknowledgement=False, receive_maximum=rm,
               session_expiry_interval=3600)
    c.set_config({"reconnect_delay": 1})
    return c


def _trace_mids(c: Any, log: list[tuple[str, int, Any]]) -> None:
    """Record ("in", mid, dup) for inbound QoS 1 and ("puback", mid, reason) for PUBACKs."""
    h = c._package_handler
    orig_in = h._handle_qos_1_publish_packet
    orig_out = c._send_command_with_mid

    def inbound(mid: int, packet: bytes, topic: str, props: Any) -> None:
        log.append(("in", mid, bool(props.get("dup"))))
        orig_in(mid, packet, topic, props)

    def outbound(cmd: int, mid: int, dup: bool, reason_code: int = 0) -> None:
        closing = c._connection.is_closing()
        log.append(("puback-on-closed-conn" if closing else "puback", mid, reason_code))
        orig_out(cmd, mid, dup, reason_code=reason_code)

    h._handle_qos_1_publish_packet = inbound
    h._send_command_with_mid_callback = outbound


async def _gmqtt_exceptions(port: int, out: Any) -> None:
    cid = "probe-gm-exc"
    create_session(port, cid)
    loop_errors: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, ctx: loop_errors.append(repr(ctx.get("exception") or ctx.get("message")))
    )
    seen: list[str] = []

    async def on_message(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> Any:
        i = json.loads(payload)["seq"] * 1000 + int(topic[-6:])
        seen.append(f"{i}{'(dup)' if props.get('dup') else ''}")
        if i == 1:
            raise RuntimeError("handler failed")
        if i == 2:
            return None  # forgot to return a reason code
        if i == 3:
            return 0x80  # PUBACK with reason 'unspecified error'
        await asyncio.sleep(0)
        return 0

    c = _gmqtt_client(cid)
    mids: list[tuple[str, int, Any]] = []
    _trace_mids(c, mids)
    c.on_message = on_message
    await c.connect(HOST, port)
    await asyncio.to_thread(_raw_pub, port, 5)
    await asyncio.sleep(3.0)  # plenty of time for (no) redelivery on the same connection
    print(f"handler: i=1 raises, i=2 returns None, i=3 returns 0x80, others 0. seen on first "
          f"connection (3 s): {seen}", file=out)
    print(f"    loop exception handler got: {loop_errors}", file=out)
    print(f"    wire: {mids}", file=out)
    await c.disconnect()
    red = _redelivered(port, cid)
    ids = [(json.loads(p.payload)["seq"] * 1000 + int(p.topic[-6:]), "dup" if p.dup else "")
           for p in red]
    print(f"    redelivered after reconnect: {ids}", file=out, flush=True)


async def _gmqtt_session_lost(port: int, out: Any, holder: list[Any]) -> None:
    """Handlers pending, broker restarts *without* the session (persistence false): the stale
    PUBACKs go out on the new connection, whose new session reuses the same packet ids."""
    cid = "probe-gm-lost"
    create_session(port, cid)
    gate = asyncio.Event()
    seen: list[str] = []
    mids: list[tuple[str, int, Any]] = []
    flags: list[int] = []

    async def on_message(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        i = json.loads(payload)["seq"] * 1000 + int(topic[-6:])
        seen.append(f"{i}{'(dup)' if props.get('dup') else ''}")
        if i < 100:
            await gate.wait()  # slow commit, in flight across the outage
            return 0
        await asyncio.sleep(0.5)
        raise RuntimeError("commit failed")  # must therefore be redelivered later

    def on_connect(client: Any, session_present: int, rc: int, props: Any) -> None:
        flags.append(session_present)
        if not session_present:
            client.subscribe(SUB_FILTER, qos=1)

    c = _gmqtt_client(cid)
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)
    _trace_mids(c, mids)
    c.on_message = on_message
    c.on_connect = on_connect
    await c.connect(HOST, port)
    await asyncio.to_thread(_raw_pub, port, 3)  # readings 0..2, handlers pending
    await asyncio.sleep(0.5)
    tmpdir = holder[0].tmpdir
    stop_broker(holder[0])
    holder[0] = start_broker(port, tmpdir)  # same port, empty broker: session gone
    await asyncio.sleep(2.0)  # gmqtt reconnects (delay 1 s) -> session_present 0, resubscribe
    await asyncio.to_thread(_raw_pub, port, 3, 100)  # readings 100..102 get ids 1..3 again
    await asyncio.sleep(0.2)
    gate.set()  # the three stale handlers finish now
    await asyncio.sleep(1.0)
    await c.disconnect()
    red = _redelivered(port, cid)
    print(f"[broker lost the session while 3 handlers were pending] session_present per "
          f"CONNACK: {flags}; handler calls: {seen}", file=out)
    print(f"    wire: {mids}", file=out)
    print(f"    readings 100..102 all failed in the handler, yet redelivered: {len(red)} of 3",
          file=out, flush=True)


async def _gmqtt_drop(port: int, out: Any, release: str) -> None:
    cid = "probe-gm-drop"
    create_session(port, cid)
    gate = asyncio.Event()
    seen: list[str] = []
    mids: list[tuple[str, int, Any]] = []
    logs: list[str] = []

    async def on_message(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        i = json.loads(payload)["seq"] * 1000 + int(topic[-6:])
        seen.append(f"{i}{'(dup)' if props.get('dup') else ''}")
        await gate.wait()
        return 0

    import logging

    class _Cap(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                logs.append(record.getMessage()[:80])

    logging.getLogger("gmqtt").addHandler(_Cap())
    c = _gmqtt_client(cid)
    _trace_mids(c, mids)
    c.on_message = on_message
    connects: list[float] = []
    c.on_connect = lambda *a: connects.append(time.monotonic())
    await c.connect(HOST, port)
    await asyncio.to_thread(_raw_pub, port, 3)
    await asyncio.sleep(0.5)
    c._connection._transport.abort()
    if release == "before_reconnect":
        await asyncio.sleep(0.1)
        gate.set()
        await asyncio.sleep(2.5)
    else:
        await asyncio.sleep(2.5)  # reconnect_delay 1 s; redelivered copies are now pending too
        gate.set()
        await asyncio.sleep(1.0)
    print(f"[connection dropped with 3 handlers pending, released {release}] reconnects="
          f"{len(connects) - 1}; handler calls: {seen}", file=out)
    print(f"    wire: {mids}", file=out)
    print(f"    gmqtt warnings: {sorted(set(logs))}", file=out)
    alive = c.is_connected
    await c.disconnect()
    red = _redelivered(port, cid)
    print(f"    connection still up at end: {alive}; left unacked at broker (redelivered on "
          f"next reconnect): {len(red)}", file=out, flush=True)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mqtt_ceiling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=18830, help="private broker port (not 1883)")
    ap.add_argument("--messages", "-n", type=int, default=100_000)
    ap.add_argument("--runs", "-k", type=int, default=3)
    ap.add_argument("--libs", default="gmqtt,paho")
    ap.add_argument("--modes", default="drain,live")
    ap.add_argument("--rm", default="1000,65535", help="subscriber Receive Maximum values")
    ap.add_argument("--connections", type=int, default=1, help="publisher connections")
    ap.add_argument("--parse", action="store_true", help="json.loads each payload")
    ap.add_argument("--pub-compare", action="store_true", help="compare publisher variants")
    ap.add_argument("--probe",
                    choices=["inflight", "resume", "window", "queue", "queue_online", "shared",
                             "gmqtt", "all"])
    args = ap.parse_args(argv)
    if args.port == 1883:
        ap.error("1883 is the machine's broker")
    if args.probe:
        probes = {"inflight": probe_inflight, "resume": probe_resume, "window": probe_window,
                  "queue": probe_queue,
                  "queue_online": probe_queue_online, "shared": probe_shared,
                  "gmqtt": probe_gmqtt}
        for name, fn in probes.items():
            if args.probe in (name, "all"):
                fn(args.port)
        return 0
    if args.pub_compare:
        pub_compare(args.port, args.messages, args.runs)
        return 0
    print(f"mosquitto {MOSQUITTO} on {HOST}:{args.port}, N={args.messages}, runs={args.runs}, "
          f"{os.cpu_count()} CPUs", flush=True)
    bench(args.port, args.messages, args.runs,
          libs=args.libs.split(","), modes=args.modes.split(","),
          rms=[int(x) for x in args.rm.split(",")], connections=args.connections,
          parse=args.parse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
