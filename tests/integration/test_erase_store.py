"""Issue 28: the feature store's side of an erasure, on a real Redis. An erased lead keeps
only its suppression marker; its later events are dropped inside the same script call that
applies the others (so nothing in flight brings it back); a sweep removes what a batch in
flight saved after the erasure; a rebuild-style replay of every event skips it; the lead
reads as absent."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from leadscore.features.store import (
    RedisFeatureStore,
    apply_in_batches,
    erased_key,
    erased_leads,
    lead_keys,
)
from leadscore.tooling.embedded import start_redis

from .helpers import as_events, offline_features, recent_events

pytestmark = pytest.mark.integration

DAY_S = 86_400


async def _lead_keys_present(client: aioredis.Redis, lead: str) -> set[str]:
    k = lead_keys(lead)
    names = {"b": k.state, "i": k.ids, "r": k.latest, "p": k.pending, "a": k.announced}
    names["x"] = erased_key(lead)
    return {short for short, key in names.items() if await client.exists(key)}


async def _scenario(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    store = RedisFeatureStore(client)
    try:
        await store.open()
        raw = recent_events(30, 600, seed=2828)
        events = as_events(raw)
        first, second = events[:300], events[300:]
        await apply_in_batches(store, first, batch=100)
        # One applied batch left pending (its scores "in flight"), and latest scores saved.
        in_flight = await store.apply_batch(second[:100])
        assert {u.outcome for u in in_flight} <= {"ok", "dup"}
        leads = sorted({e.lead_id for e in events})
        await store.save_scores([{"lead_id": lead, "tier": "warm"} for lead in leads])
        gone, kept = leads[:5], leads[5:]
        assert {"b", "i", "r"} <= await _lead_keys_present(client, gone[0])

        deleted = await store.erase(gone, 30 * DAY_S, now_ms=1_800_000_000_000)
        assert all(n >= 3 for n in deleted.values()), deleted  # state, ids, latest at least
        for lead in gone:
            assert await _lead_keys_present(client, lead) == {"b", "x"}
            assert 29 * DAY_S < await client.ttl(lead_keys(lead).state) <= 30 * DAY_S
        assert await erased_leads(client, leads) == set(gone)
        # Idempotent: erasing again deletes nothing more (the marker is not counted).
        assert await store.erase(gone, 30 * DAY_S, now_ms=1_800_000_000_001) == dict.fromkeys(
            gone, 0
        )

        # The rest of the stream: the erased leads' events are dropped in the same calls
        # that apply everyone else's, including redeliveries of the batch that was in flight.
        rest = await store.apply_batch(second, [])
        for ev, upd in zip(second, rest, strict=True):
            if ev.lead_id in gone:
                assert upd.outcome == "erased", (ev, upd)
            else:
                assert upd.outcome != "erased"
        # A batch in flight at the erasure saves its latest scores after it: the sweep
        # removes them, the marker stays.
        await store.save_scores([{"lead_id": lead, "tier": "hot"} for lead in gone])
        assert await client.exists(lead_keys(gone[0]).latest)
        swept = await store.sweep(gone)
        assert all(n == 1 for n in swept.values()), swept
        for lead in gone:
            assert await _lead_keys_present(client, lead) == {"b", "x"}
            assert await store.read(lead) is None

        # A rebuild replays every event into a new generation without clearing the state:
        # the erased leads stay erased, the others equal the offline replay.
        g2 = await store.marker.begin_rebuild("test rebuild")
        await store.marker.finish_rebuild(g2, "done")
        store.generation = g2
        replay = await apply_in_batches(store, events, batch=200)
        assert all(
            u.outcome == "erased" for e, u in zip(events, replay, strict=True) if e.lead_id in gone
        )
        for lead in gone:
            assert await _lead_keys_present(client, lead) == {"b", "x"}
        expected = offline_features([e for e in raw if e["lead_id"] in kept])
        got = {lead: await store.read(lead) for lead in kept}
        assert got == expected
    finally:
        await store.close()
        await client.aclose()


def test_an_erased_lead_stays_erased_through_batches_sweeps_and_rebuilds(tmp_path):
    svc = start_redis(tmp_path)
    try:
        asyncio.run(_scenario(svc.url))
    finally:
        svc.stop()


async def _opt_out_scenario(url: str) -> None:
    from leadscore.features.offline import LeadState

    client = aioredis.Redis.from_url(url)
    store = RedisFeatureStore(client)
    try:
        await store.open()
        raw = recent_events(20, 800, seed=2829)
        rng = random.Random(7)
        for e in raw:
            if e["type"] == "lead_updated" and rng.random() < 0.7:
                e["attributes"] = {**e["attributes"], "opt_out": rng.choice([True, False, None])}
        events = as_events(raw)
        updates = await apply_in_batches(store, events, batch=64)
        states: dict[str, LeadState] = {}
        expected = [states.setdefault(e.lead_id, LeadState()).apply(e) for e in events]
        got = [u.outcome for u in updates]
        assert got.count("opted_out") > 50
        # The script and the offline rules agree event by event (dup/redelivered aside:
        # the offline state has no pending vectors).
        pairs = [(g, x) for g, x in zip(got, expected, strict=True) if x != "dup"]
        assert all(g == x for g, x in pairs), [p for p in pairs if p[0] != p[1]][:5]
        # Features stay exact through an opt-out.
        assert {lead: await store.read(lead) for lead in states} == offline_features(raw)
    finally:
        await store.close()
        await client.aclose()


def test_opt_out_stops_scores_not_state_and_the_script_agrees_with_the_replay(tmp_path):
    svc = start_redis(tmp_path)
    try:
        asyncio.run(_opt_out_scenario(svc.url))
    finally:
        svc.stop()
