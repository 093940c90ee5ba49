"""The ingest buffer on a ManualClock: batches cut by size at once, by age only when time says."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from sensord.adapters.metrics import Metrics
from sensord.clock import ManualClock
from sensord.core.batching import Batcher, BatchPolicy
from sensord.core.messages import DeadLetter, DecodeLimits, DeviceInfo, Reading, decode
from sensord.errors import ShutdownError
from sensord.services.ingest import IngestBuffer, Item

DEVICES = {"SMK-1": DeviceInfo("smoke", "jd01")}
TOPIC = "sensord/v1/jd01/smoke/SMK-1"
MAX_AGE_S = 60.0  # far beyond any real time the test takes: only the ManualClock reaches it


def payload(seq: int) -> bytes:
    return json.dumps({"ts": "2026-11-26T14:00:00.000+08:00", "seq": seq, "smoke": False}).encode()


def make_buffer(clock: ManualClock, max_items: int = 3) -> IngestBuffer:
    return IngestBuffer(
        Batcher(BatchPolicy(max_items, MAX_AGE_S, 100)),
        functools.partial(decode, limits=DecodeLimits()),
        lambda: DEVICES,
        clock,
        Metrics(CollectorRegistry(), process=False),
    )


async def settle_turns() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_full_batch_is_cut_without_time_passing() -> None:
    clock = ManualClock(datetime(2026, 11, 26, 6, 0, tzinfo=UTC))

    async def scenario() -> None:
        buffer = make_buffer(clock)
        handlers = [asyncio.create_task(buffer.handle(TOPIC, payload(n))) for n in range(3)]
        await settle_turns()
        batch = await buffer.next_batch()
        assert batch is not None
        seqs = [item.decoded.seq for item in batch.items if isinstance(item.decoded, Reading)]
        assert seqs == [0, 1, 2]
        assert clock.monotonic() == 0.0
        assert not any(h.done() for h in handlers)  # no PUBACK before the commit
        buffer.settle(batch)
        await asyncio.gather(*handlers)
        assert buffer.pending == 0 and buffer.received == 3

    asyncio.run(scenario())


def test_a_partial_batch_is_cut_once_the_clock_reaches_its_age() -> None:
    clock = ManualClock(datetime(2026, 11, 26, 6, 0, tzinfo=UTC))

    async def scenario() -> None:
        buffer = make_buffer(clock)
        handlers = [asyncio.create_task(buffer.handle(TOPIC, payload(n))) for n in range(2)]
        await settle_turns()
        waiting = asyncio.create_task(buffer.next_batch())
        clock.advance(MAX_AGE_S - 0.001)
        await settle_turns()
        assert not waiting.done()  # the clock has not reached the batch's age
        waiting.cancel()

        clock.advance(0.001)
        batch = await buffer.next_batch()  # due now: returns without waiting
        assert batch is not None and len(batch.items) == 2
        buffer.settle(batch, ShutdownError("the write failed"))
        for outcome in await asyncio.gather(*handlers, return_exceptions=True):
            assert isinstance(outcome, ShutdownError)  # left unacknowledged

    asyncio.run(scenario())


def test_an_undecodable_message_becomes_a_dead_letter_in_the_batch() -> None:
    clock = ManualClock(datetime(2026, 11, 26, 6, 0, tzinfo=UTC))

    async def scenario() -> Item:
        buffer = make_buffer(clock, max_items=1)
        handler = asyncio.create_task(buffer.handle(TOPIC, b"not json"))
        batch = await buffer.next_batch()
        assert batch is not None
        buffer.settle(batch)
        await handler
        return batch.items[0]

    item = asyncio.run(scenario())
    assert isinstance(item.decoded, DeadLetter)
    assert item.decoded.received_at == datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def test_after_stop_accepting_the_open_batch_is_flushed_and_new_messages_refused() -> None:
    clock = ManualClock(datetime(2026, 11, 26, 6, 0, tzinfo=UTC))

    async def scenario() -> None:
        buffer = make_buffer(clock)
        handler = asyncio.create_task(buffer.handle(TOPIC, payload(1)))
        await settle_turns()
        buffer.stop_accepting()
        batch = await buffer.next_batch()
        assert batch is not None and len(batch.items) == 1
        buffer.settle(batch)
        await handler
        assert await buffer.next_batch() is None
        with pytest.raises(ShutdownError):
            await buffer.handle(TOPIC, payload(2))

    asyncio.run(scenario())
