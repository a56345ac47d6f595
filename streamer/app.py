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
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import AuthenticationError, RedisError

from leadscore.features.exceptions import FeatureStateLostError
from leadscore.features.state import wait_for_ready
from leadscore.features.store import RedisFeatureStore
from leadscore.infra.redis import redis_client
from leadscore.infra.topics import group_has_history
from leadscore.schemas.validation import parse_ts_ms
from leadscore.settings import Settings
from leadscore.streamer.exceptions import InjectedFaultError, PublishError
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.models import ModelHolder
from leadscore.streamer.pipeline import BatchOutput, Message, Pipeline, topic_sources
from leadscore.streamer.publisher import Publisher, sender

log = logging.getLogger(__name__)


@dataclass
class Health:
    """What ``/ready`` reports; each problem is None when all is well."""

    assigned: bool = False
    """Partitions assigned at least once (the consumer group is joined)."""
    agent: str | None = None
    """Why the scoring agent died (the process then exits)."""
    redis: str | None = "not checked yet"
    state: str | None = None
    """The feature state is lost or being rebuilt: nothing is scored meanwhile."""


@dataclass
class Runtime:
    """What the agent and the views share: the store, the model holder, metrics, health."""

    settings: Settings
    store: RedisFeatureStore
    models: ModelHolder
    metrics: Metrics
    pipeline: Pipeline
    health: Health = field(default_factory=Health)

    def readiness(self, rebalancing: bool) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)`` of ``/ready``: ready means this worker scores events now.

        A model problem (the champion failed its checks) leaves it ready but degraded: it
        scores with the last good model.
        """
        h = self.health
        problems = {
            "agent": h.agent,
            "redis": h.redis,
            "feature_state": h.state,
            "partitions": None if h.assigned and not rebalancing else "not assigned yet",
        }
        failing = {k: v for k, v in problems.items() if v is not None}
        ready = not failing
        body: dict[str, Any] = {
            "ready": ready,
            "status": "not_ready" if not ready else "degraded" if self.models.problem else "ok",
            "model_version": self.models.current.version,
        }
        if failing:
            body["problems"] = failing
        if self.models.problem:
            body["model_problem"] = self.models.problem
        return ready, body


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


PRODUCER_BATCH_BYTES = 256 * 1024
#: After the agent dies, ``/ready`` answers 503 this long before the process exits, so that
#: a supervisor (and a readiness probe) sees why before it restarts the worker.
CRASH_EXIT_DELAY_S = 2.0
#: How often the worker checks that Redis answers (and still holds its state).
HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 2.0


def _faust_app(settings: Settings) -> faust.App:
    bootstrap = settings.require_kafka()
    extra: dict[str, Any] = {}
    if settings.faust_fastpath:
        from leadscore.streamer import faust_fastpath

        faust_fastpath.install(fetch_max_wait_ms=settings.fetch_max_wait_ms)
        extra["Monitor"] = faust_fastpath.quiet_monitor()
    # Faust keeps only table metadata here (tables live in Redis); never litter the cwd.
    data_dir = settings.data_dir or Path(tempfile.gettempdir()) / "leadscore" / settings.app_id
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
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
        # micro-batch of records then goes out as one batch per partition instead of several,
        # and the broker stores fewer, larger batches. Still well below Kafka's 1 MB default
        # message.max.bytes.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        # Faust's /router/ and /table/ pages expose internals (and answer 500 for unknown
        # names); the worker serves only its own views.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_application_options=web_options(settings),
        **extra,
    )


def web_options(settings: Settings) -> dict[str, Any]:
    """aiohttp options of the worker's web server: slow clients are cut off.

    Faust runs aiohttp without timeouts (a keep-alive of an hour), so a client sending a
    byte a second held its connection indefinitely. ``keepalive_timeout`` also bounds how
    long a client may take to send its request head (aiohttp's timer runs from the
    connection's start and is not reset by partial data); the middleware bounds handling.
    """
    timeout = settings.web_request_timeout_s

    @web.middleware
    async def request_deadline(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            async with asyncio.timeout(timeout):
                response: web.StreamResponse = await handler(request)
                return response
        except TimeoutError:
            return web.json_response({"error": f"not answered within {timeout} s"}, status=503)

    return {
        "handler_args": {
            "keepalive_timeout": settings.web_keepalive_timeout_s,
            "handler_cancellation": True,
            "lingering_time": 2.0,
        },
        "middlewares": [request_deadline],
    }


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> tuple[faust.App, Runtime]:
    app = _faust_app(settings)
    metrics = metrics or Metrics.create()
    models = ModelHolder(
        settings.model_dir,
        rules_file=settings.rules_file,
        explain=settings.explain,
        max_reasons=settings.max_reasons,
        metrics=metrics,
    )
    models.start()
    metrics.set_model(models.current.version)
    store = RedisFeatureStore(redis_client(settings), per_slot=settings.redis_cluster)
    health = Health()
    pipeline = Pipeline(
        store,
        lambda: models.current,
        metrics,
        topic_sources=topic_sources(settings.topic),
        max_future_ms=settings.max_future_skew_s * 1000,
        fallback=models.rules,
        on_state_lost=lambda exc: _wait_for_state(store, health, metrics, exc),
        dlq_max_value_bytes=settings.dlq_max_value_bytes,
    )
    rt = Runtime(settings, store, models, metrics, pipeline, health)

    names = (settings.topic("web"), settings.topic("email"), settings.topic("crm"))
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
            await _score_stream(app, rt, stream)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            _die(rt, exc)
            raise

    @app.on_partitions_assigned.connect
    def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        rt.health.assigned = True

    @app.timer(interval=settings.model_poll_s)
    async def refresh_model() -> None:
        # Checks run a child process and compile the model: off the event loop.
        if await asyncio.to_thread(rt.models.refresh):
            rt.metrics.set_model(rt.models.current.version)
            rt.metrics.model_swaps.inc()

    @app.timer(interval=HEALTH_INTERVAL_S)
    async def check_health() -> None:
        await _check_redis(rt)

    add_views(app, rt)
    return app, rt


async def _score_stream(app: faust.App, rt: Runtime, stream: faust.StreamT) -> None:
    """The agent's body: take a micro-batch -> ``Pipeline.process`` (which sends its records
    as it goes) -> deliver -> ack, one batch delivering while the next is processed."""
    settings = rt.settings
    if rt.health.agent is not None:
        # Faust restarts a crashed agent; the process is about to exit (``_die``) and the
        # dead agent's batch is unacknowledged: take nothing more.
        await asyncio.Event().wait()
    producer = await app.maybe_start_producer()
    # aiokafka logs every send at DEBUG; under the worker's logging setup that built a
    # LogRecord per record (~3 % of the worker's CPU) only for it to be dropped.
    logging.getLogger("aiokafka").setLevel(max(logging.INFO, log.getEffectiveLevel()))
    await _open_store(rt)
    send = sender(producer)
    topics = (settings.topic("scores"), settings.topic("dlq"), settings.topic("alerts"))
    partitions: dict[str, dict[str, int]] = {}
    batch_wait = settings.batch_wait_ms / 1000
    ack: Callable[[list[Any]], None] | None = None
    if settings.faust_fastpath:
        from leadscore.streamer.faust_fastpath import ack_events, caller_acks, take_events

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
        pub: Publisher,
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
        try:
            await pub.delivered()
        except PublishError:
            rt.metrics.publish_failures.inc()
            raise
        done = time.perf_counter()
        rt.pipeline.delivered(out)
        if ack is not None:
            ack(events)
        rt.metrics.stage_seconds.labels(stage="publish").observe(pub.seconds)
        rt.metrics.stage_seconds.labels(stage="delivery").observe(done - sent)
        rt.metrics.score_latency.observe(done - started)

    try:
        async for batch in batches:
            if settings.fault_inject == "agent":
                raise InjectedFaultError("LEADSCORE_FAULT_INJECT=agent: the agent fails")
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
            pub = Publisher(send, topics, partitions)
            out = await rt.pipeline.process(msgs, pub.emit, defer_alerts=True)
            before, finishing = (
                finishing,
                asyncio.ensure_future(
                    finish(finishing, batch, pub, out, started, time.perf_counter())
                ),
            )
            # A delivery that fails while no further batch comes would go unseen.
            finishing.add_done_callback(lambda task: _on_delivery_done(rt, task))
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


async def _open_store(rt: Runtime) -> None:
    """Adopt the feature state's generation; if Redis lost it, wait for the rebuild."""
    settings = rt.settings

    async def history() -> bool:
        return await asyncio.to_thread(group_has_history, settings)

    while True:
        try:
            await rt.store.open(history)
            return
        except FeatureStateLostError as exc:
            await _wait_for_state(rt.store, rt.health, rt.metrics, exc)
            return
        except (RedisError, OSError) as exc:
            rt.health.redis = f"unreachable: {exc}"
            log.warning("Redis is unavailable at start-up (%s); retrying", exc)
            await asyncio.sleep(1.0)


