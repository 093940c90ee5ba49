"""Writer loops: take due batches from the ingest buffer, commit them, release their acks.

A transient database failure is retried with backoff, indefinitely: while it
lasts nothing is acknowledged, the buffer fills up to the broker's in-flight
window and the broker holds the rest in the session. A batch the database
refuses as data is split row by row so that one bad row costs one dead letter
(with its raw bytes), not the batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from sensord.adapters.database import InTransaction, ReadingStore, WriteResult
from sensord.adapters.metrics import Metrics
from sensord.clock import Clock
from sensord.core.batching import Batch
from sensord.core.messages import DeadLetter, Reading
from sensord.errors import SensordError, ShutdownError, StorageRejected, StorageUnavailable
from sensord.retry import Retry
from sensord.services.alerts import AlertPipeline, AlertWork
from sensord.services.ingest import IngestBuffer, Item

log = logging.getLogger("sensord.writer")


class Writer:
    """One writer loop; several may share a buffer and a store."""

    def __init__(
        self,
        name: str,
        buffer: IngestBuffer,
        store: ReadingStore,
        retry: Retry,
        clock: Clock,
        metrics: Metrics,
        alerts: AlertPipeline | None = None,
    ) -> None:
        self.name = name
        self._alerts = alerts
        self._buffer = buffer
        self._store = store
        self._retry = retry
        self._clock = clock
        self._metrics = metrics
        self.busy_since: float | None = None

    async def run(self) -> None:
        """Write batches until the buffer is stopped and drained."""
        while (batch := await self._buffer.next_batch()) is not None:
            # No await between the cut and this: batches are evaluated in cut order.
            readings = _readings(batch)
            work = self._alerts.evaluate(readings) if self._alerts else None
            self.busy_since = self._clock.monotonic()
            try:
                await self._commit(batch, readings, work)
                if work is not None and self._alerts is not None:
                    self._alerts.committed(work)
            except BaseException as exc:
                # The batch's handlers must fail (no PUBACK), whatever stopped the write.
                reason = exc if isinstance(exc, SensordError) else ShutdownError(repr(exc))
                self._buffer.settle(batch, reason)
                raise
            finally:
                self.busy_since = None
                if work is not None:
                    work.finish()
            self._buffer.settle(batch)

    async def _commit(
        self, batch: Batch[Item], readings: list[Reading], work: AlertWork | None
    ) -> None:
        dead = [item.decoded for item in batch.items if isinstance(item.decoded, DeadLetter)]
        also = work.apply if work is not None else None
        started = self._clock.monotonic()
        try:
            result = await self._write_retrying(readings, dead, also)
        except StorageRejected as exc:
            log.warning(
                "batch refused by the database, writing row by row",
                extra={"batch": batch.number, "error": str(exc)},
            )
            result, dead = await self._write_row_by_row(batch.items, also)
        self._record(result, dead, len(batch.items), started, readings)

    async def _write_retrying(
        self,
        readings: Sequence[Reading],
        dead: Sequence[DeadLetter],
        also: InTransaction | None = None,
    ) -> WriteResult:
        def failed(attempt: int, delay: float, exc: BaseException) -> None:
            self._metrics.database_errors.labels("write").inc()
            self._metrics.write_retries.inc()
            log.warning(
                "database unavailable; batch stays unacknowledged",
                extra={
                    "writer": self.name,
                    "attempt": attempt,
                    "retry_in_s": round(delay, 2),
                    "error": str(exc),
                },
            )

        return await self._retry.call(
            lambda: self._store.write(readings, dead, also), on=StorageUnavailable, failed=failed
        )

    async def _write_row_by_row(
        self, items: Sequence[Item], also: InTransaction | None
    ) -> tuple[WriteResult, list[DeadLetter]]:
        stored = duplicates = 0
        dead: list[DeadLetter] = []
        for item in items:
            decoded = item.decoded
            if isinstance(decoded, DeadLetter):
                dead.append(decoded)
                continue
            try:
                one = await self._write_retrying([decoded], [])
            except StorageRejected as exc:
                dead.append(
                    DeadLetter(
                        decoded.received_at,
                        item.topic,
                        item.payload,
                        "storage_rejected",
                        str(exc),
                        decoded.device_id,
                    )
                )
                continue
            stored += one.stored
            duplicates += one.duplicates
        if dead or also is not None:
            await self._write_retrying([], dead, also)
        return WriteResult(stored, duplicates, len(dead)), dead

    def _record(
        self,
        result: WriteResult,
        dead: Sequence[DeadLetter],
        size: int,
        started: float,
        readings: Sequence[Reading],
    ) -> None:
        metrics = self._metrics
        metrics.commit_seconds.observe(self._clock.monotonic() - started)
        metrics.batch_size.observe(size)
        metrics.stored.inc(result.stored)
        metrics.duplicates.inc(result.duplicates)
        for reason, count in Counter(letter.reason for letter in dead).items():
            metrics.dead_letters.labels(reason).inc(count)
        if readings:
            oldest = min(reading.ts for reading in readings)
            metrics.lag_seconds.observe(max(0.0, (self._clock.now() - oldest).total_seconds()))


def wedged(writers: Sequence[Writer], clock: Clock, stuck_after_s: float) -> list[str]:
    """The writers busy with one batch for longer than ``stuck_after_s``."""
    now = clock.monotonic()
    return [
        w.name for w in writers if w.busy_since is not None and now - w.busy_since > stuck_after_s
    ]


def _readings(batch: Batch[Item]) -> list[Reading]:
    return [item.decoded for item in batch.items if isinstance(item.decoded, Reading)]
