"""The promotion gate: does a challenger deserve to replace the champion?

Every check runs on the same held-out scoring moments for both models (the most recent
ones, by time), so their scores are paired:

1. **Enough data** in the training window (leads and conversions): a model trained on a
   thin slice is noise, whatever its held-out AUC says.
2. **Better ranking**: the challenger's ROC AUC minus the reference's is at least
   ``margin`` *and* positive by a one-sided paired DeLong test at ``alpha``. The margin
   keeps a statistically sure but useless gain from churning the champion; the test keeps a
   lucky draw on a small held-out window from doing so.
3. **Calibrated**: the challenger's expected calibration error is at most ``max_ece`` (its
   scores are read as probabilities downstream).
4. **No segment left behind**: in every segment (company size, country, industry, lead
   source) with at least ``segment_min_moments`` labelled moments and
   ``segment_min_class`` of each class, the challenger's AUC is not below the
   reference's by more than ``segment_tolerance`` with the loss significant (one-sided
   paired DeLong tests, Holm's step-down correction across the judged segments at
   ``alpha``: a dozen segments each tested at 0.05 would refuse an equally good model
   about half the time).

The reference is the champion when it has the challenger's feature set, else the rule
baseline (a first model must beat the rules).

DeLong's variance uses the fast midrank algorithm of Sun and Xu (2014), "Fast
Implementation of DeLong's Algorithm for Comparing the Areas Under Correlated Receiver
Operating Characteristic Curves", IEEE Signal Processing Letters 21(11).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from leadscore.model.metrics import expected_calibration_error

SEGMENT_COLUMNS: tuple[str, ...] = ("company_size", "country", "industry", "lead_source")
"""The lead segments the gate (and the monitoring) compare models on."""


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """The thresholds of the gate; ``leadscore train --help`` lists their flags."""

    margin: float = 0.005
    """Minimum AUC gain over the reference."""
    alpha: float = 0.05
    """Significance level of the one-sided paired DeLong test."""
    max_ece: float = 0.08
    """Largest expected calibration error (10 equal-count bins) the challenger may have on
    the held-out moments. They are the latest ones, after the calibration window, so a
    well-calibrated model still drifts a few points off there; 0.08 refuses scores that are
    off by more than eight points on average."""
    segment_min_moments: int = 200
    """Segments with fewer labelled held-out moments are not judged (too noisy)."""
    segment_min_class: int = 30
    """Segments with fewer held-out moments of either class (conversions, or moments that
    did not convert) are not judged: DeLong's variance comes from each class's moments,
    and on a handful of conversions it is far too small (one conversion ranked low gives
    p < 1e-60), so a single lead would refuse a model."""
    segment_tolerance: float = 0.03
    """Largest AUC loss against the reference allowed in any judged segment (a larger one
    fails the gate when it is significant at ``alpha`` after Holm's correction across the
    judged segments)."""
    min_leads: int = 1000
    """Data sufficiency: distinct leads in the training window."""
    min_conversions: int = 120
    """Data sufficiency: converting leads (or positive rows for a table) in the window."""
    segment_columns: tuple[str, ...] = SEGMENT_COLUMNS


@dataclass(frozen=True, slots=True)
class PairedAUC:
    """A paired comparison of two scorers' ROC AUC on the same labelled moments."""

    auc_a: float
    auc_b: float
    diff: float
    """``auc_a - auc_b``."""
    se: float
    """Standard error of ``diff``."""
    z: float
    p_value: float
    """One-sided p-value for ``auc_a > auc_b``."""


