"""Topic names and idempotent topic creation."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from leadscore.errors import KafkaUnavailableError
from leadscore.features.definitions import DAY_MS
from leadscore.settings import Settings

log = logging.getLogger(__name__)

INPUT_TOPICS = ("web", "email", "crm", "social", "enrichment")
OUTPUT_TOPICS = ("scores", "alerts", "dlq", "scores.shadow")
#: Erasure requests (``leadscore erasure`` consumes them) and the erasure audit log.
ERASURE_TOPICS = ("erasure", "erasure.audit")
#: The output topics whose records are keyed by lead: an erasure writes a tombstone on each.
LEAD_KEYED_OUTPUTS = ("scores", "scores.shadow", "alerts", "dlq")


def all_topics(settings: Settings) -> list[str]:
    return [settings.topic(t) for t in (*INPUT_TOPICS, *OUTPUT_TOPICS, *ERASURE_TOPICS)]


#: A tombstone stays on a compacted topic this long after compaction reached it, so a
#: consumer that was down (the CRM sync) still reads the erasure and deletes its copy.
TOMBSTONE_RETENTION_MS = 7 * DAY_MS
#: A record is compacted away at most this long after a newer record of its key (or a
#: tombstone) was written: it bounds how long an erased lead's older scores stay readable.
#: Without it Kafka compacts only once enough of the log is dirty, which on a quiet topic
#: may be never.
MAX_COMPACTION_LAG_MS = 7 * DAY_MS
#: The topic configs :func:`topic_configs` sets (`leadscore retention` compares them).
RETENTION_CONFIGS = (
    "cleanup.policy",
    "retention.ms",
    "delete.retention.ms",
    "max.compaction.lag.ms",
)


def retention_ms(days: int) -> str:
    """A topic's ``retention.ms`` for ``days`` (0: keep forever, Kafka's ``-1``)."""
    return str(days * DAY_MS) if days > 0 else "-1"


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The retention config of every topic leadscore creates, by full name (in
    :func:`all_topics`' order): the compacted score topics keep each lead's latest record
    until a tombstone erases it; the others delete records after their retention."""

    def delete_after(days: int) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": retention_ms(days)}

    def compacted() -> dict[str, str]:
        return {
            "cleanup.policy": "compact",
            "delete.retention.ms": str(TOMBSTONE_RETENTION_MS),
            "max.compaction.lag.ms": str(MAX_COMPACTION_LAG_MS),
        }

    by_name = {
        **{name: delete_after(settings.input_retention_days) for name in INPUT_TOPICS},
        "scores": compacted(),
        "scores.shadow": compacted(),
        "alerts": delete_after(settings.alerts_retention_days),
        "dlq": delete_after(settings.dlq_retention_days),
        "erasure": delete_after(settings.erasure_request_retention_days),
        "erasure.audit": delete_after(settings.erasure_audit_retention_days),
    }
    # A topic added to the lists above without a config here fails loudly (KeyError).
    return {
        settings.topic(name): by_name[name]
        for name in (*INPUT_TOPICS, *OUTPUT_TOPICS, *ERASURE_TOPICS)
    }


def _list_topics(admin: AdminClient, settings: Settings, timeout: float) -> Any:
    """The cluster's metadata, or :class:`KafkaUnavailableError` saying the broker is away."""
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"Kafka at {settings.kafka_bootstrap} did not answer within {timeout:.0f} s: {exc}"
        ) from exc


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the leads.* topics that don't exist yet, with :func:`topic_configs`; return
    the ones created."""
    admin = AdminClient(settings.kafka_client_config())
    existing = set(_list_topics(admin, settings, timeout).topics)
    configs = topic_configs(settings)
    wanted = [t for t in configs if t not in existing]
    if not wanted:
        return []
    # Topics that exist keep their configs: changing a live topic's retention is an
    # operator's decision (`leadscore retention --apply`), never a side effect of a start.
    new = [
        NewTopic(
            t,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            config=configs[t],
        )
        for t in wanted
    ]
    created = []
    for topic, fut in admin.create_topics(new, request_timeout=timeout).items():
        try:
            fut.result()
            created.append(topic)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise KafkaUnavailableError(f"can't create topic {topic}: {exc}") from exc
    log.info("created topics %s", ", ".join(created))
    return created


def end_offsets(
    settings: Settings, partitions: Iterable[tuple[str, int]], timeout: float = 30.0
) -> dict[tuple[str, int], int]:
    """The end offset (the offset the next record will get) of each ``(topic, partition)``.

    Kafka answers ListOffsets(latest) with it. Tansu, the embedded broker, answers with the
    base offset of the partition's last record batch plus one, so the rest of that batch
    lies beyond its answer (a reader that stopped there missed up to a batch of records).
    Its fetch responses do carry the true high watermark, so every non-empty partition is
    also read from one offset before the answer (inside its last batch) until a record comes
    back, and the larger of the two figures is the end. Against Kafka both agree.
    """
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"leadscore-end-offsets-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends: dict[tuple[str, int], int] = {}
        start: dict[tuple[str, int], int] = {}
        for topic, part in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            ends[(topic, part)] = max(high, 0)
            if high > max(low, 0):
                start[(topic, part)] = high - 1
        if not start:
            return ends
        # Manual assignment: a consumer group would first wait for a join.
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in start.items()])
        pending = set(start)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            consumer.consume(1000, 0.2)
            # The position moved past the start (a record came back, or the last offset was a
            # transaction marker): a fetch response was read and its watermark cached.
            for tp in consumer.position([TopicPartition(*k) for k in pending]):
                key = (tp.topic, tp.partition)
                if tp.offset > start[key]:
                    _low, high = consumer.get_watermark_offsets(tp, cached=True)
                    ends[key] = max(ends[key], high)
                    pending.discard(key)
        if pending:
            log.warning(
                "no fetch answer within %.0f s for %s; their listed end offsets may be short",
                timeout,
                sorted(pending),
            )
        return ends
    finally:
        consumer.close()


def committed_offsets(
    settings: Settings, partitions: Iterable[tuple[str, int]], group: str | None = None
) -> dict[tuple[str, int], int]:
    """The consumer group's committed offset of each ``(topic, partition)`` (0: none)."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group or settings.app_id,
            "enable.auto.commit": False,
        }
    )
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=30)
    finally:
        consumer.close()
    return {(tp.topic or "", tp.partition): max(tp.offset, 0) for tp in got}


