"""Removes Faust's per-message scheduling overhead (docs/performance.md has the figures).

Where the time goes, in faust-streaming 0.15 / mode-streaming 0.7 (fetching is not it: one
``getmany`` returns far more records than the agent can take):

1. ``Consumer._drain_messages`` delivers every message with
   ``await self.wait_first(callback(message), self.suspend_flow.wait())``; mode's
   ``Service.wait_first`` wraps four awaitables in Tasks and runs
   ``asyncio.wait(FIRST_COMPLETED)``: two or more event-loop passes and four task
   creations/cancellations per message.
2. ``StreamIterator.next`` (``faust/_cython/streams.pyx``, ``faust/streams.py``) does
   ``await sleep(0)`` for every event: one more full loop pass per message.

Together they cap a bare agent with one core busy. A third cost is latency, not
throughput: Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``, and a broker that
holds a long-poll fetch for its full wait even when new data arrives (Tansu does) delays
every event that lands on an idle partition. The fixes:

1. step the delivery coroutine once synchronously; in the normal case (flow not suspended,
   queue not full) it completes without suspending and needs no Task. If it would block,
   the rest of the same coroutine goes to the original ``wait_first``, so a rebalance can
   still interrupt it exactly as before;
2. let ``sleep(0)`` inside the stream iterator yield once every ``YIELD_EVERY`` events; the
   stream still yields whenever its queue is empty, and non-zero sleeps are untouched;
3. set the consumer's fetch max wait to ``fetch_max_wait_ms`` (a setting, default 10 ms);
4. read the producer buffer's mode once instead of through ``app.conf`` for every message
   the conductor delivers (``ProducerBuffer.wait_until_ebb``);
5. don't let Faust's fetch loop (``Consumer._wait_next_records``) sit out a second while
   partitions are paused for a full stream buffer. It asks the fetcher for the active
   partitions only, waiting up to 1 s for new data, and sleeps 1 s when none is active; when
   the agent drains the buffer and a partition resumes, neither wait ends early: the agent
   then idles with an empty queue while paused partitions hold the rest of the data. Here,
   while any partition is paused that way, the fetcher is asked with a short timeout
   (``PAUSED_POLL_S``), and with none active the loop waits for the first to resume.

``take_events`` (batches straight from the channel queue, no stream iterator per event),
``raw_schema`` (events built from the message bytes) and ``quiet_monitor`` below are
further per-message savings for the worker.

They use private internals, so this module imports only on the versions they were verified
on (:data:`VERIFIED`, pinned in pyproject); on any other it raises, and
``LEADSCORE_FAUST_FASTPATH=false`` runs Faust unpatched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from importlib.metadata import version
from typing import Any

from leadscore.streamer.exceptions import UnsupportedFaustError

log = logging.getLogger(__name__)

#: The fetch loop's wait for new records while some partitions are paused for a full buffer.
PAUSED_POLL_S = 0.05
#: The exact versions the patches below were verified on (pyproject pins them).
VERIFIED = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"}
YIELD_EVERY = 64
_installed = False


def check_versions() -> None:
    """Raise :class:`UnsupportedFaustError` unless the verified versions are installed: the
    patches reach into private internals that any other release may have changed."""
    for dist, wanted in VERIFIED.items():
        try:
            found = version(dist)
        except LookupError as exc:
            raise UnsupportedFaustError(f"{dist} is not installed") from exc
        if found != wanted:
            raise UnsupportedFaustError(
                f"{dist} {found} is installed; the worker's Faust fast path was verified on "
                f"{wanted} only (pip install '{dist}=={wanted}', or set "
                "LEADSCORE_FAUST_FASTPATH=false to run Faust unpatched)"
            )


check_versions()


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Drive an already-started coroutine to the end, as ``asyncio.Task`` would."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                await yielded
        except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value


async def take_events(
    stream: Any, max_: int, within: float, *, ack: bool = True
) -> AsyncIterator[list[Any]]:
    """``stream.take_events(max_, within)``, read from the stream's channel queue in bulk.

    Faust's ``take_events`` collects a batch through the stream iterator: for every event a
    ``sleep(0)``, a sensor call in and out, the current-event context variable, the take
    processor and an ``ack`` through ``Stream.ack``, about as much Python again as the
    conductor spends delivering it. It also stops filling its buffer from the moment it
    yields a batch until the caller asks for the next one. Here the batch is taken straight
    from the queue the conductor delivers into; the queue keeps filling while a batch is
    processed (bounded by ``stream_buffer_maxsize``, with Faust's back-pressure), so a batch
    is whatever has arrived, up to ``max_``, waiting at most ``within`` for more.

    The stream iterator's rules are kept, but one: an event of an older consumer generation,
    or one taken while flow control is suspended (a rebalance), is dropped as Faust drops
    it, yet not acked (see below); every other event is tracked as unacked (so a rebalance
    or shutdown waits for it) and acked once the batch it came in has been processed, and
    not at all if the processing raised, so its offset is not committed and it is delivered
    again. Faust's per-event stream sensors are not called (``quiet_monitor`` ignores them
    anyway).

    With ``ack=False`` the caller acks each batch itself (``ack_events``), for instance once
    its results are delivered while the next batch is already being processed. A rebalance
    or shutdown then waits for those acks; every batch must be acked, in the order taken,
    once done (an ack out of order could let a commit skip an unfinished batch).

    """
    app = stream.app
    queue = stream.channel.queue
    while not stream.should_stop:
        try:
            raw = await _collect(queue, max_, within)
        except StopAsyncIteration:
            # Faust throws it into the channel's queue when the stream stops; raised out of
            # this generator it would turn into a RuntimeError (PEP 479) logged as a crash.
            return
        batch = _tracked(app, raw)
        if not batch:
            continue
        yield batch
        # Only once the caller asks for more: a batch whose processing raised stays
        # unacked, so its offsets are not committed and it is delivered again.
        if ack:
            ack_events(batch)


async def _collect(queue: Any, max_: int, within: float) -> list[Any]:
    """Whatever the queue holds, up to ``max_``, waiting up to ``within`` for more after the
    first (which is waited for as long as it takes)."""
    get_nowait, empty = queue.get_nowait, queue.empty
    raw = [await queue.get()]
    while len(raw) < max_ and not empty():
        raw.append(get_nowait())
    if len(raw) < max_ and within > 0:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(raw) < max_ and (left := deadline - loop.time()) > 0:
            try:
                raw.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
            while len(raw) < max_ and not empty():
                raw.append(get_nowait())
    return raw


def _tracked(app: Any, raw: list[Any]) -> list[Any]:
    """The events to process, each tracked as unacked as the stream iterator would."""
    generation = app.consumer_generation_id
    active = app.flow_control.is_active()
    unacked, acking_topics = app.consumer.unacked, app.topics.acking_topics
    batch = []
    for event in raw:
        message = event.message
        if not active or message.generation_id != generation:
            # Dropped without an ack (Faust's iterator acks it). After a rebalance the
            # consumer's acked offsets of a partition start empty and its committed offset
            # unknown, so an ack here would let the next commit skip past this event and
            # everything before it that the new generation has not yet processed; a
            # partition handed on at the next rebalance would then lose them. Unacked, it
            # is fetched again from the committed offset.
            continue
        if message.topic in acking_topics and not message.tracked:
            message.tracked = True
            unacked.add(message)
        batch.append(event)
    return batch


def caller_acks() -> bool:
    """Whether ``take_events(..., ack=False)`` leaves the acks to its caller: always, on the
    verified versions (the only ones this module imports on)."""
    return True


def ack_events(batch: Sequence[Any]) -> None:
    """Ack a batch taken with ``take_events(..., ack=False)``."""
    for event in batch:
        event.ack()


def raw_schema() -> Any:
    """A ``faust.Schema`` whose events carry the message's key and value bytes as they are.

    With ``key_type=bytes`` and the ``raw`` serializer Faust still sends every key and
    value through its serializer registry (type checks, codec lookup, a ``bytes`` copy),
    a visible share of the worker's main thread. The worker validates the bytes itself, so
    the event is created from the message directly.
    ``faust.Schema.compile`` is the documented hook for custom decoding.
    """
    import faust

    class RawSchema(faust.Schema):
        def compile(self, app: Any, **_: Any) -> Any:
            # ``app.create_event`` looks the class up in ``app.conf`` (a settings descriptor)
            # for every message; it is fixed once the app is configured.
            event_cls = app.conf.Event

            async def decode(message: Any, *, propagate: bool = False) -> Any:
                return event_cls(app, message.key, message.value, message.headers, message)

            return decode

    return RawSchema(key_type=bytes, value_type=bytes)


def quiet_monitor() -> type:
    """Faust's ``Monitor`` with its per-message and per-send callbacks turned off.

    The stock monitor runs five Python callbacks for every event (message in, stream event
    in/out, message out; send initiated/completed for every record sent), keeping counters
    and timings that this project doesn't read: its metrics are its own Prometheus ones.
    Everything else (commit and assignment latencies, table counters) is kept.
    """
    from faust.sensors.monitor import Monitor

    class QuietMonitor(Monitor):
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            return None

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            return None

        def on_stream_event_out(
            self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
        ) -> None:
            return None

        def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
            return None

        def on_send_initiated(
            self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
        ) -> None:
            return None

        def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
            return None

    return QuietMonitor


def paused_fetch_patches(
    original_next_records: Callable[..., Awaitable[Any]],
    original_buffer_drop: Callable[[Any, Any], None],
) -> tuple[Callable[..., Awaitable[Any]], Callable[[Any, Any], None]]:
    """Fix 5 above: ``Consumer._wait_next_records`` and ``Consumer.on_buffer_drop`` built on
    Faust's own, so that a partition resumed after a full buffer is fetched from at once."""

    def resumed(consumer: Any) -> asyncio.Event:
        event = consumer.__dict__.get("_leadscore_resumed")
        if event is None:
            event = consumer.__dict__["_leadscore_resumed"] = asyncio.Event()
        return event

    async def wait_next_records(self: Any, timeout: float) -> Any:
        if self._buffered_partitions and self.flow_active and not self.app.client_only:
            active = self._get_active_partitions()
            if not active:
                # All paused by full buffers: wait for one to resume (Faust: sleep(1)). No
                # records this time; the caller asks again and fetches what is active then.
                event = resumed(self)
                event.clear()
                await self.wait(event, timeout=1.0)
                return {}, active
            # A paused partition resumes while the fetcher waits on the active ones, which
            # may have nothing new: ask again soon. (The call runs in the consumer's thread
            # and can't be cut short: records it drained would be lost with it.)
            timeout = min(timeout, PAUSED_POLL_S)
        return await original_next_records(self, timeout)

    def on_buffer_drop(self: Any, tp: Any) -> None:
        # Faust's resumes ``tp`` (and forgets it as buffered) only if it was paused for it.
        was_paused = tp in self._buffered_partitions
        original_buffer_drop(self, tp)
        if was_paused:
            resumed(self).set()

    return wait_next_records, on_buffer_drop


