"""Issue 22: a worker whose agent dies says so and exits for its supervisor to restart it;
SIGTERM ends a busy worker within a bounded time; a broker that refuses records stops the
worker without committing past them."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from leadscore.infra.topics import ensure_topics
from leadscore.tooling.embedded import start_broker

from .helpers import (
    assert_features_match_replay,
    consumer_lag,
    metric_total,
    produce,
    read_to_end,
    recent_events,
    wait_caught_up,
)

pytestmark = pytest.mark.integration


def test_an_agent_failure_makes_the_worker_unready_then_exit(settings_factory, worker_factory):
    s = settings_factory(fault_inject="agent")
    worker = worker_factory(s)
    produce(s, recent_events(5, 20, seed=71))
    failed_at = time.monotonic()
    seen_503 = None
    while worker.proc.poll() is None and time.monotonic() - failed_at < 15:
        try:
            status, body = worker.get("/ready")
        except OSError:
            time.sleep(0.05)
            continue
        if status == 503 and "agent" in json.loads(body).get("problems", {}):
            seen_503 = json.loads(body)
        time.sleep(0.05)
    code = worker.proc.wait(timeout=1)
    exited_after = time.monotonic() - failed_at
    assert seen_503 is not None, worker.log_tail()
    assert "InjectedFaultError" in seen_503["problems"]["agent"]
    assert code not in (0, None), worker.log_tail()
    assert exited_after < 10, f"exited {exited_after:.1f} s after the failure"


def test_sigterm_on_a_busy_worker_exits_within_10_s(settings_factory, worker_factory):
    s = settings_factory()
    worker = worker_factory(s)
    produce(s, recent_events(300, 30_000, seed=72))
    deadline = time.monotonic() + 60
    while metric_total(worker) < 2_000:
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.05)
    assert metric_total(worker) < 30_000, "the worker finished before it could be stopped"
    worker.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    worker.proc.wait(timeout=15)
    assert time.monotonic() - t0 < 10, worker.log_tail()


def test_a_refused_produce_commits_nothing_past_it(
    settings_factory, worker_factory, tmp_path: Path
):
    # A broker of its own whose schema registry refuses every record on the score topic
    # (Tansu checks each produce against <topic>.json and answers INVALID_RECORD).
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    broker = start_broker(tmp_path, extra_args=["--schema-registry", "file://./"], cwd=schemas)
    try:
        s = settings_factory(kafka_bootstrap=broker.url)
        ensure_topics(s)
        refuse = schemas / f"{s.topic('scores')}.json"
        refuse.write_text(json.dumps({"type": "object", "properties": {"value": {"not": {}}}}))
        events = recent_events(20, 300, seed=73)
        produce(s, events)
        worker = worker_factory(s, wait_ready=False)
        code = worker.proc.wait(timeout=90)
        assert code != 0
        assert "PublishError" in worker.log_path.read_text(errors="replace")
        assert consumer_lag(s) == len(events), "offsets committed past refused records"
        assert read_to_end(s, "scores") == []

        # The broker takes records again: a restarted worker scores every event.
        refuse.unlink()
        second = worker_factory(s)
        wait_caught_up(s, [second], timeout=90)
        ids = Counter(r["event_id"] for r in read_to_end(s, "scores"))
        assert set(ids) == {e["event_id"] for e in events}
        assert_features_match_replay(second, events)
        second.stop()
    finally:
        broker.stop()
