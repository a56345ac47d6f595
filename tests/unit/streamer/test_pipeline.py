"""The hot path without Kafka or Redis: the in-memory store runs the same rules."""

from __future__ import annotations

import asyncio
import time

import orjson
from prometheus_client import CollectorRegistry

from leadscore.features.memory import MemoryFeatureStore
from leadscore.model.rules import RuleScorer
from leadscore.schemas.privacy import Redactor
from leadscore.schemas.validation import format_ts_ms, validate_event, validate_score
from leadscore.settings import Settings
from leadscore.streamer import pipeline as pipeline_module
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.pipeline import Message, Pipeline, topic_sources


def make(
    chunk: int = 128, redactor: Redactor | None = None, dlq_keep_raw: bool = False
) -> tuple[Pipeline, MemoryFeatureStore, Metrics]:
    store = MemoryFeatureStore()
    metrics = Metrics.create(CollectorRegistry())
    rules = RuleScorer.default()
    s = Settings(kafka_bootstrap="unused:9092")
    p = Pipeline(
        store,
        lambda: rules,
        metrics,
        topic_sources=topic_sources(s.topic),
        max_future_ms=86_400_000,
        chunk=chunk,
        redactor=redactor,
        dlq_keep_raw=dlq_keep_raw,
    )
    return p, store, metrics


def msg(i: int, ev: dict | None, topic: str = "leads.web", raw: bytes | None = None) -> Message:
    value = raw if raw is not None else orjson.dumps(ev)
    key = ev["lead_id"].encode() if ev else b"k"
    return Message(topic, 0, i, key, value, time.time())


def ev(i: int, typ: str = "page_view", lead: str = "L-1", src: str = "web") -> dict:
    ts = format_ts_ms(int(time.time() * 1000) - 60_000 + i)
    return {"event_id": f"e{i}", "lead_id": lead, "source": src, "type": typ, "ts": ts}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_one_valid_score_record_per_distinct_event_and_dlq_for_bad():
    p, store, m = make()
    batch = [
        msg(0, ev(0)),
        msg(1, ev(1, "pricing_view")),
        msg(2, ev(0)),
        msg(3, None, raw=b"{broken"),
        msg(4, ev(2, "email_open", src="email")),
    ]
    out = await p.process(batch)
    assert [r["event_id"] for r in out.records] == ["e0", "e1"]
    for r in out.records:
        validate_score(r)
    assert len(out.dlq) == 2  # broken JSON, and an email event on the web topic
    codes = sorted(orjson.loads(v)["error_code"] for _, v in out.dlq)
    assert codes == ["not_json", "source_mismatch"]
    assert value(m, "leadscore_events_total", source="web", outcome="scored") == 0
    p.delivered(out)  # counted once on the broker
    assert value(m, "leadscore_events_total", source="web", outcome="scored") == 2
    assert value(m, "leadscore_events_total", source="web", outcome="duplicate") == 1
    assert value(m, "leadscore_dlq_total", code="not_json") == 1
    feats = await store.read("L-1")
    assert feats is not None and feats["web_page_views_1h"] == 1
    assert feats["web_pricing_views_24h"] == 1
    latest = await store.latest_score("L-1")
    assert latest is not None and latest["event_id"] == "e1"


async def test_store_calls_in_chunks_keep_order_and_a_repeat_in_a_later_chunk_is_a_dup():
    """A batch goes to the store in several calls; the results are those of one call."""
    p, store, m = make(chunk=2)
    events = [ev(i, lead=f"L-{i % 3}") for i in range(7)]
    batch = [msg(i, e) for i, e in enumerate(events)]
    batch.append(msg(7, events[0]))  # e0 again, three calls after its first copy
    out = await p.process(batch)
    p.delivered(out)
    assert [r["event_id"] for r in out.records] == [f"e{i}" for i in range(7)]
    assert value(m, "leadscore_events_total", source="web", outcome="duplicate") == 1
    assert value(m, "leadscore_events_total", source="web", outcome="redelivered") == 0
    one_call, _, _ = make(chunk=1000)
    ref = await one_call.process(batch)
    assert [r["score"] for r in out.records] == [r["score"] for r in ref.records]
    assert [r["reasons"] for r in out.records] == [r["reasons"] for r in ref.records]
    for lead in ("L-0", "L-1", "L-2"):
        assert await store.read(lead) == await one_call._store.read(lead)  # noqa: SLF001


