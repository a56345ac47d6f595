"""The hot path, without Kafka: a batch of raw messages in, score/DLQ/alert records out.

The Faust agent stays thin (take a batch -> ``Pipeline.process`` -> send); everything here
is plain code that unit tests drive with an in-memory feature store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import orjson
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from leadscore.features.alerting import ANNOUNCE, SUPPRESSED, AlertPolicy
from leadscore.features.definitions import Spec
from leadscore.features.exceptions import FeatureStateLostError, FeatureStoreUnavailableError
from leadscore.features.store import FeatureStore, Update
from leadscore.features.wire import VECTOR_SEP, parse_value
from leadscore.model.experiment import Arm
from leadscore.model.scoring import FeatureBatch, Rows, ScoredRecord, Scorer
from leadscore.schemas import SOURCES, FeatureValue, Source
from leadscore.schemas.privacy import Redactor
from leadscore.schemas.validation import (
    DLQ_MAX_VALUE_BYTES,
    Event,
    Invalid,
    dlq_key,
    dlq_record,
    format_ts_ms,
    validate_event,
)
from leadscore.streamer.exceptions import PipelineError
from leadscore.streamer.metrics import Metrics, observe_many
from leadscore.streamer.models import ActiveExperiment

log = logging.getLogger(__name__)


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
    """Everything one micro-batch produced, and what of it was handed to ``emit``.

    Every message of the batch ends as exactly one of: a score record, a DLQ record, or a
    counted drop (duplicate, late). The counters are added to the metrics by
    ``Pipeline.delivered``, once the records are on the broker.
    """

    scores: list[tuple[str, bytes]] = field(default_factory=list)
    """(lead_id, JSON) of each score record, in ``records`` order."""
    shadow: list[tuple[str, bytes]] = field(default_factory=list)
    """(lead_id, JSON) of the shadow model's record for each score record, when a shadow
    model is loaded: sent to ``leads.scores.shadow`` with the batch's alerts."""
    dlq: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    alerts: list[tuple[str, bytes]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    scored: list[tuple[str, str]] = field(default_factory=list)
    """(lead_id, event_id) of each score record: confirmed in the store once delivered."""
    score_msgs: list[int] = field(default_factory=list)
    """Index in the batch of the message behind each score record."""
    dlq_msgs: list[int] = field(default_factory=list)
    """Index in the batch of the message behind each DLQ record."""
    dlq_codes: list[str] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Events by (source, outcome): scored, duplicate, late, invalid, redelivered."""
    tiers: Counter[str] = field(default_factory=Counter)
    emitted: tuple[int, int] = (0, 0)
    """How many score and DLQ records were handed to ``emit`` (sent: they can't be taken
    back if the batch fails later)."""
    isolated: bool = False
    """The batch failed as a whole and was processed again message by message."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    saving: asyncio.Task[dict[str, str]] | None = None
    """The store call saving the latest scores, when ``process`` left it to ``complete``."""


T = TypeVar("T")

Emit = Callable[
    [Sequence[tuple[str, bytes]], Sequence[tuple[bytes | None, bytes]]], Awaitable[None]
]
"""Called by ``Pipeline.process`` with each chunk's new score records and DLQ records, so the
caller can send them while Redis applies the next chunk (see ``process``)."""

OnStateLost = Callable[[FeatureStateLostError], Awaitable[None]]
"""Called when the store reports its state lost; returns once it is usable again (rebuilt)."""

#: Failures of a service, not of a message: a batch that meets one is not retried message by
#: message (every message would fail alike and land in the DLQ); the error goes up instead.
SERVICE_ERRORS: tuple[type[BaseException], ...] = (
    FeatureStateLostError,
    FeatureStoreUnavailableError,
    RedisError,
    KafkaError,
    OSError,
)

#: Events per store call within a batch: small enough that scoring one chunk overlaps the
#: Redis call for the next, large enough that the per-call cost stays small.
REDIS_CHUNK = 128


#: The key of model-swap summary records on ``leads.alerts``.
MODEL_SWAP_KEY = "model_swap"


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Hysteresis of tier-change alerts (``LEADSCORE_ALERT_MARGIN``, ``..._INTERVAL_S``)."""

    margin: float = 0.0
    interval_ms: int = 0


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
        fallback: Scorer | None = None,
        on_state_lost: OnStateLost | None = None,
        dlq_max_value_bytes: int = DLQ_MAX_VALUE_BYTES,
        shadow: Callable[[], Scorer | None] | None = None,
        experiment: Callable[[], ActiveExperiment | None] | None = None,
        alert_policy: AlertSettings | None = None,
        redactor: Redactor | None = None,
        dlq_keep_raw: bool = False,
    ) -> None:
        self._store = store
        # The worker's PII policy (Settings.redactor): events are redacted as they are
        # validated, before they reach Redis or any record; DLQ records keep a redacted copy.
        self._redactor = redactor
        self._dlq_keep_raw = dlq_keep_raw
        self._shadow = shadow
        self._experiment = experiment
        self._chunk = max(1, chunk)
        self._scorer = scorer
        self._fallback = fallback
        self._metrics = metrics
        self._topic_sources = topic_sources
        self._max_future_ms = max_future_ms
        self._clock = clock
        self._on_state_lost = on_state_lost
        self._dlq_max_value_bytes = dlq_max_value_bytes
        self._confirm: list[tuple[str, str]] = []
        self._in_flight: set[tuple[str, str]] = set()
        """Events this pipeline scored whose confirmation has not yet reached the store: their
        records are being delivered, or are delivered and confirmed with the next call."""
        self._last_save: asyncio.Task[dict[str, str]] | None = None
        self._alert_policy = alert_policy or AlertSettings()
        self._champion_seen: str | None = None
        self._broken_models: set[str] = set()

    def forget_in_flight(self) -> None:
        """Forget the undelivered batches: their events will come again (the agent restarted,
        or the process did), and must then be scored again, not taken for duplicates."""
        self._in_flight.clear()

    def delivered(self, out: BatchOutput) -> None:
        """``out``'s records are on the broker: confirm them with the next store call, and
        count them."""
        self._confirm.extend(out.scored)
        out.scored = []
        m = self._metrics
        for (src, outcome), n in out.counts.items():
            m.events.labels(source=src, outcome=outcome).inc(n)
        for tier, n in out.tiers.items():
            m.scores.labels(tier=tier).inc(n)
        for code, n in Counter(out.dlq_codes).items():
            m.dlq.labels(code=code).inc(n)
        for key, alert in out.alerts:
            if key != MODEL_SWAP_KEY:
                m.alerts.labels(to_tier=orjson.loads(alert)["to_tier"]).inc()
        out.counts = Counter()
        out.tiers = Counter()
        out.dlq_codes = []

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

        A failure that is not a service's (a bug meeting an odd message, say) never loses the
        batch: what was already emitted stays, the rest is processed again one message at a
        time, and a message that fails alone goes to the DLQ as ``internal_error``. A lost
        store state waits for ``on_state_lost`` (the rebuild), then the batch goes on.
        """
        out = BatchOutput()
        if not messages:
            return out
        self._metrics.batch_size.observe(len(messages))
        now_s = self._clock()
        stamps = [msg.timestamp for msg in messages if msg.timestamp is not None]
        observe_many(self._metrics.consume_lag, [max(0.0, now_s - t) for t in stamps])
        self._note_latest(messages)
        try:
            await self._guarded(list(enumerate(messages)), emit, out, messages, save=True)
        except SERVICE_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - isolated below, message by message
            log.error(
                "a batch of %d messages failed (%s: %s); processing it message by message",
                len(messages),
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            self._metrics.batch_failures.inc()
            out.isolated = True
            await self._isolate(messages, emit, out)
        if not defer_alerts:
            await self.complete(out)
        for stage, secs in out.stage_seconds.items():
            self._metrics.stage_seconds.labels(stage=stage).observe(secs)
        return out

    async def _guarded(
        self,
        todo: list[tuple[int, Message]],
        emit: Emit | None,
        out: BatchOutput,
        messages: Sequence[Message],
        *,
        save: bool,
    ) -> None:
        """One attempt at ``todo``; after a lost store state, wait for ``on_state_lost`` and
        go on with the messages that have no outcome yet."""
        while True:
            try:
                await self._attempt(todo, emit, out, messages, save=save)
                return
            except FeatureStateLostError as exc:
                if self._on_state_lost is None:
                    raise
                done = set(out.score_msgs) | set(out.dlq_msgs)
                todo = [(i, m) for i, m in todo if i not in done]
                await self._on_state_lost(exc)

    async def _attempt(
        self,
        todo: list[tuple[int, Message]],
        emit: Emit | None,
        out: BatchOutput,
        messages: Sequence[Message],
        *,
        save: bool,
    ) -> None:
        """``_run``; if it fails, ``out`` goes back to how it was before, except for the
        records already emitted (sent: they stand, and are counted)."""
        ns0, nd0 = len(out.scores), len(out.dlq)
        counts0, tiers0 = out.counts.copy(), out.tiers.copy()
        try:
            await self._run(todo, emit, out, save=save)
        except BaseException:
            ns, nd = max(ns0, out.emitted[0]), max(nd0, out.emitted[1])
            for key in out.scored[ns:]:
                self._in_flight.discard(key)
            del out.scores[ns:], out.records[ns:], out.scored[ns:], out.score_msgs[ns:]
            del out.dlq[nd:], out.dlq_msgs[nd:], out.dlq_codes[nd:]
            for i in out.score_msgs[ns0:]:
                counts0[(self._source(messages[i]), "scored")] += 1
            for i, code in zip(out.dlq_msgs[nd0:], out.dlq_codes[nd0:], strict=True):
                counts0[(self._source(messages[i]), _dlq_outcome(code))] += 1
            tiers0.update(r["tier"] for r in out.records[ns0:])
            out.counts, out.tiers = counts0, tiers0
            raise

    async def _isolate(
        self, messages: Sequence[Message], emit: Emit | None, out: BatchOutput
    ) -> None:
        """Process the messages without an outcome one at a time; one that fails alone goes
        to the DLQ as ``internal_error``."""
        done = set(out.score_msgs) | set(out.dlq_msgs)
        for i, msg in enumerate(messages):
            if i in done:
                continue
            try:
                await self._guarded([(i, msg)], emit, out, messages, save=False)
            except SERVICE_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - this message alone fails: the DLQ
                if i in out.score_msgs[-1:] or i in out.dlq_msgs[-1:]:
                    continue  # its record was sent before the failure: it stands
                log.error(
                    "message %s[%d]@%d failed alone; sent to the DLQ as internal_error",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    exc_info=exc,
                )
                error = Invalid("internal_error", f"{type(exc).__name__}: {exc}")
                self._dead_letter(msg, i, error, out)
                await self._emit(emit, out)
        if out.records:
            out.saving = self._last_save = await _started(
                self._save_after(self._last_save, out.records, [b for _, b in out.scores])
            )

    def _note_latest(self, messages: Sequence[Message]) -> None:
        """The newest Kafka timestamp per source (a source that went quiet shows as an old
        one): one comparison per message, one gauge set per source and batch."""
        latest: dict[str, float] = {}
        for msg in messages:
            t = msg.timestamp
            if t is not None and t > latest.get(msg.topic, 0.0):
                latest[msg.topic] = t
        gauge = self._metrics.last_event
        for topic, t in latest.items():
            gauge.labels(source=self._topic_sources.get(topic) or "unknown").set(t)

    def _source(self, msg: Message) -> str:
        return self._topic_sources.get(msg.topic) or "unknown"

    async def _run(
        self,
        todo: Sequence[tuple[int, Message]],
        emit: Emit | None,
        out: BatchOutput,
        *,
        save: bool,
    ) -> None:
        """The fast path: validate, apply chunk by chunk, score, emit (and save, with
        ``save``); adds to ``out``."""
        confirm, self._confirm = self._confirm, []
        # The first store call below confirms these before it applies this batch's events.
        self._in_flight.difference_update(confirm)
        calls = _StoreCalls(self._store, confirm, self._chunk)
        try:
            validate_s = await self._validate_into(todo, out, calls)
            waited, model_s = await self._score_calls(calls, emit, out, save)
            out.saving, calls.saving = calls.saving, None
        except BaseException:
            # The confirmations may not have reached the store: send them again with the next
            # call (forgetting a pending vector twice is harmless).
            self._confirm[:0] = confirm
            self._in_flight.update(confirm)
            raise
        finally:
            calls.cancel()
        stages = out.stage_seconds
        stages["validate"] = stages.get("validate", 0.0) + validate_s
        stages["redis"] = stages.get("redis", 0.0) + waited
        stages["model"] = stages.get("model", 0.0) + model_s

    async def _validate_into(
        self, todo: Sequence[tuple[int, Message]], out: BatchOutput, calls: _StoreCalls
    ) -> float:
        """Validate ``todo`` into ``calls``' chunks, sending each chunk's store call as soon
        as it is full; returns the seconds spent validating (not sending)."""
        now_ms = int(self._clock() * 1000)
        counts, unique = out.counts, calls.unique
        # A repeat of an event within the batch is a duplicate of its first copy. It is
        # caught here because the copies may fall in different store calls, and the script
        # knows an event applied earlier in the same call only (other calls leave it pending).
        seen: set[tuple[str, str]] = set()
        full_at = calls.next_full()
        v0 = time.perf_counter()
        for i, msg in todo:
            ev = self._validate(msg, i, now_ms, out)
            if ev is None:
                continue
            key = (ev.lead_id, ev.event_id)
            if key in seen:
                counts[(ev.source, "duplicate")] += 1
                continue
            seen.add(key)
            unique.append((i, msg, ev))
            if len(unique) == full_at:
                await calls.close_chunk()
                full_at = calls.next_full()
        if len(unique) > calls.bounds[-1]:
            await calls.close_chunk()
        return time.perf_counter() - v0 - calls.sending

    async def _score_calls(
        self, calls: _StoreCalls, emit: Emit | None, out: BatchOutput, save: bool
    ) -> tuple[float, float]:
        """Score each chunk as its store call answers (sending the next call if it waited
        for this reply), emit its records; returns (seconds waiting for Redis, scoring)."""
        waited = model_s = 0.0
        chunks, bounds, tasks = calls.chunks(), calls.bounds, calls.tasks
        if not chunks and calls.confirm:
            await self._store.apply_batch([], calls.confirm)
        for k, chunk in enumerate(chunks):
            w0 = time.perf_counter()
            updates = await tasks[k]
            waited += time.perf_counter() - w0
            if len(tasks) == k + 1 < len(chunks):
                await calls.send(bounds[k + 1], bounds[k + 2])
            s0 = time.perf_counter()
            self._score_chunk(chunk, updates, out)
            model_s += time.perf_counter() - s0
            if save and k + 1 == len(chunks) and out.records:
                # The latest scores are saved while the last chunk's records are sent.
                calls.saving = self._last_save = await _started(
                    self._save_after(self._last_save, out.records, [b for _, b in out.scores])
                )
            await self._emit(emit, out)
        await self._emit(emit, out)
        return waited, model_s

    @staticmethod
    async def _emit(emit: Emit | None, out: BatchOutput) -> None:
        ns, nd = out.emitted
        if emit is None or (ns, nd) == (len(out.scores), len(out.dlq)):
            return
        await emit(out.scores[ns:], out.dlq[nd:])
        out.emitted = (len(out.scores), len(out.dlq))

    async def complete(self, out: BatchOutput) -> None:
        """Wait for ``out``'s latest scores to be saved and add its tier-change alerts.

        A save that fails leaves the batch without alerts (logged); its score records stand.
        """
        if out.saving is None:
            return
        t0 = time.perf_counter()
        try:
            decisions = await out.saving
        except Exception as exc:  # noqa: BLE001 - the batch's records stand without alerts
            log.warning("saving the latest scores failed, no tier alerts for this batch: %s", exc)
            self._metrics.save_failures.inc()
            return
        finally:
            out.saving = None
            out.stage_seconds["redis"] = out.stage_seconds.get("redis", 0.0) + (
                time.perf_counter() - t0
            )
        self._alerts(out, decisions)

    async def _save_after(
        self,
        before: asyncio.Task[dict[str, str]] | None,
        records: list[dict[str, Any]],
        encoded: list[bytes],
    ) -> dict[str, str]:
        """Save after the previous batch's save: each decides from the announced tiers the
        one before left, and a lead's latest record must be its latest batch's."""
        if before is not None and not before.done():
            # Its own caller reports its failure (or it was cancelled with its batch); this
            # batch's save goes ahead regardless.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(before)
            if not before.done():  # this task itself is being cancelled
                raise asyncio.CancelledError
        a = self._alert_policy
        policy = AlertPolicy(int(self._clock() * 1000), a.margin, a.interval_ms)
        return await self._store.save_and_decide(records, encoded, policy, self._thresholds)

    async def durable(self) -> None:
        """Every write so far is on the Redis replicas the store waits for (see
        ``RedisFeatureStore.durable``); called before a batch is acknowledged."""
        await self._store.durable()

    def _thresholds(self, version: str) -> tuple[float, float]:
        """(hot, warm) of the model that scored ``version``'s records."""
        exp = self._experiment() if self._experiment is not None else None
        for scorer in (self._scorer(), exp.scorer if exp else None, self._fallback):
            th = getattr(scorer, "thresholds", None) if scorer is not None else None
            if scorer is not None and scorer.version == version and th is not None:
                return float(th.hot), float(th.warm)
        th = getattr(self._scorer(), "thresholds", None)
        return (float(th.hot), float(th.warm)) if th is not None else (1.0, 0.0)

    def _validate(self, msg: Message, index: int, now_ms: int, out: BatchOutput) -> Event | None:
        """The message's event, or None after adding its DLQ record to ``out``."""
        source = self._topic_sources.get(msg.topic)
        res: Event | Invalid = validate_event(
            msg.value,
            topic_source=source,
            key=msg.key,
            now_ms=now_ms,
            max_future_ms=self._max_future_ms,
            redactor=self._redactor,
        )
        if not isinstance(res, Invalid):
            return res
        self._dead_letter(msg, index, res, out, now_ms)
        return None

    def _dead_letter(
        self, msg: Message, index: int, error: Invalid, out: BatchOutput, now_ms: int | None = None
    ) -> None:
        rec = dlq_record(
            msg.value,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            error=error,
            max_value_bytes=self._dlq_max_value_bytes,
            now_ms=int(self._clock() * 1000) if now_ms is None else now_ms,
            redactor=self._redactor,
            keep_raw=self._dlq_keep_raw,
        )
        out.dlq.append((dlq_key(msg.key), orjson.dumps(rec)))
        out.dlq_msgs.append(index)
        out.dlq_codes.append(error.code)
        out.counts[(self._source(msg), _dlq_outcome(error.code))] += 1

    def _score_chunk(
        self,
        chunk: Sequence[tuple[int, Message, Event]],
        updates: Sequence[Update],
        out: BatchOutput,
    ) -> None:
        scored_events, batch = self._to_score(chunk, updates, out)
        if not scored_events:
            return
        exp = self._experiment() if self._experiment is not None else None
        if exp is None:
            scorer, results = self._score(batch)
            versions: list[str] | None = None
            arms: list[Arm] | None = None
        else:
            results, versions, arms = self._score_arms(batch, scored_events, exp)
            scorer = self._scorer()
        now = self._clock()
        scored_at = format_ts_ms(int(now * 1000))
        version = scorer.version
        # Per record: locals for the appends, counters added once per chunk.
        add_record, add_scored, add_score = out.records.append, out.scored.append, out.scores.append
        add_msg, add_in_flight, dumps = out.score_msgs.append, self._in_flight.add, orjson.dumps
        for j, ((i, _, ev), s) in enumerate(zip(scored_events, results, strict=True)):
            lead = ev.lead_id
            rec = {
                "lead_id": lead,
                "score": round(s.score, 6),
                "score_100": int(round(s.score * 100)),
                "tier": s.tier,
                "model_version": version if versions is None else versions[j],
                "reasons": s.reasons,
                "event_id": ev.event_id,
                "event_ts": ev.ts,
                "scored_at": scored_at,
            }
            if arms is not None and exp is not None:
                rec["experiment"] = exp.experiment.id
                rec["arm"] = arms[j]
            add_record(rec)
            key = (lead, ev.event_id)
            add_scored(key)
            add_in_flight(key)
            add_msg(i)
            add_score((lead, dumps(rec)))
        out.counts.update((ev.source, "scored") for _, _, ev in scored_events)
        out.tiers.update(s.tier for s in results)
        observe_many(
            self._metrics.event_to_score,
            [max(0.0, now - m.timestamp) for _, m, _ in scored_events if m.timestamp is not None],
        )
        shadow = self._shadow() if self._shadow is not None else None
        if shadow is not None:
            self._shadow_records(shadow, batch, scored_events, scored_at, out)

    def _to_score(
        self,
        chunk: Sequence[tuple[int, Message, Event]],
        updates: Sequence[Update],
        out: BatchOutput,
    ) -> tuple[list[tuple[int, Message, Event]], Rows]:
        """The chunk's events to score and their features; the others counted (duplicate,
        late) or dead-lettered (a store error)."""
        counts = out.counts
        texts: list[str] = []
        rows: list[dict[str, Any]] = []
        specs = None
        scored_events: list[tuple[int, Message, Event]] = []
        in_flight = self._in_flight
        for (i, msg, ev), upd in zip(chunk, updates, strict=True):
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
                scored_events.append((i, msg, ev))
                if upd.outcome == "redelivered":
                    counts[(ev.source, "redelivered")] += 1
            elif upd.outcome == "error":
                self._dead_letter(msg, i, Invalid("internal_error", upd.error), out)
            elif upd.outcome in ("erased", "opted_out"):
                counts[(ev.source, upd.outcome)] += 1
            else:
                outcome = "duplicate" if upd.outcome == "dup" else "late"
                counts[(ev.source, outcome)] += 1
        if texts and rows:
            raise PipelineError("a feature store returned both vectors and feature dicts")
        if texts and specs is not None:
            return scored_events, vector_batch(texts, specs)
        return scored_events, rows

    def _score_arms(
        self,
        batch: Rows,
        scored_events: Sequence[tuple[int, Message, Event]],
        exp: ActiveExperiment,
    ) -> tuple[list[ScoredRecord], list[str], list[Arm]]:
        """Each row scored by its arm's model: the champion, or the experiment's challenger
        (the champion's fallback applies to both)."""
        e = exp.experiment
        if e.by == "lead_id":
            values = [ev.lead_id for _, _, ev in scored_events]
        else:
            # A profile attribute: read from the lead's features, so every event of a lead
            # hashes the same value; a lead without one is split by its id.
            rows = batch.rows() if isinstance(batch, FeatureBatch) else batch
            values = [
                str(v) if (v := row.get(e.by)) not in (None, "") else ev.lead_id
                for row, (_, _, ev) in zip(rows, scored_events, strict=True)
            ]
        arms: list[Arm] = [e.arm(v) for v in values]
        results: list[ScoredRecord | None] = [None] * len(arms)
        versions = [""] * len(arms)
        for arm in ("champion", "challenger"):
            idx = [j for j, a in enumerate(arms) if a == arm]
            if not idx:
                continue
            sub = _subset(batch, idx)
            if arm == "champion":
                scorer, scored = self._score(sub)
            else:
                scorer, scored = self._score(sub, exp.scorer)
            for j, r in zip(idx, scored, strict=True):
                results[j], versions[j] = r, scorer.version
        return [r for r in results if r is not None], versions, arms

    def _shadow_records(
        self,
        shadow: Scorer,
        batch: Rows,
        scored_events: Sequence[tuple[int, Message, Event]],
        scored_at: str,
        out: BatchOutput,
    ) -> None:
        """The shadow model's records (scores only, no reasons: the cheap pass). A shadow
        that fails costs its records, never the batch."""
        try:
            scored = shadow.score_batch(batch, explain=False)
        except Exception:  # noqa: BLE001 - a shadow model must not stop scoring
            if shadow.version not in self._broken_models:
                self._broken_models.add(shadow.version)
                log.exception("shadow model %s failed to score", shadow.version)
            self._metrics.model_errors.labels(version=shadow.version).inc()
            return
        dumps, add = orjson.dumps, out.shadow.append
        for (_, _, ev), s in zip(scored_events, scored, strict=True):
            rec = {
                "lead_id": ev.lead_id,
                "score": round(s.score, 6),
                "score_100": int(round(s.score * 100)),
                "tier": s.tier,
                "model_version": shadow.version,
                "reasons": [],
                "event_id": ev.event_id,
                "event_ts": ev.ts,
                "scored_at": scored_at,
            }
            add((ev.lead_id, dumps(rec)))

    def _score(self, batch: Rows, model: Scorer | None = None) -> tuple[Scorer, list[ScoredRecord]]:
        """Score with ``model`` (default: the current one); if it fails, with the fallback
        (the rules)."""
        scorer = model if model is not None else self._scorer()
        try:
            return scorer, scorer.score_records(batch)
        except Exception as exc:
            if self._fallback is None or scorer is self._fallback:
                raise
            if scorer.version not in self._broken_models:
                self._broken_models.add(scorer.version)
                log.exception("model %s failed to score; using %s", scorer.version, exc)
            self._metrics.model_errors.labels(version=scorer.version).inc()
            return self._fallback, self._fallback.score_records(batch)

    def _alerts(self, out: BatchOutput, decisions: dict[str, str]) -> None:
        """Alerts for the leads whose latest record of the batch announces a tier change
        (features/alerting.py), and the summary record when this worker's champion changed."""
        latest = {rec["lead_id"]: rec for rec in out.records}
        suppressed = self._metrics.alerts_suppressed
        for lead, decision in decisions.items():
            if not decision:
                continue
            if decision[0] != ANNOUNCE:
                suppressed.labels(reason=SUPPRESSED[decision]).inc()
                continue
            rec = latest[lead]
            alert = {
                "type": "tier_change",
                "lead_id": lead,
                "from_tier": decision[1:],
                "to_tier": rec["tier"],
                "score": rec["score"],
                "model_version": rec["model_version"],
                "event_id": rec["event_id"],
                "event_ts": rec["event_ts"],
                "scored_at": rec["scored_at"],
            }
            out.alerts.append((lead, orjson.dumps(alert)))
        champion = self._scorer().version
        if out.records and champion != self._champion_seen:
            if self._champion_seen is not None:
                summary = {
                    "type": "model_swap",
                    "from_version": self._champion_seen,
                    "to_version": champion,
                    "scored_at": out.records[-1]["scored_at"],
                    "note": "tier changes this model makes are not announced lead by lead",
                }
                out.alerts.append((MODEL_SWAP_KEY, orjson.dumps(summary)))
            self._champion_seen = champion


class _StoreCalls:
    """One run's valid events in store-call chunks, and the calls in flight.

    The first chunk is smaller: nothing overlaps the wait for its store call. That call goes
    out as soon as the chunk's events are validated; the rest of the batch is validated
    while Redis applies it. A store that applies calls in the order they are made
    (``ordered``: one connection) gets every chunk's call as soon as the chunk is validated;
    any other gets chunk k+1's call once chunk k's reply is in (so Redis applies them in
    order: per-lead order holds).
    """

    def __init__(self, store: FeatureStore, confirm: list[tuple[str, str]], size: int) -> None:
        self.store = store
        self.confirm = confirm
        self.ordered = store.ordered
        self.first = max(1, size // 4)
        self.size = size
        self.unique: list[tuple[int, Message, Event]] = []
        self.bounds = [0]
        """Where each chunk starts in ``unique``."""
        self.tasks: list[asyncio.Task[list[Update]]] = []
        self.sending = 0.0
        """Seconds spent sending calls while validating."""
        self.saving: asyncio.Task[dict[str, str]] | None = None

    def next_full(self) -> int:
        """The length of ``unique`` at which the open chunk is full."""
        return self.bounds[-1] + (self.first if len(self.bounds) == 1 else self.size)

    async def close_chunk(self) -> None:
        self.bounds.append(len(self.unique))
        if self.ordered or not self.tasks:
            s0 = time.perf_counter()
            await self.send(self.bounds[-2], self.bounds[-1])
            self.sending += time.perf_counter() - s0

    async def send(self, a: int, b: int) -> None:
        events = [e for _, _, e in self.unique[a:b]]
        confirm = self.confirm if a == 0 else ()
        self.tasks.append(await _started(self.store.apply_batch(events, confirm)))

    def chunks(self) -> list[list[tuple[int, Message, Event]]]:
        return [self.unique[a:b] for a, b in zip(self.bounds, self.bounds[1:], strict=False)]

    def cancel(self) -> None:
        for pending in (*self.tasks, self.saving):
            if pending is not None and not pending.done():
                pending.cancel()


def _dlq_outcome(code: str) -> str:
    """The events counter's outcome for a DLQ record: bad input, or a failure of ours."""
    return "failed" if code == "internal_error" else "invalid"


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
def _parsers(specs: tuple[Spec, ...]) -> tuple[tuple[str, ...], Callable[[int, str], FeatureValue]]:
    names = tuple(s.name for s in specs)

    def parse(j: int, field: str) -> FeatureValue:
        return parse_value(field, specs[j])

    return names, parse


def _subset(batch: Rows, idx: Sequence[int]) -> Rows:
    """The rows ``idx`` of a batch, in the same form."""
    if isinstance(batch, FeatureBatch):
        return FeatureBatch(batch.names, [batch.texts[j] for j in idx], batch.sep, batch.parse)
    return [batch[j] for j in idx]


def vector_batch(texts: list[str], specs: tuple[Spec, ...]) -> FeatureBatch:
    """The store's feature vectors as a batch the scorer reads column-wise."""
    names, parse = _parsers(specs)
    return FeatureBatch(names, texts, VECTOR_SEP, parse)
