"""Tabular training and batch scoring (``model.tabular``) on small synthetic tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.model.exceptions import DataError, ModelNotFoundError
from leadscore.model.registry import Registry
from leadscore.model.tabular import (
    NOT_SELECTED,
    clean_table,
    parse_target,
    predict_table,
    read_table,
    safe_names,
    train_from_table,
)

# ----------------------------------------------------------------- other CRM-like tables


def synthetic(n: int = 600, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    visits = rng.poisson(4, n)
    industry = rng.choice(["Retail", "Banking", "Health care", "Select"], n)
    demo = rng.random(n) < 0.3
    logit = -2 + 0.35 * visits + 1.5 * demo + np.where(industry == "Banking", 1.0, 0.0)
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "Deal ID": [f"D-{i:05d}" for i in range(n)],
            "Web visits (30d)": visits,
            "Industry: sector": industry,
            "Asked for demo?": np.where(demo, "Yes", "No"),
            "Notes, free": rng.choice(["", " ", "n/a"], n),
            "Won": np.where(y, "TRUE", "FALSE"),
        }
    )


@pytest.fixture(scope="module")
def deals(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One model, trained on a semicolon-separated ``synthetic()`` table, shared by the tests
    that read its report or score with it."""
    tmp = tmp_path_factory.mktemp("deals")
    path = tmp / "deals.csv"
    synthetic().to_csv(path, sep=";", index=False, encoding="utf-8-sig")
    # A trial count, not a time budget, ends the search, so a busy machine can't change it.
    rep = train_from_table(path, "Won", out_dir=tmp / "m", time_budget_s=600, max_trials=30)
    return {"report": rep, "meta": Registry(tmp / "m").meta(rep["version"])}


def test_semicolon_table_with_placeholders_ids_and_odd_names(deals: dict) -> None:
    rep = deals["report"]
    dropped = {d["column"]: d["why"] for d in rep["dropped_columns"]}
    assert dropped["Deal ID"].startswith("ID-like")
    assert dropped["Notes, free"] == "empty"
    assert set(rep["features"]) == {"Web visits (30d)", "Industry: sector", "Asked for demo?"}
    assert rep["target_mapping"] == {"TRUE": 1, "FALSE": 0}
    assert rep["metrics"]["auc"] > 0.7
    names = rep["feature_names"].values()
    assert all(n.replace("_", "").isalnum() for n in names)
    cat = next(f for f in deals["meta"]["features"] if f["source_column"] == "Industry: sector")
    assert "Select" not in cat["levels"]
    assert NOT_SELECTED in cat["levels"]
    assert rep["placeholder_as_level"] is True
    assert deals["meta"]["tabular"]["placeholder_as_level"] is True


def test_rows_with_missing_target_are_dropped_and_reported(tmp_path: Path) -> None:
    df = synthetic(seed=6)
    df.loc[:9, "Won"] = ""
    df.to_csv(tmp_path / "t.csv", index=False)
    rep = train_from_table(
        tmp_path / "t.csv", "Won", out_dir=tmp_path / "m", time_budget_s=1, max_trials=2
    )
    assert rep["rows"]["dropped_missing_target"] == 10
    assert rep["rows"]["labelled"] == len(df) - 10


def test_parquet_input_and_output(tmp_path: Path) -> None:
    df = synthetic(seed=2)
    df["Won"] = df["Won"] == "TRUE"
    df.to_parquet(tmp_path / "deals.parquet")
    # force: a small synthetic table fails the data-sufficiency gate; this test is about
    # Parquet in and out, through the registry's champion.
    rep = train_from_table(
        tmp_path / "deals.parquet",
        "Won",
        out_dir=tmp_path / "m",
        time_budget_s=2,
        max_trials=3,
        force=True,
    )
    assert rep["promoted"] and rep["outcome"] == "forced"
    new = synthetic(seed=3).drop(columns=["Won"])
    new.to_parquet(tmp_path / "new.parquet")
    n = predict_table(tmp_path / "m", tmp_path / "new.parquet", tmp_path / "out.parquet")
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert n == len(new) and out["Deal ID"].tolist() == new["Deal ID"].tolist()
    assert out["score"].between(0, 1).all()
    assert rep["rows"]["labelled"] == len(df)


