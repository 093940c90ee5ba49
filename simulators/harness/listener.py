"""An MQTT subscriber that records what sensord publishes (notifications, command replies)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Listener:
    """Subscribes to ``topics`` at QoS 1 and keeps every (topic, JSON payload) received."""

    def __init__(
        self, port: int, *topics: str, username: str | None = None, password: str | None = None
    ) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"listener-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._topics = topics
        self._port = port
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()

    def __enter__(self) -> Listener:
        self._client.connect("127.0.0.1", self._port, keepalive=30)
        self._client.loop_start()
        self._client.subscribe([(topic, 1) for topic in self._topics])
        if not self._subscribed.wait(10):
            raise TimeoutError("listener not subscribed")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, json.loads(message.payload)))

    def messages(
        self, where: Callable[[str, dict[str, Any]], bool] = lambda t, m: True
    ) -> list[tuple[str, dict[str, Any]]]:
        """What arrived so far that ``where`` accepts."""
        with self._lock:
            return [(t, m) for t, m in self.received if where(t, m)]

    def wait_for(
        self, where: Callable[[str, dict[str, Any]], bool], timeout_s: float = 20
    ) -> dict[str, Any]:
        """The first message ``where`` accepts, waiting for it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.messages(where)
            if found:
                return found[0][1]
            time.sleep(0.05)
        raise TimeoutError(f"no matching message in {timeout_s} s; got {len(self.received)}")
