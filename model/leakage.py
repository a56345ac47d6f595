"""Target-leakage screening: columns that alone give the outcome away.

CRM exports mix what was known when a lead arrived with fields sales filled in after talking
to it (call tags, lead quality). Those predict the outcome almost perfectly in history and are
unavailable, or meaningless, when a new lead must be scored. Nothing here knows column names:
each column is measured on the data.

For every column the screen computes an out-of-fold single-feature AUC: the column is turned
into levels (categories as they are, numbers in up to 20 quantile bins, missing as its own
level), each level is scored by its smoothed conversion rate on the other folds, and the AUC of
that score is taken. It is measured twice: on all rows, and on the rows where the column is
filled, because post-outcome fields are often empty for leads nobody contacted yet and are then
near-perfect wherever they are filled.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, 400)
>>> df = pd.DataFrame({"status": np.where(y == 1, "won", "lost"), "noise": rng.normal(size=400)})
>>> [w.column for w in scan(df, y) if w.action == "excluded"]
['status']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

EXCLUDE_AUC = 0.95
"""Single-feature AUC (all rows, or filled rows) from which a column is excluded."""
WARN_AUC = 0.85
"""Single-feature AUC from which a column is reported as suspicious but kept."""
MIN_FILLED_SHARE = 0.2
"""The filled-rows AUC only counts when at least this share of rows is filled."""
PURE_RATE = 0.02
"""A level is "pure" when its conversion rate is within this of 0 or 1."""


@dataclass(frozen=True, slots=True)
class LeakageWarning:
    column: str
    action: Literal["excluded", "kept", "warning"]
    reason: str
    auc_alone: float
    auc_when_filled: float | None
    filled_share: float
    pure_level_share: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "action": self.action,
            "reason": self.reason,
            "auc_alone": round(self.auc_alone, 4),
            "auc_when_filled": None
            if self.auc_when_filled is None
            else round(self.auc_when_filled, 4),
            "filled_share": round(self.filled_share, 4),
            "pure_level_share": round(self.pure_level_share, 4),
        }


@dataclass(frozen=True, slots=True)
class ColumnSignal:
    """Single-feature predictive strength of one column."""

    column: str
    auc_alone: float
    auc_when_filled: float | None
    filled_share: float
    pure_level_share: float


def _levels(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col) and col.nunique() > 20:
        binned = pd.qcut(col, 20, duplicates="drop").astype(str)
    else:
        binned = col.astype(str)
    return np.asarray(binned.where(col.notna(), "\x00missing"), dtype=object)


def _oof_rate(levels: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold smoothed conversion rate of each row's level."""
    out = np.zeros(len(y))
    prior = float(y.mean())
    folds = min(5, int(min(np.bincount(y, minlength=2))))
    if folds < 2:
        return np.full(len(y), prior)
    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fit_idx, score_idx in skf.split(levels, y):
        g = pd.DataFrame({"s": levels[fit_idx], "y": y[fit_idx]}).groupby("s")["y"]
        stats = g.agg(["sum", "count"])
        # Five pseudo-rows at the prior keep rare levels from looking perfectly predictive.
        rate = (stats["sum"] + 5 * prior) / (stats["count"] + 5)
        out[score_idx] = pd.Series(levels[score_idx]).map(rate).fillna(prior).to_numpy()
    return out


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return 0.5
    a = float(roc_auc_score(y, p))
    return max(a, 1.0 - a)


def column_signal(col: pd.Series, y: np.ndarray, *, seed: int = 0) -> ColumnSignal:
    """Out-of-fold single-feature AUC of ``col`` (all rows and filled rows) and level purity."""
    y = np.asarray(y).astype(int)
    levels = _levels(col)
    filled = col.notna().to_numpy()
    auc_all = _auc(y, _oof_rate(levels, y, seed))
    filled_share = float(filled.mean()) if len(filled) else 0.0
    auc_filled: float | None = None
    pure = 0.0
    if filled.sum() >= 50 and len(np.unique(y[filled])) == 2:
        auc_filled = _auc(y[filled], _oof_rate(levels[filled], y[filled], seed))
        g = pd.DataFrame({"s": levels[filled], "y": y[filled]}).groupby("s")["y"]
        stats = g.agg(["mean", "count"])
        big = stats[stats["count"] >= 20]
        pure_rows = big[(big["mean"] <= PURE_RATE) | (big["mean"] >= 1 - PURE_RATE)]["count"]
        pure = float(pure_rows.sum()) / float(filled.sum())
    return ColumnSignal(str(col.name), auc_all, auc_filled, filled_share, pure)


def scan(
    df: pd.DataFrame,
    y: np.ndarray,
    *,
    keep_columns: Sequence[str] = (),
    exclude_auc: float = EXCLUDE_AUC,
    warn_auc: float = WARN_AUC,
    seed: int = 0,
) -> list[LeakageWarning]:
    """Warnings for the columns of ``df`` that predict ``y`` suspiciously well on their own.

    ``action`` is ``excluded`` (drop it), ``kept`` (would be excluded, but the caller keeps it
    via ``keep_columns``) or ``warning`` (strong enough to look at, not excluded).
    """
    out = []
    for name in df.columns:
        sig = column_signal(df[name], y, seed=seed)
        filled_auc = sig.auc_when_filled if sig.filled_share >= MIN_FILLED_SHARE else None
        strongest = max(sig.auc_alone, filled_auc or 0.0)
        if strongest < warn_auc:
            continue
        if sig.auc_alone >= exclude_auc:
            why = f"alone it predicts the target with AUC {sig.auc_alone:.3f}"
        elif filled_auc is not None and filled_auc >= exclude_auc:
            why = (
                f"where filled ({sig.filled_share:.0%} of rows) it predicts the target with "
                f"AUC {filled_auc:.3f}"
            )
        else:
            why = (
                f"strong single-feature signal (AUC {sig.auc_alone:.3f} alone"
                + (f", {filled_auc:.3f} where filled" if filled_auc is not None else "")
                + "); check it is known before the outcome"
            )
        if sig.pure_level_share >= 0.1:
            why += (
                f"; {sig.pure_level_share:.0%} of filled rows sit in values whose "
                f"conversion rate is within {PURE_RATE:.0%} of 0 or 100%"
            )
        leaky = strongest >= exclude_auc
        if leaky:
            why += ": typical of a field filled in after the outcome"
        action: Literal["excluded", "kept", "warning"] = (
            ("kept" if name in keep_columns else "excluded") if leaky else "warning"
        )
        out.append(
            LeakageWarning(
                str(name),
                action,
                why,
                sig.auc_alone,
                sig.auc_when_filled,
                sig.filled_share,
                sig.pure_level_share,
            )
        )
    out.sort(key=lambda w: -max(w.auc_alone, w.auc_when_filled or 0.0))
    return out
