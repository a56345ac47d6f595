"""The batch path under poison and faults: every message ends as exactly one of a score
record, a DLQ record or a counted drop; a failure never loses the batch."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from leadscore.features.exceptions import FeatureStateLostError, FeatureStoreUnavailableError
from leadscore.features.memory import MemoryFeatureStore
from leadscore.model.rules import RuleScorer
from leadscore.schemas import EVENT_TYPES, load_schema
from leadscore.schemas.validation import Event, format_ts_ms, validate_event
from leadscore.settings import Settings
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.pipeline import BatchOutput, Message, Pipeline, topic_sources

_dlq_schema = fastjsonschema.compile(load_schema("dlq"))
TOPICS = {"web": "leads.web", "email": "leads.email", "crm": "leads.crm"}


class FaultyStore(MemoryFeatureStore):
    """A memory store that raises ``error`` for events of ``poison`` leads, or on call
    number ``fail_call`` (once)."""

    def __init__(
        self,
        *,
        ordered: bool = False,
        poison: frozenset[str] = frozenset(),
        error: BaseException | None = None,
        fail_call: int | None = None,
    ) -> None:
        super().__init__(ordered=ordered)
        self.poison = poison
        self.error = error or ValueError("a bug meets an odd event")
        self.fail_call = fail_call
        self.calls = 0

    async def apply_batch(self, events, confirm=()):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.fail_call:
            raise self.error
        if any(e.lead_id in self.poison for e in events):
            raise self.error
        return await super().apply_batch(events, confirm)


def make(store: MemoryFeatureStore, *, chunk: int = 4, **kw: Any) -> tuple[Pipeline, Metrics]:
    metrics = Metrics.create(CollectorRegistry())
    rules = RuleScorer.default()
    p = Pipeline(
        store,
        lambda: rules,
        metrics,
        topic_sources=topic_sources(Settings(kafka_bootstrap="unused:9092").topic),
        max_future_ms=86_400_000,
        chunk=chunk,
        fallback=rules,
        **kw,
    )
    return p, metrics


def event(i: int, lead: str, src: str = "web", typ: str | None = None) -> dict[str, Any]:
    ts = format_ts_ms(int(time.time() * 1000) - 3_600_000 + i)
    return {
        "event_id": f"e{i}",
        "lead_id": lead,
        "source": src,
        "type": typ or EVENT_TYPES[src][i % len(EVENT_TYPES[src])],  # type: ignore[index]
        "ts": ts,
    }


def msg(
    i: int, ev: dict[str, Any] | None, *, raw: bytes | None = None, key: Any = "lead"
) -> Message:
    value = raw if raw is not None else orjson.dumps(ev)
    k = (ev["lead_id"].encode() if ev else b"k") if key == "lead" else key
    topic = TOPICS[ev["source"]] if ev and ev.get("source") in TOPICS else "leads.web"
    return Message(topic, 0, i, k, value, time.time())


def outcomes(out: BatchOutput, n: int) -> None:
    """Every message has exactly one outcome: score record, DLQ record or counted drop."""
    assert len(set(out.score_msgs)) == len(out.score_msgs), "a message scored twice"
    assert not set(out.score_msgs) & set(out.dlq_msgs), "a message both scored and DLQ'd"
    drops = sum(v for (_, o), v in out.counts.items() if o in ("duplicate", "late"))
    assert len(out.score_msgs) + len(out.dlq_msgs) + drops == n
    assert len(out.scores) == len(out.records) == len(out.score_msgs)
    for _key, value in out.dlq:
        _dlq_schema(orjson.loads(value))


@pytest.mark.parametrize("ordered", [False, True])
async def test_a_message_that_fails_the_batch_goes_to_the_dlq_alone(ordered: bool) -> None:
    store = FaultyStore(ordered=ordered, poison=frozenset({"POISON"}))
    p, m = make(store)
    batch = [msg(i, event(i, f"L-{i % 3}")) for i in range(10)]
    batch.insert(5, msg(99, event(99, "POISON")))
    sent: list[tuple[list[Any], list[Any]]] = []

    async def emit(scores, dlq) -> None:  # type: ignore[no-untyped-def]
        sent.append((list(scores), list(dlq)))

    out = await p.process(batch, emit)
    outcomes(out, len(batch))
    assert out.isolated
    assert sorted(r["event_id"] for r in out.records) == sorted(f"e{i}" for i in range(10))
    assert [orjson.loads(v)["error_code"] for _, v in out.dlq] == ["internal_error"]
    assert "a bug meets an odd event" in orjson.loads(out.dlq[0][1])["error_message"]
    # What was emitted is exactly what the batch produced, each record once.
    assert sorted(s for c in sent for s in c[0]) == sorted(out.scores)
    assert [d for c in sent for d in c[1]] == out.dlq
    p.delivered(out)
    assert m.registry.get_sample_value("leadscore_batch_failures_total") == 1
    assert m.registry.get_sample_value("leadscore_dlq_total", {"code": "internal_error"}) == 1
    assert (
        m.registry.get_sample_value(
            "leadscore_events_total", {"source": "web", "outcome": "failed"}
        )
        == 1
    )
    feats = await store.read("L-1")
    assert feats is not None and await store.read("POISON") is None


@pytest.mark.parametrize("ordered", [False, True])
async def test_records_emitted_before_a_failure_stand_and_are_not_sent_again(ordered: bool) -> None:
    store = FaultyStore(ordered=ordered, fail_call=3)
    p, _m = make(store, chunk=4)  # calls of 1, 4, 4, ... events
    batch = [msg(i, event(i, f"L-{i % 4}")) for i in range(16)]
    batch.append(msg(50, None, raw=b"{broken"))
    sent_scores: list[tuple[str, bytes]] = []
    sent_dlq: list[Any] = []

    async def emit(scores, dlq) -> None:  # type: ignore[no-untyped-def]
        sent_scores.extend(scores)
        sent_dlq.extend(dlq)

    out = await p.process(batch, emit)
    outcomes(out, len(batch))
    ids = Counter(orjson.loads(v)["event_id"] for _, v in sent_scores)
    assert ids == Counter({f"e{i}": 1 for i in range(16)}), "an event scored twice or never"
    assert len(sent_dlq) == 1 and out.dlq == sent_dlq
    assert sorted(sent_scores) == sorted(out.scores)


async def test_a_model_that_fails_is_replaced_by_the_rules() -> None:
    class Broken:
        version = "lgbm-broken"

        def score_records(self, rows):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("bad model")

    store = MemoryFeatureStore()
    metrics = Metrics.create(CollectorRegistry())
    rules = RuleScorer.default()
    p = Pipeline(
        store,
        lambda: Broken(),  # type: ignore[arg-type,return-value]
        metrics,
        topic_sources=topic_sources(Settings(kafka_bootstrap="unused:9092").topic),
        max_future_ms=86_400_000,
        fallback=rules,
    )
    out = await p.process([msg(i, event(i, "L-1")) for i in range(3)])
    assert [r["model_version"] for r in out.records] == [rules.version] * 3
    assert (
        metrics.registry.get_sample_value(
            "leadscore_model_errors_total", {"version": "lgbm-broken"}
        )
        == 1
    )


@pytest.mark.parametrize("ordered", [False, True])
async def test_a_lost_state_waits_for_the_rebuild_then_scores_the_rest(ordered: bool) -> None:
    store = FaultyStore(ordered=ordered, error=FeatureStateLostError("wiped"), fail_call=2)
    waited: list[str] = []

    async def on_lost(exc: FeatureStateLostError) -> None:
        waited.append(str(exc))

    p, _m = make(store, chunk=4, on_state_lost=on_lost)
    batch = [msg(i, event(i, f"L-{i % 4}")) for i in range(12)]
    out = await p.process(batch, None)
    outcomes(out, len(batch))
    assert waited == ["wiped"]
    assert sorted(r["event_id"] for r in out.records) == sorted(f"e{i}" for i in range(12))
    assert out.dlq == [] and not out.isolated


async def test_a_service_failure_goes_up_instead_of_into_the_dlq() -> None:
    store = FaultyStore(error=FeatureStoreUnavailableError("Redis is unavailable"), fail_call=1)
    p, _m = make(store)
    with pytest.raises(FeatureStoreUnavailableError):
        await p.process([msg(i, event(i, "L-1")) for i in range(3)])
    # Without a rebuild handler, a lost state goes up too.
    p2, _ = make(FaultyStore(error=FeatureStateLostError("wiped"), fail_call=1))
    with pytest.raises(FeatureStateLostError):
        await p2.process([msg(0, event(0, "L-1"))])


# --- property: random mixes of valid events and garbage ----------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Message], set[tuple[str, str]], frozenset[str]]:
    n = draw(st.integers(min_value=1, max_value=40))
    leads = [f"L-{k}" for k in range(draw(st.integers(min_value=1, max_value=5)))]
    messages: list[Message] = []
    valid: set[tuple[str, str]] = set()
    for i in range(n):
        kind = draw(st.sampled_from(["valid", "valid", "valid", "repeat", "bytes", "field", "key"]))
        ev = event(i, draw(st.sampled_from(leads)), draw(st.sampled_from(["web", "email", "crm"])))
        if kind == "valid":
            messages.append(msg(i, ev))
            valid.add((ev["lead_id"], ev["event_id"]))
        elif kind == "repeat" and messages:
            messages.append(draw(st.sampled_from(messages))._replace(offset=i))
        elif kind == "bytes":
            messages.append(msg(i, None, raw=draw(st.binary(max_size=60))))
        elif kind == "field":
            field = draw(
                st.sampled_from(["event_id", "lead_id", "source", "type", "ts", "attributes"])
            )
            bad = {**ev, field: draw(json_values)}
            m = msg(i, ev, raw=json.dumps(bad).encode())
            messages.append(m)
            # The value drawn may happen to be valid (an empty attributes object, say).
            res = validate_event(
                m.value,
                topic_source=None,
                key=m.key,
                now_ms=int(time.time() * 1000),
                max_future_ms=86_400_000,
                check_key=False,
            )
            if (
                isinstance(res, Event)
                and m.topic == TOPICS.get(res.source)
                and m.key == res.lead_id.encode()
            ):
                valid.add((res.lead_id, res.event_id))
        else:
            messages.append(msg(i, ev, key=draw(st.sampled_from([None, b"", b"other"]))))
    poison = frozenset(draw(st.sets(st.sampled_from(leads), max_size=1)))
    return messages, valid, poison


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=batches(), ordered=st.booleans(), chunk=st.integers(min_value=1, max_value=8))
async def test_every_message_ends_as_exactly_one_outcome(case, ordered, chunk) -> None:
    messages, valid, poison = case
    store = FaultyStore(ordered=ordered, poison=poison)
    p, _m = make(store, chunk=chunk)
    out = await p.process(messages, None)
    outcomes(out, len(messages))
    scored = {(r["lead_id"], r["event_id"]) for r in out.records}
    assert scored == {v for v in valid if v[0] not in poison}
    failed = [
        orjson.loads(v) for _, v in out.dlq if orjson.loads(v)["error_code"] == "internal_error"
    ]
    poisoned = [
        m for m in messages if m.key is not None and m.key.decode(errors="replace") in poison
    ]
    assert len(failed) <= len(poisoned)
