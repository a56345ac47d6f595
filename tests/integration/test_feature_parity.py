"""Online (Lua in a real Redis, and the whole worker) and offline features agree exactly."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from redis.cluster import key_slot

from leadscore.features.definitions import DAY_MS
from leadscore.features.lua import kind_codes
from leadscore.features.offline import history_parser, replay
from leadscore.features.store import RedisFeatureStore, apply_in_batches, lead_keys
from leadscore.infra.producer import EventProducer
from leadscore.schemas import EVENT_TYPES
from leadscore.schemas.validation import Event, format_ts_ms

from .helpers import enrichment_attributes, metric_total, read_topic, store_features

pytestmark = pytest.mark.integration


def slot_db(redis_url: str, per_slot: bool) -> str:
    """Split by cluster slot, the store keeps one state marker per slot: such tests use a
    database of their own on the single test Redis (one Redis is a cluster or it isn't)."""
    return redis_url.rsplit("/", 1)[0] + "/15" if per_slot else redis_url


#: Social comments: positive, negative and neutral for VADER (scored at validation).
COMMENTS = (
    "Great webinar, really useful for our team!",
    "This looks awful, the worst tool we have tried.",
    "We are evaluating options next quarter.",
    "Love it :)",
    "Not good. Support never answered.",
)


def shuffled_envelopes(n_leads: int, n_events: int, seed: int) -> list[dict]:
    """Events over 45 days ending yesterday, from every source, shuffled (out of order,
    late, duplicated), as producers send them (social comments with their text, enrichment
    with the attributes providers send)."""
    rng = random.Random(seed)
    start = int(time.time() * 1000) - 46 * DAY_MS
    tag = uuid.uuid4().hex[:6]
    kinds = [(s, t) for s, ts in EVENT_TYPES.items() for t in ts]
    events: list[dict] = []
    for i in range(n_events):
        src, typ = rng.choice(kinds)
        ts = start + rng.randint(0, 45 * DAY_MS)
        attrs: dict[str, object] = {}
        if typ in ("lead_created", "lead_updated"):
            attrs = {
                "industry": rng.choice(["saas", "retail", None]),
                "company_size": rng.choice(["1-10", 500]),
                "country": rng.choice(["DE", "US"]),
            }
        elif src == "social":
            attrs = {"platform": rng.choice(["linkedin", "x"])}
            if typ == "comment" and rng.random() < 0.9:
                attrs["text"] = rng.choice(COMMENTS)
        elif src == "enrichment":
            attrs = enrichment_attributes(typ, rng.randint(0, 10_000))
        events.append(
            {
                "event_id": f"{tag}-{i}",
                "lead_id": f"P-{tag}-{rng.randint(0, n_leads - 1)}",
                "source": src,
                "type": typ,
                "ts": format_ts_ms(ts),
                "attributes": attrs,
            }
        )
    events += rng.sample(events, n_events // 20)
    rng.shuffle(events)
    return events


def as_validated(envelopes: list[dict]) -> list[Event]:
    """The envelopes as the worker's validation gives them (comment text -> sentiment)."""
    parse = history_parser()
    events = [parse(orjson.dumps(e)) for e in envelopes]
    assert all(isinstance(e, Event) for e in events)
    return events  # type: ignore[return-value]


def shuffled_history(n_leads: int, n_events: int, seed: int) -> list[Event]:
    return as_validated(shuffled_envelopes(n_leads, n_events, seed))


# Every counter bucket and engagement day in a lead's stored state, flattened.
_BUCKETS_LUA = """
local st = cmsgpack.unpack(redis.call('GET', KEYS[1]))
local out = {}
for cr, buckets in pairs(st.c) do
  for b, n in pairs(buckets) do
    out[#out + 1] = cr; out[#out + 1] = tostring(b); out[#out + 1] = tostring(n)
  end
end
for _, pool in ipairs({'e', 'es', 'ei'}) do
  for day, pts in pairs(st[pool] or {}) do
    out[#out + 1] = pool; out[#out + 1] = tostring(day); out[#out + 1] = tostring(pts)
  end
end
return out
"""


@pytest.mark.parametrize("per_slot", [False, True], ids=["one-call", "split-by-cluster-slot"])
def test_lua_store_matches_replay_event_by_event(redis_url, per_slot):
    """Also with batches split by cluster slot, as the worker does on Redis Cluster."""
    events = shuffled_history(40, 4000, seed=5)
    expected = replay(events)
    # Every source and both sentiment kinds are in the history (and so in the comparison).
    finals_offline = [s.features() or {} for s in expected.values()]
    assert {e.source for e in events} == set(EVENT_TYPES)
    for name in (
        "social_positive_comments_30d",
        "social_negative_comments_30d",
        "intent_surges_30d",
        "intent_lead_scoring_surges_30d",
        "tech_salesforce",
        "firmo_employees",
    ):
        assert sum(f[name] or 0 for f in finals_offline) > 0, name  # type: ignore[misc]
    assert any(f["firmo_industry_sector"] for f in finals_offline)

    async def run() -> tuple[list, dict]:
        client = aioredis.Redis.from_url(slot_db(redis_url, per_slot))
        store = RedisFeatureStore(client, per_slot=per_slot)
        try:
            await store.open()
            # Each call confirms the previous one's scores, as the worker does after delivery.
            updates = await apply_in_batches(store, events, batch=250)
            finals = {lead: await store.read(lead) for lead in expected}
        finally:
            await client.aclose()
        return updates, finals

    updates, finals = asyncio.run(run())
    from leadscore.features.memory import MemoryFeatureStore

    mem = MemoryFeatureStore()
    mem_updates = asyncio.run(mem.apply_batch(events))  # one call: nothing pending in between
    assert [u.outcome for u in updates] == [u.outcome for u in mem_updates]
    assert {u.outcome for u in updates} == {"ok", "dup", "late"}
    mismatched = [i for i, (a, b) in enumerate(zip(updates, mem_updates, strict=True)) if a != b]
    assert mismatched == []
    for lead, state in expected.items():
        assert finals[lead] == state.features(), lead

    sync = redis.Redis.from_url(slot_db(redis_url, per_slot))
    # The stored buckets, after the script's pruning, are the replay's after its own.
    codes = kind_codes()
    for lead, state in expected.items():
        flat = sync.eval(_BUCKETS_LUA, 1, lead_keys(lead).state)
        stored = {
            (flat[i].decode(), int(flat[i + 1])): int(flat[i + 2]) for i in range(0, len(flat), 3)
        }
        replayed = {(codes[kind] + res, b): n for (kind, res, b), n in state.counters.items()}
        replayed |= {("e", day): pts for day, pts in state.engagement.items()}
        replayed |= {
            (pool, day): pts for pool, days in state.pools.items() for day, pts in days.items()
        }
        assert stored == replayed, lead
    lead = next(iter(expected))
    keys = [lead_keys(lead).state, lead_keys(lead).ids]
    assert len({key_slot(k.encode()) for k in keys}) == 1, "a lead's keys share one cluster slot"
    for k in keys:
        assert 0 < sync.ttl(k) <= 38 * 86_400, k
    sync.close()


def test_worker_features_equal_offline_replay_for_every_lead(settings_factory, worker_factory):
    s = settings_factory()
    worker = worker_factory(s)
    envelopes = shuffled_envelopes(60, 2500, seed=9)
    producer = EventProducer(s)
    for e in envelopes:
        producer.send(e)
    producer.flush()
    # The worker scores comments from their text; the replay from the validated events.
    events = as_validated(envelopes)
    offline = replay(events)
    # Events of one lead arrive through five topics, so the worker's interleaving differs
    # from the produced order; the final state must not depend on it.
    deadline = time.monotonic() + 120
    while metric_total(worker) < len(events):
        assert time.monotonic() < deadline, f"worker processed {metric_total(worker)}/{len(events)}"
        time.sleep(0.5)
    assert metric_total(worker) == len(events)
    stored = store_features(s, list(offline))
    for lead, state in offline.items():
        assert stored[lead] == state.features(), lead
    scores = read_topic(s, "scores", until=len(events), timeout=10)
    ids = [r["value"]["event_id"] for r in scores]
    assert len(ids) == len(set(ids)) == metric_total(worker, "scored")


@pytest.mark.parametrize("per_slot", [False, True], ids=["one-call", "split-by-cluster-slot"])
def test_saved_scores_keep_each_leads_latest_record_and_report_its_previous_tier(
    redis_url, per_slot
):
    """The worker hands over its records' JSON as published (``encoded``); the store keeps
    exactly those bytes, as it keeps the records it serialises itself."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"S-{tag}-a", f"S-{tag}-b"

    def rec(lead: str, tier: str, n: int) -> dict:
        return {"lead_id": lead, "tier": tier, "score": n / 10, "event_id": f"e{n}"}

    async def run() -> tuple[dict, dict, dict, bytes | None]:
        client = aioredis.Redis.from_url(slot_db(redis_url, per_slot))
        store = RedisFeatureStore(client, per_slot=per_slot)
        try:
            await store.open()
            first = await store.save_scores([rec(a, "cold", 1), rec(b, "warm", 2)])
            batch = [rec(a, "warm", 3), rec(b, "hot", 4), rec(a, "hot", 5)]
            # Key order differs from what orjson.dumps(record) gives: the bytes are kept.
            encoded = [orjson.dumps(dict(reversed(r.items()))) for r in batch]
            second = await store.save_scores(batch, encoded)
            latest = await store.latest_score(a)
            raw = await client.get(lead_keys(a).latest)
        finally:
            await client.aclose()
        return first, second, latest or {}, raw

    first, second, latest, raw = asyncio.run(run())
    assert first == {a: None, b: None}
    assert second == {a: "cold", b: "warm"}
    assert latest == {"lead_id": a, "tier": "hot", "score": 0.5, "event_id": "e5"}
    assert raw == orjson.dumps(dict(reversed(rec(a, "hot", 5).items())))


def test_control_characters_in_a_profile_value_cannot_break_the_vector(redis_url):
    """The vector's field separator inside a CRM value would shift every field after it."""
    ts = int(time.time() * 1000) - 60_000
    tag = uuid.uuid4().hex[:6]
    attrs = {"industry": "soft\x1fware\x1e\x00", "country": "DE"}
    event = Event(f"{tag}-0", f"P-{tag}", "crm", "lead_created", format_ts_ms(ts), ts, attrs)

    async def run() -> list:
        client = aioredis.Redis.from_url(redis_url)
        try:
            store = RedisFeatureStore(client)
            await store.open()
            return await store.apply_batch([event])
        finally:
            await client.aclose()

    [update] = asyncio.run(run())
    assert update.outcome == "ok"
    assert update.features is not None
    assert update.features["industry"] == "soft ware  "
    assert update.features == replay([event])[event.lead_id].features()


@pytest.mark.parametrize("per_slot", [False, True], ids=["one-call", "split-by-cluster-slot"])
def test_tier_alert_decisions_in_lua_equal_the_python_rule(redis_url, per_slot):
    """Mode 'a' of the script and features/alerting.py decide alike, batch after batch:
    random scores around the boundaries, time gaps around the interval, a model swap."""
    import random

    from leadscore.features.alerting import AlertPolicy
    from leadscore.features.memory import MemoryFeatureStore
    from leadscore.model.scoring import Thresholds

    rng = random.Random(5)
    tag = uuid.uuid4().hex[:6]
    leads = [f"A-{tag}-{i}" for i in range(12)]
    th = {"v1": Thresholds(0.7, 0.3), "v2": Thresholds(0.6, 0.25)}

    def thresholds(version: str) -> tuple[float, float]:
        return th[version].hot, th[version].warm

    async def run() -> tuple[list, list]:
        client = aioredis.Redis.from_url(slot_db(redis_url, per_slot))
        store = RedisFeatureStore(client, per_slot=per_slot)
        memory = MemoryFeatureStore()
        got, want = [], []
        now = 1_800_000_000_000
        try:
            await store.open()
            for batch_no in range(60):
                version = "v1" if batch_no < 40 else "v2"
                now += rng.choice([200, 900, 1500, 4000])
                records = []
                for _ in range(rng.randint(1, 20)):
                    score = round(rng.choice([0.28, 0.3, 0.32, 0.68, 0.7, 0.72, rng.random()]), 6)
                    records.append(
                        {
                            "lead_id": rng.choice(leads),
                            "score": score,
                            "tier": th[version].tier(score),
                            "model_version": version,
                        }
                    )
                encoded = [orjson.dumps(r) for r in records]
                policy = AlertPolicy(now, 0.015, 2000)
                got.append(await store.save_and_decide(records, encoded, policy, thresholds))
                want.append(await memory.save_and_decide(records, encoded, policy, thresholds))
        finally:
            await store.close()
            await client.aclose()
        return got, want

    got, want = asyncio.run(run())
    assert got == want
    decisions = [d for batch in got for d in batch.values()]
    # Every branch of the rule was taken.
    assert {d[:1] for d in decisions} >= {"", "A", "M", "I", "S"}, sorted(set(decisions))
