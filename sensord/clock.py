"""The wall and monotonic clocks, injected so that tests can drive time (ManualClock)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where services read the time; the core never reads it."""

    def now(self) -> datetime:
        """Wall time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The real clocks."""

    def now(self) -> datetime:
        """Wall time, timezone-aware UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()


class ManualClock:
    """Clocks that move only when told to: tests (and simulations) drive time with it.

    ``sleep`` advances both clocks by the delay instead of waiting, and records it,
    so a retry or a timer paced by it runs at once and its delays can be checked.
    """

    def __init__(self, start: datetime | None = None, monotonic: float = 0.0) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._monotonic = monotonic
        self.slept: list[float] = []

    def now(self) -> datetime:
        """Wall time, timezone-aware UTC."""
        return self._now

    def monotonic(self) -> float:
        """Seconds since the clock's start, as advanced."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward (never back)."""
        if seconds < 0:
            raise ValueError("a clock never goes back")
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def set(self, at: datetime) -> None:
        """Move both clocks forward to wall time ``at``."""
        self.advance((at - self._now).total_seconds())

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds``, record it, and let other tasks run once."""
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)
