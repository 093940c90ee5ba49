"""The one retry helper, driven by a ManualClock: attempts, delays from Backoff, stops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sensord.adapters.database import wait_for_database
from sensord.clock import ManualClock
from sensord.core.backoff import Backoff
from sensord.retry import Retry, Stopped

BACKOFF = Backoff(0.5, 4.0)


def half() -> float:
    return 0.5


def flaky(failures: int, error: BaseException) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """An attempt that raises ``error`` ``failures`` times, then returns "done"."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise error
        return "done"

    return calls, attempt


def test_retries_until_success_with_the_backoff_delays() -> None:
    clock = ManualClock()
    retry = Retry(BACKOFF, uniform=half, sleep=clock.sleep)
    calls, attempt = flaky(5, ConnectionError("down"))
    seen: list[tuple[int, float, str]] = []

    result = asyncio.run(
        retry.call(
            attempt,
            on=ConnectionError,
            failed=lambda n, delay, exc: seen.append((n, delay, str(exc))),
        )
    )

    assert result == "done"
    assert calls == [1, 2, 3, 4, 5, 6]
    expected = [BACKOFF.delay(n, half) for n in range(1, 6)]
    assert expected == [0.375, 0.75, 1.5, 3.0, 3.0]  # 3/4 of 0.5 * 2**n, capped at 4
    assert clock.slept == expected
    assert seen == [(n, d, "down") for n, d in zip(range(1, 6), expected, strict=True)]
    assert clock.monotonic() == sum(expected)  # the fake clock is what the pauses moved


def test_an_error_it_does_not_retry_propagates_at_once() -> None:
    clock = ManualClock()
    retry = Retry(BACKOFF, uniform=half, sleep=clock.sleep)
    calls, attempt = flaky(1, ValueError("a bug"))

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(retry.call(attempt, on=ConnectionError, failed=lambda *_: None))
    assert calls == [1]
    assert clock.slept == []


def test_a_stop_during_the_pause_ends_the_retry_without_another_attempt() -> None:
    async def scenario() -> tuple[list[int], bool]:
        stop = asyncio.Event()
        # The real sleep, an hour long: only the stop can end it.
        retry = Retry(Backoff(3600.0, 3600.0), stop=stop)
        calls, attempt = flaky(10, ConnectionError("down"))
        failed = asyncio.Event()
        running = asyncio.create_task(
            retry.call(attempt, on=ConnectionError, failed=lambda *_: failed.set())
        )
        await failed.wait()
        stop.set()
        try:
            await asyncio.wait_for(running, 30)  # a hang guard, not a timing
        except Stopped:
            return calls, True
        return calls, False

    calls, stopped = asyncio.run(scenario())
    assert stopped
    assert calls == [1]


def test_a_stop_set_before_the_call_makes_no_attempt() -> None:
    async def scenario() -> list[int]:
        stop = asyncio.Event()
        stop.set()
        calls, attempt = flaky(0, ConnectionError())
        with pytest.raises(Stopped):
            await Retry(BACKOFF, stop=stop).call(attempt, on=ConnectionError, failed=print)
        return calls

    assert asyncio.run(scenario()) == []


def test_attempts_reset_starts_the_backoff_over() -> None:
    attempts = Retry(BACKOFF, uniform=half).attempts()
    assert [attempts.failed() for _ in range(3)] == [0.375, 0.75, 1.5]
    attempts.reset()
    assert attempts.failed() == 0.375
    assert attempts.count == 1


def test_the_database_wait_retries_until_stopped() -> None:
    """Nothing listens on port 1: every connect is refused; the third pause is stopped."""
    clock = ManualClock()

    async def scenario() -> bool:
        stop = asyncio.Event()

        async def sleep(delay: float) -> None:
            await clock.sleep(delay)
            if len(clock.slept) == 3:
                stop.set()

        retry = Retry(BACKOFF, uniform=half, sleep=sleep, stop=stop)
        return await wait_for_database("host=127.0.0.1 port=1 connect_timeout=1", retry)

    assert asyncio.run(scenario()) is False
    assert clock.slept == [0.375, 0.75, 1.5]
