"""Shadow scoring and an A/B experiment in a running worker on real services: every event
gets a champion (or challenger) record and a shadow record, and 10,000 leads split 0.1 +-
0.01 into the challenger arm, each lead in one arm before and after a worker restart."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import orjson
import pytest

from leadscore.model.registry import Registry
from leadscore.schemas.validation import format_ts_ms, validate_score
from tests.fakes import save_worker_model

from .helpers import produce, read_topic

pytestmark = pytest.mark.integration

LEADS = 10_000


def _events(run: str, tag: str) -> list[dict]:
    # Ids unique per run: Redis outlives the test, and a repeated event id is a duplicate.
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"{run}-{tag}-{i}",
            "lead_id": f"{run}-L-{i:05d}",
            "source": "web",
            "type": "pricing_view" if i % 3 else "page_view",
            "ts": format_ts_ms(now - 1000 + i % 997),
        }
        for i in range(LEADS)
    ]


def test_shadow_records_and_a_stable_ab_split_across_a_restart(
    settings_factory, worker_factory
) -> None:
    s = settings_factory(model_poll_s=0.5)
    save_worker_model(s.model_dir, "champion-v1")
    save_worker_model(s.model_dir, "challenger-v2", promote=False)
    reg = Registry(s.model_dir)
    reg.set_shadow("challenger-v2")
    exp = reg.start_experiment("challenger-v2", 0.1)

    worker = worker_factory(s)
    ready = orjson.loads(worker.get("/ready")[1])
    assert ready["shadow_version"] == "challenger-v2"
    assert ready["experiment"]["id"] == exp.id and "salt" not in ready["experiment"]
    run = uuid.uuid4().hex[:8]
    produce(s, _events(run, "before"), linger_ms=20)
    first = read_topic(s, "scores", until=LEADS, timeout=120)
    assert len(first) == LEADS
    worker.stop()
    worker = worker_factory(s)
    produce(s, _events(run, "after"), linger_ms=20)

    records = [r["value"] for r in read_topic(s, "scores", until=2 * LEADS, timeout=120)]
    shadow = [r["value"] for r in read_topic(s, "scores.shadow", until=2 * LEADS, timeout=120)]
    assert sorted(r["event_id"] for r in records) == sorted(
        f"{run}-{tag}-{i}" for tag in ("before", "after") for i in range(LEADS)
    )
    assert sorted(r["event_id"] for r in shadow) == sorted(r["event_id"] for r in records)
    assert {r["model_version"] for r in shadow} == {"challenger-v2"}
    arms: dict[str, set[str]] = defaultdict(set)
    for r in records:
        assert r["experiment"] == exp.id
        assert r["model_version"] == (
            "challenger-v2" if r["arm"] == "challenger" else "champion-v1"
        )
        arms[r["lead_id"]].add(r["arm"])
    for r in records[:50] + shadow[:50]:
        validate_score(r)
    assert len(arms) == LEADS
    assert all(len(a) == 1 for a in arms.values()), "a lead changed arm"
    share = sum(a == {"challenger"} for a in arms.values()) / LEADS
    assert 0.09 <= share <= 0.11, share
