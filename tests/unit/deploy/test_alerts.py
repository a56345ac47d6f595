"""The Prometheus alerting rules and the Grafana dashboard: promtool checks and unit-tests the
rules, and every metric and label they name must be one the worker or the monitor exports
(METRICS below is that contract), so a typo fails here rather than staying silent in
production. promtool comes with the Debian package `prometheus`; without it these tests fail."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.prom import dashboard_queries

ROOT = Path(__file__).resolve().parents[3]
PROM_DIR = ROOT / "deploy/prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/leadscore.json"
RUNBOOK = ROOT / "docs/runbook.md"

#: The metric contract: name -> (kind, labels). Worker (job worker, :6066) then monitor
#: (job monitor, :6067). Prometheus adds job and instance to every series.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split()))
    for name, kind, labels in [
        # worker: counters
        ("leadscore_events_total", "counter", "source outcome"),
        ("leadscore_dlq_total", "counter", "code"),
        ("leadscore_scores_total", "counter", "tier"),
        ("leadscore_alerts_total", "counter", "to_tier"),
        ("leadscore_batch_failures_total", "counter", ""),
        ("leadscore_score_save_failures_total", "counter", ""),
        ("leadscore_model_errors_total", "counter", "version"),
        ("leadscore_model_load_failures_total", "counter", ""),
        ("leadscore_publish_failures_total", "counter", ""),
        ("leadscore_model_swaps_total", "counter", ""),
        ("leadscore_redis_errors_total", "counter", ""),
        ("leadscore_redis_retries_total", "counter", ""),
        ("leadscore_feature_bin_total", "counter", "model_version feature bin"),
        ("leadscore_score_bin_total", "counter", "model_version bin"),
        # worker: histograms
        ("leadscore_score_latency_seconds", "histogram", ""),
        ("leadscore_event_to_score_seconds", "histogram", ""),
        ("leadscore_consume_lag_seconds", "histogram", ""),
        ("leadscore_stage_seconds", "histogram", "stage"),
        ("leadscore_batch_events", "histogram", ""),
        # worker: gauges
        ("leadscore_model_info", "gauge", "version"),
        ("leadscore_model_degraded", "gauge", ""),
        ("leadscore_feature_state_lost", "gauge", ""),
        ("leadscore_redis_up", "gauge", ""),
        ("leadscore_ready", "gauge", ""),
        ("leadscore_last_event_timestamp_seconds", "gauge", "source"),
        ("leadscore_model_created_timestamp_seconds", "gauge", "version"),
        # process collectors (worker and monitor)
        ("process_resident_memory_bytes", "gauge", ""),
        ("process_cpu_seconds_total", "counter", ""),
        ("process_open_fds", "gauge", ""),
        ("python_gc_collections_total", "counter", "generation"),
        # monitor
        ("leadscore_online_roc_auc", "gauge", "model_version"),
        ("leadscore_online_pr_auc", "gauge", "model_version"),
        ("leadscore_online_brier", "gauge", "model_version"),
        ("leadscore_online_ece", "gauge", "model_version"),
        ("leadscore_online_top_decile_lift", "gauge", "model_version"),
        ("leadscore_online_conversion_rate", "gauge", "model_version tier"),
        ("leadscore_online_moments", "gauge", "model_version state"),
        ("leadscore_estimated_roc_auc", "gauge", "model_version"),
        ("leadscore_estimated_brier", "gauge", "model_version"),
        ("leadscore_estimated_conversion_rate", "gauge", "model_version"),
        ("leadscore_model_training_roc_auc", "gauge", "model_version"),
        ("leadscore_drift_psi", "gauge", "model_version feature"),
        ("leadscore_drift_js_distance", "gauge", "model_version feature"),
        ("leadscore_drift_psi_threshold", "gauge", "model_version feature"),
        ("leadscore_drift_alarm", "gauge", "model_version feature"),
        ("leadscore_drift_alarms", "gauge", "model_version"),
        ("leadscore_drift_window_vectors", "gauge", "model_version"),
        ("leadscore_fairness_ratio", "gauge", "model_version attribute segment metric"),
        ("leadscore_fairness_ratio_low", "gauge", "model_version attribute segment metric"),
        ("leadscore_fairness_ratio_high", "gauge", "model_version attribute segment metric"),
        ("leadscore_fairness_calibration_gap", "gauge", "model_version attribute segment"),
        ("leadscore_consumer_lag", "gauge", "group topic partition"),
        ("leadscore_monitor_last_update_timestamp_seconds", "gauge", ""),
        ("leadscore_monitor_watermark_timestamp_seconds", "gauge", ""),
        # Prometheus' own, per target
        ("up", "gauge", ""),
    ]
}
TARGET_LABELS = frozenset({"job", "instance"})
SEVERITIES = {"critical", "warning", "info"}

_METRIC = re.compile(r"\b(leadscore_[a-z_]+|process_[a-z_]+|python_gc_[a-z_]+|up)\b")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"\b([a-z_:][a-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def promtool() -> str:
    path = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(path).exists():
        pytest.fail(
            "promtool not found: apt-get install prometheus (the Debian package ships it)",
            pytrace=False,
        )
    return path


def run_promtool(*args: str) -> str:
    proc = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=300, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(all_panels(panel.get("panels") or []))
    return out


def metric_name(name: str) -> str:
    """A histogram's series names (_bucket, _sum, _count) map to the histogram."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("",))[0] == "histogram":
            return base
    return name