async def test_first_store_call_goes_out_before_the_rest_of_the_batch_is_validated(monkeypatch):
    """Redis applies the first chunk while the worker validates the rest of the batch; the
    chunks, their order and the results are those of validating everything first."""
    p, store, m = make(chunk=8)  # first chunk: 2 events, then chunks of 8
    seen_at_calls: list[tuple[list[str], int]] = []
    apply = store.apply_batch
    validated = 0

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal validated
        validated += 1
        return validate_event(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "validate_event", counting)

    async def recording(events, confirm=()):  # type: ignore[no-untyped-def]
        seen_at_calls.append(([e.event_id for e in events], validated))
        return await apply(events, confirm)

    store.apply_batch = recording  # type: ignore[method-assign]
    batch = [msg(0, ev(0)), msg(1, ev(0)), msg(2, ev(1))]  # e0 twice: the head holds e0, e1
    batch += [msg(3 + i, ev(2 + i)) for i in range(9)]
    batch.append(msg(99, None, raw=b"{broken"))
    out = await p.process(batch)
    assert [ids for ids, _ in seen_at_calls] == [
        ["e0", "e1"],
        [f"e{i}" for i in range(2, 10)],
        ["e10"],
    ]
    # The first call went out after three messages; the rest, the broken message at the end
    # included, were validated after it and before the second.
    assert [n for _, n in seen_at_calls] == [3, 13, 13]
    assert [r["event_id"] for r in out.records] == [f"e{i}" for i in range(11)]
    assert len(out.dlq) == 1
    p.delivered(out)
    assert value(m, "leadscore_events_total", source="web", outcome="duplicate") == 1


async def test_emit_hands_over_every_record_once_chunk_by_chunk_in_order():
    """The worker sends what ``emit`` gets while the store applies the next chunk: every
    score and DLQ record of the batch, once each, in the result's order."""
    p, _store, _m = make(chunk=2)
    events = [ev(i, lead=f"L-{i % 3}") for i in range(7)]
    batch = [msg(i, e) for i, e in enumerate(events)]
    batch.insert(3, msg(99, None, raw=b"{broken"))
    calls: list[tuple[list, list]] = []

    async def emit(scores, dlq) -> None:
        calls.append((list(scores), list(dlq)))

    out = await p.process(batch, emit)
    assert len(calls) == 4  # one per chunk of two events
    assert [s for c in calls for s in c[0]] == out.scores and len(out.scores) == 7
    assert [d for c in calls for d in c[1]] == out.dlq and len(out.dlq) == 1

    calls.clear()
    only_bad = await p.process([msg(100, None, raw=b"[]")], emit)
    assert calls == [([], only_bad.dlq)] and len(only_bad.dlq) == 1


async def test_a_redelivered_batch_emits_nothing_new_once_delivered():
    p, _store, _m = make()
    batch = [msg(i, ev(i)) for i in range(5)]
    first = await p.process(batch)
    p.delivered(first)
    again = await p.process(batch)
    assert len(first.records) == 5
    assert again.records == [] and again.scores == []


async def test_a_batch_whose_scores_never_reached_the_broker_is_scored_again():
    """A crash between the feature update and the publish must not lose the scores."""
    p, store, m = make()
    batch = [msg(i, ev(i)) for i in range(5)]
    first = await p.process(batch)
    # no delivered(): the worker died before the records were on the broker, and restarted
    p.forget_in_flight()
    again = await p.process(batch)
    p.delivered(again)
    assert [r["event_id"] for r in again.records] == [r["event_id"] for r in first.records]
    strip = [{k: v for k, v in r.items() if k != "scored_at"} for r in first.records]
    assert [{k: v for k, v in r.items() if k != "scored_at"} for r in again.records] == strip
    assert value(m, "leadscore_events_total", source="web", outcome="redelivered") == 5
    feats = await store.read("L-1")
    assert feats is not None and feats["web_page_views_1h"] == 5  # counted once


async def test_a_repeat_of_an_event_still_being_delivered_is_a_duplicate():
    # The worker processes a batch while the one before it delivers: a repeat of an event
    # of that batch is a duplicate (its record is on its way), not a redelivery to re-score.
    p, _store, m = make()
    first = await p.process([msg(i, ev(i)) for i in range(3)])
    second = await p.process([msg(3, ev(1)), msg(4, ev(4))])
    p.delivered(second)
    assert [r["event_id"] for r in second.records] == [ev(4)["event_id"]]
    assert value(m, "leadscore_events_total", source="web", outcome="duplicate") == 1
    assert value(m, "leadscore_events_total", source="web", outcome="redelivered") == 0
    p.delivered(first)
    third = await p.process([msg(5, ev(2))])
    p.delivered(third)
    assert third.records == []
    assert value(m, "leadscore_events_total", source="web", outcome="duplicate") == 2


async def test_tier_change_emits_an_alert():
    p, _store, m = make()
    await p.process([msg(0, ev(0))])
    out = await p.process(
        [msg(1, ev(1, "demo_request")), msg(2, ev(2, "form_submit")), msg(3, ev(3, "pricing_view"))]
    )
    tiers = [r["tier"] for r in out.records]
    assert tiers[-1] != "cold"
    alerts = [orjson.loads(v) for _, v in out.alerts]
    assert alerts and alerts[0]["from_tier"] == "cold"
    p.delivered(out)
    assert value(m, "leadscore_alerts_total", to_tier=alerts[0]["to_tier"]) >= 1


