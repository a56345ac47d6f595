"""The training report: ``report.json`` and a self-contained ``report.html``.

Its charts (:mod:`leadscore.model.charts`) need matplotlib, the ``report`` extra; without
it the report has its tables only.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np


def importance_summary(
    names: list[str], gain: np.ndarray, contrib: np.ndarray | None
) -> list[dict[str, Any]]:
    """Per feature: total gain (and share) and mean |SHAP contribution|, largest gain first."""
    total = float(np.sum(gain)) or 1.0
    shap = (
        np.mean(np.abs(contrib[:, : len(names)]), axis=0)
        if contrib is not None
        else np.zeros(len(names))
    )
    rows: list[dict[str, Any]] = [
        {"feature": n, "gain": float(g), "gain_share": float(g) / total, "mean_abs_shap": float(s)}
        for n, g, s in zip(names, gain, shap, strict=True)
    ]
    rows.sort(key=lambda r: (-float(r["gain"]), str(r["feature"])))
    return rows


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any], images: dict[str, str]) -> str:
    """The HTML report for ``report`` (the JSON report dict) and its ``images``."""
    m = report["metrics"]
    summary = [
        {"metric": "ROC AUC", "value": m.get("auc")},
        {"metric": "PR AUC", "value": m.get("pr_auc")},
        {"metric": "log loss", "value": m.get("log_loss")},
        {"metric": "Brier score", "value": m.get("brier")},
        {"metric": "calibration error", "value": m.get("calibration_error")},
        {
            "metric": "baseline AUC (" + str(report.get("baseline", "")) + ")",
            "value": report.get("baseline_auc"),
        },
        {"metric": "CV AUC mean", "value": (report.get("cv") or {}).get("auc_mean")},
        {"metric": "CV AUC std", "value": (report.get("cv") or {}).get("auc_std")},
    ]
    hot = m.get("at_hot_threshold", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>leadscore model {html.escape(report['version'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:13px}img{margin:4px}</style></head><body>",
        f"<h1>Model {html.escape(report['version'])}</h1>",
        f"<p>Target <b>{html.escape(report['target'])}</b>, {report['rows']['labelled']} "
        f"labelled rows, {len(report['features'])} features, trained in "
        f"{report['train_seconds']:.1f}s. Held-out metrics on {m.get('n')} test rows.</p>",
        _table(summary, ["metric", "value"]),
        f"<h2>Decision at the hot threshold ({hot.get('threshold', 0):.4f})</h2>",
        _table(
            [{**hot, **hot.get("confusion_matrix", {})}],
            ["threshold", "precision", "recall", "f1", "tp", "fp", "fn", "tn"],
        ),
        "<h2>Charts</h2>",
        "".join(
            f"<figure style='display:inline-block'><img alt='{html.escape(t)}' "
            f"src='data:image/png;base64,{b}'><figcaption>{html.escape(t)}</figcaption>"
            "</figure>"
            for t, b in images.items()
        ),
        "<h2>Lift by decile</h2>",
        _table(
            m.get("deciles", []),
            ["decile", "n", "mean_score", "conversion_rate", "lift", "cumulative_recall"],
        ),
        "<h2>Leakage warnings</h2>",
        _table(
            report.get("leakage_warnings", []),
            ["column", "action", "auc_alone", "auc_when_filled", "reason"],
        )
        if report.get("leakage_warnings")
        else "<p>none</p>",
        "<h2>Dropped columns</h2>",
        _table(report.get("dropped_columns", []), ["column", "why"]),
        "<h2>Feature importance</h2>",
        _table(report.get("feature_importance", []), ["feature", "gain_share", "mean_abs_shap"]),
    ]
    if report.get("segments"):
        parts += [
            f"<h2>Segments by {html.escape(str(report.get('segment_column')))}</h2>",
            _table(
                report["segments"],
                ["segment", "n", "positive_rate", "mean_score", "auc", "calibration_gap"],
            ),
        ]
    parts += [
        "<h2>Hyper-parameters</h2>",
        f"<pre>{html.escape(json.dumps(report.get('hyper_parameters', {}), indent=1))}"
        "</pre></body></html>",
    ]
    return "\n".join(parts)


def write_report(directory: Path, report: dict[str, Any], images: dict[str, str]) -> None:
    """Write ``report.json`` and ``report.html`` into ``directory``."""
    (directory / "report.json").write_text(
        json.dumps(report, indent=2, default=str), encoding="utf-8"
    )
    (directory / "report.html").write_text(render_html(report, images), encoding="utf-8")
