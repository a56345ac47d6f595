"""Per-score reasons from a LightGBM model: exact TreeSHAP or fast path attributions.

TreeSHAP (``pred_contrib``) costs O(trees x leaves x depth^2) per row: about a millisecond
for a few hundred trees, far too slow for a stream of thousands of events per second. The
path attribution (Saabas) walks each tree's decision path once and credits every change of
the node value to the feature split on; with the per-leaf credits precomputed, a batch costs
one ``pred_leaf`` call plus a sparse product with the table of leaf credits, or, where
:mod:`leadscore.model.trees` compiles the model, one compiled walk that sums the credits and
picks the top reasons as it goes. Both decompose the raw score exactly: contributions plus the bias
equal the model's log-odds.
"""

from __future__ import annotations

from typing import Any, Literal

import lightgbm as lgb
import numpy as np
from scipy import sparse

from leadscore.model.trees import CompiledTrees

ExplainMethod = Literal["path", "treeshap"]


class PathExplainer:
    """Saabas path attributions with the credits of every leaf precomputed."""

    def __init__(self, booster: lgb.Booster) -> None:
        model = booster.dump_model()
        self.n_features = booster.num_feature()
        trees = model["tree_info"]
        max_leaves = max(t["num_leaves"] for t in trees) if trees else 1
        self.table = np.zeros((len(trees), max_leaves, self.n_features + 1))
        self.leaf_values = np.zeros((len(trees), max_leaves))
        for t, tree in enumerate(trees):
            self._fill(self.table[t], self.leaf_values[t], tree["tree_structure"])
        self._offsets = np.arange(len(trees)) * max_leaves
        self._flat = self.table.reshape(-1, self.n_features + 1)
        self._leaf_flat = self.leaf_values.reshape(-1)
        # The raw score can come from the leaves (no second pass over the trees) only for a
        # plain boosted binary model: LightGBM then sums the leaf values tree by tree and
        # applies a sigmoid with slope 1, which ``probabilities_and_contributions`` reproduces.
        text = booster.model_to_string()
        header = text.split("\nTree=", 1)[0]
        self.plain_binary = (
            model.get("num_class", 1) == 1
            and "objective=binary sigmoid:1" in header
            and "average_output" not in header
        )
        # The same trees walked by compiled code when the model allows it (model/trees.py),
        # reading the leaf values and credits above.
        self.compiled = CompiledTrees.from_model_string(text, self.n_features)
        if self.compiled is not None and self.compiled.leaf_counts == tuple(
            t["num_leaves"] for t in trees
        ):
            # Compiled (or loaded from numba's cache) here, at model load, not on the first
            # event: the worker loads its model before it reports ready.
            self._compiled_top(self.compiled, np.zeros((1, self.n_features)), 1)
        else:
            self.compiled = None

    @staticmethod
    def _expected(node: dict[str, Any]) -> tuple[float, float]:
        """(value, weight) of a subtree: the cover-weighted mean of its leaves.

        LightGBM's ``internal_value`` is not always consistent with the leaves (the first
        tree's leaves carry the boost-from-average offset), so node values are recomputed
        from the leaves, as TreeSHAP's expected values are.
        """
        if "leaf_value" in node:
            return float(node["leaf_value"]), float(max(node.get("leaf_count", 1), 1))
        lv, lw = PathExplainer._expected(node["left_child"])
        rv, rw = PathExplainer._expected(node["right_child"])
        node["_value"] = (lv * lw + rv * rw) / (lw + rw)
        return node["_value"], lw + rw

    def _fill(self, out: np.ndarray, values: np.ndarray, root: dict[str, Any]) -> None:
        # The bias column holds the root's expected value; each split adds child minus
        # parent value to the split feature, so a leaf's row sums to its leaf value.
        if "leaf_value" in root:
            out[root.get("leaf_index", 0), -1] = root["leaf_value"]
            values[root.get("leaf_index", 0)] = root["leaf_value"]
            return
        self._expected(root)
        start = np.zeros(self.n_features + 1)
        start[-1] = root["_value"]
        stack: list[tuple[dict[str, Any], np.ndarray]] = [(root, start)]
        while stack:
            node, acc = stack.pop()
            parent_value = node["_value"]
            for side in ("left_child", "right_child"):
                child = node[side]
                value = child["leaf_value"] if "leaf_value" in child else child["_value"]
                credit = acc.copy()
                credit[node["split_feature"]] += value - parent_value
                if "leaf_value" in child:
                    out[child["leaf_index"]] = credit
                    values[child["leaf_index"]] = child["leaf_value"]
                else:
                    stack.append((child, credit))

    def leaves(self, booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
        if self.compiled is not None:
            return self.compiled.leaves(x).astype(np.int64)
        leaves = np.asarray(booster.predict(x, pred_leaf=True, num_threads=1), dtype=np.int64)
        return leaves.reshape(len(x), -1)

    def contributions_from_leaves(self, leaves: np.ndarray) -> np.ndarray:
        """``(rows, features + 1)`` like ``pred_contrib``: the last column is the bias.

        The sum over trees of each reached leaf's credit row is a product of the rows' leaf
        one-hot matrix (sparse: one entry per row and tree) with the table of leaf credits.
        It adds the trees in order, as the dense gather-and-sum it replaced did, without
        materialising a (rows, trees, features) array: several times faster, same results.
        """
        n, t = leaves.shape
        if not n or not t:
            return np.zeros((n, self.n_features + 1))
        idx = (leaves + self._offsets[:t]).ravel()
        onehot = sparse.csr_matrix(
            (np.ones(n * t), idx, np.arange(0, n * t + 1, t)), shape=(n, self._flat.shape[0])
        )
        return np.asarray(onehot @ self._flat)

    def raw_from_leaves(self, leaves: np.ndarray) -> np.ndarray:
        """The model's raw score (log-odds), summed tree by tree in LightGBM's order."""
        if not leaves.shape[1]:
            return np.zeros(len(leaves))
        values = self._leaf_flat[leaves + self._offsets[: leaves.shape[1]]]
        # cumsum adds left to right, as LightGBM does; sum() would add pairwise and could
        # differ in the last bit. One gather and one pass instead of a numpy call per tree.
        return np.cumsum(values, axis=1)[:, -1]

    def contributions(self, booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
        """``(rows, features + 1)`` like ``pred_contrib``: the last column is the bias."""
        return self.contributions_from_leaves(self.leaves(booster, x))

    def probabilities_and_contributions(
        self, booster: lgb.Booster, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Model probabilities and attributions from one ``pred_leaf`` pass over the trees."""
        leaves = self.leaves(booster, x)
        contrib = self.contributions_from_leaves(leaves)
        if self.plain_binary:
            proba = 1.0 / (1.0 + np.exp(-self.raw_from_leaves(leaves)))
        else:
            proba = np.asarray(booster.predict(x, num_threads=1))
        return proba, contrib

    def probabilities(self, booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
        """Model probabilities alone (a shadow model's pass): the compiled walk to the leaves
        and their values, when the model allows it; else LightGBM's own prediction."""
        if self.compiled is not None and self.plain_binary:
            raw = self.raw_from_leaves(self.compiled.leaves(x).astype(np.int64))
            return np.asarray(1.0 / (1.0 + np.exp(-raw)))
        return np.asarray(booster.predict(x, num_threads=1))

    def probabilities_and_top(
        self, booster: lgb.Booster, x: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model probabilities and, per row, the ``k`` columns with the largest attribution
        by magnitude (ties to the lower column) and their attributions: what a score's
        reasons need, without the full ``(rows, features)`` matrix when compiled."""
        if self.compiled is None:
            proba, contrib = self.probabilities_and_contributions(booster, x)
            top, picked = top_k(contrib, k)
            return proba, top, picked
        raw, top, picked = self._compiled_top(self.compiled, x, k)
        if self.plain_binary:
            proba = 1.0 / (1.0 + np.exp(-raw))
        else:
            proba = np.asarray(booster.predict(x, num_threads=1))
        return proba, top, picked

    def _compiled_top(
        self, compiled: CompiledTrees, x: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw scores, top columns and their attributions from the compiled walk."""
        return compiled.explain(x, self._offsets, self._leaf_flat, self._flat, k)


def top_k(contrib: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``pred_contrib``-shaped ``contrib`` (bias last, ignored): the ``k`` columns
    with the largest ``|attribution|``, ties broken by column order, and their values."""
    body = contrib[:, :-1]
    top = np.argsort(-np.abs(body), axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(body, top, axis=1)


def contributions(
    booster: lgb.Booster, x: np.ndarray, method: ExplainMethod, path: PathExplainer | None
) -> np.ndarray:
    if method == "path" and path is not None:
        return path.contributions(booster, x)
    return np.asarray(booster.predict(x, pred_contrib=True, num_threads=1))
