"""The worker's Faust and runtime tuning: GC settings, the raw event schema, bulk takes, the
fetch loop while partitions are paused for a full buffer."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import faust
import pytest
from faust.transport.consumer import Consumer
from faust.types import TP, Message

from leadscore.streamer import gc_tuning
from leadscore.streamer.faust_fastpath import (
    PAUSED_POLL_S,
    paused_fetch_patches,
    raw_schema,
    take_events,
)


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_freezes_the_heap_and_spaces_out_young_passes(restore_gc: None) -> None:
    _, gen1, gen2 = gc.get_threshold()
    gc_tuning.tune(12_345)
    assert gc.get_threshold() == (12_345, gen1, gen2)
    assert gc.get_freeze_count() > 1000


def test_tune_with_zero_keeps_pythons_settings(restore_gc: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    gc_tuning.tune(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_raw_schema_events_carry_the_message_bytes() -> None:
    app = faust.App("raw-schema-test", broker="memory://")
    decode = raw_schema().compile(app)
    for key, value in ((b"L-1", b'{"a": 1}'), (None, b"\xff not json"), (b"L-2", None)):
        msg = Message("leads.web", 0, 7, 0.0, 0, {}, key, value, None)
        event = await decode(msg)
        assert event.key == key
        assert event.value == value
        assert event.message is msg


async def test_take_events_batches_what_is_queued_and_acks_after_processing() -> None:
    app = faust.App("take-events-test", broker="kafka://127.0.0.1:1", value_serializer="raw")
    topic = app.topic("leads.web", value_type=bytes)
    batches: list[list[bytes]] = []
    acked_before: list[list[bool]] = []
    previous: list = []

    @app.agent(topic)
    async def agent(stream: faust.StreamT) -> AsyncIterator[int]:
        async for batch in take_events(stream, 4, 0.05):
            # The previous batch is acked once this one is asked for; this one is not yet.
            acked_before.append([e.message.acked for e in previous + batch])
            previous[:] = batch
            batches.append([e.value for e in batch])
            yield len(batch)

    async with agent.test_context() as ag:
        for i in range(6):
            await ag.put(str(i).encode(), wait=False)
        for _ in range(100):
            if sum(map(len, batches)) == 6:
                break
            await asyncio.sleep(0.01)
    assert batches == [[b"0", b"1", b"2", b"3"], [b"4", b"5"]]
    assert acked_before == [[False] * 4, [True] * 4 + [False] * 2]


async def test_take_events_drops_an_older_generations_events_without_acking_them() -> None:
    # After a rebalance the consumer's acked offsets of a partition start empty: an ack of a
    # stale event would let the next commit skip events the new generation has not processed.
    app = faust.App("take-events-stale", broker="kafka://127.0.0.1:1", value_serializer="raw")
    topic = app.topic("leads.web", value_type=bytes)
    batches: list[list[bytes]] = []

    @app.agent(topic)
    async def agent(stream: faust.StreamT) -> AsyncIterator[int]:
        # A long wait: every put below lands in one batch, checked after the last one.
        async for batch in take_events(stream, 10, 0.5):
            batches.append([e.value for e in batch])
            yield len(batch)

    async with agent.test_context() as ag:
        app.consumer_generation_id = 1
        stale = [await ag.put(f"old-{i}".encode(), wait=False) for i in range(3)]
        app.consumer_generation_id = 2
        fresh = [await ag.put(f"new-{i}".encode(), wait=False) for i in range(2)]
        for _ in range(200):
            if batches:
                break
            await asyncio.sleep(0.01)
    assert batches == [[b"new-0", b"new-1"]]
    assert [e.message.generation_id for e in stale] == [1, 1, 1]
    assert [e.message.acked for e in stale] == [False] * 3
    assert all(e.message.generation_id == 2 for e in fresh)


def _paused_consumer(app_id: str, active: set[TP], paused: set[TP]) -> Any:
    """A (not started) Faust consumer whose ``paused`` partitions are paused for a full
    stream buffer, as ``Consumer.on_buffer_full`` leaves them."""
    consumer = faust.App(app_id, broker="kafka://127.0.0.1:1").consumer
    consumer._active_partitions = set(active) | set(paused)
    for tp in paused:
        consumer.on_buffer_full(tp)
    return consumer


async def test_fetch_loop_asks_again_soon_while_a_partition_is_paused_for_a_full_buffer() -> None:
    timeouts: list[float] = []

    async def faust_wait(self: Any, timeout: float) -> tuple[dict, set[TP]]:
        timeouts.append(timeout)
        return {}, self._get_active_partitions()

    wait_next, on_drop = paused_fetch_patches(faust_wait, Consumer.on_buffer_drop)
    paused, active = TP("leads.web", 0), TP("leads.web", 1)
    consumer = _paused_consumer("paused-fetch", {active}, {paused})
    assert consumer._get_active_partitions() == {active}
    await wait_next(consumer, 1.0)
    assert timeouts == [PAUSED_POLL_S]
    on_drop(consumer, paused)
    await wait_next(consumer, 1.0)
    assert timeouts == [PAUSED_POLL_S, 1.0], "nothing paused: Faust's own wait"


async def test_fetch_loop_with_every_partition_paused_wakes_when_one_resumes() -> None:
    async def faust_wait(self: Any, timeout: float) -> tuple[dict, set[TP]]:
        raise AssertionError("Faust's wait would sleep a second with nothing active")

    wait_next, on_drop = paused_fetch_patches(faust_wait, Consumer.on_buffer_drop)
    tp = TP("leads.web", 0)
    consumer = _paused_consumer("paused-all", set(), {tp})
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(wait_next(consumer, 1.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    resumed_at = loop.time()
    on_drop(consumer, tp)
    records, _active = await asyncio.wait_for(waiting, 0.5)
    assert loop.time() - resumed_at < 0.5
    assert records == {}
    assert consumer._get_active_partitions() == {tp}
