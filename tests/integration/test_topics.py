"""``end_offsets``: where a partition really ends, also on a broker whose ListOffsets answer
stops at its last batch (the embedded Tansu: a reader that trusted it missed records)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, TopicPartition

from leadscore.infra.topics import end_offsets

from .helpers import read_to_end

pytestmark = pytest.mark.integration


async def _send_batches(bootstrap: str, topic: str, sizes: list[int], partition: int) -> None:
    """Each of ``sizes`` as one acknowledged produce request (one record batch)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=-1)
    await producer.start()
    try:
        n = 0
        for size in sizes:
            futures = []
            for _ in range(size):
                futures.append(
                    await producer.send(topic, b'{"n": %d}' % n, key=b"k", partition=partition)
                )
                n += 1
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


def test_end_offsets_count_every_acknowledged_record(settings_factory) -> None:
    s = settings_factory()
    topic = s.topic("scores")
    asyncio.run(_send_batches(s.kafka_bootstrap, topic, [50, 30], partition=0))
    asyncio.run(_send_batches(s.kafka_bootstrap, topic, [1], partition=2))

    ends = end_offsets(s, [(topic, p) for p in range(s.topic_partitions)])
    assert ends == {(topic, 0): 80, (topic, 1): 0, (topic, 2): 1, (topic, 3): 0}

    listed = Consumer({**s.kafka_client_config(), "group.id": "listed-end"})
    try:
        _low, high = listed.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        listed.close()
    # Not asserted: a Kafka broker answers 80. Printed, so a run shows which kind it met.
    print(f"ListOffsets(latest) answered {high} for a partition holding 80 records")

    assert sorted(r["n"] for r in read_to_end(s, "scores")) == sorted([*range(80), 0])
