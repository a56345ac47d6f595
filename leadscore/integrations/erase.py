"""Erasing leads (right to be forgotten) everywhere leadscore keeps them, as one audited
workflow: ``leadscore forget LEAD...`` runs it at once, ``leadscore erasure`` for the requests
on ``leads.erasure`` (:mod:`leadscore.integrations.erasure_consumer`).

Steps, for a set of leads:

1. **Redis**, in one atomic call per slot: every key of the lead is deleted and a suppression
   marker is left for ``erasure_suppress_days`` (its state key holds only ``{x = when}``, and
   ``ls:{id}:x`` says so to readers outside the script). The feature-store script checks the
   marker in the same call that would apply an event, so a batch racing the erasure can't
   bring the lead back: from now on its events are dropped and counted (``erased``), and
   ``leadscore rebuild`` skips them too (it never clears the state, so the marker stays).
2. **Wait** (up to ``erasure_wait_s``) until the worker group and the archive group have
   committed the input offsets that existed at step 1: every record they derived from the
   lead's earlier events is then on the broker or in the archive, before what follows.
3. **Sweep** Redis again: a batch in flight at step 1 may have saved the lead's latest score
   since; the marker stays.
4. **Tombstones** on every output topic keyed by lead (scores, shadow scores, alerts, DLQ):
   on a compacted topic Kafka removes the lead's records; the CRM sync deletes the row
   (PostgreSQL) or posts ``{"lead_id", "deleted": true}`` (webhook) when it reads one.
5. **Archive**: the files that hold the lead's events are rewritten without them (the
   archiver, for its part, drops events of suppressed leads before it writes).
6. **Audit**: one record per lead on ``leads.erasure.audit``, naming the lead only by a keyed
   hash (HMAC-SHA256 with ``LEADSCORE_PRIVACY_KEY``): when, what was deleted where, counts,
   and whether the consumers had caught up at step 2.

The input topics themselves are append-only logs owned by their producers: Kafka can't
delete one lead's records from them, so their retention (``input_retention_days``) bounds
how long a lead's raw events stay there; the suppression period outlasts it by default.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import Producer

from leadscore.errors import ConfigError
from leadscore.features.store import RedisFeatureStore
from leadscore.infra.archive import ArchiveErasure, erase_from_archive
from leadscore.infra.redis import redis_client
from leadscore.infra.topics import (
    LEAD_KEYED_OUTPUTS,
    committed_offsets,
    end_offsets,
    input_partitions,
)
from leadscore.schemas.validation import format_ts_ms, validate_record
from leadscore.settings import Settings

log = logging.getLogger(__name__)

Say = Callable[[str], None]

#: What the CRM sync does with a tombstone, stated in each audit record.
SINKS_NOTE = (
    "the CRM sync deletes the lead's row (PostgreSQL) or posts a deletion (webhook) when it "
    "reads the tombstone on leads.scores"
)


def privacy_key(settings: Settings) -> bytes:
    """The key of the audit's lead hash; an erasure refuses to run without one (an unkeyed
    hash of a lead id can be reversed by hashing candidate ids)."""
    secret = settings.privacy_key
    value = secret.get_secret_value() if secret is not None else ""
    if not value:
        raise ConfigError(
            "erasure needs LEADSCORE_PRIVACY_KEY: the audit log names each erased lead only by "
            "a keyed hash. Create one (e.g. `openssl rand -hex 32`), keep it as a secret, and "
            "set the same one for every leadscore service"
        )
    return value.encode("utf-8")


def lead_hash(key: bytes, lead_id: str) -> str:
    """The audit log's name for a lead: HMAC-SHA256 of its id, hex."""
    return hmac.new(key, lead_id.encode("utf-8"), hashlib.sha256).hexdigest()


def consumer_groups(settings: Settings) -> list[str]:
    """The groups whose output an erasure waits for: the workers and the archiver."""
    return [settings.app_id, f"{settings.app_id}-archive"]


