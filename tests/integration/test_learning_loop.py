"""The continuous-learning loop on real services: a simulated history with concept drift
flows through Kafka into the event archive (which survives a kill -9), `retrain` promotes a
model trained after the drift and refuses the ones it should, a running worker picks up the
promotion, and `models rollback` restores the old champion.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition
from sklearn.metrics import roc_auc_score

from leadscore.cli import main
from leadscore.features.training import build_training_set
from leadscore.infra.archive import archive_files
from leadscore.infra.topics import INPUT_TOPICS, end_offsets, ensure_topics
from leadscore.jobs.history import load_events
from leadscore.model.gate import delong_paired
from leadscore.model.metrics import expected_calibration_error
from leadscore.model.registry import Registry
from leadscore.settings import Settings
from leadscore.tooling.embedded import free_port, settings_env
from leadscore.tooling.simulator import SimConfig, simulate

from .helpers import produce

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
DRIFT_DAY = 120
HISTORY_DAYS = 180
HISTORY_END_MS = 1_780_315_200_000  # 2026-06-01T12:00:00Z


@dataclass
class Archived:
    settings: Settings
    root: Path
    jsonl: Path
    sent: list[dict]
    start_ms: int
    end_ms: int
    archived_at_kill: int


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _archiver(s: Settings, root: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-P", "-m", "leadscore", "archive", "--root", str(root), *args]
    with log.open("ab") as fh:
        return subprocess.Popen(  # noqa: S603 - our own CLI
            cmd, env=settings_env(s), stdout=fh, stderr=subprocess.STDOUT
        )


def _archive_lag(s: Settings) -> int:
    tps = [TopicPartition(s.topic(t), p) for t in INPUT_TOPICS for p in range(s.topic_partitions)]
    c = Consumer(
        {**s.kafka_client_config(), "group.id": f"{s.app_id}-archive", "enable.auto.commit": False}
    )
    try:
        committed = c.committed(tps, timeout=10)
    finally:
        c.close()
    ends = end_offsets(s, [(tp.topic, tp.partition) for tp in committed])
    return sum(max(ends[(tp.topic, tp.partition)] - max(tp.offset, 0), 0) for tp in committed)


def _rows_on_disk(root: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in root.rglob("part-*.parquet"))


@pytest.fixture(scope="module")
def archived(kafka_bootstrap: str, redis_url: str, tmp_path_factory) -> Archived:
    """The drifting history produced to Kafka and archived, with a kill -9 of the archiver
    after its first files and a restart that finishes the job."""
    tmp = tmp_path_factory.mktemp("loop")
    uid = f"{time.time_ns() % 10**8:08d}"
    s = Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic_prefix=f"t{uid}.",
        app_id=f"leadscore-loop-{uid}",
        model_dir=tmp / "models",
        # Two partitions, not four: a back-fill of 180 days writes a file per source, date
        # and partition at each flush, and reading fewer files keeps the five retrainings
        # short. Several partitions are still read and committed.
        topic_partitions=2,
        # The history's calendar is fixed; the archiver's retention would delete its oldest
        # days once the clock is a retention past them.
        archive_retention_days=0,
        web_port=free_port(),
        web_host="127.0.0.1",
    )
    ensure_topics(s)
    # A fixed history, not one ending now: the simulator's days, weekdays and hours are
    # absolute, so a history ending "now" is another draw on every run, and the gate's
    # figures with it. The scenario must be the same every time it runs.
    end_ms = HISTORY_END_MS
    start_ms = end_ms - HISTORY_DAYS * DAY_MS
    history = simulate(
        SimConfig(
            leads=5000,
            events=150_000,
            seed=3,
            start_ms=start_ms,
            days=HISTORY_DAYS,
            concept_drift_day=DRIFT_DAY,
        )
    )
    jsonl = tmp / "history.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in history))
    produce(s, history, linger_ms=20)

    root = tmp / "archive"
    log = tmp / "archiver.log"
    first = _archiver(s, root, log, "--flush-events", "20000", "--flush-seconds", "2")
    deadline = time.monotonic() + 120
    while not list(root.rglob("part-*.parquet")):
        assert first.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no archive file in 120 s:\n{log.read_text()}"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = _rows_on_disk(root)

    second = _archiver(s, root, log, "--flush-events", "20000", "--idle-exit", "8")
    try:
        assert second.wait(300) == 0, log.read_text()
    finally:
        if second.poll() is None:
            second.kill()
    assert _archive_lag(s) == 0, "the archiver stopped before committing everything"
    return Archived(s, root, jsonl, history, start_ms, end_ms, at_kill)


def test_archive_holds_every_event_once_after_a_kill_9(archived: Archived) -> None:
    sent_ids = [e["event_id"] for e in archived.sent]
    assert 0 < archived.archived_at_kill < len(sent_ids), "the kill was not mid-stream"
    events = load_events(str(archived.root))
    ids = Counter(e.event_id for e in events)
    assert set(ids) == set(sent_ids)
    assert max(ids.values()) == 1
    assert len(events) == len(set(sent_ids))
    # Date partitions follow the events' own dates; every file parses.
    _, files = archive_files(str(archived.root))
    assert {Path(f).parent.name for f in files} >= {"date=" + _iso(archived.end_ms)[:10]}

    # `train --events <archive>` and `train --events <JSONL>` see the same training set.
    from_jsonl = build_training_set(load_events(archived.jsonl), horizon_ms=30 * DAY_MS)
    from_archive = build_training_set(events, horizon_ms=30 * DAY_MS)
    pd.testing.assert_frame_equal(from_jsonl.x, from_archive.x)
    assert np.array_equal(from_jsonl.y, from_archive.y)
    assert np.array_equal(from_jsonl.time_ms, from_archive.time_ms)
    assert len(from_archive) > 10_000

    # A window cut by --since/--until reads only its events.
    since, until = archived.start_ms + 30 * DAY_MS, archived.start_ms + 60 * DAY_MS
    cut = load_events(str(archived.root), since_ms=since, until_ms=until)
    want = {e.event_id for e in events if since <= e.ts_ms < until}
    assert {e.event_id for e in cut} == want and len(cut) == len(want)


def _retrain(capsys, models: Path, root: Path, *args: str) -> dict:
    capsys.readouterr()
    assert main(["retrain", "--archive", str(root), "--out", str(models), *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _ready_version(worker) -> str:
    return orjson.loads(worker.get("/ready")[1])["model_version"]


def _wait_version(worker, version: str, timeout: float = 15.0) -> float:
    t0 = time.monotonic()
    while _ready_version(worker) != version:
        assert time.monotonic() - t0 < timeout, f"worker still on {_ready_version(worker)}"
        time.sleep(0.2)
    return time.monotonic() - t0


def _check_card(models: Path, version: str) -> dict:
    """Recompute the card's figures from its stored held-out predictions."""
    d = models / version
    card = json.loads((d / "card.json").read_text())
    held = pd.read_csv(d / "holdout.csv")
    y = held["y"].to_numpy()
    for name in ("challenger", "champion", "rules"):
        if name in card["metrics"]:
            m = card["metrics"][name]
            assert m["auc"] == pytest.approx(roc_auc_score(y, held[name]), abs=1e-9)
            assert m["n"] == len(held)
    ece = expected_calibration_error(y, held["challenger"].to_numpy())
    assert (
        f"{ece:.4f}"
        in next(c for c in card["decision"]["checks"] if c["name"] == "calibration")["detail"]
    )
    test = card["decision"]["test"]
    ref = card["decision"]["reference"]
    r = delong_paired(y, held["challenger"].to_numpy(), held[ref].to_numpy())
    assert test["p_value"] == pytest.approx(r.p_value, rel=1e-6, abs=1e-12)
    assert test["diff"] == pytest.approx(r.diff, abs=1e-9)
    return card


