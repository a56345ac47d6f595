"""Point-in-time training sets from an event history.

A *scoring moment* is the time of one of a lead's events (when the live worker would score
it). Its features use only events up to that moment (the replay has not seen later ones);
its label is whether the lead converts within ``horizon`` after it. Moments after a lead's
outcome, and moments whose horizon runs past the end of the history, are left out (keeping
the ones that happened to convert would bias the late, held-out moments towards positives).
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadscore.features.definitions import CATEGORICAL_FEATURES, FEATURE_NAMES, RETENTION_MS
from leadscore.features.offline import LeadState
from leadscore.schemas import FeatureValue
from leadscore.schemas.validation import Event

OUTCOME_TYPES = ("converted", "disqualified")


@dataclass(slots=True)
class TrainingSet:
    x: pd.DataFrame
    y: np.ndarray
    time_ms: np.ndarray
    lead_id: np.ndarray
    categorical: list[str]
    leads: int = 0
    """Distinct leads in the history (the data-sufficiency gate counts them)."""
    converted: int = 0
    """Leads with a CRM ``converted`` event in the history."""
    start_ms: int = 0
    end_ms: int = 0
    """The history's first and last event times."""
    reference: list[dict[str, FeatureValue]] = field(default_factory=list)
    """The feature vector at every event (after the warm-up; thinned to at most
    ``reference_max``), as the live worker computes one per event: the drift reference."""
    reference_times: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)


def _outcomes(events: list[Event]) -> tuple[int | None, int | None]:
    conv = min(
        (e.ts_ms for e in events if e.source == "crm" and e.type == "converted"), default=None
    )
    disq = min(
        (e.ts_ms for e in events if e.source == "crm" and e.type == "disqualified"), default=None
    )
    return conv, disq


def _eligible(evs: list[Event], stop: int, last_ms: int, first_ms: int | None) -> list[int]:
    """Indices of the events that may be scoring moments: not an outcome, at or after
    ``first_ms``, before the lead's outcome (``stop``) and no later than ``last_ms`` (the
    history's end minus the horizon)."""
    out = []
    for i, ev in enumerate(evs):
        if ev.source == "crm" and ev.type in OUTCOME_TYPES:
            continue
        t = ev.ts_ms
        if first_ms is not None and t < first_ms:
            continue
        if t >= stop or t > last_ms:
            # The horizon runs past the history: keeping only the moments that already
            # converted would bias the label towards positives near the end.
            break
        out.append(i)
    return out


@dataclass(slots=True)
class _ReferenceRows:
    """The drift reference's vectors: every ``every``-th event (by a hash of its id, so the
    thinning is the same on every run) from ``from_ms`` on; ``every`` 0 keeps none."""

    every: int
    from_ms: int
    rows: list[dict[str, FeatureValue]] = field(default_factory=list)
    times: list[int] = field(default_factory=list)

    def take(self, state: LeadState, ev: Event) -> None:
        every = self.every
        if not every or ev.ts_ms < self.from_ms:
            return
        if every > 1 and zlib.crc32(ev.event_id.encode()) % every:
            return
        vec = state.features(ev.ts_ms)
        if vec is not None:
            self.rows.append(vec)
            self.times.append(ev.ts_ms)


def build_training_set(
    events: Iterable[Event],
    *,
    horizon_ms: int,
    moments_per_lead: int = 6,
    seed: int = 7,
    moments_from_ms: int | None = None,
    reference_max: int = 0,
    reference_warmup_ms: int = RETENTION_MS,
) -> TrainingSet:
    """Sample up to ``moments_per_lead`` moments per lead and compute point-in-time rows.

    With ``moments_from_ms``, earlier events still count towards features (a warm-up for
    the rolling windows) but no moment before it is sampled. With ``reference_max``, the
    feature vectors of (up to about that many) events are kept as the drift reference,
    from ``reference_warmup_ms`` into the history on (at most a third of it): before that the
    longest windows are still filling, which a live stream's are not.
    """
    by_lead: dict[str, list[Event]] = defaultdict(list)
    end_ms = 0
    start_ms: int | None = None
    for ev in events:
        by_lead[ev.lead_id].append(ev)
        end_ms = max(end_ms, ev.ts_ms)
        start_ms = ev.ts_ms if start_ms is None else min(start_ms, ev.ts_ms)
    total = sum(len(v) for v in by_lead.values())
    ref_from = (start_ms or 0) + min(reference_warmup_ms, (end_ms - (start_ms or 0)) // 3)
    if moments_from_ms is not None:
        ref_from = max(ref_from, moments_from_ms)
    ref = _ReferenceRows(max(1, -(-total // reference_max)) if reference_max else 0, ref_from)
    converted = 0
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    rows: list[dict[str, FeatureValue]] = []
    labels: list[int] = []
    times: list[int] = []
    leads: list[str] = []
    for lead_id in sorted(by_lead):
        evs = sorted(by_lead[lead_id], key=lambda e: (e.ts_ms, e.event_id))
        conv, disq = _outcomes(evs)
        converted += conv is not None
        stop = min(t for t in (conv, disq, end_ms + 1) if t is not None)
        eligible = _eligible(evs, stop, end_ms - horizon_ms, moments_from_ms)
        if not eligible and not ref.every:
            continue
        chosen = set(rng.sample(eligible, min(moments_per_lead, len(eligible))) if eligible else ())
        state = LeadState()
        for i, ev in enumerate(evs):
            state.apply(ev)
            ref.take(state, ev)
            if i in chosen:
                feats = state.features(ev.ts_ms)
                if feats is None:
                    continue
                rows.append(feats)
                t = ev.ts_ms
                labels.append(int(conv is not None and t < conv <= t + horizon_ms))
                times.append(t)
                leads.append(lead_id)
    x = pd.DataFrame(rows, columns=list(FEATURE_NAMES))
    for c in CATEGORICAL_FEATURES:
        x[c] = x[c].astype(object)
    return TrainingSet(
        x,
        np.asarray(labels, dtype=int),
        np.asarray(times, dtype=np.int64),
        np.asarray(leads),
        list(CATEGORICAL_FEATURES),
        leads=len(by_lead),
        converted=converted,
        start_ms=start_ms or 0,
        end_ms=end_ms,
        reference=ref.rows,
        reference_times=ref.times,
    )
