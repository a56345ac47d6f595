"""What the social and enrichment sources add to a model, run as a user runs it:
``leadscore simulate ... --out h.jsonl`` and ``leadscore train --events h.jsonl --json
--compare-without social,enrichment``, in a world where those sources carry signal and in a
control world where they carry none (``--no-source-signal``).

The comparison trains the same pipeline without the sources' features on the same moments
and judges both on the same held-out window by the promotion gate's rule for an AUC gain
(paired one-sided DeLong test at alpha 0.05 and the gain margin). The seed and the start
are fixed, so the verdicts are reproducible; how often they hold across seeds is in
docs/performance.md ("What social and enrichment add to a model"), measured with more seeds
than a test can run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leadscore.features.offline import features_from_file
from leadscore.model.artifact import LightGBMScorer

pytestmark = pytest.mark.accuracy

LEADS = 5000
SEED = 41
#: A fixed start: a history that starts "now" differs with the time of day it is made.
START = "2026-09-01"


def leadscore(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-P", "-m", "leadscore", *args],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def train_world(tmp_path: Path, name: str, *flags: str) -> tuple[dict, Path]:
    history = tmp_path / f"{name}.jsonl"
    leadscore(
        "simulate",
        "--leads",
        str(LEADS),
        "--events",
        str(LEADS * 40),
        "--seed",
        str(SEED),
        "--start",
        START,
        *flags,
        "--out",
        str(history),
    )
    out = leadscore(
        "train",
        "--events",
        str(history),
        "--out",
        str(tmp_path / f"{name}-models"),
        "--compare-without",
        "social,enrichment",
        "--json",
    )
    return json.loads(out.strip().splitlines()[-1]), history


def test_new_sources_beat_the_old_three_only_where_they_carry_signal(tmp_path):
    report, history = train_world(tmp_path, "signal")
    cmp = report["compare_without"]
    left_out = set(cmp["features_left_out"])
    assert {"intent_surges_30d", "social_positive_comments_30d", "tech_hubspot"} <= left_out
    assert not any(f.startswith(("web_", "email_")) for f in left_out)
    assert cmp["held_out_moments"] > 500
    assert cmp["significant"], cmp
    assert cmp["p_value"] < 0.05 and cmp["auc_diff"] >= cmp["margin"]

    # Where they drive a score, the reasons name them: leads in an intent surge, or with
    # positive comments, get intent or social features among their top reasons (with a
    # positive contribution) several times as often as the other leads do.
    scorer = LightGBMScorer.load(Path(report["path"]), explain="treeshap")
    rows = [f for _, f in features_from_file(history).features]
    for feature, least, prefix in (
        ("intent_surges_30d", 1, "intent_"),
        ("social_positive_comments_30d", 2, "social_"),
    ):
        active = [f for f in rows if (f[feature] or 0) >= least]
        others = [f for f in rows if not f[feature]]
        assert len(active) >= 100 and len(others) >= 1000, feature
        shares = [
            sum(
                any(r.feature.startswith(prefix) and r.contribution > 0 for r in s.reasons)
                for s in scorer.score_batch(group)
            )
            / len(group)
            for group in (active, others)
        ]
        assert shares[0] >= 0.25 and shares[0] >= 4 * shares[1], (feature, shares)

    control, _ = train_world(tmp_path, "control", "--no-source-signal")
    c = control["compare_without"]
    assert not c["significant"], c
    assert c["p_value"] >= 0.05 or c["auc_diff"] < c["margin"]
