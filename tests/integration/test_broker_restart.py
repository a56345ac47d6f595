"""Issue 5: the broker dies (SIGKILL) mid-stream and comes back; the worker carries on.

A restart only means something if the broker keeps its data, and the embedded Tansu keeps it
in memory by default. Here it stores topics, records and committed offsets in S3, served by
moto's S3 server (a separate process, so it outlives the broker): the restarted broker on the
same port has everything the first one acknowledged, the way a Kafka broker has its log.

Checked: the worker neither exits nor needs a restart; every event (sent before the kill,
while the broker was down, which the producer retries, and after the restart) gets a score
record; and every lead's features equal the offline replay, so no event was applied twice or
skipped.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from leadscore.tooling.embedded import Service, free_port, start_broker

from .helpers import (
    BUCKET,
    WorkerProcess,
    assert_features_match_replay,
    metric_total,
    produce,
    read_to_end,
    recent_events,
    wait_caught_up,
)

pytestmark = pytest.mark.integration


def start_persistent_broker(log_dir: Path, port: int, env: dict[str, str]) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    return start_broker(log_dir, port=port, storage_engine=f"s3://{BUCKET}/", env=env)


def test_broker_killed_and_restarted_mid_stream(
    object_store: dict[str, str], settings_factory, worker_factory, tmp_path: Path
) -> None:
    port = free_port()
    broker = start_persistent_broker(tmp_path / "broker-1", port, object_store)
    restarted: Service | None = None
    worker: WorkerProcess | None = None
    try:
        s = settings_factory(
            kafka_bootstrap=broker.url,
            data_dir=tmp_path / "faust",
            # Every fetch and produce is object-store requests here (moto answers a few hundred
            # a second), so: fewer partitions, and fetches that wait longer for data.
            topic_partitions=2,
            fetch_max_wait_ms=300,
        )
        events = recent_events(100, 4_000, seed=53, dup_every=40)
        expected = {e["event_id"] for e in events}
        first, second = events[: len(events) // 2], events[len(events) // 2 :]
        worker = worker_factory(s)
        # The first half is sent at a pace, so the kill lands while events are still arriving
        # (and the producer, too, has to ride out the outage: its unsent events are retried).
        pool = ThreadPoolExecutor(1)
        sender = pool.submit(produce, s, first, rate=800, linger_ms=100)
        deadline = time.monotonic() + 60
        while metric_total(worker) < 300:
            assert worker.proc.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.05)

        # Mid-stream: SIGKILL, no goodbye to the group, in-flight fetches and produces cut.
        assert broker.proc is not None
        os.kill(broker.proc.pid, signal.SIGKILL)
        broker.proc.wait(10)
        at_kill = metric_total(worker)
        time.sleep(3.0)  # the worker's clients notice and start reconnecting
        assert worker.proc.poll() is None, f"worker exited without its broker:\n{worker.log_tail()}"
        restarted = start_persistent_broker(tmp_path / "broker-2", port, object_store)
        sender.result(120)  # re-raises the producer's failure: every event acknowledged
        pool.shutdown()
        produce(s, second, linger_ms=100)
        wait_caught_up(s, [worker], timeout=180)
        assert worker.proc.poll() is None, worker.log_tail()
        processed = metric_total(worker)
        assert_features_match_replay(worker, events)
        scored = Counter(r["event_id"] for r in read_to_end(s, "scores"))
        assert set(scored) <= expected, "a score for an event that was never sent"
        missing = expected - set(scored)
        print(
            f"broker killed after {at_kill} events processed; {processed} processed in all for "
            f"{len(events)} sent ({len(expected)} distinct); {sum(scored.values())} score "
            f"records, {sum(scored.values()) - len(scored)} duplicates, {len(missing)} missing"
        )
        assert at_kill < len(first), "the worker finished the first half before the kill"
        assert missing == set(), f"{len(missing)} events with no score: {sorted(missing)[:3]}"
    finally:
        # The worker first: stopping, it commits and flushes, which a gone broker would stall.
        if worker is not None:
            worker.stop()
        if restarted is not None:
            restarted.stop()
        broker.stop()