def referenced(expr: str) -> tuple[set[str], list[tuple[str, set[str]]], set[str]]:
    """(metric names, (metric, matcher labels) per selector, grouping labels) of ``expr``."""
    strings: list[str] = []

    def hide(m: re.Match[str]) -> str:
        strings.append(m.group(0))
        return f'"S{len(strings) - 1}"'

    bare = _STRING.sub(hide, expr)  # so that label values can't look like names
    names = {metric_name(n) for n in _METRIC.findall(bare)}
    selectors = [
        (metric_name(name), set(_MATCHER_LABEL.findall(body)))
        for name, body in _SELECTOR.findall(bare)
    ]
    grouping = {
        label.strip()
        for labels in _GROUPING.findall(bare)
        for label in labels.split(",")
        if label.strip()
    }
    return names, selectors, grouping


def contract_problems(source: str, expr: str) -> list[str]:
    names, selectors, grouping = referenced(expr)
    problems = [f"{source}: unknown metric {n} in {expr!r}" for n in sorted(names - set(METRICS))]
    for name, labels in selectors:
        if name not in METRICS:
            continue  # a function or an unknown name, reported above
        known = METRICS[name][1] | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        problems += [f"{source}: {name} has no label {lab!r}" for lab in sorted(labels - known)]
    in_expr = set().union(TARGET_LABELS, {"le"}, *(METRICS[n][1] for n in names if n in METRICS))
    problems += [
        f"{source}: grouping label {lab!r} is on no metric of {expr!r}"
        for lab in sorted(grouping - in_expr)
    ]
    return problems


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", str(text))
    assert parts and "".join(a + b for a, b in parts) == str(text), f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# ------------------------------------------------------------------ promtool


def test_promtool_accepts_the_rules():
    out = run_promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in out


def test_the_rules_unit_tests_pass():
    # rule_files in the test file are relative to it
    out = run_promtool("test", "rules", str(ALERTS_TEST))
    assert "SUCCESS" in out


