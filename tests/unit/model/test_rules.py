from __future__ import annotations

import json

import pytest

from leadscore.model.exceptions import RulesConfigError
from leadscore.model.rules import RuleScorer


def test_points_add_up_and_reasons_name_the_features():
    rs = RuleScorer.default()
    cold = rs.score_batch([{}])[0]
    hot = rs.score_batch(
        [
            {
                "web_demo_requests_30d": 2,
                "web_pricing_views_7d": 4,
                "web_form_submits_30d": 1,
                "job_title": "VP Sales",
            }
        ]
    )[0]
    assert hot.score > cold.score
    assert rs.version.startswith("rules")
    feats = [r.feature for r in hot.reasons]
    assert feats[0] == "web_demo_requests_30d"
    assert {r.feature: r.contribution for r in hot.reasons}["web_pricing_views_7d"] == 25.0
    assert cold.reasons == ()
    assert cold.tier == "cold"


def test_negative_rules_lower_the_score():
    rs = RuleScorer.default()
    a = rs.score_batch([{"web_pricing_views_7d": 1}])[0]
    b = rs.score_batch([{"web_pricing_views_7d": 1, "email_unsubscribes_30d": 1}])[0]
    assert b.score < a.score


def test_missing_values_never_fire():
    rs = RuleScorer.default()
    assert rs.score_batch([{"days_since_last_activity": None}])[0].reasons == ()


def test_rule_file_is_validated(tmp_path):
    p = tmp_path / "rules.json"
    p.write_text(
        json.dumps(
            {
                "version": "rules-custom",
                "thresholds": {"hot": 0.9, "warm": 0.5},
                "rules": [{"feature": "x", "op": "~", "value": 1, "points": 1}],
            }
        )
    )
    with pytest.raises(RulesConfigError, match="unknown op"):
        RuleScorer.from_file(p)
    p.write_text(
        json.dumps({"version": "v2", "thresholds": {"hot": 0.9, "warm": 0.5}, "rules": []})
    )
    with pytest.raises(RulesConfigError, match="start with 'rules'"):
        RuleScorer.from_file(p)
    p.write_text(
        json.dumps(
            {
                "version": "rules-x",
                "intercept": 0,
                "points_per_logit": 10,
                "thresholds": {"hot": 0.9, "warm": 0.5},
                "rules": [{"feature": "x", "op": ">=", "value": 1, "points": 30}],
            }
        )
    )
    rs = RuleScorer.from_file(p)
    s = rs.score_batch([{"x": 3}])[0]
    assert s.tier == "hot" and s.score == pytest.approx(1 / (1 + 2.718281828459045**-3))
