"""``leadscore monitor``: one process that reads the scores and the CRM outcomes (and the
enrichment firmographics, for segments), keeps the labelled sample
(:mod:`leadscore.monitor.book`), scrapes the workers' bin counters, and every
``monitor_interval_s`` computes online performance, the estimate for pending moments, drift
and fairness per model version. Figures go to its ``/metrics`` and to a report file
(``leadscore monitor report``).

One process, not one per worker: an AUC needs every moment in one place (per-worker AUC
gauges cannot be combined). Its state (the read offsets, the sample, the history) is saved
atomically after every evaluation; a restarted monitor carries on from there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from leadscore.features.definitions import DAY_MS, ENRICHMENT_FIELDS, SPECS, Profile
from leadscore.features.wire import profile_updates
from leadscore.infra.topics import INPUT_TOPICS
from leadscore.model.drift import Reference, compare
from leadscore.model.performance import FAIRNESS_METRICS, estimated, fairness, performance
from leadscore.model.registry import Registry
from leadscore.monitor.book import Book, Labelled
from leadscore.monitor.scrape import Scraper, Window
from leadscore.schemas.validation import Event, parse_ts_ms, validate_event
from leadscore.settings import Settings

log = logging.getLogger(__name__)

HISTORY_MAX = 2000
"""Evaluations kept for the report's plots (about 8 hours at the default interval)."""
STATE_FILE = "state.json"
REPORT_FILE = "report.json"
INPUTS = INPUT_TOPICS
#: The segments an enrichment firmographics event sets: the model's profile features of
#: leads.enrichment (``firmo_revenue_band``, ``firmo_industry_sector``), by the stamped
#: attribute each reads. A CRM segment is named by its attribute, which its feature shares.
ENRICHMENT_SEGMENTS: dict[str, str] = {
    s.name: s.key for s in SPECS if isinstance(s, Profile) and s.key in ENRICHMENT_FIELDS
}


def enrichment_segments(settings: Settings) -> set[str]:
    """The configured segments an enrichment event sets (none: leads.enrichment unread)."""
    return set(Settings.names(settings.monitor_segments)) & set(ENRICHMENT_SEGMENTS)


