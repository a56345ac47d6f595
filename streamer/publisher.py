"""Sending a batch's records to the broker, and waiting for them to be there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from leadscore.streamer.exceptions import PublishError

Send = Callable[[str, bytes | None, bytes, int | None], Awaitable[Any]]
"""``send(topic, key, value, partition)``: queue one record, return its delivery future."""

#: Leads whose partitions are remembered (per output topic) before the memory is reset:
#: bounded, so the worker's memory stays flat however many leads pass.
PARTITION_MEMORY = 20_000


class Publisher:
    """Sends one batch's records as the pipeline hands them over, chunk by chunk, while Redis
    applies the next chunk, and keeps the delivery futures to wait on.

    Records are keyed by lead id and go where Kafka's default partitioner puts that key.
    aiokafka's partitioner is pure Python, so each lead's partition is remembered from its
    first delivered record (``remember``) and passed explicitly after that. If partitions
    are added to a topic, remembered leads keep their old partition until the memory is
    reset, which keeps each lead's records in order.
    """

    def __init__(
        self,
        send: Send,
        topics: tuple[str, str, str],
        partitions: dict[str, dict[str, int]],
        shadow: ShadowSink | None = None,
    ) -> None:
        self._send = send
        self._scores, self._dlq, self._alerts = topics
        self._shadow = shadow
        self._partitions = partitions
        self.pending: list[Any] = []
        self.keyed: list[tuple[str, str, int]] = []
        """(topic, lead, index in ``pending``) of each keyed record."""
        self.seconds = 0.0

    async def emit(
        self, scores: Sequence[tuple[str, bytes]], dlq: Sequence[tuple[bytes | None, bytes]]
    ) -> None:
        t0 = time.perf_counter()
        send = self._send
        for key, value in dlq:
            self.pending.append(await send(self._dlq, key, value, None))
        await self._keyed(self._scores, scores)
        self.seconds += time.perf_counter() - t0

    async def alerts(self, alerts: Sequence[tuple[str, bytes]]) -> None:
        t0 = time.perf_counter()
        await self._keyed(self._alerts, alerts)
        self.seconds += time.perf_counter() - t0

    def shadow(self, records: Sequence[tuple[str, bytes]]) -> None:
        """The shadow model's records, to their own topic (never read by CRM sync)."""
        if self._shadow is None or not records:
            return
        t0 = time.perf_counter()
        self._shadow.send(records)
        self.seconds += time.perf_counter() - t0

    async def _keyed(self, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
        send, known = self._send, self._partitions.setdefault(topic, {})
        for lead, value in records:
            self.keyed.append((topic, lead, len(self.pending)))
            self.pending.append(await send(topic, lead.encode(), value, known.get(lead)))

    async def delivered(self) -> None:
        """Wait until the broker has every record sent; raise :class:`PublishError` if it
        refused one (after the producer's own retries). Nothing of the batch may then be
        acknowledged: its events come again after the worker restarts."""
        results = await asyncio.gather(*self.pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if self._shadow is not None:
            failed += await self._shadow.delivered()
        if failed:
            raise PublishError(
                f"the broker did not take {len(failed)} of {len(results)} records "
                f"({type(failed[0]).__name__}: {failed[0]})"
            ) from failed[0]
        self.remember(results)

    def remember(self, delivered: Sequence[Any]) -> None:
        """Note each lead's partition from the delivered records' metadata."""
        for topic, lead, i in self.keyed:
            known = self._partitions[topic]
            if len(known) >= PARTITION_MEMORY:
                known.clear()
            known[lead] = delivered[i].partition


class ShadowSink:
    """The shadow model's records, through librdkafka (confluent-kafka).

    A shadow doubles the records of every batch; aiokafka's ``send`` costs tens of
    microseconds of the event loop per record, librdkafka's ``produce`` a few, with the
    network work on its own threads. The records are keyed by lead id and partitioned by
    murmur2, as Kafka's Java clients and aiokafka do. Like every record of a batch, they
    are on the broker before the batch is acknowledged (:meth:`delivered`).
    """

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._producer = Producer(
            {
                **config,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "acks": "all",
                # Delivery reports for failures only: a report is a Message object and a
                # Python call per record, a share of the shadow's cost on the hot path.
                "delivery.report.only.error": True,
            }
        )
        self._errors: list[BaseException] = []
        self._sent = 0
        """Records sent since the last :meth:`delivered`."""

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._errors.append(PublishError(f"shadow record not delivered: {err}"))

    def send(self, records: Sequence[tuple[str, bytes]]) -> None:
        produce, topic, cb = self._producer.produce, self.topic, self._on_delivery
        self._sent += len(records)
        for lead, value in records:
            try:
                produce(topic, value, lead.encode(), on_delivery=cb)
            except BufferError:
                self._producer.poll(0.5)  # the local queue is full: let it drain
                produce(topic, value, lead.encode(), on_delivery=cb)
        self._producer.poll(0)

    async def delivered(self, timeout: float = 30.0) -> list[BaseException]:
        """Wait until every shadow record sent so far is on the broker; the failures."""
        if not self._sent and not self._errors:
            return []
        self._sent = 0
        # Polled from the event loop (it serves the delivery reports) rather than a blocking
        # flush in a thread: the loop goes on with the next batch meanwhile.
        producer, deadline = self._producer, time.monotonic() + timeout
        while len(producer) and time.monotonic() < deadline:
            producer.poll(0)
            await asyncio.sleep(0.002)
        producer.poll(0)
        errors, self._errors = self._errors, []
        if len(producer):
            errors.append(
                PublishError(f"{len(producer)} shadow records not delivered in {timeout} s")
            )
        return errors


def sender(producer: Any) -> Send:
    """Send through the aiokafka producer under Faust's, with Faust's settings.

    Faust's ``Producer.send`` adds one thing per record on top: dispatching its
    ``on_produce_message`` signal, which nothing here listens to. Faust versions without
    the underlying producer get Faust's own ``send``.
    """
    ensure = getattr(producer, "_ensure_producer", None)
    if ensure is not None:
        kafka = ensure()

        def direct(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
            return kafka.send(topic, value, key=key, partition=partition)

        return direct

    def via_faust(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Any:
        return producer.send(topic, key, value, partition, None, None)

    return via_faust
