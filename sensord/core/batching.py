"""Batching policy for the writer: by size and by age, with a hard bound on what is pending.

Pure and single-threaded: the caller passes the monotonic time in. Items are
*pending* from :meth:`Batcher.add` until :meth:`Batcher.release` of the batch
that carried them, so the bound covers both the batch being filled and the
batches being written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sensord.errors import CapacityError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When a batch is cut, and how much may be pending in all."""

    max_items: int = 5_000
    max_age_s: float = 0.2
    capacity: int = 20_000

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_age_s <= 0 or self.capacity < self.max_items:
            raise ValueError("need max_items >= 1, max_age_s > 0 and capacity >= max_items")


@dataclass(slots=True)
class Batch(Generic[T]):
    """Items cut together; written and acknowledged as one transaction."""

    number: int
    opened_at: float
    items: list[T] = field(default_factory=list)


class Batcher(Generic[T]):
    """Accumulates items into batches; says when one is due and how long until it is."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._open: Batch[T] | None = None
        self._cut = 0
        self._in_flight = 0

    @property
    def pending(self) -> int:
        """Items added and not yet released: the open batch plus the batches being written."""
        return self._in_flight + (len(self._open.items) if self._open else 0)

    @property
    def open_batch(self) -> Batch[T] | None:
        """The batch currently accepting items, if any."""
        return self._open

    def add(self, item: T, now: float) -> Batch[T]:
        """Put an item in the open batch and return that batch.

        Raises CapacityError when the bound is reached; the item is then not
        taken and the caller must leave it unacknowledged.
        """
        if self.pending >= self.policy.capacity:
            raise CapacityError(f"{self.pending} items pending, capacity {self.policy.capacity}")
        batch = self._open
        if batch is None:
            self._cut += 1
            batch = self._open = Batch(self._cut, now)
        batch.items.append(item)
        return batch

    def due(self, now: float) -> bool:
        """Whether the open batch should be cut now (full or old enough)."""
        batch = self._open
        if batch is None:
            return False
        return len(batch.items) >= self.policy.max_items or (
            now - batch.opened_at >= self.policy.max_age_s
        )

    def seconds_until_due(self, now: float) -> float | None:
        """How long the open batch may still wait; None when there is nothing to write."""
        batch = self._open
        if batch is None:
            return None
        if len(batch.items) >= self.policy.max_items:
            return 0.0
        return max(0.0, batch.opened_at + self.policy.max_age_s - now)

    def take(self) -> Batch[T] | None:
        """Cut the open batch for writing; its items stay pending until released."""
        batch, self._open = self._open, None
        if batch is not None:
            self._in_flight += len(batch.items)
        return batch

    def release(self, batch: Batch[T]) -> None:
        """The batch is settled (committed, or abandoned unacknowledged)."""
        if len(batch.items) > self._in_flight:
            raise ValueError(f"batch {batch.number} was not taken from this batcher")
        self._in_flight -= len(batch.items)
