"""The compiled tree walk against LightGBM's own predictor, value for value."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from leadscore.model.explain import PathExplainer, top_k
from leadscore.model.trees import ZERO_THRESHOLD, CompiledTrees

N_CAT = 12


def _train(params: dict[str, Any], rounds: int = 60) -> lgb.Booster:
    rng = np.random.default_rng(3)
    n = 4000
    x = rng.normal(size=(n, 6))
    x[:, 1] = rng.integers(0, 6, size=n)  # small counts, many zeros
    x[:, 4] = rng.integers(0, N_CAT, size=n)  # categorical
    x[rng.random(n) < 0.15, 0] = np.nan
    x[rng.random(n) < 0.10, 4] = np.nan
    y = (
        np.nan_to_num(x[:, 0]) + 0.6 * (x[:, 1] == 0) + np.isin(x[:, 4], [0, 3, 7]) + x[:, 2] > 0.8
    ).astype(int)
    base = {"objective": "binary", "verbose": -1, "num_leaves": 15, "seed": 2}
    ds = lgb.Dataset(x, y, categorical_feature=[4], params={"max_cat_to_onehot": 2})
    return lgb.train({**base, **params}, ds, rounds)


def _probe(n_features: int = 6) -> np.ndarray:
    """Ordinary rows plus every edge the decisions treat specially."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(600, n_features))
    x[:, 1] = rng.integers(0, 6, size=600)
    x[:, 4] = rng.integers(0, N_CAT, size=600)
    edges = [
        np.nan,
        0.0,
        -0.0,
        ZERO_THRESHOLD,
        -ZERO_THRESHOLD,
        1e-36,
        -1e-36,
        2e-35,
        np.inf,
        -np.inf,
        -0.5,  # truncates to category 0
        -1.0,
        2.7,  # truncates to category 2
        N_CAT + 5.0,  # unseen category
        40.0,  # past the bitset
        3e9,  # past INT_MAX
        -3e9,
    ]
    rows = []
    for j in range(n_features):
        for e in edges:
            row = x[len(rows) % len(x)].copy()
            row[j] = e
            rows.append(row)
    return np.vstack([x, np.array(rows)])


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"zero_as_missing": True},
        {"use_missing": False},
        {"max_depth": 2, "num_leaves": 4, "min_data_in_leaf": 1500},
    ],
    ids=["nan-missing", "zero-as-missing", "no-missing", "shallow"],
)
def test_leaves_are_lightgbms_leaves(params: dict[str, Any]) -> None:
    booster = _train(params)
    trees = CompiledTrees.from_booster(booster)
    assert trees is not None
    x = _probe()
    np.testing.assert_array_equal(trees.leaves(x), booster.predict(x, pred_leaf=True))


def test_missing_types_and_categorical_nodes_are_all_exercised() -> None:
    """The models above really contain what the decisions special-case."""
    decisions: set[str] = set()
    for params in ({}, {"zero_as_missing": True}):
        text = _train(params).model_to_string()
        for line in text.splitlines():
            if line.startswith("decision_type="):
                decisions.update(line.split("=", 1)[1].split())
    kinds = {(int(d) & 1, (int(d) >> 2) & 3) for d in decisions}
    assert (1, 2) in kinds or (1, 0) in kinds  # categorical
    assert (0, 1) in kinds  # numerical, missing type Zero
    assert (0, 2) in kinds  # numerical, missing type NaN


def test_trees_with_a_single_leaf_give_leaf_zero() -> None:
    booster = _train({"min_data_in_leaf": 5000}, rounds=3)  # nothing can split
    trees = CompiledTrees.from_booster(booster)
    assert trees is not None
    assert trees.n_trees == booster.num_trees() >= 1
    assert (trees.root == -1).all()
    x = _probe()
    np.testing.assert_array_equal(
        trees.leaves(x), np.zeros((len(x), trees.n_trees), dtype=np.int32)
    )
    np.testing.assert_array_equal(trees.leaves(x), booster.predict(x, pred_leaf=True))


def test_explain_gives_the_raw_score_and_top_reasons_of_the_lightgbm_path() -> None:
    booster = _train({}, rounds=120)
    x = _probe()
    compiled = PathExplainer(booster)
    assert compiled.compiled is not None
    reference = PathExplainer(booster)
    reference.compiled = None  # LightGBM's pred_leaf and the sparse product
    for k in (1, 3, 6, 9):
        proba, top, picked = compiled.probabilities_and_top(booster, x, k)
        ref_proba, ref_contrib = reference.probabilities_and_contributions(booster, x)
        ref_top, ref_picked = top_k(ref_contrib, k)
        np.testing.assert_array_equal(proba, ref_proba)
        np.testing.assert_array_equal(top, ref_top)
        np.testing.assert_array_equal(picked, ref_picked)
    raw, _, _ = compiled._compiled_top(compiled.compiled, x, 2)  # noqa: SLF001
    np.testing.assert_array_equal(raw, booster.predict(x, raw_score=True))


def test_models_it_does_not_cover_keep_lightgbms_predictor() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    multi = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1},
        lgb.Dataset(x, rng.integers(0, 3, size=600)),
        5,
    )
    linear = lgb.train(
        {"objective": "binary", "linear_tree": True, "verbose": -1},
        lgb.Dataset(x, (x[:, 0] > 0).astype(int)),
        5,
    )
    assert CompiledTrees.from_booster(multi) is None
    assert CompiledTrees.from_booster(linear) is None
    path = PathExplainer(linear)
    assert path.compiled is None
    proba, top, picked = path.probabilities_and_top(linear, x, 2)
    np.testing.assert_allclose(proba, linear.predict(x))
    assert top.shape == picked.shape == (600, 2)


def test_a_matrix_of_the_wrong_width_is_refused() -> None:
    trees = CompiledTrees.from_booster(_train({}, rounds=2))
    assert trees is not None
    with pytest.raises(ValueError, match=r"\(rows, 6\)"):
        trees.leaves(np.zeros((3, 5)))
