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

    from bench.mqtt_publishers import publish
    from bench.mqtt_subscribers import gmqtt_bare
    from simulators.harness.broker import broker

    with broker(18830) as proc:
        secs = publish("127.0.0.1", 18830, 100_000)
        res = gmqtt_bare("127.0.0.1", 18830, 100_000, receive_maximum=1000)

The jobs live apart: the MQTT v5 codec and raw client in ``simulators.harness.mqtt_wire``,
broker control in ``simulators.harness.broker``, publishers in ``bench.mqtt_publishers``,
subscribers in ``bench.mqtt_subscribers``, probes in ``bench.mqtt_probes``; this module holds
the measurement modes and the command line.

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
import dataclasses
import os
import statistics
import sys
import time
from typing import Any

from bench.mqtt_probes import (
    probe_gmqtt,
    probe_inflight,
    probe_queue,
    probe_queue_online,
    probe_resume,
    probe_shared,
    probe_window,
)
from bench.mqtt_publishers import SPAWN, expect, publish_detailed
from bench.mqtt_subscribers import SUBSCRIBERS, SubResult
from simulators.harness.broker import MOSQUITTO, broker
from simulators.harness.mqtt_wire import HOST, create_session
from simulators.harness.processes import proc_cpu

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
            expect(conn, "go", 600)
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
    a, b = SPAWN.Pipe()
    cid = f"bench-{lib}"
    p = SPAWN.Process(
        target=_sub_child, args=(lib, mode, host, port, n, rm, cid, b, parse), daemon=True
    )
    p.start()
    try:
        expect(a, "session", 60)
        if mode == "drain":
            pub = publish_detailed(host, port, n, devices=devices, connections=connections)
            time.sleep(0.5)
            bcpu0 = proc_cpu(broker_pid) if broker_pid else float("nan")
            a.send(("go",))
        else:
            expect(a, "ready", 60)
            bcpu0 = proc_cpu(broker_pid) if broker_pid else float("nan")
            pub = publish_detailed(host, port, n, devices=devices, connections=connections)
        res = SubResult(**expect(a, "result", 900)[1])
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
