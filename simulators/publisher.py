"""A QoS 1 publisher that waits for every PUBACK: what it reports sent, the broker has."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Publisher:
    """paho-mqtt client with a bounded in-flight window, used as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        client_id: str | None = None,
        window: int = 1000,
    ) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sim-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._host, self._port = host, port

    def __enter__(self) -> Publisher:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        deadline = time.monotonic() + 10
        while not self._client.is_connected():
            if time.monotonic() > deadline:
                raise ConnectionError(f"no CONNACK from {self._host}:{self._port}")
            time.sleep(0.01)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, messages: Iterable[tuple[str, bytes]], timeout_s: float = 120.0) -> int:
        """Publish every (topic, payload) with QoS 1; return how many the broker acknowledged."""
        infos = [self._client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError(f"broker did not acknowledge message {info.mid}")
        return len(infos)
