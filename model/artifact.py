"""A trained model as stored in the registry, and the batch scorer built on it.

A version directory holds ``model.txt`` (the LightGBM booster) and ``meta.json`` (feature
list and dtypes, category levels, calibrator, tier thresholds, metrics, data hash). Rows
are encoded to a float matrix here, once per batch: categories become their level index
(unseen or missing -> NaN, which LightGBM routes like a missing value).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import lightgbm as lgb
import numpy as np

from leadscore.model.drift import LiveBins, Reference
from leadscore.model.exceptions import ModelNotFoundError, RegistryError
from leadscore.model.explain import ExplainMethod, PathExplainer, contributions, top_k
from leadscore.model.integrity import read_meta, verify_checksums
from leadscore.model.scoring import (
    FeatureBatch,
    Reason,
    Rows,
    Scored,
    ScoredRecord,
    Thresholds,
    Tier,
)
from leadscore.schemas import FeatureValue

_Top = tuple[
    list[str],
    Callable[[int, int], Any],
    list[list[int]],
    list[list[float]],
    list[list[float]],
]
"""Top reasons of a batch: names, value reader, picked columns, contributions, rounded."""

FeatureKind = Literal["numeric", "categorical"]
_R = TypeVar("_R")

_CACHE_MAX = 1024
"""Entries per column in a scorer's field caches before they start over: bounds their memory
where a column's texts rarely repeat, e.g. recency in days (two caches per column at most)."""


class _FieldCache(dict[str, Any]):
    """Field text -> what it encodes to, for one column, converted on first sight.

    Feature texts repeat heavily (small counts, "0", a few category levels): a dict hit
    costs far less than parsing a number (docs/performance.md).
    """

    __slots__ = ("_convert",)

    def __init__(self, convert: Callable[[str], Any]) -> None:
        super().__init__()
        self._convert = convert

    def __missing__(self, field: str) -> Any:
        if len(self) >= _CACHE_MAX:
            self.clear()
        value = self[field] = self._convert(field)
        return value


@dataclass(frozen=True, slots=True)
class _Layout:
    """A scorer's view of one kind of :class:`FeatureBatch` (its column names and parser):
    for each model feature, its column in the batch and its field caches."""

    columns: list[int | None]
    encoders: list[_FieldCache | None]
    """Text -> the model's input: a float for numeric features (NaN for empty, unreadable
    or non-finite), the level index for categorical ones (NaN for missing or unseen)."""
    values: list[_FieldCache | None]
    """Text -> the value a reason reports (JSON-ready)."""


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    name: str
    kind: FeatureKind
    levels: tuple[str, ...] = ()
    source_column: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            d["levels"] = list(self.levels)
        if self.source_column is not None:
            d["source_column"] = self.source_column
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureInfo:
        return cls(d["name"], d["kind"], tuple(d.get("levels", ())), d.get("source_column"))


@dataclass(frozen=True, slots=True)
class Calibrator:
    """Monotone map from raw model probability to calibrated probability.

    Isotonic regression is stored as its breakpoints and applied with ``np.interp`` (fast,
    no pickles); Platt scaling as ``sigmoid(a * logit(p) + b)``.
    """

    method: Literal["isotonic", "platt", "none"]
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            # An isotonic end bin that held only one class maps to exactly 0 or 1; no lead is
            # certain, so the map is squeezed into [0.001, 0.999] (order kept, shift <= 0.001).
            return 1e-3 + (1 - 2e-3) * np.interp(p, np.asarray(self.x), np.asarray(self.y))
        if self.method == "platt":
            q = np.clip(p, 1e-12, 1 - 1e-12)
            z = self.a * np.log(q / (1 - q)) + self.b
            return 1.0 / (1.0 + np.exp(-z))
        return p

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "x": list(self.x),
            "y": list(self.y),
            "a": self.a,
            "b": self.b,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibrator:
        if not d:
            return cls("none")
        return cls(
            d["method"],
            tuple(d.get("x", ())),
            tuple(d.get("y", ())),
            float(d.get("a", 1.0)),
            float(d.get("b", 0.0)),
        )


