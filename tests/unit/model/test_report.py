"""Evaluation metrics, leakage screening and the HTML report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadscore.model.charts import charts
from leadscore.model.evaluate import deciles, evaluate, segment_metrics, threshold_metrics
from leadscore.model.leakage import scan
from leadscore.model.report import importance_summary, render_html


def test_threshold_metrics_and_confusion_matrix() -> None:
    y = np.array([1, 1, 0, 0, 1])
    p = np.array([0.9, 0.4, 0.6, 0.1, 0.7])
    m = threshold_metrics(y, p, 0.5)
    assert m["confusion_matrix"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
    assert m["precision"] == 2 / 3 and m["recall"] == 2 / 3


def test_deciles_lift_and_recall() -> None:
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)
    d = deciles(y, p)
    assert d[0]["conversion_rate"] == 1.0 and d[0]["lift"] == 10.0
    assert d[-1]["cumulative_recall"] == 1.0


def test_segment_metrics_per_value() -> None:
    y = np.array([0, 1] * 50)
    p = np.where(y == 1, 0.8, 0.2)
    seg = pd.Series(["a"] * 60 + [None] * 40)
    out = {s["segment"]: s for s in segment_metrics(y, p, seg)}
    assert out["a"]["n"] == 60 and out["(missing)"]["auc"] == 1.0


def test_leakage_scan_flags_post_outcome_field_but_not_honest_signal() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    honest = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-honest))).astype(int)
    tag = np.where(rng.random(n) < 0.4, None, np.where(y == 1, "will enrol", "not interested"))
    df = pd.DataFrame({"honest": honest, "tag": tag})
    ws = {w.column: w for w in scan(df, y)}
    assert ws["tag"].action == "excluded" and ws["tag"].auc_when_filled > 0.99
    assert "honest" not in ws
    assert scan(df, y, keep_columns=["tag"])[0].action == "kept"


def test_html_report_embeds_charts() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.5 + rng.random(300) * 0.5, 0, 1)
    contrib = rng.normal(size=(300, 3))
    x = rng.normal(size=(300, 2))
    report = {
        "version": "v",
        "target": "t",
        "rows": {"labelled": 300},
        "features": ["a", "b"],
        "train_seconds": 1.0,
        "metrics": evaluate(y, p, hot_threshold=0.8),
        "baseline_auc": 0.6,
        "baseline": "lr",
        "feature_importance": importance_summary(["a", "b"], np.array([3.0, 1.0]), contrib),
    }
    images = charts(y, p, report, contrib=contrib, x=x, names=["a", "b"], baseline=p)
    assert set(images) >= {
        "ROC curve",
        "Precision-recall curve",
        "Calibration curve",
        "Lift by decile",
        "Feature importance",
        "SHAP summary",
    }
    html = render_html(report, images)
    assert html.count("data:image/png;base64,") == len(images)
    assert report["feature_importance"][0]["feature"] == "a"
