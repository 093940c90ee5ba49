"""Rule evaluation on the ingest path: each batch is evaluated inside its own transaction,
on the readings the database took, in cut order, and its alert changes commit with them.

A batch takes its turn (:meth:`AlertPipeline.turn`) when it is cut. Before
its transaction starts, it waits until the previous batch has been evaluated;
inside the transaction, once its readings are in (a reading the database
refuses is left out, so it can raise nothing), the engine evaluates it once —
a retried write reuses that evaluation. Waiting before the transaction, not
inside it, means no batch holds row locks while waiting for an earlier one, so
waits only ever point backwards. A batch with alert work then waits, inside
its transaction, until the previous batch with alert work has committed: alert
rows change in the order the engine decided, and no two transactions take
their row locks in opposite orders.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from psycopg import AsyncCursor
from psycopg_pool import AsyncConnectionPool

from sensord.adapters.alert_store import (
    apply_evaluation,
    load_count_history,
    load_last_seen,
    load_recent,
    load_states,
)
from sensord.adapters.database import ReadingStore
from sensord.adapters.directory import RegistryDirectory
from sensord.adapters.metrics import Metrics
from sensord.adapters.rule_files import load_rules
from sensord.clock import Clock
from sensord.config import Settings
from sensord.core.messages import Reading
from sensord.core.rules.engine import Evaluation, RuleEngine
from sensord.core.rules.fields import context_fields
from sensord.core.rules.model import RuleSet
from sensord.core.rules.state import Outcome
from sensord.errors import StorageUnavailable
from sensord.paths import rules_directory
from sensord.retry import Retry

log = logging.getLogger("sensord.alerts")
# How long a batch's transaction waits for the previous batch's commit (normally
# milliseconds) before it rolls back and retries; see AlertWork.apply.
TURN_WAIT_S = 2.0


class AlertWork:
    """One batch's alert changes, and its place in the commit order."""

    def __init__(self, evaluation: Evaluation, previous: asyncio.Future[None] | None) -> None:
        self.evaluation = evaluation
        self._previous = previous
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def apply(self, cur: AsyncCursor[Any]) -> None:
        """Inside the batch's transaction: wait for the previous batch's turn, then write.

        The wait is bounded: this transaction may hold a row the previous batch needs (the
        same reading redelivered into both, after the previous one's transaction failed),
        and PostgreSQL cannot see a wait in the application, so an unbounded wait here could
        deadlock. Past the bound this transaction rolls back, freeing its rows, and the
        writer retries it with backoff (same evaluation) as for a database outage.
        """
        if self._previous is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._previous), TURN_WAIT_S)
            except TimeoutError:
                raise StorageUnavailable(
                    f"the previous batch did not commit within {TURN_WAIT_S:g} s"
                ) from None
        await apply_evaluation(cur, self.evaluation)

    def finish(self) -> None:
        """The transaction committed (or was given up): the next batch may go."""
        if not self.done.done():
            self.done.set_result(None)


class AlertTurn:
    """One batch's place in the evaluation order; evaluates it once, in its transaction."""

    def __init__(self, pipeline: AlertPipeline, previous: asyncio.Future[None] | None) -> None:
        self._pipeline = pipeline
        self._previous = previous
        self.evaluated: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.work: AlertWork | None = None

    async def ready(self) -> None:
        """Outside any transaction: wait until the previous batch has been evaluated."""
        if self._previous is not None:
            await asyncio.shield(self._previous)

    async def apply(self, cur: AsyncCursor[Any], readings: Sequence[Reading]) -> None:
        """Inside the batch's transaction, given the readings that went in."""
        if not self.evaluated.done():
            self.work = self._pipeline.evaluate(readings)
            self.evaluated.set_result(None)
        if self.work is not None:
            await self.work.apply(cur)

    def finish(self) -> None:
        """The transaction committed (or was given up): later batches may go."""
        if not self.evaluated.done():
            self.evaluated.set_result(None)
        if self.work is not None:
            self.work.finish()


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
        self._last_turn: asyncio.Future[None] | None = None
        self.on_fired: Callable[[], None] = lambda: None  # the dispatcher's wake-up

    def turn(self) -> AlertTurn:
        """A place in the evaluation order for a batch just cut (call with no await between)."""
        turn = AlertTurn(self, self._last_turn)
        self._last_turn = turn.evaluated
        return turn

    def evaluate(self, readings: Sequence[Reading]) -> AlertWork | None:
        """Evaluate readings now, in their batch's turn; None when they change nothing."""
        evaluation = self._engine.evaluate(readings, self._context)
        self._metrics.rule_evaluations.inc(len(readings))
        return self._work(evaluation)

    def _work(self, evaluation: Evaluation) -> AlertWork | None:
        if not evaluation.effects and not evaluation.changed and not evaluation.recurring:
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


