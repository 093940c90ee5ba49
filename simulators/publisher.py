"""A QoS 1 publisher that waits for every PUBACK: what it reports sent, the broker has."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class ClientTls:
    """MQTT over TLS: the CA to check the broker against, and optionally a client
    certificate and key (the device's identity under ``use_identity_as_username``)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """Checks the broker's certificate and name; TLS 1.2 at least."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class Publisher:
    """paho-mqtt client with a bounded in-flight window, used as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        client_id: str | None = None,
        window: int = 1000,
        tls: ClientTls | None = None,
    ) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sim-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        if tls is not None:
            self._client.tls_set_context(tls.context())
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
