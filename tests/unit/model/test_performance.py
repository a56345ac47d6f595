"""Online performance figures, the CBPE estimate and fairness."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from leadscore.model.performance import calibration_error, estimated, fairness, performance


def test_performance_matches_sklearn_and_counts_tiers():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=2000)
    y = (rng.uniform(size=2000) < p).astype(int)
    tiers = np.where(p > 0.7, "hot", np.where(p > 0.3, "warm", "cold"))
    out = performance(p, y, list(tiers))
    assert out["roc_auc"] == roc_auc_score(y, p)
    assert out["pr_auc"] == average_precision_score(y, p)
    assert abs(out["brier"] - np.mean((p - y) ** 2)) < 1e-12
    assert out["ece"] < 0.05  # calibrated by construction
    assert out["tiers"]["hot"]["conversion_rate"] > out["tiers"]["cold"]["conversion_rate"]
    assert out["top_decile_lift"] > 1.5


def test_miscalibration_shows_in_the_ece():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=5000)
    y = (rng.uniform(size=5000) < p / 2).astype(int)
    assert calibration_error(p, y) > 0.2


def test_one_class_gives_no_auc():
    out = performance(np.array([0.2, 0.3]), np.array([0, 0]), ["cold", "cold"])
    assert out["roc_auc"] is None and out["top_decile_lift"] is None


def test_cbpe_estimate_is_the_expected_auc_of_calibrated_scores():
    rng = np.random.default_rng(2)
    p = rng.beta(1, 6, size=1500)
    draws = []
    for _ in range(300):
        y = (rng.uniform(size=len(p)) < p).astype(int)
        draws.append(roc_auc_score(y, p))
    est = estimated(p)
    assert abs(est["roc_auc"] - np.mean(draws)) < 0.01
    assert abs(est["conversion_rate"] - p.mean()) < 1e-12


def test_fairness_ratios_intervals_and_minimum_group():
    rng = np.random.default_rng(3)
    n = 4000
    leads = [f"L{i // 4}" for i in range(n)]  # four moments per lead
    seg = np.asarray(["a", "b"] * (n // 2))
    seg[:200] = "tiny"
    p = rng.uniform(size=n)
    p[seg == "b"] *= 0.5  # segment b rarely reaches the hot tier
    y = (rng.uniform(size=n) < p).astype(int)
    tiers = ["hot" if s > 0.7 else "cold" for s in p]
    rows = fairness(p, y, tiers, leads, {"industry": list(seg)}, min_group=300, resamples=200)
    by = {r["segment"]: r for r in rows}
    assert set(by) == {"a", "b"}  # "tiny" has 200 moments, below the minimum
    assert by["b"]["hot_share_ratio"] < 0.2 and by["b"]["hot_share_ratio_high"] < 0.8
    assert by["a"]["hot_share_ratio_low"] > 1.25
    a = by["a"]
    assert a["hot_share_ratio_low"] <= a["hot_share_ratio"] <= a["hot_share_ratio_high"]
