"""Backoff grows, caps and jitters within bounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sensord.core.backoff import Backoff


def test_grows_then_caps() -> None:
    backoff = Backoff(initial_s=0.5, maximum_s=4.0, factor=2.0, jitter=0.0)
    assert [backoff.delay(n, lambda: 0.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@given(
    attempt=st.integers(min_value=-5, max_value=10_000),
    draw=st.floats(min_value=0, max_value=0.999),
)
def test_delay_stays_within_the_jitter_band(attempt: int, draw: float) -> None:
    backoff = Backoff(initial_s=0.1, maximum_s=30.0, jitter=0.5)
    delay = backoff.delay(attempt, lambda: draw)
    assert 0.05 - 1e-9 <= delay <= 30.0
    ceiling = min(30.0, 0.1 * 2 ** min(max(attempt, 1) - 1, 64))  # this attempt's own band
    assert ceiling / 2 - 1e-9 <= delay <= ceiling + 1e-9