def install(yield_every: int = YIELD_EVERY, fetch_max_wait_ms: int = 10) -> bool:
    """Apply the fixes (once; later calls change nothing). Returns True when applied."""
    global _installed
    if _installed:
        return True
    import faust.streams as py_streams
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from faust.transport.producer import ProducerBuffer

    wait_next_records, on_buffer_drop = paused_fetch_patches(
        Consumer._wait_next_records, Consumer.on_buffer_drop
    )
    Consumer._wait_next_records = wait_next_records  # type: ignore[method-assign,assignment]
    Consumer.on_buffer_drop = on_buffer_drop  # type: ignore[method-assign,assignment]
    ProducerBuffer.wait_until_ebb = _ebb_patch(ProducerBuffer.wait_until_ebb)  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer = _fetch_wait_patch(  # type: ignore[method-assign]
        AIOKafkaConsumerThread._create_worker_consumer, fetch_max_wait_ms
    )
    Consumer.wait_first = _wait_first_patch(Consumer.wait_first)  # type: ignore[method-assign]
    sleep = _sleep_patch(yield_every)
    py_streams.sleep = sleep  # type: ignore[attr-defined]
    try:
        import faust._cython.streams as cy_streams

        cy_streams.sleep = sleep
    except ImportError:
        pass
    _installed = True
    return True