def _iso(ms: int | float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


class _Gauges(Collector):
    """The monitor's metrics: every evaluation sets them from scratch into a new snapshot,
    which replaces the exported one in one step when the evaluation is done. A segment or
    feature that left the report leaves ``/metrics`` too, and a scrape never sees a half-set
    evaluation (clearing labelled gauges and setting them again left scrapes without them)."""

    SPECS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
        ("auc", "leadscore_online_roc_auc", "ROC AUC of matured moments", ("model_version",)),
        (
            "pr",
            "leadscore_online_pr_auc",
            "PR AUC (average precision) of matured moments",
            ("model_version",),
        ),
        ("brier", "leadscore_online_brier", "Brier score of matured moments", ("model_version",)),
        (
            "ece",
            "leadscore_online_ece",
            "Expected calibration error of matured moments (10 equal-count bins)",
            ("model_version",),
        ),
        (
            "lift",
            "leadscore_online_top_decile_lift",
            "Conversion rate of the top-scored tenth over the overall rate",
            ("model_version",),
        ),
        (
            "tier_rate",
            "leadscore_online_conversion_rate",
            "Conversion rate of matured moments per tier",
            ("model_version", "tier"),
        ),
        (
            "moments",
            "leadscore_online_moments",
            "Sampled moments in the window: matured, positive (of matured), pending",
            ("model_version", "state"),
        ),
        (
            "est_auc",
            "leadscore_estimated_roc_auc",
            "ESTIMATE (CBPE, from calibrated scores, no labels) of the ROC AUC of pending moments",
            ("model_version",),
        ),
        (
            "est_brier",
            "leadscore_estimated_brier",
            "ESTIMATE (CBPE) of the Brier score of pending moments",
            ("model_version",),
        ),
        (
            "est_rate",
            "leadscore_estimated_conversion_rate",
            "ESTIMATE (CBPE) of the conversion rate of pending moments",
            ("model_version",),
        ),
        (
            "train_auc",
            "leadscore_model_training_roc_auc",
            "The model's held-out ROC AUC at training",
            ("model_version",),
        ),
        (
            "psi",
            "leadscore_drift_psi",
            "Population stability index of the drift window against the model's reference",
            ("model_version", "feature"),
        ),
        (
            "js",
            "leadscore_drift_js_distance",
            "Jensen-Shannon distance of the drift window against the reference",
            ("model_version", "feature"),
        ),
        (
            "psi_thr",
            "leadscore_drift_psi_threshold",
            "The PSI above which a feature is drifted (no-drift quantile at the family-wise alpha)",
            ("model_version", "feature"),
        ),
        (
            "alarm",
            "leadscore_drift_alarm",
            "1 when the feature's PSI is above its threshold",
            ("model_version", "feature"),
        ),
        (
            "alarms",
            "leadscore_drift_alarms",
            "Features (and the score) drifted in the current window",
            ("model_version",),
        ),
        (
            "window",
            "leadscore_drift_window_vectors",
            "Feature vectors in the drift window",
            ("model_version",),
        ),
        (
            "seen",
            "leadscore_drift_vectors_seen",
            "Feature vectors counted by the workers since the monitor started",
            ("model_version",),
        ),
        (
            "fair",
            "leadscore_fairness_ratio",
            "Segment rate over the overall rate (hot_share, tpr, fpr)",
            ("model_version", "attribute", "segment", "metric"),
        ),
        (
            "fair_lo",
            "leadscore_fairness_ratio_low",
            "Lower end of the ratio's 95% bootstrap interval",
            ("model_version", "attribute", "segment", "metric"),
        ),
        (
            "fair_hi",
            "leadscore_fairness_ratio_high",
            "Upper end of the ratio's 95% bootstrap interval",
            ("model_version", "attribute", "segment", "metric"),
        ),
        (
            "gap",
            "leadscore_fairness_calibration_gap",
            "Mean score minus conversion rate in the segment",
            ("model_version", "attribute", "segment"),
        ),
        (
            "lag",
            "leadscore_consumer_lag",
            "Messages the workers' consumer group is behind, per partition",
            ("group", "topic", "partition"),
        ),
        (
            "updated",
            "leadscore_monitor_last_update_timestamp_seconds",
            "When the monitor last evaluated",
            (),
        ),
        (
            "watermark",
            "leadscore_monitor_watermark_timestamp_seconds",
            "Event time the monitor has read outcomes up to",
            (),
        ),
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self._next: dict[str, dict[tuple[str, ...], float]] = {}
        self._shown: dict[str, dict[tuple[str, ...], float]] = {}
        registry.register(self)

    def clear(self) -> None:
        """Start the next snapshot."""
        self._next = {attr: {} for attr, _, _, _ in self.SPECS}

    def set(self, attr: str, value: float | None, *labels: str) -> None:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return
        self._next.setdefault(attr, {})[labels] = float(value)

    def commit(self) -> None:
        self._shown = self._next

    def collect(self) -> Iterator[Metric]:
        shown = self._shown
        for attr, name, doc, labels in self.SPECS:
            fam = GaugeMetricFamily(name, doc, labels=labels)
            for values, v in shown.get(attr, {}).items():
                fam.add_metric(list(values), v)
            yield fam

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Monitor:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.dir = Path(settings.monitor_state_dir)
        self.book = Book()
        self.offsets: dict[tuple[str, int], int] = {}
        self.history: list[dict[str, Any]] = []
        self.cohorts: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.scraper = Scraper(Settings.names(settings.monitor_scrape))
        self.windows: dict[str, Window] = {}
        self.models = Registry(settings.registry_root)
        self._meta: dict[str, dict[str, Any] | None] = {}
        self.registry = registry or CollectorRegistry()
        self.gauges = _Gauges(self.registry)
        self.records = Counter(
            "leadscore_monitor_records",
            "Records the monitor has read, per topic",
            ("topic",),
            registry=self.registry,
        )
        self.last_report: dict[str, Any] = {}
        self.stop = threading.Event()
        self._load()

    # ---------------------------------------------------------------------- state
    def _load(self) -> None:
        path = self.dir / STATE_FILE
        if not path.is_file():
            return
        d = orjson.loads(path.read_bytes())
        self.book = Book.from_dict(d["book"])
        self.offsets = {(t, int(p)): int(o) for t, p, o in d.get("offsets", [])}
        self.history = d.get("history", [])
        for v, cs in d.get("cohorts", {}).items():
            self.cohorts[v] = cs
        log.info("monitor state loaded from %s: %d leads", path, len(self.book.leads))

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {
            "book": self.book.as_dict(),
            "offsets": [[t, p, o] for (t, p), o in self.offsets.items()],
            "history": self.history,
            "cohorts": self.cohorts,
        }
        _atomic_write(self.dir / STATE_FILE, orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY))
        report = {**self.last_report, "history": self.history, "cohorts": self.cohorts}
        _atomic_write(
            self.dir / REPORT_FILE,
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY),
        )

    # ---------------------------------------------------------------------- input
    def handle(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        self.offsets[(topic, partition)] = offset + 1
        self.records.labels(topic=topic).inc()
        enrichment = self.settings.topic("enrichment")
        if value is None:
            # A tombstone: the lead was erased (`leadscore forget`); so is what we hold on it.
            if key is not None and topic not in (self.settings.topic("crm"), enrichment):
                self.book.leads.pop(key.decode("utf-8", "replace"), None)
            return
        if topic == enrichment:
            self._enrichment(key, value)
            return
        try:
            rec = orjson.loads(value)
        except orjson.JSONDecodeError:
            return  # the worker dead-letters bad input; it is not an outcome or a score
        if not isinstance(rec, dict):
            return
        if topic == self.settings.topic("crm"):
            self._crm(rec)
        else:
            self._score(rec)

    def _score(self, rec: dict[str, Any]) -> None:
        try:
            t = parse_ts_ms(rec["event_ts"])
            if t is None:
                return
            self.book.score(
                str(rec["lead_id"]),
                str(rec["model_version"]),
                str(rec["event_id"]),
                t,
                float(rec["score"]),
                str(rec["tier"]),
            )
        except (KeyError, TypeError, ValueError):
            return

    def _crm(self, rec: dict[str, Any]) -> None:
        lead, kind, ts = rec.get("lead_id"), rec.get("type"), rec.get("ts")
        if not isinstance(lead, str) or not isinstance(kind, str) or not isinstance(ts, str):
            return
        t = parse_ts_ms(ts)
        if t is None:
            return
        attrs = rec.get("attributes")
        wanted = Settings.names(self.settings.monitor_segments)
        seg = (
            {k: v for k, v in attrs.items() if k in wanted and isinstance(v, str | int | float)}
            if isinstance(attrs, dict)
            else {}
        )
        # Kept in the monitor's state: redacted as the worker redacts what it keeps.
        self.book.crm(lead, kind, t, self.settings.redactor.redact_value(seg) if seg else seg)

    def _enrichment(self, key: bytes | None, value: bytes) -> None:
        """Segments from a firmographics event, valued as the worker's features are: only
        an event the worker takes (validated, redacted as it redacts), through the same
        ``profile_updates`` (an industry code becomes its sector)."""
        wanted = enrichment_segments(self.settings)
        if not wanted:
            return
        ev = validate_event(
            value,
            topic_source="enrichment",
            key=key,
            now_ms=int(self.clock() * 1000),
            max_future_ms=self.settings.max_future_skew_s * 1000,
            redactor=self.settings.redactor,
        )
        if not isinstance(ev, Event) or ev.type != "firmographics":
            return
        updates = profile_updates(ev)
        seg = {name: updates.get(ENRICHMENT_SEGMENTS[name]) for name in wanted}
        self.book.profile(ev.lead_id, ev.ts_ms, {k: v for k, v in seg.items() if v})

    # ---------------------------------------------------------------------- models
    def meta(self, version: str) -> dict[str, Any] | None:
        if version not in self._meta:
            try:
                self._meta[version] = self.models.meta(version)
            except Exception:  # noqa: BLE001 - a rules version, or one not in this registry
                self._meta[version] = None
        return self._meta[version]

    def horizon_ms(self, version: str) -> int:
        meta = self.meta(version) or {}
        days = meta.get("horizon_days") or self.settings.monitor_horizon_days
        return int(float(days) * DAY_MS)

    def reference(self, version: str) -> Reference | None:
        meta = self.meta(version) or {}
        ref = meta.get("reference")
        return Reference.from_dict(ref) if ref else None

    def training_auc(self, version: str) -> float | None:
        meta = self.meta(version) or {}
        auc = ((meta.get("metrics") or {}).get("test") or {}).get("auc")
        return float(auc) if auc is not None else None

    # ---------------------------------------------------------------------- evaluation
    def evaluate(self, lag: list[tuple[str, str, int, int]] | None = None) -> dict[str, Any]:
        """Compute every figure, set the gauges, append to the history."""
        s = self.settings
        window_ms = int(s.monitor_window_days * DAY_MS)
        if self.scraper.urls:
            self.scraper.scrape()
        versions = sorted(self.book.versions() | {v for v, _, _ in self.scraper.totals})
        horizons = {v: self.horizon_ms(v) for v in versions}
        out: dict[str, Any] = {
            "at": _iso(self.clock() * 1000),
            "watermark": _iso(self.book.watermark_ms) if self.book.watermark_ms else None,
            "window_days": s.monitor_window_days,
            "versions": {},
        }
        self.gauges.clear()
        for v in versions:
            out["versions"][v] = self._version(v, horizons[v], window_ms)
        if lag:
            out["consumer_lag"] = [
                {"group": g, "topic": t, "partition": p, "lag": n} for g, t, p, n in lag
            ]
            for g, t, p, n in lag:
                self.gauges.set("lag", n, g, t, str(p))
        self.gauges.set("updated", self.clock())
        if self.book.watermark_ms:
            self.gauges.set("watermark", self.book.watermark_ms / 1000)
        self.gauges.commit()
        self.book.compact(horizons, window_ms)
        self.last_report = out
        self.history.append(_history_point(out))
        del self.history[:-HISTORY_MAX]
        return out

    def _version(self, v: str, horizon_ms: int, window_ms: int) -> dict[str, Any]:
        rows = list(self.book.matured(v, horizon_ms, window_ms))
        p = np.asarray([r.score for _, _, r in rows], dtype=np.float64)
        y = np.asarray([r.label for _, _, r in rows], dtype=np.int64)
        tiers = [r.tier for _, _, r in rows]
        perf = performance(p, y, tiers)
        pending = self.book.pending(v, horizon_ms)
        est = estimated(np.asarray([r.score for r in pending], dtype=np.float64))
        g = self.gauges
        g.set("auc", perf["roc_auc"], v)
        g.set("pr", perf["pr_auc"], v)
        g.set("brier", perf["brier"], v)
        g.set("ece", perf["ece"], v)
        g.set("lift", perf["top_decile_lift"], v)
        for tier, t in perf["tiers"].items():
            g.set("tier_rate", t["conversion_rate"], v, tier)
        g.set("moments", perf["moments"], v, "matured")
        g.set("moments", perf["positives"], v, "positive")
        g.set("moments", est["moments"], v, "pending")
        g.set("est_auc", est["roc_auc"], v)
        g.set("est_brier", est["brier"], v)
        g.set("est_rate", est["conversion_rate"], v)
        train_auc = self.training_auc(v)
        g.set("train_auc", train_auc, v)
        self._cohorts(v, [r for _, _, r in rows], pending)
        segments = {
            attr: [b.segments.get(attr, (0, None))[1] for _, b, _ in rows]
            for attr in Settings.names(self.settings.monitor_segments)
        }
        fair = fairness(
            p,
            y,
            tiers,
            [r.lead_id for _, _, r in rows],
            segments,
            min_group=self.settings.monitor_min_group,
        )
        for f in fair:
            for m in FAIRNESS_METRICS:
                labels = (v, f["attribute"], f["segment"], m)
                g.set("fair", f[f"{m}_ratio"], *labels)
                g.set("fair_lo", f[f"{m}_ratio_low"], *labels)
                g.set("fair_hi", f[f"{m}_ratio_high"], *labels)
            g.set("gap", f["calibration_gap"], v, f["attribute"], f["segment"])
        return {
            "horizon_days": horizon_ms / DAY_MS,
            "training_roc_auc": train_auc,
            "performance": perf,
            "estimate": est,
            "drift": self._drift(v),
            "fairness": fair,
        }

    def _cohorts(self, v: str, matured: list[Labelled], pending: list[Labelled]) -> None:
        """Per day of scoring: the estimate made while the day's moments were pending, and
        the measured AUC once they matured (how close the estimate came)."""
        by_day: dict[str, list[Labelled]] = defaultdict(list)
        for r in pending:
            by_day[_iso(r.t_ms)[:10]].append(r)
        cs = self.cohorts[v]
        for day, rs in by_day.items():
            e = estimated(np.asarray([r.score for r in rs], dtype=np.float64))
            c = cs.setdefault(day, {})
            if "measured_roc_auc" not in c:
                c.update(
                    estimated_roc_auc=e["roc_auc"],
                    estimated_conversion_rate=e["conversion_rate"],
                    estimated_from=len(rs),
                )
        done: dict[str, list[Labelled]] = defaultdict(list)
        for r in matured:
            day = _iso(r.t_ms)[:10]
            if day in cs:
                done[day].append(r)
        for day, rs in done.items():
            if day in by_day:
                continue  # the day is not wholly matured yet
            p = np.asarray([r.score for r in rs], dtype=np.float64)
            y = np.asarray([r.label for r in rs], dtype=np.int64)
            perf = performance(p, y, [r.tier for r in rs])
            cs[day].update(
                measured_roc_auc=perf["roc_auc"],
                measured_conversion_rate=perf["conversion_rate"],
                measured_from=len(rs),
            )
        for day in sorted(cs)[:-400]:
            del cs[day]

    def _drift(self, v: str) -> list[dict[str, Any]]:
        ref = self.reference(v)
        if ref is None or not self.scraper.urls:
            return []
        counts = self.scraper.counts(v, ref)
        seen = float(counts[-1].sum())
        if not seen:
            return []
        w = self.windows.setdefault(v, Window(self.settings.monitor_drift_window))
        w.push(counts)
        live = w.current()
        if live is None:
            return []
        results = compare(ref, live, alpha=self.settings.monitor_drift_alpha)
        g = self.gauges
        for r in results:
            g.set("psi", r.psi, v, r.feature)
            g.set("js", r.js_distance, v, r.feature)
            bound = r.psi_threshold if np.isfinite(r.psi_threshold) else None
            g.set("psi_thr", bound, v, r.feature)
            g.set("alarm", 1.0 if r.alarm else 0.0, v, r.feature)
        g.set("alarms", float(sum(r.alarm for r in results)), v)
        g.set("window", float(live[-1].sum()), v)
        g.set("seen", seen, v)
        return [
            {
                "feature": r.feature,
                "psi": r.psi,
                "psi_threshold": r.psi_threshold if np.isfinite(r.psi_threshold) else None,
                "js_distance": r.js_distance,
                "js_threshold": r.js_threshold if np.isfinite(r.js_threshold) else None,
                "alarm": r.alarm,
                "window": r.window,
            }
            for r in results
        ]


def _history_point(out: dict[str, Any]) -> dict[str, Any]:
    """What the report's plots over time need from one evaluation."""
    versions = {}
    for v, r in out["versions"].items():
        perf, est = r["performance"], r["estimate"]
        versions[v] = {
            "roc_auc": perf["roc_auc"],
            "pr_auc": perf["pr_auc"],
            "brier": perf["brier"],
            "ece": perf["ece"],
            "estimated_roc_auc": est["roc_auc"],
            "moments": perf["moments"],
            "drift": {
                d["feature"]: d["psi"] / d["psi_threshold"]
                for d in r["drift"]
                if d["psi_threshold"]
            },
            "fairness": {
                f"{f['attribute']}={f['segment']}": f["hot_share_ratio"] for f in r["fairness"]
            },
        }
    return {"at": out["at"], "watermark": out["watermark"], "versions": versions}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -------------------------------------------------------------------------- the process
def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 200,
        }
    )


