"""Prometheus metrics, declared in one table and created from a registry that tests can replace."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, get_args

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from leadscore.features import retry
from leadscore.infra.prom import process_registry
from leadscore.model.drift import LiveBins
from leadscore.model.scoring import Tier
from leadscore.schemas import SOURCES
from leadscore.schemas.validation import ErrorCode

EVENT_OUTCOMES = (
    "scored",
    "redelivered",
    "duplicate",
    "late",
    "erased",
    "opted_out",
    "invalid",
    "failed",
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Spec(NamedTuple):
    attr: str
    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    doc: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None

    def make(self, registry: CollectorRegistry) -> Any:
        if self.buckets is not None:
            return Histogram(
                self.name, self.doc, self.labels, buckets=self.buckets, registry=registry
            )
        return self.kind(self.name, self.doc, self.labels, registry=registry)


#: Each metric: its attribute, kind, name, help text, labels and (histograms) buckets.
_SPECS: tuple[_Spec, ...] = (
    _Spec(
        "events",
        Counter,
        "leadscore_events_total",
        "Events consumed, by source and outcome (scored, redelivered, duplicate, late, erased: "
        "an erased lead's, dropped; opted_out: applied, not scored; invalid, failed)",
        ("source", "outcome"),
        None,
    ),
    _Spec(
        "dlq",
        Counter,
        "leadscore_dlq_total",
        "Messages sent to the dead-letter topic, by error code",
        ("code",),
        None,
    ),
    _Spec(
        "score_latency",
        Histogram,
        "leadscore_score_latency_seconds",
        "Time from a batch reaching the worker to its score records being sent",
        (),
        _LATENCY_BUCKETS,
    ),
    _Spec(
        "event_to_score",
        Histogram,
        "leadscore_event_to_score_seconds",
        "Time from an event's Kafka timestamp (produce time) to its score being sent",
        (),
        _LATENCY_BUCKETS,
    ),
    _Spec(
        "consume_lag",
        Histogram,
        "leadscore_consume_lag_seconds",
        "Time from an event's Kafka timestamp to its batch starting in the worker",
        (),
        _LATENCY_BUCKETS,
    ),
    _Spec(
        "stage_seconds",
        Histogram,
        "leadscore_stage_seconds",
        "Time per batch in each stage of the hot path",
        ("stage",),
        _LATENCY_BUCKETS,
    ),
    _Spec(
        "batch_size",
        Histogram,
        "leadscore_batch_events",
        "Events per micro-batch",
        (),
        (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
    ),
    _Spec(
        "model_info",
        Gauge,
        "leadscore_model_info",
        "The model scoring events (value 1 for the active version)",
        ("version",),
        None,
    ),
    _Spec(
        "model_swaps",
        Counter,
        "leadscore_model_swaps_total",
        "Times a newly promoted model was hot-swapped in",
        (),
        None,
    ),
    _Spec(
        "scores",
        Counter,
        "leadscore_scores_total",
        "Score records published, by tier",
        ("tier",),
        None,
    ),
    _Spec(
        "alerts",
        Counter,
        "leadscore_alerts_total",
        "Tier-change alerts published",
        ("to_tier",),
        None,
    ),
    _Spec(
        "alerts_suppressed",
        Counter,
        "leadscore_alerts_suppressed_total",
        "Tier changes not announced: within the margin of the boundary, within the interval "
        "since the lead's last alert, or made by a new model version (one summary record)",
        ("reason",),
        None,
    ),
    _Spec(
        "batch_failures",
        Counter,
        "leadscore_batch_failures_total",
        "Micro-batches that failed as a whole and were processed again message by "
        "message (a message that failed alone went to the DLQ as internal_error)",
        (),
        None,
    ),
    _Spec(
        "save_failures",
        Counter,
        "leadscore_score_save_failures_total",
        "Batches whose latest scores could not be saved in Redis (no tier alerts)",
        (),
        None,
    ),
    _Spec(
        "model_errors",
        Counter,
        "leadscore_model_errors_total",
        "Chunks a model failed to score (scored by the rules instead)",
        ("version",),
        None,
    ),
    _Spec(
        "model_load_failures",
        Counter,
        "leadscore_model_load_failures_total",
        "Registry models that failed their checks or to load (the last good model kept scoring)",
        (),
        None,
    ),
    _Spec(
        "model_degraded",
        Gauge,
        "leadscore_model_degraded",
        "1 while the worker scores with another model than the registry's champion, "
        "because the champion failed to load",
        (),
        None,
    ),
    _Spec(
        "state_lost",
        Gauge,
        "leadscore_feature_state_lost",
        "1 while Redis has lost the feature state and scoring waits for `leadscore rebuild`",
        (),
        None,
    ),
    _Spec(
        "redis_up",
        Gauge,
        "leadscore_redis_up",
        "1 when the last readiness check reached Redis (and authenticated)",
        (),
        None,
    ),
    _Spec(
        "ready",
        Gauge,
        "leadscore_ready",
        "1 when /ready answers 200 (Redis, feature state, agent and partitions all fine)",
        (),
        None,
    ),
    _Spec(
        "last_event",
        Gauge,
        "leadscore_last_event_timestamp_seconds",
        "Kafka timestamp of the newest event consumed, per source",
        ("source",),
        None,
    ),
    _Spec(
        "model_created",
        Gauge,
        "leadscore_model_created_timestamp_seconds",
        "When the active model was trained (its age is time() minus this)",
        ("version",),
        None,
    ),
    _Spec(
        "publish_failures",
        Counter,
        "leadscore_publish_failures_total",
        "Batches whose records the broker did not take (sent again, then the worker stops)",
        (),
        None,
    ),
)


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
    alerts_suppressed: Counter
    batch_failures: Counter
    save_failures: Counter
    model_errors: Counter
    model_load_failures: Counter
    model_degraded: Gauge
    state_lost: Gauge
    redis_up: Gauge
    publish_failures: Counter
    ready: Gauge
    last_event: Gauge
    model_created: Gauge
    live: LiveCollector

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """The worker's metrics on ``registry``; without one, on a new registry that also
        carries the process (memory, CPU, open files), Python platform and garbage
        collector metrics ops expect from any Prometheus target."""
        if registry is None:
            registry = process_registry()
        live = LiveCollector()
        registry.register(live)
        m = cls(registry=registry, live=live, **{spec.attr: spec.make(registry) for spec in _SPECS})
        m._zero_known_labels()
        return m

    def _zero_known_labels(self) -> None:
        """Export the known label values at 0 from the start: a series that appears only
        with its first increment makes ``rate()`` miss that increment, and dashboards and
        alert rules find nothing to read."""
        for source in SOURCES:
            for outcome in EVENT_OUTCOMES:
                self.events.labels(source=source, outcome=outcome)
        for code in get_args(ErrorCode):
            self.dlq.labels(code=code)
        for tier in get_args(Tier):
            self.scores.labels(tier=tier)
            self.alerts.labels(to_tier=tier)
        for reason in ("margin", "interval", "model_swap"):
            self.alerts_suppressed.labels(reason=reason)

    def set_model(self, version: str, created_at: str | None = None) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)
        self.model_errors.labels(version=version)
        self.model_created.clear()
        if created_at:
            try:
                when = datetime.fromisoformat(created_at).timestamp()
            except ValueError:
                return
            self.model_created.labels(version=version).set(when)


class LiveCollector(Collector):
    """Exports, at scrape time, what the hot path only adds to plain numbers: each model's
    live bin counts (:class:`~leadscore.model.drift.LiveBins`) and the Redis retry counts
    (:mod:`leadscore.features.retry`). A labelled Prometheus counter per bin would cost a
    locked increment per bin and batch instead of one numpy addition."""

    def __init__(self) -> None:
        self._bins: dict[str, LiveBins] = {}
        self._lock = threading.Lock()

    def track(self, version: str, live: LiveBins) -> None:
        """Export ``live`` as ``version``'s counts (a version's counters stay exported
        after it stops scoring, so a rate over them ends instead of breaking)."""
        with self._lock:
            self._bins.setdefault(version, live)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "leadscore_redis_errors",
            "Redis calls that failed (and were retried, or given up)",
            value=retry.STATS.errors,
        )
        yield CounterMetricFamily(
            "leadscore_redis_retries",
            "Redis calls tried again after a failure",
            value=retry.STATS.retries,
        )
        features = CounterMetricFamily(
            "leadscore_feature_bin",
            "Feature vectors scored, per feature, in the model's reference bins (bin index, "
            "or missing)",
            labels=("model_version", "feature", "bin"),
        )
        scores = CounterMetricFamily(
            "leadscore_score_bin",
            "Scores published, in the model's reference score bins",
            labels=("model_version", "bin"),
        )
        with self._lock:
            tracked = list(self._bins.items())
        for version, live in tracked:
            counts = live.counts.tolist()
            for row, bins in zip(counts, live.reference.all, strict=True):
                for label, n in zip(bins.bin_names, row, strict=False):
                    if bins is live.reference.score:
                        scores.add_metric((version, label), n)
                    else:
                        features.add_metric((version, bins.name, label), n)
        yield features
        yield scores

    def describe(self) -> Iterator[Metric]:
        return iter(())


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
