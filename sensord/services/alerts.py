"""Rule evaluation on the ingest path: each batch is evaluated when it is cut, in order,
and its alert changes commit in the batch's own transaction, in batch order.

Batches are cut one after the other, so evaluating at the cut sees every
device's readings in arrival order. Writers commit concurrently, but a batch
with alert work waits, inside its transaction and after its readings are
inserted, until the previous batch with alert work has committed: alert rows
change in the order the engine decided, and no two transactions take their
row locks in opposite orders.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from psycopg import AsyncCursor

from sensord.adapters.alert_store import apply_evaluation
from sensord.adapters.database import ReadingStore
from sensord.adapters.metrics import Metrics
from sensord.clock import Clock
from sensord.core.backoff import Backoff
from sensord.core.messages import Reading
from sensord.core.rules.engine import Evaluation, RuleEngine
from sensord.core.rules.model import RuleSet
from sensord.core.rules.state import Outcome
from sensord.errors import StorageUnavailable

log = logging.getLogger("sensord.alerts")


class AlertWork:
    """One batch's alert changes, and its place in the commit order."""

    def __init__(self, evaluation: Evaluation, previous: asyncio.Future[None] | None) -> None:
        self.evaluation = evaluation
        self._previous = previous
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def apply(self, cur: AsyncCursor[Any]) -> None:
        """Inside the batch's transaction: wait for the previous batch's turn, then write."""
        if self._previous is not None:
            await asyncio.shield(self._previous)
        await apply_evaluation(cur, self.evaluation)

    def finish(self) -> None:
        """The transaction committed (or was given up): the next batch may go."""
        if not self.done.done():
            self.done.set_result(None)


class AlertPipeline:
    """Owns the rule engine; turns cut batches into ordered alert work."""

    def __init__(
        self,
        engine: RuleEngine,
        context: Callable[[str], Mapping[str, Any]],
        metrics: Metrics,
    ) -> None:
        self._engine = engine
        self._context = context
        self._metrics = metrics
        self._last: asyncio.Future[None] | None = None
        self.on_fired: Callable[[], None] = lambda: None  # the dispatcher's wake-up

    def evaluate(self, readings: Sequence[Reading]) -> AlertWork | None:
        """Evaluate a batch now (call right after cutting it); None when it changes nothing."""
        evaluation = self._engine.evaluate(readings, self._context)
        self._metrics.rule_evaluations.inc(len(readings))
        return self._work(evaluation)

    def _work(self, evaluation: Evaluation) -> AlertWork | None:
        if not evaluation.effects and not evaluation.changed:
            return None
        work = AlertWork(evaluation, self._last)
        self._last = work.done
        return work

    def check_absence(
        self, now: datetime, devices: Mapping[str, tuple[str, int | None]]
    ) -> AlertWork | None:
        """Absence rules at ``now``; None when no device newly went silent."""
        evaluation = self._engine.check_absence(now, devices, self._context)
        return self._work(evaluation)

    def check_inspections(
        self, now: datetime, due: Mapping[str, tuple[str, date | None]]
    ) -> AlertWork | None:
        """Inspection rules at ``now``; None when nothing changed."""
        return self._work(self._engine.check_inspections(now, due, self._context))

    def committed(self, work: AlertWork) -> None:
        """Count what the committed batch did to alerts."""
        work.finish()
        outcomes = Counter(
            (e.outcome, e.rule.category, e.severity) for e in work.evaluation.effects
        )
        for (outcome, category, severity), count in outcomes.items():
            if outcome in (Outcome.FIRED, Outcome.REOPENED):
                self._metrics.alerts_fired.labels(category, severity).inc(count)
                self.on_fired()
            elif outcome is Outcome.CLEARED:
                self._metrics.alerts_cleared.labels(category).inc(count)

    def swap_rules(self, rules: RuleSet) -> None:
        """Use a new validated rule set from the next batch on."""
        self._engine.swap_rules(rules)


async def watch_absence(
    pipeline: AlertPipeline,
    devices: Callable[[], Mapping[str, tuple[str, int | None]]],
    store: ReadingStore,
    clock: Clock,
    interval_s: float,
    backoff: Backoff,
) -> None:
    """Every ``interval_s``, fire absence alerts; each check commits in the batch order."""
    while True:
        await asyncio.sleep(interval_s)
        await commit_work(pipeline, pipeline.check_absence(clock.now(), devices()), store, backoff)


async def commit_work(
    pipeline: AlertPipeline, work: AlertWork | None, store: ReadingStore, backoff: Backoff
) -> None:
    """Commit alert work that no batch carries (timers), retrying while the database is down."""
    if work is None:
        return
    try:
        attempt = 0
        while True:
            try:
                await store.write([], [], work.apply)
                break
            except StorageUnavailable as exc:
                attempt += 1
                delay = backoff.delay(attempt, random.random)
                log.warning(
                    "alert check: database unavailable, retrying",
                    extra={"retry_in_s": round(delay, 2), "error": str(exc)},
                )
                await asyncio.sleep(delay)
        pipeline.committed(work)
    finally:
        work.finish()
