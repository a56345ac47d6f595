"""Model quality against the yardstick (``LGBMClassifier(300, 0.05)``): the real CRM export
and CRM-like tables. Minutes of training: marked ``accuracy``, run by the README's test
command like every other test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from leadscore.model.registry import Registry
from leadscore.model.tabular import (
    NOT_SELECTED,
    clean_table,
    predict_table,
    train_from_table,
)

pytestmark = pytest.mark.accuracy


def shared_data() -> Path:
    """The real CRM export: ``LEADSCORE_SHARED_DATA`` (the file or its folder), else
    ``shared/data/leads_x_education.csv`` beside the checkout or beside any folder above it."""
    env = os.environ.get("LEADSCORE_SHARED_DATA")
    if env:
        p = Path(env)
        return p / "leads_x_education.csv" if p.is_dir() else p
    here = Path(__file__).resolve()
    for folder in here.parents:
        candidate = folder / "shared" / "data" / "leads_x_education.csv"
        if candidate.is_file():
            return candidate
    return here.parents[2].parent / "shared" / "data" / "leads_x_education.csv"


def reference_frame(num: pd.DataFrame, drop: list[str]) -> pd.DataFrame:
    """The issue's yardstick input: every other column, text columns as pandas categoricals."""
    x = num.drop(columns=drop)
    x.columns = [c.replace(":", "_") for c in x.columns]  # LightGBM rejects ':' in names
    for c in x.columns:
        if not pd.api.types.is_numeric_dtype(x[c]):
            x[c] = x[c].astype("category")
    return x


def reference_auc(x: pd.DataFrame, y: pd.Series, tr: pd.Index, te: pd.Index) -> float:
    """Test AUC of the issue's yardstick, ``LGBMClassifier(300, 0.05)``, on one split."""
    m = LGBMClassifier(n_estimators=300, learning_rate=0.05, verbose=-1, n_jobs=2)
    m.fit(x.loc[tr], y.loc[tr])
    return float(roc_auc_score(y.loc[te], m.predict_proba(x.loc[te])[:, 1]))


# ----------------------------------------------------------------- the real CRM export


@pytest.fixture(scope="module")
def leads(tmp_path_factory: pytest.TempPathFactory) -> dict:
    src = shared_data()
    if not src.is_file():
        pytest.skip(f"real CRM export not found at {src} (set LEADSCORE_SHARED_DATA)")
    tmp = tmp_path_factory.mktemp("leads")
    raw = pd.read_csv(src, dtype=str, keep_default_na=False)
    tr, te = train_test_split(raw, test_size=0.2, stratify=raw["Converted"], random_state=42)
    tr.to_csv(tmp / "train.csv", index=False)
    te.drop(columns=["Converted"]).to_csv(tmp / "test.csv", index=False)
    y_te = te["Converted"].astype(int).to_numpy()
    num = pd.read_csv(src)

    def ref_auc(drop: list[str]) -> float:
        x = reference_frame(num, ["Converted", *drop])
        return reference_auc(x, num["Converted"], tr.index, te.index)

    def run(keep: tuple[str, ...], max_reasons: int) -> tuple[dict, float, pd.DataFrame]:
        rep = train_from_table(
            tmp / "train.csv",
            "Converted",
            out_dir=tmp / f"models{len(keep)}",
            keep_columns=keep,
            segment_column="Lead Origin",
            # Far above what 6 trials need, so the trial count, not the machine load, ends the
            # search and the model is reproducible.
            time_budget_s=3600,
            max_trials=6,
            seed=7,
        )
        out = tmp / f"scored{len(keep)}.csv"
        n = predict_table(
            rep["path"], tmp / "test.csv", out, max_reasons=max_reasons, warn=lambda _m: None
        )
        scored = pd.read_csv(out, dtype={"Prospect ID": str})
        assert n == len(te)
        assert len(rep["search"]) == 6
        return rep, float(roc_auc_score(y_te, scored["score"])), scored

    # The guarded run's reasons are tested below; the kept run is read for its AUC only, and
    # reasons never change a score (test_predict_without_reasons_gives_the_same_scores), so
    # it skips their TreeSHAP, the costliest part of scoring.
    guarded = run((), max_reasons=5)
    flagged = tuple(
        w["column"] for w in guarded[0]["leakage_warnings"] if w["action"] == "excluded"
    )
    ids = tuple(
        d["column"] for d in guarded[0]["dropped_columns"] if d["why"].startswith("ID-like")
    )
    kept = run(flagged + ids, max_reasons=0)
    return {
        "guarded": guarded,
        "kept": kept,
        "flagged": flagged,
        "ids": ids,
        "test": te,
        "test_csv": tmp / "test.csv",
        "ref_all": ref_auc([]),
        "ref_without_flagged": ref_auc(list(flagged + ids)),
        "ref_without_tags_only": ref_auc(list(flagged)),
    }


