"""Probes of broker and gmqtt behaviour that decide the daemon's configuration (``--probe``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from typing import Any

from bench.mqtt_publishers import SPAWN, expect, publish_detailed
from simulators.harness.broker import broker, broker_log, start_broker, stop_broker
from simulators.harness.mqtt_wire import (
    HOST,
    PUBLISH,
    SUB_FILTER,
    InPublish,
    RawClient,
    create_session,
    parse_publish,
    puback_packet,
)


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
    conn_a, conn_b = SPAWN.Pipe()
    p = SPAWN.Process(target=_noack_child, args=(lib, port, rm, cid, conn_b), daemon=True)
    p.start()
    expect(conn_a, "ready", 30)
    _raw_pub(port, n)
    conn_a.send(("stop",))
    msg = expect(conn_a, "count", 30)
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

