"""The worker's column-wise path (store vectors -> FeatureBatch -> model) equals the dict path."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from leadscore.features.definitions import SPECS, Count, Flag, Profile
from leadscore.features.wire import VECTOR_SEP, parse_vector
from leadscore.model.artifact import Calibrator, FeatureInfo, LightGBMScorer, ModelMeta
from leadscore.model.rules import RuleScorer
from leadscore.model.scoring import FeatureBatch, Thresholds, as_records
from leadscore.streamer.pipeline import vector_batch

LEVELS = ("a", "b", "c")


def _field(spec: object, rng: np.random.Generator) -> str:
    r = rng.random()
    if isinstance(spec, Profile):
        return "" if r < 0.2 else ("unseen" if r < 0.3 else str(rng.choice(LEVELS)))
    if isinstance(spec, Count):
        return str(int(rng.integers(0, 20)))
    if isinstance(spec, Flag):
        return "" if r < 0.25 else str(int(rng.integers(0, 2)))
    return "" if r < 0.25 else f"{rng.random() * 30:.17g}"


def _vectors(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [VECTOR_SEP.join(_field(s, rng) for s in SPECS) for _ in range(n)]


@pytest.fixture(scope="module")
def scorer() -> LightGBMScorer:
    # The model lists its features in another order than the store, and misses one.
    specs = [s for s in reversed(SPECS) if s.name != "web_page_views_1h"]
    infos = [
        FeatureInfo(s.name, "categorical", LEVELS)
        if isinstance(s, Profile)
        else FeatureInfo(s.name, "numeric")
        for s in specs
    ]
    rows = [parse_vector(v) for v in _vectors(2000, 1)]
    probe = LightGBMScorer.__new__(LightGBMScorer)
    probe._names = [f.name for f in infos]  # noqa: SLF001 - encode needs only these two
    probe._codes = [  # noqa: SLF001
        {lv: i for i, lv in enumerate(f.levels)} if f.kind == "categorical" else None for f in infos
    ]
    x = LightGBMScorer.encode(probe, rows)
    y = np.nan_to_num(x[:, 3]) + np.nan_to_num(x[:, -2]) * 3 + np.nan_to_num(x[:, 0]) > 12
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 15, "seed": 1},
        lgb.Dataset(x, y.astype(int), categorical_feature=[0, 1, 2, 3, 4]),
        60,
    )
    meta = ModelMeta(
        version="test",
        features=infos,
        calibrator=Calibrator("isotonic", (0.0, 0.5, 1.0), (0.0, 0.4, 1.0)),
        thresholds=Thresholds(hot=0.7, warm=0.3),
        created_at="",
    )
    return LightGBMScorer(booster, meta)


def test_column_wise_scores_and_reasons_equal_the_dict_path(scorer: LightGBMScorer) -> None:
    batch = vector_batch(_vectors(300, 2), SPECS)
    assert batch.rows() == [parse_vector(t) for t in batch.texts]
    np.testing.assert_array_equal(scorer.encode(batch), scorer.encode(batch.rows()))
    assert scorer.score_batch(batch) == scorer.score_batch(batch.rows())
    assert any(s.reasons for s in scorer.score_batch(batch))


def test_score_records_are_score_batch_with_reasons_as_dicts(scorer: LightGBMScorer) -> None:
    """The worker's form (reasons built straight as the record's dicts) says the same."""
    batch = vector_batch(_vectors(300, 4), SPECS)
    expected = as_records(scorer.score_batch(batch))
    assert scorer.score_records(batch) == expected
    assert scorer.score_records(batch.rows()) == expected
    assert sum(len(r.reasons) for r in expected) > 300
    rules = RuleScorer.default()
    assert rules.score_records(batch) == as_records(rules.score_batch(batch))


def test_rules_take_a_feature_batch_too() -> None:
    batch = vector_batch(_vectors(50, 3), SPECS)
    rules = RuleScorer.default()
    assert rules.score_batch(batch) == rules.score_batch(batch.rows())


def test_a_vector_with_the_wrong_field_count_is_an_error() -> None:
    batch = FeatureBatch(("a", "b"), ["1\x1f2", "3"], VECTOR_SEP, lambda _j, f: f)
    with pytest.raises(ValueError, match="don't have 2 fields"):
        batch.flat()


def test_field_caches_give_the_same_results_across_batches_and_when_they_start_over(
    scorer: LightGBMScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scorer keeps what each field text encodes to from batch to batch, starting over
    when a column's cache is full; neither may change a score, a reason or a matrix."""
    import leadscore.model.artifact as artifact

    monkeypatch.setattr(artifact, "_CACHE_MAX", 16)
    fresh = LightGBMScorer(scorer.booster, scorer.meta)
    for seed in range(5, 10):
        texts = _vectors(120, seed)
        texts[0] = texts[0].replace("a", "x", 1)  # a field no level or number matches
        batch = vector_batch(texts, SPECS)
        np.testing.assert_array_equal(fresh.encode(batch), fresh.encode(batch.rows()))
        assert fresh.score_records(batch) == fresh.score_records(batch.rows())
    caches = [c for layout in fresh._layouts.values() for c in layout.encoders if c is not None]  # noqa: SLF001
    assert caches and all(len(c) <= 16 for c in caches)


def test_models_scoring_one_batch_share_only_what_encodes_alike(scorer: LightGBMScorer) -> None:
    """A shadow model reuses the champion's encoded columns from the same batch; one whose
    category levels differ (another order: other codes) must encode those columns itself."""

    def twin(levels: tuple[str, ...]) -> LightGBMScorer:
        infos = [
            FeatureInfo(f.name, f.kind, levels if f.kind == "categorical" else ())
            for f in scorer.meta.features
        ]
        meta = ModelMeta(
            version=f"twin-{''.join(levels)}",
            features=infos,
            calibrator=scorer.meta.calibrator,
            thresholds=scorer.meta.thresholds,
            created_at="",
        )
        return LightGBMScorer(scorer.booster, meta)

    same, reordered = twin(LEVELS), twin(tuple(reversed(LEVELS)))
    texts = _vectors(300, 5)
    alone = {m.version: m.score_batch(vector_batch(texts, SPECS)) for m in (same, reordered)}
    assert alone[same.version] != alone[reordered.version]  # the codes do matter

    batch = vector_batch(texts, SPECS)
    scorer.score_records(batch)
    encoded = {k for k in batch.shared if k != "flat"}
    assert same.score_batch(batch) == alone[same.version]
    assert {k for k in batch.shared if k != "flat"} == encoded  # all reused
    assert reordered.score_batch(batch) == alone[reordered.version]
    categorical = sum(f.kind == "categorical" for f in scorer.meta.features)
    assert len([k for k in batch.shared if k != "flat"]) == len(encoded) + categorical
