"""Writer loops: take due batches from the ingest buffer, commit them, release their acks.

A transient database failure is retried with backoff, indefinitely: while it
lasts nothing is acknowledged, the buffer fills up to the broker's in-flight
window and the broker holds the rest in the session. A reading the database
refuses as data is isolated inside the batch's transaction (the store bisects
under savepoints) and becomes a ``storage_rejected`` dead letter with its raw
bytes; the rest of the batch, and the alerts its readings raise, commit
together, and the refused reading raises none.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from sensord.adapters.database import InTransaction, ReadingStore, Refused, WriteResult
from sensord.adapters.metrics import Metrics
from sensord.clock import Clock
from sensord.core.batching import Batch
from sensord.core.messages import DeadLetter, Reading, dead_letter, truncated
from sensord.errors import SensordError, ShutdownError, StorageUnavailable
from sensord.retry import Retry
from sensord.services.alerts import AlertPipeline, AlertTurn
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
            turn = self._alerts.turn() if self._alerts else None
            self.busy_since = self._clock.monotonic()
            try:
                if turn is not None:
                    await turn.ready()
                await self._commit(batch, turn)
                if turn is not None and turn.work is not None and self._alerts is not None:
                    self._alerts.committed(turn.work)
            except BaseException as exc:
                # The batch's handlers must fail (no PUBACK), whatever stopped the write.
                reason = exc if isinstance(exc, SensordError) else ShutdownError(repr(exc))
                self._buffer.settle(batch, reason)
                raise
            finally:
                self.busy_since = None
                if turn is not None:
                    turn.finish()
            self._buffer.settle(batch)

    async def _commit(self, batch: Batch[Item], turn: AlertTurn | None) -> None:
        dead = [item.decoded for item in batch.items if isinstance(item.decoded, DeadLetter)]
        items = [item for item in batch.items if isinstance(item.decoded, Reading)]
        readings = [item.decoded for item in items if isinstance(item.decoded, Reading)]
        keep = self._buffer.dead_letter_max_bytes

        def refused(index: int, error: str) -> DeadLetter:
            item, reading = items[index], readings[index]
            return dead_letter(
                reading.received_at,
                item.topic,
                item.payload,
                "storage_rejected",
                error,
                reading.device_id,
                keep,
            )

        started = self._clock.monotonic()
        result = await self._write_retrying(
            readings, dead, turn.apply if turn is not None else None, refused
        )
        if result.refused:
            log.warning(
                "readings refused by the database, dead-lettered",
                extra={
                    "batch": batch.number,
                    "refused": len(result.refused),
                    "splits": result.splits,
                    "error": result.refused[0].detail,
                },
            )
        self._metrics.write_splits.inc(result.splits)
        self._record(result, [*dead, *result.refused], len(batch.items), started, readings)

    async def _write_retrying(
        self,
        readings: Sequence[Reading],
        dead: Sequence[DeadLetter],
        also: InTransaction | None = None,
        refused: Refused | None = None,
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
            lambda: self._store.write(readings, dead, also, refused),
            on=StorageUnavailable,
            failed=failed,
        )

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
        for letter in dead:
            if truncated(letter):
                metrics.dead_letters_truncated.labels(letter.reason).inc()
                metrics.dead_letter_dropped_bytes.inc(letter.payload_size - len(letter.payload))
        if readings:
            oldest = min(reading.ts for reading in readings)
            metrics.lag_seconds.observe(max(0.0, (self._clock.now() - oldest).total_seconds()))


def wedged(writers: Sequence[Writer], clock: Clock, stuck_after_s: float) -> list[str]:
    """The writers busy with one batch for longer than ``stuck_after_s``."""
    now = clock.monotonic()
    return [
        w.name for w in writers if w.busy_since is not None and now - w.busy_since > stuck_after_s
    ]