def test_post_outcome_column_is_flagged_and_excluded(leads: dict) -> None:
    rep = leads["guarded"][0]
    assert "Tags" in leads["flagged"]
    warning = next(w for w in rep["leakage_warnings"] if w["column"] == "Tags")
    assert warning["action"] == "excluded" and "after the outcome" in warning["reason"]
    assert "Tags" not in rep["features"]
    assert {"Prospect ID", "Lead Number"} <= set(leads["ids"])


def test_untouched_dropdowns_are_a_level_and_empty_cells_stay_missing(leads: dict) -> None:
    rep = leads["guarded"][0]
    assert rep["placeholder_as_level"] is True
    meta = Registry(Path(rep["path"]).parent).meta(rep["version"])
    assert meta["tabular"]["placeholder_as_level"] is True
    levels = {f["source_column"]: f["levels"] for f in meta["features"] if "levels" in f}
    for column in ("Specialization", "Lead Profile", "City"):
        assert NOT_SELECTED in levels[column], column
        assert not {"Select", "", "None"} & set(levels[column]), column
    raw = leads["test"]
    clean = clean_table(raw)
    for column in ("Specialization", "City"):
        # Both kinds occur in these columns and must stay apart.
        raw_col = raw[column].str.strip()
        assert (clean[column] == NOT_SELECTED).sum() == (raw_col == "Select").sum() > 0
        assert clean[column].isna().sum() == (raw_col == "").sum() > 0
    # Numeric columns have no level for it: a blank page-view count stays missing.
    assert clean["Page Views Per Visit"].dtype == float


def test_auc_matches_reference_with_the_same_columns(leads: dict) -> None:
    """Fair comparison: the reference uses every column, leaky ones included, so our model is
    compared with those columns kept (``keep_columns`` = flagged + ID-like columns).

    One split's margin is small against how much a split moves the AUC (about +-0.003); the
    repeated-split test below is the stronger evidence."""
    ours = leads["kept"][1]
    print(f"AUC with leaky+ID columns kept: ours {ours:.4f}, reference {leads['ref_all']:.4f}")
    assert ours >= leads["ref_all"]


REPEAT_SPLITS = (0, 1, 2, 3, 4)
"""Split seeds of the repeated comparison: the first five, fixed before any was looked at."""


def test_auc_over_repeated_splits_is_at_least_the_reference(tmp_path: Path, leads: dict) -> None:
    """One 80/20 split's AUC moves by about +-0.003 with the split (1,848 test rows), more
    than the gaps measured here, so a single split can't say which model is better. Over
    five splits fixed in advance, with every column kept as the reference keeps them, our
    AUC must be at least the reference's on each of them.
    """
    src = shared_data()
    raw = pd.read_csv(src, dtype=str, keep_default_na=False)
    num = pd.read_csv(src)
    x = reference_frame(num, ["Converted"])
    keep = leads["flagged"] + leads["ids"]
    diffs = []
    for seed in REPEAT_SPLITS:
        tr, te = train_test_split(raw, test_size=0.2, stratify=raw["Converted"], random_state=seed)
        tr.to_csv(tmp_path / "train.csv", index=False)
        te.drop(columns=["Converted"]).to_csv(tmp_path / "test.csv", index=False)
        y_te = te["Converted"].astype(int).to_numpy()
        ref_auc = reference_auc(x, num["Converted"], tr.index, te.index)
        rep = train_from_table(
            tmp_path / "train.csv",
            "Converted",
            out_dir=tmp_path / f"models{seed}",
            keep_columns=keep,
            time_budget_s=3600,
            max_trials=6,
            seed=7,
        )
        # Scores only: the reasons (TreeSHAP) don't change them and cost most of the time.
        predict_table(
            rep["path"],
            tmp_path / "test.csv",
            tmp_path / "s.csv",
            max_reasons=0,
            warn=lambda _m: None,
        )
        ours = roc_auc_score(y_te, pd.read_csv(tmp_path / "s.csv")["score"])
        diffs.append(ours - ref_auc)
        print(f"split {seed}: ours {ours:.4f}, reference {ref_auc:.4f}, diff {ours - ref_auc:+.4f}")
    print(f"mean diff {np.mean(diffs):+.4f}")
    assert min(diffs) >= 0.0


