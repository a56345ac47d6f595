"""Reference histograms, live counting and the drift tests' no-drift bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadscore.features.definitions import CATEGORICAL_FEATURES, DAY_MS, FEATURE_NAMES
from leadscore.features.training import build_training_set
from leadscore.model.artifact import FeatureInfo
from leadscore.model.drift import (
    MISSING,
    Bins,
    LiveBins,
    Reference,
    build_reference,
    compare,
    psi,
    psi_threshold,
)
from leadscore.model.train import category_levels, encode_frame
from leadscore.schemas import Source
from leadscore.schemas.validation import Event, format_ts_ms


def _reference(x: np.ndarray, scores: np.ndarray) -> Reference:
    return build_reference(
        x,
        ["n", "c"],
        ["numeric", "categorical"],
        [(), ("a", "b", "c")],
        scores,
    )


def test_numeric_bins_are_right_closed_and_missing_has_its_own():
    b = Bins("n", "numeric", (0.0, 1.0), (), ("a", "b", "c", MISSING), ())
    got = b.index(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]))
    assert got.tolist() == [0, 0, 1, 1, 2, 3]


def test_categorical_bins_keep_frequent_levels_and_pool_the_rest():
    rng = np.random.default_rng(0)
    levels = tuple(f"l{i}" for i in range(15))
    codes = rng.choice(15, size=5000, p=np.r_[np.full(5, 0.15), np.full(10, 0.025)])
    col = np.r_[codes.astype(float), [np.nan] * 10]
    ref = build_reference(col[:, None], ["c"], ["categorical"], [levels], np.full(len(col), 0.5))
    b = ref.features[0]
    assert b.labels[-2:] == ("other", MISSING) and len(b.labels) == 11
    assert all(b.labels[b.lut[c]] == levels[c] for c in range(5))  # the frequent ones
    assert b.counts[-1] == 10 and sum(b.counts) == len(col)
    assert b.index(np.array([np.nan, 99.0])).tolist() == [b.size - 1, b.size - 1]


def test_live_counts_of_the_training_rows_are_the_reference():
    rng = np.random.default_rng(1)
    x = np.c_[rng.normal(size=3000), rng.integers(0, 3, 3000).astype(float)]
    x[::17, 0] = np.nan
    scores = rng.uniform(size=3000)
    ref = _reference(x, scores)
    live = LiveBins(ref)
    for part in np.array_split(np.arange(3000), 7):  # batch by batch
        live.add(x[part], scores[part])
    for j, b in enumerate(ref.all):
        assert live.counts[j][: b.size].tolist() == list(b.counts)
    assert Reference.from_dict(ref.as_dict()) == ref


def test_no_drift_alarms_at_about_alpha_and_a_shift_alarms():
    rng = np.random.default_rng(2)
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    ref = rng.multinomial(50_000, p)
    for n in (300, 3000):
        bound = psi_threshold(ref, n, dispersion=1.0, tests=1, alpha=0.05)
        alarms = np.mean([psi(ref, rng.multinomial(n, p)) > bound for _ in range(2000)])
        assert 0.02 < alarms < 0.08, (n, alarms)
    shifted = rng.multinomial(3000, p[::-1])
    assert psi(ref, shifted) > psi_threshold(ref, 3000, dispersion=1.0, tests=35, alpha=0.01)


def test_dispersion_measures_repeated_vectors_and_keeps_the_false_alarm_rate():
    """Every 'lead' repeats its category 20 times in a row, as a lead's events repeat its
    profile: independent-draw bounds would alarm on most windows; the reference's own
    dispersion brings that back to about alpha."""
    rng = np.random.default_rng(3)
    p = np.array([0.5, 0.3, 0.2])

    def stream(leads: int) -> np.ndarray:
        return np.repeat(rng.choice(3, size=leads, p=p), 20).astype(float)

    col = stream(4000)
    levels = [("a", "b", "c")]
    ref = build_reference(col[:, None], ["c"], ["categorical"], levels, np.zeros(len(col)))
    b = ref.features[0]
    assert 8 < b.dispersion_at(2000) < 40, b.dispersion_at(2000)
    alarms = []
    naive = []
    for _ in range(300):
        window = stream(100)  # 2,000 vectors from 100 leads
        live = np.bincount(b.index(window), minlength=b.size)
        rows = np.zeros((2, max(b.size, ref.score.size)))
        rows[0, : b.size] = live
        r = compare(ref, rows, alpha=0.05)[0]
        alarms.append(r.alarm)
        bound = psi_threshold(np.asarray(b.counts), 2000, dispersion=1.0, tests=2, alpha=0.05)
        naive.append(r.psi > bound)
    assert np.mean(naive) > 0.5
    assert np.mean(alarms) < 0.08


def test_small_windows_never_alarm():
    ref = _reference(np.c_[np.arange(1000.0), np.zeros(1000)], np.linspace(0, 1, 1000))
    live = np.zeros((3, 12))
    live[0, 0] = 50  # 50 vectors, all in one bin
    assert not any(r.alarm for r in compare(ref, live, min_window=200))


def _history(leads: int, seed: int, *, enrichment: bool = True) -> list[Event]:
    """Events of every source for ``leads`` leads over 40 days; every third lead gets no
    enrichment (its firmographics and flags stay missing), nor does any without
    ``enrichment``."""
    rng = np.random.default_rng(seed)
    t0 = 1_795_000_000_000
    bands = ("<1M", "1M-10M", "50M-250M", "1B+")
    stacks: tuple[list[str], ...] = (
        ["Salesforce", "Looker"],
        ["HubSpot"],
        ["Marketo", "snowflake", "SAP"],
        [],
    )
    kinds: list[tuple[Source, str, dict[str, object]]] = [
        ("web", "page_view", {}),
        ("social", "mention", {}),
        ("social", "comment", {"sentiment": 0.6}),
        ("social", "comment", {"sentiment": -0.4}),
        ("enrichment", "firmographics", {}),
        ("enrichment", "technographics", {}),
        ("enrichment", "intent", {}),
    ]
    events: list[Event] = []
    for lead in range(leads):
        lid = f"L{lead}"
        start = t0 + int(rng.integers(0, 10 * DAY_MS))
        profile = {"company_size": "11-50", "industry": "saas", "country": "DE"}
        events.append(
            Event(f"{lid}-c", lid, "crm", "lead_created", format_ts_ms(start), start, profile)
        )
        for k in range(int(rng.integers(8, 20))):
            src, typ, attrs = kinds[int(rng.integers(0, len(kinds)))]
            if src == "enrichment" and (lead % 3 == 0 or not enrichment):
                src, typ, attrs = "web", "page_view", {}
            if typ == "firmographics":
                attrs = {
                    "employees": int(rng.integers(1, 5000)),
                    "revenue_band": bands[int(rng.integers(0, len(bands)))],
                    "industry_code": ("541511", "52", "611310")[lead // 3 % 3],
                }
            elif typ == "technographics":
                attrs = {"technologies": stacks[int(rng.integers(0, len(stacks)))]}
            elif typ == "intent":
                attrs = {"topic": "Lead Scoring", "score": float(rng.integers(0, 101))}
            ts = start + int(rng.integers(1, 30 * DAY_MS))
            events.append(Event(f"{lid}-{k}", lid, src, typ, format_ts_ms(ts), ts, attrs))
        if lead % 4 == 0:
            ts = start + 31 * DAY_MS
            events.append(Event(f"{lid}-w", lid, "crm", "converted", format_ts_ms(ts), ts, {}))
    return sorted(events, key=lambda e: e.ts_ms)


def _event_reference(events: list[Event]) -> tuple[Reference, np.ndarray, np.ndarray]:
    """The drift reference of an event history's feature vectors as a model trained on it
    builds one (its feature kinds and levels from the training set, the rows encoded), with
    the encoded rows and their (made-up) scores."""
    ts = build_training_set(events, horizon_ms=7 * DAY_MS, reference_max=5000)
    rows = pd.DataFrame(ts.reference, columns=list(FEATURE_NAMES))
    infos = [
        FeatureInfo(c, "categorical", category_levels(rows[c]))
        if c in ts.categorical
        else FeatureInfo(c, "numeric")
        for c in FEATURE_NAMES
    ]
    x = encode_frame(rows, infos)
    scores = np.random.default_rng(6).uniform(size=len(x))
    names, kinds, levels = ([getattr(f, a) for f in infos] for a in ("name", "kind", "levels"))
    return build_reference(x, names, kinds, levels, scores, source="events"), x, scores


def test_every_social_and_enrichment_feature_gets_reference_bins():
    """The features of leads.social and leads.enrichment (counts, recency, decay, Number,
    Profile and Flag specs) get histograms from an event history that holds them, as the
    model's reference is built (its feature kinds, the rows encoded, the counts taken live)."""
    ref, x, scores = _event_reference(_history(200, seed=5))
    bins = {b.name: b for b in ref.features}
    new = FEATURE_NAMES[FEATURE_NAMES.index("social_mentions_7d") :]
    assert {"firmo_employees", "tech_salesforce", "intent_decayed"} <= set(new)
    for name in new:
        b = bins[name]
        present = sum(b.counts[:-1])
        assert present > 0, f"{name}: no value in its reference"
        if name in CATEGORICAL_FEATURES:
            assert b.kind == "categorical" and len(b.labels) > 2, b
    for name in ("firmo_employees", "social_engagement_decayed", "intent_decayed"):
        assert len(bins[name].edges) >= 3, bins[name]  # quantile bins, not one lump
    assert set(bins["firmo_revenue_band"].labels) == {"<1M", "1M-10M", "50M-250M", "1B+", MISSING}
    assert set(bins["firmo_industry_sector"].labels) == {"54", "52", "61", MISSING}
    named = {f"tech_{t}" for t in ("salesforce", "looker", "hubspot", "marketo", "snowflake")}
    for name in [n for n in new if n.startswith("tech_") and n != "tech_count"]:
        b = bins[name]
        zero, one = b.index(np.array([0.0, 1.0])).tolist()
        # 0 and 1 in bins apart, even for a technology no lead had (all 0 in the reference);
        # missing (no technographics yet) a bin of its own, filled by leads without them.
        assert zero != one and b.size - 1 not in (zero, one), b
        assert b.counts[-1] > 0
        assert b.counts[zero] > 0 and (b.counts[one] > 0) == (name in named), b
    live = LiveBins(ref)
    live.add(x, scores)
    for j, b in enumerate(ref.features):
        assert live.counts[j][: b.size].tolist() == list(b.counts), b.name


def test_a_history_without_enrichment_gives_its_features_a_missing_bin_only():
    """Trained before any enrichment flowed (or on a CRM that never sets a field): the
    features it never saw get one bin, missing, and a value live counts as unseen there
    (an empty level table used to fail the whole training run with an IndexError)."""
    ref, x, scores = _event_reference(_history(60, seed=7, enrichment=False))
    bins = {b.name: b for b in ref.features}
    for name in ("firmo_revenue_band", "firmo_industry_sector"):
        assert bins[name].labels == (MISSING,) and bins[name].counts == (len(x),)
    assert bins["firmo_employees"].labels == ("(-inf, inf)", MISSING)
    assert bins["firmo_employees"].counts == (0, len(x))
    j = [b.name for b in ref.features].index("firmo_revenue_band")
    seen = x[:5].copy()
    seen[:, j] = [0.0, 1.0, 7.0, -1.0, np.nan]  # level codes a newer model would send
    live = LiveBins(ref)
    live.add(seen, scores[:5])
    assert live.counts[j].tolist()[:1] == [5]
    assert compare(ref, live.counts, min_window=1)[j].psi < 1e-9
