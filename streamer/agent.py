"""The scoring agent's body, and what happens when it dies.

The agent is thin: take micro-batches from the stream and run them through the
:class:`~leadscore.streamer.batch.BatchRunner`. If it dies, or a batch's delivery fails,
the worker is crash-only: ``/ready`` answers 503 naming the error, and the process exits
non-zero shortly after for a supervisor to restart it. Faust would keep the process up
without its agent, and a graceful stop would wait for acks the dead agent never gives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import faust

from leadscore.features.exceptions import StateLayoutError
from leadscore.streamer.batch import BatchRunner
from leadscore.streamer.exceptions import InjectedFaultError
from leadscore.streamer.pipeline import Message
from leadscore.streamer.publisher import ShadowSink, sender
from leadscore.streamer.runtime import Runtime

log = logging.getLogger(__name__)

#: After the agent dies, ``/ready`` answers 503 this long before the process exits, so that
#: a supervisor (and a readiness probe) sees why before it restarts the worker.
CRASH_EXIT_DELAY_S = 2.0
CRASH_EXIT_CODE = 70


def faust_message(event: Any) -> Message:
    """The :class:`Message` of a Faust stream event."""
    m = event.message
    return Message(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)


async def score_stream(app: faust.App, rt: Runtime, stream: faust.StreamT) -> None:
    """The agent: micro-batches from the stream through the batch lifecycle."""
    settings = rt.settings
    if rt.health.agent is not None:
        # Faust restarts a crashed agent; the process is about to exit and the dead
        # agent's batch is unacknowledged: take nothing more.
        await asyncio.Event().wait()
    producer = await app.maybe_start_producer()
    # aiokafka logs every send at DEBUG; under the worker's logging setup that built a
    # LogRecord per record only for it to be dropped.
    logging.getLogger("aiokafka").setLevel(max(logging.INFO, log.getEffectiveLevel()))
    try:
        await rt.open_store()
    except StateLayoutError as exc:
        # Another release's state: waiting can't help (a rebuild by this release can), and
        # exiting names the problem to the supervisor and the logs.
        die(rt, exc)
        await asyncio.Event().wait()
    ack: Callable[[Sequence[Any]], None] | None = None
    batch_wait = settings.batch_wait_ms / 1000
    if settings.faust_fastpath:
        from leadscore.streamer.faust_fastpath import ack_events, caller_acks, take_events

        ack = ack_events if caller_acks() else None
        batches = take_events(stream, settings.batch_max, batch_wait, ack=ack is None)
    else:
        batches = stream.take_events(settings.batch_max, within=batch_wait)  # type: ignore[attr-defined]
    if settings.fault_inject == "agent":
        batches = _FailOnFirstBatch(batches)
    runner = BatchRunner(
        rt.pipeline,
        sender(producer),
        (settings.topic("scores"), settings.topic("dlq"), settings.topic("alerts")),
        rt.metrics,
        ack=ack,
        to_message=faust_message,
        on_failure=lambda exc: die(rt, exc),
        shadow=ShadowSink(settings.kafka_client_config(), settings.topic("scores.shadow")),
    )
    await runner.run(batches)


class _FailOnFirstBatch:
    """``LEADSCORE_FAULT_INJECT=agent`` (tests only): the agent fails on its first batch."""

    def __init__(self, batches: Any) -> None:
        self._batches = batches.__aiter__()

    def __aiter__(self) -> _FailOnFirstBatch:
        return self

    async def __anext__(self) -> Any:
        await self._batches.__anext__()
        raise InjectedFaultError("LEADSCORE_FAULT_INJECT=agent: the agent fails")


def die(rt: Runtime, exc: BaseException) -> None:
    """Report not ready, then exit for a supervisor to restart the worker."""
    if rt.health.agent is not None:
        return
    rt.health.agent = f"{type(exc).__name__}: {exc}"
    log.critical("the scoring agent died; exiting in %.0f s", CRASH_EXIT_DELAY_S, exc_info=exc)
    asyncio.get_running_loop().call_later(CRASH_EXIT_DELAY_S, _hard_exit, CRASH_EXIT_CODE)


def _hard_exit(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
