"""Pieces the composition root wires: inbound routing, the systemd watchdog, wedge detection."""

from __future__ import annotations

import asyncio
import functools
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sensord.adapters.database import ReadingStore, make_pool
from sensord.adapters.metrics import Metrics
from sensord.adapters.systemd import Notifier, watchdog
from sensord.clock import ManualClock
from sensord.config import DatabaseConfig
from sensord.core.backoff import Backoff
from sensord.core.batching import Batcher, BatchPolicy
from sensord.core.messages import DecodeLimits, decode
from sensord.retry import Retry
from sensord.services.inbound import router
from sensord.services.ingest import IngestBuffer
from sensord.services.writer import Writer, wedged

PREFIX = "sensord/v1"


def test_readings_go_to_ingest_and_our_own_notifications_nowhere() -> None:
    seen: list[str] = []

    async def readings(topic: str, payload: bytes) -> None:
        seen.append(topic)

    async def scenario() -> None:
        handle = router(PREFIX, readings, None)
        await handle(f"{PREFIX}/jd01/smoke/SMK-1", b"{}")
        await handle(f"{PREFIX}/jd01/dispatch/ORG-1", b"{}")  # echoed back by <prefix>/+/+/+

    asyncio.run(scenario())
    assert seen == [f"{PREFIX}/jd01/smoke/SMK-1"]


class _Stop(Exception):
    pass


def test_the_watchdog_withholds_its_ping_while_a_writer_is_wedged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    address = str(tmp_path / "notify")
    clock = ManualClock()
    states = iter([[], ["writer-1"], []])  # healthy, wedged, healthy

    async def sleep(delay: float) -> None:
        await clock.sleep(delay)
        if len(clock.slept) == 3:
            raise _Stop

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        systemd.setblocking(False)
        with pytest.raises(_Stop):
            asyncio.run(watchdog(Notifier(address), lambda: next(states), sleep))
        pings = []
        while True:
            try:
                pings.append(systemd.recv(64))
            except BlockingIOError:
                break
    assert pings == [b"WATCHDOG=1", b"WATCHDOG=1"]
    assert clock.slept == [1.0, 1.0, 1.0]  # half of WatchdogSec


def test_a_writer_is_wedged_once_busy_with_one_batch_for_longer_than_the_limit() -> None:
    clock = ManualClock()
    metrics = Metrics(CollectorRegistry(), process=False)
    buffer = IngestBuffer(
        Batcher(BatchPolicy(10, 1.0, 100)),
        functools.partial(decode, limits=DecodeLimits()),
        dict,
        clock,
        metrics,
    )
    store = ReadingStore(make_pool(DatabaseConfig()))  # never opened: nothing is written
    retry = Retry(Backoff(), sleep=clock.sleep)
    writers = [Writer(f"writer-{n}", buffer, store, retry, clock, metrics) for n in range(2)]
    writers[1].busy_since = clock.monotonic()
    clock.advance(30.0)
    assert wedged(writers, clock, 30.0) == []
    clock.advance(0.1)
    assert wedged(writers, clock, 30.0) == ["writer-1"]
