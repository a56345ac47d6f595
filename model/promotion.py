"""Champion/challenger: score the champion and the rules on the challenger's held-out
moments, ask the gate (:mod:`leadscore.model.gate`), and write the decision down.

The decision travels with the challenger as its model card (``card.json``) and the paired
held-out scores it was taken on (``holdout.csv``: one row per moment, its label and every
scorer's score), so anyone can recompute each figure; it is also appended to the registry's
``DECISIONS.jsonl``, where refusals without a model (too little data) are kept too.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore.model.artifact import FeatureInfo, LightGBMScorer
from leadscore.model.exceptions import ModelError
from leadscore.model.gate import Decision, GatePolicy, decide
from leadscore.model.metrics import binary_metrics
from leadscore.model.registry import CARD_FILE, Registry
from leadscore.model.train import encode_frame

HOLDOUT_FILE = "holdout.csv"


@dataclass(slots=True)
class HeldOut:
    """The challenger's held-out moments: features, labels and its own scores."""

    x: pd.DataFrame
    y: np.ndarray
    challenger: np.ndarray
    lead_id: np.ndarray | None = None
    time_ms: np.ndarray | None = None
    rules: np.ndarray | None = None
    """The rule baseline's scores, where the rules apply to these features."""


@dataclass(slots=True)
class Judgement:
    decision: Decision
    champion: str | None
    """The champion the challenger was compared with, if any."""
    card: dict[str, Any]
    holdout: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def same_feature_set(a: list[FeatureInfo], b: list[FeatureInfo]) -> bool:
    return [(f.name, f.kind) for f in a] == [(f.name, f.kind) for f in b]


def score_champion(
    registry: Registry, infos: list[FeatureInfo], x: pd.DataFrame
) -> tuple[str | None, np.ndarray | None, str]:
    """The champion's calibrated scores on ``x``, when it has the same feature set.

    Returns ``(version, scores, note)``; ``scores`` is None (and ``note`` says why) when
    there is no champion or it can't be compared.
    """
    try:
        version = registry.champion()
    except ModelError as exc:
        return None, None, f"the champion pointer is unreadable ({exc})"
    if version is None:
        return None, None, "no champion yet"
    try:
        registry.verify(version)
        scorer = LightGBMScorer.load(registry.path(version), explain="treeshap")
    except ModelError as exc:
        return version, None, f"champion {version} can't be loaded ({exc})"
    if not same_feature_set(scorer.meta.features, infos):
        return version, None, f"champion {version} has another feature set"
    raw = scorer.predict_raw(encode_frame(x, scorer.meta.features)) if len(x) else np.zeros(0)
    return version, np.clip(scorer.meta.calibrator.apply(raw), 0.0, 1.0), ""


def judge(
    registry: Registry,
    infos: list[FeatureInfo],
    held: HeldOut,
    *,
    leads: int,
    conversions: int,
    window: dict[str, Any],
    policy: GatePolicy | None = None,
) -> Judgement:
    """Compare the challenger with the champion (same feature set) or else the rules."""
    policy = policy or GatePolicy()
    champ, champ_scores, note = score_champion(registry, infos, held.x)
    if champ_scores is not None:
        reference, name = champ_scores, "champion"
    elif held.rules is not None:
        reference, name = held.rules, "rules"
    else:
        reference, name = None, "none"
    segs = held.x[[c for c in policy.segment_columns if c in held.x.columns]]
    decision = decide(
        held.y,
        held.challenger,
        reference,
        reference_name=name,
        segments=segs.reset_index(drop=True),
        leads=leads,
        conversions=conversions,
        policy=policy,
    )
    holdout = pd.DataFrame(
        {
            "lead_id": _unlinkable(held.lead_id)
            if held.lead_id is not None
            else np.arange(len(held.y)),
            "time_ms": held.time_ms if held.time_ms is not None else np.zeros(len(held.y)),
            "y": held.y.astype(int),
            "challenger": held.challenger,
            "champion": champ_scores if champ_scores is not None else np.nan,
            "rules": held.rules if held.rules is not None else np.nan,
        }
    )
    for c in segs.columns:
        holdout[c] = segs[c].to_numpy()
    metrics = {"challenger": binary_metrics(held.y, held.challenger)}
    if champ_scores is not None:
        metrics["champion"] = binary_metrics(held.y, champ_scores)
    if held.rules is not None:
        metrics["rules"] = binary_metrics(held.y, held.rules)
    card = {
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "champion": champ,
        "champion_note": note,
        "window": window,
        "rows": {"held_out": int(len(held.y)), "leads": leads, "conversions": conversions},
        "metrics": metrics,
        "decision": decision.as_dict(),
    }
    return Judgement(decision, champ, card, holdout, [note] if note else [])


def finish_card(judgement: Judgement, version: str | None, *, force: bool) -> dict[str, Any]:
    """The card's final fields: the version and whether it was (or will be) promoted."""
    promoted = force or judgement.decision.promote
    outcome = "promoted" if judgement.decision.promote else "rejected"
    if force and not judgement.decision.promote:
        outcome = "forced"
    return {**judgement.card, "version": version, "promoted": promoted, "outcome": outcome}


def _unlinkable(lead_ids: Any) -> list[str]:
    """Each lead id as a pseudonym salted for this file alone (the salt is not kept): rows of
    one lead still group together, but the registry names no lead, so an erased lead leaves
    nothing in it and two versions' files can't be joined on a lead."""
    salt = os.urandom(16)
    return [
        hashlib.blake2b(str(lead).encode("utf-8"), digest_size=8, key=salt).hexdigest()
        for lead in lead_ids
    ]


def write_card(d: Path, card: dict[str, Any], holdout: pd.DataFrame) -> None:
    """Write ``card.json`` and ``holdout.csv`` into a version directory being saved."""
    (d / CARD_FILE).write_text(json.dumps(card, indent=2, default=_jsonable), encoding="utf-8")
    holdout.to_csv(d / HOLDOUT_FILE, index=False)


def decision_record(card: dict[str, Any]) -> dict[str, Any]:
    """The line ``DECISIONS.jsonl`` keeps for one decision (the card minus the segments)."""
    decision = dict(card.get("decision") or {})
    decision.pop("segments", None)
    return {k: v for k, v in {**card, "decision": decision}.items() if k != "metrics"} | {
        "auc": {k: (m or {}).get("auc") for k, m in (card.get("metrics") or {}).items()}
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")
