"""Drift: a model's reference histograms, live bin counts, and the tests that compare them.

A model version stores, from its training data, a histogram of every feature and of its
score (:class:`Reference`): numeric features in up to ``max_bins`` quantile bins, categorical
ones one bin per frequent level and one for the rest, each with a bin for missing values. The
worker counts every feature vector it scores into the same bins (:class:`LiveBins`, a few
numpy operations per batch) and exports the counts; the monitor compares a window of them
with the reference.

The statistics are the population stability index (PSI, the symmetrised Kullback-Leibler
divergence of the two histograms) and the Jensen-Shannon distance. A fixed PSI bound (0.1,
0.25) means different things at different sizes: with ``n`` live and ``m`` reference vectors
drawn from the same distribution over ``k`` bins, ``PSI / (1/n + 1/m)`` is asymptotically
chi-squared with ``k - 1`` degrees of freedom. Vectors are not independent draws (every
event of a lead repeats its profile, and behaviour moves with the calendar), so the reference
also stores each histogram's *dispersion*: the ratio of the PSI between consecutive stretches
of the reference and the rest of it to that chi-squared expectation, as a function of the
window's length (see :func:`_dispersion`); it scales the null distribution (a
quasi-likelihood correction). The alarm bound of a feature is that scaled chi-squared
quantile at ``alpha / (number of tests)``, so the family-wise false-alarm rate per window is
at most ``alpha`` (Bonferroni).

Examples
--------
>>> ref = np.array([500, 300, 200]); same = np.array([50, 30, 20])
>>> psi(ref, same) < 1e-3  # the same shares (up to the 0.5 added to every bin)
True
>>> psi(ref, np.array([20, 30, 50])) > psi_threshold(ref, 100, dispersion=1.0, tests=1, alpha=0.01)
True
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.stats import chi2

SCORE = "score"
"""The name the score's own histogram goes by beside the features."""
MISSING = "missing"
FLUSH_ROWS = 256
"""``LiveBins`` bins the rows it was given once this many have gathered (or when read)."""
BROADCAST_ROWS = 64
"""Below this many rows, ``LiveBins.add`` bins every numeric column in one broadcast
comparison; above it, with one ``searchsorted`` per column."""
SMOOTHING = 0.5
"""Added to every bin count before taking logs (an empty bin would make PSI infinite)."""


