"""Retention, run by sensord's own scheduler (the Apache TimescaleDB build has no policies).

Readings: whole chunks older than ``readings_days`` are dropped with
``drop_chunks``. Dead letters: rows older than ``dead_letters_days`` deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from sensord.adapters.database import expire
from sensord.adapters.metrics import Metrics
from sensord.config import RetentionConfig

log = logging.getLogger("sensord.retention")


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one run removed."""

    chunks_dropped: int
    dead_letters_deleted: int


async def run_retention(
    pool: AsyncConnectionPool, config: RetentionConfig, metrics: Metrics
) -> RetentionResult:
    """Drop expired reading chunks and delete expired dead letters; counted in metrics."""
    try:
        chunks, deleted = await expire(pool, config.readings_days, config.dead_letters_days)
    except psycopg.Error as exc:
        metrics.retention_runs.labels("error").inc()
        metrics.database_errors.labels("retention").inc()
        log.warning("retention run failed; next run retries", extra={"error": str(exc)})
        raise
    metrics.retention_runs.labels("ok").inc()
    metrics.retention_chunks_dropped.inc(chunks)
    metrics.retention_dead_letters_deleted.inc(deleted)
    log.info("retention run", extra={"chunks_dropped": chunks, "dead_letters_deleted": deleted})
    return RetentionResult(chunks, deleted)
