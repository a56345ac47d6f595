"""Training and batch scoring from CRM tables (CSV with any delimiter, or Parquet).

``train_from_table`` reads a table, cleans it (see below), sets aside ID-like and constant
columns, screens for target leakage (``model.leakage``), trains a calibrated LightGBM model
with a time-boxed cross-validated search (``model.train``) and saves it with
``report.json``/``report.html``. ``predict_table`` scores another table with a saved model,
keeping the row order and mapping each reason back to the original column name and value.

Cleaning rule
-------------
Text cells are stripped. A cell that is empty or one of ``placeholders`` (``NA``, ``n/a``,
``null``, ``-``, ...; compared case-insensitively) is missing. An untouched drop-down
(``Select``, ``select``, ``-- Select --``, ``Please select``, ...; see
``DROPDOWN_PLACEHOLDERS``) is different: the lead saw the question and skipped it, which is
information, so with ``placeholder_as_level=True`` (the default) it becomes the explicit level
``NOT_SELECTED`` (``"(not selected)"``) of a categorical column, while genuinely empty cells
stay missing. A column whose other filled cells are all numbers becomes numeric, and there
the drop-down placeholder is missing too: a number has no "not selected" level. With
``placeholder_as_level=False`` drop-down placeholders are treated like any other placeholder
(missing when listed in ``placeholders``, as ``select`` is by default). The choice is stored in
the model's metadata and ``predict_table`` applies the same rule when scoring; models saved
before the option existed read ``Select`` as missing, and are scored that way.

Feature names inside the model are LightGBM-safe versions of the column names (LightGBM
refuses JSON punctuation such as ``:`` or ``"``); ``FeatureInfo.source_column`` keeps the
original name so nothing user-facing shows the mangled one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from leadscore.model.artifact import FeatureInfo, LightGBMScorer
from leadscore.model.evaluate import evaluate, logistic_baseline, segment_metrics
from leadscore.model.exceptions import DataError, ModelNotFoundError
from leadscore.model.gate import GatePolicy
from leadscore.model.leakage import LeakageWarning, scan
from leadscore.model.promotion import HeldOut, decision_record, finish_card, judge, write_card
from leadscore.model.registry import Registry
from leadscore.model.report import importance_summary, write_report
from leadscore.model.train import (
    Dataset,
    Fitted,
    TrainConfig,
    encode_frame,
    fit,
    new_version,
    save_fitted,
)

log = logging.getLogger(__name__)

DEFAULT_PLACEHOLDERS: tuple[str, ...] = ("", "select", "na", "n/a", "null", "none", "-", "?", "nan")
"""Cell values (compared stripped and case-insensitively) that mean "missing"; ``select`` only
when drop-down placeholders are not kept as a level."""

NOT_SELECTED = "(not selected)"
"""The level an untouched drop-down becomes in a categorical column."""

DROPDOWN_PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "select",
        "select one",
        "select an option",
        "please select",
        "please select one",
        "choose",
        "choose one",
        "please choose",
        "not selected",
        "none selected",
    }
)
"""Drop-down placeholders, compared case-insensitively after trimming spaces and the
decoration around them (``-- Select --``, ``<select>``, ``(not selected)``)."""

ID_UNIQUE_RATIO = 0.95
"""A text or integer column whose filled values are this unique identifies rows, not leads'
properties: it can't generalise to new rows, so it is not used as a feature."""

POSITIVE = frozenset(
    {"yes", "y", "true", "t", "1", "1.0", "converted", "won", "positive", "pos", "win"}
)
NEGATIVE = frozenset(
    {"no", "n", "false", "f", "0", "0.0", "lost", "negative", "neg", "not converted", "loss"}
)

_PARQUET_MAGIC = b"PAR1"
_SAFE = re.compile(r"[^0-9A-Za-z_]+")
_DECORATION = " \t-_*.:<>[](){}"
_SPACES = re.compile(r"\s+")

Say = Callable[[str], None]


# --------------------------------------------------------------------------- reading


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in {".parquet", ".pq"}:
        return True
    with path.open("rb") as fh:
        return fh.read(4) == _PARQUET_MAGIC