async def _wait_for_state(
    store: RedisFeatureStore, health: Health, metrics: Metrics, exc: FeatureStateLostError
) -> None:
    """Stop scoring until the feature state is usable again (``leadscore rebuild``)."""
    health.state = str(exc)
    metrics.state_lost.set(1)
    log.error("%s; scoring stops until it is rebuilt", exc)
    while True:
        try:
            generation = await wait_for_ready(store.marker, poll_s=1.0)
            break
        except (RedisError, OSError) as err:
            log.warning("waiting for the feature state: Redis unavailable (%s)", err)
            await asyncio.sleep(1.0)
    store.generation = generation
    health.state = None
    metrics.state_lost.set(0)
    log.warning("feature state generation %s is ready: scoring resumes", generation)


async def _check_redis(rt: Runtime) -> None:
    """Readiness: Redis answers, authenticated, and still holds this worker's state."""
    try:
        await asyncio.wait_for(rt.store.client.ping(), HEALTH_TIMEOUT_S)
        if rt.store.generation and rt.health.state is None:
            await asyncio.wait_for(rt.store.check(), HEALTH_TIMEOUT_S)
    except FeatureStateLostError as exc:
        rt.health.state = str(exc)
        rt.metrics.state_lost.set(1)
        return
    except AuthenticationError as exc:
        rt.health.redis = f"authentication failed: {exc}"
    except (RedisError, OSError, TimeoutError) as exc:
        rt.health.redis = f"unreachable: {type(exc).__name__}: {exc}"
    else:
        rt.health.redis = None
        rt.metrics.redis_up.set(1)
        return
    rt.metrics.redis_up.set(0)


