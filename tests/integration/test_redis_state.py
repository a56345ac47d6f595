"""Issue 22: a Redis that comes back empty mid-stream is detected within seconds, nothing is
scored from the partial state, ``leadscore rebuild`` restores features equal to the offline
replay of everything sent, and scoring resumes. A wrong Redis password is not ready."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from leadscore.features.store import RedisFeatureStore, lead_keys
from leadscore.tooling.embedded import settings_env, start_redis

from .helpers import (
    WorkerProcess,
    assert_features_match_replay,
    metric_total,
    produce,
    read_to_end,
    recent_events,
    wait_caught_up,
)

pytestmark = pytest.mark.integration


def wait_ready_body(worker: WorkerProcess, want: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, worker.log_tail()
        try:
            status, raw = worker.get("/ready")
            body = json.loads(raw)
            if status == want:
                return body
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"/ready did not answer {want} within {timeout} s: {body}\n{worker.log_tail()}")


def ms(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def test_redis_restarted_empty_is_detected_and_rebuilt(
    settings_factory, worker_factory, api_factory, tmp_path: Path
):
    svc = start_redis(tmp_path)
    port = int(svc.url.rsplit(":", 1)[1].split("/")[0])
    try:
        s = settings_factory(redis_url=svc.url, data_dir=tmp_path / "faust")
        first = recent_events(80, 3_000, seed=81, dup_every=30)
        second = recent_events(80, 1_500, seed=82)
        worker = worker_factory(s)
        api = api_factory(s)
        produce(s, first)
        wait_caught_up(s, [worker], timeout=90)
        lead_path = f"/leads/{quote(first[0]['lead_id'], safe='')}"
        assert api.get(lead_path)[0] == 200

        # Redis dies and an empty one takes its place on the same port.
        assert svc.proc is not None
        killed = time.time()
        svc.proc.kill()
        svc.proc.wait(10)
        svc = start_redis(tmp_path, port=port)
        restarted = time.time()
        body = wait_ready_body(worker, 503, timeout=10)
        detected = time.time()
        assert "feature_state" in body["problems"], body
        print(f"state loss detected {detected - restarted:.2f} s after the empty Redis started")

        scored_before = metric_total(worker, "scored")
        produce(s, second)
        time.sleep(3.0)
        assert metric_total(worker, "scored") == scored_before, "scored from a wiped Redis"
        assert worker.get("/ready")[0] == 503
        # The API answers from no state rather than a wiped one.
        assert api.get(lead_path)[0] == 503
        assert api.get("/ready")[0] == 503

        rebuild_started = time.time()
        done = subprocess.run(
            [sys.executable, "-P", "-m", "leadscore", "rebuild"],
            env=settings_env(s),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["events"] == len(first) + len(second)
        assert report["invalid_skipped"] == 0

        wait_ready_body(worker, 200, timeout=30)
        wait_caught_up(s, [worker], timeout=90)
        # ... and adopts the rebuilt state's generation.
        assert api.get(lead_path)[0] == 200
        sent = first + second
        assert_features_match_replay(worker, sent)
        records = read_to_end(s, "scores")
        ids = Counter(r["event_id"] for r in records)
        assert set(ids) == {e["event_id"] for e in sent}, "an event without a score record"
        assert [i for i, n in ids.items() if n > 1] == [], "an event scored twice"
        # Every event sent before the kill was scored before it (the group had caught up):
        # any record scored from then until the rebuild would come from the wiped state.
        during = [r for r in records if killed < ms(r["scored_at"]) < rebuild_started]
        assert during == [], f"{len(during)} records scored between the loss and the rebuild"
        # The rebuild restored each lead's latest score as well.
        client = redis.Redis.from_url(svc.url)
        try:
            lead = first[0]["lead_id"]
            assert client.get(lead_keys(lead).latest) is not None
        finally:
            client.close()
    finally:
        svc.stop()


def test_a_wrong_redis_password_is_not_ready(settings_factory, worker_factory, tmp_path: Path):
    svc = start_redis(tmp_path, extra_args=["--requirepass", "right-one"])
    try:
        s = settings_factory(redis_url=svc.url, redis_password="wrong-one")  # noqa: S106
        worker = worker_factory(s, wait_ready=False)
        deadline = time.monotonic() + 60
        body: dict = {}
        while time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.log_tail()
            try:
                status, raw = worker.get("/ready")
                body = json.loads(raw)
                if "authentication" in body.get("problems", {}).get("redis", ""):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"/ready never reported the failed authentication: {body}")
        assert status == 503
        time.sleep(2.0)
        assert worker.get("/ready")[0] == 503
    finally:
        svc.stop()


def test_a_lead_whose_keys_are_broken_fails_alone(redis_url):
    """A script error on one event (its lead's keys of the wrong type) fails that event only."""
    import asyncio
    import uuid

    import redis.asyncio as aioredis

    from leadscore.schemas.validation import Event, format_ts_ms

    tag = uuid.uuid4().hex[:8]
    ts = int(time.time() * 1000) - 60_000

    def ev(i: int, lead: str) -> Event:
        return Event(f"{tag}-{i}", lead, "web", "page_view", format_ts_ms(ts + i), ts + i, {})

    bad, good = f"B-{tag}", f"G-{tag}"

    async def run() -> list:
        client = aioredis.Redis.from_url(redis_url)
        store = RedisFeatureStore(client)
        try:
            await store.open()
            await client.set(lead_keys(bad).ids, "not a sorted set")
            return await store.apply_batch([ev(0, good), ev(1, bad), ev(2, good)])
        finally:
            await store.close()
            await client.aclose()

    updates = asyncio.run(run())
    assert [u.outcome for u in updates] == ["ok", "error", "ok"]
    assert "WRONGTYPE" in updates[1].error
    assert updates[2].features is not None and updates[2].features["web_page_views_1h"] == 2
