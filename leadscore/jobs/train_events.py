"""``leadscore train --events``: point-in-time training set -> LightGBM -> the promotion gate
-> registry.

The challenger, the champion (when it has the same feature set) and the rule baseline are
scored on the same held-out moments (the latest ones, by time); the gate
(:mod:`leadscore.model.gate`) decides, and the decision is written with the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from leadscore.features.definitions import DAY_MS, feature_set_id, feature_sources
from leadscore.features.training import TrainingSet, build_training_set
from leadscore.model.artifact import LightGBMScorer
from leadscore.model.drift import Reference
from leadscore.model.exceptions import TrainingError
from leadscore.model.gate import GatePolicy, delong_paired, sufficiency_check
from leadscore.model.performance import SEGMENTS, fairness
from leadscore.model.promotion import (
    HeldOut,
    decision_record,
    finish_card,
    judge,
    write_card,
)
from leadscore.model.registry import Registry
from leadscore.model.rules import RuleScorer
from leadscore.model.train import (
    Dataset,
    Fitted,
    TrainConfig,
    fit,
    new_version,
    reference_of,
    save_fitted,
)
from leadscore.schemas import SOURCES
from leadscore.schemas.privacy import Redactor
from leadscore.schemas.validation import Event

Say = Callable[[str], None]
REFERENCE_MAX = 50_000
"""At most about this many event vectors in a model's drift reference (a hash of the event id
thins a longer history)."""


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def rule_scores(x: Any) -> np.ndarray:
    """The default rules' scores for the rows of a feature frame."""
    rows = x.to_dict(orient="records")
    clean: list[dict[str, Any]] = [
        {str(k): (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        for r in rows
    ]
    return np.array([s.score for s in RuleScorer.default().score_batch(clean, explain=False)])


@dataclass(frozen=True, slots=True)
class Window:
    """Which moments train and which judge: the latest ``test_fraction`` of all moments are
    held out (the same for the challenger, the champion and the rules); the training rows
    are the earlier ones, optionally only those before ``train_until_ms``."""

    moments_from_ms: int | None = None
    train_until_ms: int | None = None
    test_fraction: float = 0.15


def _split(ts: TrainingSet, window: Window) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(ts.time_ms, kind="stable")
    n_test = int(len(order) * window.test_fraction)
    train, test = order[: len(order) - n_test], order[len(order) - n_test :]
    if window.train_until_ms is not None:
        train = train[ts.time_ms[train] < window.train_until_ms]
    return train, test


def _counts(ts: TrainingSet, train: np.ndarray) -> tuple[int, int]:
    """Leads with a training moment, and those of them with a converting one."""
    leads = ts.lead_id[train]
    return len(set(leads.tolist())), len(set(leads[ts.y[train] == 1].tolist()))


def _held_out(ts: TrainingSet, te: np.ndarray, scores: np.ndarray) -> HeldOut:
    """The held-out moments with the challenger's scores and the rules'."""
    return HeldOut(
        x=ts.x.iloc[te].reset_index(drop=True),
        y=ts.y[te],
        challenger=scores,
        lead_id=ts.lead_id[te],
        time_ms=ts.time_ms[te],
        rules=rule_scores(ts.x.iloc[te]),
    )


def _refuse_thin(
    ts: TrainingSet,
    counts: tuple[int, int],
    registry: Registry,
    policy: GatePolicy,
    horizon_ms: int,
    say: Say,
) -> dict[str, Any]:
    """The data-sufficiency gate failed before training: keep the champion, say why."""
    check = sufficiency_check(*counts, policy)
    reason = f"{check.name}: {check.detail}"
    say(f"not training: {reason}; the champion stays")
    card = {
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version": None,
        "promoted": False,
        "outcome": "rejected",
        "champion": registry.champion(),
        "window": _window(ts, None, None, horizon_ms),
        "rows": {"moments": len(ts), "leads": counts[0], "conversions": counts[1]},
        "decision": {"promote": False, "reason": reason, "checks": [asdict(check)]},
    }
    registry.record_decision(card)
    return {
        "version": None,
        "promoted": False,
        "outcome": "rejected",
        "decision": card["decision"],
        "card": card,
    }


def _window(
    ts: TrainingSet, train: np.ndarray | None, test: np.ndarray | None, horizon_ms: int
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "events_from": _iso(ts.start_ms) if ts.start_ms else None,
        "events_until": _iso(ts.end_ms) if ts.end_ms else None,
        "horizon_days": horizon_ms / DAY_MS,
    }
    for name, rows in (("train", train), ("held_out", test)):
        if rows is not None and len(rows):
            t = ts.time_ms[rows]
            out[f"{name}_from"], out[f"{name}_until"] = _iso(int(t.min())), _iso(int(t.max()))
    return out


def train_from_event_list(
    events: Iterable[Event],
    *,
    horizon_ms: int,
    out_dir: str | Path,
    promote: bool = True,
    force: bool = False,
    policy: GatePolicy | None = None,
    window: Window | None = None,
    seed: int | None = None,
    progress: Say | None = None,
    config: TrainConfig | None = None,
    sensitive: Sequence[str] = (),
    compare_without: Sequence[str] = (),
) -> dict[str, Any]:
    """Train a challenger on ``events``; with ``promote``, the gate decides (``force``
    promotes whatever it says). Returns the report ``leadscore train --json`` prints.

    ``sensitive`` features are left out of the model (the store keeps them; fairness is
    reported over them). ``compare_without``: see :func:`_compare_without`."""
    say = progress or (lambda _m: None)
    policy = policy or GatePolicy()
    window = window or Window()
    registry = Registry(out_dir)
    t0 = time.perf_counter()
    ts = _training_set(events, horizon_ms, window)
    train_rows, test_rows = _split(ts, window)
    counts = _counts(ts, train_rows)
    say(
        f"built {len(ts)} point-in-time rows ({ts.y.mean() if len(ts) else 0:.1%} positive); "
        f"training rows from {counts[0]} leads, {counts[1]} converting, "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    if promote and not force and not sufficiency_check(*counts, policy).passed:
        return _refuse_thin(ts, counts, registry, policy, horizon_ms, say)
    sel = _labelled(ts, train_rows, test_rows)
    ds = _dataset(ts, sel, len(train_rows), sensitive)
    cfg = config or TrainConfig(test_fraction=window.test_fraction)
    if seed is not None:
        cfg.seed = seed
        cfg.params["seed"] = seed
    fitted = fit(ds, cfg, progress=say)
    held = _held_out(ts, sel[fitted.test_index], fitted.test_scores)
    j = judge(
        registry,
        fitted.infos,
        held,
        leads=counts[0],
        conversions=counts[1],
        window=_window(ts, train_rows, test_rows, horizon_ms),
        policy=policy,
    )
    version = new_version(fitted.data_hash)
    card = finish_card(j, version, force=force)
    card["promoted"] = bool(promote and card["promoted"])
    save_fitted(
        fitted,
        registry,
        target=ds.target,
        promote=card["promoted"],
        extra_meta={
            "horizon_days": horizon_ms / DAY_MS,
            "trained_from": "events",
            "feature_set": feature_set_id(),
        },
        write_extra=lambda d, _scorer: write_card(d, card, j.holdout),
        version=version,
        reference=lambda scorer: _reference(ts, scorer),
        explain="treeshap",
    )
    registry.record_decision(decision_record(card))
    report = _report(ts, counts, fitted.metrics, card, registry, horizon_ms, t0, say)
    if compare_without:
        report["compare_without"] = _compare_without(
            ts, sel, len(train_rows), sensitive, cfg, compare_without, policy, say
        )
    report["fairness"] = _fairness(ts, sel[fitted.test_index], fitted)
    report["sensitive"] = [c for c in sensitive if c in ts.x.columns]
    return report


def _labelled(ts: TrainingSet, train_rows: np.ndarray, test_rows: np.ndarray) -> np.ndarray:
    """The training then the held-out moments; refuses too few, or of one class."""
    sel = np.concatenate([train_rows, test_rows])
    if len(sel) < 50 or len(np.unique(ts.y[sel])) < 2:
        raise TrainingError(
            f"only {len(sel)} labelled scoring moments ({int(ts.y[sel].sum())} converting): the "
            "history needs more leads, CRM `converted` events, or a shorter --horizon"
        )
    return sel


#: Seeds each side of a ``compare_without`` comparison averages over.
COMPARE_SEEDS = (7, 8, 9)


def _compare_without(
    ts: TrainingSet,
    sel: np.ndarray,
    n_train: int,
    sensitive: Sequence[str],
    cfg: TrainConfig,
    sources: Sequence[str],
    policy: GatePolicy,
    say: Say,
) -> dict[str, Any]:
    """The pipeline with and without ``sources``' features, judged on the same held-out
    moments by the gate's rule for an AUC gain (paired one-sided DeLong test, and the margin).

    Two guards make the test about the sources rather than about the fits (nothing saved):

    * The held-out leads' earlier moments are not trained on, on either side. A lead's
      per-lead constants (a head count, a technology list) otherwise identify it, and its
      training labels tell what it does in the held-out window: a model with more such
      features wins without the sources saying anything about conversion.
    * Each side's scores are the mean of :data:`COMPARE_SEEDS` fits. DeLong's variance is
      the held-out sample's only; two fits of one model on the same rows differ by more
      than that (seen: p = 0.045 between two seeds of the same features).
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise TrainingError(
            f"--compare-without: unknown source(s) {', '.join(unknown)}; "
            f"the sources are {', '.join(SOURCES)}"
        )
    test = sel[n_train:]
    held_leads = np.unique(ts.lead_id[test])
    train = sel[:n_train]
    train = train[~np.isin(ts.lead_id[train], held_leads)]
    rows = np.concatenate([train, test])
    reads = feature_sources()
    left_out = [str(c) for c in ts.x.columns if reads.get(str(c), frozenset()) & set(sources)]
    say(
        f"comparing with and without {', '.join(sources)} ({len(left_out)} features): "
        f"{len(train)} training moments of leads not held out, {len(COMPARE_SEEDS)} seeds each"
    )
    means = []
    for drop in ([], left_out):
        ds = _dataset(ts, rows, len(train), [*sensitive, *drop])
        scores = []
        for seed in COMPARE_SEEDS:
            c = replace(cfg, seed=seed, params={**cfg.params, "seed": seed})
            scores.append(np.asarray(fit(ds, c, progress=lambda _m: None).test_scores))
        means.append(np.mean(scores, axis=0))
    y = ts.y[test]
    r = delong_paired(y, means[0], means[1])
    significant = bool(r.diff >= policy.margin and r.p_value < policy.alpha)
    say(
        f"with {', '.join(sources)}: held-out AUC {r.auc_a:.4f} vs {r.auc_b:.4f} without "
        f"({r.diff:+.4f}), paired DeLong p = {r.p_value:.3g}: "
        + (
            "they help"
            if significant
            else f"no gain (needs >= {policy.margin} and p < {policy.alpha})"
        )
    )
    return {
        "sources": list(sources),
        "features_left_out": left_out,
        "training_moments": int(len(train)),
        "held_out_moments": int(len(y)),
        "seeds": list(COMPARE_SEEDS),
        "auc_with": r.auc_a,
        "auc_without": r.auc_b,
        "auc_diff": r.diff,
        "p_value": r.p_value,
        "margin": policy.margin,
        "alpha": policy.alpha,
        "significant": significant,
        "test": "delong_paired_one_sided",
    }


def _dataset(ts: TrainingSet, sel: np.ndarray, n_train: int, sensitive: Sequence[str]) -> Dataset:
    """The selected moments (training ones first), without the ``sensitive`` features."""
    used = [c for c in ts.x.columns if c not in sensitive]
    return Dataset(
        ts.x.iloc[sel][used].reset_index(drop=True),
        ts.y[sel],
        [c for c in ts.categorical if c in used],
        time=ts.time_ms[sel],
        target="converted_within_horizon",
        test_index=np.arange(n_train, len(sel)),
    )


def _fairness(ts: TrainingSet, rows: np.ndarray, fitted: Fitted) -> list[dict[str, Any]]:
    """Fairness per segment on the held-out moments, as the monitor reports it online."""
    tier = fitted.thresholds.tier
    scores = np.asarray(fitted.test_scores, dtype=np.float64)
    segments = {
        c: [None if v is None or v != v else str(v) for v in ts.x[c].iloc[rows]]
        for c in SEGMENTS
        if c in ts.x.columns
    }
    return fairness(
        scores,
        ts.y[rows],
        [tier(float(s)) for s in scores],
        [str(lead) for lead in ts.lead_id[rows]],
        segments,
        min_group=30,
    )


def _training_set(events: Iterable[Event], horizon_ms: int, window: Window) -> TrainingSet:
    return build_training_set(
        events,
        horizon_ms=horizon_ms,
        moments_from_ms=window.moments_from_ms,
        reference_max=REFERENCE_MAX,
    )


def _reference(ts: TrainingSet, scorer: LightGBMScorer) -> Reference:
    """The drift reference: every event's feature vector in the history, as the worker
    scores one per event (the sampled training moments weigh leads differently)."""
    if not ts.reference:
        rows = [{str(k): v for k, v in r.items()} for r in ts.x.to_dict("records")]
        return reference_of(scorer, scorer.encode(rows))
    order = np.argsort(np.asarray(ts.reference_times), kind="stable")
    return reference_of(
        scorer, scorer.encode([ts.reference[i] for i in order.tolist()]), source="events"
    )


def _report(
    ts: TrainingSet,
    counts: tuple[int, int],
    metrics: dict[str, Any],
    card: dict[str, Any],
    registry: Registry,
    horizon_ms: int,
    t0: float,
    say: Say,
) -> dict[str, Any]:
    auc = metrics["test"]["auc"]
    baseline_auc = (card["metrics"].get("rules") or {}).get("auc")
    champion_auc = (card["metrics"].get("champion") or {}).get("auc")
    version = card["version"]
    say(
        f"saved {version} to {registry.location}: held-out AUC {auc:.4f}"
        + (f", champion {champion_auc:.4f}" if champion_auc is not None else "")
        + (f", rule baseline {baseline_auc:.4f}" if baseline_auc is not None else "")
    )
    verdict = card["outcome"]
    say(
        f"{verdict}: {card['decision']['reason']}"
        + ("" if card["promoted"] else f" (the champion stays: {card['champion'] or 'rules'})")
    )
    return {
        "version": version,
        "path": f"{registry.location.rstrip('/')}/{version}",
        "promoted": card["promoted"],
        "outcome": verdict,
        "decision": card["decision"],
        "rows": int(len(ts)),
        "leads": counts[0],
        "conversions": counts[1],
        "positive_rate": float(ts.y.mean()),
        "horizon_days": horizon_ms / DAY_MS,
        "auc": auc,
        "baseline_auc": baseline_auc,
        "champion_auc": champion_auc,
        "auc_gain_over_baseline": (auc - baseline_auc)
        if auc is not None and baseline_auc is not None
        else None,
        "metrics": metrics,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def train_from_events(
    source: str | Path,
    *,
    horizon_ms: int,
    out_dir: str | Path,
    promote: bool = True,
    force: bool = False,
    policy: GatePolicy | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: Say | None = None,
    sensitive: Sequence[str] = (),
    redactor: Redactor | None = None,
    compare_without: Sequence[str] = (),
) -> dict[str, Any]:
    """``source``: a JSONL history or an event archive root (see
    :mod:`leadscore.integrations.archive`), optionally cut to ``[since, until)``; events
    redacted by ``redactor`` (the worker's) as the worker would."""
    from leadscore.jobs.history import load_events

    events = load_events(
        source, since_ms=since_ms, until_ms=until_ms, progress=progress, redactor=redactor
    )
    return train_from_event_list(
        events,
        horizon_ms=horizon_ms,
        out_dir=out_dir,
        promote=promote,
        force=force,
        policy=policy,
        progress=progress,
        sensitive=sensitive,
        compare_without=compare_without,
    )
