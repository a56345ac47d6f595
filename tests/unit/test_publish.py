"""``streamer.publish``: records land on the partitions aiokafka's send() would pick, in order."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamer.publish import RecordTooLargeError, key_partition, publish


def test_key_partition_is_kafkas_default_partitioner() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        key = rng.randbytes(rng.randint(0, 40))
        n = rng.randint(1, 12)
        parts = list(range(n))
        assert key_partition(key, n) == DefaultPartitioner()(key, parts, parts)


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []
        self.capacity = capacity

    def append(self, *, key: bytes | None, value: bytes, timestamp: Any) -> object | None:
        if sum(len(v) for _, v in self.records) + len(value) > self.capacity:
            return None
        self.records.append((key, value))
        return object()


class _Producer:
    """The three calls publish() makes, recording what was submitted."""

    def __init__(self, partitions: int, capacity: int) -> None:
        self.partitions, self.capacity = partitions, capacity
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes]]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> _Batch:
        return _Batch(self.capacity)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.records))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def test_records_keep_their_order_per_partition_and_full_batches_are_split() -> None:
    records = [(f"lead-{i % 7}".encode(), f"score-{i}".encode().ljust(10)) for i in range(200)]
    producer = _Producer(partitions=4, capacity=100)  # ten records per batch
    futures = asyncio.run(publish(producer, "scores", records))
    assert len(futures) == len(producer.sent)
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for topic, p, batch in producer.sent:
        assert topic == "scores" and 0 < len(batch) <= 10
        by_partition.setdefault(p, []).extend(batch)
    for p, got in by_partition.items():
        assert got == [r for r in records if key_partition(r[0] or b"", 4) == p]
    assert sum(len(v) for v in by_partition.values()) == len(records)


def test_nothing_to_publish_sends_nothing() -> None:
    producer = _Producer(partitions=4, capacity=100)
    assert asyncio.run(publish(producer, "scores", [])) == []
    assert producer.sent == []


def test_a_record_larger_than_a_batch_is_an_error_not_a_drop() -> None:
    producer = _Producer(partitions=2, capacity=10)
    with pytest.raises(RecordTooLargeError):
        asyncio.run(publish(producer, "scores", [(b"k", b"x" * 11)]))


def test_records_without_a_key_still_go_out() -> None:
    producer = _Producer(partitions=3, capacity=1000)
    asyncio.run(publish(producer, "dlq", [(None, b"bad-1"), (None, b"bad-2")]))
    assert sorted(v for _, _, b in producer.sent for _, v in b) == [b"bad-1", b"bad-2"]
