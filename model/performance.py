"""Online performance of matured moments, the estimate for pending ones, and fairness.

Examples
--------
>>> p = np.array([0.9, 0.8, 0.3, 0.1]); y = np.array([1, 0, 1, 0])
>>> round(performance(p, y, ["hot", "hot", "cold", "cold"])["roc_auc"], 3)
0.75
>>> round(estimated(np.array([0.99, 0.01]))["roc_auc"], 4)
0.99
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

TIERS = ("hot", "warm", "cold")
SEGMENTS = ("company_size", "country", "industry", "lead_source", "firmo_revenue_band")
"""The lead attributes fairness is reported for by default (LEADSCORE_MONITOR_SEGMENTS):
categorical profile features with few levels (a segment needs enough moments to be reported),
the CRM's and the enrichment revenue band. Training reports them from its feature columns,
the monitor from the events that set them (leadscore.monitor.service)."""
ECE_BINS = 10


def _nan_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def calibration_error(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-count bins of the score: the mean,
    weighted by bin size, of |mean score - conversion rate|."""
    if not len(p):
        return float("nan")
    order = np.argsort(p, kind="stable")
    err = 0.0
    for part in np.array_split(order, min(bins, len(p))):
        if len(part):
            err += len(part) * abs(float(p[part].mean()) - float(y[part].mean()))
    return err / len(p)


def performance(p: np.ndarray, y: np.ndarray, tiers: Sequence[str]) -> dict[str, Any]:
    """ROC AUC, PR AUC, Brier score, ECE, conversion per tier and top-decile lift of scores
    ``p`` against labels ``y`` (AUCs None while one class is missing)."""
    n = len(p)
    out: dict[str, Any] = {"moments": n, "positives": int(y.sum()) if n else 0}
    both = n and 0 < y.sum() < n
    out["roc_auc"] = float(roc_auc_score(y, p)) if both else None
    out["pr_auc"] = float(average_precision_score(y, p)) if both else None
    out["brier"] = float(np.mean((p - y) ** 2)) if n else None
    out["ece"] = _nan_none(calibration_error(p, y)) if n else None
    out["conversion_rate"] = float(y.mean()) if n else None
    tier_arr = np.asarray(tiers)
    out["tiers"] = {
        t: {
            "moments": int((tier_arr == t).sum()),
            "conversion_rate": float(y[tier_arr == t].mean()) if (tier_arr == t).any() else None,
        }
        for t in TIERS
    }
    out["top_decile_lift"] = top_decile_lift(p, y)
    return out


