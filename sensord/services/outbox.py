"""The outbox relay: delivers what order transactions queued, marks it sent, retries the rest.

Rows are claimed ``FOR UPDATE SKIP LOCKED`` with a lease (several instances
share the work, none sends a row another is sending, and no transaction stays
open while sending), then marked sent after the broker's PUBACK or the
webhook's 2xx. A crash between delivery and that commit sends the row again
once the lease expires: at least once, under the same
``message_id``/``Idempotency-Key``, which receivers deduplicate on. A failed
row waits ``retry_initial_s`` doubling up to ``retry_max_s``, and is never
given up (``sensord_outbox_oldest_age_seconds`` shows it stuck).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from sensord.adapters.metrics import Metrics
from sensord.adapters.mqtt_publisher import MqttPublisher
from sensord.adapters.outbox_store import claim_outbox, mark_failed, mark_sent
from sensord.adapters.webhooks import WebhookSender
from sensord.clock import Clock
from sensord.core.backoff import Backoff
from sensord.errors import SensordError
from sensord.services.polling import poll

log = logging.getLogger("sensord.outbox")


class OutboxRelay:
    """Moves outbox rows to the broker and the webhooks."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        publisher: MqttPublisher,
        webhooks: WebhookSender,
        clock: Clock,
        metrics: Metrics,
        *,
        batch: int,
        retry: Backoff,
        publish_timeout_s: float,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._webhooks = webhooks
        self._clock = clock
        self._metrics = metrics
        self._batch = batch
        self._retry = retry
        self._timeout = publish_timeout_s
        # Long enough that a row being sent is not claimed again meanwhile.
        self._lease_s = max(publish_timeout_s, webhooks.longest_timeout_s) + 30.0
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()

    async def run(self, interval_s: float, backoff: Backoff) -> None:
        """Deliver whenever woken, and at least every ``interval_s`` (other instances' rows)."""

        async def step() -> bool:
            return await self.deliver() >= self._batch

        await poll(
            step, self.wake, interval_s, backoff,
            metrics=self._metrics, operation="outbox", log=log, stop=self.stopping,
        )  # fmt: skip

    async def drain(self, task: asyncio.Task[None], timeout_s: float) -> None:
        """On shutdown: finish what is being sent (and any full batches), then stop.

        Cancelling mid-send would leave rows the broker already has leased but
        unmarked, to be sent a second time after the restart.
        """
        self.stopping.set()
        self.wake.set()
        await asyncio.wait({task}, timeout=timeout_s)

    async def deliver(self) -> int:
        """One batch of due rows; return how many were tried.

        Claim (a lease: ``next_attempt_at`` moves past the send timeout, commit),
        send with no transaction open, then record the outcome. A crash in
        between leaves the lease to expire and the row is sent again.
        """
        lease = timedelta(seconds=self._lease_s)
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            now = self._clock.now()
            # The broker down: MQTT rows are not attempted, so no backoff is spent on them.
            rows = await claim_outbox(
                cur, now, lease_until=now + lease, mqtt=self._publisher.connected,
                limit=self._batch,
            )  # fmt: skip
        if not rows:
            return 0
        results = await asyncio.gather(
            *(self._send(r.channel, r.destination, r.payload, r.idempotency_key) for r in rows)
        )
        now = self._clock.now()
        sent = [(now, row.id) for row, error in zip(rows, results, strict=True) if not error]
        failed = [
            (now + self._delay(row.attempts), error, row.id)
            for row, error in zip(rows, results, strict=True)
            if error
        ]
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await mark_sent(cur, sent)
            await mark_failed(cur, failed)
        for row, error in zip(rows, results, strict=True):
            outcome = (
                self._metrics.notification_failures if error else self._metrics.notifications_sent
            )
            outcome.labels(row.channel).inc()
        if failed:
            log.warning(
                "notifications not delivered; will retry",
                extra={"failed": len(failed), "first_error": failed[0][1]},
            )
        return len(rows)

    async def _send(self, channel: str, destination: str, payload: Any, key: str) -> str | None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            if channel == "mqtt":
                await self._publisher.publish(destination, body, self._timeout)
            else:
                stamp = int(self._clock.now().timestamp())
                await self._webhooks.send(destination, key, body, stamp)
        except SensordError as exc:
            return str(exc) or type(exc).__name__
        except Exception as exc:  # one bad row must not stop the relay: retried, logged
            log.error("notification failed unexpectedly", exc_info=exc)
            return f"{type(exc).__name__}: {exc}"
        return None

    def _delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=self._retry.delay(attempts, random.random))
