"""Exponential backoff with full jitter, for reconnects and write retries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (1-based): ``initial * factor**(attempt-1)``, capped.

    Jitter draws the delay uniformly from [(1 - jitter) * d, d] so that many
    instances restarted together do not retry in lock-step.
    """

    initial_s: float = 0.5
    maximum_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, uniform: Callable[[], float]) -> float:
        """The delay for this attempt; ``uniform`` returns a number in [0, 1)."""
        exponent = min(max(attempt, 1) - 1, 64)
        ceiling = min(self.maximum_s, self.initial_s * self.factor**exponent)
        return ceiling * (1 - self.jitter * uniform())