def test_leak_guarded_run_matches_reference_without_leaky_columns(leads: dict) -> None:
    """Same columns as the default run: the reference without the flagged and ID-like columns.

    (The reference without only the flagged columns scores higher because ``Lead Number`` is
    sequential and so encodes time; the default run drops it as ID-like, on purpose.)
    """
    rep, ours, _ = leads["guarded"]
    ref = leads["ref_without_flagged"]
    print(
        f"AUC leak-guarded: ours {ours:.4f}, reference without {leads['flagged']} {ref:.4f}; "
        f"reference with all columns {leads['ref_all']:.4f}, reference keeping IDs "
        f"{leads['ref_without_tags_only']:.4f}"
    )
    assert ours >= ref
    assert rep["leakage_warnings"]


def test_held_out_calibration_error_is_small(leads: dict) -> None:
    for name in ("guarded", "kept"):
        rep = leads[name][0]
        assert rep["calibration_error"] < 0.03, name
        assert rep["metrics"]["calibration_error"] == rep["calibration_error"]


def test_report_has_the_promised_sections(leads: dict) -> None:
    rep = leads["guarded"][0]
    m = rep["metrics"]
    for key in (
        "auc",
        "pr_auc",
        "log_loss",
        "brier",
        "calibration_error",
        "at_hot_threshold",
        "at_0_5",
        "deciles",
    ):
        assert m[key] is not None, key
    assert len(m["deciles"]) == 10 and m["deciles"][0]["lift"] > 2
    assert rep["cv"]["folds"] == 5 and 0 < rep["cv"]["auc_std"] < 0.05
    assert 0.5 < rep["baseline_auc"] < 1
    assert {s["segment"] for s in rep["segments"]} >= {"API", "Landing Page Submission"}
    assert rep["feature_importance"][0]["gain"] > 0
    d = Path(rep["path"])
    assert json.loads((d / "report.json").read_text())["version"] == rep["version"]
    assert (d / "report.html").read_text().count("data:image/png;base64,") >= 5
    assert Registry(d.parent).champion() == rep["version"]


def test_predict_keeps_rows_and_maps_reasons_to_source_columns(leads: dict) -> None:
    _, _, scored = leads["guarded"]
    te = leads["test"]
    assert scored["Prospect ID"].tolist() == te["Prospect ID"].tolist()
    assert set(scored["tier"]) <= {"hot", "warm", "cold"}
    reasons = json.loads(scored["reasons"].iloc[0])
    assert reasons and all(r["feature"] in te.columns for r in reasons)


def test_predict_without_reasons_gives_the_same_scores(leads: dict, tmp_path: Path) -> None:
    rep, _, scored = leads["guarded"]
    out = tmp_path / "fast.csv"
    predict_table(rep["path"], leads["test_csv"], out, max_reasons=0, warn=lambda _m: None)
    fast = pd.read_csv(out, dtype={"Prospect ID": str})
    assert fast["score"].tolist() == scored["score"].tolist()
    assert fast["tier"].tolist() == scored["tier"].tolist()
    assert set(fast["reasons"]) == {"[]"}


