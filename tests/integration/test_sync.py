"""The CRM sync consumer against a real broker and a real PostgreSQL."""

from __future__ import annotations

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from leadscore.integrations.sync import JsonlSink, PostgresSink, run_sync

from .helpers import PG_DSN, pg_available

pytestmark = pytest.mark.integration


def record(lead: str, score: float, scored_at: str) -> dict:
    return {
        "lead_id": lead,
        "score": score,
        "score_100": round(score * 100),
        "tier": "hot" if score > 0.5 else "cold",
        "model_version": "rules-v1",
        "reasons": [{"feature": "web_page_views_7d", "value": 3, "contribution": 1.5}],
        "event_id": f"e-{lead}-{scored_at}",
        "event_ts": scored_at,
        "scored_at": scored_at,
    }


def produce(s, items) -> None:
    p = Producer(s.kafka_client_config())
    for lead, rec in items:
        p.produce(
            s.topic("scores"), key=lead.encode(), value=None if rec is None else orjson.dumps(rec)
        )
    assert p.flush(15) == 0


def test_sync_upserts_latest_score_and_deletes_erased_leads(settings_factory, tmp_path):
    if not pg_available():
        pytest.skip(f"no PostgreSQL at {PG_DSN} (the JSONL sink test still runs)")
    s = settings_factory()
    lead_a, lead_b = f"{s.app_id}-a", f"{s.app_id}-b"
    produce(
        s,
        [
            (lead_a, record(lead_a, 0.2, "2026-11-27T10:00:00.000Z")),
            (lead_a, record(lead_a, 0.9, "2026-11-27T10:05:00.000Z")),
            (lead_b, record(lead_b, 0.4, "2026-11-27T10:00:00.000Z")),
            (lead_b, None),
        ],
    )
    n = run_sync(s, PostgresSink(PG_DSN), max_records=4, idle_exit_s=60)
    assert n == 4
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            "SELECT lead_id, score, tier, reasons FROM lead_scores WHERE lead_id IN (%s, %s)",
            (lead_a, lead_b),
        ).fetchall()
    assert rows == [(lead_a, 0.9, "hot", record(lead_a, 0.9, "x")["reasons"])]
    # An older record replayed later doesn't regress the lead.
    produce(s, [(lead_a, record(lead_a, 0.1, "2026-11-27T09:00:00.000Z"))])
    assert run_sync(s, PostgresSink(PG_DSN), max_records=1, idle_exit_s=60) == 1
    with psycopg.connect(PG_DSN) as conn:
        (score,) = conn.execute(
            "SELECT score FROM lead_scores WHERE lead_id = %s", (lead_a,)
        ).fetchone()
    assert score == 0.9


def test_sync_to_jsonl_writes_every_record_once(settings_factory, tmp_path):
    s = settings_factory()
    items = [(f"L{i}", record(f"L{i}", i / 10, "2026-11-27T10:00:00.000Z")) for i in range(6)]
    produce(s, [*items, ("L0", None)])
    out = tmp_path / "scores.jsonl"
    assert run_sync(s, JsonlSink(out), max_records=7, idle_exit_s=60) == 7
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [x["lead_id"] for x in lines] and len(lines) == 7
    assert {"lead_id": "L0", "deleted": True} in lines


def test_idle_exit_counts_from_partition_assignment(settings_factory, tmp_path):
    """A short --idle-exit used to expire while the consumer group was still joining (longer
    than 2 s on the embedded broker): the sync stopped having read nothing."""
    s = settings_factory()
    items = [(f"L{i}", record(f"L{i}", i / 10, "2026-11-27T10:00:00.000Z")) for i in range(4)]
    produce(s, items)
    out = tmp_path / "scores.jsonl"
    assert run_sync(s, JsonlSink(out), idle_exit_s=2) == 4
    assert len(out.read_bytes().splitlines()) == 4


