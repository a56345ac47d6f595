"""Shadow scoring and A/B experiments in the batch path (no broker): every event gets a
shadow record, each lead keeps one arm, and a failing shadow costs only its own records."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from leadscore.features.memory import MemoryFeatureStore
from leadscore.model.experiment import Experiment
from leadscore.model.rules import RuleScorer
from leadscore.schemas.validation import validate_score
from leadscore.settings import Settings
from leadscore.streamer.batch import BatchRunner
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.models import ActiveExperiment
from leadscore.streamer.pipeline import Pipeline, topic_sources
from tests.fakes import TOPICS, FakeSend, batches, message


def _rules(version: str) -> RuleScorer:
    r = RuleScorer.default()
    return RuleScorer(
        r._rules,
        version=version,
        intercept=r._intercept,
        points_per_logit=r._ppl,
        thresholds=r.thresholds,
    )


class _Broken:
    version = "rules-broken"

    def score_batch(self, rows: Any, *, explain: bool = True) -> Any:
        raise RuntimeError("shadow model exploded")

    def score_records(self, rows: Any) -> Any:
        raise RuntimeError("shadow model exploded")


class _Sink:
    """The shadow sink's part: records handed over, 'delivered' through ``send``."""

    def __init__(self, send: FakeSend) -> None:
        self._send = send
        self._pending: list[Any] = []

    def send(self, records: Any) -> None:
        loop = asyncio.get_running_loop()
        for lead, value in records:
            self._pending.append(loop.create_task(self._send(TOPIC, lead.encode(), value, None)))

    async def delivered(self) -> list[BaseException]:
        futures = [await t for t in self._pending]
        self._pending = []
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]


TOPIC = "leads.scores.shadow"


def _runner(send: FakeSend, *, shadow: Any = None, exp: ActiveExperiment | None = None):
    champion = _rules("rules-champion")
    metrics = Metrics.create(CollectorRegistry())
    pipeline = Pipeline(
        MemoryFeatureStore(ordered=True),
        lambda: champion,
        metrics,
        topic_sources=topic_sources(Settings(kafka_bootstrap="unused:9092").topic),
        max_future_ms=86_400_000,
        chunk=16,
        fallback=champion,
        shadow=lambda: shadow,
        experiment=lambda: exp,
    )
    acks: list[list[int]] = []
    return BatchRunner(
        pipeline,
        send,
        TOPICS,
        metrics,
        ack=lambda events: acks.append([m.offset for m in events]),
        to_message=lambda m: m,
        on_failure=lambda exc: (_ for _ in ()).throw(exc),
        shadow=_Sink(send),  # type: ignore[arg-type]
    ), acks


def _records(send: FakeSend, topic: str) -> list[dict]:
    return [orjson.loads(v) for t, v in send.values if t == topic]


async def test_every_event_gets_a_champion_and_a_shadow_record() -> None:
    send = FakeSend()
    run, acks = _runner(send, shadow=_rules("rules-shadow"))
    msgs = [message(i, lead=f"L-{i % 7}") for i in range(60)]
    await run.run(batches(msgs[:25], msgs[25:]))
    main, shadow = _records(send, "leads.scores"), _records(send, "leads.scores.shadow")
    assert [r["event_id"] for r in main] == [f"e{i}" for i in range(60)]
    assert [r["event_id"] for r in shadow] == [f"e{i}" for i in range(60)]
    assert {r["model_version"] for r in main} == {"rules-champion"}
    assert {r["model_version"] for r in shadow} == {"rules-shadow"}
    for r in main + shadow:
        validate_score(r)
    assert acks == [list(range(25)), list(range(25, 60))]


async def test_a_failing_shadow_costs_only_its_records() -> None:
    send = FakeSend()
    run, acks = _runner(send, shadow=_Broken())
    await run.run(batches([message(i) for i in range(10)]))
    assert len(_records(send, "leads.scores")) == 10
    assert _records(send, "leads.scores.shadow") == []
    assert acks == [list(range(10))]


async def test_ab_arms_are_stable_per_lead_and_labelled() -> None:
    exp = Experiment.new("rules-challenger", 0.3)
    send = FakeSend()
    run, _ = _runner(send, exp=ActiveExperiment(exp, _rules("rules-challenger")))
    msgs = [message(i, lead=f"L-{i % 50}") for i in range(400)]
    await run.run(batches(msgs[:150], msgs[150:]))
    recs = _records(send, "leads.scores")
    assert len(recs) == 400
    arms: dict[str, set[str]] = {}
    for r in recs:
        validate_score(r)
        assert r["experiment"] == exp.id
        want = "rules-challenger" if r["arm"] == "challenger" else "rules-champion"
        assert r["model_version"] == want
        arms.setdefault(r["lead_id"], set()).add(r["arm"])
        assert r["arm"] == exp.arm(r["lead_id"])
    assert all(len(a) == 1 for a in arms.values())
    assert {a for s in arms.values() for a in s} == {"champion", "challenger"}


def test_the_split_matches_the_share_and_a_new_salt_reshuffles() -> None:
    exp = Experiment.new("v2", 0.1)
    leads = [f"L-{i:06d}" for i in range(10_000)]
    share = sum(exp.arm(lead) == "challenger" for lead in leads) / len(leads)
    assert 0.09 <= share <= 0.11
    other = replace(exp, salt="another")
    moved = sum(exp.arm(lead) != other.arm(lead) for lead in leads)
    assert moved > 1000  # independent splits: ~18 % of leads change arm
