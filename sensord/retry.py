"""Retry with backoff: the one loop that every adapter and service retries with.

Delays come from :class:`~sensord.core.backoff.Backoff` (full jitter); the jitter
source, the sleep and the stop event are injected, so a test drives the pauses
with a fake clock and sees every delay.

Why a helper and not tenacity: sensord's retries are supervisors as much as
calls. The registry follower resets its count once it is listening again, the
polling loops count consecutive failures of a whole drain, and a stop must end
the pause without another attempt. With Backoff already computing the delays,
tenacity would only contribute this loop, through callbacks on its own
``RetryCallState``, and a dependency.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sensord.core.backoff import Backoff

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
# Told (attempt, delay, error) after a failed attempt, before the pause: logs and counts.
OnFailure = Callable[[int, float, BaseException], None]


class Stopped(Exception):
    """The stop event was set before an attempt or during a pause."""


class Attempts:
    """Consecutive failures and the pause after each, for a loop that resets the count itself."""

    def __init__(self, retry: Retry) -> None:
        self._retry = retry
        self.count = 0

    def failed(self) -> float:
        """Count a failure; the delay before the next attempt."""
        self.count += 1
        return self._retry.backoff.delay(self.count, self._retry.uniform)

    def reset(self) -> None:
        """The operation got going again: the next failure is the first."""
        self.count = 0

    async def pause(self, delay: float) -> None:
        """Sleep ``delay``; raise Stopped if the stop event is (or becomes) set."""
        await self._retry.pause(delay)


class Retry:
    """How to wait between attempts: backoff, jitter, sleep and an optional stop event."""

    def __init__(
        self,
        backoff: Backoff,
        *,
        uniform: Callable[[], float] = random.random,
        sleep: Sleep = asyncio.sleep,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.backoff = backoff
        self.uniform = uniform
        self.sleep = sleep
        self.stop = stop

    @classmethod
    def of(cls, policy: Backoff | Retry) -> Retry:
        """``policy`` itself, or a Retry with the real sleep and jitter around a Backoff."""
        return policy if isinstance(policy, Retry) else cls(policy)

    def with_stop(self, stop: asyncio.Event | None) -> Retry:
        """The same waits, ended by ``stop`` (None: by this policy's own stop, if any)."""
        stop = stop if stop is not None else self.stop
        return Retry(self.backoff, uniform=self.uniform, sleep=self.sleep, stop=stop)

    def attempts(self) -> Attempts:
        """A fresh failure count on this policy."""
        return Attempts(self)

    @property
    def stopped(self) -> bool:
        """Whether the stop event is set."""
        return self.stop is not None and self.stop.is_set()

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        on: type[BaseException] | tuple[type[BaseException], ...],
        failed: OnFailure,
    ) -> T:
        """Await ``attempt()`` until it returns; after an ``on`` error, ``failed`` and a pause.

        Any other error propagates. Raises Stopped when the stop event is set
        before an attempt or during a pause.
        """
        attempts = self.attempts()
        while True:
            if self.stopped:
                raise Stopped
            try:
                return await attempt()
            except on as exc:
                delay = attempts.failed()
                failed(attempts.count, delay, exc)
                await self.pause(delay)

    async def pause(self, delay: float) -> None:
        """Sleep ``delay``, cut short by the stop event (then raise Stopped)."""
        if self.stop is None:
            await self.sleep(delay)
            return
        if self.stop.is_set():
            raise Stopped
        sleeping = asyncio.ensure_future(self.sleep(delay))
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({sleeping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            stopping.cancel()
        if self.stop.is_set():
            raise Stopped
