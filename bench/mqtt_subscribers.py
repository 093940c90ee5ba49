"""Bare QoS 1 subscribers (gmqtt, paho) that PUBACK only after the handler ran, as sensord does."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from bench.mqtt_publishers import self_cpu

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
    cpu0 = self_cpu()
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
    cpu = self_cpu() - cpu0
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
    cpu0 = self_cpu()
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
    cpu = self_cpu() - cpu0
    c.disconnect()
    for _ in range(5):
        c.loop(timeout=0.05)
    return SubResult(
        "paho", n, st["count"], st["dups"], t_connect, st["t_ready"], st["t_first"],
        st["t_last"], cpu,
    )


SUBSCRIBERS: dict[str, Callable[..., SubResult]] = {"gmqtt": gmqtt_bare, "paho": paho_bare}

