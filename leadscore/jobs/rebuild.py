"""``leadscore rebuild``: the feature state rebuilt from the input topics after Redis lost it.

The input topics are the system of record: replaying them through the store's own Lua
script rebuilds the state exactly (the same code computes it). Steps:

1. begin a new state generation (``features.state``): every worker stops at its next store
   call, and stays stopped (``/ready`` 503) until the rebuild is done;
2. read each input partition from the chosen start (the beginning, a time, or offsets) to
   its end at that moment, and apply every valid event in partition order, in batches, as
   the worker does. Events below the worker group's committed offsets had their scores
   published: they are confirmed. Those above are left *pending*, as after a worker crash:
   when the worker reaches them it re-emits their scores from the features they had instead
   of dropping them as duplicates, so no event loses its score;
3. restore each lead's latest score from ``leads.scores`` (tier-change alerts and lookups
   need it);
4. mark the generation ready: the workers adopt it and go on where they stopped.

The state is exact only if the topics still hold every event since the rebuild's start that
a feature window can reach (30 days): keep the input topics' retention above that.

**On top of a restored snapshot** (``leadscore backup``, then ``--from-offsets-file``): the
rebuild never clears the state, it only starts a new generation; so replaying from the
offsets the worker group had committed before the snapshot was taken brings the snapshot's
state up to date. Everything below those offsets is in the snapshot (the worker writes Redis
before it commits); the events above that the snapshot holds as well come back as
duplicates (their event ids are in the state) and change nothing; the rest are applied. The
rebuild checks first that Redis holds the snapshot's state (its generation is the one the
backup recorded): on an empty Redis the replay would build a state that lacks everything
below the offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from leadscore.errors import ConfigError, LeadscoreError
from leadscore.features.state import StateStatus
from leadscore.features.store import Confirmation, RedisFeatureStore, erased_leads
from leadscore.infra.redis import redis_client
from leadscore.infra.topics import committed_offsets, end_offsets, input_partitions
from leadscore.schemas import SOURCES, Source
from leadscore.schemas.validation import Event, parse_ts_ms, validate_event
from leadscore.settings import Settings

log = logging.getLogger(__name__)

#: Events per store call: large calls keep the script's per-call cost small.
BATCH = 1000
Progress = Callable[[str], None]


class RebuildError(LeadscoreError):
    """Raised when a rebuild can't start: a start offset the topics no longer hold, or a
    Redis that does not hold the snapshot the replay should continue."""


@dataclass
class RebuildReport:
    generation: str = ""
    continued_from: str = ""
    """The restored snapshot's generation the replay went on from (``--from-offsets-file``)."""
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    erased: int = 0
    invalid: int = 0
    failed: int = 0
    pending: int = 0
    latest_scores: int = 0
    partitions: dict[str, list[int]] = field(default_factory=dict)
    """``topic:partition`` -> [start offset, end offset, committed offset]."""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "continued_from_generation": self.continued_from or None,
            "events": self.events,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "late": self.late,
            "erased_skipped": self.erased,
            "invalid_skipped": self.invalid,
            "failed": self.failed,
            "left_pending": self.pending,
            "latest_scores_restored": self.latest_scores,
            "partitions": self.partitions,
            "seconds": round(self.seconds, 2),
        }


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"{settings.app_id}-rebuild",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
        }
    )


def start_offsets(
    settings: Settings,
    consumer: Consumer,
    partitions: list[tuple[str, int]],
    *,
    from_ms: int | None,
    from_offsets: dict[tuple[str, int], int],
) -> dict[tuple[str, int], int]:
    starts = {tp: OFFSET_BEGINNING for tp in partitions}
    if from_ms is not None:
        found = consumer.offsets_for_times(
            [TopicPartition(t, p, from_ms) for t, p in partitions], timeout=30
        )
        for tp in found:
            # -1: no record at or after the time; the partition has nothing to replay.
            starts[(tp.topic, tp.partition)] = tp.offset
    starts.update(from_offsets)
    for (topic, part), offset in sorted(from_offsets.items()):
        low, _high = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=30)
        if offset < low:
            # The consumer would jump to the partition's end (librdkafka's default reset)
            # and the replay would silently leave these events out.
            raise RebuildError(
                f"{topic}:{part}: the replay should start at offset {offset}, but the topic "
                f"holds offsets from {low} on (retention deleted the events between): the "
                "state can't be caught up from there; rebuild from the beginning or "
                "--from-time instead"
            )
    return starts


def check_base_state(status: StateStatus, generation: str, *, force: bool = False) -> None:
    """Raise :class:`RebuildError` unless Redis holds the state of ``generation`` (a
    restored snapshot) for a replay from that snapshot's offsets to continue.

    >>> check_base_state(StateStatus("g1", "ready"), "g1")
    >>> check_base_state(StateStatus(None, None), "g1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    leadscore.jobs.rebuild.RebuildError: Redis holds no feature state: ...
    """
    if force:
        return
    if status.generation is None:
        raise RebuildError(
            "Redis holds no feature state: restore the backup's snapshot first (see "
            "docs/runbook.md, Backup and restore); a replay from its offsets onto an empty "
            "Redis would lack every event below them (to rebuild everything, run "
            "`leadscore rebuild` without --from-offsets-file)"
        )
    if status.generation != generation:
        raise RebuildError(
            f"Redis holds feature state generation {status.generation} ({status.status}, "
            f"{status.updated_at}: {status.note}), not the backup's {generation}: restore the "
            "backup's snapshot first. If it was restored and a catch-up from it was cut short "
            "(the state is then the snapshot's plus part of the replay), run again with --force"
        )


