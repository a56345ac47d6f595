"""Topic names and idempotent topic creation."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from leadscore.errors import KafkaUnavailableError
from leadscore.settings import Settings

log = logging.getLogger(__name__)

INPUT_TOPICS = ("web", "email", "crm")
OUTPUT_TOPICS = ("scores", "alerts", "dlq", "scores.shadow")


def all_topics(settings: Settings) -> list[str]:
    return [settings.topic(t) for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the leads.* topics that don't exist yet; return the ones created."""
    admin = AdminClient(settings.kafka_client_config())
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"Kafka at {settings.kafka_bootstrap} did not answer within {timeout:.0f} s: {exc}"
        ) from exc
    wanted = [t for t in all_topics(settings) if t not in existing]
    if not wanted:
        return []
    cfg = {"cleanup.policy": "compact"}
    new = [
        NewTopic(
            t,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            config=cfg if t == settings.topic("scores") else {},
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
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"Kafka at {settings.kafka_bootstrap} did not answer within {timeout:.0f} s: {exc}"
        ) from exc
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
