"""A LightGBM model's trees as flat arrays, walked by compiled code (numba).

On the worker's hot path, LightGBM's ``predict(pred_leaf=True)`` plus the sparse product of
leaf one-hots with the table of leaf credits (``model/explain.py``) cost more per row than
walking the same trees here, summing the credits and picking the top reasons in the same
loop (docs/performance.md); the walk also releases the GIL.

The decisions reproduce LightGBM's own (``include/LightGBM/tree.h``: ``NumericalDecision``,
``CategoricalDecision``) bit for bit, including the input conversion of its dense-matrix
predictor, which reads any value within ``kZeroThreshold`` of zero as 0. Tests compare the
leaves with ``pred_leaf`` on data with missing, zero, tiny, negative and unseen values.
Models this module does not cover (linear trees, several trees per iteration) give ``None``
from :meth:`CompiledTrees.from_booster`, and the caller keeps LightGBM's predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numba
import numpy as np

from leadscore.model.exceptions import ModelIntegrityError

# LightGBM's kZeroThreshold: the float 1e-35f, as a double.
ZERO_THRESHOLD = float(np.float32(1e-35))
# decision_type bits in the model text (tree.h: kCategoricalMask, kDefaultLeftMask, and the
# missing type in bits 2-3: 0 None, 1 Zero, 2 NaN).
_CATEGORICAL = 1
_DEFAULT_LEFT = 2
_MISSING_ZERO = 1
_MISSING_NAN = 2
# Node flags here: the categorical and default-left bits as in decision_type, then
_ZERO_MISSING = 4
"""0 goes to the default side."""
_NAN_LEFT = 8
"""NaN goes left (its side is fixed per node: see ``_node_flags``)."""


@dataclass(frozen=True)
class CompiledTrees:
    """Every tree's split nodes in one set of arrays (node ids are global); children >= 0
    are nodes, ``~child`` is a leaf index within the tree."""

    root: np.ndarray
    """Per tree: its root node, or -1 (leaf 0) for a tree that is a single leaf."""
    leaf_counts: tuple[int, ...]
    feature: np.ndarray
    threshold: np.ndarray
    flags: np.ndarray
    children: np.ndarray
    """``(nodes, 2)``: each node's left then right child."""
    cat_start: np.ndarray
    """Per categorical node: where its bitset starts in ``cat_bits`` (else 0)."""
    cat_words: np.ndarray
    cat_bits: np.ndarray
    n_features: int

    @property
    def n_trees(self) -> int:
        return len(self.root)

    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> CompiledTrees | None:
        """The trees ``booster.predict`` uses by default, or None for a model this module
        does not cover."""
        return cls.from_model_string(booster.model_to_string(), booster.num_feature())

    @classmethod
    def from_model_string(cls, text: str, n_features: int) -> CompiledTrees | None:
        header, _, body = text.partition("\nTree=")
        if _fields(header).get("num_tree_per_iteration", "1") != "1":
            return None
        trees = []
        for block in ("Tree=" + body).split("\nTree=") if body else []:
            fields = _fields(block.split("\nend of trees", 1)[0])
            if fields.get("is_linear", "0") != "0":
                return None
            trees.append(fields)
        roots: list[int] = []
        leaf_counts: list[int] = []
        feature: list[int] = []
        threshold: list[float] = []
        flags: list[int] = []
        left: list[int] = []
        right: list[int] = []
        cat_start: list[int] = []
        cat_words: list[int] = []
        cat_bits: list[int] = []
        for fields in trees:
            n_leaves = int(fields["num_leaves"])
            leaf_counts.append(n_leaves)
            if n_leaves == 1:
                roots.append(-1)
                continue
            base = len(feature)
            roots.append(base)
            bounds = _ints(fields.get("cat_boundaries", ""))
            bits_base = len(cat_bits)
            cat_bits += _ints(fields.get("cat_threshold", ""))
            feature += _ints(fields["split_feature"])
            left += [c + base if c >= 0 else c for c in _ints(fields["left_child"])]
            right += [c + base if c >= 0 else c for c in _ints(fields["right_child"])]
            for thr, dec in zip(
                _floats(fields["threshold"]), _ints(fields["decision_type"]), strict=True
            ):
                flags.append(_node_flags(dec, thr))
                if dec & _CATEGORICAL:
                    cat = int(thr)
                    cat_start.append(bits_base + bounds[cat])
                    cat_words.append(bounds[cat + 1] - bounds[cat])
                    threshold.append(0.0)
                else:
                    cat_start.append(0)
                    cat_words.append(0)
                    threshold.append(thr)
            if not len(feature) == len(left) == len(right) == len(flags) == base + n_leaves - 1:
                raise ModelIntegrityError(
                    "model text: a tree doesn't have num_leaves - 1 split nodes"
                )
        if feature and max(feature) >= n_features:
            raise ModelIntegrityError("model text: a split on a feature the booster doesn't have")
        return cls(
            root=np.asarray(roots, dtype=np.int32),
            leaf_counts=tuple(leaf_counts),
            feature=np.asarray(feature, dtype=np.int32),
            threshold=np.asarray(threshold, dtype=np.float64),
            flags=np.asarray(flags, dtype=np.int8),
            children=np.array(list(zip(left, right, strict=True)), dtype=np.int32).reshape(-1, 2),
            cat_start=np.asarray(cat_start, dtype=np.int32),
            cat_words=np.asarray(cat_words, dtype=np.int32),
            cat_bits=np.asarray(cat_bits, dtype=np.uint32),
            n_features=n_features,
        )

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """``(rows, trees)`` leaf indices, as ``booster.predict(x, pred_leaf=True)``."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) matrix, got {x.shape}")
        return _leaves(
            x,
            self.root,
            self.feature,
            self.threshold,
            self.flags,
            self.children,
            self.cat_start,
            self.cat_words,
            self.cat_bits,
        )

    def explain(
        self,
        x: np.ndarray,
        leaf_offset: np.ndarray,
        leaf_value: np.ndarray,
        credits: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw scores, and the ``k`` largest attributions of each row by magnitude.

        Leaf ``j`` of tree ``t`` is row ``leaf_offset[t] + j`` of ``leaf_value`` (its
        output) and of ``credits`` (the attributions a row reaching it gets, one column per
        feature, then the bias, which is not read). Returns ``(raw, top, picked)``: the raw
        score summed tree by tree as LightGBM does, the picked feature columns (ties by
        column order, as a stable sort would), and their attributions summed over the trees
        in order.
        """
        if credits.ndim != 2 or credits.shape[1] != self.n_features + 1:
            raise ValueError("credits must have one column per feature, then the bias")
        return _explain(self.leaves(x), leaf_offset, leaf_value, credits, self.n_features, k)