def _partitions(consumer: Consumer, topics: list[str]) -> list[tuple[str, int]]:
    meta = consumer.list_topics(timeout=10)
    out: list[tuple[str, int]] = []
    for t in topics:
        tm = meta.topics.get(t)
        if tm is None or tm.error is not None:
            continue
        out.extend((t, p) for p in sorted(tm.partitions))
    return out


def consumer_lag(settings: Settings, probe: Consumer) -> list[tuple[str, str, int, int]]:
    """How far the workers' consumer group (``app_id``) is behind on the input topics."""
    parts = _partitions(probe, [settings.topic(s) for s in INPUTS])
    if not parts:
        return []
    committed = probe.committed([TopicPartition(t, p) for t, p in parts], timeout=10)
    out = []
    for tp in committed:
        _low, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
        done = tp.offset if tp.offset >= 0 else 0
        out.append((settings.app_id, tp.topic, tp.partition, max(0, high - done)))
    return out


def run_monitor(
    settings: Settings,
    *,
    max_seconds: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Monitor:
    """Run until SIGINT/SIGTERM (or ``max_seconds``)."""
    settings.require_kafka()
    say = progress or (lambda _m: None)
    mon = Monitor(settings)
    server, _thread = start_http_server(
        settings.monitor_port, addr=settings.monitor_host, registry=mon.registry
    )
    say(f"monitor: /metrics on {settings.monitor_host}:{settings.monitor_port}")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: mon.stop.set())
    consumer = _consumer(settings, f"{settings.app_id}-monitor")
    probe = _consumer(settings, settings.app_id)  # reads the workers' committed offsets
    crm = settings.topic("crm")
    score_topics = [settings.topic("scores"), settings.topic("scores.shadow")]
    # Firmographics set segments (ENRICHMENT_SEGMENTS); read only when one is wanted.
    segment_topics = [settings.topic("enrichment")] if enrichment_segments(settings) else []
    assigned: set[tuple[str, int]] = set()
    at_end: set[tuple[str, int]] = set()
    started = time.monotonic()
    next_eval = time.monotonic() + settings.monitor_interval_s
    try:
        while not mon.stop.is_set():
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
            parts = set(_partitions(consumer, [*score_topics, crm, *segment_topics]))
            if parts - assigned:
                assigned |= parts
                consumer.assign(
                    [
                        TopicPartition(t, p, mon.offsets.get((t, p), OFFSET_BEGINNING))
                        for t, p in sorted(assigned)
                    ]
                )
            _poll(consumer, mon, at_end, crm, assigned, until=min(next_eval, time.monotonic() + 5))
            if time.monotonic() >= next_eval:
                try:
                    lag = consumer_lag(settings, probe)
                except KafkaException as exc:
                    log.warning("consumer lag unavailable: %s", exc)
                    lag = []
                report = mon.evaluate(lag)
                mon.save()
                say(_summary(report))
                next_eval = time.monotonic() + settings.monitor_interval_s
    finally:
        consumer.close()
        probe.close()
        server.shutdown()
    return mon