class SlowSaves(MemoryFeatureStore):
    """Saves that take a while, the first one longest, as a busy Redis might."""

    def __init__(self) -> None:
        super().__init__()
        self.delays = [0.05, 0.0]

    async def save_and_decide(self, records, encoded, policy, thresholds):  # type: ignore[no-untyped-def]
        await asyncio.sleep(self.delays.pop(0) if self.delays else 0.0)
        return await super().save_and_decide(records, encoded, policy, thresholds)


async def test_deferred_alerts_come_with_complete_and_saves_stay_in_batch_order():
    p, _store, _m = make()
    p._store = store = SlowSaves()  # noqa: SLF001
    first = await p.process([msg(0, ev(0))], defer_alerts=True)
    # The second batch is processed while the first batch's save is still running.
    second = await p.process(
        [
            msg(1, ev(1, "demo_request")),
            msg(2, ev(2, "form_submit")),
            msg(3, ev(3, "pricing_view")),
        ],
        defer_alerts=True,
    )
    assert first.saving is not None and not first.saving.done()
    assert second.alerts == []
    await p.complete(second)  # waits for the first batch's save before its own
    await p.complete(first)
    assert first.saving is None and first.alerts == []
    alerts = [orjson.loads(v) for _, v in second.alerts]
    assert alerts and alerts[0]["from_tier"] == "cold"
    assert store.scores["L-1"]["event_id"] == "e3"


async def test_reasons_explain_the_rule_score():
    p, _store, _m = make()
    out = await p.process([msg(0, ev(0, "demo_request"))])
    reasons = out.records[0]["reasons"]
    assert reasons[0]["feature"] == "web_demo_requests_30d"
    assert reasons[0]["value"] == 1
    assert out.records[0]["model_version"] == "rules-v1"


def crm(i: int, lead: str, **attrs: object) -> dict:
    return {**ev(i, "lead_updated", lead=lead, src="crm"), "attributes": attrs}


async def test_an_opted_out_lead_is_not_scored_until_the_opt_out_is_lifted():
    p, store, m = make()
    out = await p.process(
        [msg(0, ev(0, lead="L-o")), msg(1, crm(1, "L-o", opt_out=True), "leads.crm")]
    )
    out2 = await p.process([msg(2, ev(2, lead="L-o")), msg(3, ev(3, lead="L-k"))])
    # Lifted by a newer event; an older one saying "opted out" changes nothing.
    out3 = await p.process(
        [
            msg(4, crm(4, "L-o", opt_out="false"), "leads.crm"),
            msg(5, crm(-5, "L-o", opt_out="yes"), "leads.crm"),
            msg(6, ev(6, lead="L-o")),
        ]
    )
    for o in (out, out2, out3):
        p.delivered(o)
    assert [r["event_id"] for r in out.records] == ["e0"]
    assert [r["event_id"] for r in out2.records] == ["e3"]
    # e-5 is scored: the lead is not opted out (the newer e4 lifted it).
    assert [r["event_id"] for r in out3.records] == ["e4", "e-5", "e6"]
    assert value(m, "leadscore_events_total", source="crm", outcome="opted_out") == 1
    assert value(m, "leadscore_events_total", source="web", outcome="opted_out") == 1
    # The state kept counting while opted out.
    feats = await store.read("L-o")
    assert feats is not None and feats["web_page_views_1h"] == 3


async def test_an_erased_leads_events_are_dropped_and_counted():
    p, store, m = make()
    p.delivered(await p.process([msg(0, ev(0, lead="L-e")), msg(1, ev(1, lead="L-k"))]))
    await store.erase(["L-e"], 86_400, now_ms=0)
    out = await p.process([msg(2, ev(2, lead="L-e")), msg(3, ev(3, lead="L-k"))])
    p.delivered(out)
    assert [r["lead_id"] for r in out.records] == ["L-k"]
    assert out.dlq == []
    assert value(m, "leadscore_events_total", source="web", outcome="erased") == 1
    assert await store.read("L-e") is None


async def test_pii_is_redacted_before_the_store_and_the_dlq_see_it():
    s = Settings(kafka_bootstrap="unused:9092", privacy_key="pipeline-test-key-0123456789")
    redactor = s.redactor
    p, store, _m = make(redactor=redactor)
    crm = {
        **ev(0, "lead_created", src="crm"),
        "attributes": {"email": "jane@example.com", "job_title": "CTO, jane@example.com"},
    }
    bad = {**ev(1), "type": "page_vieww", "attributes": {"phone": "+1 415-555-0123"}}
    out = await p.process([msg(0, crm, topic="leads.crm"), msg(1, bad)])
    feats = await store.read("L-1")
    assert feats is not None
    assert feats["job_title"] == "CTO, " + redactor.token("jane@example.com")
    [(_key, dlq)] = out.dlq
    assert b"415-555-0123" not in dlq and orjson.loads(dlq)["value_redacted"]
    for record in out.records:
        assert b"jane@example.com" not in orjson.dumps(record)
    raw_p, _, _ = make(redactor=redactor, dlq_keep_raw=True)
    [(_key, kept)] = (await raw_p.process([msg(1, bad)])).dlq
    assert orjson.loads(kept)["value"] == orjson.dumps(bad).decode()
