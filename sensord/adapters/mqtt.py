"""The broker session: MQTT v5, persistent, QoS 1, PUBACK only after commit.

gmqtt with ``optimistic_acknowledgement=False`` runs each PUBLISH's
``on_message`` coroutine as a task and sends PUBACK with its return value
when the coroutine returns; if it raises, no PUBACK is sent and the broker
redelivers the message in this session after a reconnect. The handler given
to :class:`MqttConsumer` returns only after the message's batch committed,
which makes commit-before-ack the adapter's only mode.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import gmqtt

from sensord.adapters.metrics import Metrics
from sensord.config import MqttConfig
from sensord.core.backoff import Backoff
from sensord.core.topics import reading_subscription
from sensord.errors import SensordError
from sensord.retry import Retry

log = logging.getLogger("sensord.mqtt")

Handler = Callable[[str, bytes], Awaitable[None]]
_PUBACK_SUCCESS = 0


class NotAcknowledged(SensordError):
    """Raised out of on_message so that gmqtt sends no PUBACK for the message."""


class _BackoffClient(gmqtt.Client):  # type: ignore[misc]
    """gmqtt's own reconnect loop, with exponential backoff instead of a fixed delay."""

    def __init__(self, backoff: Backoff, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backoff = backoff
        self.failed_attempts = 0

    async def reconnect(self, delay: bool = False) -> None:
        self.failed_attempts += 1
        self.reconnect_delay = self.backoff.delay(self.failed_attempts, random.random)
        await super().reconnect(delay=delay)


async def connect(
    client: gmqtt.Client, config: MqttConfig, backoff: Backoff | Retry, who: str
) -> None:
    """Connect ``client``, retrying with backoff until the broker answers (gmqtt reconnects
    by itself afterwards)."""

    def failed(attempt: int, delay: float, exc: BaseException) -> None:
        log.warning(
            "broker unreachable",
            extra={
                "client": who,
                "attempt": attempt,
                "retry_in_s": round(delay, 2),
                "error": str(exc),
            },
        )

    # An SSLContext or False; gmqtt hands it to loop.create_connection, which checks the
    # certificate against config.host, and reuses it on every reconnect.
    tls = config.tls_context() or False
    if config.tls and not config.tls_verify_hostname:
        log.warning(
            "TLS hostname verification is OFF (mqtt.tls_verify_hostname = false): any"
            " certificate the CA signed is accepted as the broker's",
            extra={"client": who, "host": config.host},
        )
    # A refused certificate (wrong CA, wrong name) is an ssl.SSLError, an OSError: retried
    # with backoff like an unreachable broker, the reason in the log.
    await Retry.of(backoff).call(
        lambda: client.connect(config.host, config.port, ssl=tls, keepalive=config.keepalive_s),
        on=(OSError, gmqtt.mqtt.handler.MQTTConnectError),
        failed=failed,
    )


def authenticate(client: gmqtt.Client, config: MqttConfig) -> None:
    """Give ``client`` the configured broker user and password, if any."""
    if config.username:
        client.set_auth_credentials(config.username, config.password.get_secret_value() or None)


def subscription_topic(config: MqttConfig, topic: str | None = None) -> str:
    """A subscription (default: the readings), inside the shared group when one is configured."""
    topic = topic or reading_subscription(config.topic_prefix)
    return f"$share/{config.shared_group}/{topic}" if config.shared_group else topic


class MqttConsumer:
    """Owns the broker session and feeds every reading to ``handler``."""

    def __init__(
        self,
        config: MqttConfig,
        handler: Handler,
        metrics: Metrics,
        extra_topics: tuple[str, ...] = (),
    ) -> None:
        self._config = config
        self._topics = [subscription_topic(config)] + [
            subscription_topic(config, topic) for topic in extra_topics
        ]
        self._handler = handler
        self._metrics = metrics
        self._subscribed = asyncio.Event()
        self._handling = 0
        # Bumped on every connect and disconnect. A PUBACK is only valid on the
        # connection its PUBLISH came in on: after a reconnect the broker may
        # reuse the packet id for another message, and acking that one would
        # lose it.
        self._connection_generation = 0
        self._stopping = False  # a disconnect we asked for is not a warning
        self._idle = asyncio.Event()
        self._idle.set()
        self._client = _BackoffClient(
            Backoff(config.reconnect_initial_s, config.reconnect_max_s),
            config.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=config.session_expiry_s,
            receive_maximum=config.receive_maximum,
            logger=logging.getLogger("sensord.mqtt.gmqtt"),
        )
        self._client.set_config({"reconnect_retries": -1})  # forever; the backoff paces it
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        authenticate(self._client, config)

    @property
    def connected(self) -> bool:
        """Whether the session is up and subscribed."""
        return bool(self._client.is_connected) and self._subscribed.is_set()

    async def start(self) -> None:
        """Connect (retrying with backoff) and wait until subscribed."""
        await connect(self._client, self._config, self._client.backoff, "consumer")
        await self._subscribed.wait()

    async def stop(self) -> None:
        """Close the session normally; the broker keeps it (and unacked messages) for us."""
        self._stopping = True
        self._client.stop_reconnect()
        if self._client.is_connected:
            await self._client.disconnect()
        self._metrics.mqtt_connected.set(0)

    def _on_connect(self, client: gmqtt.Client, session_present: int, rc: int, props: Any) -> None:
        self._connection_generation += 1
        client.failed_attempts = 0
        self._metrics.mqtt_connects.inc()
        # Subscribing again on a resumed session is harmless and repairs a
        # session the broker lost (restart without persistence, expiry).
        client.subscribe([gmqtt.Subscription(topic, qos=1) for topic in self._topics])
        log.info(
            "broker session up",
            extra={"session_present": bool(session_present), "subscriptions": self._topics},
        )

    def _on_subscribe(self, client: gmqtt.Client, mid: int, qos: Any, props: Any) -> None:
        granted = list(qos) if isinstance(qos, list | tuple) else [qos]
        if any(code >= 0x80 for code in granted):
            log.error("subscription refused by the broker", extra={"granted": granted})
            return
        self._subscribed.set()
        self._metrics.mqtt_connected.set(1)

    def _on_disconnect(self, client: gmqtt.Client, packet: Any, exc: Any = None) -> None:
        self._connection_generation += 1
        self._subscribed.clear()
        self._metrics.mqtt_connected.set(0)
        self._metrics.mqtt_disconnects.inc()
        if self._stopping:
            log.info("broker session closed")
        else:
            log.warning("broker session down", extra={"error": str(exc) if exc else None})

    async def _on_message(
        self, client: gmqtt.Client, topic: str | bytes, payload: bytes, qos: int, props: Any
    ) -> int:
        if isinstance(topic, bytes):  # gmqtt hands over a topic that is not UTF-8 as bytes
            topic = topic.decode("utf-8", "replace")
        self._handling += 1
        self._idle.clear()
        generation = self._connection_generation
        try:
            await self._handler(topic, payload)
        except SensordError as exc:
            raise NotAcknowledged(str(exc)) from exc
        else:
            if generation != self._connection_generation:
                # Committed, but the PUBLISH came on a connection that is gone;
                # the broker redelivers it and the unique key drops the copy.
                raise NotAcknowledged("connection changed while the message was being stored")
        finally:
            self._handling -= 1
            if not self._handling:
                self._idle.set()
        return _PUBACK_SUCCESS

    def backpressure(self, full: bool) -> None:
        """Stop (True) or resume (False) reading from the broker's socket.

        The broker does not keep to our Receive Maximum once it has a backlog,
        so this is the bound on what sits in memory unacknowledged. A pause
        longer than 2 x keepalive makes gmqtt drop the connection; the broker
        then redelivers everything unacknowledged, which the unique key absorbs.
        """
        # gmqtt (pinned 0.8.0) exposes no flow control; its transport is private.
        connection = getattr(self._client, "_connection", None)
        transport = getattr(connection, "_transport", None)
        if transport is None or transport.is_closing():
            return
        if full:
            transport.pause_reading()
            self._metrics.mqtt_read_pauses.inc()
        else:
            transport.resume_reading()
        self._metrics.mqtt_reading_paused.set(1 if full else 0)

    async def settled(self, timeout_s: float) -> bool:
        """Wait until no message handler is running (their PUBACKs are queued); False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        # The PUBACK goes out from the handler task's done-callback, one loop turn later.
        await asyncio.sleep(0)
        return True


def quiet_unacknowledged(loop: asyncio.AbstractEventLoop) -> None:
    """Keep the loop's error log for real errors.

    A message deliberately left unacknowledged ends gmqtt's PUBACK callback
    with NotAcknowledged; that is the designed path, counted elsewhere.
    """
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), NotAcknowledged):
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