def crm_like(seed: int, n: int = 5000) -> pd.DataFrame:
    """A CRM export like the real one in shape, with a known outcome process: an ID, a
    long-tailed country column, drop-downs left on ``Select``, blank and missing cells,
    behaviour counts, interactions, and a notes field sales fill in after the outcome."""
    rng = np.random.default_rng(seed)
    source = rng.choice(
        ["Google", "Direct", "Referral", "Webinar", "Partner", "Select"],
        n,
        p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.15],
    )
    countries = [f"C{i:02d}" for i in range(40)]
    weights = 1 / np.arange(1, 41)
    country = rng.choice(countries, n, p=weights / weights.sum())
    title = rng.choice(["Manager", "Director", "VP", "Engineer", "Analyst", "Student", ""], n)
    size = rng.choice(["1-10", "11-50", "51-200", "201-1000", "1000+"], n)
    visits = rng.poisson(3, n)
    minutes = np.round(rng.gamma(2, 4, n) * (visits > 0), 1)
    opens = rng.poisson(2, n)
    demo = rng.random(n) < 0.2
    days = np.where(rng.random(n) < 0.1, np.nan, np.round(rng.exponential(20, n)))
    last = rng.choice(["Email Opened", "Page Visited", "Form Submitted", "Unsubscribed"], n)
    logit = (
        -2.2
        + 0.25 * np.minimum(visits, 8)
        + 0.04 * minutes
        + 1.4 * demo
        + 0.6 * (title == "Director")
        + 0.8 * (title == "VP")
        - 1.0 * (title == "Student")
        + 0.5 * np.isin(size, ["201-1000", "1000+"])
        + 0.7 * (source == "Webinar")
        - 1.5 * (last == "Unsubscribed")
        + 0.5 * (last == "Form Submitted")
        - 0.02 * np.nan_to_num(days, nan=30)
        + 0.4 * np.isin(country, countries[:3])
        + 0.6 * demo * (visits > 4)
        + 0.1 * opens
    )
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    won = rng.choice(["Closed won", "Enrolled"], n)
    lost = rng.choice(["Closed lost", "No answer", "Not interested"], n)
    notes = np.where(
        rng.random(n) < 0.95, np.where(y, won, lost), rng.choice(["Closed won", ""], n)
    )
    return pd.DataFrame(
        {
            "Lead ID": [f"LD{seed}-{i:06d}" for i in range(n)],
            "Lead Source": source,
            "Country": country,
            "Job Title": title,
            "Company Size": size,
            "Site Visits": visits,
            "Minutes on Site": minutes,
            "Email Opens (90d)": opens,
            "Demo Requested?": np.where(demo, "Yes", "No"),
            "Days Since Last Touch": days,
            "Last Activity": last,
            "Sales Notes": notes,
            "Status": np.where(y, "Converted", "Lost"),
        }
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crm_like_table_matches_reference_and_flags_the_post_outcome_notes(
    tmp_path: Path, seed: int
) -> None:
    """The issue's yardstick on another CRM-like table: a stratified 80/20 split, ``train``
    on the 80 %, ``predict`` on the 20 %, against ``LGBMClassifier(300, 0.05)`` with pandas
    categoricals on every column but the post-outcome notes (which ours must flag and drop).
    Seeds 1-5 measured: ours ahead by 0.010-0.027 AUC."""
    path = tmp_path / "crm.csv"
    crm_like(seed).to_csv(path, index=False)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    num = pd.read_csv(path)
    y = (num["Status"] == "Converted").astype(int)
    tr, te = train_test_split(raw, test_size=0.2, stratify=y, random_state=0)
    tr.to_csv(tmp_path / "train.csv", index=False)
    te.drop(columns=["Status"]).to_csv(tmp_path / "test.csv", index=False)
    ref_auc = reference_auc(reference_frame(num, ["Status", "Sales Notes"]), y, tr.index, te.index)
    rep = train_from_table(
        tmp_path / "train.csv",
        "Status",
        out_dir=tmp_path / "m",
        time_budget_s=3600,
        max_trials=6,
        seed=7,
    )
    # Scores only: the reasons (TreeSHAP) don't change them.
    predict_table(
        rep["path"], tmp_path / "test.csv", tmp_path / "s.csv", max_reasons=0, warn=lambda _m: None
    )
    ours = roc_auc_score(y[te.index], pd.read_csv(tmp_path / "s.csv")["score"])
    print(f"CRM-like seed {seed}: ours {ours:.4f}, reference {ref_auc:.4f}")
    assert ours >= ref_auc
    leak = {w["column"]: w for w in rep["leakage_warnings"]}
    assert leak["Sales Notes"]["action"] == "excluded"
    assert "Sales Notes" not in rep["features"]
    assert rep["target_mapping"] == {"Converted": 1, "Lost": 0}
