"""The Faust app: topics, the scoring agent, the model-refresh timer and the web views.

``create_app(settings)`` builds a fresh app (tests build several with unique ids); the
worker CLI builds one from the environment. The agent body is deliberately thin: take a
micro-batch -> ``Pipeline.process`` -> send the records -> wait for delivery, so offsets
are committed only for events whose results are on the broker (at-least-once), and the
feature store's dedupe keeps a redelivery after a crash from counting twice (and
re-emits the score records of events whose results never reached the broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from features.store import RedisFeatureStore
from schemas.validation import parse_ts_ms
from streamer.metrics import Metrics
from streamer.models import ModelHolder
from streamer.pipeline import BatchOutput, Message, Pipeline, topic_sources
from streamer.redisconn import (
    HiredisPackConnection,
    HiredisPackSSLConnection,
    HiredisPackUnixConnection,
)
from streamer.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the agent and the views share: the store, the model holder, metrics, readiness."""

    settings: Settings
    store: RedisFeatureStore
    models: ModelHolder
    metrics: Metrics
    pipeline: Pipeline
    ready: bool = False


Send = Callable[[str, bytes | None, bytes, int | None], Awaitable[Any]]
"""``send(topic, key, value, partition)``: queue one record, return its delivery future."""

#: Leads whose partitions are remembered (per output topic) before the memory is reset:
#: ~2 MB at ~106 bytes an entry, so the worker's memory stays flat however many leads pass.
PARTITION_MEMORY = 20_000

PRODUCER_BATCH_BYTES = 256 * 1024


class _Publisher:
    """Sends one batch's records as the pipeline hands them over, chunk by chunk, while Redis
    applies the next chunk, and keeps the delivery futures to wait on.

    Records are keyed by lead id and go where Kafka's default partitioner puts that key.
    aiokafka's partitioner is pure Python (~6 us a record, measured), so each lead's
    partition is remembered from its first delivered record (``remember``) and passed
    explicitly after that. If partitions are added to a topic, remembered leads keep their
    old partition until the memory is reset, which keeps each lead's records in order.
    """

    def __init__(
        self,
        send: Send,
        topics: tuple[str, str, str],
        partitions: dict[str, dict[str, int]],
    ) -> None:
        self._send = send
        self._scores, self._dlq, self._alerts = topics
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

    async def _keyed(self, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
        send, known = self._send, self._partitions.setdefault(topic, {})
        for lead, value in records:
            self.keyed.append((topic, lead, len(self.pending)))
            self.pending.append(await send(topic, lead.encode(), value, known.get(lead)))

    def remember(self, delivered: Sequence[Any]) -> None:
        """Note each lead's partition from the delivered records' metadata."""
        for topic, lead, i in self.keyed:
            known = self._partitions[topic]
            if len(known) >= PARTITION_MEMORY:
                known.clear()
            known[lead] = delivered[i].partition


def _sender(producer: Any) -> Send:
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


def redis_client(settings: Settings) -> Any:
    """A Redis (or, with ``LEADSCORE_REDIS_CLUSTER``, a Redis Cluster) asyncio client."""
    # No read timeout: a Redis that pauses must make the worker wait for the reply. A timeout
    # followed by a retry could run a batch twice, and the second run would see every event
    # as a duplicate and score none of them. Connection failures are retried with backoff.
    kwargs: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
    }
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls and settings.redis_tls_cafile:
        kwargs["ssl_ca_certs"] = str(settings.redis_tls_cafile)
    if settings.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        kwargs.pop("health_check_interval", None)
        if settings.redis_tls:
            kwargs["ssl"] = True
        return RedisCluster.from_url(settings.redis_url, **kwargs)
    pool = aioredis.ConnectionPool.from_url(settings.redis_url, **kwargs)
    # The URL picks TCP, TLS (rediss://) or a unix socket; LEADSCORE_REDIS_TLS turns a
    # redis:// URL into TLS. TCP, TLS and unix-socket connections pack commands with hiredis.
    if settings.redis_tls or issubclass(pool.connection_class, SSLConnection):
        pool.connection_class = HiredisPackSSLConnection
    elif pool.connection_class is Connection:
        pool.connection_class = HiredisPackConnection
    elif pool.connection_class is UnixDomainSocketConnection:
        pool.connection_class = HiredisPackUnixConnection
    return aioredis.Redis(connection_pool=pool)