async def rebuild(
    settings: Settings,
    *,
    from_ms: int | None = None,
    from_offsets: dict[tuple[str, int], int] | None = None,
    base_generation: str | None = None,
    force: bool = False,
    restore_scores: bool = True,
    progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild the feature state from the input topics (see the module docstring).

    ``base_generation``: the replay continues a restored snapshot of this generation from
    ``from_offsets`` (its backup's); refused unless Redis holds it (``force``: don't check).
    """
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    report = RebuildReport()
    client = redis_client(settings)
    store = RedisFeatureStore(client, per_slot=settings.redis_cluster, ttl_s=settings.state_ttl_s)
    consumer = _consumer(settings)
    try:
        partitions = input_partitions(settings)
        ends = end_offsets(settings, partitions)
        committed = committed_offsets(settings, partitions)
        starts = start_offsets(
            settings, consumer, partitions, from_ms=from_ms, from_offsets=from_offsets or {}
        )
        if base_generation is not None:
            check_base_state(await store.marker.status(), base_generation, force=force)
            report.continued_from = base_generation
            what = f"the offsets of a backup of generation {base_generation}"
        else:
            what = "the beginning" if from_ms is None else str(from_ms)
        report.generation = store.generation = await store.marker.begin_rebuild(
            f"rebuild from {what} started"
        )
        say(
            f"rebuilding generation {report.generation} from {len(partitions)} partitions "
            f"({sum(ends.values())} messages at most); workers wait until it is done"
        )
        todo = []
        for tp in partitions:
            start, end = starts[tp], ends[tp]
            report.partitions[f"{tp[0]}:{tp[1]}"] = [max(start, 0), end, committed[tp]]
            if end > 0 and start != -1 and (start == OFFSET_BEGINNING or start < end):
                todo.append(TopicPartition(tp[0], tp[1], start))
        await _replay(settings, store, consumer, todo, ends, committed, report, say)
        if restore_scores:
            report.latest_scores = await _restore_latest(settings, store, say)
        report.seconds = time.monotonic() - t0
        await store.marker.finish_rebuild(
            report.generation, f"rebuilt {report.applied} events in {report.seconds:.1f} s"
        )
        say(f"done: {report.applied} events applied in {report.seconds:.1f} s; workers resume")
        return report
    finally:
        consumer.close()
        await store.close()
        await client.aclose()


async def _replay(
    settings: Settings,
    store: RedisFeatureStore,
    consumer: Consumer,
    assignment: list[TopicPartition],
    ends: dict[tuple[str, int], int],
    committed: dict[tuple[str, int], int],
    report: RebuildReport,
    say: Progress,
) -> None:
    if not assignment:
        return
    sources: dict[str, Source] = {settings.topic(s): s for s in SOURCES}
    future_ms = settings.max_future_skew_s * 1000
    consumer.assign(assignment)
    open_parts = {(tp.topic, tp.partition) for tp in assignment}
    batch: list[tuple[Event, bool]] = []
    confirm: list[Confirmation] = []
    next_note = time.monotonic() + 5.0
    while open_parts:
        msgs = consumer.consume(1000, 0.5)
        if not msgs:
            _drop_finished(consumer, open_parts, ends)
        for msg in msgs:
            if msg.error():
                continue
            tp, offset = _where(msg)
            if tp not in open_parts or offset >= ends[tp]:
                continue
            if offset + 1 >= ends[tp]:
                open_parts.discard(tp)
            report.events += 1
            # The worker judged "too far in the future" by its clock when it read the
            # message; the message's broker timestamp stands in for that moment.
            _kind, ts = msg.timestamp()
            now_ms = ts if ts > 0 else int(time.time() * 1000)
            res = validate_event(
                msg.value(),
                topic_source=sources.get(tp[0]),
                key=msg.key(),
                now_ms=now_ms,
                max_future_ms=future_ms,
                redactor=settings.redactor,  # the state it rebuilds is the worker's: redacted
            )
            if not isinstance(res, Event):
                report.invalid += 1
                continue
            batch.append((res, offset < committed.get(tp, 0)))
            if len(batch) >= BATCH:
                confirm = await _apply(store, batch, confirm, report)
                batch = []
        if time.monotonic() > next_note:
            say(f"  {report.events} messages read, {report.applied} events applied")
            next_note = time.monotonic() + 5.0
    confirm = await _apply(store, batch, confirm, report)
    if confirm:
        await store.apply_batch([], confirm)


def _where(msg: Any) -> tuple[tuple[str, int], int]:
    return (msg.topic() or "", msg.partition() or 0), msg.offset() or 0


def _drop_finished(
    consumer: Consumer, open_parts: set[tuple[str, int]], ends: dict[tuple[str, int], int]
) -> None:
    """Drop the partitions whose position reached their end without a record for the last
    offset (a transaction marker, or a record compacted away)."""
    for tp in consumer.position([TopicPartition(t, p) for t, p in open_parts]):
        if tp.offset >= ends[(tp.topic, tp.partition)]:
            open_parts.discard((tp.topic, tp.partition))


async def _apply(
    store: RedisFeatureStore,
    batch: list[tuple[Event, bool]],
    confirm: list[Confirmation],
    report: RebuildReport,
) -> list[Confirmation]:
    """Apply a batch; return the confirmations for the next call (events whose scores the
    worker already published)."""
    if not batch:
        return confirm
    updates = await store.apply_batch([e for e, _ in batch], confirm)
    nxt: list[Confirmation] = []
    for (ev, published), upd in zip(batch, updates, strict=True):
        if upd.outcome == "opted_out":
            report.applied += 1  # applied; the lead opted out, so it has no score pending
        elif upd.outcome == "ok":
            report.applied += 1
            if published:
                nxt.append((ev.lead_id, ev.event_id))
            else:
                report.pending += 1
        elif upd.outcome in ("dup", "redelivered"):
            report.duplicates += 1
            # Redelivered: a restored snapshot's event whose score was pending when the
            # snapshot was taken. Published since (below the committed offsets): confirmed
            # now, else the pending vector would linger; not yet: left for the worker.
            if upd.outcome == "redelivered" and published:
                nxt.append((ev.lead_id, ev.event_id))
        elif upd.outcome == "late":
            report.late += 1
        elif upd.outcome == "erased":
            # The lead was erased: its suppression marker survives the rebuild (which never
            # clears the state), so the replay does not bring it back.
            report.erased += 1
        else:
            report.failed += 1
            log.warning("event %s of lead %s failed: %s", ev.event_id, ev.lead_id, upd.error)
    return nxt


async def _restore_latest(settings: Settings, store: RedisFeatureStore, say: Progress) -> int:
    """Each lead's latest score record from ``leads.scores`` back into the store."""
    topic = settings.topic("scores")
    consumer = _consumer(settings)
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or not meta.partitions:
            return 0
        parts = [(topic, p) for p in sorted(meta.partitions)]
        ends = end_offsets(settings, parts)
        todo = {tp for tp, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in todo])
        latest: dict[str, bytes | None] = {}
        while todo:
            msgs = consumer.consume(1000, 0.5)
            if not msgs:
                _drop_finished(consumer, todo, ends)
            for msg in msgs:
                if msg.error():
                    continue
                tp, offset = _where(msg)
                if offset + 1 >= ends[tp]:
                    todo.discard(tp)
                key = msg.key()
                if key is not None:
                    latest[key.decode("utf-8", "replace")] = msg.value()
    finally:
        consumer.close()
    records = [(lead, v) for lead, v in latest.items() if v is not None]
    # An erased lead whose tombstone is not yet on the topic keeps no latest score either.
    erased = await erased_leads(store.client, [lead for lead, _ in records])
    records = [(lead, v) for lead, v in records if lead not in erased]
    for k in range(0, len(records), BATCH):
        part = records[k : k + BATCH]
        await store.save_scores([{"lead_id": lead} for lead, _ in part], [v for _, v in part])
    say(f"restored the latest score of {len(records)} leads from {topic}")
    return len(records)