def top_decile_lift(p: np.ndarray, y: np.ndarray) -> float | None:
    """Conversion rate of the highest-scored tenth over the overall rate."""
    n = len(p)
    if n < 10 or not y.sum():
        return None
    top = np.argsort(-p, kind="stable")[: max(1, n // 10)]
    return float(y[top].mean() / y.mean())


def estimated(p: np.ndarray) -> dict[str, Any]:
    """What calibrated scores ``p`` imply about their own performance before any label is
    known (confidence-based performance estimation, as NannyML's CBPE): each moment is a
    positive with probability ``p``, so at each threshold the expected true and false
    positives are sums of ``p`` and ``1 - p``; the ROC curve of those expectations gives the
    expected AUC. The Brier score's expectation is the mean of ``p (1 - p)``. Valid only as
    far as the model is calibrated on the new data (which the measured ECE checks later)."""
    n = len(p)
    if not n:
        return {"moments": 0, "roc_auc": None, "brier": None, "conversion_rate": None}
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    tp = np.concatenate([[0.0], np.cumsum(ps)])
    fp = np.concatenate([[0.0], np.cumsum(1.0 - ps)])
    # Tied scores move together: keep the curve's points at the ends of runs of ties.
    ends = np.concatenate([np.flatnonzero(np.diff(ps) != 0) + 1, [n]])
    keep = np.concatenate([[0], ends])
    tp, fp = tp[keep], fp[keep]
    auc = None
    if tp[-1] > 0 and fp[-1] > 0:
        tpr, fpr = tp / tp[-1], fp / fp[-1]
        auc = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
    return {
        "moments": n,
        "roc_auc": auc,
        "brier": float(np.mean(p * (1 - p))),
        "conversion_rate": float(p.mean()),
    }


# ------------------------------------------------------------------------------- fairness
FAIRNESS_METRICS = ("hot_share", "tpr", "fpr")


def _rates(hot: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pos, neg = y == 1, y == 0
    return {
        "hot_share": float(hot.mean()) if len(hot) else math.nan,
        "tpr": float(hot[pos].mean()) if pos.any() else math.nan,
        "fpr": float(hot[neg].mean()) if neg.any() else math.nan,
    }


def _bootstrap(
    hot: np.ndarray, y: np.ndarray, leads: np.ndarray, resamples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Each rate over ``resamples`` draws of the leads with replacement (a lead's moments
    move together): per-lead sums, weighted by how often each lead was drawn."""
    _, inverse = np.unique(leads, return_inverse=True)
    n_leads = int(inverse.max()) + 1
    pos, neg = y == 1, y == 0
    stats = np.stack(
        [
            np.bincount(inverse, minlength=n_leads),
            np.bincount(inverse, weights=hot, minlength=n_leads),
            np.bincount(inverse, weights=pos, minlength=n_leads),
            np.bincount(inverse, weights=hot & pos, minlength=n_leads),
            np.bincount(inverse, weights=neg, minlength=n_leads),
            np.bincount(inverse, weights=hot & neg, minlength=n_leads),
        ],
        axis=1,
    ).astype(np.float64)
    draws = rng.integers(0, n_leads, size=(resamples, n_leads))
    weights = np.stack([np.bincount(d, minlength=n_leads) for d in draws]).astype(np.float64)
    n, h, p, hp, ng, hn = (weights @ stats).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"hot_share": h / n, "tpr": hp / p, "fpr": hn / ng}


def fairness(
    p: np.ndarray,
    y: np.ndarray,
    tiers: Sequence[str],
    leads: Sequence[str],
    segments: Mapping[str, Sequence[str | None]],
    *,
    min_group: int = 50,
    resamples: int = 200,
    seed: int = 7,
) -> list[dict[str, Any]]:
    """Per segment attribute and value with at least ``min_group`` moments: the share of
    moments in the hot tier, the true- and false-positive rates of "hot" as a prediction of
    conversion, the calibration gap (mean score - conversion rate), and each rate's ratio to
    the overall one with a 95 % bootstrap interval. The bootstrap resamples the segment's
    leads (a lead's moments move together), the overall rate held fixed."""
    hot = np.asarray([t == "hot" for t in tiers], dtype=bool)
    overall = _rates(hot, y)
    rng = np.random.default_rng(seed)
    lead_arr = np.asarray(leads)
    out = []
    for attr, values in segments.items():
        vals = np.asarray([v if v is not None else "" for v in values], dtype=object)
        for seg in sorted({v for v in vals.tolist() if v}):
            idx = np.flatnonzero(vals == seg)
            if len(idx) < min_group:
                continue
            rates = _rates(hot[idx], y[idx])
            boot = _bootstrap(hot[idx], y[idx], lead_arr[idx], resamples, rng)
            draws = {
                m: boot[m][np.isfinite(boot[m])] / overall[m] if overall[m] else np.array([])
                for m in FAIRNESS_METRICS
            }
            seg_leads = np.unique(lead_arr[idx])
            row: dict[str, Any] = {
                "attribute": attr,
                "segment": seg,
                "moments": int(len(idx)),
                "leads": int(len(seg_leads)),
                "positives": int(y[idx].sum()),
                "calibration_gap": float(p[idx].mean() - y[idx].mean()),
            }
            for m in FAIRNESS_METRICS:
                ratio = rates[m] / overall[m] if overall[m] else math.nan
                lo, hi = (
                    (float(np.quantile(draws[m], 0.025)), float(np.quantile(draws[m], 0.975)))
                    if len(draws[m]) >= resamples // 2
                    else (math.nan, math.nan)
                )
                row[m] = _nan_none(rates[m])
                row[f"{m}_ratio"] = _nan_none(ratio)
                row[f"{m}_ratio_low"] = _nan_none(lo)
                row[f"{m}_ratio_high"] = _nan_none(hi)
            out.append(row)
    return out
