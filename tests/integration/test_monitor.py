"""The monitor on real services: a simulated history with outcomes goes through a worker;
the monitor's online AUC per model version must equal the AUC the test computes itself
from the score records and the events it produced; a real Prometheus scrapes the worker and
the monitor, and every dashboard query and alert rule finds its metrics."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from leadscore.features.definitions import DAY_MS
from leadscore.jobs.train_events import train_from_event_list
from leadscore.schemas.validation import parse_ts_ms
from leadscore.tooling.embedded import free_port, settings_env
from leadscore.tooling.simulator import SimConfig, simulate, simulated_events
from tests.integration.helpers import produce, read_to_end, wait_caught_up
from tests.integration.monitoring import scrape, start_monitor, tagged, total, value
from tests.integration.prom import dashboard_queries, start_prometheus
from tests.unit.deploy.test_alerts import alert_rules, referenced

ROOT = Path(__file__).resolve().parents[2]
HISTORY_END_MS = 1_780_315_200_000  # 2026-06-01T12:00Z: a fixed calendar, the same every run
HORIZON_DAYS = 7
K = 6  # moments per lead, as training from events samples


def _key(lead_id: str, event_id: str) -> int:
    """The documented sampling key (leadscore.monitor.book.moment_key), recomputed here."""
    return int.from_bytes(hashlib.sha256(f"{lead_id}\x00{event_id}".encode()).digest()[:8], "big")


def _expected_pairs(
    records: list[dict], events: list[dict], version: str, horizon_ms: int
) -> tuple[list[tuple[float, int]], int, int]:
    """(score, label) of the matured sampled moments, the number of pending sampled moments,
    and the watermark, built from the records read back and the events produced."""
    converted: dict[str, int] = {}
    closed: dict[str, int] = {}
    for e in events:
        if e["source"] == "crm" and e["type"] in ("converted", "disqualified"):
            t = parse_ts_ms(e["ts"])
            assert t is not None
            closed[e["lead_id"]] = min(closed.get(e["lead_id"], t), t)
            if e["type"] == "converted":
                converted[e["lead_id"]] = min(converted.get(e["lead_id"], t), t)
    moments: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    watermark = 0
    for r in records:
        t = parse_ts_ms(r["event_ts"])
        assert t is not None
        watermark = max(watermark, t)
        if r["model_version"] != version:
            continue
        if r["lead_id"] in closed and t >= closed[r["lead_id"]]:
            continue  # at or after the lead's outcome: not a scoring moment
        moments[r["lead_id"]][r["event_id"]] = (t, r["score"])
    until = watermark - horizon_ms
    pairs: list[tuple[float, int]] = []
    pending = 0
    for lead, ms in moments.items():
        matured = sorted(((_key(lead, e), t, s) for e, (t, s) in ms.items() if t <= until))[:K]
        c = converted.get(lead)
        pairs += [(s, int(c is not None and t < c <= t + horizon_ms)) for _k, t, s in matured]
        everyone = sorted(((_key(lead, e), t) for e, (t, _s) in ms.items()))[:K]
        pending += sum(1 for _k, t in everyone if t > until)
    return pairs, pending, watermark


def test_online_auc_equals_offline_and_prometheus_reads_every_panel(
    settings_factory, worker_factory, tmp_path
):
    tag = f"m{uuid.uuid4().hex[:6]}-"
    days = 30
    start = HISTORY_END_MS - days * DAY_MS
    # The model learns from one history; another one (another seed) goes through the worker.
    train_on = simulated_events(
        SimConfig(leads=600, events=15000, seed=41, start_ms=start, days=days)
    )
    replayed = tagged(
        simulate(SimConfig(leads=500, events=12000, seed=42, start_ms=start, days=days)), tag
    )
    s = settings_factory(
        monitor_port=free_port(),
        monitor_state_dir=tmp_path / "monitor",
        monitor_interval_s=1.0,
        monitor_window_days=365.0,
        monitor_min_group=30,
    )
    report = train_from_event_list(
        train_on, horizon_ms=HORIZON_DAYS * DAY_MS, out_dir=s.model_dir, force=True
    )
    version = report["version"]
    worker = worker_factory(s)
    s = s.model_copy(update={"monitor_scrape": f"{worker.url}/metrics"})
    mon = start_monitor(s, tmp_path / "monitor.log")
    try:
        produce(s, replayed, linger_ms=20)
        wait_caught_up(s, [worker], timeout=120)
        records = read_to_end(s, "scores")
        crm = sum(1 for e in replayed if e["source"] == "crm")
        m = mon.wait(
            lambda m: (
                total(m, "leadscore_monitor_records_total", topic=s.topic("scores")) >= len(records)
                and total(m, "leadscore_monitor_records_total", topic=s.topic("crm")) >= crm
            ),
            "every score record and CRM event read",
        )
        pairs, pending, watermark = _expected_pairs(
            records, replayed, version, HORIZON_DAYS * DAY_MS
        )
        scores = np.asarray([p for p, _ in pairs])
        labels = np.asarray([y for _, y in pairs])
        assert 200 < len(pairs) and 10 < labels.sum() < len(pairs) and pending > 50
        expected = roc_auc_score(labels, scores)
        got = value(m, "leadscore_online_roc_auc", model_version=version)
        assert got is not None, sorted(k for k in m if "online" in k[0])
        assert got == pytest.approx(expected, abs=1e-12)
        assert value(m, "leadscore_online_moments", model_version=version, state="matured") == len(
            pairs
        )
        assert value(m, "leadscore_online_moments", model_version=version, state="positive") == int(
            labels.sum()
        )
        assert (
            value(m, "leadscore_online_moments", model_version=version, state="pending") == pending
        )
        # Counting the pending moments as negatives would give another figure: the equality
        # above is not one any labelling would pass.
        assert (
            abs(
                roc_auc_score(
                    np.r_[labels, np.zeros(pending)], np.r_[scores, np.full(pending, scores.mean())]
                )
                - expected
            )
            > 1e-6
        )  # noqa: E501
        assert value(m, "leadscore_monitor_watermark_timestamp_seconds") == watermark / 1000
        est = value(m, "leadscore_estimated_roc_auc", model_version=version)
        assert est is not None and 0.5 < est < 1.0
        assert total(m, "leadscore_fairness_ratio", model_version=version, metric="hot_share") > 0
        # The enrichment firmographics are read too: the revenue band is a default segment.
        firmo = {"model_version": version, "attribute": "firmo_revenue_band"}
        firmographics = sum(1 for e in replayed if e["type"] == "firmographics")
        assert firmographics > 100, "the simulator's history has no firmographics to segment by"
        m = mon.wait(
            lambda m: (
                total(m, "leadscore_monitor_records_total", topic=s.topic("enrichment"))
                >= firmographics
                and total(m, "leadscore_fairness_ratio", metric="hot_share", **firmo) > 0
            ),
            "fairness per revenue band, from leads.enrichment",
        )
        assert value(m, "leadscore_drift_window_vectors", model_version=version)

        _check_report_commands(s, tmp_path, expected)
        _check_prometheus(tmp_path, worker.url, mon.url)
    finally:
        mon.stop()


def _check_report_commands(s, tmp_path: Path, expected_auc: float) -> None:
    env = settings_env(s)
    run = [sys.executable, "-P", "-m", "leadscore", "monitor", "report"]
    out = subprocess.run([*run, "--json"], env=env, capture_output=True, check=True, timeout=60)
    rep = json.loads(out.stdout)
    (v,) = rep["versions"]
    assert rep["versions"][v]["performance"]["roc_auc"] == pytest.approx(expected_auc, abs=1e-12)
    txt = subprocess.run(run, env=env, capture_output=True, check=True, timeout=60).stdout.decode()
    assert "ROC AUC" in txt and "ESTIMATED ROC AUC" in txt
    page = tmp_path / "monitor.html"
    subprocess.run(
        [*run, "--html", str(page)], env=env, capture_output=True, check=True, timeout=60
    )
    html = page.read_text()
    assert html.count("<svg") >= 4 and ("<polyline" in html or "<circle" in html)


def _check_prometheus(tmp_path: Path, worker_url: str, monitor_url: str) -> None:
    targets = {
        "worker": [worker_url.removeprefix("http://")],
        "monitor": [monitor_url.removeprefix("http://").removesuffix("/metrics")],
    }
    rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
    with start_prometheus(tmp_path, targets, rules) as prom:
        prom.wait_for('count(up{job=~"worker|monitor"} == 1) == 2', timeout=30)
        # rate() over a range needs two scrapes of every series: asked until every panel has
        # data (a scrape a second), for as long as the fixed 3 s wait this replaces gave.
        queries = dashboard_queries(ROOT / "deploy/grafana/dashboards/leadscore.json")
        deadline = time.monotonic() + 3.0
        while True:
            empty = [f"{title}: {expr}" for title, expr in queries if not prom.query(expr)]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        live = set()
        for url in (f"{worker_url}/metrics", monitor_url):
            live |= {name for name, _labels in scrape(url)}
        assert empty == [], "dashboard queries without data:\n" + "\n".join(empty)
        used: set[str] = set()
        for _title, expr in dashboard_queries(ROOT / "deploy/grafana/dashboards/leadscore.json"):
            used |= referenced(expr)[0]
        for rule in alert_rules():
            used |= referenced(rule["expr"])[0]
        scraped = {_base(n) for n in live}
        missing = sorted(n for n in used - {"up"} if n not in scraped)
        assert missing == [], f"metrics the dashboard or rules use but no target exports: {missing}"


def _base(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_created"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