@dataclass(frozen=True, slots=True)
class Bins:
    """One histogram's bins. A value falls in bin ``b`` when ``edges[b-1] < v <= edges[b]``
    (numeric, ``len(edges) + 1`` bins); a categorical code ``c`` in bin ``lut[c]``; a missing
    (or unseen) value in the last bin."""

    name: str
    kind: str
    edges: tuple[float, ...]
    lut: tuple[int, ...]
    labels: tuple[str, ...]
    counts: tuple[int, ...]
    dispersion: float = 1.0
    dispersion_slope: float = 0.0
    """The null variance of a window of ``n`` vectors is ``dispersion + dispersion_slope * n``
    times that of independent draws (see :func:`_dispersion`)."""

    def dispersion_at(self, n: float) -> float:
        return self.dispersion + self.dispersion_slope * n

    @property
    def size(self) -> int:
        return len(self.labels)

    @property
    def bin_names(self) -> tuple[str, ...]:
        """Each bin's name on the wire (the ``bin`` label of the workers' counters): its
        index, and ``missing`` for the last."""
        return (*(str(k) for k in range(self.size - 1)), MISSING)

    def index(self, column: np.ndarray) -> np.ndarray:
        """The bin of each value of ``column`` (the model's encoded input)."""
        missing = self.size - 1
        nan = np.isnan(column)
        if self.kind == "categorical":
            if not self.lut:
                # No level in the reference (a training history without that source, say
                # no enrichment yet): every value is unseen, and there is no table to index.
                return np.full(column.shape, missing, dtype=np.int64)
            lut = np.asarray(self.lut, dtype=np.int64)
            codes = np.where(nan, 0, column).astype(np.int64)
            inside = (codes >= 0) & (codes < len(lut))
            out = np.where(inside, lut[np.clip(codes, 0, max(len(lut) - 1, 0))], missing)
        else:
            out = np.searchsorted(np.asarray(self.edges, dtype=np.float64), column, side="left")
        return np.where(nan, missing, out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": list(self.edges),
            "lut": list(self.lut),
            "labels": list(self.labels),
            "counts": list(self.counts),
            "dispersion": self.dispersion,
            "dispersion_slope": self.dispersion_slope,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bins:
        return cls(
            str(d["name"]),
            str(d["kind"]),
            tuple(float(e) for e in d["edges"]),
            tuple(int(i) for i in d["lut"]),
            tuple(str(label) for label in d["labels"]),
            tuple(int(c) for c in d["counts"]),
            float(d.get("dispersion", 1.0)),
            float(d.get("dispersion_slope", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class Reference:
    """A model version's reference histograms: its features in model order, then its score."""

    features: tuple[Bins, ...]
    score: Bins
    rows: int
    source: str
    """What the histograms were counted over (``events``: every event's feature vector in
    the training history, as the worker sees them; ``training rows``: the training table)."""

    @property
    def all(self) -> tuple[Bins, ...]:
        return (*self.features, self.score)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "source": self.source,
            "features": [b.as_dict() for b in self.features],
            "score": self.score.as_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reference:
        return cls(
            tuple(Bins.from_dict(b) for b in d["features"]),
            Bins.from_dict(d["score"]),
            int(d["rows"]),
            str(d.get("source", "")),
        )


def _numeric_bins(name: str, col: np.ndarray, max_bins: int) -> Bins:
    present = col[~np.isnan(col)]
    if len(present):
        qs = np.quantile(present, np.linspace(0, 1, max_bins + 1)[1:-1])
        edges = tuple(float(e) for e in np.unique(qs))
    else:
        edges = ()
    labels = []
    lo = "-inf"
    for e in edges:
        labels.append(f"({lo}, {e:g}]")
        lo = f"{e:g}"
    labels.append(f"({lo}, inf)")
    labels.append(MISSING)
    return Bins(name, "numeric", edges, (), tuple(labels), ())


def _categorical_bins(name: str, col: np.ndarray, levels: Sequence[str], max_bins: int) -> Bins:
    codes = col[~np.isnan(col)].astype(np.int64)
    freq = np.bincount(codes, minlength=len(levels)) if len(levels) else np.zeros(0, np.int64)
    # The most frequent levels get a bin each (in code order); the rest share "other".
    keep = sorted(np.argsort(-freq, kind="stable")[: max_bins - 1].tolist()) if len(freq) else []
    if len(levels) <= max_bins:
        keep = list(range(len(levels)))
    other = len(keep) if len(keep) < len(levels) else None
    lut = [other if other is not None else 0] * len(levels)
    for b, code in enumerate(keep):
        lut[code] = b
    labels = [levels[c] for c in keep] + (["other"] if other is not None else []) + [MISSING]
    return Bins(name, "categorical", (), tuple(lut), tuple(labels), ())


def _dispersion_at(bins: Bins, idx: np.ndarray, blocks: int) -> float:
    """An upper bound (mean plus two standard errors) of the mean over ``blocks``
    consecutive blocks of PSI(block, rest) / E_iid[PSI]: a handful of blocks estimate it
    roughly, and an underestimate is a false alarm."""
    total = np.asarray(bins.counts, dtype=np.float64)
    df = int(np.count_nonzero(total)) - 1
    ratios = []
    for part_idx in np.array_split(idx, blocks):
        part = np.bincount(part_idx, minlength=bins.size).astype(np.float64)
        rest = total - part
        n, m = part.sum(), rest.sum()
        if n < 20 or m < 20 or df < 1:
            continue
        ratios.append(psi(rest, part) / (df * (1.0 / n + 1.0 / m)))
    if len(ratios) < 2:
        return float(ratios[0]) if ratios else 1.0
    r = np.asarray(ratios)
    return float(r.mean() + 2.0 * r.std(ddof=1) / np.sqrt(len(r)))


def _dispersion(bins: Bins, idx: np.ndarray) -> tuple[float, float]:
    """How much more the histogram varies between stretches of the reference than
    independent draws would, as ``a + b * n`` for a window of ``n`` vectors.

    Rows in time order make the blocks what a live window is: runs of events in which a
    lead's profile repeats (the intercept ``a``, a design effect) and behaviour moves with the
    calendar (the slope ``b``: a variance that does not shrink with the window, so relative to
    the independent-draws variance it grows with ``n``). Both are fitted to the dispersion
    measured with 20, 10 and 5 blocks; a variation the training data itself shows raises no
    alarm."""
    sizes, values = [], []
    for blocks in (20, 10, 5):
        if len(idx) // blocks >= 100:
            sizes.append(len(idx) / blocks)
            values.append(_dispersion_at(bins, idx, blocks))
    if not sizes:
        return 1.0, 0.0
    if len(sizes) == 1:
        return max(1.0, values[0]), 0.0
    slope, icpt = (float(v) for v in np.polyfit(sizes, values, 1))
    if slope < 0:
        return max(1.0, float(np.mean(values))), 0.0
    return max(1.0, icpt), slope


def build_reference(
    x: np.ndarray,
    names: Sequence[str],
    kinds: Sequence[str],
    levels: Sequence[Sequence[str]],
    scores: np.ndarray,
    *,
    source: str = "training rows",
    max_bins: int = 10,
) -> Reference:
    """Reference histograms of the encoded matrix ``x`` (one column per model feature, rows
    in time order where they have one) and of ``scores``, each with its dispersion."""
    specs: list[Bins] = []
    columns = [x[:, j] for j in range(x.shape[1])] + [np.asarray(scores, dtype=np.float64)]
    for j, col in enumerate(columns):
        if j == len(names):
            b = _numeric_bins(SCORE, col, max_bins)
        elif kinds[j] == "categorical":
            b = _categorical_bins(names[j], col, levels[j], max_bins)
        else:
            b = _numeric_bins(names[j], col, max_bins)
        idx = b.index(col)
        counts = tuple(int(c) for c in np.bincount(idx, minlength=b.size))
        b = replace(b, counts=counts)
        a, slope = _dispersion(b, idx)
        b = replace(b, dispersion=a, dispersion_slope=slope)
        specs.append(b)
    return Reference(tuple(specs[:-1]), specs[-1], int(x.shape[0]), source)


class LiveBins:
    """Counts of the vectors a model scored, in its reference's bins: one row per feature
    and one for the score, padded to the widest histogram.

    ``add`` is called on the hot path once per batch. It only keeps the batch's matrix until
    ``FLUSH_ROWS`` rows have gathered (a small batch would otherwise pay the binning's fixed
    cost, a handful of numpy calls, for a few rows); reading ``counts`` (a scrape) bins what
    is pending first."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        hists = reference.all
        self.width = max(b.size for b in hists)
        self._counts = np.zeros((len(hists), self.width), dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        # Numeric histograms (the score included, last): edges padded with +inf, so that
        # "how many edges lie below v" is one broadcast comparison for every column at once.
        self._num = [j for j, b in enumerate(hists) if b.kind != "categorical"]
        edges = max((len(hists[j].edges) for j in self._num), default=0)
        self._edges = np.full((len(self._num), max(edges, 1)), np.inf)
        for i, j in enumerate(self._num):
            self._edges[i, : len(hists[j].edges)] = hists[j].edges
        self._num_missing = np.asarray([hists[j].size - 1 for j in self._num], dtype=np.int64)
        self._num_edges = [np.asarray(hists[j].edges, dtype=np.float64) for j in self._num]
        # Categorical ones: a table from level code to bin, one row per feature, its last
        # column for a missing or unseen level.
        self._cat = [j for j, b in enumerate(hists) if b.kind == "categorical"]
        levels = max((len(hists[j].lut) for j in self._cat), default=0)
        self._lut = np.zeros((len(self._cat), levels + 1), dtype=np.int64)
        for i, j in enumerate(self._cat):
            b = hists[j]
            self._lut[i, :] = b.size - 1
            self._lut[i, : len(b.lut)] = b.lut
        self._levels = levels
        self._offsets = np.arange(len(hists), dtype=np.int64) * self.width

    @property
    def counts(self) -> np.ndarray:
        with self._lock:
            self._flush()
            return self._counts

    def add(self, x: np.ndarray, scores: np.ndarray) -> None:
        n = x.shape[0]
        if not n:
            return
        with self._lock:
            self._pending.append((x, np.asarray(scores, dtype=np.float64)))
            self._pending_rows += n
            if self._pending_rows >= FLUSH_ROWS:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        parts, self._pending, self._pending_rows = self._pending, [], 0
        n = sum(x.shape[0] for x, _ in parts)
        full = np.empty((n, parts[0][0].shape[1] + 1), dtype=np.float64)
        at = 0
        for x, scores in parts:
            full[at : at + x.shape[0], :-1] = x
            full[at : at + x.shape[0], -1] = scores
            at += x.shape[0]
        idx = np.empty(full.shape, dtype=np.int64)
        if self._num:
            v = full[:, self._num]
            if n <= BROADCAST_ROWS:
                # Few rows: one comparison of every value with every edge beats a call per
                # column, whose fixed cost dominates.
                bins = (v[:, :, None] > self._edges[None, :, :]).sum(axis=2)
            else:
                bins = np.empty(v.shape, dtype=np.int64)
                for i, e in enumerate(self._num_edges):
                    bins[:, i] = np.searchsorted(e, v[:, i], side="left")
            idx[:, self._num] = np.where(np.isnan(v), self._num_missing, bins)
        if self._cat:
            c = full[:, self._cat]
            codes = np.where(np.isnan(c) | (c < 0) | (c >= self._levels), self._levels, c)
            rows = np.arange(len(self._cat))[None, :]
            idx[:, self._cat] = self._lut[rows, codes.astype(np.int64)]
        idx += self._offsets
        self._counts += np.bincount(idx.ravel(), minlength=self._counts.size).reshape(
            self._counts.shape
        )


# ------------------------------------------------------------------------------- statistics
def _probs(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64) + SMOOTHING
    return c / c.sum()


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index of ``live`` against ``reference`` (bin counts)."""
    p, q = _probs(live), _probs(reference)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(reference: np.ndarray, live: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log; between 0 and sqrt(ln 2))."""
    p, q = _probs(live), _probs(reference)
    mid = (p + q) / 2
    div = 0.5 * np.sum(p * np.log(p / mid)) + 0.5 * np.sum(q * np.log(q / mid))
    return float(np.sqrt(max(div, 0.0)))


def psi_threshold(
    reference: np.ndarray, live_size: float, *, dispersion: float, tests: int, alpha: float
) -> float:
    """The PSI a window of ``live_size`` vectors exceeds with probability ``alpha / tests``
    when nothing drifted (see the module docstring)."""
    ref = np.asarray(reference, dtype=np.float64)
    m = ref.sum()
    df = max(1, int(np.count_nonzero(ref)) - 1)
    if live_size <= 0 or m <= 0:
        return float("inf")
    q = float(chi2.ppf(1.0 - alpha / max(tests, 1), df))
    return float(dispersion * q * (1.0 / live_size + 1.0 / m))


def js_threshold(psi_bound: float) -> float:
    """The JS distance matching a PSI bound: for small differences the JS divergence is
    PSI / 8 (both are second-order in the difference of the histograms)."""
    return float(np.sqrt(psi_bound / 8.0))


@dataclass(frozen=True, slots=True)
class DriftResult:
    feature: str
    psi: float
    psi_threshold: float
    js_distance: float
    js_threshold: float
    window: int
    live: tuple[int, ...]

    @property
    def alarm(self) -> bool:
        return self.psi > self.psi_threshold


def compare(
    reference: Reference, live: np.ndarray, *, alpha: float = 0.01, min_window: int = 200
) -> list[DriftResult]:
    """Each feature's and the score's drift for a window of live counts (``LiveBins.counts``
    rows, or their difference between two scrapes). Below ``min_window`` vectors the bound
    is infinite: no alarm from a handful of events."""
    tests = len(reference.all)
    out = []
    for j, b in enumerate(reference.all):
        row = np.asarray(live[j][: b.size], dtype=np.float64)
        ref = np.asarray(b.counts, dtype=np.float64)
        n = float(row.sum())
        bound = (
            psi_threshold(ref, n, dispersion=b.dispersion_at(n), tests=tests, alpha=alpha)
            if n >= min_window
            else float("inf")
        )
        p = psi(ref, row) if n else 0.0
        out.append(
            DriftResult(
                b.name,
                p,
                bound,
                js_distance(ref, row) if n else 0.0,
                js_threshold(bound),
                int(n),
                tuple(int(c) for c in row),
            )
        )
    return out
