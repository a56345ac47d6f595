"""The training report: ``report.json`` and a self-contained ``report.html`` with charts.

Charts are matplotlib PNGs embedded as base64 (Agg backend, no display needed), so the HTML
file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


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


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def charts(
    y: np.ndarray,
    p: np.ndarray,
    report: dict[str, Any],
    *,
    contrib: np.ndarray | None = None,
    x: np.ndarray | None = None,
    names: list[str] | None = None,
    baseline: np.ndarray | None = None,
) -> dict[str, str]:
    """Base64 PNGs by title: ROC, PR, calibration, lift, importance and SHAP summary."""
    out: dict[str, str] = {}
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) == 2:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"model (AUC {report['metrics'].get('auc', 0):.3f})")
        if baseline is not None:
            bf, bt, _ = roc_curve(y, baseline)
            ax.plot(bf, bt, "--", label=f"baseline (AUC {report.get('baseline_auc') or 0:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        ax.legend(loc="lower right")
        out["ROC curve"] = _png(fig)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec)
        ax.axhline(float(y.mean()), ls=":", color="grey")
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
        out["Precision-recall curve"] = _png(fig)
    cal = report["metrics"].get("calibration_curve", [])
    if cal:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot([c["mean_score"] for c in cal], [c["observed_rate"] for c in cal], "o-")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(
            xlabel="mean score",
            ylabel="observed conversion rate",
            title=f"Calibration (error {report['metrics']['calibration_error']:.3f})",
        )
        out["Calibration curve"] = _png(fig)
    dec = report["metrics"].get("deciles", [])
    if dec:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar([d["decile"] for d in dec], [d["lift"] or 0 for d in dec])
        ax.axhline(1.0, ls=":", color="grey")
        ax.set(xlabel="score decile (1 = top)", ylabel="lift", title="Lift by decile")
        out["Lift by decile"] = _png(fig)
    imp = report.get("feature_importance", [])[:15]
    if imp:
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(imp) + 1))
        ax.barh([r["feature"] for r in imp][::-1], [r["gain_share"] for r in imp][::-1])
        ax.set(xlabel="share of total gain", title="Feature importance (gain)")
        out["Feature importance"] = _png(fig)
    if contrib is not None and x is not None and names is not None:
        out["SHAP summary"] = _shap_summary(contrib, x, names)
    return out


def _shap_summary(contrib: np.ndarray, x: np.ndarray, names: list[str], top: int = 12) -> str:
    """Beeswarm-like: one row per feature, contributions jittered, coloured by value rank."""
    mean_abs = np.mean(np.abs(contrib[:, : len(names)]), axis=0)
    order = np.argsort(-mean_abs)[:top][::-1]
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(order) + 1))
    for row, j in enumerate(order):
        c = contrib[:, j]
        v = x[:, j]
        colour = np.full(len(v), 0.5)
        ok = ~np.isnan(v)
        if ok.sum() > 1:
            ranks = np.argsort(np.argsort(v[ok]))
            colour[ok] = ranks / max(len(ranks) - 1, 1)
        ax.scatter(
            c, row + rng.uniform(-0.3, 0.3, len(c)), c=colour, cmap="coolwarm", s=4, alpha=0.6
        )
    ax.set_yticks(range(len(order)), [names[j] for j in order])
    ax.axvline(0, color="grey", lw=0.5)
    ax.set(
        xlabel="contribution to log-odds (TreeSHAP)",
        title="SHAP summary (colour: low -> high value or level index)",
    )
    return _png(fig)


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
