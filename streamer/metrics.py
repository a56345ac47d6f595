"""Prometheus metrics, created in one place from a registry that tests can replace."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events: Counter
    dlq: Counter
    score_latency: Histogram
    event_to_score: Histogram
    consume_lag: Histogram
    stage_seconds: Histogram
    batch_size: Histogram
    model_info: Gauge
    model_swaps: Counter
    scores: Counter
    alerts: Counter
    batch_failures: Counter
    save_failures: Counter
    model_errors: Counter
    model_load_failures: Counter
    model_degraded: Gauge
    state_lost: Gauge
    redis_up: Gauge
    publish_failures: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        reg = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=reg,
            events=Counter(
                "leadscore_events_total",
                "Events consumed, by source and outcome (scored, duplicate, late, invalid)",
                ["source", "outcome"],
                registry=reg,
            ),
            dlq=Counter(
                "leadscore_dlq_total",
                "Messages sent to the dead-letter topic, by error code",
                ["code"],
                registry=reg,
            ),
            score_latency=Histogram(
                "leadscore_score_latency_seconds",
                "Time from a batch reaching the worker to its score records being sent",
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            event_to_score=Histogram(
                "leadscore_event_to_score_seconds",
                "Time from an event's Kafka timestamp (produce time) to its score being sent",
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            consume_lag=Histogram(
                "leadscore_consume_lag_seconds",
                "Time from an event's Kafka timestamp to its batch starting in the worker",
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            stage_seconds=Histogram(
                "leadscore_stage_seconds",
                "Time per batch in each stage of the hot path",
                ["stage"],
                buckets=_LATENCY_BUCKETS,
                registry=reg,
            ),
            batch_size=Histogram(
                "leadscore_batch_events",
                "Events per micro-batch",
                buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
                registry=reg,
            ),
            model_info=Gauge(
                "leadscore_model_info",
                "The model scoring events (value 1 for the active version)",
                ["version"],
                registry=reg,
            ),
            model_swaps=Counter(
                "leadscore_model_swaps_total",
                "Times a newly promoted model was hot-swapped in",
                registry=reg,
            ),
            scores=Counter(
                "leadscore_scores_total",
                "Score records published, by tier",
                ["tier"],
                registry=reg,
            ),
            alerts=Counter(
                "leadscore_alerts_total",
                "Tier-change alerts published",
                ["to_tier"],
                registry=reg,
            ),
            batch_failures=Counter(
                "leadscore_batch_failures_total",
                "Micro-batches that failed as a whole and were processed again message by "
                "message (a message that failed alone went to the DLQ as internal_error)",
                registry=reg,
            ),
            save_failures=Counter(
                "leadscore_score_save_failures_total",
                "Batches whose latest scores could not be saved in Redis (no tier alerts)",
                registry=reg,
            ),
            model_errors=Counter(
                "leadscore_model_errors_total",
                "Chunks a model failed to score (scored by the rules instead)",
                ["version"],
                registry=reg,
            ),
            model_load_failures=Counter(
                "leadscore_model_load_failures_total",
                "Registry models that failed their checks or to load (the last good model "
                "kept scoring)",
                registry=reg,
            ),
            model_degraded=Gauge(
                "leadscore_model_degraded",
                "1 while the worker scores with another model than the registry's champion, "
                "because the champion failed to load",
                registry=reg,
            ),
            state_lost=Gauge(
                "leadscore_feature_state_lost",
                "1 while Redis has lost the feature state and scoring waits for "
                "`leadscore rebuild`",
                registry=reg,
            ),
            redis_up=Gauge(
                "leadscore_redis_up",
                "1 when the last readiness check reached Redis (and authenticated)",
                registry=reg,
            ),
            publish_failures=Counter(
                "leadscore_publish_failures_total",
                "Batches whose records the broker did not take (sent again, then the worker stops)",
                registry=reg,
            ),
        )

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)


def observe_many(hist: Histogram, values: Sequence[float]) -> None:
    """``hist.observe(v)`` for every ``v``, with one increment per bucket instead of two
    locked increments per value (two histograms observed per event showed up among the
    worker's top costs). Falls back to observing one by one on a client without the
    internals used here."""
    if not len(values):
        return
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for v in values:
            hist.observe(v)
        return
    hist._raise_if_not_observable()  # a labelled parent must not be observed
    amounts = np.asarray(values, dtype=np.float64)
    # A value falls in the first bucket whose upper bound is >= it, as in observe().
    counts = np.bincount(np.searchsorted(bounds, amounts, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts).tolist():
        buckets[i].inc(int(counts[i]))
    total.inc(float(amounts.sum()))
