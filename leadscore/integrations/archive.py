"""``leadscore archive``: every valid input event, kept as Parquet for retraining.

A consumer of the input topics (``leads.web``, ``leads.email``, ``leads.crm``,
``leads.social``, ``leads.enrichment``) in its own group. It validates each message as the
worker does (invalid ones are the worker's to dead-letter: they are counted here, not
archived), buffers valid
events, and flushes them to the archive (:mod:`leadscore.infra.archive`) when the buffer
holds ``flush_events`` events or ``flush_bytes`` bytes, or is ``flush_seconds`` old, and
when partitions are revoked or the process stops. Offsets are committed only after the
files of a flush are durable, so a crash (even ``kill -9``) loses nothing: the uncommitted
messages are read again and written again, and the reader keeps one copy per event id.
Memory is bounded by the buffer limits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from leadscore.features.store import erased_leads
from leadscore.infra.archive import ArchivedEvent, ArchiveError, ArchiveWriter, prune_archive
from leadscore.infra.redis import redis_client
from leadscore.infra.topics import INPUT_TOPICS
from leadscore.schemas import Source
from leadscore.schemas.validation import Event, stored_value, validate_event
from leadscore.settings import Settings

Say = Callable[[str], None]
log = logging.getLogger(__name__)

#: The archiver deletes partitions past ``archive_retention_days`` at start and this often:
#: a partition is a day, so an hour keeps each one at most an hour past its retention.
PRUNE_EVERY_S = 3600.0


async def _erased(settings: Settings, leads: list[str]) -> set[str]:
    client = redis_client(settings)
    try:
        return await erased_leads(client, leads)
    finally:
        await client.aclose()


@dataclass(slots=True)
class ArchiveStats:
    archived: int = 0
    invalid: int = 0
    erased: int = 0
    files: int = 0
    flushes: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ArchiveLimits:
    flush_events: int = 50_000
    flush_bytes: int = 64 * 1024 * 1024
    flush_seconds: float = 60.0


class Archiver:
    """The consume-buffer-flush-commit loop (one per process)."""

    def __init__(
        self,
        settings: Settings,
        root: str,
        *,
        group_id: str | None = None,
        limits: ArchiveLimits | None = None,
        storage_options: dict[str, Any] | None = None,
        progress: Say | None = None,
    ) -> None:
        self.settings = settings
        self.root = root
        self.storage_options = storage_options
        self.writer = ArchiveWriter(root, storage_options)
        self._pruned_at: float | None = None
        self.limits = limits or ArchiveLimits()
        self.say = progress or (lambda _m: None)
        self.stats = ArchiveStats()
        self._buffer: list[ArchivedEvent] = []
        self._bytes = 0
        self._since = time.monotonic()
        self._positions: dict[tuple[str, int], int] = {}
        self._sources: dict[str, Source] = {
            settings.topic(t): cast(Source, t) for t in INPUT_TOPICS
        }
        self._stop = False
        self.consumer = Consumer(
            {
                **settings.kafka_group_config(group_id or f"{settings.app_id}-archive"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )

    def stop(self, *_args: object) -> None:
        self._stop = True

    def _take(self, msg: Any) -> None:
        topic, part, off = msg.topic(), msg.partition(), msg.offset()
        self._positions[(topic, part)] = off + 1
        raw = msg.value()
        redactor = self.settings.redactor
        res = validate_event(
            raw,
            topic_source=self._sources.get(topic),
            key=msg.key(),
            now_ms=int(time.time() * 1000),
            max_future_ms=self.settings.max_future_skew_s * 1000,
            redactor=redactor,
        )
        if not isinstance(res, Event):
            self.stats.invalid += 1
            return
        # The archive keeps the message redacted as the worker redacts it (no raw PII at
        # rest) and a comment's sentiment, not its text; the reader validates it again into
        # the same event.
        value = stored_value(raw, redactor)
        if value is None:  # not a JSON object: validate_event would not have passed it
            self.stats.invalid += 1
            return
        if not self._buffer:
            self._since = time.monotonic()
        self._buffer.append(ArchivedEvent(res, value, topic, part, off))
        self._bytes += len(value)

    def _due(self) -> bool:
        lim = self.limits
        return (
            len(self._buffer) >= lim.flush_events
            or self._bytes >= lim.flush_bytes
            or (bool(self._positions) and time.monotonic() - self._since >= lim.flush_seconds)
        )

    def _drop_erased(self) -> None:
        """Drop the buffered events of erased leads (``leadscore forget``): they must not
        reach the archive while the erasure's suppression lasts. Without Redis configured
        the archiver can't know; the erasure's own archive rewrite is then all there is."""
        if not self._buffer or not self.settings.redis_url:
            return
        leads = list({r.event.lead_id for r in self._buffer})
        erased = asyncio.run(_erased(self.settings, leads))
        if erased:
            before = len(self._buffer)
            self._buffer = [r for r in self._buffer if r.event.lead_id not in erased]
            self.stats.erased += before - len(self._buffer)

    def flush(self) -> None:
        """Write the buffer, then commit every position read (valid or not)."""
        self._drop_erased()
        if self._buffer:
            paths = self.writer.write(self._buffer, int(time.time() * 1000))
            self.stats.files += len(paths)
            self.stats.flushes += 1
            self.stats.archived += len(self._buffer)
            for r in self._buffer:
                src = r.event.source
                self.stats.by_source[src] = self.stats.by_source.get(src, 0) + 1
            self.say(
                f"archived {self.stats.archived:,} events in {self.stats.files} files "
                f"({self.stats.invalid} invalid skipped)"
            )
        if self._positions:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)
        self._buffer, self._bytes, self._positions = [], 0, {}
        self._since = time.monotonic()

    def prune(self, now_ms: int | None = None) -> list[str]:
        """Delete the partitions past ``archive_retention_days`` (0: none); returns them.
        A failure is logged and tried again an hour later: archiving goes on meanwhile."""
        self._pruned_at = time.monotonic()
        days = self.settings.archive_retention_days
        if days <= 0:
            return []
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        try:
            pruned = prune_archive(self.root, days, now_ms, storage_options=self.storage_options)
        except ArchiveError as exc:
            log.error("archive retention: %s (tried again in %.0f s)", exc, PRUNE_EVERY_S)
            return []
        if pruned.deleted:
            self.say(
                f"deleted {len(pruned.deleted)} archive partitions dated before "
                f"{pruned.cutoff} (LEADSCORE_ARCHIVE_RETENTION_DAYS={days})"
            )
        return pruned.deleted

    def _on_revoke(self, _consumer: Any, _partitions: list[Any]) -> None:
        # Flush what was read from the partitions being taken away before another member
        # starts from the committed offsets (it would archive them again otherwise; the
        # reader's dedupe would hide it, but there is no need).
        self.flush()

    def run(
        self, *, max_events: int | None = None, idle_exit_s: float | None = None
    ) -> ArchiveStats:
        """Consume until stopped (SIGINT/SIGTERM), or ``max_events`` archived, or no message
        for ``idle_exit_s`` seconds once the first one arrived."""
        topics = [self.settings.topic(t) for t in INPUT_TOPICS]
        self.consumer.subscribe(topics, on_revoke=self._on_revoke)
        self.say(f"archiving {', '.join(topics)} to {self.writer.base}")
        last_msg: float | None = None
        try:
            while not self._stop:
                msgs = self.consumer.consume(1000, timeout=0.5)
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(err)
                    self._take(m)
                if msgs:
                    last_msg = time.monotonic()
                if self._due():
                    self.flush()
                if self._pruned_at is None or time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                    self.prune()
                done = (
                    max_events is not None and self.stats.archived + len(self._buffer) >= max_events
                )
                idle = (
                    idle_exit_s is not None
                    and last_msg is not None
                    and time.monotonic() - last_msg > idle_exit_s
                )
                if done or idle:
                    break
            self.flush()
        finally:
            self.consumer.close()
        return self.stats


def run_archive(
    settings: Settings,
    root: str,
    *,
    group_id: str | None = None,
    limits: ArchiveLimits | None = None,
    max_events: int | None = None,
    idle_exit_s: float | None = None,
    progress: Say | None = None,
) -> ArchiveStats:
    """Run the archiver in this process; SIGTERM and Ctrl-C flush, commit and stop."""
    settings.require_kafka()
    archiver = Archiver(settings, root, group_id=group_id, limits=limits, progress=progress)
    previous = {s: signal.signal(s, archiver.stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return archiver.run(max_events=max_events, idle_exit_s=idle_exit_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