def test_predict_handles_unseen_categories_and_missing_columns(deals: dict, tmp_path: Path) -> None:
    new = synthetic(seed=5).drop(columns=["Won", "Asked for demo?"]).iloc[::-1]
    new["Industry: sector"] = ["Mining"] + new["Industry: sector"].tolist()[1:]
    new.to_csv(tmp_path / "new.csv", index=False)
    warnings: list[str] = []
    n = predict_table(
        Path(deals["report"]["path"]),
        tmp_path / "new.csv",
        tmp_path / "out.csv",
        warn=warnings.append,
    )
    out = pd.read_csv(tmp_path / "out.csv")
    assert n == len(new)
    assert out["Deal ID"].tolist() == new["Deal ID"].tolist()
    assert out["score"].notna().all()
    assert any("Asked for demo?" in w for w in warnings)
    assert any("Mining" in w for w in warnings)


def score(model: Path, table: pd.DataFrame, tmp: Path, warn: list[str]) -> pd.DataFrame:
    table.to_csv(tmp / "in.csv", index=False)
    predict_table(model, tmp / "in.csv", tmp / "out.csv", warn=warn.append)
    return pd.read_csv(tmp / "out.csv", keep_default_na=False)


def test_predict_reads_any_dropdown_spelling_as_the_trained_level(
    deals: dict, tmp_path: Path
) -> None:
    model = Path(deals["report"]["path"])
    new = synthetic(seed=7).drop(columns=["Won"])
    untouched = new["Industry: sector"] == "Select"
    spelled = new.copy()
    spellings = ["select", " -- Please select -- ", "<Select>", NOT_SELECTED]
    spelled.loc[untouched, "Industry: sector"] = [
        spellings[i % len(spellings)] for i in range(int(untouched.sum()))
    ]
    warnings: list[str] = []
    a = score(model, new, tmp_path, warnings)
    b = score(model, spelled, tmp_path, warnings)
    assert untouched.sum() > 50
    np.testing.assert_array_equal(a["score"], b["score"])
    assert not any("Industry" in w for w in warnings)
    values = [
        r["value"]
        for reasons in a.loc[untouched.to_numpy(), "reasons"]
        for r in json.loads(reasons)
        if r["feature"] == "Industry: sector"
    ]
    assert values and set(values) == {NOT_SELECTED}


def test_placeholder_as_level_off_reads_dropdowns_as_missing_at_training_and_scoring(
    tmp_path: Path,
) -> None:
    synthetic(seed=8).to_csv(tmp_path / "t.csv", index=False)
    rep = train_from_table(
        tmp_path / "t.csv",
        "Won",
        out_dir=tmp_path / "m",
        time_budget_s=2,
        max_trials=2,
        placeholder_as_level=False,
    )
    assert rep["placeholder_as_level"] is False
    meta = Registry(tmp_path / "m").meta(rep["version"])
    assert meta["tabular"]["placeholder_as_level"] is False
    cat = next(f for f in meta["features"] if f["source_column"] == "Industry: sector")
    assert not {"Select", NOT_SELECTED} & set(cat["levels"])
    new = synthetic(seed=9).drop(columns=["Won"])
    untouched = new["Industry: sector"] == "Select"
    blank = new.copy()
    blank.loc[untouched, "Industry: sector"] = ""
    warnings: list[str] = []
    a = score(Path(rep["path"]), new, tmp_path, warnings)
    b = score(Path(rep["path"]), blank, tmp_path, warnings)
    assert untouched.sum() > 50
    # Scored with the recorded rule: "Select" is missing like a blank, not an unseen level.
    np.testing.assert_array_equal(a["score"], b["score"])
    assert not any("Industry" in w for w in warnings)