async def build_pipeline(
    settings: Settings, pool: AsyncConnectionPool, directory: RegistryDirectory, metrics: Metrics,
    clock: Clock,
) -> AlertPipeline:  # fmt: skip
    """The rule engine, resumed from the persisted rule states and the stored readings.

    Raises RuleError when the rule files are invalid: fatal at start-up.
    """
    rules = load_rules(rules_directory(settings))
    horizon = timedelta(days=settings.rules.state_horizon_days)
    counted = {r.counts_category for r in rules.rules if r.counts_category}
    longest = max((r.window_s or 0 for r in rules.rules if r.type == "count"), default=0)
    async with pool.connection() as conn, conn.cursor() as cur:
        states = await load_states(cur)
        last_ts, last_received = await load_last_seen(cur, horizon)
        recent = await load_recent(cur, horizon)
        history = await load_count_history(cur, counted, timedelta(seconds=longest))
    log.info("rules loaded", extra={"rules": len(rules.rules), "states": len(states)})
    engine = RuleEngine(
        rules,
        states,
        last_ts,
        started_at=clock.now(),
        last_received=last_received,
        history=history,
        recent=recent,
        device_clock=settings.rules.clock == "device",
    )
    if settings.rules.clock == "device":
        log.warning(
            "rules.clock = device: rule windows run on device time, which a device can set;"
            " for accelerated simulations only"
        )
    return AlertPipeline(engine, snapshot_context_fields(directory), metrics)


def snapshot_context_fields(directory: RegistryDirectory) -> Callable[[str], Mapping[str, Any]]:
    """context_fields per device, cached for as long as the registry snapshot lasts."""
    cache: dict[str, Mapping[str, Any]] = {}
    current: list[object] = [None]

    def fields(device_id: str) -> Mapping[str, Any]:
        snapshot = directory.snapshot()
        if snapshot is not current[0]:
            cache.clear()
            current[0] = snapshot
        found = cache.get(device_id)
        if found is None:
            found = cache[device_id] = context_fields(snapshot.context(device_id))
        return found

    return fields


async def watch_absence(
    pipeline: AlertPipeline,
    directory: RegistryDirectory,
    store: ReadingStore,
    clock: Clock,
    interval_s: float,
    retry: Retry,
) -> None:
    """Every ``interval_s``, fire absence alerts; each check commits in the batch order."""
    while True:
        await asyncio.sleep(interval_s)
        work = pipeline.check_absence(clock.now(), directory.heartbeats())
        await commit_work(pipeline, work, store, retry)


async def commit_inspections(
    pipeline: AlertPipeline,
    directory: RegistryDirectory,
    store: ReadingStore,
    clock: Clock,
    retry: Retry,
) -> None:
    """The scheduled registry check: inspection dates against the inspection rules."""
    work = pipeline.check_inspections(clock.now(), directory.inspections_due())
    await commit_work(pipeline, work, store, retry)


async def commit_work(
    pipeline: AlertPipeline, work: AlertWork | None, store: ReadingStore, retry: Retry
) -> None:
    """Commit alert work that no batch carries (timers), retrying while the database is down."""
    if work is None:
        return

    def failed(attempt: int, delay: float, exc: BaseException) -> None:
        log.warning(
            "alert check: database unavailable, retrying",
            extra={"retry_in_s": round(delay, 2), "error": str(exc)},
        )

    try:
        await retry.call(
            lambda: store.write([], [], lambda cur, _: work.apply(cur)),
            on=StorageUnavailable,
            failed=failed,
        )
        pipeline.committed(work)
    finally:
        work.finish()
