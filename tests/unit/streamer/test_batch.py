"""The batch lifecycle as the worker runs it (``BatchRunner``), without a broker: records go
out per chunk, batches are acknowledged in order and only once delivered, a failed delivery
acknowledges nothing and is reported, and delivered events are confirmed in the store."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client import CollectorRegistry

from leadscore.features.memory import MemoryFeatureStore
from leadscore.model.rules import RuleScorer
from leadscore.settings import Settings
from leadscore.streamer.batch import BatchRunner
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.pipeline import Pipeline, topic_sources
from tests.fakes import TOPICS, FakeSend, batches, message


def runner(send: FakeSend, acks: list[list[int]], failures: list[BaseException]):
    store = MemoryFeatureStore(ordered=True)
    metrics = Metrics.create(CollectorRegistry())
    rules = RuleScorer.default()
    pipeline = Pipeline(
        store,
        lambda: rules,
        metrics,
        topic_sources=topic_sources(Settings(kafka_bootstrap="unused:9092").topic),
        max_future_ms=86_400_000,
        chunk=4,
        fallback=rules,
    )
    run = BatchRunner(
        pipeline,
        send,
        TOPICS,
        metrics,
        ack=lambda events: acks.append([m.offset for m in events]),
        to_message=lambda m: m,
        on_failure=failures.append,
    )
    return run, store, metrics


def scored_ids(send: FakeSend) -> list[str]:
    return [orjson.loads(v)["event_id"] for t, v in send.values if t == "leads.scores"]


async def test_every_batch_is_sent_delivered_and_acknowledged_in_order() -> None:
    send, acks, failures = FakeSend(), [], []
    run, store, metrics = runner(send, acks, failures)
    first = [message(i) for i in range(10)]
    second = [message(10, raw=b"{broken"), *(message(i, lead="L-2") for i in range(11, 15))]
    third = [message(15, lead="L-3")]
    await run.run(batches(first, second, third))
    assert acks == [list(range(10)), list(range(10, 15)), [15]]
    assert scored_ids(send) == [f"e{i}" for i in range(10)] + [f"e{i}" for i in range(11, 16)]
    assert [t for t, _ in send.values].count("leads.dlq") == 1
    assert failures == []
    # Counted once delivered.
    assert (
        metrics.registry.get_sample_value(
            "leadscore_events_total", {"source": "web", "outcome": "scored"}
        )
        == 15
    )
    assert not [k for k in store.pending if k[0] == "L-1"]


async def test_a_refused_delivery_acknowledges_nothing_and_is_reported_at_once() -> None:
    send, acks, failures = FakeSend(refuse=frozenset({"leads.scores"})), [], []
    run, _store, metrics = runner(send, acks, failures)
    await run.take([message(i) for i in range(5)])
    for _ in range(5):  # no further batch comes: the failure is heard all the same
        await asyncio.sleep(0)
    assert acks == [] and len(failures) == 1
    assert "refused" in str(failures[0])
    assert metrics.registry.get_sample_value("leadscore_publish_failures_total") == 1
    # A later batch is not acknowledged past the failed one either.
    with pytest.raises(Exception, match="refused"):
        await run.take([message(i) for i in range(5, 8)])
        await run.drain()
    assert acks == []


async def test_a_redelivered_batch_after_a_lost_delivery_is_scored_again() -> None:
    """The worker died before the first delivery finished: after a restart (a new runner on
    the same store) its events come again and are scored from the features they had."""
    send, acks, failures = FakeSend(refuse=frozenset({"leads.scores"})), [], []
    run, store, _m = runner(send, acks, failures)
    batch = [message(i) for i in range(6)]
    await run.take(batch)
    await asyncio.sleep(0)
    send2, acks2 = FakeSend(), []
    again = BatchRunner(
        run._pipeline,  # noqa: SLF001 - the same store and pipeline state, as after a restart
        send2,
        TOPICS,
        run._metrics,  # noqa: SLF001
        ack=lambda events: acks2.append([m.offset for m in events]),
        to_message=lambda m: m,
        on_failure=failures.append,
    )
    await again.run(batches(batch))
    assert scored_ids(send2) == [f"e{i}" for i in range(6)]
    assert acks2 == [list(range(6))]
    feats = await store.read("L-1")
    assert feats is not None and feats["web_page_views_1h"] == 3  # counted once each
