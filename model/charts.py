"""The training report's charts: matplotlib PNGs embedded as base64 (Agg backend, no
display needed), so ``report.html`` can be mailed or archived on its own. Needs the
``report`` extra (matplotlib)."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


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
