from __future__ import annotations

import lightgbm as lgb
import numpy as np

from leadscore.model.explain import PathExplainer


def _model(depth: int, rounds: int, categorical: bool = False) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6))
    if categorical:
        x[:, 5] = rng.integers(0, 8, size=3000)
    y = (x[:, 2] + 0.5 * x[:, 0] + (x[:, 5] > 4) * categorical > 0).astype(int)
    params = {
        "objective": "binary",
        "verbose": -1,
        "max_depth": depth,
        "num_leaves": 2**depth,
        "seed": 1,
    }
    ds = lgb.Dataset(x, y, categorical_feature=[5] if categorical else "auto")
    return lgb.train(params, ds, rounds), x[:400]


def test_single_split_trees_match_treeshap_exactly():
    b, x = _model(depth=1, rounds=30)
    path = PathExplainer(b).contributions(b, x)
    shap = b.predict(x, pred_contrib=True)
    np.testing.assert_allclose(path, shap, atol=1e-9)


def test_path_attributions_sum_to_the_raw_score_and_agree_with_treeshap():
    b, x = _model(depth=4, rounds=80, categorical=True)
    path = PathExplainer(b).contributions(b, x)
    shap = b.predict(x, pred_contrib=True)
    raw = b.predict(x, raw_score=True)
    np.testing.assert_allclose(path.sum(axis=1), raw, atol=1e-9)
    np.testing.assert_allclose(path[:, -1], shap[:, -1], atol=1e-9)  # same expected value
    top_path = np.abs(path[:, :-1]).argmax(axis=1)
    top_shap = np.abs(shap[:, :-1]).argmax(axis=1)
    assert (top_path == top_shap).mean() > 0.9


def test_one_leaf_pass_gives_lightgbms_probabilities_and_the_same_attributions():
    b, x = _model(depth=4, rounds=80, categorical=True)
    path = PathExplainer(b)
    assert path.plain_binary
    proba, contrib = path.probabilities_and_contributions(b, x)
    np.testing.assert_allclose(proba, b.predict(x), rtol=0, atol=1e-15)
    np.testing.assert_allclose(contrib, path.contributions(b, x), atol=0)
    np.testing.assert_allclose(contrib.sum(axis=1), b.predict(x, raw_score=True), atol=1e-9)


def test_the_sparse_product_adds_the_leaf_credits_as_the_dense_gather_does():
    """Same numbers to the last bit as summing each reached leaf's credit row, tree by tree."""
    b, x = _model(depth=5, rounds=120, categorical=True)
    path = PathExplainer(b)
    leaves = path.leaves(b, x)
    rows = path._flat[leaves + path._offsets[: leaves.shape[1]]]  # noqa: SLF001
    dense = np.zeros((len(x), path.n_features + 1))
    for t in range(leaves.shape[1]):
        dense += rows[:, t]
    np.testing.assert_array_equal(path.contributions_from_leaves(leaves), dense)
    assert path.contributions_from_leaves(leaves[:0]).shape == (0, path.n_features + 1)


def test_models_other_than_plain_binary_use_lightgbms_own_prediction():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    b = lgb.train(
        {"objective": "regression", "verbose": -1},
        lgb.Dataset(x, x[:, 0] + rng.normal(size=500)),
        20,
    )
    path = PathExplainer(b)
    assert not path.plain_binary
    proba, contrib = path.probabilities_and_contributions(b, x)
    np.testing.assert_allclose(proba, b.predict(x))
    np.testing.assert_allclose(contrib.sum(axis=1), b.predict(x, raw_score=True), atol=1e-9)


def test_probabilities_alone_equal_lightgbms_and_the_explained_pass():
    """A shadow model's scores-only pass gives the same probabilities as the explained one."""
    b, x = _model(depth=4, rounds=80, categorical=True)
    path = PathExplainer(b)
    assert path.compiled is not None
    proba = path.probabilities(b, x)
    np.testing.assert_allclose(proba, b.predict(x), rtol=0, atol=1e-15)
    with_top, _, _ = path.probabilities_and_top(b, x, 3)
    np.testing.assert_array_equal(proba, with_top)
