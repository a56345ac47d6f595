"""Issue 22: a registry corrupted under a running worker (as a disk or a hand edit would, not
through ``models promote``) never stops it: it keeps scoring with the last good model and
``/ready`` says degraded; a worker started on such a champion falls back and starts."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from leadscore.model.registry import CHAMPION_FILE
from leadscore.schemas.validation import format_ts_ms
from tests.fakes import corrupted_copy, meta, save_worker_model, truncate

from .helpers import WorkerProcess, produce, read_to_end, wait_caught_up

pytestmark = pytest.mark.integration

CASES = {
    "lgbm-cut-50": truncate(0.5),
    "lgbm-cut-99": truncate(0.99),
    "lgbm-cut-50-resummed": truncate(0.5, resum=True),
    "lgbm-cut-99-resummed": truncate(0.99, resum=True),
    "lgbm-meta-list": meta([]),
}


def events(n: int, tag: str) -> list[dict]:
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"{tag}-{i}",
            "lead_id": f"{tag}-L{i % 5}",
            "source": "web",
            "type": "pricing_view",
            "ts": format_ts_ms(now - 1_000 + i),
            "attributes": {},
        }
        for i in range(n)
    ]


def wait_degraded(worker: WorkerProcess, mentions: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, worker.log_tail()
        status, raw = worker.get("/ready")
        body = orjson.loads(raw)
        if body.get("status") == "degraded" and mentions in body.get("model_problem", ""):
            assert status == 200, body
            return body
        time.sleep(0.2)
    pytest.fail(f"/ready never reported {mentions!r}: {body}\n{worker.log_tail()}")


def test_a_corrupted_registry_never_stops_the_worker(settings_factory, worker_factory):
    s = settings_factory(model_poll_s=0.3)
    save_worker_model(s.model_dir, "lgbm-good")
    worker = worker_factory(s)
    assert orjson.loads(worker.get("/ready")[1])["model_version"] == "lgbm-good"
    tag = uuid.uuid4().hex[:8]
    sent: list[dict] = []
    for n, (version, corrupt) in enumerate(CASES.items()):
        corrupted_copy(s.model_dir, "lgbm-good", version, corrupt)
        (s.model_dir / CHAMPION_FILE).write_text(version + "\n")
        body = wait_degraded(worker, version)
        assert body["model_version"] == "lgbm-good"
        batch = events(5, f"{tag}-{n}")
        produce(s, batch)
        sent += batch
    (s.model_dir / CHAMPION_FILE).write_bytes(b"\xff\xfe lgbm-good\n")
    wait_degraded(worker, "unreadable")
    batch = events(5, f"{tag}-utf8")
    produce(s, batch)
    sent += batch

    wait_caught_up(s, [worker], timeout=60)
    records = read_to_end(s, "scores")
    assert {r["event_id"] for r in records} == {e["event_id"] for e in sent}
    assert {r["model_version"] for r in records} == {"lgbm-good"}
    metrics = worker.get("/metrics")[1].decode()
    assert f"leadscore_model_load_failures_total {float(len(CASES))}" in metrics
    assert "leadscore_model_degraded 1.0" in metrics
    assert worker.proc.poll() is None

    # A worker that starts on a broken champion falls back to the newest valid version.
    worker.stop()
    (s.model_dir / CHAMPION_FILE).write_text("lgbm-cut-99-resummed\n")
    second = worker_factory(s)
    body = orjson.loads(second.get("/ready")[1])
    assert body["model_version"] == "lgbm-good" and body["status"] == "degraded"
    assert "lgbm-cut-99-resummed" in body["model_problem"]
