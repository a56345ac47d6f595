"""``leadscore bench``: end-to-end throughput and latency against a real broker and Redis.

1. pre-fills the input topics with simulated events and measures how fast one worker turns
   them into score records (steady state: first to last score record);
2. on fresh topics, with a second worker, produces at a fixed rate, one produce request per
   event, and measures event-to-score latency percentiles;
3. optionally (``--soak-seconds``) keeps that worker busy at that rate for longer, sampling
   its memory and the latency minute by minute (the soak test);
4. reads the first worker's per-stage timings from /metrics;
5. runs the seed article's scoring path (one-row DataFrame + sklearn pipeline +
   ``predict_proba`` per request) on the same features, for the ratio.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from leadscore.features.definitions import DAY_MS
from leadscore.infra.producer import EventProducer
from leadscore.infra.progress import Progress
from leadscore.infra.topics import ensure_topics
from leadscore.model.registry import Registry
from leadscore.schemas import SOURCES, Source
from leadscore.schemas.validation import Event, format_ts_ms, parse_ts_ms
from leadscore.settings import Settings
from leadscore.tooling.broker_watch import histogram_buckets
from leadscore.tooling.costs import (
    BrokerCpu,
    id_set_bytes,
    lead_memory,
    record_bytes,
    redis_info_sums,
    sync_redis,
)
from leadscore.tooling.cpu import CpuMeter, Target, rss_mb
from leadscore.tooling.embedded import (
    Services,
    free_port,
    services,
    spawn_worker,
    wait_worker_ready,
)
from leadscore.tooling.exceptions import BenchConfigError, ServiceStartError

RSS_SAMPLE_S = 10.0
"""Seconds between samples of the worker's resident memory during the fixed-rate run."""