def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    config["rule_files"] = [str(tmp_path / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = run_promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS" in out


def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each panel query, its Grafana variables substituted, as a recording rule: promtool
    parses the PromQL."""
    queries = dashboard_queries(DASHBOARD)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_title, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = run_promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(queries)} rules found" in out


# ------------------------------------------------------------------ the metric contract


def test_alerts_name_only_contract_metrics_and_labels():
    problems = []
    for rule in alert_rules():
        problems += contract_problems(rule["alert"], rule["expr"])
    assert problems == []


def test_dashboard_names_only_contract_metrics_and_labels():
    problems = []
    for title, expr in dashboard_queries(DASHBOARD):
        problems += contract_problems(title, expr)
    for var in dashboard()["templating"]["list"]:
        problems += contract_problems(f"variable {var['name']}", var.get("definition", ""))
    assert problems == []


def test_the_contract_check_catches_typos():
    assert contract_problems("t", "rate(leadscore_event_total[5m])")
    assert contract_problems("t", 'leadscore_drift_psi{model_verison="v1"}')
    assert contract_problems("t", "sum by (tier) (rate(leadscore_alerts_total[5m]))")
    assert contract_problems("t", "histogram_quantile(0.9, rate(leadscore_stage_bucket[5m]))")
    assert not contract_problems(
        "t",
        "histogram_quantile(0.9, sum by (le, stage) (rate(leadscore_stage_seconds_bucket[5m]))) "
        '+ on () group_left () up{job="worker", instance=~"leadscore_x.*"}',
    )


# ------------------------------------------------------------------ alerts


def test_every_alert_has_severity_summary_and_its_runbook_section():
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "LeadscoreNoEvents",
        "LeadscoreConsumerLagGrowing",
        "LeadscoreDLQRate",
        "LeadscoreRedisErrors",
        "LeadscoreWorkerNotReady",
        "LeadscoreDriftAlarm",
        "LeadscoreOnlineAUCDrop",
        "LeadscoreCalibrationError",
        "LeadscoreFairnessRatio",
        "LeadscoreTierChangeFlood",
        "LeadscoreModelStale",
    } <= names
    headings = set(re.findall(r"^## (\w+)\s*$", RUNBOOK.read_text(), flags=re.M))
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name in headings, f"docs/runbook.md has no '## {name}' section"


def test_every_alert_is_tested_firing_and_then_clearing():
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fires_then_clears = set()
    for case in tests:
        checks = sorted(
            (duration_s(c["eval_time"]), c["alertname"], bool(c.get("exp_alerts")))
            for c in case.get("alert_rule_test", [])
        )
        fired: set[str] = set()
        for _t, name, firing in checks:
            if firing:
                fired.add(name)
            elif name in fired:
                fires_then_clears.add(name)
    untested = {rule["alert"] for rule in alert_rules()} - fires_then_clears
    assert untested == set(), "alerts not shown firing and then clearing in alerts_test.yml"


# ------------------------------------------------------------------ dashboard


def test_dashboard_model_and_datasource():
    dash = dashboard()
    assert dash["uid"] == "leadscore"
    assert dash["schemaVersion"] == 39
    (var,) = [v for v in dash["templating"]["list"] if v["name"] == "model_version"]
    assert var["datasource"]["uid"] == "prometheus"
    assert var["definition"] == "label_values(leadscore_model_info, version)"
    assert var["includeAll"] and var["allValue"] == ".*"
    panels = all_panels(dash["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    rows = [p for p in panels if p["type"] == "row"]
    assert rows and any(r["collapsed"] and r["panels"] for r in rows)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus", panel["title"]
            assert target["expr"].strip(), panel["title"]
            # "$var" only in regex matchers, so that the All value (.*) works
            for m in re.finditer(r"\$\{?model_version", target["expr"]):
                assert target["expr"][: m.start()].rstrip().endswith('=~"'), panel["title"]


def test_dashboard_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard()["panels"]):
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_covers_the_worker_and_the_monitor():
    names = set()
    for _title, expr in dashboard_queries(DASHBOARD):
        names |= referenced(expr)[0]
    unused = set(METRICS) - names
    # the per-feature live histogram is the monitor's input, shown through the drift panels
    assert unused <= {"leadscore_feature_bin_total"}, sorted(unused)
