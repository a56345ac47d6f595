"""A newly promoted champion is used by a running worker within seconds, without a restart."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from leadscore.infra.producer import EventProducer
from leadscore.jobs.train_events import train_from_event_list
from leadscore.model.registry import Registry
from leadscore.schemas.validation import Event, format_ts_ms, validate_event
from leadscore.tooling.simulator import SimConfig, simulate

from .helpers import read_topic

pytestmark = pytest.mark.integration


def _events(n: int, tag: str) -> list[dict]:
    # Ids are unique per run: Redis outlives the test, and a repeated id is a duplicate.
    tag = f"{tag}-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"{tag}-{i}",
            "lead_id": f"{tag}-L{i % 7}",
            "source": "web",
            "type": "pricing_view" if i % 3 else "page_view",
            "ts": format_ts_ms(now - i),
        }
        for i in range(n)
    ]


def test_promoted_model_is_used_within_seconds(settings_factory, worker_factory):
    s = settings_factory(model_poll_s=0.5)
    worker = worker_factory(s)
    producer = EventProducer(s)
    for ev in _events(20, "before"):
        producer.send(ev)
    producer.flush()
    before = read_topic(s, "scores", until=20, timeout=60)
    assert {r["value"]["model_version"] for r in before} == {"rules-v1"}

    now = int(time.time() * 1000)
    history = simulate(SimConfig(leads=400, events=16_000, seed=3, start_ms=now - 90 * 86_400_000))
    evs = [
        e
        for e in (
            validate_event(
                orjson.dumps(h),
                topic_source=None,
                key=None,
                now_ms=now,
                max_future_ms=86_400_000,
                check_key=False,
            )
            for h in history
        )
        if isinstance(e, Event)
    ]
    # force: 400 leads are below the promotion gate's data-sufficiency bar; this test is
    # about the swap (tests/integration/test_learning_loop.py is about the gate).
    report = train_from_event_list(evs, horizon_ms=30 * 86_400_000, out_dir=s.model_dir, force=True)
    version = report["version"]
    assert Registry(s.model_dir).champion() == version
    promoted_at = time.monotonic()

    deadline = promoted_at + 15
    while time.monotonic() < deadline:
        status, body = worker.get("/ready")
        if orjson.loads(body)["model_version"] == version:
            break
        time.sleep(0.2)
    swap_s = time.monotonic() - promoted_at
    assert swap_s < 15, "the worker did not pick up the new champion"

    for ev in _events(20, "after"):
        producer.send(ev)
    producer.flush()
    records = read_topic(s, "scores", until=40, timeout=60)
    after = [r["value"] for r in records if r["value"]["event_id"].startswith("after")]
    assert len(after) == 20
    assert {r["model_version"] for r in after} == {version}
    assert all(r["reasons"] and "contribution" in r["reasons"][0] for r in after)
    status, body = worker.get("/metrics")
    assert f'leadscore_model_info{{version="{version}"}} 1.0' in body.decode()
    assert "leadscore_model_swaps_total 1.0" in body.decode()
