"""Reference histograms, live counting and the drift tests' no-drift bounds."""

from __future__ import annotations

import numpy as np

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
