"""Training from events: sensitive attributes stay out of the model, fairness is reported on
the held-out moments, and the model carries its drift reference."""

from __future__ import annotations

from leadscore.features.definitions import DAY_MS
from leadscore.jobs.train_events import train_from_event_list
from leadscore.model.artifact import LightGBMScorer
from leadscore.tooling.simulator import SimConfig, simulated_events


def test_sensitive_fairness_and_reference(tmp_path):
    events = simulated_events(
        SimConfig(leads=600, events=12000, seed=5, start_ms=1_770_000_000_000, days=45)
    )
    report = train_from_event_list(
        events, horizon_ms=14 * DAY_MS, out_dir=tmp_path, force=True, sensitive=("country",)
    )
    scorer = LightGBMScorer.load(tmp_path / report["version"])
    names = [f.name for f in scorer.meta.features]
    assert "country" not in names and "industry" in names
    assert report["sensitive"] == ["country"]
    attrs = {row["attribute"] for row in report["fairness"]}
    assert "country" in attrs  # reported on, though never a feature
    assert scorer.reference is not None and scorer.reference.source == "events"
    assert [b.name for b in scorer.reference.features] == names
    # Every event after the warm-up (a third of 45 days), not the sampled moments.
    assert scorer.reference.rows > 3 * report["rows"]
