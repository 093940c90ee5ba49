"""The batching policy: bounded, and never loses or duplicates an item."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sensord.core.batching import Batch, Batcher, BatchPolicy
from sensord.errors import CapacityError


def test_cuts_by_size() -> None:
    batcher: Batcher[int] = Batcher(BatchPolicy(max_items=3, max_age_s=10, capacity=10))
    for n in range(3):
        assert not batcher.due(0.0)
        batcher.add(n, 0.0)
    assert batcher.due(0.0)
    assert batcher.seconds_until_due(0.0) == 0.0


def test_cuts_by_age() -> None:
    batcher: Batcher[int] = Batcher(BatchPolicy(max_items=100, max_age_s=0.2, capacity=100))
    assert batcher.seconds_until_due(5.0) is None
    batcher.add(1, 5.0)
    assert batcher.seconds_until_due(5.1) == pytest.approx(0.1)
    assert not batcher.due(5.19)
    assert batcher.due(5.2)


def test_capacity_counts_batches_being_written() -> None:
    batcher: Batcher[int] = Batcher(BatchPolicy(max_items=2, max_age_s=1, capacity=2))
    batcher.add(1, 0)
    batcher.add(2, 0)
    batch = batcher.take()
    assert batch is not None
    with pytest.raises(CapacityError):
        batcher.add(3, 0)
    batcher.release(batch)
    batcher.add(3, 0)
    assert batcher.pending == 1


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(max_items=10, capacity=5)


class BatcherMachine(RuleBasedStateMachine):
    """Any interleaving of add/take/release: every accepted item is delivered exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = BatchPolicy(max_items=4, max_age_s=1.0, capacity=9)
        self.batcher: Batcher[int] = Batcher(self.policy)
        self.now = 0.0
        self.next_item = 0
        self.accepted: list[int] = []
        self.delivered: list[int] = []
        self.in_flight: list[Batch[int]] = []

    @rule(advance=st.floats(min_value=0, max_value=0.6))
    def add(self, advance: float) -> None:
        self.now += advance
        item = self.next_item
        self.next_item += 1
        try:
            self.batcher.add(item, self.now)
        except CapacityError:
            assert self.batcher.pending >= self.policy.capacity
        else:
            self.accepted.append(item)

    @rule()
    def take(self) -> None:
        batch = self.batcher.take()
        if batch is not None:
            assert batch.items, "an empty batch is never cut"
            self.delivered.extend(batch.items)
            self.in_flight.append(batch)

    @precondition(lambda self: self.in_flight)
    @rule(index=st.integers(min_value=0, max_value=10))
    def release(self, index: int) -> None:
        self.batcher.release(self.in_flight.pop(index % len(self.in_flight)))

    @invariant()
    def bounded(self) -> None:
        assert self.batcher.pending <= self.policy.capacity

    @invariant()
    def nothing_lost_or_duplicated(self) -> None:
        open_batch = self.batcher.open_batch
        waiting = open_batch.items if open_batch else []
        assert sorted(self.delivered + waiting) == self.accepted
        assert len(set(self.delivered)) == len(self.delivered)
        in_flight = sum(len(batch.items) for batch in self.in_flight)
        assert self.batcher.pending == in_flight + len(waiting)

    @invariant()
    def due_when_full_or_old(self) -> None:
        open_batch = self.batcher.open_batch
        if open_batch is None:
            assert not self.batcher.due(self.now)
        elif len(open_batch.items) >= self.policy.max_items:
            assert self.batcher.due(self.now)
        else:  # not full: due exactly when it is old enough
            old = self.now - open_batch.opened_at >= self.policy.max_age_s
            assert self.batcher.due(self.now) == old


TestBatcherMachine = BatcherMachine.TestCase