@dataclass(slots=True)
class ModelMeta:
    version: str
    features: list[FeatureInfo]
    calibrator: Calibrator
    thresholds: Thresholds
    created_at: str
    target: str = ""
    horizon_days: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    data_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "kind": "lightgbm",
            "created_at": self.created_at,
            "target": self.target,
            "horizon_days": self.horizon_days,
            "features": [f.as_dict() for f in self.features],
            "calibration": self.calibrator.as_dict(),
            "thresholds": {"hot": self.thresholds.hot, "warm": self.thresholds.warm},
            "metrics": self.metrics,
            "params": self.params,
            "data_hash": self.data_hash,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        known = {
            "version",
            "kind",
            "created_at",
            "target",
            "horizon_days",
            "features",
            "calibration",
            "thresholds",
            "metrics",
            "params",
            "data_hash",
        }
        return cls(
            version=d["version"],
            features=[FeatureInfo.from_dict(f) for f in d["features"]],
            calibrator=Calibrator.from_dict(d.get("calibration")),
            thresholds=Thresholds(float(d["thresholds"]["hot"]), float(d["thresholds"]["warm"])),
            created_at=d.get("created_at", ""),
            target=d.get("target", ""),
            horizon_days=d.get("horizon_days"),
            metrics=d.get("metrics", {}),
            params=d.get("params", {}),
            data_hash=d.get("data_hash", ""),
            extra={k: v for k, v in d.items() if k not in known},
        )