def run_rebuild(settings: Settings, **kwargs: Any) -> RebuildReport:
    return asyncio.run(rebuild(settings, **kwargs))


def parse_from_time(text: str | None) -> int | None:
    """``--from-time``: epoch milliseconds of an RFC 3339 moment (None: from the beginning)."""
    if not text:
        return None
    ms = parse_ts_ms(text)
    if ms is None:
        raise ConfigError(f"--from-time {text!r} is not an RFC 3339 timestamp with offset")
    return ms


def parse_from_offsets(settings: Settings, specs: Iterable[str]) -> dict[tuple[str, int], int]:
    """``--from-offset SOURCE:PARTITION:OFFSET`` (repeatable) -> {(topic, partition): offset}.

    >>> from leadscore.settings import Settings
    >>> parse_from_offsets(Settings(), ["web:0:1500", "crm:3:0"])
    {('leads.web', 0): 1500, ('leads.crm', 3): 0}
    """
    offsets: dict[tuple[str, int], int] = {}
    for spec in specs:
        source, _, rest = spec.partition(":")
        part, _, offset = rest.partition(":")
        if source not in SOURCES or not part.isdigit() or not offset.isdigit():
            raise ConfigError(
                f"--from-offset {spec!r} is not SOURCE:PARTITION:OFFSET "
                f"(SOURCE one of {', '.join(SOURCES)})"
            )
        offsets[(settings.topic(source), int(part))] = int(offset)
    return offsets
