"""``leadscore train --events``: point-in-time training set -> LightGBM -> registry, with the
rule baseline scored on the same held-out moments for comparison."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from leadscore.features.offline import read_events
from leadscore.features.training import build_training_set
from leadscore.model.exceptions import TrainingError
from leadscore.model.registry import Registry
from leadscore.model.rules import RuleScorer
from leadscore.model.train import Dataset, TrainConfig, train
from leadscore.schemas.validation import Event


def train_from_event_list(
    events: Iterable[Event],
    *,
    horizon_ms: int,
    out_dir: Path,
    promote: bool = True,
    progress: Callable[[str], None] | None = None,
    config: TrainConfig | None = None,
) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    ts = build_training_set(events, horizon_ms=horizon_ms)
    say(
        f"built {len(ts)} point-in-time rows ({ts.y.mean():.1%} positive) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    if len(ts) < 50 or len(np.unique(ts.y)) < 2:
        raise TrainingError(
            f"only {len(ts)} labelled scoring moments ({int(ts.y.sum())} converting): the history "
            "needs more leads, CRM `converted` events, or a shorter --horizon"
        )
    ds = Dataset(ts.x, ts.y, ts.categorical, time=ts.time_ms, target="converted_within_horizon")
    result = train(
        ds,
        Registry(out_dir),
        config,
        promote=promote,
        progress=say,
        extra_meta={"horizon_days": horizon_ms / 86_400_000, "trained_from": "events"},
    )
    te = result.test_index
    rows = ts.x.iloc[te].to_dict(orient="records")
    clean: list[dict[str, Any]] = [
        {str(k): (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        for r in rows
    ]
    baseline = np.array([s.score for s in RuleScorer.default().score_batch(clean, explain=False)])
    y_te = ts.y[te]
    both = len(np.unique(y_te)) == 2
    auc = result.metrics["test"]["auc"]
    baseline_auc = float(roc_auc_score(y_te, baseline)) if both else None
    report = {
        "version": result.version,
        "path": str(result.path),
        "promoted": promote,
        "rows": int(len(ts)),
        "positive_rate": float(ts.y.mean()),
        "horizon_days": horizon_ms / 86_400_000,
        "auc": auc,
        "baseline_auc": baseline_auc,
        "auc_gain_over_baseline": (auc - baseline_auc)
        if auc is not None and baseline_auc
        else None,
        "metrics": result.metrics,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if baseline_auc is not None and auc is not None:
        say(f"held-out AUC {auc:.4f} vs rule baseline {baseline_auc:.4f}")
    return report


def train_from_events(
    path: Path,
    *,
    horizon_ms: int,
    out_dir: Path,
    promote: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    events = [e for _, e in read_events(path) if isinstance(e, Event)]
    return train_from_event_list(
        events, horizon_ms=horizon_ms, out_dir=out_dir, promote=promote, progress=progress
    )