def _on_delivery_done(rt: Runtime, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None and rt.health.agent is None:
        _die(rt, task.exception())  # type: ignore[arg-type]


def _die(rt: Runtime, exc: BaseException) -> None:
    """The agent died: report not ready, then exit non-zero for a supervisor to restart the
    worker. Faust would keep the process up without its agent, and a graceful stop would
    wait for the acks of events the dead agent never finishes."""
    if rt.health.agent is not None:
        return
    rt.health.agent = f"{type(exc).__name__}: {exc}"
    log.critical("the scoring agent died; exiting in %.0f s", CRASH_EXIT_DELAY_S, exc_info=exc)
    asyncio.get_running_loop().call_later(CRASH_EXIT_DELAY_S, _hard_exit, 70)


def _hard_exit(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def add_views(app: faust.App, rt: Runtime) -> None:
    """The worker's web views: /health, /ready, /metrics, /leads/{id}, /score."""

    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        ok, body = rt.readiness(app.rebalancing)
        return web.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics_view(web: View, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type, so the full header goes in headers.
        return web.bytes(
            generate_latest(rt.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # Any id: a slash arrives as %2F (aiohttp routes on the path with %2F kept), and braces,
    # which the default pattern ([^{}/]+) refuses, match too.
    @app.page("/leads/{lead_id:[^/]+}")
    async def lead_view(web: View, request: Request, lead_id: str) -> Response:
        at = request.query.get("at")
        at_ms: int | None = None
        if at == "now":
            at_ms = int(time.time() * 1000)
        elif at:
            at_ms = parse_ts_ms(at)
            if at_ms is None:
                return web.json({"error": "at must be 'now' or an RFC 3339 timestamp"}, status=400)
        try:
            feats = await rt.store.read(lead_id, at_ms)
        except FeatureStateLostError as exc:
            return web.json({"error": str(exc)}, status=503)
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
            try:
                feats = await rt.store.read(str(body["lead_id"]), None)
            except FeatureStateLostError as exc:
                return web.json({"error": str(exc)}, status=503)
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
