"""Notifications out to the broker: QoS 1, and a publish counts only once PUBACKed.

A connection of its own (client id ``<client_id>-dispatch``, clean session), so
the ingest session's flow control never holds up a notification. gmqtt keeps
unacknowledged QoS 1 messages to replay after a reconnect; we drop them
instead and fail their waiters: the outbox row is still unsent and is sent
again, under the same ``message_id``, by the relay.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import gmqtt

from sensord.adapters.mqtt import authenticate, connect
from sensord.config import MqttConfig
from sensord.core.backoff import Backoff
from sensord.errors import SensordError

log = logging.getLogger("sensord.mqtt.publisher")
IN_FLIGHT = 16  # notifications awaiting their PUBACK at once


class PublishFailed(SensordError):
    """The broker did not acknowledge a publish (disconnected, timed out, refused)."""


class _AckClient(gmqtt.Client):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.refused: dict[int, int] = {}  # packet id -> PUBACK reason code >= 0x80
        self._watch_reason_codes()

    def publish_acked(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        message = gmqtt.Message(topic, payload, qos=1)
        mid, package = self._connection.publish(message)
        self._persistent_storage.push_message(mid, package)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[mid] = future
        return future

    def _watch_reason_codes(self) -> None:
        # gmqtt's packet handler drops the MQTT 5 PUBACK reason code; a refusal
        # (0x80 and up: not authorised, quota exceeded, ...) must not count as
        # delivered. The handler looks its methods up by name on itself.
        handler = self._package_handler
        original = handler._handle_puback_packet

        def on_puback(cmd: int, packet: bytes) -> None:
            (mid,) = struct.unpack("!H", packet[:2])
            reason = packet[2] if len(packet) > 2 else 0
            if reason >= 0x80:
                self.refused[mid] = reason
            original(cmd, packet)

        handler._handle_puback_packet = on_puback

    def _remove_message_from_queue(self, mid: int) -> None:  # PUBACK received
        super()._remove_message_from_queue(mid)
        reason = self.refused.pop(mid, None)
        future = self.waiting.pop(mid, None)
        if future is None or future.done():
            return
        if reason is None:
            future.set_result(None)
        else:
            future.set_exception(PublishFailed(f"the broker refused it (reason 0x{reason:02x})"))

    def fail_waiting(self, reason: str) -> None:
        self._persistent_storage.clear()  # the relay resends; gmqtt must not as well
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(PublishFailed(reason))
        self.waiting.clear()


class MqttPublisher:
    """Publishes notification messages and waits for their PUBACKs."""

    def __init__(self, config: MqttConfig) -> None:
        self._config = config
        self._client = _AckClient(
            f"{config.client_id}-dispatch"[:64], clean_session=True,
            logger=logging.getLogger("sensord.mqtt.publisher.gmqtt"),
        )  # fmt: skip
        self._client.set_config({"reconnect_retries": -1})
        self._client.on_disconnect = lambda *_: self._client.fail_waiting("broker session lost")
        authenticate(self._client, config)
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        # Below the smallest Receive Maximum we meet: Mosquitto's default
        # max_inflight_messages is 20, and gmqtt has no packet id beyond it.
        self._window = asyncio.Semaphore(IN_FLIGHT)

    @property
    def connected(self) -> bool:
        """Whether publishing is possible now."""
        return bool(self._client.is_connected)

    async def start(self) -> None:
        """Connect, retrying with backoff (gmqtt reconnects by itself afterwards)."""
        await connect(self._client, self._config, self._backoff, "publisher")

    async def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        """Publish at QoS 1; return once PUBACKed, else raise PublishFailed."""
        async with self._window:
            if not self._client.is_connected:
                raise PublishFailed("not connected to the broker")
            try:
                acked = self._client.publish_acked(topic, payload)
            except OverflowError:  # gmqtt: no packet id free (the broker's Receive Maximum)
                raise PublishFailed("no packet id free") from None
            try:
                await asyncio.wait_for(acked, timeout_s)
            except TimeoutError:
                raise PublishFailed(f"no PUBACK within {timeout_s} s") from None

    async def stop(self) -> None:
        """Disconnect cleanly."""
        if self._client.is_connected:
            await self._client.disconnect()