def _wait_first_patch(original: Any) -> Any:
    """Fix 1: step the delivery coroutine once instead of racing it against the flow's
    suspension in Tasks; fall back to the original when it would block."""
    from mode.services import WaitResults

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        if (
            len(coros) == 2
            and timeout is None
            and asyncio.iscoroutine(coros[0])
            and asyncio.iscoroutine(coros[1])
            and not self.suspend_flow.is_set()
            and not self._stopped.is_set()
            and not self._crashed.is_set()
        ):
            deliver, suspend_wait = coros
            try:
                yielded = deliver.send(None)
            except StopIteration as stop:
                suspend_wait.close()
                return WaitResults([deliver], [stop.value], False)
            if yielded is not None:
                yielded._asyncio_future_blocking = False
            return await original(self, _resume(deliver, yielded), suspend_wait)
        return await original(self, *coros, timeout=timeout)

    return wait_first


def _sleep_patch(yield_every: int) -> Callable[..., Awaitable[Any]]:
    """Fix 2: ``sleep(0)`` yields once every ``yield_every`` calls; other sleeps unchanged."""
    real_sleep = asyncio.sleep
    count = [0]

    async def sleep(delay: float, result: Any = None) -> Any:
        if delay == 0:
            count[0] += 1
            if count[0] < yield_every:
                return result
            count[0] = 0
        return await real_sleep(delay, result)

    return sleep


def _fetch_wait_patch(create: Any, fetch_max_wait_ms: int) -> Any:
    """Fix 3: the consumer's fetch max wait."""

    def create_worker_consumer(self: Any, *args: Any, **kwargs: Any) -> Any:
        consumer = create(self, *args, **kwargs)
        # Read by the consumer's start(), when it builds its fetcher.
        consumer._fetch_max_wait_ms = fetch_max_wait_ms
        return consumer

    return create_worker_consumer


def _ebb_patch(original_ebb: Any) -> Any:
    """Fix 4: the producer buffer's mode read once per buffer."""

    async def wait_until_ebb(self: Any) -> None:
        # The conductor awaits this for every message it delivers; ``ProducerBuffer.size``
        # reads ``app.conf.producer_threaded`` (a settings descriptor) each time, though it
        # can't change once the app runs, so it is read once per buffer here.
        threaded = self.__dict__.get("_leadscore_threaded")
        if threaded is None:
            threaded = self.__dict__["_leadscore_threaded"] = bool(self.app.conf.producer_threaded)
        if threaded:
            size = len(self.queue._queue) if self.queue else 0  # noqa: SLF001
        else:
            size = len(self.pending._queue)  # noqa: SLF001
        if size > self.max_messages:
            await original_ebb(self)

    return wait_until_ebb
