"""A database-driven worker loop: run a step until it runs dry, then sleep until woken."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

import psycopg

from sensord.adapters.metrics import Metrics
from sensord.core.backoff import Backoff


async def poll(
    step: Callable[[], Awaitable[bool]],
    wake: asyncio.Event,
    interval_s: float,
    backoff: Backoff,
    *,
    metrics: Metrics,
    operation: str,
    log: logging.Logger,
) -> None:
    """Repeat ``step`` while it reports more work; then wait ``interval_s`` or a ``wake``.

    A database error is counted under ``operation`` and retried with backoff:
    the work stays in the database, nothing is lost by waiting.
    """
    failures = 0
    while True:
        wake.clear()
        try:
            while await step():
                pass
            failures = 0
        except psycopg.Error as exc:
            failures += 1
            delay = backoff.delay(failures, random.random)
            metrics.database_errors.labels(operation).inc()
            log.warning(
                f"{operation}: database error; retrying",
                extra={"error": str(exc), "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval_s)
