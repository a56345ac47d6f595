"""What the worker's agent, timers and views share, and the worker's health.

``/ready`` is 200 only when this worker scores events now: its agent runs, Redis answers
(and accepts the password), the feature state is intact, and its consumer group is joined.
A model problem (the champion failed its checks) leaves it ready but ``degraded``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import AuthenticationError, RedisError

from leadscore.features import retry
from leadscore.features.exceptions import FeatureStateLostError
from leadscore.features.state import check_layout, wait_for_ready
from leadscore.features.store import RedisFeatureStore
from leadscore.infra.redis import redis_client
from leadscore.infra.topics import group_has_history
from leadscore.model.scoring import Scorer
from leadscore.settings import Settings
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.models import ModelHolder
from leadscore.streamer.pipeline import AlertSettings, Pipeline, topic_sources

log = logging.getLogger(__name__)

#: A readiness check waits this long for Redis before calling it unreachable.
HEALTH_TIMEOUT_S = 2.0
STATE_POLL_S = 1.0


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
    """The store, the model holder, the pipeline, metrics and health of one worker."""

    settings: Settings
    store: RedisFeatureStore
    models: ModelHolder
    metrics: Metrics
    pipeline: Pipeline
    health: Health = field(default_factory=Health)

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics | None = None) -> Runtime:
        metrics = metrics or Metrics.create()
        models = ModelHolder(
            settings.registry_root,
            rules_file=settings.rules_file,
            explain=settings.explain,
            max_reasons=settings.max_reasons,
            metrics=metrics,
            count_drift=settings.drift_bins,
        )
        models.start()
        metrics.set_model(models.current.version, created_at(models.current))
        store = RedisFeatureStore(
            redis_client(settings),
            per_slot=settings.redis_cluster,
            ttl_s=settings.state_ttl_s,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
        health = Health()
        pipeline = Pipeline(
            store,
            lambda: models.current,
            metrics,
            topic_sources=topic_sources(settings.topic),
            max_future_ms=settings.max_future_skew_s * 1000,
            fallback=models.rules,
            on_state_lost=lambda exc: wait_for_state(store, health, metrics, exc),
            dlq_max_value_bytes=settings.dlq_max_value_bytes,
            redactor=settings.redactor,
            dlq_keep_raw=settings.dlq_keep_raw,
            shadow=lambda: models.shadow,
            experiment=lambda: models.experiment,
            alert_policy=AlertSettings(
                settings.alert_margin, int(settings.alert_interval_s * 1000)
            ),
        )
        return cls(settings, store, models, metrics, pipeline, health)

    def readiness(self, rebalancing: bool) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)`` of ``/ready``."""
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
        if self.models.shadow is not None:
            body["shadow_version"] = self.models.shadow.version
        exp = self.models.experiment
        if exp is not None:
            body["experiment"] = {k: v for k, v in exp.experiment.as_dict().items() if k != "salt"}
        if self.models.side_problem:
            body["side_problem"] = self.models.side_problem
        return ready, body

    async def open_store(self) -> None:
        """Adopt the feature state's generation; if Redis lost it, wait for the rebuild."""
        settings = self.settings

        async def history() -> bool:
            return await asyncio.to_thread(group_has_history, settings)

        while True:
            try:
                await self.store.open(history)
                return
            except FeatureStateLostError as exc:
                await wait_for_state(self.store, self.health, self.metrics, exc)
                return
            except (RedisError, OSError) as exc:
                self.health.redis = f"unreachable: {exc}"
                log.warning("Redis is unavailable at start-up (%s); retrying", exc)
                await asyncio.sleep(STATE_POLL_S)

    async def check_redis(self) -> None:
        """Readiness: Redis answers, authenticated, and still holds this worker's state."""
        try:
            await asyncio.wait_for(self.store.client.ping(), HEALTH_TIMEOUT_S)
            if self.store.generation and self.health.state is None:
                await asyncio.wait_for(self.store.check(), HEALTH_TIMEOUT_S)
            elif self.health.state is not None:
                await asyncio.wait_for(self._adopt_rebuilt_state(), HEALTH_TIMEOUT_S)
        except FeatureStateLostError as exc:
            self.health.state = str(exc)
            self.metrics.state_lost.set(1)
            return
        except AuthenticationError as exc:
            retry.STATS.errors += 1
            self.health.redis = f"authentication failed: {exc}"
        except (RedisError, OSError, TimeoutError) as exc:
            retry.STATS.errors += 1
            self.health.redis = f"unreachable: {type(exc).__name__}: {exc}"
        else:
            self.health.redis = None
            self.metrics.redis_up.set(1)
            return
        self.metrics.redis_up.set(0)

    async def _adopt_rebuilt_state(self) -> None:
        """An idle worker that saw its state lost resumes once a rebuild is done (a busy
        one does in ``wait_for_state``, where its batch waits)."""
        st = await self.store.marker.status()
        if (
            st.status == "ready"
            and st.generation
            and await self.store.marker.marker_holds(st.generation)
        ):
            # Another release's rebuild: stay not ready (check_redis reports it).
            check_layout(st.generation, self.store.marker.layout)
            self.store.generation = st.generation
            self.health.state = None
            self.metrics.state_lost.set(0)
            log.warning("feature state generation %s is ready: scoring resumes", st.generation)


def created_at(scorer: Scorer) -> str | None:
    """When a registry model was trained (the rules have no such time)."""
    meta = getattr(scorer, "meta", None)
    return getattr(meta, "created_at", None) or None


async def wait_for_state(
    store: RedisFeatureStore, health: Health, metrics: Metrics, exc: FeatureStateLostError
) -> None:
    """Stop scoring until the feature state is usable again (``leadscore rebuild``)."""
    health.state = str(exc)
    metrics.state_lost.set(1)
    log.error("%s; scoring stops until it is rebuilt", exc)
    while True:
        try:
            generation = await wait_for_ready(store.marker, poll_s=STATE_POLL_S)
            break
        except (RedisError, OSError) as err:
            log.warning("waiting for the feature state: Redis unavailable (%s)", err)
            await asyncio.sleep(STATE_POLL_S)
    store.generation = generation
    health.state = None
    metrics.state_lost.set(0)
    log.warning("feature state generation %s is ready: scoring resumes", generation)
