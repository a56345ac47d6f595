"""Topic names and idempotent topic creation."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.exceptions import KafkaUnavailableError
from streamer.settings import Settings

log = logging.getLogger(__name__)

INPUT_TOPICS = ("web", "email", "crm")
OUTPUT_TOPICS = ("scores", "alerts", "dlq")


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
