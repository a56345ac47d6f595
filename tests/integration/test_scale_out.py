"""Scaling out: two workers in one consumer group split the partitions, a rebalance in the
middle of the stream loses nothing, and the result equals what one worker computes."""

from __future__ import annotations

import random
import string
import time

import pytest
from redis.cluster import key_slot

from leadscore.features.store import lead_keys
from leadscore.tooling.embedded import free_port

from .helpers import (
    assert_features_match_replay,
    metric_total,
    produce,
    read_to_end,
    recent_events,
    wait_caught_up,
)

pytestmark = pytest.mark.integration


def test_two_workers_share_partitions_and_match_one(settings_factory, worker_factory, tmp_path):
    # Faust's data dir under tmp_path: nothing left behind in /tmp after the test.
    s = settings_factory(topic_partitions=4, data_dir=tmp_path / "faust-a")
    events = recent_events(200, 12_000, seed=61, dup_every=50)
    expected = {e["event_id"] for e in events}
    a = worker_factory(s)
    produce(s, events[:5_000])
    deadline = time.monotonic() + 60
    while metric_total(a) < 1_000:
        assert time.monotonic() < deadline, a.log_tail()
        time.sleep(0.1)

    s_b = s.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / "faust-b"})
    b = worker_factory(s_b, wait_ready=False)
    # B joins (and the group rebalances) while these trickle in ...
    produce(s, events[5_000:9_000], rate=250)
    deadline = time.monotonic() + 90
    while not _ready(b):
        assert b.proc.poll() is None and time.monotonic() < deadline, b.log_tail()
        time.sleep(0.3)
    # ... and these arrive once both own partitions.
    produce(s, events[9_000:])
    wait_caught_up(s, [a, b], timeout=150)

    assert a.proc.poll() is None, a.log_tail()
    assert b.proc.poll() is None, b.log_tail()
    scored_a, scored_b = metric_total(a, "scored"), metric_total(b, "scored")
    print(f"worker A scored {scored_a}, worker B scored {scored_b}")
    assert scored_a > 0, "worker A scored nothing"
    assert scored_b > 0, "worker B got no partition or scored nothing"
    records = read_to_end(s, "scores")
    ids = {r["event_id"] for r in records}
    assert sorted(expected - ids) == [], "events with no score record"
    assert ids <= expected
    assert scored_a + scored_b == len(records), "score records the workers did not count"
    # State lives in Redis: either worker serves every lead, with the features one worker
    # (the offline replay) computes.
    assert_features_match_replay(a, events)
    assert_features_match_replay(b, events)


def _ready(worker) -> bool:
    try:
        return worker.get("/ready")[0] == 200
    except OSError:
        return False


def _random_lead_ids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_:.{}é 漢"
    ids = ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(n)]
    ids += ["{a}", "a{b}c", "a}b", "a{b", "x{}", "{}", "{", "x}}{", "L-000123"]
    return ids


@pytest.mark.parametrize(
    "lead_ids",
    [
        pytest.param(_random_lead_ids(2_000, seed=7), id="random-with-braces"),
        pytest.param(
            ["}", "}x", "}{x}", "}L-1"],
            id="leading-close-brace",
        ),
    ],
)
def test_lead_keys_share_a_cluster_slot(lead_ids):
    spread = {
        lead: slots
        for lead in lead_ids
        if len(slots := {key_slot(k.encode()) for k in lead_keys(lead)}) != 1
    }
    assert spread == {}