def _broker_credentials(settings: Settings) -> Any:
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        ssl_context = faust.auth.ssl.create_default_context(
            purpose=faust.auth.ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        )
        if settings.kafka_ssl_certfile:
            ssl_context.load_cert_chain(
                str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile or "")
            )
        if settings.kafka_security_protocol == "SSL":
            return faust.SSLCredentials(ssl_context)
    password = (
        settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    )
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username or "",
        password=password,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        ssl_context=ssl_context,
    )


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> tuple[faust.App, Runtime]:
    bootstrap = settings.require_kafka()
    extra: dict[str, Any] = {}
    if settings.faust_fastpath:
        from streamer import faust_fastpath

        faust_fastpath.install(fetch_max_wait_ms=settings.fetch_max_wait_ms)
        extra["Monitor"] = faust_fastpath.quiet_monitor()
    # Faust keeps only table metadata here (tables live in Redis); never litter the cwd.
    data_dir = settings.data_dir or Path(tempfile.gettempdir()) / "leadscore" / settings.app_id
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        datadir=str(data_dir),
        broker=[f"kafka://{b.strip()}" for b in bootstrap.split(",")],
        broker_credentials=_broker_credentials(settings),
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
        # One batch of up to 256 KB per partition and send, not aiokafka's 16 KB: a burst's
        # micro-batch of records then goes out as one batch per partition instead of several
        # (bench: the publish stage went from ~26 to ~8 us an event), and the broker stores
        # fewer, larger batches. Still well below Kafka's 1 MB default message.max.bytes.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        **extra,
    )
    metrics = metrics or Metrics.create()
    models = ModelHolder(
        settings.model_dir,
        rules_file=settings.rules_file,
        explain=settings.explain,
        max_reasons=settings.max_reasons,
    )
    models.refresh()
    metrics.set_model(models.current.version)
    store = RedisFeatureStore(redis_client(settings), per_slot=settings.redis_cluster)
    pipeline = Pipeline(
        store,
        lambda: models.current,
        metrics,
        topic_sources=topic_sources(settings.topic),
        max_future_ms=settings.max_future_skew_s * 1000,
    )
    rt = Runtime(settings, store, models, metrics, pipeline)

    names = (settings.topic("web"), settings.topic("email"), settings.topic("crm"))
    if settings.faust_fastpath:
        from streamer.faust_fastpath import raw_schema

        events = app.topic(*names, schema=raw_schema())
    else:
        events = app.topic(
            *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
    scores_topic = settings.topic("scores")
    dlq_topic = settings.topic("dlq")
    alerts_topic = settings.topic("alerts")

    @app.agent(events, name="score_leads")
    async def score_leads(stream: faust.StreamT) -> None:
        producer = await app.maybe_start_producer()
        # aiokafka logs every send at DEBUG; under the worker's logging setup that built a
        # LogRecord per record (~3 % of the worker's CPU) only for it to be dropped.
        logging.getLogger("aiokafka").setLevel(max(logging.INFO, log.getEffectiveLevel()))
        send = _sender(producer)
        topics = (scores_topic, dlq_topic, alerts_topic)
        partitions: dict[str, dict[str, int]] = {}
        batch_wait = settings.batch_wait_ms / 1000
        ack: Callable[[list[Any]], None] | None = None
        if settings.faust_fastpath:
            from streamer.faust_fastpath import ack_events, caller_acks, take_events

            ack = ack_events if caller_acks() else None
            batches = take_events(stream, settings.batch_max, batch_wait, ack=ack is None)
        else:
            batches = stream.take_events(settings.batch_max, within=batch_wait)  # type: ignore[attr-defined]
        # The previous batch's delivery, still running while this batch is processed.
        finishing: asyncio.Task[None] | None = None
        # Batches a crashed run of this agent left undelivered come again: score them again.
        rt.pipeline.forget_in_flight()

        async def finish(
            before: asyncio.Task[None] | None,
            events: list[Any],
            pub: _Publisher,
            out: BatchOutput,
            started: float,
            sent: float,
        ) -> None:
            # Batches finish in the order taken: acks out of order could let a commit skip
            # a batch whose records are not yet on the broker.
            if before is not None:
                await before
            # The latest scores were saved while the next batch was validated; their alerts
            # go out before the batch is acked.
            await rt.pipeline.complete(out)
            await pub.alerts(out.alerts)
            pub.remember(await asyncio.gather(*pub.pending))
            done = time.perf_counter()
            rt.pipeline.delivered(out)
            if ack is not None:
                ack(events)
            rt.metrics.stage_seconds.labels(stage="publish").observe(pub.seconds)
            rt.metrics.stage_seconds.labels(stage="delivery").observe(done - sent)
            rt.metrics.score_latency.observe(done - started)

        try:
            async for batch in batches:
                started = time.perf_counter()
                msgs = [
                    Message(
                        e.message.topic,
                        e.message.partition,
                        e.message.offset,
                        e.message.key,
                        e.message.value,
                        e.message.timestamp,
                    )
                    for e in batch
                ]
                pub = _Publisher(send, topics, partitions)
                out = await rt.pipeline.process(msgs, pub.emit, defer_alerts=True)
                before, finishing = (
                    finishing,
                    asyncio.ensure_future(
                        finish(finishing, batch, pub, out, started, time.perf_counter())
                    ),
                )
                if ack is None:
                    # Faust acks a batch when the next is taken: deliver before taking it.
                    await finishing
                elif before is not None:
                    # One batch delivers while the next is processed, no more.
                    await before
        finally:
            if finishing is not None and not finishing.done():
                # Its records are sent: let the acks follow their delivery (at shutdown or
                # a rebalance Faust waits for them), unless the agent itself is cancelled.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(finishing)

    @app.on_partitions_assigned.connect
    def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        rt.ready = True

    @app.timer(interval=settings.model_poll_s)
    async def refresh_model() -> None:
        if rt.models.refresh():
            rt.metrics.set_model(rt.models.current.version)
            rt.metrics.model_swaps.inc()

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        ok = rt.ready and not app.rebalancing
        return web.json(
            {"ready": ok, "model_version": rt.models.current.version}, status=200 if ok else 503
        )

    @app.page("/metrics")
    async def metrics_view(web: View, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type, so the full header goes in headers.
        return web.bytes(
            generate_latest(rt.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @app.page("/leads/{lead_id}")
    async def lead_view(web: View, request: Request, lead_id: str) -> Response:
        at = request.query.get("at")
        at_ms: int | None = None
        if at == "now":
            at_ms = int(time.time() * 1000)
        elif at:
            at_ms = parse_ts_ms(at)
            if at_ms is None:
                return web.json({"error": "at must be 'now' or an RFC 3339 timestamp"}, status=400)
        feats = await rt.store.read(lead_id, at_ms)
        if feats is None:
            return web.json({"error": f"unknown lead {lead_id}"}, status=404)
        score = await rt.store.latest_score(lead_id)
        return web.json({"lead_id": lead_id, "features": feats, "score": score})

    @app.page("/score")
    async def score_view(web: View, request: Request) -> Response:
        if request.method != "POST":
            return web.json(
                {"error": 'use POST with {"features": {...}} or {"lead_id": ...}'}, status=405
            )
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json({"error": "body must be a JSON object"}, status=400)
        if "lead_id" in body:
            feats = await rt.store.read(str(body["lead_id"]), None)
            if feats is None:
                return web.json({"error": f"unknown lead {body['lead_id']}"}, status=404)
        elif isinstance(body.get("features"), dict):
            feats = body["features"]
        else:
            return web.json({"error": 'give {"features": {...}} or {"lead_id": ...}'}, status=400)
        scorer = rt.models.current
        s = scorer.score_batch([feats])[0]
        return web.json(
            {
                "score": round(s.score, 6),
                "score_100": int(round(s.score * 100)),
                "tier": s.tier,
                "model_version": scorer.version,
                "reasons": [r.as_dict() for r in s.reasons],
                "features": feats,
            }
        )

    return app, rt