def _node_flags(decision: int, threshold: float) -> int:
    flags = decision & (_CATEGORICAL | _DEFAULT_LEFT)
    if decision & _CATEGORICAL:
        return flags
    missing = (decision >> 2) & 3
    if missing == _MISSING_ZERO:
        flags |= _ZERO_MISSING
    # NumericalDecision: NaN takes the default side with missing type NaN; otherwise it is
    # read as 0, which with missing type Zero takes the default side too.
    nan_left = bool(decision & _DEFAULT_LEFT) if missing else 0.0 <= threshold
    return flags | (_NAN_LEFT if nan_left else 0)


def _jit(fn: Any) -> Any:
    """Compiled without the GIL, and cached on disk so that a worker's start loads it
    instead of compiling it; where numba finds no writable cache location (a read-only
    install without a home directory), compiled at each start instead."""
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:
        return numba.njit(nogil=True)(fn)


def _fields(block: str) -> dict[str, str]:
    out = {}
    for line in block.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split()]


@_jit
def _leaves(
    x: np.ndarray,
    root: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    flags: np.ndarray,
    children: np.ndarray,
    cat_start: np.ndarray,
    cat_words: np.ndarray,
    cat_bits: np.ndarray,
) -> np.ndarray:
    n = x.shape[0]
    # The dense-matrix predictor keeps only values beyond kZeroThreshold (or NaN); the
    # rest reach the trees as 0.
    z = x.copy()
    for i in range(n):
        for j in range(x.shape[1]):
            if abs(z[i, j]) <= ZERO_THRESHOLD:
                z[i, j] = 0.0
    out = np.empty((n, root.shape[0]), dtype=np.int32)
    at = np.empty(n, dtype=np.int32)
    # Tree by tree (one tree's nodes stay in L1 while every row walks it), and within a
    # tree one level at a time across the rows: each row's walk is a chain of dependent
    # loads, and stepping many rows in one loop lets the CPU overlap them (faster than
    # walking a row to its leaf before starting the next: docs/performance.md).
    for t in range(root.shape[0]):
        at[:] = root[t]
        walking = n
        while walking:
            walking = 0
            for i in range(n):
                node = at[i]
                if node < 0:
                    continue
                v = z[i, feature[node]]
                f = flags[node]
                if f & _CATEGORICAL:
                    # static_cast<int> truncates; NaN, negatives and values past INT_MAX
                    # come out negative there (x86) and go right.
                    go = False
                    if v > -1.0 and v < 2147483648.0:
                        c = int(v)
                        word = c >> 5
                        if word < cat_words[node]:
                            go = ((cat_bits[cat_start[node] + word] >> (c & 31)) & 1) == 1
                else:
                    # NumericalDecision without branches on the value: NaN goes to the side
                    # precomputed for it (default side, or as 0 when missing type is None),
                    # 0 to the default side when the missing type is Zero.
                    zero = (v == 0.0) & ((f & _ZERO_MISSING) != 0)
                    go = (
                        ((v <= threshold[node]) & ~zero)
                        | (zero & ((f & _DEFAULT_LEFT) != 0))
                        | ((v != v) & ((f & _NAN_LEFT) != 0))
                    )
                # The child by index, not by a branch on a decision the CPU can't predict.
                node = children[node, 1 - np.int32(go)]
                at[i] = node
                walking += node >= 0
        for i in range(n):
            out[i, t] = ~at[i]
    return out


@_jit
def _explain(
    leaves: np.ndarray,
    leaf_offset: np.ndarray,
    leaf_value: np.ndarray,
    credits: np.ndarray,
    width: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = leaves.shape[0]
    k = min(k, width)
    raw = np.empty(n)
    top = np.empty((n, k), dtype=np.int64)
    picked = np.empty((n, k))
    acc = np.empty(width)
    taken = np.empty(width, dtype=np.bool_)
    for i in range(n):
        # Tree by tree, left to right, as LightGBM adds the raw score and as the sparse
        # product of leaf one-hots with the credit table added the attributions.
        total = 0.0
        acc[:] = 0.0
        for t in range(leaves.shape[1]):
            leaf = leaf_offset[t] + leaves[i, t]
            total += leaf_value[leaf]
            for c in range(width):
                acc[c] += credits[leaf, c]
        raw[i] = total
        # Largest |attribution| first, ties to the lower column: a stable argsort's order.
        taken[:] = False
        for r in range(k):
            best = -1
            for c in range(width):
                if not taken[c] and (best < 0 or abs(acc[c]) > abs(acc[best])):
                    best = c
            taken[best] = True
            top[i, r] = best
            picked[i, r] = acc[best]
    return raw, top, picked