def test_predict_without_a_model_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ModelNotFoundError):
        predict_table(tmp_path / "none", tmp_path / "x.csv", tmp_path / "o.csv")


@pytest.mark.parametrize(
    "values, expected",
    [
        (["yes", "No", "YES"], [1, 0, 1]),
        (["y", "n", "Y"], [1, 0, 1]),
        (["true", "FALSE", "True"], [1, 0, 1]),
        ([1, 0, 1], [1, 0, 1]),
        (["1.0", "0.0", "1"], [1, 0, 1]),
        (["Converted", "lost", "converted"], [1, 0, 1]),
        (["won", "Lost", "WON"], [1, 0, 1]),
        (["positive", "negative", "Positive"], [1, 0, 1]),
    ],
)
def test_target_tokens(values: list, expected: list[int]) -> None:
    y, _ = parse_target(pd.Series(values, name="t"))
    assert y.tolist() == expected


def test_target_left_on_its_dropdown_placeholder_is_unlabelled() -> None:
    y, mapping = parse_target(pd.Series(["yes", "Select", "no", NOT_SELECTED], name="t"))
    assert y[[0, 2]].tolist() == [1.0, 0.0] and np.isnan(y[[1, 3]]).all()
    assert mapping == {"yes": 1, "no": 0}


def test_target_that_is_not_binary_lists_its_values() -> None:
    with pytest.raises(DataError, match=r"'maybe'.*distinct values"):
        parse_target(pd.Series(["yes", "no", "maybe"], name="t"))


def test_read_table_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "head.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="no data rows"):
        read_table(tmp_path / "head.csv")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="can't read"):
        read_table(tmp_path / "bad.parquet")


def test_read_table_sniffs_quoted_fields_and_bom(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes(
        '\ufeff"Name";"Amount, EUR";"Won"\n"Smith; J";"1,5";yes\n"Doe";" 2 ";no\n'.encode()
    )
    df = read_table(p)
    assert list(df.columns) == ["Name", "Amount, EUR", "Won"]
    assert df["Name"].tolist() == ["Smith; J", "Doe"]
    clean = clean_table(df)
    assert clean["Amount, EUR"].tolist() == ["1,5", "2"]


def test_cleaning_placeholders_and_numbers() -> None:
    df = pd.DataFrame(
        {
            "a": [" 1", "2 ", "NA", "Select"],
            "b": ["Select", "x", "?", "null"],
            "c": [" -- Please select -- ", "", "<select>", "y"],
        }
    )
    out = clean_table(df)
    # A drop-down placeholder in a numeric column is missing: numbers have no such level.
    assert out["a"].tolist()[:2] == [1.0, 2.0] and out["a"].isna().sum() == 2
    assert out["b"].tolist() == [NOT_SELECTED, "x", None, None]
    assert out["c"].tolist() == [NOT_SELECTED, None, NOT_SELECTED, "y"]
    legacy = clean_table(df, placeholder_as_level=False)
    assert legacy["a"].isna().sum() == 2
    assert legacy["b"].tolist() == [None, "x", None, None]
    assert legacy["c"].tolist() == ["-- Please select --", None, "<select>", "y"]


def test_safe_names_are_unique_and_lightgbm_safe() -> None:
    names = safe_names(["a:b", "a b", 'x"{y}', "[]"])
    assert names == {"a:b": "a_b", "a b": "a_b_2", 'x"{y}': "x_y", "[]": "column"}


def test_sensitive_columns_are_never_features():
    import pandas as pd

    from leadscore.model.tabular import plan_columns

    df = pd.DataFrame(
        {"Country": ["DE", "FR", "US", "DE"], "Visits": [1, 2, 3, 4], "Converted": [0, 1, 0, 1]}
    )
    plans, dropped = plan_columns(df, "Converted", sensitive=("Country",))
    assert [p.column for p in plans] == ["Visits"]
    assert dropped == [{"column": "Country", "why": "sensitive: reported on, never a feature"}]