def input_partitions(settings: Settings, timeout: float = 30.0) -> list[tuple[str, int]]:
    """Every partition of the input topics that exist."""
    admin = AdminClient(settings.kafka_client_config())
    meta = _list_topics(admin, settings, timeout)
    out = []
    for name in INPUT_TOPICS:
        topic = settings.topic(name)
        if topic in meta.topics:
            out += [(topic, p) for p in sorted(meta.topics[topic].partitions)]
    return out


def group_has_history(settings: Settings) -> bool:
    """Whether the worker group has committed any offset on the input topics."""
    parts = input_partitions(settings)
    return bool(parts) and any(off > 0 for off in committed_offsets(settings, parts).values())


@dataclass(frozen=True, slots=True)
class ConfigDrift:
    """A retention config that a topic holds otherwise than the settings say."""

    topic: str
    key: str
    want: str
    have: str | None
    """``None``: the broker reports no value for it (its default applies)."""


def broker_topic_configs(
    settings: Settings, topics: Iterable[str], timeout: float = 10.0
) -> dict[str, dict[str, str] | None]:
    """What the broker reports (DescribeConfigs) for the :data:`RETENTION_CONFIGS` of each
    topic; ``None`` for a topic that does not exist. Raises :class:`KafkaUnavailableError`
    when the broker does not answer."""
    admin = AdminClient(settings.kafka_client_config())
    existing = set(_list_topics(admin, settings, timeout).topics)
    names = list(topics)
    out: dict[str, dict[str, str] | None] = dict.fromkeys(names)
    present = [ConfigResource(ResourceType.TOPIC, t) for t in names if t in existing]
    if not present:
        return out
    for res, fut in admin.describe_configs(present, request_timeout=timeout).items():
        try:
            entries = fut.result(timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"can't read the configs of topic {res.name}: {exc}"
            ) from exc
        out[res.name] = {
            key: entry.value
            for key, entry in entries.items()
            if key in RETENTION_CONFIGS and entry.value is not None
        }
    return out


def config_drift(
    wanted: Mapping[str, Mapping[str, str]], reported: Mapping[str, Mapping[str, str] | None]
) -> list[ConfigDrift]:
    """Every wanted config that an existing topic holds otherwise (a missing topic is not
    drift: :func:`ensure_topics` creates it with its configs)."""
    drift = []
    for topic, want in wanted.items():
        have = reported.get(topic)
        if have is None:
            continue
        drift += [
            ConfigDrift(topic, key, value, have.get(key))
            for key, value in want.items()
            if have.get(key) != value
        ]
    return drift


def alter_topic_configs(
    settings: Settings, drift: Iterable[ConfigDrift], timeout: float = 30.0
) -> list[ConfigDrift]:
    """Set every drifted config to the wanted value; returns the ones set.

    IncrementalAlterConfigs changes only the keys it names (the legacy AlterConfigs would
    reset every other config of the topic to the broker's default)."""
    by_topic: dict[str, list[ConfigDrift]] = {}
    for d in drift:
        by_topic.setdefault(d.topic, []).append(d)
    if not by_topic:
        return []
    admin = AdminClient(settings.kafka_client_config())
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(d.key, d.want, incremental_operation=AlterConfigOpType.SET)
                for d in changes
            ],
        )
        for topic, changes in by_topic.items()
    ]
    applied: list[ConfigDrift] = []
    for res, fut in admin.incremental_alter_configs(resources, request_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"can't change the configs of topic {res.name}: {exc}"
            ) from exc
        applied += by_topic[res.name]
    log.info("changed %d topic configs", len(applied))
    return applied
