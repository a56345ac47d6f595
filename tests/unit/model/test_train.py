"""``model.train``: the streaming worker's default mode and the cross-validated table mode."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadscore.model.artifact import LightGBMScorer
from leadscore.model.registry import Registry
from leadscore.model.train import (
    Dataset,
    TrainConfig,
    Trial,
    _train_members,
    average_boosters,
    choose_ensemble,
    fit_calibrator,
    train,
)


def dataset(n: int = 800, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    c = rng.choice(["x", "y", "z"], n)
    logit = 1.5 * a + np.where(c == "x", 1.0, -0.5)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return Dataset(pd.DataFrame({"a": a, "c": c}), y, ["c"])


def test_default_mode_is_unchanged_for_the_worker(tmp_path: Path) -> None:
    res = train(dataset(), Registry(tmp_path), TrainConfig(num_boost_round=100), promote=True)
    assert res.metrics["split"] == "stratified" and "valid" in res.metrics["rows"]
    assert res.metrics["test"]["auc"] > 0.7
    loaded = LightGBMScorer.load(res.path)
    s = loaded.score_batch([{"a": 1.0, "c": "x"}])[0]
    assert 0 <= s.score <= 1 and loaded.version == res.version
    assert Registry(tmp_path).champion() == res.version
    assert len(res.test_index) == len(res.test_scores)


def test_cv_mode_searches_calibrates_out_of_fold_and_refits(tmp_path: Path) -> None:
    cfg = TrainConfig(
        cv_folds=3, search_time_s=5, search_max_trials=3, refit_full=True, calibration="auto"
    )
    res = train(dataset(), Registry(tmp_path), cfg, promote=False)
    assert res.metrics["cv"]["folds"] == 3 and 1 <= res.metrics["cv"]["trials"] <= 3
    assert res.metrics["refit_full"] is True
    assert res.metrics["calibration_method"] == "platt"  # fewer than 1000 out-of-fold rows
    assert Registry(tmp_path).champion() is None


def test_isotonic_calibration_keeps_the_ranking() -> None:
    rng = np.random.default_rng(3)
    raw = rng.random(2000)
    y = (rng.random(2000) < raw).astype(int)
    cal = fit_calibrator("isotonic", raw, y)
    out = cal.apply(raw)
    assert roc_auc_score(y, out) == roc_auc_score(y, raw)
    assert np.all(np.diff(out[np.argsort(raw)]) > 0)
    assert abs(cal.apply(np.array([0.0]))[0]) < 0.05 and cal.apply(np.array([1.0]))[0] <= 1.0


def test_average_boosters_predicts_the_mean_raw_score() -> None:
    ds = dataset(seed=1)
    x = np.column_stack([ds.x["a"], (ds.x["c"] == "x").astype(float)])
    members = [
        lgb.train(
            {
                "objective": "binary",
                "verbose": -1,
                "num_leaves": leaves,
                "seed": seed,
                "bagging_fraction": 0.8,
                "bagging_freq": 1,
                "feature_pre_filter": False,
            },
            lgb.Dataset(x, ds.y, categorical_feature=[1]),
            num_boost_round=rounds,
        )
        for leaves, seed, rounds in [(4, 1, 20), (15, 2, 35), (7, 3, 10)]
    ]
    merged = average_boosters(members)
    want = np.mean([m.predict(x, raw_score=True) for m in members], axis=0)
    np.testing.assert_allclose(merged.predict(x, raw_score=True), want, atol=1e-9)
    assert merged.num_trees() == 65


def test_cv_mode_reports_the_averaged_configurations(tmp_path: Path) -> None:
    cfg = TrainConfig(cv_folds=3, search_time_s=30, search_max_trials=4, ensemble_size=3)
    res = train(dataset(), Registry(tmp_path), cfg, promote=False)
    ens = res.metrics["cv"]["ensemble"]
    assert 1 <= ens["members"] <= 3 and len(ens["rounds"]) == ens["members"]
    assert 0.5 < ens["auc_mean"] <= 1.0
    loaded = LightGBMScorer.load(res.path)
    assert len(ens["seeds"]) == ens["members"]
    trees = sum(r * n for r, n in zip(ens["rounds"], ens["seeds"], strict=True))
    assert loaded.booster.num_trees() == trees


def test_ensemble_is_every_configuration_within_one_standard_error_of_the_best() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.4).astype(int)
    folds = [(np.setdiff1d(np.arange(500), va), va) for va in np.array_split(np.arange(500), 5)]
    signal = np.where(y == 1, 1.0, -1.0)
    oofs = [signal + rng.normal(scale=s, size=500) for s in (1.0, 1.1, 1.2, 3.0)]

    def trial(auc: float, std: float, oof: np.ndarray) -> Trial:
        return Trial({}, auc, std, 100, 0.0, oof)

    # 5 folds, population deviation 0.004: standard error 0.004 / sqrt(4) = 0.002.
    trials = [trial(a, 0.004, o) for a, o in zip((0.900, 0.899, 0.8985, 0.897), oofs, strict=True)]
    n, auc = choose_ensemble(trials, y, folds, max_size=8)
    assert n == 3  # 0.897 is 0.003 below the best: CV tells it apart
    want = np.mean([roc_auc_score(y[va], np.mean(oofs[:3], axis=0)[va]) for _, va in folds])
    assert auc == want
    assert choose_ensemble(trials, y, folds, max_size=2)[0] == 2
    # A tighter spread over the folds tells even the runner-up apart.
    tight = [trial(t.auc_mean, 0.0001, o) for t, o in zip(trials, oofs, strict=True)]
    assert choose_ensemble(tight, y, folds, max_size=8) == (1, 0.900)


def test_seed_bagged_members_weigh_the_same_as_single_ones() -> None:
    """A sampling configuration trained with 3 seeds counts once in the average, like a
    configuration with no sampling (trained once): the ensemble CV chose, less noisy."""
    ds = dataset(seed=2)
    x = np.column_stack([ds.x["a"], (ds.x["c"] == "x").astype(float)])
    y = ds.y.astype(int)
    base = {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": 5}
    sampled = {**base, "bagging_fraction": 0.7, "bagging_freq": 1}
    plain = {**base, "feature_fraction": 1.0}
    members = [Trial(sampled, 0.9, 0.0, 10, 0.0, None), Trial(plain, 0.9, 0.0, 10, 0.0, None)]
    merged = _train_members(members, x, y, ["a", "cx"], [1], seed_bag=3)
    assert merged.num_trees() == 4 * 11  # 3 seeds + 1, 10 rounds * 1.1 each

    def one(params: dict) -> np.ndarray:
        d = lgb.Dataset(
            x,
            y,
            feature_name=["a", "cx"],
            categorical_feature=[1],
            params={"feature_pre_filter": False},
        )
        return np.asarray(lgb.train(params, d, num_boost_round=11).predict(x, raw_score=True))

    seeded = [one({**sampled, "seed": 5 + 1000 * j}) for j in range(3)]
    assert not np.allclose(seeded[0], seeded[1])  # the seeds do change the sampled trees
    want = 0.5 * np.mean(seeded, axis=0) + 0.5 * one(plain)
    np.testing.assert_allclose(merged.predict(x, raw_score=True), want, atol=1e-9)