def test_sync_command_serves_its_metrics_and_prints_json(settings_factory, tmp_path):
    import subprocess
    import sys
    import time
    import urllib.request

    from leadscore.tooling.embedded import free_port, settings_env

    s = settings_factory(sync_metrics_port=free_port(), sync_metrics_host="127.0.0.1")
    produce(s, [(f"L{i}", record(f"L{i}", i / 10, "2026-11-27T10:00:00.000Z")) for i in range(4)])
    produce(s, [("L0", None)])
    out = tmp_path / "scores.jsonl"
    cmd = [sys.executable, "-P", "-m", "leadscore", "sync", "--sink", f"jsonl://{out}"]
    proc = subprocess.Popen(
        [*cmd, "--idle-exit", "6", "--json"],
        env=settings_env(s),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{s.sync_metrics_port}/metrics"
    seen = ""
    deadline = time.monotonic() + 60
    while 'leadscore_sync_records_total{kind="tombstone"} 1.0' not in seen:
        assert proc.poll() is None and time.monotonic() < deadline, seen[-2000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
                seen = r.read().decode()
        except OSError:
            pass
        time.sleep(0.2)
    assert 'leadscore_sync_records_total{kind="score"} 4.0' in seen
    assert "leadscore_sync_last_success_timestamp_seconds" in seen
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert orjson.loads(stdout) == {
        "records": 5,
        "sink": f"jsonl://{out}",
        "dead_lettered_batches": 0,
    }


class _Webhook:
    """A CRM endpoint on a local port: answers 503 to the first ``flaky`` tries of each batch
    (by its Idempotency-Key), then 200; records what it acknowledged."""

    def __init__(self, flaky: int) -> None:
        import http.server
        import threading

        hook = self
        self.flaky = flaky
        self.tries: dict[str, int] = {}
        self.acked: list[str] = []
        self.records: list[dict] = []
        self.auth: set[str | None] = set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                hook.auth.add(self.headers.get("Authorization"))
                n = hook.tries[key] = hook.tries.get(key, 0) + 1
                if n <= hook.flaky:
                    self.send_response(503)
                    self.end_headers()
                    return
                if key not in hook.acked:
                    hook.acked.append(key)
                    hook.records.extend(orjson.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/scores"

    def close(self) -> None:
        self.server.shutdown()


def _sink(url: str, tmp_path, tries: int):
    from leadscore.integrations.webhook import WebhookSink

    return WebhookSink(
        url,
        authorization="Bearer t0ken",
        tries=tries,
        backoff_s=0.01,
        dead_letter=tmp_path / "dead.jsonl",
    )


def test_webhook_retries_a_503_and_acknowledges_each_batch_once(settings_factory, tmp_path):
    s = settings_factory()
    items = [(f"L{i}", record(f"L{i}", i / 100, "2026-11-27T10:00:00.000Z")) for i in range(40)]
    produce(s, [*items, ("L0", None)])
    hook = _Webhook(flaky=3)
    try:
        sink = _sink(hook.url, tmp_path, tries=5)
        assert run_sync(s, sink, max_records=41, idle_exit_s=30, batch_size=10) == 41
    finally:
        hook.close()
    assert hook.acked and len(hook.acked) == len(set(hook.acked))
    assert all(hook.tries[k] == 4 for k in hook.acked)  # three 503s, then taken
    assert sorted(r["lead_id"] for r in hook.records if "score" in r) == sorted(k for k, _ in items)
    assert {"lead_id": "L0", "deleted": True} in hook.records
    assert hook.auth == {"Bearer t0ken"}
    assert not (tmp_path / "dead.jsonl").exists()


def test_a_webhook_that_always_fails_ends_in_the_dead_letter_file(settings_factory, tmp_path):
    s = settings_factory()
    items = [(f"L{i}", record(f"L{i}", i / 100, "2026-11-27T10:00:00.000Z")) for i in range(12)]
    produce(s, items)
    hook = _Webhook(flaky=10**9)
    try:
        sink = _sink(hook.url, tmp_path, tries=3)
        # The sync goes on past every failed batch (and commits), rather than stop or stall.
        assert run_sync(s, sink, max_records=12, idle_exit_s=30, batch_size=5) == 12
    finally:
        hook.close()
    lines = [orjson.loads(x) for x in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert sorted(r["lead_id"] for line in lines for r in line["records"]) == sorted(
        k for k, _ in items
    )
    assert all(line["error"].startswith("HTTP 503") for line in lines)
    assert all(hook.tries[line["batch"]] == 3 for line in lines)


class _CrashAfter:
    """A PostgreSQL sink that dies after writing ``batches`` batches, before their offsets
    are committed: the restarted sync reads those records again (redelivery)."""

    def __init__(self, sink: PostgresSink, batches: int) -> None:
        self.sink, self.left = sink, batches

    def write(self, updates) -> None:
        self.sink.write(updates)
        self.left -= 1
        if self.left == 0:
            raise RuntimeError("crash after the write, before the commit")

    def close(self) -> None:
        self.sink.close()


def test_postgres_holds_the_latest_score_after_a_crash_mid_stream(settings_factory):
    if not pg_available():
        pytest.skip(f"no PostgreSQL at {PG_DSN} (the JSONL sink test still runs)")
    from leadscore.integrations.sync_metrics import SyncMetrics

    s = settings_factory()
    leads = [f"{s.app_id}-{i}" for i in range(40)]
    items = []
    for minute in range(10):  # each lead scored ten times, later records newer
        for i, lead in enumerate(leads):
            ts = f"2026-11-27T10:{minute:02d}:{i:02d}.000Z"
            items.append((lead, record(lead, (minute * 40 + i) / 400, ts)))
    produce(s, items)
    with pytest.raises(RuntimeError, match="crash after the write"):
        run_sync(s, _CrashAfter(PostgresSink(PG_DSN), batches=3), batch_size=50, idle_exit_s=60)
    # A stale record arrives out of order after the crash: it must not win either.
    produce(s, [(leads[0], record(leads[0], 0.001, "2026-11-27T09:00:00.000Z"))])
    metrics = SyncMetrics.create()
    n = run_sync(s, PostgresSink(PG_DSN), batch_size=50, idle_exit_s=3, metrics=metrics)
    assert n >= len(items) + 1 - 3 * 50  # the crashed batches' records are read again
    latest = {lead: rec for lead, rec in items}  # the last record of each lead is its newest
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            "SELECT lead_id, score, scored_at FROM lead_scores WHERE lead_id LIKE %s",
            (f"{s.app_id}-%",),
        ).fetchall()
    assert {lead: score for lead, score, _ in rows} == {
        lead: rec["score"] for lead, rec in latest.items()
    }
    assert metrics.records.labels(kind="score")._value.get() == n