def _rss_summary(samples: list[float]) -> dict[str, float | int]:
    """First, highest and last of the worker's RSS samples (MB), and the growth per minute
    fitted over them (least squares), so a leak shows as a positive slope; also the slope
    over the second half alone, which start-up warm-up (caches filling) doesn't lift."""
    if not samples:
        return {"samples": 0}

    def slope(part: list[float]) -> float:
        if len(part) < 3:
            return 0.0
        t = np.arange(len(part)) * RSS_SAMPLE_S / 60
        return float(np.polyfit(t, np.asarray(part), 1)[0])

    return {
        "samples": len(samples),
        "first": round(samples[0], 1),
        "max": round(max(samples), 1),
        "last": round(samples[-1], 1),
        "growth_mb_per_min": round(slope(samples), 3),
        "second_half_growth_mb_per_min": round(slope(samples[len(samples) // 2 :]), 3),
    }


class ScoreReader:
    """Counts score records and, while ``track_latency`` is set, the latency of each (receipt
    time minus event time), as ``(event time, latency)`` pairs in seconds.

    It reads with aiokafka, by manual assignment: on the embedded broker, librdkafka's consumer
    added tens of milliseconds per hop by itself (docs/performance.md), which would have been
    counted as the worker's latency.

    The embedded broker holds every fetch for its full ``fetch_max_wait_ms`` and, on each one
    that returns data, lists every batch stored in the partition: a reader that only counts
    (the throughput run) polls less often, so it doesn't take the broker's CPU from the worker.
    """

    def __init__(self, settings: Settings, *, fetch_max_wait_ms: int = 5) -> None:
        self._settings = settings
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self.count = 0
        self.bytes = 0
        """Keys and values of the records counted: the broker's bytes out per score."""
        self.first: float | None = None
        self.last: float | None = None
        self.latencies: list[tuple[float, float]] = []
        self.to_scored: list[float] = []
        """Per record with its latency: seconds from event time to the record's ``scored_at``
        (the worker's clock: same machine), the part of the latency spent before publishing."""
        self.track_latency = False
        self.meter: CpuMeter | None = None
        """Started when the first record arrives (the burst's CPU shares)."""
        self.count_at_first = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported by wait_for, not lost in a thread
            self.error = exc

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        s = self._settings
        consumer = AIOKafkaConsumer(
            **s.aiokafka_client_config(),
            enable_auto_commit=False,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            parts = [TopicPartition(s.topic("scores"), p) for p in range(s.topic_partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while not self._stop.is_set():
                got = await consumer.getmany(timeout_ms=50, max_records=10_000)
                now = time.time()
                for records in got.values():
                    self._count(records, now)
        finally:
            await consumer.stop()

    def _count(self, records: list[Any], now: float) -> None:
        if not records:
            return
        if self.first is None:
            self.first = now
            self.count_at_first = len(records)
            if self.meter is not None:
                self.meter.start()
        self.last = now
        self.count += len(records)
        self.bytes += sum(len(m.value or b"") + len(m.key or b"") for m in records)
        if self.track_latency:
            for m in records:
                rec = orjson.loads(m.value)
                ts = parse_ts_ms(rec["event_ts"])
                scored = parse_ts_ms(rec["scored_at"])
                if ts is not None and scored is not None:
                    self.latencies.append((ts / 1000, now - ts / 1000))
                    self.to_scored.append((scored - ts) / 1000)

    def wait_for(self, n: int, timeout: float, progress: Progress | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
            if progress is not None:
                progress(self.count)
        if progress is not None:
            progress(self.count)
            progress.close()
        if self.error is not None:
            raise ServiceStartError(f"the score reader failed: {self.error!r}") from self.error
        return self.count >= n


def _metric_sums(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("leadscore_stage_seconds_sum"):
            stage = line.split('stage="', 1)[1].split('"', 1)[0]
            out[stage] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("leadscore_events_total{"):
            out["events"] = out.get("events", 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _histogram_count_sum(port: int, name: str) -> tuple[float, float]:
    """``(count, sum)`` of a Prometheus histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_count"):
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_sum"):
            total = float(line.rsplit(" ", 1)[1])
    return count, total


def _quantile_bounds(
    before: list[tuple[float, float]], after: list[tuple[float, float]], qs: tuple[float, ...]
) -> dict[str, float | None]:
    """Bucket upper bounds (ms) holding each quantile of what was observed between snapshots."""
    diff = [(b, c - c0) for (b, c), (_, c0) in zip(after, before, strict=True)]
    total = diff[-1][1] if diff else 0.0
    out: dict[str, float | None] = {}
    for q in qs:
        bound = next((b for b, c in diff if total and c >= q * total), None)
        out[f"p{int(q * 100)}_le"] = (
            None if bound is None or bound == float("inf") else bound * 1000
        )
    return out


def redis_bytes_per_lead(redis_url: str, lead_ids: list[str]) -> dict[str, float]:
    """Mean and p90 of ``MEMORY USAGE`` summed over each lead's keys."""
    import redis

    from leadscore.features.store import lead_keys

    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for lead in lead_ids:
            for key in lead_keys(lead):
                pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    finally:
        client.close()
    n_keys = len(lead_keys("x"))
    per_lead = [sum(x or 0 for x in sizes[i : i + n_keys]) for i in range(0, len(sizes), n_keys)]
    return {"mean": float(np.mean(per_lead)), "p90": float(np.percentile(per_lead, 90))}


async def _history_memory(
    redis_url: str, events: list[Event], tag: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Replay a history into the feature store (as the worker would) and measure its keys:
    their sum per lead, and each key's mean (:func:`lead_memory`; no latest score, as the
    replay scores nothing)."""
    import redis
    import redis.asyncio as aioredis

    from leadscore.features.store import RedisFeatureStore, apply_in_batches

    client = aioredis.Redis.from_url(redis_url)
    store = RedisFeatureStore(client)
    tagged = [
        Event(e.event_id, f"{tag}-{e.lead_id}", e.source, e.type, e.ts, e.ts_ms, e.attributes)
        for e in events
    ]
    try:
        await store.open()
        await apply_in_batches(store, tagged)
    finally:
        await client.aclose()
    leads = sorted({e.lead_id for e in tagged})
    sync = redis.Redis.from_url(redis_url)
    try:
        by_key = {k: round(v, 1) for k, v in lead_memory(sync, leads[:1000]).items()}
    finally:
        sync.close()
    return redis_bytes_per_lead(redis_url, leads[:1000]), by_key


def _event_at(template: list[dict[str, Any]], i: int, tag: str, ts_ms: int) -> dict[str, Any]:
    """Event ``i`` of an endless stream cycling through ``template``: a fresh id, time
    ``ts_ms``, and lead ids renamed on every pass, so leads keep turning over as in real
    traffic (a cache keyed by lead would show up as memory growth in the soak)."""
    ev = template[i % len(template)]
    return {
        **ev,
        "event_id": f"{tag}-{i}",
        "lead_id": f"{tag}{i // len(template)}-{ev['lead_id']}",
        "ts": format_ts_ms(ts_ms),
    }


def only_sources(template: list[dict[str, Any]], sources: Sequence[str]) -> list[dict[str, Any]]:
    """The events of ``template`` from ``sources`` only, in order: the bench's traffic is
    then those sources alone, however many events it sends (the stream cycles through it)."""
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise BenchConfigError(
            f"unknown source(s) {', '.join(unknown)}: choose from {', '.join(SOURCES)}"
        )
    kept = [e for e in template if e["source"] in sources]
    if not kept:
        raise BenchConfigError(
            f"the simulated traffic has no events of {', '.join(sources) or 'no source'}: "
            "name at least one source it generates"
        )
    return kept


def source_mix(events: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Events per source, every source named (0 for one the traffic leaves out)."""
    counts = Counter(str(e["source"]) for e in events)
    return {s: counts[s] for s in SOURCES}


def _events_now(template: list[dict[str, Any]], n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` events of the stream, timed over the last ``n`` milliseconds."""
    now = int(time.time() * 1000)
    return [_event_at(template, i, tag, now - (n - i)) for i in range(n)]


def _percentiles(ms: np.ndarray) -> dict[str, float | int | None]:
    if not len(ms):
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "n": int(len(ms)),
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "max": round(float(ms.max()), 2),
    }


def _by_period(
    latencies: list[tuple[float, float]], period_s: float, label: str
) -> list[dict[str, Any]]:
    """Latency percentiles (ms) per ``period_s`` of event time, from ``(event time, latency
    in seconds)`` pairs: a figure that grows period by period shows a slowdown."""
    groups: dict[int, list[float]] = {}
    t0 = min((t for t, _ in latencies), default=0.0)
    for t, lat in latencies:
        groups.setdefault(int((t - t0) // period_s), []).append(lat * 1000)
    return [{label: k, **_percentiles(np.array(v))} for k, v in sorted(groups.items())]


SOAK_BATCH_TICK_S = 1.0
"""With ``batched``, the soak sends each second's events together (one produce batch per
partition)."""


def _p99_since(latencies: list[tuple[float, float]], since: float) -> float | None:
    """p99 (ms) of the latencies of events stamped at or after ``since`` (epoch seconds)."""
    recent = [lat for t, lat in latencies[-200_000:] if t >= since]
    return round(float(np.percentile(recent, 99)) * 1000, 1) if recent else None


def run_soak(
    settings: Settings,
    template: list[dict[str, Any]],
    *,
    tag: str,
    rate: float,
    seconds: float,
    reader: ScoreReader,
    worker_pid: int,
    meter: CpuMeter,
    say: Callable[[str], None],
    batched: bool = False,
) -> dict[str, Any]:
    """Keep the worker busy at ``rate`` events/s for ``seconds``: its memory, and the
    event-to-score latency minute by minute.

    Each event goes out in its own produce request, evenly spaced, as the latency run sends
    them (and as a web front end producing per request would). ``batched`` sends each
    second's events together instead (one batch per partition a second), as a collector
    forwarding traffic might: on the embedded broker, whose cost per fetch grows with the
    batches it holds (docs/performance.md), that lets a long run watch the worker's memory
    rather than the broker slowing down.
    """
    tick_s = SOAK_BATCH_TICK_S if batched else 1.0 / rate
    per_tick = max(1, round(rate * SOAK_BATCH_TICK_S)) if batched else 1
    producer = EventProducer(settings, linger_ms=5 if batched else 0)
    base = reader.count
    reader.latencies.clear()
    reader.to_scored.clear()
    reader.track_latency = True
    samples: list[float] = []
    done_before = _metric_sums(settings.web_port).get("events", 0.0)
    sent = ticks = 0
    meter.start()
    start = time.monotonic()
    wall_start = time.time()
    next_sample, next_report = start, start + 60.0
    while (now := time.monotonic()) - start < seconds:
        ts_ms = int(time.time() * 1000)
        for _ in range(per_tick):
            producer.send(_event_at(template, sent, tag, ts_ms))
            sent += 1
        if now >= next_sample:
            samples.append(rss_mb(worker_pid))
            next_sample += RSS_SAMPLE_S
        if now >= next_report:
            minute_start = wall_start + (next_report - start) - 60.0
            say(
                f"  soak {now - start:,.0f} s: {sent:,} sent, {reader.count - base:,} scored, "
                f"p99 of the last minute's events scored so far "
                f"{_p99_since(reader.latencies, minute_start)} ms, "
                f"worker RSS {samples[-1]:.1f} MB"
            )
            next_report += 60.0
        ticks += 1
        ahead = start + ticks * tick_s - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    producer.flush_or_raise(60)
    producer.close()
    reader.wait_for(base + sent, timeout=120)
    reader.track_latency = False
    cpu = meter.read()
    worker_done = _metric_sums(settings.web_port).get("events", 0.0) - done_before
    return {
        "seconds": seconds,
        "rate_eps": rate,
        "requests": "one batch a second" if batched else "one per event",
        "sent": sent,
        "scored": reader.count - base,
        "worker_events_done": int(worker_done),
        "worker_rss_mb": _rss_summary(samples),
        "cpu_percent": cpu,
        **_soak_latencies(reader),
    }


def _soak_latencies(reader: ScoreReader) -> dict[str, Any]:
    """The soak's latency figures: overall, per minute, and p99 per 10 s."""
    # The reader appends a record's two figures together, so they pair up by position (a
    # record being counted as the run ends may have only the first).
    to_scored = [(t, s) for (t, _), s in zip(reader.latencies, reader.to_scored, strict=False)]
    return {
        "latency_ms": _percentiles(np.array([lat for _, lat in reader.latencies]) * 1000),
        "latency_ms_by_minute": _by_period(reader.latencies, 60.0, "minute"),
        # Up to the worker's scored_at only (the broker hop in, the batch, Redis, the model):
        # the reader's own hop out of the broker slows down with it too.
        "event_to_scored_ms_by_minute": _by_period(to_scored, 60.0, "minute"),
        # Finer, to find when p99 first passes a bound.
        "p99_ms_by_10s": [
            {"from_s": 10 * a["s"], "n": a["n"], "p99": a["p99"], "p99_to_scored": b["p99"]}
            for a, b in zip(
                _by_period(reader.latencies, 10.0, "s"),
                _by_period(to_scored, 10.0, "s"),
                strict=False,
            )
        ],
    }


def seed_path_rate(
    rows: list[dict[str, Any]], x_train: Any, y_train: Any, seconds: float = 3.0
) -> float:
    """Scores/s of the seed article's path: a one-row DataFrame per request through an sklearn
    ColumnTransformer and a gradient-boosting ``predict_proba``."""
    import pandas as pd
    from lightgbm import LGBMClassifier
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    cats = [c for c in x_train.columns if x_train[c].dtype == object]
    nums = [c for c in x_train.columns if c not in cats]
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), cats), ("num", "passthrough", nums)]
    )
    x_fit = x_train.copy()
    for c in cats:
        x_fit[c] = x_fit[c].fillna("missing").astype(str)
    pipe = Pipeline([("pre", pre), ("model", LGBMClassifier(n_estimators=200, verbose=-1))])
    pipe.fit(x_fit, y_train)
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        row = dict(rows[n % len(rows)])
        for c in cats:
            row[c] = "missing" if row.get(c) is None else str(row[c])
        pipe.predict_proba(pd.DataFrame([row]))
        n += 1
    return n / (time.perf_counter() - start)


def _phase_settings(base: Settings, uid: str, phase: str) -> Settings:
    """Settings of one bench phase: its own topics, consumer group and web port."""
    return base.model_copy(
        update={
            "app_id": f"leadscore-bench-{uid}-{phase}",
            "topic_prefix": f"bench{uid}{phase}.",
            "web_port": free_port(),
        }
    )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(5)


def _meter(svc: Services, worker_pid: int) -> CpuMeter:
    """A meter over the worker, this process, and the broker and Redis if started here (an
    external one's share is only in the machine's total). The worker's main thread is also
    given alone: Faust's intake, the hot path and the producer all run on it (one Python
    thread), so when it nears 100 the worker process is at its limit, whatever is idle."""
    pids: dict[str, Target] = {
        "worker": worker_pid,
        "worker_main_thread": (worker_pid, worker_pid),
        "bench": os.getpid(),
    }
    for started in svc.started:
        if started.proc is not None:
            pids[started.name] = started.proc.pid
    return CpuMeter(pids)


def _cpu_text(shares: dict[str, float]) -> str:
    """``worker 98, broker 25, ..., machine 190 of 200`` for progress lines."""
    hide = ("machine", "steal", "cores")
    parts = [f"{k.replace('_', ' ')} {v:.0f}" for k, v in shares.items() if k not in hide]
    if "machine" in shares:
        parts.append(f"machine {shares['machine']:.0f} of {100 * shares['cores']:.0f}")
    return ", ".join(parts)


@dataclass
class _Setup:
    """What every phase of a benchmark run shares."""

    svc: Services
    base: Settings
    uid: str
    tmp: Path
    history: list[Event]
    template: list[dict[str, Any]]
    model_version: str
    shadow_version: str | None = None


def run_bench(
    settings: Settings,
    *,
    events: int,
    rate: float,
    latency_seconds: float,
    soak_seconds: float = 0.0,
    soak_batched: bool = False,
    shadow: bool = False,
    throughput_only: bool = False,
    sources: Sequence[Source] = SOURCES,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Throughput, then latency (and the soak), each on its own topics with its own worker.

    ``sources``: the traffic holds events of these sources only (the simulated template is
    filtered before it is replicated, so ``events`` are still sent); the result's
    ``traffic_sources`` gives the burst's events per source.

    ``shadow``: a second model scores every event beside the champion (its records go to
    ``leads.scores.shadow``), as ``leadscore models shadow`` makes workers do.

    The embedded broker's cost per fetch grows with the batches stored in a partition
    (docs/performance.md): on shared topics the burst's thousands of score batches would
    slow every fetch of the latency run that follows, which measures that broker, not the
    worker.
    """
    redis_env = os.environ.get("LEADSCORE_REDIS_URL")
    with (
        services(settings.kafka_bootstrap, redis_env) as svc,
        tempfile.TemporaryDirectory(prefix="leadscore-bench-") as tmp,
    ):
        setup = _prepare(settings, svc, Path(tmp), events, say, shadow=shadow, sources=sources)
        burst = _throughput(setup, events, say)
        if throughput_only:
            return {
                "events": events,
                "traffic_sources": burst["mix"],
                "throughput_eps": round(burst["steady"], 1),
                "worker_cpu_us_per_event": round(burst["cpu_us"], 1),
                "per_event_costs": burst["costs"],
                "model_version": setup.model_version,
                "shadow_version": setup.shadow_version,
            }
        latency = _latency(
            setup, rate, latency_seconds, soak_seconds, say, soak_batched=soak_batched
        )
        say("measuring Redis memory per lead on the simulated 90-day history ...")
        memory, burst["costs"]["redis_bytes_per_lead_90d_history"] = asyncio.run(
            _history_memory(setup.base.require_redis(), setup.history, f"m{setup.uid}")
        )
        say("running the seed article's scoring path ...")
        seed_rate = _seed_rate(setup.history)
    return _result(setup, burst, latency, memory, seed_rate, events, rate, latency_seconds)


def _result(
    setup: _Setup,
    burst: dict[str, Any],
    latency: dict[str, Any],
    memory: dict[str, float],
    seed_rate: float,
    events: int,
    rate: float,
    latency_seconds: float,
) -> dict[str, Any]:
    """The benchmark's JSON result."""
    n_stage = max(burst["stages"].pop("events", 1.0), 1.0)
    return {
        "events": events,
        "traffic_sources": burst["mix"],
        "throughput_eps": round(burst["steady"], 1),
        "worker_cpu_us_per_event": round(burst["cpu_us"], 1),
        "per_event_costs": {
            **burst["costs"],
            # At --rate with one produce request per event: small micro-batches, so the
            # fixed costs per batch and per fetch weigh on every event.
            "worker_cpu_us_at_rate": {
                "rate_eps": rate,
                "us": latency["latency_ms"]["worker_cpu_us_per_event"],
            },
        },
        # Who had the CPU while each phase was measured (percent of one core; "machine" is
        # every process, this benchmark's own load generator and reader included).
        "cpu_percent": {"burst": burst["cpu"], "latency": latency["cpu"]},
        "latency_ms": {"rate_eps": rate, "seconds": latency_seconds, **latency["latency_ms"]},
        "consume_lag_ms_bucket": latency["lag"],
        "batch_time_ms_bucket": latency["batch_time"],
        # Mean micro-batch over the burst: near BATCH_MAX when the worker, not the fetch from
        # the broker, sets the pace.
        "burst_batch_events_mean": round(burst["batches"][1] / max(burst["batches"][0], 1.0), 1),
        "stage_us_per_event": {
            k: round(v / n_stage * 1e6, 2) for k, v in sorted(burst["stages"].items())
        },
        "seed_path_scores_per_s": round(seed_rate, 1),
        "speedup_vs_seed_path": round(burst["steady"] / seed_rate, 1),
        "redis_bytes_per_lead": {k: round(v) for k, v in memory.items()},
        "history_events_per_lead": round(
            len(setup.history) / len({e.lead_id for e in setup.history}), 1
        ),
        "worker_rss_mb": {
            "after_burst": round(burst["rss"], 1),
            # The latency run's worker, once ready and at the end (after the soak, if any).
            "latency_worker_start": round(latency["rss_start"], 1),
            "latency_worker_end": round(latency["rss_end"], 1),
        },
        "soak": latency["soak"],
        "model_version": setup.model_version,
        "shadow_version": setup.shadow_version,
    }


def _prepare(
    settings: Settings,
    svc: Services,
    tmp: Path,
    events: int,
    say: Callable[[str], None],
    *,
    shadow: bool = False,
    sources: Sequence[Source] = SOURCES,
) -> _Setup:
    """Train a model on a simulated history (every source, as production's model would be);
    make the template of the benchmark's events, of ``sources`` only."""
    from leadscore.jobs.train_events import train_from_event_list
    from leadscore.tooling.simulator import SimConfig, simulated_events

    base = settings.model_copy(
        update={
            "kafka_bootstrap": svc.kafka_bootstrap,
            "redis_url": svc.redis_url,
            "model_dir": tmp / "models",
            "web_host": "127.0.0.1",
        }
    )
    say("training a model on simulated history ...")
    evs = simulated_events(SimConfig(leads=1500, events=60_000, seed=11))
    # force: the benchmark measures scoring with a model, whatever the promotion gate
    # thinks of this small history.
    report = train_from_event_list(evs, horizon_ms=30 * DAY_MS, out_dir=base.model_dir, force=True)
    shadow_version = None
    if shadow:
        say("training a shadow model (another seed) ...")
        other = train_from_event_list(
            evs, horizon_ms=30 * DAY_MS, out_dir=base.model_dir, promote=False, seed=8
        )
        shadow_version = other["version"]
        Registry(base.model_dir).set_shadow(shadow_version)
    template = traffic_template(events, sources)
    return _Setup(
        svc, base, uuid.uuid4().hex[:8], tmp, evs, template, report["version"], shadow_version
    )


def traffic_template(events: int, sources: Sequence[Source] = SOURCES) -> list[dict[str, Any]]:
    """The simulated events the bench's traffic cycles through, of ``sources`` only."""
    from leadscore.tooling.simulator import SimConfig, simulate

    return only_sources(
        simulate(SimConfig(leads=2000, events=max(20_000, events // 5), seed=12)), sources
    )


def _throughput(setup: _Setup, events: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Pre-filled topics, one worker, first to last score record."""
    s = _phase_settings(setup.base, setup.uid, "t")
    ensure_topics(s)
    evs = _events_now(setup.template, events, f"t{setup.uid}")
    mix = source_mix(evs)
    say(
        f"pre-filling the input topics with {events:,} events ("
        + ", ".join(f"{k} {v:,}" for k, v in mix.items() if v)
        + ") ..."
    )
    producer = EventProducer(s, linger_ms=20)
    filled = Progress("pre-filled", total=events)
    broker_in = BrokerCpu(_child_pid(setup.svc, "broker"))
    broker_in.start()
    producer.send_all(evs, progress=filled)
    filled.close()
    producer.flush_or_raise(120)
    producer.close()
    broker_in_us = broker_in.us_per_event(events)
    redis_conn = sync_redis(s)
    # Redis's CPU from before the worker starts to the last score record: every event's
    # store calls fall inside (an idle Redis costs well under 1 % of that).
    redis_before = redis_info_sums(redis_conn)
    # Only counts here: long fetch waits cost the broker far less than short ones and add at
    # most one wait to a burst that lasts several seconds.
    reader = ScoreReader(s, fetch_max_wait_ms=100)
    reader.start()
    log_path = setup.tmp / "worker-throughput.log"
    say("starting the worker ...")
    worker = spawn_worker(s, log_path, LEADSCORE_LOG_LEVEL="WARNING")
    # Worker CPU per event over the burst: steadier than events/s on a shared machine, where
    # the broker and Redis compete for the same cores (their shares are reported).
    meter = reader.meter = _meter(setup.svc, worker.pid)
    try:
        scored = Progress("scored", total=events)
        if not reader.wait_for(events, timeout=max(120.0, events / 1000), progress=scored):
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-10:])
            raise ServiceStartError(f"only {reader.count}/{events} scored; worker log:\n{tail}")
        if reader.first is None or reader.last is None:
            raise ServiceStartError("the score reader saw no records")
        steady = events / max(reader.last - reader.first, 1e-9)
        cpu = meter.read()
        redis_scored = redis_info_sums(redis_conn)
        worker_s = meter.used.get("worker", float("nan"))
        cpu_us = worker_s / max(events - reader.count_at_first, 1) * 1e6
        result = {
            "steady": steady,
            "cpu": cpu,
            "cpu_us": cpu_us,
            "rss": rss_mb(worker.pid),
            "stages": _metric_sums(s.web_port),
            "batches": _histogram_count_sum(s.web_port, "leadscore_batch_events"),
            "mix": mix,
        }
    finally:
        reader.stop()
        _stop(worker)
    say(
        f"throughput: {steady:,.0f} events/s over {events:,} events; "
        f"worker CPU {cpu_us:,.0f} us/event; CPU % {_cpu_text(cpu)}"
    )
    try:
        costs = _burst_costs(
            setup,
            redis_conn,
            evs,
            reader,
            meter,
            worker_us=cpu_us,
            broker_in_us=broker_in_us,
            redis_before=redis_before,
            redis_scored=redis_scored,
        )
    finally:
        redis_conn.close()
    say(_costs_text(costs))
    result["costs"] = costs
    return result


def _child_pid(svc: Services, name: str) -> int | None:
    """The process id of a service the bench started, None for one it was given."""
    return next((x.proc.pid for x in svc.started if x.name == name and x.proc), None)


def _burst_costs(
    setup: _Setup,
    redis_conn: Any,
    evs: list[dict[str, Any]],
    reader: ScoreReader,
    meter: CpuMeter,
    *,
    worker_us: float,
    broker_in_us: float | None,
    redis_before: dict[str, float],
    redis_scored: dict[str, float],
) -> dict[str, Any]:
    """What one event of the burst cost each service (docs/capacity.md uses these): CPU
    microseconds, record bytes in and out, Redis memory per lead and per event id kept."""
    events = len(evs)
    leads = sorted({str(e["lead_id"]) for e in evs})
    after = redis_info_sums(redis_conn)
    own_redis = _child_pid(setup.svc, "redis") is not None
    broker_burst = meter.used.get("broker")
    per_lead = lead_memory(redis_conn, leads[:: max(1, len(leads) // 1000)])
    return {
        "events": events,
        "worker_cpu_us": round(worker_us, 1),
        "redis_cpu_us": round((redis_scored["cpu_s"] - redis_before["cpu_s"]) / events * 1e6, 1),
        # INFO counts the whole server: on a shared Redis, other clients' work too.
        "redis_shared": not own_redis,
        # The embedded broker's (Tansu, in memory), as it accepted the pre-fill and then
        # served the worker's fetches and produces and the reader's fetches; not Kafka's.
        "broker_cpu_us": None
        if broker_in_us is None or broker_burst is None
        else {
            "produce_in": broker_in_us,
            "burst": round(broker_burst / max(events - reader.count_at_first, 1) * 1e6, 1),
        },
        "bytes_in": round(record_bytes(evs), 1),
        "bytes_out": round(reader.bytes / max(reader.count, 1), 1),
        "leads": len(leads),
        # The burst's leads, each ~events/leads events within the last minutes: every key
        # (state, ids, latest score, announced tier; pending holds the last unconfirmed batch).
        "redis_bytes_per_lead": {k: round(v, 1) for k, v in per_lead.items()},
        # Growth of Redis's used_memory over the burst per lead: MEMORY USAGE plus what it
        # leaves out (expiry entries, hash tables, allocator rounding).
        "redis_used_memory_per_lead": round(
            (after["used_memory"] - redis_before["used_memory"]) / max(len(leads), 1), 1
        ),
        "redis_bytes_per_id": id_set_bytes(redis_conn, setup.uid),
    }


def _costs_text(c: dict[str, Any]) -> str:
    """The per-event costs in one progress line."""
    broker = c["broker_cpu_us"]
    ids = ", ".join(f"{x['bytes_per_id']:.0f} ({x['encoding']})" for x in c["redis_bytes_per_id"])
    return (
        f"per-event costs: worker CPU {c['worker_cpu_us']:.1f} us, Redis CPU "
        f"{c['redis_cpu_us']:.1f} us{' (shared Redis)' if c['redis_shared'] else ''}, "
        + (
            f"broker CPU {broker['produce_in']:.1f} us in + {broker['burst']:.1f} us burst, "
            if broker
            else ""
        )
        + f"{c['bytes_in']:.0f} bytes in, {c['bytes_out']:.0f} bytes out; Redis "
        f"{c['redis_bytes_per_lead'].get('total', 0):,.0f} bytes per lead with "
        f"{c['redis_bytes_per_lead'].get('ids_per_lead', 0):.1f} ids "
        f"(used_memory {c['redis_used_memory_per_lead']:,.0f}), bytes per id kept: {ids}"
    )


def _latency(
    setup: _Setup,
    rate: float,
    latency_seconds: float,
    soak_seconds: float,
    say: Callable[[str], None],
    *,
    soak_batched: bool = False,
) -> dict[str, Any]:
    """Latency at a fixed rate (and the soak): fresh topics, a fresh worker."""
    s = _phase_settings(setup.base, setup.uid, "l")
    ensure_topics(s)
    reader = ScoreReader(s, fetch_max_wait_ms=5)
    reader.start()
    log_path = setup.tmp / "worker-latency.log"
    worker = spawn_worker(s, log_path, LEADSCORE_LOG_LEVEL="WARNING")
    try:
        wait_worker_ready(worker, s.web_port, log_path, timeout=60)
        rss_start = rss_mb(worker.pid)
        result = _measure_latency(setup, s, reader, worker.pid, rate, latency_seconds, say)
        soak = None
        if soak_seconds > 0:
            say(f"soak: {rate:,.0f} events/s for {soak_seconds:,.0f} s ...")
            soak = run_soak(
                s,
                setup.template,
                tag=f"s{setup.uid}",
                rate=rate,
                seconds=soak_seconds,
                reader=reader,
                worker_pid=worker.pid,
                meter=_meter(setup.svc, worker.pid),
                say=say,
                batched=soak_batched,
            )
        rss_end = rss_mb(worker.pid)
    finally:
        reader.stop()
        _stop(worker)
    return {**result, "soak": soak, "rss_start": rss_start, "rss_end": rss_end}


def _measure_latency(
    setup: _Setup,
    s: Settings,
    reader: ScoreReader,
    worker_pid: int,
    rate: float,
    seconds: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Produce one request per event at ``rate``; each event's latency to its record."""
    n_lat = int(rate * seconds)
    say(f"latency: producing {n_lat:,} events at {rate:,.0f}/s, one request each ...")
    lag_before = histogram_buckets(s.web_port, "leadscore_consume_lag_seconds")
    batch_before = histogram_buckets(s.web_port, "leadscore_score_latency_seconds")
    reader.track_latency = True
    base_count = reader.count
    producer = EventProducer(s, linger_ms=0)
    meter = _meter(setup.svc, worker_pid)
    meter.start()
    start = time.monotonic()
    for i in range(n_lat):
        producer.send(_event_at(setup.template, i, f"l{setup.uid}", int(time.time() * 1000)))
        ahead = (i + 1) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    producer.close()
    reader.wait_for(base_count + n_lat, timeout=60)
    reader.track_latency = False
    cpu = meter.read()
    say(f"latency run CPU % {_cpu_text(cpu)}")
    lat = np.array([x for _, x in reader.latencies]) * 1000
    to_scored = np.array(reader.to_scored) * 1000
    pct = _percentiles(lat)
    # Where it went: up to the worker's scored_at (the broker hop in, the wait for a
    # micro-batch, Redis and the model), then publishing, the broker hop out and the
    # reader's fetch. scored_at has millisecond resolution.
    split = {
        "event_to_scored": _percentiles(to_scored),
        "scored_to_reader": _percentiles(lat - to_scored),
    }
    if len(lat):
        say(
            f"latency: p50 {pct['p50']} ms, p99 {pct['p99']} ms; p99 up to the worker's "
            f"score {split['event_to_scored']['p99']} ms, after it "
            f"{split['scored_to_reader']['p99']} ms"
        )
    lag_after = histogram_buckets(s.web_port, "leadscore_consume_lag_seconds")
    batch_after = histogram_buckets(s.web_port, "leadscore_score_latency_seconds")
    return {
        "cpu": cpu,
        "latency_ms": {
            # At a low rate micro-batches are small, so fixed costs per batch weigh more.
            "worker_cpu_us_per_event": round(
                meter.used.get("worker", float("nan")) / max(n_lat, 1) * 1e6, 1
            ),
            **pct,
            "split": split,
            # The embedded broker's cost per fetch grows with the batches it holds, so the
            # run's latency is also given second by second.
            "by_second": [
                {k: v for k, v in p.items() if k in ("second", "n", "p50", "p99")}
                for p in _by_period(reader.latencies, 1.0, "second")
            ],
        },
        "lag": _quantile_bounds(lag_before, lag_after, (0.5, 0.99)),
        "batch_time": _quantile_bounds(batch_before, batch_after, (0.5, 0.99)),
    }


def _seed_rate(history: list[Event]) -> float:
    """Scores per second of the seed article's one-row-DataFrame path on 500 rows."""
    from leadscore.features.training import build_training_set

    ts = build_training_set(history, horizon_ms=30 * DAY_MS)
    rows = [{str(k): v for k, v in r.items()} for r in ts.x.head(500).to_dict(orient="records")]
    return seed_path_rate(rows, ts.x, ts.y)
