"""Tier-change alerts with hysteresis: the rule, and the pipeline applying it."""

from __future__ import annotations

import time

import orjson
from prometheus_client import CollectorRegistry

from leadscore.features.alerting import AlertPolicy, Announced, decide
from leadscore.features.memory import MemoryFeatureStore
from leadscore.model.scoring import ScoredRecord, Thresholds
from leadscore.schemas.validation import format_ts_ms, validate_record
from leadscore.settings import Settings
from leadscore.streamer.metrics import Metrics
from leadscore.streamer.pipeline import AlertSettings, Message, Pipeline, topic_sources

HOT, WARM = 0.7, 0.3


def run(scores: list[float], *, margin: float, interval_ms: int, gap_ms: int = 1000) -> list:
    announced = None
    out = []
    for i, sc in enumerate(scores):
        tier = Thresholds(HOT, WARM).tier(sc)
        d, announced = decide(
            announced,
            score=sc,
            tier=tier,
            version="v1",
            hot=HOT,
            warm=WARM,
            policy=AlertPolicy(1_000_000 + i * gap_ms, margin, interval_ms),
        )
        out.append(d)
    return out


def test_scores_hovering_around_a_boundary_do_not_flap():
    hover = [0.5, 0.69, 0.71, 0.69, 0.715, 0.705, 0.69, 0.719]
    assert run(hover, margin=0.02, interval_ms=0) == ["", "", "M", "", "M", "M", "", "M"]
    # Without a margin every crossing is announced: the flapping the margin removes.
    assert sum(d.startswith("A") for d in run(hover, margin=0.0, interval_ms=0)) == 5


def test_a_clear_crossing_is_announced_once_and_back_only_past_the_margin():
    assert run([0.5, 0.8, 0.69, 0.6, 0.2], margin=0.02, interval_ms=0) == [
        "",
        "Awarm",
        "M",
        "Ahot",
        "Awarm",
    ]


def test_at_most_one_alert_per_interval_and_the_change_comes_later():
    # 1 s between scores, 3 s interval: the drop at 2 s waits until 4 s.
    got = run([0.5, 0.9, 0.1, 0.1, 0.1], margin=0.0, interval_ms=3000)
    assert got == ["", "Awarm", "I", "I", "Ahot"]


def test_another_model_version_moves_the_tier_silently():
    a = Announced("cold", 5, "v1")
    d, after = decide(
        a, score=0.9, tier="hot", version="v2", hot=HOT, warm=WARM, policy=AlertPolicy(10)
    )
    assert d == "S" and after == Announced("hot", 5, "v2")
    assert Announced.decode(after.encode()) == after


class Scripted:
    """A scorer that returns the scores it is given, in order."""

    thresholds = Thresholds(HOT, WARM)

    def __init__(self, version: str, scores: list[float]) -> None:
        self.version, self.scores = version, scores

    def score_records(self, rows):  # type: ignore[no-untyped-def]
        n = len(rows.rows()) if hasattr(rows, "rows") else len(rows)
        return [
            ScoredRecord(s, self.thresholds.tier(s), [])
            for s in (self.scores.pop(0) for _ in range(n))
        ]


def _msg(i: int) -> Message:
    ts = format_ts_ms(int(time.time() * 1000) - 60_000 + i)
    ev = {"event_id": f"e{i}", "lead_id": "L-1", "source": "web", "type": "page_view", "ts": ts}
    return Message("leads.web", 0, i, b"L-1", orjson.dumps(ev), time.time())


async def test_the_pipeline_suppresses_flapping_and_summarises_a_model_swap():
    metrics = Metrics.create(CollectorRegistry())
    current = [Scripted("v1", [0.5, 0.71, 0.69, 0.9]), Scripted("v2", [0.1, 0.1, 0.8])]
    p = Pipeline(
        MemoryFeatureStore(),
        lambda: current[0],
        metrics,
        topic_sources=topic_sources(Settings(kafka_bootstrap="x:1").topic),
        max_future_ms=86_400_000,
        alert_policy=AlertSettings(margin=0.02, interval_ms=0),
    )
    alerts = []
    for i in range(7):
        if i == 4:
            current.pop(0)  # the champion changes
        out = await p.process([_msg(i)])
        p.delivered(out)
        alerts += [orjson.loads(v) for _, v in out.alerts]
    kinds = [(a["type"], a.get("from_tier"), a.get("to_tier")) for a in alerts]
    assert kinds == [
        ("tier_change", "warm", "hot"),  # 0.9, after 0.71 (within the margin) was not
        ("model_swap", None, None),
        ("tier_change", "cold", "hot"),  # v2's own change: 0.1 -> 0.8
    ]
    assert alerts[1]["from_version"] == "v1" and alerts[1]["to_version"] == "v2"
    for a in alerts:
        validate_record("alert", a)
    sample = metrics.registry.get_sample_value
    assert sample("leadscore_alerts_suppressed_total", {"reason": "margin"}) == 1
    assert sample("leadscore_alerts_suppressed_total", {"reason": "model_swap"}) == 1
    assert sample("leadscore_alerts_total", {"to_tier": "hot"}) == 2