def wait_for_consumers(settings: Settings, timeout_s: float, say: Say) -> dict[str, bool | None]:
    """Wait until each group in :func:`consumer_groups` has committed every input offset that
    exists now. Per group: True (caught up), False (not within ``timeout_s``), None (the group
    never committed anything: not running here, nothing of it to wait for)."""
    parts = input_partitions(settings)
    if not parts:
        return {}
    ends = end_offsets(settings, parts)
    deadline = time.monotonic() + timeout_s
    out: dict[str, bool | None] = {}
    for group in consumer_groups(settings):
        committed = committed_offsets(settings, parts, group)
        if not any(committed.values()):
            out[group] = None
            continue
        told = False
        while True:
            behind = sum(max(ends[tp] - committed.get(tp, 0), 0) for tp in parts)
            if behind == 0:
                out[group] = True
                break
            if time.monotonic() >= deadline:
                out[group] = False
                log.warning(
                    "consumer group %s is still %d events behind the erasure after %.0f s; "
                    "going on (its records of the erased leads may follow the tombstones)",
                    group,
                    behind,
                    timeout_s,
                )
                break
            if not told:
                say(f"waiting for group {group} to finish {behind} events read before the erasure")
                told = True
            time.sleep(0.5)
            committed = committed_offsets(settings, parts, group)
    return out


def tombstone_producer(settings: Settings) -> Producer:
    """A producer that partitions by key as the worker's does (Faust's aiokafka producer:
    murmur2, the Java client's): a tombstone must land on the partition that holds the
    lead's records, or compaction never removes them. librdkafka's default partitioner
    (CRC32) put it elsewhere."""
    return Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random"})


def _tombstones(settings: Settings, leads: Sequence[str], producer: Producer) -> list[str]:
    topics = [settings.topic(t) for t in LEAD_KEYED_OUTPUTS]
    for lead in leads:
        key = lead.encode("utf-8")
        for topic in topics:
            producer.produce(topic, key=key, value=None)
        producer.poll(0)
    return topics


async def _erase_in_redis(
    settings: Settings, leads: list[str], suppress_s: int, now_ms: int, wait_s: float, say: Say
) -> tuple[dict[str, int], dict[str, bool | None]]:
    """Steps 1-3: erase and suppress, wait for the consumers, sweep. Returns the keys
    deleted per lead and whether each consumer group caught up."""
    client = redis_client(settings)
    store = RedisFeatureStore(client, per_slot=settings.redis_cluster)
    try:
        deleted = await store.erase(leads, suppress_s, now_ms)
        say(f"redis: erased {len(leads)} leads ({sum(deleted.values())} keys deleted)")
        caught_up: dict[str, bool | None] = {}
        if settings.kafka_bootstrap:
            caught_up = await asyncio.to_thread(wait_for_consumers, settings, wait_s, say)
        swept = await store.sweep(leads)
    finally:
        await store.close()
        await client.aclose()
    return {lead: deleted.get(lead, 0) + swept.get(lead, 0) for lead in leads}, caught_up


async def erase_leads(
    settings: Settings,
    lead_ids: Sequence[str],
    *,
    requested_by: str,
    requested_at: dict[str, str] | None = None,
    say: Say | None = None,
    wait_s: float | None = None,
) -> list[dict[str, Any]]:
    """Erase ``lead_ids`` everywhere (see the module docstring); returns the audit records
    (also published on ``leads.erasure.audit`` when Kafka is configured)."""
    say = say or (lambda _m: None)
    key = privacy_key(settings)
    leads = list(dict.fromkeys(lead_ids))
    if not leads:
        return []
    now_ms = int(time.time() * 1000)
    suppress_s = settings.erasure_suppress_days * 86_400
    wait = settings.erasure_wait_s if wait_s is None else wait_s
    redis_deleted, caught_up = await _erase_in_redis(settings, leads, suppress_s, now_ms, wait, say)
    topics: list[str] = []
    producer = tombstone_producer(settings) if settings.kafka_bootstrap else None
    if producer is not None:
        topics = _tombstones(settings, leads, producer)
        if producer.flush(30.0) != 0:
            raise ConfigError(
                f"Kafka at {settings.kafka_bootstrap} did not take the erasure's tombstones "
                "within 30 s; the Redis part is done, run the erasure again (it is idempotent)"
            )
        say(f"tombstones: {len(leads)} leads on {', '.join(topics)}")
    archive: ArchiveErasure | None = None
    if settings.archive_root:
        archive = await asyncio.to_thread(erase_from_archive, settings.archive_root, leads)
        say(
            f"archive: {sum(archive.removed.values())} events removed, "
            f"{archive.files_rewritten} files rewritten, {archive.files_deleted} deleted "
            f"(of {archive.files_scanned})"
        )
    hashes = {lead: lead_hash(key, lead) for lead in leads}
    records = _audit_records(
        leads,
        hashes,
        requested_by=requested_by,
        requested_at=requested_at or {},
        now_ms=now_ms,
        suppress_s=suppress_s,
        redis_deleted=redis_deleted,
        topics=topics,
        archive=archive,
        caught_up=caught_up,
    )
    for rec in records:
        validate_record("erasure_audit", rec)  # schemas/erasure_audit.json: the contract
    if producer is not None:
        audit = settings.topic("erasure.audit")
        for lead, rec in zip(leads, records, strict=True):
            producer.produce(audit, key=hashes[lead].encode(), value=orjson.dumps(rec))
        if producer.flush(30.0) != 0:
            raise ConfigError(
                f"Kafka did not take the erasure audit records within 30 s ({audit}); the "
                "erasure itself is done: run it again to record it (it is idempotent)"
            )
    log.info("erased %d leads (%s)", len(leads), requested_by)
    return records


