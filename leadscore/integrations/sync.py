"""``leadscore sync``: the CRM sync consumer of ``leads.scores``.

Sinks: PostgreSQL (upsert of the latest score per lead), an HTTP webhook (POST of each
batch as JSON, retried, then dead-lettered: :mod:`leadscore.integrations.webhook`), or a
JSONL file. Offsets are committed only after the sink has the batch
(at-least-once); every sink is idempotent per lead, so a redelivered batch is harmless.
A tombstone (erased lead) deletes the lead's row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import orjson
from confluent_kafka import Consumer, KafkaException

from leadscore.errors import ConfigError
from leadscore.integrations.sync_metrics import SyncMetrics
from leadscore.settings import Settings

Update = tuple[str, dict[str, Any] | None]  # (lead_id, record or None for erasure)


class Sink(Protocol):
    def write(self, updates: Sequence[Update]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    def __init__(self, path: Path) -> None:
        self._fh = path.open("ab")

    def write(self, updates: Sequence[Update]) -> None:
        for lead, rec in updates:
            self._fh.write(
                orjson.dumps(rec if rec is not None else {"lead_id": lead, "deleted": True}) + b"\n"
            )
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


_DDL = """
CREATE TABLE IF NOT EXISTS lead_scores (
    lead_id       text PRIMARY KEY,
    score         double precision NOT NULL,
    score_100     integer NOT NULL,
    tier          text NOT NULL,
    model_version text NOT NULL,
    reasons       jsonb NOT NULL,
    event_id      text NOT NULL,
    event_ts      timestamptz NOT NULL,
    scored_at     timestamptz NOT NULL,
    synced_at     timestamptz NOT NULL DEFAULT now()
)
"""
# Only a newer score replaces an older one, so replays and redeliveries never regress a lead.
_UPSERT = """
INSERT INTO lead_scores (lead_id, score, score_100, tier, model_version, reasons, event_id,
                         event_ts, scored_at)
VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)
ON CONFLICT (lead_id) DO UPDATE SET
    score = EXCLUDED.score, score_100 = EXCLUDED.score_100, tier = EXCLUDED.tier,
    model_version = EXCLUDED.model_version, reasons = EXCLUDED.reasons,
    event_id = EXCLUDED.event_id, event_ts = EXCLUDED.event_ts, scored_at = EXCLUDED.scored_at,
    synced_at = now()
WHERE lead_scores.scored_at <= EXCLUDED.scored_at
"""


class PostgresSink:
    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                "the PostgreSQL sink needs the postgres extra: pip install 'leadscore[postgres]'"
            ) from exc

        try:
            self._conn = psycopg.connect(dsn)
        except psycopg.Error as exc:
            raise ConfigError(f"can't connect to PostgreSQL at {dsn}: {exc}") from exc
        with self._conn.transaction():
            self._conn.execute(_DDL)

    def write(self, updates: Sequence[Update]) -> None:
        latest: dict[str, dict[str, Any] | None] = {}
        for lead, rec in updates:
            latest[lead] = rec
        with self._conn.transaction(), self._conn.cursor() as cur:
            for lead, rec in latest.items():
                if rec is None:
                    cur.execute("DELETE FROM lead_scores WHERE lead_id = %s", (lead,))
                    continue
                cur.execute(
                    _UPSERT,
                    (
                        lead,
                        rec["score"],
                        rec["score_100"],
                        rec["tier"],
                        rec["model_version"],
                        json.dumps(rec["reasons"]),
                        rec["event_id"],
                        rec["event_ts"],
                        rec["scored_at"],
                    ),
                )

    def close(self) -> None:
        self._conn.close()


def make_sink(url: str, settings: Settings | None = None) -> Sink:
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        return PostgresSink(url)
    if parsed.scheme in ("http", "https"):
        from leadscore.integrations.webhook import WebhookSink

        if settings is None:
            return WebhookSink(url)
        auth = settings.sync_webhook_authorization
        return WebhookSink(
            url,
            authorization=auth.get_secret_value() if auth is not None else None,
            tries=settings.sync_tries,
            dead_letter=settings.sync_dead_letter,
        )
    if parsed.scheme in ("jsonl", "file"):
        return JsonlSink(Path(parsed.path))
    if parsed.scheme == "" and url.endswith(".jsonl"):
        return JsonlSink(Path(url))
    raise ConfigError(
        f"unknown sink {url!r}: use postgresql://..., http(s)://... or jsonl:///path/file.jsonl"
    )


def run_sync(
    settings: Settings,
    sink: Sink,
    *,
    group_id: str | None = None,
    max_records: int | None = None,
    idle_exit_s: float | None = None,
    batch_size: int = 500,
    progress: Callable[[str], None] | None = None,
    metrics: SyncMetrics | None = None,
) -> int:
    """Consume ``leads.scores`` into ``sink`` until interrupted (or the limits); return records."""
    consumer = Consumer(
        {
            **settings.kafka_group_config(group_id or f"{settings.app_id}-crm-sync"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    # The idle clock starts when partitions are assigned: joining a group can take longer
    # than a short --idle-exit (23 s on the embedded broker), which then synced nothing.
    assigned: list[float] = []

    def on_assign(c: Any, partitions: Any) -> None:
        if not assigned:
            assigned.append(time.monotonic())

    consumer.subscribe([settings.topic("scores")], on_assign=on_assign)
    done = 0
    last_data: float | None = None
    try:
        while max_records is None or done < max_records:
            msgs = consumer.consume(batch_size, timeout=0.5)
            updates: list[Update] = []
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
                key = m.key()
                if key is None:
                    continue
                raw = m.value()
                updates.append((key.decode(), None if raw is None else orjson.loads(raw)))
            if updates:
                _write(sink, updates, metrics)
                consumer.commit(asynchronous=False)
                done += len(updates)
                last_data = time.monotonic()
                if progress is not None:
                    progress(f"synced {done} score records")
            elif idle_exit_s is not None and assigned:
                since = last_data if last_data is not None else assigned[0]
                if time.monotonic() - since > idle_exit_s:
                    break
    finally:
        consumer.close()
        sink.close()
    return done


def _write(sink: Sink, updates: list[Update], metrics: SyncMetrics | None) -> None:
    if metrics is None:
        sink.write(updates)
        return
    before = getattr(sink, "dead_lettered", 0)
    try:
        sink.write(updates)
    except Exception:
        metrics.failures.inc()
        raise
    metrics.dead_lettered.inc(getattr(sink, "dead_lettered", 0) - before)
    tombstones = sum(1 for _, rec in updates if rec is None)
    metrics.wrote(len(updates) - tombstones, tombstones)
