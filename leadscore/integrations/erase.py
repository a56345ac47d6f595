"""Erasing a lead (right to be forgotten) everywhere leadscore can erase it."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import Producer

from leadscore.features.store import RedisFeatureStore
from leadscore.infra.redis import redis_client
from leadscore.settings import Settings


async def forget_lead(settings: Settings, lead_id: str) -> dict[str, Any]:
    """Delete the lead's Redis state and publish a tombstone for it on ``leads.scores``.

    The input topics are append-only logs owned by their producers; compaction of
    ``leads.scores`` removes the lead's score records once the tombstone is compacted.
    """
    client = redis_client(settings)
    try:
        deleted = await RedisFeatureStore(client).forget(lead_id)
    finally:
        await client.aclose()
    tombstoned = False
    if settings.kafka_bootstrap:
        producer = Producer(settings.kafka_client_config())
        producer.produce(settings.topic("scores"), key=lead_id.encode(), value=None)
        tombstoned = producer.flush(15.0) == 0
    return {"lead_id": lead_id, "redis_keys_deleted": deleted, "tombstone_sent": tombstoned}


def run_forget(settings: Settings, lead_id: str) -> dict[str, Any]:
    """``leadscore forget``: :func:`forget_lead` from synchronous code."""
    return asyncio.run(forget_lead(settings, lead_id))