def _audit_records(
    leads: Sequence[str],
    hashes: dict[str, str],
    *,
    requested_by: str,
    requested_at: dict[str, str],
    now_ms: int,
    suppress_s: int,
    redis_deleted: dict[str, int],
    topics: list[str],
    archive: ArchiveErasure | None,
    caught_up: dict[str, bool | None],
) -> list[dict[str, Any]]:
    """One audit record per lead (``schemas``-free JSON: the lead only as its hash)."""
    done = format_ts_ms(int(time.time() * 1000))
    return [
        {
            "erasure_id": uuid.uuid4().hex,
            "lead_hash": hashes[lead],
            "requested_by": requested_by,
            "requested_at": requested_at.get(lead) or format_ts_ms(now_ms),
            "erased_at": format_ts_ms(now_ms),
            "completed_at": done,
            "suppressed_until": format_ts_ms(now_ms + suppress_s * 1000),
            "redis_keys_deleted": redis_deleted.get(lead, 0),
            "tombstones": topics,
            "archive_events_removed": None if archive is None else archive.removed.get(lead, 0),
            "archive_files_rewritten": None if archive is None else archive.files_rewritten,
            "consumers_caught_up": caught_up,
            "sinks": SINKS_NOTE,
        }
        for lead in leads
    ]


def run_forget(
    settings: Settings,
    lead_ids: Sequence[str],
    *,
    say: Say | None = None,
    wait_s: float | None = None,
) -> list[dict[str, Any]]:
    """``leadscore forget``: :func:`erase_leads` from synchronous code."""
    return asyncio.run(erase_leads(settings, lead_ids, requested_by="cli", say=say, wait_s=wait_s))


def request_erasure(settings: Settings, lead_ids: Sequence[str]) -> int:
    """``leadscore forget --via-topic``: publish erasure requests on ``leads.erasure`` for
    the erasure consumer; returns how many were sent."""
    producer = Producer(settings.kafka_client_config())
    topic = settings.topic("erasure")
    now = format_ts_ms(int(time.time() * 1000))
    for lead in dict.fromkeys(lead_ids):
        body = {"lead_id": lead, "requested_at": now}
        producer.produce(topic, key=lead.encode("utf-8"), value=orjson.dumps(body))
    if producer.flush(30.0) != 0:
        raise ConfigError(f"Kafka did not take the erasure requests within 30 s ({topic})")
    return len(dict.fromkeys(lead_ids))


def read_audit(settings: Settings, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every record on ``leads.erasure.audit``, oldest first per partition."""
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.topic("erasure.audit")
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"leadscore-audit-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return []
        ends = end_offsets(settings, [(topic, p) for p in meta.partitions])
        todo = {p for (_t, p), end in ends.items() if end > 0}
        # Manual assignment: a reader needs no group (a join costs seconds on some brokers).
        consumer.assign([TopicPartition(topic, p, 0) for p in todo])
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                value, part, offset = m.value(), m.partition(), m.offset()
                if m.error() or part is None or offset is None:
                    continue
                if value is not None:
                    out.append(orjson.loads(value))
                if offset + 1 >= ends[(topic, part)]:
                    todo.discard(part)
        if todo:
            raise ConfigError(f"{topic}: partitions {sorted(todo)} not read within {timeout_s} s")
        return out
    finally:
        consumer.close()
