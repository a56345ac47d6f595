"""Issue 5: a worker killed with SIGKILL, or a Redis that stops answering for a while, loses
no event and no feature: the state ends equal to the offline replay for every lead, and every
distinct event has a score record on ``leads.scores`` (at least once after a crash, exactly
once when nothing crashed)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest
import redis

from leadscore.features.store import lead_keys
from leadscore.tooling.embedded import start_redis

from .helpers import (
    Feeder,
    WorkerProcess,
    assert_features_match_replay,
    committed_total,
    metric_total,
    produce,
    read_to_end,
    recent_events,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

N_LEADS = 300
N_EVENTS = 40_000  # more than a run sends: the feeder stops at the kill


def applied_ids(redis_url: str, leads: set[str]) -> set[str]:
    """Event ids the feature store has applied (its per-lead dedupe sets)."""
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for lead in leads:
            pipe.zrange(lead_keys(lead).ids, 0, -1)
        return {m.decode() for members in pipe.execute() for m in members}
    finally:
        client.close()


def wait_processed(worker: WorkerProcess, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    n = metric_total(worker)
    while n < at_least:
        assert worker.proc.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, f"{n}/{at_least} processed:\n{worker.log_tail()}"
        time.sleep(0.05)
        n = metric_total(worker)
    return n


def scored_ids(s, expected: set[str]) -> Counter[str]:
    records = read_to_end(s, "scores")
    ids = Counter(r["event_id"] for r in records)
    assert set(ids) <= expected, "a score for an event that was never sent"
    return ids


def kill_restart_and_finish(
    settings_factory, worker_factory, tmp_path, *, worst_window: bool
) -> tuple:
    # Faust's data dir under tmp_path: nothing left behind in /tmp after the test.
    s = settings_factory(data_dir=tmp_path / "faust")
    events = recent_events(N_LEADS, N_EVENTS, seed=51, dup_every=50)
    leads = {e["lead_id"] for e in events}
    first = worker_factory(s)
    feeder = Feeder(s, events)
    feeder.start()
    try:
        wait_processed(first, 3_000, timeout=120)
        # Kill only once the group has committed a good part, so the restart has offsets to
        # resume.
        deadline = time.monotonic() + 30
        while (committed := committed_total(s)) < 2_000:
            assert time.monotonic() < deadline, "no offset committed in 30 s"
            time.sleep(0.05)
        in_flight: set[str] = set()
        # Read before any freeze: a stopped worker can't answer /metrics.
        processed = metric_total(first)
        if worst_window:
            # Freeze the worker until it is caught between the Redis update of a batch and the
            # delivery of that batch's scores: the moment at-least-once is hardest to keep.
            for _attempt in range(40):
                os.kill(first.proc.pid, signal.SIGSTOP)
                time.sleep(1.0)  # produce requests already on the wire reach the broker
                published = {r["event_id"] for r in read_to_end(s, "scores")}
                in_flight = applied_ids(s.redis_url, leads) - published
                if in_flight:
                    break
                os.kill(first.proc.pid, signal.SIGCONT)
                time.sleep(0.07)
            else:
                os.kill(first.proc.pid, signal.SIGCONT)
                pytest.fail("never caught the worker between a Redis update and its delivery")
        first.proc.kill()
        first.proc.wait(10)
    finally:
        events = feeder.stop()
    assert first.proc.returncode == -signal.SIGKILL
    expected = {e["event_id"] for e in events}
    leads = {e["lead_id"] for e in events}
    if in_flight:
        # Recount now that the dead worker's last produce requests have settled, so a
        # record that reached the broker after the snapshot above isn't counted in flight.
        # (While a per-partition publisher was tried, reads here missed acknowledged records:
        # 243 in flight by the snapshot, 128 redelivered, every event scored exactly once.)
        time.sleep(1.0)
        published = {r["event_id"] for r in read_to_end(s, "scores")}
        in_flight = applied_ids(s.redis_url, leads) - published
    assert processed < len(events), "the worker finished before it was killed"

    # Same app id -> same consumer group -> resumes from the committed offsets.
    second = worker_factory(s, timeout=120)
    wait_caught_up(s, [second], timeout=150)
    assert second.proc.poll() is None
    assert_features_match_replay(second, events)
    assert applied_ids(s.redis_url, leads) == expected, "an event missing from the store"
    # Normally it re-reads only what was not committed before the kill. On the embedded
    # broker a restart has also been seen to re-read the whole topic (20,897 of 20,400 once);
    # correctness doesn't depend on it (the asserts above), so it is reported, not asserted.
    resumed = metric_total(second)
    print(f"committed before the kill: >= {committed}; the restarted worker re-read {resumed}")
    assert resumed > 0
    return s, expected, in_flight, second


def test_kill_minus_9_mid_stream_then_restart(settings_factory, worker_factory, tmp_path):
    """The worst moment: a batch is applied in Redis but its scores are not on the broker.

    The redelivered batch finds its events pending (applied, never confirmed) and scores
    them again from the features they had, so none is lost; duplicates are allowed."""
    s, expected, in_flight, second = kill_restart_and_finish(
        settings_factory, worker_factory, tmp_path, worst_window=True
    )
    assert in_flight, "the kill did not land between a Redis update and its delivery"
    ids = scored_ids(s, expected)
    duplicates = sum(ids.values()) - len(ids)
    missing = expected - set(ids)
    print(
        f"kill -9 with {len(in_flight)} events applied but unpublished; after the restart "
        f"{sum(ids.values())} score records, {duplicates} duplicates, {len(missing)} missing"
    )
    assert missing == set(), f"{len(missing)} events with no score record: {sorted(missing)[:3]}"
    assert metric_total(second, "redelivered") >= len(in_flight)


def test_kill_minus_9_then_restart_keeps_features_exact(settings_factory, worker_factory, tmp_path):
    s, expected, _in_flight, second = kill_restart_and_finish(
        settings_factory, worker_factory, tmp_path, worst_window=False
    )
    resumed = metric_total(second)
    ids = scored_ids(s, expected)
    duplicates = sum(ids.values()) - len(ids)
    print(
        f"after kill -9: {sum(ids.values())} score records for {len(expected)} events, "
        f"{duplicates} duplicates, {len(expected - set(ids))} missing; the restarted worker "
        f"re-read {resumed} events ({metric_total(second, 'duplicate')} duplicates)"
    )
    # Features and the dedupe sets are checked in kill_restart_and_finish. Score records went
    # missing here in rare runs (once 1 of 20,400; once 25 in about 50 runs with another
    # process loading a core), all among the last records of their partitions. That is what
    # a reader misses when it stops at the embedded broker's ListOffsets answer, which falls
    # short of a partition's last batch (test_topics.py), as read_to_end did; it now reads
    # to the true end, so none may be missing.
    missing = expected - set(ids)
    if missing:
        # Tells a loss from a read that stopped short: read again once the broker settled.
        time.sleep(5)
        found = missing & set(scored_ids(s, expected))
        pytest.fail(
            f"{len(missing)} events had no score record after the restart; a second read 5 s "
            f"later found {len(found)} of them (restarted worker: {resumed} events, "
            f"{metric_total(second, 'redelivered')} redelivered): {sorted(missing)[:3]}"
        )


def test_redis_pause_makes_the_worker_wait_not_fail(settings_factory, worker_factory, tmp_path):
    svc = start_redis(tmp_path)
    assert svc.proc is not None
    redis_pid = svc.proc.pid
    stopped = False
    worker: WorkerProcess | None = None
    try:
        s = settings_factory(redis_url=svc.url, data_dir=tmp_path / "faust")
        events = recent_events(150, 8_000, seed=52, dup_every=40)
        half = len(events) // 2
        worker = worker_factory(s)
        produce(s, events[:half])
        wait_processed(worker, 500, timeout=60)

        os.kill(redis_pid, signal.SIGSTOP)
        stopped = True
        time.sleep(0.5)
        frozen_at = metric_total(worker)
        produce(s, events[half:])
        time.sleep(3.5)
        # The web server shares the worker's event loop: it answers, and nothing advanced.
        assert metric_total(worker) == frozen_at, "events processed while Redis was paused"
        assert worker.proc.poll() is None, worker.log_tail()
        os.kill(redis_pid, signal.SIGCONT)
        stopped = False

        wait_processed(worker, len(events), timeout=120)
        wait_caught_up(s, [worker], timeout=60)
        assert worker.proc.poll() is None, worker.log_tail()
        assert metric_total(worker) == len(events)
        assert_features_match_replay(worker, events)
        expected = {e["event_id"] for e in events}
        ids = scored_ids(s, expected)
        assert set(ids) == expected, "events with no score record"
        assert [i for i, n in ids.items() if n > 1] == [], "scored twice with no crash"
        assert metric_total(worker, "duplicate") == len(events) - len(expected)
    finally:
        if stopped:
            os.kill(redis_pid, signal.SIGCONT)
        if worker is not None:
            worker.stop()
        svc.stop()
