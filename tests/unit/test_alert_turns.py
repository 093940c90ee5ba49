"""Batches take their rule-evaluation turn in cut order, evaluate once, and release the next."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sensord.adapters.metrics import Metrics
from sensord.core.messages import Reading
from sensord.core.rules.engine import Evaluation
from sensord.errors import StorageUnavailable
from sensord.services import alerts as alerts_module
from sensord.services.alerts import AlertPipeline, AlertWork

TS = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


class RecordingEngine:
    """Records what it is asked to evaluate; changes nothing (no alert rows to write)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def evaluate(self, readings: Sequence[Reading], context: object) -> Evaluation:
        self.batches.append([r.seq for r in readings])
        return Evaluation()


def reading(seq: int) -> Reading:
    return Reading(TS, TS, "SMK-1", "smoke", seq, smoke=False)


def pipeline(engine: RecordingEngine) -> AlertPipeline:
    context: Mapping[str, Any] = {}
    return AlertPipeline(engine, lambda _: context, Metrics(CollectorRegistry(), process=False))  # type: ignore[arg-type]


def test_a_batch_waits_for_the_previous_evaluation_and_evaluates_once() -> None:
    engine = RecordingEngine()

    async def scenario() -> None:
        alerts = pipeline(engine)
        first, second = alerts.turn(), alerts.turn()
        await first.ready()  # the first batch waits for nobody
        waiting = asyncio.create_task(second.ready())
        await asyncio.sleep(0)
        assert not waiting.done()
        await first.apply(None, [reading(1), reading(2)])  # type: ignore[arg-type]
        await first.apply(None, [reading(1)])  # type: ignore[arg-type]  # a retried write
        await waiting
        await second.apply(None, [reading(3)])  # type: ignore[arg-type]
        first.finish()
        second.finish()

    asyncio.run(scenario())
    assert engine.batches == [[1, 2], [3]]


def test_a_batch_given_up_before_evaluating_releases_the_next() -> None:
    engine = RecordingEngine()

    async def scenario() -> None:
        alerts = pipeline(engine)
        first, second = alerts.turn(), alerts.turn()
        waiting = asyncio.create_task(second.ready())
        first.finish()  # e.g. shutdown while the database was away
        await waiting

    asyncio.run(scenario())
    assert engine.batches == []


def test_a_batch_whose_predecessor_never_commits_gives_up_its_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wait for the previous commit happens inside the transaction, so it is bounded:
    past it the write fails as retryable (the transaction rolls back, releasing its rows)."""
    monkeypatch.setattr(alerts_module, "TURN_WAIT_S", 0.01)

    async def scenario() -> None:
        previous: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        work = AlertWork(Evaluation(), previous)
        with pytest.raises(StorageUnavailable, match=r"did not commit within 0\.01 s"):
            # Bounded here too: without the bound the wait never ends and this times out.
            await asyncio.wait_for(work.apply(None), 5)  # type: ignore[arg-type]
        assert not previous.cancelled()  # the predecessor's own commit is not disturbed

    asyncio.run(scenario())
