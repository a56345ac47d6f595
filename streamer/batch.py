"""One micro-batch's lifecycle, in one object: take -> process (validate, apply in Redis,
score, publish) -> deliver (latest scores saved, tier alerts sent, the broker's acks) ->
ack -> confirm.

The worker's agent and the unit tests run the same :class:`BatchRunner` over an async
iterator of batches. The order of steps is the delivery guarantee:

* a batch's events are acknowledged (so their offsets may be committed) only once every
  record of the batch is on the broker, and batches are acknowledged in the order taken (an
  ack out of order could let a commit skip a batch whose records are not yet delivered);
* one batch delivers while the next is processed, never more: the next batch's store
  calls confirm the delivered batch's events (``Pipeline.delivered``), so a redelivery after
  a crash re-emits only what never reached the broker;
* a delivery that fails stops the runner (``on_failure``): its batch is never acknowledged,
  and a restarted worker processes its events again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from leadscore.streamer.exceptions import PublishError
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.pipeline import BatchOutput, Message, Pipeline
from leadscore.streamer.publisher import Publisher, Send, ShadowSink

Ack = Callable[[Sequence[Any]], None]


@dataclass
class Batch:
    """One micro-batch: what the stream gave, its messages, its records and their sending."""

    events: Sequence[Any]
    """What the stream handed over (acknowledged as a whole once delivered)."""
    messages: list[Message]
    publisher: Publisher
    started: float
    out: BatchOutput | None = None
    processed: float = 0.0


class BatchRunner:
    """Runs batches through their lifecycle (see the module docstring).

    ``ack`` acknowledges a delivered batch's events; None when the stream acknowledges a
    batch itself as the next is taken (Faust's own ``take_events``): each batch is then
    delivered before the next is taken. ``to_message`` turns what the stream gives into a
    :class:`Message`. ``on_failure`` hears of a delivery that failed, at once, even if no
    further batch comes.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        send: Send,
        topics: tuple[str, str, str],
        metrics: Metrics,
        *,
        ack: Ack | None,
        to_message: Callable[[Any], Message],
        on_failure: Callable[[BaseException], None],
        shadow: ShadowSink | None = None,
    ) -> None:
        self._shadow = shadow
        self._pipeline = pipeline
        self._send = send
        self._topics = topics
        self._metrics = metrics
        self._ack = ack
        self._to_message = to_message
        self._on_failure = on_failure
        self._partitions: dict[str, dict[str, int]] = {}
        self._delivering: asyncio.Task[None] | None = None

    async def run(self, batches: AsyncIterable[Sequence[Any]]) -> None:
        """Take every batch; when the stream ends, let the last delivery finish."""
        # Batches a crashed run left undelivered come again: they must be scored again.
        self._pipeline.forget_in_flight()
        try:
            async for events in batches:
                await self.take(events)
        finally:
            await self.drain()

    async def take(self, events: Sequence[Any]) -> Batch:
        """Process one batch and start its delivery; returns once the batch before it has
        been delivered (one batch delivers while the next is processed)."""
        batch = Batch(
            events,
            [self._to_message(e) for e in events],
            Publisher(self._send, self._topics, self._partitions, self._shadow),
            time.perf_counter(),
        )
        out = await self._pipeline.process(batch.messages, batch.publisher.emit, defer_alerts=True)
        batch.out, batch.processed = out, time.perf_counter()
        before = self._delivering
        self._delivering = asyncio.ensure_future(self._deliver(before, batch, out))
        self._delivering.add_done_callback(self._check)
        if self._ack is None:
            await self._delivering
        elif before is not None:
            await before
        return batch

    async def drain(self) -> None:
        """Let the last batch's delivery finish (its records are sent, so its acks follow
        them), unless this task itself is cancelled."""
        task = self._delivering
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def _deliver(
        self, before: asyncio.Task[None] | None, batch: Batch, out: BatchOutput
    ) -> None:
        if before is not None:
            await before
        pub = batch.publisher
        # The latest scores were saved while the next batch was validated; their alerts go
        # out before the batch is acknowledged.
        await self._pipeline.complete(out)
        await pub.alerts(out.alerts)
        pub.shadow(out.shadow)
        try:
            await pub.delivered()
        except PublishError:
            self._metrics.publish_failures.inc()
            raise
        # With LEADSCORE_REDIS_WAIT_REPLICAS, the batch's Redis writes must be on a replica
        # before its offsets may be committed: a failover then loses nothing a commit covers.
        await self._pipeline.durable()
        done = time.perf_counter()
        self._pipeline.delivered(out)
        if self._ack is not None:
            self._ack(batch.events)
        m = self._metrics
        m.stage_seconds.labels(stage="publish").observe(pub.seconds)
        m.stage_seconds.labels(stage="delivery").observe(done - batch.processed)
        m.score_latency.observe(done - batch.started)

    def _check(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._on_failure(task.exception())  # type: ignore[arg-type]