def _structural_components(
    y: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components (V10 over positives, V01 over negatives) of
    ``scores`` (k scorers x n moments), by midranks as in Sun and Xu (2014)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_paired(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> PairedAUC:
    """DeLong's paired test of ``AUC(a) > AUC(b)`` (one-sided) on labels ``y``.

    >>> y = np.array([0, 0, 1, 1, 0, 1])
    >>> a = np.array([.1, .2, .8, .9, .3, .7])
    >>> r = delong_paired(y, a, np.array([.5, .2, .4, .9, .6, .3]))
    >>> round(r.auc_a, 3), round(r.auc_b, 3)
    (1.0, 0.556)
    """
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("the paired DeLong test needs both classes among the moments")
    scores = np.vstack([np.asarray(a, dtype=float), np.asarray(b, dtype=float)])
    aucs, v10, v01 = _structural_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.cov(v10) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(v01) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(var, 0.0))
    if se > 0.0:
        z = diff / se
        p = float(norm.sf(z))
    else:
        # Identical rankings (or a degenerate sample): no evidence either way unless the
        # AUCs differ, which a zero variance makes certain.
        z = math.copysign(math.inf, diff) if diff else 0.0
        p = 0.0 if diff > 0 else (1.0 if diff < 0 else 0.5)
    return PairedAUC(float(aucs[0]), float(aucs[1]), diff, se, z, p)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by midranks (ties count one half)."""
    aucs, _, _ = _structural_components(np.asarray(y).astype(int), np.asarray(p)[None, :])
    return float(aucs[0])


@dataclass(slots=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(slots=True)
class Decision:
    """What the gate concluded, with every figure it used (written into the model card)."""

    promote: bool
    reason: str
    reference: str
    """``champion``, ``rules`` or ``none``."""
    checks: list[Check] = field(default_factory=list)
    test: dict[str, Any] | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "reference": self.reference,
            "checks": [asdict(c) for c in self.checks],
            "test": self.test,
            "segments": self.segments,
            "policy": self.policy,
        }


def sufficiency_check(leads: int, conversions: int, policy: GatePolicy) -> Check:
    ok = leads >= policy.min_leads and conversions >= policy.min_conversions
    return Check(
        "data_sufficiency",
        ok,
        f"{leads} leads and {conversions} conversions in the training window "
        f"(needs at least {policy.min_leads} and {policy.min_conversions})",
    )


def segment_checks(
    y: np.ndarray,
    challenger: np.ndarray,
    reference: np.ndarray,
    segments: pd.DataFrame,
    policy: GatePolicy,
) -> list[dict[str, Any]]:
    """Per judged segment: both AUCs and whether the challenger stays within tolerance."""
    out: list[dict[str, Any]] = []
    losses: list[PairedAUC] = []
    for col in policy.segment_columns:
        if col not in segments.columns:
            continue
        filled = segments[col].astype(object).where(segments[col].notna(), "(missing)")
        values = filled.astype(str).to_numpy()
        for value in sorted(set(values)):
            rows = np.flatnonzero(values == value)
            ys = y[rows]
            positives = int(ys.sum())
            if (
                len(rows) < policy.segment_min_moments
                or min(positives, len(rows) - positives) < policy.segment_min_class
            ):
                continue
            r = delong_paired(ys, reference[rows], challenger[rows])
            losses.append(r)
            out.append(
                {
                    "column": col,
                    "value": value,
                    "n": int(len(rows)),
                    "positives": positives,
                    "challenger_auc": r.auc_b,
                    "reference_auc": r.auc_a,
                    "p_value_loss": r.p_value,
                }
            )
    # A loss counts when it is larger than the tolerance *and* real: on a few hundred
    # moments, AUC moves by several points by chance alone, and among many segments some
    # move a lot.
    adjusted = holm([r.p_value for r in losses])
    for row, r, p in zip(out, losses, adjusted, strict=True):
        row["p_value_loss_holm"] = p
        row["passed"] = not (r.diff > policy.segment_tolerance and p < policy.alpha)
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control under any dependence:
    one lead is in four segments, one per column).

    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.5])]
    [0.04, 0.09, 0.09, 0.5]
    """
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    out = [1.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        out[i] = running
    return out


def chance_ece(p: np.ndarray, *, draws: int = 200, quantile: float = 0.95, seed: int = 0) -> float:
    """The ``quantile`` of the calibration error that perfectly calibrated scores ``p`` show
    by chance alone: labels drawn from ``p`` itself. On a few hundred moments it is several
    points, so a fixed bound alone would refuse every small window."""
    rng = np.random.default_rng(seed)
    p = np.asarray(p, dtype=float)
    errors = [
        expected_calibration_error((rng.random(len(p)) < p).astype(int), p) for _ in range(draws)
    ]
    return float(np.quantile(errors, quantile))


def calibration_check(y: np.ndarray, p: np.ndarray, policy: GatePolicy) -> Check:
    """ECE at most ``max_ece``, or at most what chance alone gives on this many moments."""
    ece = expected_calibration_error(y, p)
    noise = chance_ece(p)
    bound = max(policy.max_ece, noise)
    return Check(
        "calibration",
        ece <= bound,
        f"expected calibration error {ece:.4f} (needs <= {bound:.4f}: the larger of "
        f"{policy.max_ece} and {noise:.4f}, the 95th percentile chance gives on "
        f"{len(p)} moments)",
    )


def _auc_check(
    y: np.ndarray, challenger: np.ndarray, ref: np.ndarray, name: str, policy: GatePolicy
) -> tuple[Check, dict[str, Any]]:
    r = delong_paired(y, challenger, ref)
    ok = r.diff >= policy.margin and r.p_value < policy.alpha
    detail = (
        f"AUC {r.auc_a:.4f} vs {name} {r.auc_b:.4f}: gain {r.diff:+.4f} "
        f"(needs >= {policy.margin}), DeLong p = {r.p_value:.3g} (needs < {policy.alpha})"
    )
    return Check("auc_gain", ok, detail), {"method": "delong_paired_one_sided", **asdict(r)}


def _segments_check(rows: list[dict[str, Any]]) -> Check:
    lost = [s for s in rows if not s["passed"]]
    if not lost:
        return Check("segments", True, f"{len(rows)} segments judged, none lost AUC")
    names = ", ".join(
        f"{s['column']}={s['value']} ({s['challenger_auc']:.3f} vs {s['reference_auc']:.3f})"
        for s in lost
    )
    return Check("segments", False, f"{len(rows)} segments judged; AUC lost in {names}")


def decide(
    y: np.ndarray,
    challenger: np.ndarray,
    reference: np.ndarray | None,
    *,
    reference_name: str,
    segments: pd.DataFrame | None,
    leads: int,
    conversions: int,
    policy: GatePolicy | None = None,
) -> Decision:
    """Run every check (all of them, so the card shows each figure) and decide."""
    policy = policy or GatePolicy()
    y = np.asarray(y).astype(int)
    challenger = np.asarray(challenger, dtype=float)
    checks = [sufficiency_check(leads, conversions, policy)]
    test: dict[str, Any] | None = None
    seg_rows: list[dict[str, Any]] = []
    if len(np.unique(y)) < 2:
        checks.append(Check("auc_gain", False, "the held-out moments have a single class"))
    elif reference is None:
        checks.append(Check("auc_gain", True, "no reference to compare with"))
    else:
        ref = np.asarray(reference, dtype=float)
        check, test = _auc_check(y, challenger, ref, reference_name, policy)
        checks.append(check)
        if segments is not None:
            seg_rows = segment_checks(y, challenger, ref, segments, policy)
            checks.append(_segments_check(seg_rows))
    checks.append(calibration_check(y, challenger, policy))
    failed = [c for c in checks if not c.passed]
    reason = "; ".join(f"{c.name}: {c.detail}" for c in failed) if failed else "every check passed"
    return Decision(
        promote=not failed,
        reason=reason,
        reference=reference_name if reference is not None else "none",
        checks=checks,
        test=test,
        segments=seg_rows,
        policy={k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(policy).items()},
    )