def test_retrain_promotes_after_the_drift_and_refuses_the_rest(
    archived: Archived, worker_factory, capsys
) -> None:
    s = archived.settings.model_copy(update={"model_poll_s": 0.5})
    models, root = s.model_dir, archived.root
    end, drift = _iso(archived.end_ms), _iso(archived.start_ms + DRIFT_DAY * DAY_MS)

    # The first champion: trained before the drift, judged against the rules.
    before = _retrain(capsys, models, root, "--until", drift, "--days", "90")
    assert before["outcome"] == "promoted", before["decision"]
    assert before["decision"]["reference"] == "rules"
    worker = worker_factory(s)
    assert _ready_version(worker) == before["version"]

    # After the drift: better on the most recent moments, significantly.
    after = _retrain(capsys, models, root, "--until", end, "--days", "90")
    assert after["outcome"] == "promoted", after["decision"]
    card = _check_card(models, after["version"])
    assert card["decision"]["reference"] == "champion"
    assert card["champion"] == before["version"]
    assert card["decision"]["test"]["p_value"] < 0.05
    assert after["auc"] - after["champion_auc"] >= 0.005
    swap_s = _wait_version(worker, after["version"])

    refused = {
        # The same data as the champion, another seed: no real gain.
        "same data": _retrain(capsys, models, root, "--until", end, "--days", "90", "--seed", "8"),
        # Two days of labelled moments: too few leads and conversions; nothing is trained.
        "too small": _retrain(capsys, models, root, "--until", end, "--days", "32"),
        # Trained on data from before the drift, judged on today's moments.
        "before the drift": _retrain(
            capsys, models, root, "--until", end, "--days", "150", "--train-until", drift
        ),
    }
    for name, rep in refused.items():
        assert rep["outcome"] == "rejected", (name, rep["decision"])
    assert refused["too small"]["version"] is None
    assert refused["too small"]["decision"]["reason"].startswith("data_sufficiency")
    for name in ("same data", "before the drift"):
        card = _check_card(models, refused[name]["version"])
        assert card["promoted"] is False and card["champion"] == after["version"]
        assert "auc_gain" in card["decision"]["reason"], name
    reg = Registry(models)
    assert reg.champion() == after["version"]
    outcomes = [d["outcome"] for d in reg.decisions()]
    assert outcomes == ["promoted", "promoted", "rejected", "rejected", "rejected"]

    # `models show` gives the card; `models rollback` restores the champion before.
    capsys.readouterr()
    assert main(["models", "show", after["version"], "--model-dir", str(models)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["card"]["outcome"] == "promoted"
    assert main(["models", "rollback", "--model-dir", str(models)]) == 0
    assert reg.champion() == before["version"]
    _wait_version(worker, before["version"])
    print(f"worker swapped to the promoted model in {swap_s:.1f} s")
