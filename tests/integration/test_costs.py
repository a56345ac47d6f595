"""The bench's per-event cost probes (``leadscore.tooling.costs``) on a real Redis."""

from __future__ import annotations

import uuid

import pytest

from leadscore.features.store import lead_keys
from leadscore.settings import Settings
from leadscore.tooling.costs import id_set_bytes, lead_memory, redis_info_sums, sync_redis

pytestmark = pytest.mark.integration


def test_lead_memory_sums_each_key_of_a_lead_and_counts_its_ids(redis_url: str) -> None:
    client = sync_redis(Settings(redis_url=redis_url))
    tag = uuid.uuid4().hex
    busy, idle = f"{tag}-busy", f"{tag}-idle"
    try:
        keys = lead_keys(busy)
        client.set(keys.state, b"s" * 400)
        client.set(keys.latest, b"r" * 700)
        client.zadd(keys.ids, {f"e{i}": 1_000 + i for i in range(20)})
        one = client.memory_usage(keys.state, samples=0)
        m = lead_memory(client, [busy, idle])
        # Means over both leads: the idle one has no keys at all.
        assert m["ids_per_lead"] == 10.0
        assert m["state"] == one / 2 and m["pending"] == 0.0 and m["announced"] == 0.0
        assert m["latest"] > m["state"] > 0 and m["ids"] > 0
        roles = ("state", "ids", "latest", "pending", "announced")
        assert m["total"] == pytest.approx(sum(m[r] for r in roles))
    finally:
        client.delete(*lead_keys(busy))
        client.close()


def test_an_id_costs_more_once_the_set_outgrows_its_compact_encoding(redis_url: str) -> None:
    client = sync_redis(Settings(redis_url=redis_url))
    tag = uuid.uuid4().hex
    try:
        small, large = id_set_bytes(client, tag, sizes=(50, 2_000))
        assert small["encoding"] in ("listpack", "ziplist") and large["encoding"] == "skiplist"
        # A 36-character id and its score: more than the id's bytes, and a skiplist entry
        # (node, hash table entry, separate strings) costs well more than a compact one.
        assert 36 < small["bytes_per_id"] < large["bytes_per_id"]
        assert list(client.scan_iter(match=f"*bench-{tag}*")) == []  # the probe cleans up
    finally:
        client.close()


def test_redis_cpu_and_memory_grow_with_work(redis_url: str) -> None:
    client = sync_redis(Settings(redis_url=redis_url))
    key = f"costs-{uuid.uuid4().hex}"
    try:
        before = redis_info_sums(client)
        client.set(key, b"x" * 4_000_000)
        for _ in range(500):
            client.strlen(key)
        after = redis_info_sums(client)
        assert after["cpu_s"] > before["cpu_s"]
        # Other tests share this Redis: a margin for what they free meanwhile.
        assert after["used_memory"] - before["used_memory"] > 3_000_000
    finally:
        client.delete(key)
        client.close()
