"""The background loop boundary: a failing step is retried, never ends the daemon."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from prometheus_client import CollectorRegistry

from sensord.adapters.metrics import Metrics
from sensord.core.backoff import Backoff
from sensord.services.polling import poll


def test_database_and_unexpected_errors_are_counted_and_retried() -> None:
    metrics = Metrics(CollectorRegistry(), process=False)
    failures: list[BaseException] = [psycopg.OperationalError("down"), RuntimeError("a bug")]
    done = asyncio.Event()

    async def step() -> bool:
        if failures:
            raise failures.pop(0)
        done.set()
        return False

    async def scenario() -> None:
        loop = asyncio.create_task(
            poll(
                step,
                asyncio.Event(),
                0.01,
                Backoff(0.001, 0.001),
                metrics=metrics,
                operation="outbox",
                log=logging.getLogger("test"),
            )
        )
        await asyncio.wait_for(done.wait(), 5)
        loop.cancel()

    asyncio.run(scenario())
    assert metrics.database_errors.labels("outbox")._value.get() == 1
    assert metrics.loop_errors.labels("outbox")._value.get() == 1


def test_a_stop_ends_the_backoff_pause_after_a_failure() -> None:
    metrics = Metrics(CollectorRegistry(), process=False)
    calls: list[int] = []

    async def scenario() -> None:
        failed = asyncio.Event()
        stop = asyncio.Event()

        async def step() -> bool:
            calls.append(1)
            failed.set()
            raise psycopg.OperationalError("down")

        loop = asyncio.create_task(
            poll(
                step,
                asyncio.Event(),
                3600.0,
                Backoff(3600.0, 3600.0),  # an hour's pause: only the stop can end it
                metrics=metrics,
                operation="outbox",
                log=logging.getLogger("test"),
                stop=stop,
            )
        )
        await failed.wait()
        stop.set()
        await asyncio.wait_for(loop, 30)  # a hang guard, not a timing

    asyncio.run(scenario())
    assert calls == [1]
    assert metrics.database_errors.labels("outbox")._value.get() == 1