class LightGBMScorer:
    """Batch scorer: one ``predict`` and one explanation call per batch.

    ``explain="path"`` (the default on the stream) gives path attributions, ``"treeshap"``
    exact TreeSHAP via ``pred_contrib``; see :mod:`leadscore.model.explain` for the trade-off.
    """

    def __init__(
        self,
        booster: lgb.Booster,
        meta: ModelMeta,
        *,
        max_reasons: int = 5,
        explain: ExplainMethod = "path",
    ) -> None:
        self.booster = booster
        self.meta = meta
        self.explain = explain
        self._path = PathExplainer(booster) if explain == "path" else None
        self._names = [f.name for f in meta.features]
        self._codes: list[dict[str, int] | None] = [
            {lv: i for i, lv in enumerate(f.levels)} if f.kind == "categorical" else None
            for f in meta.features
        ]
        # Per feature, what its encoding depends on besides the batch's field: the category
        # levels (in code order), or nothing for a numeric one. Models with the same key
        # encode a column alike, so they share it (FeatureBatch.shared).
        self._column_keys = [
            "numeric" if f.kind != "categorical" else "levels" + json.dumps(list(f.levels))
            for f in meta.features
        ]
        self._max_reasons = max_reasons
        ref = meta.extra.get("reference")
        self.reference: Reference | None = Reference.from_dict(ref) if ref else None
        self.live_bins: LiveBins | None = None
        """Counts of the vectors this scorer scored, in its reference's bins, once the
        worker turns counting on (:meth:`count_drift`)."""
        self._layouts: dict[
            tuple[tuple[str, ...], Callable[[int, str], FeatureValue]], _Layout
        ] = {}
        if booster.num_feature() != len(self._names):
            raise RegistryError(
                f"model {meta.version}: booster has {booster.num_feature()} features, "
                f"meta.json lists {len(self._names)}"
            )

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def thresholds(self) -> Thresholds:
        return self.meta.thresholds

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        explain: ExplainMethod = "path",
        max_reasons: int = 5,
        verify: bool = True,
    ) -> LightGBMScorer:
        """Load a version directory; with ``verify``, its files must match their checksums
        (a version saved without any is loaded as it is) and ``meta.json`` its typed model.

        This loads ``model.txt`` in this process: a worker first has a child process try it
        (``Registry.verify``), as a broken file can crash LightGBM's parser.
        """
        d = Path(directory)
        for name in ("model.txt", "meta.json"):
            if not (d / name).is_file():
                raise ModelNotFoundError(f"no model in {d}: {name} is missing")
        if verify:
            verify_checksums(d)
        try:
            meta = ModelMeta.from_dict(read_meta(d))
            booster = lgb.Booster(model_file=str(d / "model.txt"))
        except (KeyError, TypeError, ValueError, lgb.basic.LightGBMError) as exc:
            raise RegistryError(f"model in {d} is unreadable: {exc}") from exc
        return cls(booster, meta, explain=explain, max_reasons=max_reasons)

    def encode(self, rows: Rows) -> np.ndarray:
        """Rows (dicts by feature name, or a :class:`FeatureBatch`) to the booster's matrix."""
        if isinstance(rows, FeatureBatch):
            return self._encode_batch(rows, rows.flat(), self._layout(rows))
        x = np.full((len(rows), len(self._names)), np.nan, dtype=np.float64)
        for i, row in enumerate(rows):
            for j, name in enumerate(self._names):
                v = row.get(name)
                if v is None:
                    continue
                codes = self._codes[j]
                if codes is not None:
                    code = codes.get(str(v))
                    if code is not None:
                        x[i, j] = code
                elif not isinstance(v, str):
                    x[i, j] = v
                else:
                    try:
                        x[i, j] = float(v)
                    except ValueError:
                        continue
        return x

    def _layout(self, batch: FeatureBatch) -> _Layout:
        """Columns and field caches for batches shaped like ``batch`` (one per store kind)."""
        key = (batch.names, batch.parse)
        layout = self._layouts.get(key)
        if layout is not None:
            return layout
        column_of = {name: c for c, name in enumerate(batch.names)}
        columns = [column_of.get(name) for name in self._names]
        parse = batch.parse
        encoders: list[_FieldCache | None] = []
        values: list[_FieldCache | None] = []
        for j, c in enumerate(columns):
            levels = self._codes[j]
            if c is None:
                encoders.append(None)
            elif levels is None:
                encoders.append(_FieldCache(_as_float))
            else:
                encoders.append(_FieldCache(_coder(levels, parse, c)))
            values.append(
                None if c is None else _FieldCache(functools.partial(_reason_value, parse, c))
            )
        layout = self._layouts[key] = _Layout(columns, encoders, values)
        if len(self._layouts) > 8:  # a new parser per batch would otherwise pile up
            self._layouts = {key: layout}
        return layout

    def _encode_batch(self, batch: FeatureBatch, flat: list[str], layout: _Layout) -> np.ndarray:
        """Column by column from the batch's fields (``flat``, row-major), each field through
        its column's cache.

        Gives the same matrix as encoding ``batch.rows()``, except that a non-finite number
        is read as missing in every numeric column (the store never writes one).
        """
        n, width = len(batch), len(batch.names)
        x = np.full((n, len(self._names)), np.nan, dtype=np.float64)
        if not n:
            return x
        shared = batch.shared
        for j, (c, cache) in enumerate(zip(layout.columns, layout.encoders, strict=True)):
            if c is not None and cache is not None:  # both set or neither
                key = (c, self._column_keys[j])
                column = shared.get(key)
                if column is None:
                    column = shared[key] = np.fromiter(
                        map(cache.__getitem__, flat[c::width]), np.float64, n
                    )
                x[:, j] = column
        return x

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_threads=1))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Calibrated scores of the encoded rows ``x``."""
        return np.clip(self.meta.calibrator.apply(self.predict_raw(x)), 0.0, 1.0)

    def set_reference(self, reference: Reference) -> None:
        self.reference = reference
        if self.live_bins is not None:
            self.live_bins = LiveBins(reference)

    def count_drift(self) -> LiveBins | None:
        """Start counting every scored vector into the reference's bins (a model saved
        without a reference has none to count into)."""
        if self.live_bins is None and self.reference is not None:
            self.live_bins = LiveBins(self.reference)
        return self.live_bins

    def score_batch(self, rows: Rows, *, explain: bool = True) -> list[Scored]:
        return [Scored(s, t, tuple(r)) for s, t, r in self._scored(rows, explain, Reason)]

    def score_records(self, rows: Rows) -> list[ScoredRecord]:
        # The reasons built as the record's dicts directly: a Reason per reason only to
        # convert it showed up among the worker's costs.
        return [ScoredRecord(s, t, r) for s, t, r in self._scored(rows, True, _reason_dict)]

    def _scored(
        self, rows: Rows, explain: bool, make: Callable[[str, Any, float], _R]
    ) -> list[tuple[float, Tier, list[_R]]]:
        """Each row's score, tier and top reasons, each reason made by ``make(feature, value,
        contribution)`` (reasons whose contribution is exactly 0 left out)."""
        if not len(rows):
            return []
        scores, tiers, top = self._score(rows, explain)
        if top is None:
            return [(s, t, []) for s, t in zip(scores, tiers, strict=True)]
        names, value, tops, amounts, rounded = top
        return [
            (
                score,
                tier,
                [
                    make(names[j], value(i, j), r)
                    for j, a, r in zip(tops[i], amounts[i], rounded[i], strict=True)
                    if a != 0.0
                ],
            )
            for i, (score, tier) in enumerate(zip(scores, tiers, strict=True))
        ]

    def _score(self, rows: Rows, explain: bool) -> tuple[list[float], list[Tier], _Top | None]:
        """Scores, tiers and (when explaining) the top reasons of every row, as lists:
        feature names, a ``value(row, column)`` reader, and per row the picked columns,
        their contributions and those rounded to 4 decimals."""
        value: Callable[[int, int], Any]
        if isinstance(rows, FeatureBatch):
            flat = rows.flat()
            layout = self._layout(rows)
            x = self._encode_batch(rows, flat, layout)
            width = len(rows.names)
            columns = layout.columns
            values = layout.values

            def value(i: int, j: int) -> Any:
                c = columns[j]
                if c is None:
                    return None
                return values[j][flat[i * width + c]]  # type: ignore[index]

        else:
            x = self.encode(rows)
            dict_rows = rows

            def value(i: int, j: int) -> Any:
                return _json_value(dict_rows[i].get(self._names[j]))

        names = self._names
        k = min(self._max_reasons, len(names))
        picked: np.ndarray | None = None
        if explain and self._path is not None:
            # One pass over the trees gives the score, the attributions and the top k.
            raw, top, picked = self._path.probabilities_and_top(self.booster, x, k)
        elif not explain and self._path is not None:
            raw = self._path.probabilities(self.booster, x)
        else:
            raw = self.predict_raw(x)
            if explain:
                top, picked = top_k(contributions(self.booster, x, self.explain, self._path), k)
        probs = np.clip(self.meta.calibrator.apply(raw), 0.0, 1.0)
        if self.live_bins is not None:
            self.live_bins.add(x, probs)
        scores = probs.tolist()
        tier = self.meta.thresholds.tier
        tiers = [tier(score) for score in scores]
        if picked is None:
            return scores, tiers, None
        # The picked values go to Python lists in one step each (numpy scalars are slow to
        # index).
        # Rounded here, all at once: np.round(a, 4) gives the double nearest a's 4-decimal
        # rounding, as round(a, 4) does (they can differ only on exact decimal ties).
        return (
            scores,
            tiers,
            (names, value, top.tolist(), picked.tolist(), np.round(picked, 4).tolist()),
        )


def _reason_dict(feature: str, value: Any, contribution: float) -> dict[str, Any]:
    return {"feature": feature, "value": value, "contribution": contribution}


def _as_float(field: str) -> float:
    """A numeric field as the model reads it: empty, unreadable or non-finite -> NaN."""
    try:
        value = float(field) if field else math.nan
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _coder(
    levels: dict[str, int], parse: Callable[[int, str], FeatureValue], column: int
) -> Callable[[str], float]:
    def code(field: str) -> float:
        value = parse(column, field)
        return math.nan if value is None else float(levels.get(str(value), math.nan))

    return code


def _reason_value(parse: Callable[[int, str], FeatureValue], column: int, field: str) -> Any:
    return _json_value(parse(column, field))


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v
