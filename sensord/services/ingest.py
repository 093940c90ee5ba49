"""The ingest buffer: MQTT handlers put messages in, writers take batches out.

A handler returns only once the batch holding its message has committed, so
the MQTT adapter sends PUBACK strictly after commit. The buffer is bounded by
the batcher's capacity, which is at least the broker's in-flight window
(Receive Maximum): the window is the backpressure, and a message beyond the
bound is refused unacknowledged and counted, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

from sensord.adapters.metrics import Metrics
from sensord.adapters.mqtt import MqttConsumer
from sensord.clock import Clock
from sensord.config import Settings
from sensord.core.batching import Batch, Batcher, BatchPolicy
from sensord.core.messages import (
    DeadLetter,
    DecodeLimits,
    DeviceInfo,
    Reading,
    dead_letter,
    decode,
)
from sensord.errors import CapacityError, PayloadError, ShutdownError

log = logging.getLogger("sensord.ingest")


class Item(NamedTuple):
    """A message in the buffer: what it decoded to, and its raw form for a late refusal."""

    topic: str
    payload: bytes
    decoded: Reading | DeadLetter


Decode = Callable[[str, bytes, datetime, Mapping[str, DeviceInfo]], Reading]


class IngestBuffer:
    """Bounded hand-over between the MQTT handlers and the writers."""

    def __init__(
        self,
        batcher: Batcher[Item],
        decode: Decode,
        devices: Callable[[], Mapping[str, DeviceInfo]],
        clock: Clock,
        metrics: Metrics,
        dead_letter_max_bytes: int = 4_096,
    ) -> None:
        self._batcher = batcher
        self.dead_letter_max_bytes = dead_letter_max_bytes  # also bounds the writer's letters
        self._decode = decode
        self._devices = devices
        self._clock = clock
        self._metrics = metrics
        self._commits: dict[int, asyncio.Future[None]] = {}
        self._wake = asyncio.Event()
        self._accepting = True
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        # Told True when messages start waiting for space, False when none wait any
        # more; the MQTT adapter stops reading from the broker in between.
        self.on_pressure: Callable[[bool], None] = lambda full: None
        self.received = 0  # messages taken into batches; read by the metrics at scrape time

    async def handle(self, topic: str, payload: bytes) -> None:
        """Take one message; return once it is committed (reading or dead letter).

        Raises ShutdownError when the message was not taken (the daemon is
        stopping): the caller must then not acknowledge it.
        """
        if not self._accepting:
            self._metrics.refused.labels("shutdown").inc()
            raise ShutdownError("not accepting messages: shutting down")
        received_at = self._clock.now()
        decoded: Reading | DeadLetter
        try:
            decoded = self._decode(topic, payload, received_at, self._devices())
        except PayloadError as exc:
            decoded = dead_letter(
                received_at,
                topic,
                payload,
                exc.reason,
                exc.detail,
                exc.device_id,
                self.dead_letter_max_bytes,
            )
        item = Item(topic, payload, decoded)
        while True:
            try:
                batch = self._batcher.add(item, self._clock.monotonic())
                break
            except CapacityError:
                await self._wait_for_space()
        self.received += 1
        committed = self._commits.get(batch.number)
        if committed is None:
            committed = self._commits[batch.number] = asyncio.get_running_loop().create_future()
            self._wake.set()  # a writer may be idle, waiting for a first item
        elif len(batch.items) >= self._batcher.policy.max_items:
            self._wake.set()
        # Shared by the whole batch; only cancelled if the loop itself shuts down.
        await committed

    async def _wait_for_space(self) -> None:
        # Only reachable when the broker sends more than the Receive Maximum we
        # announced (Mosquitto 2.0 does whenever a backlog exists,
        # docs/benchmarks.md). The message waits here, in FIFO order, still
        # unacknowledged; the batcher's bound holds, and on_pressure(True)
        # stops reading from the broker until the waiters are served.
        if not self._accepting:
            self._metrics.refused.labels("shutdown").inc()
            raise ShutdownError("not accepting messages: shutting down")
        self._metrics.capacity_waits.inc()
        if not self._space_waiters:
            self.on_pressure(True)
        space = asyncio.get_running_loop().create_future()
        self._space_waiters.append(space)
        await space

    async def next_batch(self) -> Batch[Item] | None:
        """Wait until a batch is due and cut it; None once stopped and empty."""
        while True:
            now = self._clock.monotonic()
            if self._batcher.due(now) or (not self._accepting and self._batcher.open_batch):
                return self._batcher.take()
            if not self._accepting:
                return None
            wait = self._batcher.seconds_until_due(now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def settle(self, batch: Batch[Item], error: BaseException | None = None) -> None:
        """Release the batch's handlers: acknowledged if ``error`` is None, else left unacked."""
        self._batcher.release(batch)
        if self._space_waiters:
            for _ in range(min(len(batch.items), len(self._space_waiters))):
                waiter = self._space_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
            if not self._space_waiters:
                self.on_pressure(False)
        committed = self._commits.pop(batch.number)
        if committed.done():  # cancelled with the loop
            return
        if error is None:
            committed.set_result(None)
        else:
            committed.set_exception(error)
            committed.exception()  # retrieved here; each handler re-raises it

    def stop_accepting(self) -> None:
        """Refuse new messages from now on and cut what is open for a final flush."""
        self._accepting = False
        self._wake.set()

    def abandon(self, reason: str) -> int:
        """Fail every handler still waiting (nothing was committed for them); return how many."""
        error = ShutdownError(reason)
        count = 0
        while (batch := self._batcher.take()) is not None:
            count += len(batch.items)
            self.settle(batch, error)
        for number, committed in list(self._commits.items()):
            if not committed.done():
                committed.set_exception(error)
                committed.exception()
            del self._commits[number]
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()
        return count

    @property
    def pending(self) -> int:
        """Messages taken and not yet settled."""
        return self._batcher.pending


def build_buffer(
    settings: Settings,
    devices: Callable[[], Mapping[str, DeviceInfo]],
    clock: Clock,
    metrics: Metrics,
) -> IngestBuffer:
    """The buffer with the configured batching and decode limits, sampled by the metrics."""
    ingest = settings.ingest
    limits = DecodeLimits(
        ingest.max_payload_bytes,
        timedelta(seconds=ingest.max_future_s),
        timedelta(days=ingest.max_past_days),
    )
    batcher: Batcher[Item] = Batcher(
        BatchPolicy(ingest.batch_max_items, ingest.batch_max_age_ms / 1000, ingest.capacity)
    )
    buffer = IngestBuffer(
        batcher,
        functools.partial(decode, limits=limits, prefix=settings.mqtt.topic_prefix),
        devices,
        clock,
        metrics,
        ingest.dead_letter_max_bytes,
    )
    metrics.sample_ingest(lambda: buffer.received, lambda: buffer.pending)
    return buffer


async def drain(
    buffer: IngestBuffer,
    writing: list[asyncio.Task[None]],
    consumer: MqttConsumer,
    timeout_s: float,
) -> bool:
    """Flush and acknowledge what is buffered; what cannot be, stays unacked for redelivery."""
    buffer.stop_accepting()
    _, late = await asyncio.wait(writing, timeout=timeout_s)
    for task in late:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*late, return_exceptions=True)
    left = buffer.abandon("stopped before the database accepted the batch")
    await consumer.settled(timeout_s=2.0)
    if late or left:
        log.warning(
            "stopped with messages unacknowledged; the broker redelivers them next session",
            extra={"unacknowledged": left},
        )
    return not late and not left