def _poll(
    consumer: Consumer,
    mon: Monitor,
    at_end: set[tuple[str, int]],
    crm: str,
    assigned: set[tuple[str, int]],
    *,
    until: float,
) -> None:
    while time.monotonic() < until and not mon.stop.is_set():
        msgs = consumer.consume(1000, 0.25)
        for m in msgs:
            err = m.error()
            tp = (m.topic() or "", m.partition() or 0)
            if err is not None:
                if err.code() == -191:  # KafkaError._PARTITION_EOF
                    at_end.add(tp)
                continue
            at_end.discard(tp)
            mon.handle(tp[0], tp[1], m.offset() or 0, m.key(), m.value())
        crm_parts = {tp for tp in assigned if tp[0] == crm}
        mon.book.crm_caught_up = bool(crm_parts) and crm_parts <= at_end
        if not msgs:
            return


def _summary(report: dict[str, Any]) -> str:
    parts = [f"watermark {report.get('watermark')}"]
    for v, r in report["versions"].items():
        perf = r["performance"]
        auc = perf["roc_auc"]
        alarms = sum(d["alarm"] for d in r["drift"])
        parts.append(
            f"{v}: {perf['moments']} matured moments, AUC "
            + (f"{auc:.3f}" if auc is not None else "n/a")
            + f", {alarms} drift alarms"
        )
    return "; ".join(parts)