def _sniff_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        # The sniffer gives up on one-column files and some heavily quoted ones; for those a
        # comma is both the common case and harmless.
        return ","


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (delimiter sniffed, BOM tolerated) or Parquet file.

    CSV cells are read as text, exactly as written; ``clean_table`` interprets them.

    Raises
    ------
    DataError
        When the file is missing, empty or can't be parsed.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such file: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty")
    try:
        if _is_parquet(p):
            df = pd.read_parquet(p)
        else:
            with p.open("r", encoding="utf-8-sig", errors="replace", newline="") as fh:
                sample = fh.read(64 * 1024)
            if not sample.strip():
                raise DataError(f"{p} is empty")
            sep = _sniff_delimiter(sample)
            df = pd.read_csv(
                p,
                sep=sep,
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",
                encoding_errors="replace",
                quotechar='"',
            )
    except DataError:
        raise
    except ImportError as exc:
        raise DataError(
            f"reading {p} needs a Parquet engine, the parquet extra: "
            "pip install 'leadscore[parquet]'"
        ) from exc
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"can't read {p} as CSV or Parquet: {exc}") from exc
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise DataError(f"{p} has no data rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _placeholder_set(placeholders: Sequence[str]) -> frozenset[str]:
    return frozenset(s.strip().lower() for s in placeholders)


def is_dropdown_placeholder(value: str) -> bool:
    """Whether a text cell is an untouched drop-down (``Select``, ``-- Please select --``)."""
    key = _SPACES.sub(" ", value.strip(_DECORATION).lower())
    return key in DROPDOWN_PLACEHOLDERS


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def normalise_text(
    df: pd.DataFrame,
    placeholders: Sequence[str] = DEFAULT_PLACEHOLDERS,
    *,
    placeholder_as_level: bool = True,
) -> pd.DataFrame:
    """Strip text cells and apply the module's cleaning rule; types are left alone.

    Placeholders become missing; with ``placeholder_as_level`` drop-down placeholders become
    ``NOT_SELECTED`` instead (``clean_table`` turns them missing again in numeric columns).
    """
    ph = _placeholder_set(placeholders)

    def cell(v: Any) -> str | None:
        if _missing(v):
            return None
        text = str(v).strip()
        if placeholder_as_level and is_dropdown_placeholder(text):
            return NOT_SELECTED
        return None if text.lower() in ph else text

    out = {}
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_bool_dtype(col):
            col = (
                col.astype(object)
                .where(col.notna(), None)
                .map(lambda v: None if v is None else str(bool(v)))
            )
        if pd.api.types.is_numeric_dtype(col):
            out[c] = col
            continue
        vals = [cell(v) for v in col.astype(object).tolist()]
        out[c] = pd.Series(vals, index=df.index, dtype=object)
    return pd.DataFrame(out, index=df.index)


def clean_table(
    df: pd.DataFrame,
    placeholders: Sequence[str] = DEFAULT_PLACEHOLDERS,
    *,
    placeholder_as_level: bool = True,
) -> pd.DataFrame:
    """``normalise_text`` plus numeric-looking text columns converted to numbers.

    A column is numeric when every filled cell other than ``NOT_SELECTED`` is a number; its
    ``NOT_SELECTED`` cells become missing.
    """
    out = normalise_text(df, placeholders, placeholder_as_level=placeholder_as_level)
    for c in out.columns:
        col = out[c]
        if pd.api.types.is_numeric_dtype(col):
            out[c] = col.astype(float) if not pd.api.types.is_integer_dtype(col) else col
            continue
        filled = col.notna() & (col != NOT_SELECTED)
        if not filled.any():
            continue
        num = pd.to_numeric(col.where(filled), errors="coerce")
        if bool(num[filled].notna().all()):
            out[c] = num.astype(float)
    return out


# --------------------------------------------------------------------------- target


def parse_target(
    col: pd.Series, placeholders: Sequence[str] = DEFAULT_PLACEHOLDERS
) -> tuple[np.ndarray, dict[str, int]]:
    """Binary labels (float, NaN where missing) and the value -> label mapping used.

    Raises
    ------
    DataError
        When a filled value is not a recognised yes/no-like token.
    """
    ph = _placeholder_set(placeholders)
    y = np.full(len(col), np.nan)
    mapping: dict[str, int] = {}
    unknown: set[str] = set()
    for i, v in enumerate(col.astype(object).tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, bool | np.bool_):
            token = "true" if v else "false"
        elif isinstance(v, int | float | np.integer | np.floating):
            token = "1" if float(v) == 1.0 else "0" if float(v) == 0.0 else str(v)
        else:
            token = str(v).strip().lower()
        # An outcome nobody picked is unknown, whether or not features keep it as a level.
        if token in ph or is_dropdown_placeholder(token):
            continue
        if token in POSITIVE:
            y[i] = 1.0
            mapping[str(v).strip()] = 1
        elif token in NEGATIVE:
            y[i] = 0.0
            mapping[str(v).strip()] = 0
        else:
            unknown.add(str(v).strip())
    if unknown:
        seen = sorted(unknown | set(mapping))[:20]
        raise DataError(
            f"target column {col.name!r} is not binary: can't map {sorted(unknown)[:10]} "
            f"to yes/no (distinct values: {seen}); expected yes/no, true/false, 1/0, "
            "converted/lost, won/lost or positive/negative"
        )
    return y, mapping


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    column: str
    feature: str
    kind: str
    """``numeric`` or ``categorical``."""


def safe_names(columns: Sequence[str]) -> dict[str, str]:
    """Original column name -> unique LightGBM-safe feature name (ASCII word characters)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for c in columns:
        base = _SAFE.sub("_", c).strip("_") or "column"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out[c] = name
    return out


def id_like(col: pd.Series) -> bool:
    """Near-unique text or integer values: a row identifier, not a lead property."""
    filled = col.dropna()
    if len(filled) < 20 or len(filled) < 0.5 * len(col):
        return False
    if pd.api.types.is_numeric_dtype(filled) and not bool(
        np.all(np.mod(filled.to_numpy(dtype=float), 1) == 0)
    ):
        return False
    return filled.nunique() / len(filled) > ID_UNIQUE_RATIO


def plan_columns(
    df: pd.DataFrame,
    target: str,
    keep_columns: Sequence[str] = (),
    sensitive: Sequence[str] = (),
) -> tuple[list[ColumnPlan], list[dict[str, str]]]:
    """Feature columns and the dropped ones with the reason (ID-like, constant, sensitive)."""
    names = safe_names([c for c in df.columns if c != target])
    plans: list[ColumnPlan] = []
    dropped: list[dict[str, str]] = []
    for c in df.columns:
        if c == target:
            continue
        if c in sensitive or names[c] in sensitive:
            dropped.append({"column": c, "why": "sensitive: reported on, never a feature"})
            continue
        col = df[c]
        nunique = col.nunique(dropna=True)
        if nunique <= 1:
            why = "empty" if nunique == 0 else f"constant (only {col.dropna().iloc[0]!r})"
            dropped.append({"column": c, "why": why})
            continue
        if id_like(col) and c not in keep_columns:
            dropped.append(
                {
                    "column": c,
                    "why": f"ID-like: {nunique} distinct values in "
                    f"{int(col.notna().sum())} filled rows",
                }
            )
            continue
        kind = "numeric" if pd.api.types.is_numeric_dtype(col) else "categorical"
        plans.append(ColumnPlan(c, names[c], kind))
    return plans, dropped


# --------------------------------------------------------------------------- training


def train_from_table(
    path: str | Path,
    target: str,
    *,
    out_dir: str | Path,
    keep_columns: Sequence[str] = (),
    segment_column: str | None = None,
    hot_share: float = 0.10,
    warm_share: float = 0.30,
    time_budget_s: float = 60.0,
    seed: int = 7,
    promote: bool = True,
    force: bool = False,
    policy: GatePolicy | None = None,
    progress: Say | None = None,
    placeholders: Sequence[str] = DEFAULT_PLACEHOLDERS,
    cv_folds: int = 5,
    test_fraction: float = 0.15,
    max_trials: int = 40,
    placeholder_as_level: bool = True,
    sensitive: Sequence[str] = (),
) -> dict[str, Any]:
    """Train a calibrated lead scorer from a CSV/Parquet table and save it in the registry.

    Parameters
    ----------
    path
        The table; one row per lead, one column holding the outcome.
    target
        The outcome column (yes/no, true/false, 1/0, converted/lost, won/lost, ...).
    out_dir
        Registry root (``MODEL_DIR``); the model becomes a new version directory in it.
    keep_columns, segment_column, sensitive
        Columns to use even though they look ID-like or leaky (the leakage warning stays);
        a column whose values get their own held-out metrics in the report; columns never
        used as features (LEADSCORE_SENSITIVE; the segment column may be one).
    hot_share, warm_share
        Shares of leads put in the hot tier and (next) in the warm tier.
    time_budget_s, max_trials
        Wall-clock budget and most trials of the hyper-parameter search (with a generous
        time budget: reproducible per seed).
    placeholder_as_level
        Keep untouched drop-downs (``Select``) as the level ``NOT_SELECTED`` of categorical
        columns instead of reading them as missing (see the module docstring). Recorded in
        the report and the model metadata; ``predict_table`` cleans with the same rule.
    promote, force, policy
        Make it the champion if the gate (:mod:`leadscore.model.gate`, with ``policy``)
        accepts it (rows count as leads, positive rows as conversions), or anyway (``force``).

    Returns the JSON report (also written as ``report.json`` next to the model). Raises
    :class:`DataError` (unreadable table, unknown column, non-binary target) or
    :class:`TrainingError` (too few labelled rows, a single class).
    """
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    columns = _Columns(tuple(keep_columns), segment_column, tuple(sensitive))
    table = _prepare_table(path, target, columns, placeholders, placeholder_as_level, seed, say)
    cfg = TrainConfig(
        hot_share=hot_share,
        warm_share=warm_share,
        seed=seed,
        cv_folds=cv_folds,
        search_time_s=time_budget_s,
        refit_full=True,
        calibration="auto",
        test_fraction=test_fraction,
        search_max_trials=max_trials,
    )
    cfg.params["seed"] = seed
    fitted = fit(table.ds, cfg, progress=say)
    held_out = _evaluate_fit(table, fitted)
    report = _table_report(table, fitted, held_out, time.perf_counter() - t0)
    gate = _Gate(promote, force, policy or GatePolicy())
    return _save_table_model(table, fitted, held_out, report, out_dir, gate, say)


@dataclass(frozen=True, slots=True)
class _Gate:
    promote: bool
    force: bool
    policy: GatePolicy


@dataclass
class _Table:
    """A CRM export made ready for training."""

    path: str | Path
    target: str
    raw_rows: int
    df: pd.DataFrame
    y: np.ndarray
    mapping: dict[str, Any]
    n_missing: int
    plans: list[ColumnPlan]
    dropped: list[dict[str, str]]
    warnings: list[LeakageWarning]
    x: pd.DataFrame
    ds: Dataset
    segment_column: str | None
    placeholders: Sequence[str]
    placeholder_as_level: bool


class _Columns(NamedTuple):
    keep: tuple[str, ...]
    segment: str | None
    sensitive: tuple[str, ...]


def _prepare_table(
    path: str | Path,
    target: str,
    columns: _Columns,
    placeholders: Sequence[str],
    placeholder_as_level: bool,
    seed: int,
    say: Say,
) -> _Table:
    """Read and clean the table, parse the target, plan the columns, drop leaky ones."""
    keep_columns, segment_column, sensitive = columns
    raw = read_table(path)
    df = clean_table(raw, placeholders, placeholder_as_level=placeholder_as_level)
    if target not in df.columns:
        raise DataError(f"target column {target!r} is not in {path}; columns: {list(df.columns)}")
    for c in [*keep_columns, *([segment_column] if segment_column else [])]:
        if c not in df.columns:
            raise DataError(f"column {c!r} is not in {path}")
    y_all, mapping = parse_target(df[target], placeholders)
    labelled = ~np.isnan(y_all)
    n_missing = int((~labelled).sum())
    if n_missing:
        say(f"dropping {n_missing} rows with a missing target")
    df = df.loc[labelled].reset_index(drop=True)
    y = y_all[labelled].astype(int)
    plans, dropped = plan_columns(df, target, keep_columns, sensitive)
    say(f"{len(df)} labelled rows ({y.mean():.1%} positive), {len(plans)} candidate columns")
    warnings = scan(df[[p.column for p in plans]], y, keep_columns=keep_columns, seed=seed)
    excluded = {w.column for w in warnings if w.action == "excluded"}
    for w in warnings:
        say(f"leakage {w.action}: {w.column}: {w.reason}")
        if w.action == "excluded":
            dropped.append({"column": w.column, "why": f"leakage: {w.reason}"})
    plans = [p for p in plans if p.column not in excluded]
    if not plans:
        raise DataError(
            "no usable feature columns left after dropping IDs, constants and leaky columns"
        )
    x = pd.DataFrame({p.feature: df[p.column] for p in plans})
    ds = Dataset(
        x,
        y.astype(float),
        [p.feature for p in plans if p.kind == "categorical"],
        target=target,
        source_columns={p.feature: p.column for p in plans},
    )
    return _Table(
        path,
        target,
        len(raw),
        df,
        y,
        mapping,
        n_missing,
        plans,
        dropped,
        warnings,
        x,
        ds,
        segment_column,
        placeholders,
        placeholder_as_level,
    )


@dataclass
class _HeldOut:
    """The held-out evaluation of a fit, against the logistic baseline."""

    metrics: dict[str, Any]
    base_p: np.ndarray
    base_auc: float | None
    base_skip: list[ColumnPlan]
    names: list[str]
    contrib: np.ndarray
    importance: list[dict[str, Any]]


def _evaluate_fit(table: _Table, fitted: Fitted) -> _HeldOut:
    te, dev = fitted.test_index, fitted.train_index
    metrics = evaluate(fitted.y[te], fitted.test_scores, hot_threshold=fitted.thresholds.hot)
    # A categorical ID kept on purpose would one-hot into one column per row (time and memory
    # quadratic in the rows) while none of its levels recurs in the test rows, so the
    # scorecard baseline leaves it out.
    base_skip = [p for p in table.plans if p.kind == "categorical" and id_like(table.df[p.column])]
    base_cols = [p.feature for p in table.plans if p not in base_skip]
    x, y = table.x, table.y
    base_p = logistic_baseline(
        x.iloc[dev][base_cols], y[dev], x.iloc[te][base_cols], table.ds.categorical
    )
    base_auc = evaluate(fitted.y[te], base_p, hot_threshold=0.5)["auc"]
    names = [p.column for p in table.plans]
    contrib = np.asarray(fitted.eval_booster.predict(fitted.x[te], pred_contrib=True))
    importance = importance_summary(
        names, np.asarray(fitted.booster.feature_importance("gain"), dtype=float), contrib
    )
    return _HeldOut(metrics, base_p, base_auc, base_skip, names, contrib, importance)


def _table_report(table: _Table, fitted: Fitted, held: _HeldOut, seconds: float) -> dict[str, Any]:
    te, dev = fitted.test_index, fitted.train_index
    seg = table.segment_column
    return {
        "version": "",
        "path": "",
        "target": table.target,
        "target_mapping": table.mapping,
        "source": str(table.path),
        "rows": {
            "input": table.raw_rows,
            "labelled": int(len(table.df)),
            "dropped_missing_target": table.n_missing,
            "development": int(len(dev)),
            "test": int(len(te)),
        },
        "positive_rate": float(table.y.mean()),
        "features": held.names,
        "feature_names": {p.column: p.feature for p in table.plans},
        "dropped_columns": table.dropped,
        "leakage_warnings": [w.as_dict() for w in table.warnings],
        "metrics": held.metrics,
        "metrics_uncalibrated": dict(fitted.metrics["test_uncalibrated"]),
        "decision_threshold": {
            "value": fitted.thresholds.hot,
            "kind": "hot",
            "note": "precision/recall/F1 and the confusion matrix in metrics.at_hot_threshold "
            "use the hot-tier threshold; metrics.at_0_5 uses 0.5",
        },
        "thresholds": {"hot": fitted.thresholds.hot, "warm": fitted.thresholds.warm},
        "calibration_error": held.metrics["calibration_error"],
        "calibration_method": fitted.calibrator.method,
        "cv": fitted.metrics.get("cv"),
        "baseline": "logistic regression, one-hot categories, standardised numbers, same "
        "features and split"
        + (f" except the ID-like {[p.column for p in held.base_skip]}" if held.base_skip else ""),
        "baseline_auc": held.base_auc,
        "segment_column": seg,
        "segments": segment_metrics(fitted.y[te], fitted.test_scores, table.df[seg].iloc[te])
        if seg
        else [],
        "feature_importance": held.importance,
        "hyper_parameters": {**fitted.params, "num_boost_round": fitted.rounds},
        "search": [
            {"auc_mean": t.auc_mean, "auc_std": t.auc_std, "rounds": t.rounds, "seconds": t.seconds}
            for t in fitted.trials
        ],
        "evaluation": "held-out metrics come from a model trained on the development rows "
        "only; the saved model is then refit on all labelled rows with the same "
        "hyper-parameters and calibrator",
        "train_seconds": round(seconds, 3),
        "placeholders": list(table.placeholders),
        "placeholder_as_level": table.placeholder_as_level,
    }


def _save_table_model(
    table: _Table,
    fitted: Fitted,
    held: _HeldOut,
    report: dict[str, Any],
    out_dir: str | Path,
    gate: _Gate,
    say: Say,
) -> dict[str, Any]:
    """Judge the model (the promotion gate), save it, its card, report and charts as a new
    registry version."""
    images = _charts(fitted, held, report, say)
    extra = {
        "tabular": {
            "placeholders": list(table.placeholders),
            "placeholder_as_level": table.placeholder_as_level,
            "target_mapping": table.mapping,
            "dropped_columns": table.dropped,
            "leakage_warnings": report["leakage_warnings"],
            "baseline_auc": held.base_auc,
        }
    }
    fitted.metrics["baseline_auc"] = held.base_auc
    registry = Registry(out_dir)
    version = new_version(fitted.data_hash)
    report["version"] = version
    report["path"] = str(registry.path(version))

    te = fitted.test_index
    judged = judge(
        registry,
        fitted.infos,
        HeldOut(table.x.iloc[te].reset_index(drop=True), fitted.y[te], fitted.test_scores),
        leads=int(len(table.y)),
        conversions=int(table.y.sum()),
        window={"table": str(table.path)},
        policy=gate.policy,
    )
    card = finish_card(judged, version, force=gate.force)
    card["promoted"] = bool(gate.promote and card["promoted"])
    report.update(promoted=card["promoted"], outcome=card["outcome"], decision=card["decision"])

    def write_extra(d: Path, _scorer: LightGBMScorer) -> None:
        write_report(d, report, images)
        write_card(d, card, judged.holdout)

    save_fitted(
        fitted,
        registry,
        target=table.target,
        promote=card["promoted"],
        extra_meta=extra,
        write_extra=write_extra,
        version=version,
        explain="treeshap",
    )
    registry.record_decision(decision_record(card))
    say(
        f"saved {version} (held-out AUC {held.metrics['auc']:.4f}, calibration error "
        f"{held.metrics['calibration_error']:.4f}) to {report['path']}"
    )
    say(f"{card['outcome']}: {card['decision']['reason']}")
    return report


def _charts(fitted: Fitted, held: _HeldOut, report: dict[str, Any], say: Say) -> dict[str, str]:
    """The report's charts; none without matplotlib (the ``report`` extra)."""
    try:
        from leadscore.model.charts import charts
    except ImportError:
        say("no charts in report.html: install the report extra (pip install 'leadscore[report]')")
        return {}
    te = fitted.test_index
    return charts(
        fitted.y[te],
        fitted.test_scores,
        report,
        contrib=held.contrib,
        x=fitted.x[te],
        names=held.names,
        baseline=held.base_p,
    )


# --------------------------------------------------------------------------- scoring


def resolve_model_dir(model_dir: str | Path, version: str | None = None) -> Path:
    """A version directory: ``model_dir`` itself, or ``version``/the champion of a registry."""
    p = Path(model_dir)
    if version is None and (p / "meta.json").is_file():
        return p
    reg = Registry(p)
    chosen = version or reg.champion()
    if chosen is None:
        raise ModelNotFoundError(
            f"{p} is neither a model version directory nor a registry "
            "with a champion; train one with `leadscore train`"
        )
    d = reg.path(chosen)
    if not (d / "meta.json").is_file():
        raise ModelNotFoundError(f"model version {chosen} is not in {p}")
    return d


def _write_table(df: pd.DataFrame, out: Path) -> None:
    """Write CSV or Parquet (by extension) via a temporary file, so a crash leaves no half file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        if out.suffix.lower() in {".parquet", ".pq"}:
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        os.replace(tmp, out)
    except ImportError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(
            f"writing {out} needs a Parquet engine, the parquet extra: "
            "pip install 'leadscore[parquet]'"
        ) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def predict_table(
    model_dir: str | Path,
    data_path: str | Path,
    out_path: str | Path,
    *,
    version: str | None = None,
    max_reasons: int = 5,
    warn: Say | None = None,
) -> int:
    """Score every row of a table; write it back with ``score``, ``tier`` and ``reasons``.

    Parameters
    ----------
    model_dir
        A version directory, or a registry root (its champion, or ``version``).
    data_path
        CSV or Parquet table with (some of) the training columns; others are ignored.
    out_path
        Output file: Parquet for ``.parquet``/``.pq``, else CSV. Rows keep the input order and
        all input columns; ``reasons`` is a JSON list of ``{feature, value, contribution}`` with
        the original column names and values.
    max_reasons
        Reasons per row. They are exact TreeSHAP (``pred_contrib``), which costs far more than
        the score on a large ensemble (docs/performance.md); 0 skips them and writes ``[]``.

    Returns
    -------
    int
        Number of rows scored.

    Missing feature columns and category values never seen in training are scored as missing
    (LightGBM's missing-value branch) and reported through ``warn``, not raised.
    """
    say = warn or log.warning
    # Reasons here are TreeSHAP from the booster (_table_reasons), never the stream's path
    # explainer, which would read every tree on load for nothing.
    scorer = LightGBMScorer.load(resolve_model_dir(model_dir, version), explain="treeshap")
    meta = scorer.meta
    tabular = meta.extra.get("tabular") or {}
    placeholders = tabular.get("placeholders", DEFAULT_PLACEHOLDERS)
    # Models saved before the option existed were trained with drop-downs read as missing.
    as_level = bool(tabular.get("placeholder_as_level", False))
    raw = read_table(data_path)
    df = normalise_text(raw, placeholders, placeholder_as_level=as_level)
    x = _model_columns(df, meta.features, data_path, say)
    m = encode_frame(x, meta.features)
    raw_p = scorer.predict_raw(m) if len(m) else np.zeros(0)
    scores = np.clip(meta.calibrator.apply(raw_p), 0.0, 1.0)
    out = raw.copy()
    clash = [c for c in ("score", "tier", "reasons") if c in out.columns]
    if clash:
        say(f"input columns {clash} are replaced by the model's output")
    # Unrounded: the calibrator keeps the booster's ranking by steps far below 1e-6, and
    # rounding would tie scores the booster told apart.
    out["score"] = scores
    out["tier"] = [meta.thresholds.tier(float(s)) for s in scores]
    out["reasons"] = _table_reasons(scorer, x, m, max_reasons)
    _write_table(out, Path(out_path))
    return int(len(out))


def _model_columns(
    df: pd.DataFrame, infos: list[FeatureInfo], data_path: str | Path, say: Say
) -> pd.DataFrame:
    """The model's input columns from a table; missing columns and unseen categories are
    scored as missing, and said so."""
    cols: dict[str, pd.Series] = {}
    missing = []
    for f in infos:
        src = f.source_column or f.name
        if src in df.columns:
            col = df[src]
            # Same rule as clean_table: a numeric column has no "not selected" level.
            cols[f.name] = col.where(col != NOT_SELECTED, None) if f.kind == "numeric" else col
        else:
            missing.append(src)
            cols[f.name] = pd.Series([None] * len(df), index=df.index, dtype=object)
    if missing:
        say(
            f"{len(missing)} model column(s) missing from {data_path}, scored as missing: {missing}"
        )
    x = pd.DataFrame(cols, index=df.index)
    for f in infos:
        if f.kind != "categorical":
            continue
        filled = x[f.name].dropna().astype(str)
        unseen = sorted(set(filled.unique()) - set(f.levels))
        if unseen:
            say(
                f"column {f.source_column or f.name!r}: {len(unseen)} value(s) not seen in "
                f"training, scored as missing: {unseen[:5]}"
            )
    return x


def _table_reasons(
    scorer: LightGBMScorer, x: pd.DataFrame, m: np.ndarray, max_reasons: int
) -> list[str]:
    """Each row's top reasons (exact TreeSHAP) as a JSON list; ``[]`` with ``max_reasons`` 0."""
    infos = scorer.meta.features
    k = max(0, min(max_reasons, len(infos)))
    reasons = ["[]"] * len(x)
    if not k or not len(m):
        return reasons
    contrib = np.asarray(scorer.booster.predict(m, pred_contrib=True, num_threads=2))
    top = np.argsort(-np.abs(contrib[:, : len(infos)]), axis=1, kind="stable")[:, :k]
    src_values = [x[f.name].tolist() for f in infos]
    for i in range(len(x)):
        items = [
            {
                "feature": infos[j].source_column or infos[j].name,
                "value": _cell(src_values[j][i]),
                "contribution": round(float(contrib[i, j]), 4),
            }
            for j in top[i]
            if contrib[i, j] != 0.0
        ]
        reasons[i] = json.dumps(items, default=str)
    return reasons
