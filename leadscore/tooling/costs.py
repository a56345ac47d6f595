"""What one event costs each service it touches: the inputs of the capacity model.

``leadscore bench`` measures these beside its rates (docs/capacity.md turns them into
workers, partitions, Redis shards and memory). The worker's CPU per event the bench has
from its own meter; this module adds Redis's own CPU (``INFO cpu``, summed over a cluster's
nodes, so it works on a Redis the bench did not start), the broker's CPU when the bench
started it, the bytes of a record in and out, and Redis's memory per lead and per event id
kept for duplicate suppression: the one part of a lead's state that grows with its events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from leadscore.features.store import LeadKeys, lead_keys
from leadscore.settings import Settings
from leadscore.tooling.cpu import process_cpu_seconds

ID_PROBE_SIZES = (100, 5000)
"""Sorted sets of this many event ids, measured for the bytes an id costs: Redis keeps a
small set as one compact list (up to ``zset-max-listpack-entries``, 128 by default) and a
larger one as a skiplist with a hash table, several times dearer per id."""


def sync_redis(settings: Settings) -> Any:
    """A synchronous client of the settings' Redis, or of every node of its cluster."""
    import redis

    kwargs: dict[str, Any] = {}
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(settings.require_redis(), **kwargs)
    return redis.Redis.from_url(settings.require_redis(), **kwargs)


def _per_node(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """``INFO`` of one server is one dict; a cluster client's, one dict per node."""
    if not reply or any(not isinstance(v, dict) for v in reply.values()):
        return [reply]
    return list(reply.values())


def redis_info_sums(client: Any) -> dict[str, float]:
    """Redis's own CPU seconds so far (``used_cpu_sys`` + ``used_cpu_user``, the server
    process's, all its threads) and ``used_memory`` bytes, summed over a cluster's nodes."""
    import redis

    target: dict[str, Any] = {}
    if isinstance(client, redis.RedisCluster):
        target["target_nodes"] = redis.RedisCluster.ALL_NODES
    cpu = _per_node(client.info("cpu", **target))
    mem = _per_node(client.info("memory", **target))
    return {
        "cpu_s": sum(float(n["used_cpu_sys"]) + float(n["used_cpu_user"]) for n in cpu),
        "used_memory": sum(float(n["used_memory"]) for n in mem),
    }


def record_bytes(events: Iterable[dict[str, Any]]) -> float:
    """Mean bytes of an input record as the bench's producer sends it: the JSON value and
    the key (the lead id); Kafka adds its own record and batch headers on top."""
    sizes = [len(orjson.dumps(e)) + len(str(e["lead_id"]).encode()) for e in events]
    return float(np.mean(sizes)) if sizes else float("nan")


def lead_memory(client: Any, lead_ids: list[str]) -> dict[str, float]:
    """Mean ``MEMORY USAGE`` of each of a lead's keys (by role: ``state``, ``ids``, ...),
    their ``total``, and ``ids_per_lead``: the event ids its duplicate-suppression set holds.

    ``MEMORY USAGE`` leaves out what Redis spends beside a key (its expiry entry, allocator
    fragmentation): compare with ``INFO``'s ``used_memory`` for that.
    """
    roles = LeadKeys._fields
    pipe = client.pipeline(transaction=False)
    for lead in lead_ids:
        keys = lead_keys(lead)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        pipe.zcard(keys.ids)
    replies = pipe.execute()
    width = len(roles) + 1
    rows = np.array(
        [[float(x or 0) for x in replies[i : i + width]] for i in range(0, len(replies), width)]
    )
    if not len(rows):
        return {}
    means = rows.mean(axis=0)
    out = {role: float(means[i]) for i, role in enumerate(roles)}
    out["total"] = float(means[: len(roles)].sum())
    out["ids_per_lead"] = float(means[-1])
    return out


def id_set_bytes(
    client: Any, tag: str, sizes: tuple[int, ...] = ID_PROBE_SIZES
) -> list[dict[str, Any]]:
    """Bytes per event id of a sorted set like a lead's ``ids`` key, at each of ``sizes``:
    random 36-character UUIDs (a common event id) scored by millisecond times, as the store
    writes them. The probe key is deleted after."""
    out: list[dict[str, Any]] = []
    key = f"ls:{{bench-{tag}}}:idprobe"
    try:
        for n in sizes:
            client.delete(key)
            base = 1_800_000_000_000
            pipe = client.pipeline(transaction=False)
            for i in range(n):
                pipe.zadd(key, {str(uuid.uuid4()): base + i * 1000})
            pipe.execute()
            used = float(client.memory_usage(key, samples=0) or 0)
            encoding = client.object("encoding", key)
            out.append(
                {
                    "ids": n,
                    "encoding": encoding.decode() if isinstance(encoding, bytes) else encoding,
                    "bytes_per_id": round(used / n, 1),
                }
            )
    finally:
        client.delete(key)
    return out


class BrokerCpu:
    """CPU seconds of the broker over an interval, when the bench started it (a child
    process); ``None`` for an external broker, whose CPU it can't see."""

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._t0 = float("nan")

    def start(self) -> None:
        if self._pid is not None:
            self._t0 = process_cpu_seconds(self._pid)

    def us_per_event(self, events: int) -> float | None:
        if self._pid is None or events <= 0:
            return None
        used = process_cpu_seconds(self._pid) - self._t0
        return None if used != used else round(used / events * 1e6, 1)
