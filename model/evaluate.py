"""Held-out evaluation of a scorer: ranking, calibration, decision and segment metrics.

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
>>> threshold_metrics(y, p, 0.5)["precision"]
1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from leadscore.model.metrics import binary_metrics


def threshold_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 and the confusion matrix when ``p >= threshold`` means positive."""
    y = np.asarray(y).astype(int)
    pred = np.asarray(p) >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion_matrix": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def deciles(y: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """Conversion rate and lift per score decile, decile 1 = highest scores."""
    y = np.asarray(y).astype(int)
    order = np.argsort(-np.asarray(p), kind="stable")
    base = float(y.mean()) if len(y) else 0.0
    out = []
    total_pos = max(int(y.sum()), 1)
    seen_pos = 0
    for i, chunk in enumerate(np.array_split(order, 10), start=1):
        if not len(chunk):
            continue
        rate = float(y[chunk].mean())
        seen_pos += int(y[chunk].sum())
        out.append(
            {
                "decile": i,
                "n": int(len(chunk)),
                "mean_score": float(np.mean(p[chunk])),
                "conversion_rate": rate,
                "lift": rate / base if base else None,
                "cumulative_recall": seen_pos / total_pos,
            }
        )
    return out


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean score vs observed rate in equal-count score bins (the calibration error's bins)."""
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if len(chunk):
            out.append(
                {
                    "mean_score": float(np.mean(p[chunk])),
                    "observed_rate": float(np.mean(y[chunk])),
                    "n": int(len(chunk)),
                }
            )
    return out


def segment_metrics(
    y: np.ndarray, p: np.ndarray, segment: pd.Series, *, top: int = 20, min_rows: int = 20
) -> list[dict[str, Any]]:
    """Metrics per value of ``segment`` (largest ``top`` segments; missing is its own segment)."""
    seg = segment.astype(object).where(segment.notna(), "(missing)").astype(str).to_numpy()
    counts = pd.Series(seg).value_counts()
    out = []
    for value, n in counts.head(top).items():
        m = seg == value
        if n < min_rows:
            continue
        ys, ps = np.asarray(y)[m].astype(int), np.asarray(p)[m]
        both = len(np.unique(ys)) == 2
        out.append(
            {
                "segment": str(value),
                "n": int(n),
                "positive_rate": float(ys.mean()),
                "mean_score": float(ps.mean()),
                "auc": float(roc_auc_score(ys, ps)) if both else None,
                "calibration_gap": float(ps.mean() - ys.mean()),
            }
        )
    return out


def evaluate(y: np.ndarray, p: np.ndarray, *, hot_threshold: float) -> dict[str, Any]:
    """Every held-out metric of the report for calibrated scores ``p``."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    out = binary_metrics(y, p)
    out["at_hot_threshold"] = threshold_metrics(y, p, hot_threshold)
    out["at_0_5"] = threshold_metrics(y, p, 0.5)
    out["deciles"] = deciles(y, p)
    out["calibration_curve"] = calibration_curve(y, p)
    return out


def logistic_baseline(
    x_train: pd.DataFrame, y_train: np.ndarray, x_test: pd.DataFrame, categorical: list[str]
) -> np.ndarray:
    """Test-set probabilities of a one-hot logistic regression (the table baseline).

    Categories are one-hot encoded with missing as its own level; numbers are median-imputed,
    standardised and paired with a missing flag. It is the classic scorecard a CRM analyst
    would build, so the boosted model has to beat it to earn its complexity.
    """

    def design(df: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for c in df.columns:
            if c in categorical:
                levels = sorted(ref[c].dropna().astype(str).unique())
                s = df[c].astype(object).where(df[c].notna(), None)
                parts.append(
                    pd.DataFrame(
                        {f"{c}={lv}": (s.astype(str) == lv).astype(float) for lv in levels},
                        index=df.index,
                    )
                )
            else:
                r = pd.to_numeric(ref[c], errors="coerce")
                v = pd.to_numeric(df[c], errors="coerce")
                med = float(r.median()) if r.notna().any() else 0.0
                sd = float(r.std()) or 1.0
                parts.append(
                    pd.DataFrame(
                        {
                            c: ((v.fillna(med) - med) / sd).clip(-10, 10),
                            f"{c}?": v.isna().astype(float),
                        },
                        index=df.index,
                    )
                )
        return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=df.index)

    a = design(x_train, x_train)
    b = design(x_test, x_train)
    if a.shape[1] == 0:
        return np.full(len(x_test), float(np.mean(y_train)))
    lr = LogisticRegression(C=1.0, max_iter=2000)
    lr.fit(a.to_numpy(), np.asarray(y_train).astype(int))
    return np.asarray(lr.predict_proba(b.to_numpy())[:, 1])
