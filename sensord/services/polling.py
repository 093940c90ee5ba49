"""A database-driven worker loop: run a step until it runs dry, then sleep until woken."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg

from sensord.adapters.metrics import Metrics
from sensord.core.backoff import Backoff
from sensord.retry import Retry, Stopped


async def poll(
    step: Callable[[], Awaitable[bool]],
    wake: asyncio.Event,
    interval_s: float,
    backoff: Backoff | Retry,
    *,
    metrics: Metrics,
    operation: str,
    log: logging.Logger,
    stop: asyncio.Event | None = None,
) -> None:
    """Repeat ``step`` while it reports more work; then wait ``interval_s`` or a ``wake``.

    Returns once ``stop`` is set (and ``wake`` set to end the wait), after the
    step under way and any full batches after it.

    A database error is counted under ``operation`` and retried with backoff:
    the work stays in the database, nothing is lost by waiting. Any other
    error is a bug; it is logged with its traceback, counted in
    ``sensord_loop_errors_total`` and retried the same way. A ``stop`` during
    the backoff pause ends the loop at once.
    """
    retry = Retry.of(backoff).with_stop(stop)
    stop = stop or asyncio.Event()

    def failed(attempt: int, delay: float, exc: BaseException) -> None:
        if isinstance(exc, psycopg.Error):
            metrics.database_errors.labels(operation).inc()
            log.warning(
                f"{operation}: database error; retrying",
                extra={"error": str(exc), "retry_in_s": round(delay, 2)},
            )
        else:
            metrics.loop_errors.labels(operation).inc()
            log.error(
                f"{operation}: unexpected error; retrying",
                extra={"retry_in_s": round(delay, 2)},
                exc_info=exc,
            )

    async def drain() -> None:
        while await step():
            pass

    while not stop.is_set():
        wake.clear()
        try:
            # A loop boundary: ingest must not stop with this loop. Failures count
            # consecutively within one drain, and reset once a drain ran dry.
            await retry.call(drain, on=Exception, failed=failed)
        except Stopped:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval_s)
