"""The hot path, without Kafka: a batch of raw messages in, score/DLQ/alert records out.

The Faust agent stays thin (take a batch -> ``Pipeline.process`` -> send); everything here
is plain code that unit tests drive with an in-memory feature store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import orjson

from features.definitions import Spec
from features.offline import VECTOR_SEP, parse_value
from features.store import FeatureStore, Update
from model.scoring import FeatureBatch, Rows, Scorer, Value
from schemas import SOURCES, Source
from schemas.validation import Event, Invalid, dlq_record, validate_event
from streamer.metrics import Metrics, observe_many


class Message(NamedTuple):
    """One consumed Kafka message; ``timestamp`` is the broker/producer time in seconds.

    A named tuple: the worker builds one per event, and a frozen dataclass cost several
    times more to construct.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None


@dataclass(slots=True)
class BatchOutput:
    scores: list[tuple[str, bytes]] = field(default_factory=list)
    """(lead_id, JSON) of each score record, in ``records`` order."""
    dlq: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    alerts: list[tuple[str, bytes]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    scored: list[tuple[str, str]] = field(default_factory=list)
    """(lead_id, event_id) of each score record: confirmed in the store once delivered."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    saving: asyncio.Task[dict[str, str | None]] | None = None
    """The store call saving the latest scores, when ``process`` left it to ``complete``."""


def iso_now(now: float) -> str:
    return (
        datetime.fromtimestamp(now, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


T = TypeVar("T")

Emit = Callable[
    [Sequence[tuple[str, bytes]], Sequence[tuple[bytes | None, bytes]]], Awaitable[None]
]
"""Called by ``Pipeline.process`` with each chunk's new score records and DLQ records, so the
caller can send them while Redis applies the next chunk (see ``process``)."""

#: Events per store call within a batch: small enough that scoring one chunk overlaps the
#: Redis call for the next, large enough that the per-call cost stays small.
REDIS_CHUNK = 128


class Pipeline:
    def __init__(
        self,
        store: FeatureStore,
        scorer: Callable[[], Scorer],
        metrics: Metrics,
        *,
        topic_sources: dict[str, Source],
        max_future_ms: int,
        clock: Callable[[], float] = time.time,
        chunk: int = REDIS_CHUNK,
    ) -> None:
        self._store = store
        self._chunk = max(1, chunk)
        self._scorer = scorer
        self._metrics = metrics
        self._topic_sources = topic_sources
        self._max_future_ms = max_future_ms
        self._clock = clock
        self._confirm: list[tuple[str, str]] = []
        self._in_flight: set[tuple[str, str]] = set()
        """Events this pipeline scored whose confirmation has not yet reached the store: their
        records are being delivered, or are delivered and confirmed with the next call."""
        self._last_save: asyncio.Task[dict[str, str | None]] | None = None

    def forget_in_flight(self) -> None:
        """Forget the undelivered batches: their events will come again (the agent restarted,
        or the process did), and must then be scored again, not taken for duplicates."""
        self._in_flight.clear()

    def delivered(self, out: BatchOutput) -> None:
        """``out``'s records are on the broker: confirm them with the next store call."""
        self._confirm.extend(out.scored)
        out.scored = []

    async def process(
        self, messages: Sequence[Message], emit: Emit | None = None, *, defer_alerts: bool = False
    ) -> BatchOutput:
        """Validate, apply in Redis and score ``messages``; all records are in the result.

        With ``emit``, each chunk's records are also handed over as soon as the chunk is
        scored, while the Redis call for the next chunk is already running: the caller's
        sends then overlap with Redis instead of following the whole batch. Tier-change
        alerts need every chunk's scores saved first, so they are only in the result.

        With ``defer_alerts``, the call saving the latest scores is left running and the
        alerts are added by ``complete(out)``: the worker awaits it while delivering the
        batch, so that Redis saves this batch's scores while the next batch is validated.
        """
        out = BatchOutput()
        if not messages:
            return out
        m = self._metrics
        m.batch_size.observe(len(messages))
        now_ms = int(self._clock() * 1000)
        # Counted per batch and added once per label: labels() per event cost ~4 % of the CPU.
        counts: Counter[tuple[str, str]] = Counter()
        tiers: Counter[str] = Counter()
        now_s = now_ms / 1000
        observe_many(
            m.consume_lag,
            [max(0.0, now_s - msg.timestamp) for msg in messages if msg.timestamp is not None],
        )
        confirm, self._confirm = self._confirm, []
        # The first store call below confirms these before it applies this batch's events.
        self._in_flight.difference_update(confirm)
        waited = model_s = 0.0
        # A repeat of an event within the batch is a duplicate of its first copy. It is
        # caught here because the copies may fall in different store calls, and the script
        # knows an event applied earlier in the same call only (other calls leave it pending).
        seen: set[tuple[str, str]] = set()
        unique: list[tuple[Message, Event]] = []
        # The first chunk is smaller: nothing overlaps the wait for its store call. That call
        # goes out as soon as the chunk's events are validated; the rest of the batch is
        # validated while Redis applies it. A store that applies calls in the order they are
        # made (``ordered``: one connection) gets every chunk's call as soon as the chunk is
        # validated; any other gets chunk k+1's call once chunk k's reply is in (so Redis
        # applies them in order: per-lead order holds).
        ordered = self._store.ordered
        first = max(1, self._chunk // 4)
        tasks: list[asyncio.Task[list[Update]]] = []
        bounds = [0]  # where each chunk starts in ``unique``
        save: asyncio.Task[dict[str, str | None]] | None = None

        async def send(a: int, b: int) -> None:
            events = [e for _, e in unique[a:b]]
            tasks.append(await _started(self._store.apply_batch(events, confirm if a == 0 else ())))

        sending = 0.0  # time spent sending during validation, not validating

        async def close_chunk() -> None:
            nonlocal sending
            bounds.append(len(unique))
            if ordered or not tasks:
                s0 = time.perf_counter()
                await send(bounds[-2], bounds[-1])
                sending += time.perf_counter() - s0

        try:
            v0 = time.perf_counter()
            for msg in messages:
                ev = self._validate(msg, now_ms, out, counts)
                if ev is None:
                    continue
                key = (ev.lead_id, ev.event_id)
                if key in seen:
                    counts[(ev.source, "duplicate")] += 1
                    continue
                seen.add(key)
                unique.append((msg, ev))
                if len(unique) - bounds[-1] == (first if len(bounds) == 1 else self._chunk):
                    await close_chunk()
            if len(unique) > bounds[-1]:
                await close_chunk()
            validate_s = time.perf_counter() - v0 - sending
            chunks = [unique[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
            emitted = (0, 0)  # (score records, DLQ records) already handed to ``emit``
            if not chunks and confirm:
                await self._store.apply_batch([], confirm)
            for k, chunk in enumerate(chunks):
                w0 = time.perf_counter()
                updates = await tasks[k]
                waited += time.perf_counter() - w0
                if len(tasks) == k + 1 < len(chunks):
                    await send(bounds[k + 1], bounds[k + 2])
                s0 = time.perf_counter()
                self._score_chunk(chunk, updates, out, counts, tiers)
                model_s += time.perf_counter() - s0
                if k + 1 == len(chunks) and out.records:
                    # The latest scores are saved while the last chunk's records are sent.
                    save = self._last_save = await _started(
                        self._save_after(self._last_save, out.records, [b for _, b in out.scores])
                    )
                if emit is not None:
                    await emit(out.scores[emitted[0] :], out.dlq[emitted[1] :])
                    emitted = (len(out.scores), len(out.dlq))
            if emit is not None and emitted != (len(out.scores), len(out.dlq)):
                await emit(out.scores[emitted[0] :], out.dlq[emitted[1] :])
            for (src, outcome), n in counts.items():
                m.events.labels(source=src, outcome=outcome).inc(n)
            for tier, n in tiers.items():
                m.scores.labels(tier=tier).inc(n)
            out.saving, save = save, None
        finally:
            for pending in (*tasks, save):
                if pending is not None and not pending.done():
                    pending.cancel()
        out.stage_seconds = {"validate": validate_s, "redis": waited, "model": model_s}
        if not defer_alerts:
            await self.complete(out)
        for stage, secs in out.stage_seconds.items():
            m.stage_seconds.labels(stage=stage).observe(secs)
        return out

    async def complete(self, out: BatchOutput) -> None:
        """Wait for ``out``'s latest scores to be saved and add its tier-change alerts."""
        if out.saving is None:
            return
        t0 = time.perf_counter()
        previous = await out.saving
        out.saving = None
        out.stage_seconds["redis"] = out.stage_seconds.get("redis", 0.0) + (
            time.perf_counter() - t0
        )
        self._alerts(out, previous)

    async def _save_after(
        self,
        before: asyncio.Task[dict[str, str | None]] | None,
        records: list[dict[str, Any]],
        encoded: list[bytes],
    ) -> dict[str, str | None]:
        """Save after the previous batch's save: each returns the tiers the one before left,
        and a lead's latest record must be its latest batch's."""
        if before is not None and not before.done():
            # Its own caller reports its failure; this batch's save goes ahead regardless.
            with contextlib.suppress(Exception):
                await asyncio.shield(before)
        return await self._store.save_scores(records, encoded)

    def _validate(
        self, msg: Message, now_ms: int, out: BatchOutput, counts: Counter[tuple[str, str]]
    ) -> Event | None:
        """The message's event, or None after adding its DLQ record to ``out``."""
        source = self._topic_sources.get(msg.topic)
        res: Event | Invalid = validate_event(
            msg.value,
            topic_source=source,
            key=msg.key,
            now_ms=now_ms,
            max_future_ms=self._max_future_ms,
        )
        if not isinstance(res, Invalid):
            return res
        rec = dlq_record(
            msg.value,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            error=res,
        )
        out.dlq.append((msg.key, orjson.dumps(rec)))
        self._metrics.dlq.labels(code=res.code).inc()
        counts[(source or "unknown", "invalid")] += 1
        return None

    def _score_chunk(
        self,
        chunk: Sequence[tuple[Message, Event]],
        updates: Sequence[Update],
        out: BatchOutput,
        counts: Counter[tuple[str, str]],
        tiers: Counter[str],
    ) -> None:
        texts: list[str] = []
        rows: list[dict[str, Any]] = []
        specs = None
        scored_events: list[tuple[Message, Event]] = []
        in_flight = self._in_flight
        for (msg, ev), upd in zip(chunk, updates, strict=True):
            if upd.outcome == "redelivered" and (ev.lead_id, ev.event_id) in in_flight:
                # A repeat of an event an earlier batch scored, whose delivery is not yet
                # confirmed in the store (the worker processes a batch while the one before it
                # delivers): a duplicate, not a redelivery after a crash, whose record would
                # otherwise be sent twice.
                counts[(ev.source, "duplicate")] += 1
                continue
            if upd.outcome in ("ok", "redelivered"):
                if upd.vector is not None:
                    texts.append(upd.vector)
                    specs = upd.specs
                elif upd.features is not None:
                    rows.append(upd.features)
                else:
                    continue
                scored_events.append((msg, ev))
                if upd.outcome == "redelivered":
                    counts[(ev.source, "redelivered")] += 1
            else:
                outcome = "duplicate" if upd.outcome == "dup" else "late"
                counts[(ev.source, outcome)] += 1
        if not scored_events:
            return
        if texts and rows:
            raise RuntimeError("a feature store returned both vectors and feature dicts")
        batch: Rows = rows
        if texts and specs is not None:
            batch = vector_batch(texts, specs)
        scorer = self._scorer()
        results = scorer.score_records(batch)
        now = self._clock()
        scored_at = iso_now(now)
        version = scorer.version
        # Per record: locals for the appends, counters added once per chunk.
        add_record, add_scored, add_score = out.records.append, out.scored.append, out.scores.append
        add_in_flight, dumps = in_flight.add, orjson.dumps
        for (_, ev), s in zip(scored_events, results, strict=True):
            lead = ev.lead_id
            rec = {
                "lead_id": lead,
                "score": round(s.score, 6),
                "score_100": int(round(s.score * 100)),
                "tier": s.tier,
                "model_version": version,
                "reasons": s.reasons,
                "event_id": ev.event_id,
                "event_ts": ev.ts,
                "scored_at": scored_at,
            }
            add_record(rec)
            key = (lead, ev.event_id)
            add_scored(key)
            add_in_flight(key)
            add_score((lead, dumps(rec)))
        counts.update((ev.source, "scored") for _, ev in scored_events)
        tiers.update(s.tier for s in results)
        observe_many(
            self._metrics.event_to_score,
            [max(0.0, now - m.timestamp) for m, _ in scored_events if m.timestamp is not None],
        )

    def _alerts(self, out: BatchOutput, previous: dict[str, str | None]) -> None:
        tiers = dict(previous)
        for rec in out.records:
            lead = rec["lead_id"]
            before = tiers.get(lead)
            tiers[lead] = rec["tier"]
            if before is not None and before != rec["tier"]:
                alert = {
                    "lead_id": lead,
                    "from_tier": before,
                    "to_tier": rec["tier"],
                    "score": rec["score"],
                    "model_version": rec["model_version"],
                    "event_id": rec["event_id"],
                    "event_ts": rec["event_ts"],
                    "scored_at": rec["scored_at"],
                }
                out.alerts.append((lead, orjson.dumps(alert)))
                self._metrics.alerts.labels(to_tier=rec["tier"]).inc()


def topic_sources(topic: Callable[[str], str]) -> dict[str, Source]:
    """Map each input topic's full name to the source it carries."""
    return {topic(s): s for s in SOURCES}


async def _started(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Schedule ``coro`` and let it run to its first real wait (for a Redis call: the request
    is written and it waits for the reply), so CPU work done next overlaps with the server."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0)
    return task


@functools.lru_cache(maxsize=8)
def _parsers(specs: tuple[Spec, ...]) -> tuple[tuple[str, ...], Callable[[int, str], Value]]:
    names = tuple(s.name for s in specs)

    def parse(j: int, field: str) -> Value:
        return parse_value(field, specs[j])

    return names, parse


def vector_batch(texts: list[str], specs: tuple[Spec, ...]) -> FeatureBatch:
    """The store's feature vectors as a batch the scorer reads column-wise."""
    names, parse = _parsers(specs)
    return FeatureBatch(names, texts, VECTOR_SEP, parse)
