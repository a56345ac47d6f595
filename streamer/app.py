"""The Faust app: its configuration, the scoring agent, the timers and the web views.

``create_app(settings)`` builds a fresh app (tests build several with unique ids); the
worker CLI builds one from the environment. The parts live beside it: the batch lifecycle
(``batch``), the agent's body (``agent``), what is shared and ``/ready`` (``runtime``), the
web views (``views``).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import faust

from leadscore.infra.topics import INPUT_TOPICS
from leadscore.settings import KafkaConnection, Settings
from leadscore.streamer import views
from leadscore.streamer.agent import die, score_stream
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.runtime import Runtime, created_at

#: Faust's producer batch per partition (aiokafka's default is 16 KB).
PRODUCER_BATCH_BYTES = 256 * 1024
#: How often the worker checks that Redis answers (and still holds its state).
HEALTH_INTERVAL_S = 1.0


def faust_app(settings: Settings) -> faust.App:
    """The Faust app with the worker's settings (no agents yet)."""
    bootstrap = settings.require_kafka()
    extra: dict[str, Any] = {}
    if settings.faust_fastpath:
        from leadscore.streamer import faust_fastpath

        faust_fastpath.install(fetch_max_wait_ms=settings.fetch_max_wait_ms)
        extra["Monitor"] = faust_fastpath.quiet_monitor()
    # Faust keeps only table metadata here (tables live in Redis); never litter the cwd.
    data_dir = (
        settings.data_dir or Path(tempfile.gettempdir()) / "leadscore-faust" / settings.app_id
    )
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        datadir=str(data_dir),
        broker=[f"kafka://{b.strip()}" for b in bootstrap.split(",")],
        broker_credentials=KafkaConnection.of(settings).faust_credentials(),
        store="memory://",
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_in_thread=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        # Offsets are committed by Faust's timer task, once a second. A count-based commit
        # runs inside the loop that hands messages to the agent, which then stops delivering
        # until the producer is flushed and the broker has answered the commit: at 1,000
        # events/s a stall every second, which the events arriving meanwhile wait out.
        # (A count that is never reached: None would mean Faust's default, 10,000.)
        broker_commit_every=2**31 - 1,
        broker_commit_interval=1.0,
        # One batch of up to 256 KB per partition and send: a burst's micro-batch of records
        # then goes out as one batch per partition instead of several, and the broker stores
        # fewer, larger batches. Still well below Kafka's 1 MB default message.max.bytes.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        # Faust's /router/ and /table/ pages expose internals (and answer 500 for unknown
        # names); the worker serves only its own views.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_application_options=views.web_options(settings),
        **extra,
    )


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> tuple[faust.App, Runtime]:
    app = faust_app(settings)
    rt = Runtime.build(settings, metrics)
    names = tuple(settings.topic(t) for t in INPUT_TOPICS)
    if settings.faust_fastpath:
        from leadscore.streamer.faust_fastpath import raw_schema

        events = app.topic(*names, schema=raw_schema())
    else:
        events = app.topic(
            *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    @app.agent(events, name="score_leads")
    async def score_leads(stream: faust.StreamT) -> None:
        try:
            await score_stream(app, rt, stream)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            die(rt, exc)
            raise

    @app.on_partitions_assigned.connect
    def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        rt.health.assigned = True

    @app.timer(interval=settings.model_poll_s)
    async def refresh_model() -> None:
        # Checks run a child process and compile the model: off the event loop.
        if await asyncio.to_thread(rt.models.refresh):
            rt.metrics.set_model(rt.models.current.version, created_at(rt.models.current))
            rt.metrics.model_swaps.inc()

    @app.timer(interval=HEALTH_INTERVAL_S)
    async def check_health() -> None:
        await rt.check_redis()
        rt.metrics.ready.set(1 if rt.readiness(app.rebalancing)[0] else 0)

    views.register(app, rt)
    return app, rt
