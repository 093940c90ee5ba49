"""Publishers for the MQTT benchmarks: the readings they send, raw-socket and paho workers.

Workers run in ``spawn`` child processes (:data:`SPAWN`) so they do not share the GIL with the
subscriber under test; :func:`expect` reads the child's answer from its pipe.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing as mp
import resource
import select
import socket
import time
from typing import Any

from simulators.harness.mqtt_wire import RawClient, count_acks, publish_packet

SPAWN = mp.get_context("spawn")

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




def self_cpu() -> float:
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
        cpu0 = self_cpu()
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
        cpu = self_cpu() - cpu0
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
        cpu0 = self_cpu()
        t0 = time.monotonic()
        for topic, payload in msgs:
            room.acquire()
            c.publish(topic, payload, qos=1)
        if not done.wait(120):
            raise TimeoutError(f"paho publisher: {st['acked']}/{total} acked")
        t1 = time.monotonic()
        cpu = self_cpu() - cpu0
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
    go = SPAWN.Event()
    procs, pipes = [], []
    for k in range(connections):
        lo = start + n * k // connections
        hi = start + n * (k + 1) // connections
        a, b = SPAWN.Pipe()
        p = SPAWN.Process(
            target=worker,
            args=(port, host, lo, hi, devices, window, f"{client_prefix}-{k}", b, go, batch),
            daemon=True,
        )
        p.start()
        procs.append(p)
        pipes.append(a)
    try:
        infos = [expect(a, "ready", 120) for a in pipes]
        go.set()
        dones = [expect(a, "done", 600) for a in pipes]
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


def expect(conn: Any, tag: str, timeout: float) -> tuple[Any, ...]:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {tag!r} from child in {timeout} s")
    msg = conn.recv()
    if msg[0] == "error":
        raise RuntimeError(f"child failed: {msg[1]}")
    if msg[0] != tag:
        raise RuntimeError(f"expected {tag!r}, got {msg!r}")
    return msg  # type: ignore[no-any-return]
