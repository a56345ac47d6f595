"""``leadscore enrich``: a provider's CSV or Parquet export as enrichment events, without a
broker (parsing, validation, ids, the dry run)."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leadscore.cli import main
from leadscore.features.offline import history_parser, replay
from leadscore.integrations.enrich import (
    Checker,
    EnrichmentFileError,
    EnrichSummary,
    Export,
    enrich_file,
    open_export,
    valid_events,
)
from leadscore.schemas.validation import Event, validate_event
from leadscore.settings import Settings

HEADER = "Lead_ID,observed_at,Employees,revenue_band,industry_code,technologies,intent_topic,"
HEADER += "intent_score,provider"


def write_csv(tmp_path: Path, *lines: str, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(path: Path, *, provider: str | None = None) -> tuple[list[dict], EnrichSummary]:
    """The events a file gives (validated as ``enrich`` does) and the run's summary."""
    export = open_export(path)
    summary = EnrichSummary(str(path), export.format, dry_run=True)
    checker = Checker(int(time.time() * 1000), 86_400_000, Settings().redactor)
    return list(valid_events(export, summary, checker, provider=provider)), summary


def by_type(events: list[dict]) -> dict[str, dict]:
    return {e["type"]: e for e in events}


def test_a_csv_row_makes_one_event_per_type_with_its_values(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER,
        "L-1,2026-11-01T09:30:00+02:00,250,10M-50M,541511,Salesforce;HubSpot,Lead Scoring,71,g2",
    )
    events, summary = read(path)
    assert summary.rows == 1 and summary.rejected == 0
    assert summary.events == {"firmographics": 1, "technographics": 1, "intent": 1}
    ev = by_type(events)
    assert {e["lead_id"] for e in events} == {"L-1"}
    assert {e["source"] for e in events} == {"enrichment"}
    # An RFC 3339 time with an offset is sent in UTC.
    assert {e["ts"] for e in events} == {"2026-11-01T07:30:00.000Z"}
    assert ev["firmographics"]["attributes"] == {
        "employees": 250,
        "revenue_band": "10M-50M",
        "industry_code": "541511",
        "provider": "g2",
    }
    assert ev["technographics"]["attributes"] == {
        "technologies": ["Salesforce", "HubSpot"],
        "provider": "g2",
    }
    assert ev["intent"]["attributes"] == {"topic": "Lead Scoring", "score": 71, "provider": "g2"}


def test_a_date_is_midnight_utc_and_a_time_without_offset_is_rejected(tmp_path):
    path = write_csv(
        tmp_path,
        "lead_id,date,employees",
        "L-1,2026-11-01,10",
        "L-2,2026-11-01T10:00:00,10",
        "L-3,2026-11-01T10:00:00Z,10",
    )
    events, summary = read(path)
    assert [(e["lead_id"], e["ts"]) for e in events] == [
        ("L-1", "2026-11-01T00:00:00.000Z"),
        ("L-3", "2026-11-01T10:00:00.000Z"),
    ]
    assert [(r.where, r.reason.split(" ")[0]) for r in summary.rejections] == [("line 3", "date")]
    assert "RFC 3339" in summary.rejections[0].reason


def test_observed_at_wins_over_date_and_date_fills_in_when_it_is_empty(tmp_path):
    path = write_csv(
        tmp_path,
        "lead_id,observed_at,date,employees",
        "L-1,2026-11-05T12:00:00Z,2026-11-01,10",
        "L-2,,2026-11-02,10",
    )
    events, _ = read(path)
    assert [e["ts"] for e in events] == ["2026-11-05T12:00:00.000Z", "2026-11-02T00:00:00.000Z"]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("Salesforce;HubSpot", ["Salesforce", "HubSpot"]),
        ("Salesforce | HubSpot|Snowflake", ["Salesforce", "HubSpot", "Snowflake"]),
        ('"Salesforce; Looker ;"', ["Salesforce", "Looker"]),
        ("Segment", ["Segment"]),
        ("None", []),
        ("", None),
    ],
)
def test_technologies_are_split_on_semicolons_and_bars(tmp_path, cell, expected):
    """``none`` is an empty list; an empty cell sends no technographics event."""
    path = write_csv(
        tmp_path,
        "lead_id,date,technologies,intent_topic,intent_score",
        f"L-1,2026-11-01,{cell},CRM,70",
    )
    events, _ = read(path)
    lists = [e["attributes"]["technologies"] for e in events if e["type"] == "technographics"]
    assert lists == ([] if expected is None else [expected])


def test_a_row_makes_only_the_events_it_has_values_for(tmp_path):
    path = write_csv(
        tmp_path,
        "lead_id,date,employees,revenue_band,intent_topic,intent_score",
        "L-1,2026-11-01,,1B+,,",  # firmographics from one column
        "L-2,2026-11-01,,,crm software,40.5",  # intent only
        "L-3,2026-11-01,,,,",  # nothing to say
    )
    events, summary = read(path)
    assert [(e["lead_id"], e["type"]) for e in events] == [
        ("L-1", "firmographics"),
        ("L-2", "intent"),
    ]
    assert events[0]["attributes"] == {"revenue_band": "1B+"}
    assert events[1]["attributes"] == {"topic": "crm software", "score": 40.5}
    assert (summary.rows, summary.without_data, summary.rejected) == (3, 1, 0)


def test_the_provider_option_fills_in_rows_without_one(tmp_path):
    path = write_csv(
        tmp_path, "lead_id,date,employees,provider", "L-1,2026-11-01,5,", "L-2,2026-11-01,5,zi"
    )
    events, _ = read(path, provider="clearbit")
    assert [e["attributes"]["provider"] for e in events] == ["clearbit", "zi"]


def test_invalid_rows_are_reported_by_line_and_not_sent(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER,
        "L-1,2026-11-01,250,,,,,,",  # good
        "L-2,2026-11-01,many,,,,,,",  # not a number
        "L-3,2026-11-01,10,huge,,,,,",  # not a band (the schema's enum)
        "L-4,2026-11-01,10,,12a,,,,",  # not a NAICS code (the schema's pattern)
        "L-5,2026-11-01,10,,,,CRM,,",  # a topic without a score
        "L-6,2026-11-01,10,,,,CRM,140,",  # a score over 100: no event of the row is sent
        ",2026-11-01,10,,,,,,",  # no lead
        "L-7,,10,,,,,,",  # no time
        "L-8,2099-01-01,10,,,,,,",  # ahead of the clock, as the worker would refuse it
        "L-9,2026-11-01,10",  # fields missing: the columns may be shifted
        "",
        "L-10,2026-11-01,-3,,,,,,",  # a negative head count
    )
    events, summary = read(path)
    # L-1's empty technologies cell sends no technographics (it must not wipe a list).
    assert [(e["lead_id"], e["type"]) for e in events] == [("L-1", "firmographics")]
    assert summary.rows == 11 and summary.rejected == 10
    reasons = {r.where: r.reason for r in summary.rejections}
    assert list(reasons) == [f"line {n}" for n in (3, 4, 5, 6, 7, 8, 9, 10, 11, 13)]
    assert "employees 'many' is not a whole number" in reasons["line 3"]
    assert reasons["line 4"].startswith("firmographics: ") and "revenue_band" in reasons["line 4"]
    assert "industry_code" in reasons["line 5"]
    assert "has no intent_score" in reasons["line 6"]
    assert reasons["line 7"].startswith("intent: ") and "score" in reasons["line 7"]
    assert reasons["line 8"] == "lead_id is empty"
    assert reasons["line 9"] == "observed_at is empty: every row needs its time"
    assert "ahead of the worker clock" in reasons["line 10"]
    assert reasons["line 11"] == "has 3 fields, the header names 9"
    assert "employees" in reasons["line 13"]


def test_every_event_sent_is_valid_for_the_worker(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER,
        *(
            f"L-{i},2026-11-{1 + i % 28:02d},{i * 7},1M-10M,{5415 + i},"
            f"A;B|c{i},t{i % 3},{i % 101},p"
            for i in range(200)
        ),
    )
    events, summary = read(path)
    assert summary.rejected == 0 and len(events) == 600
    now = int(time.time() * 1000)
    for e in events:
        res = validate_event(
            orjson.dumps(e),
            topic_source="enrichment",
            key=e["lead_id"].encode(),
            now_ms=now,
            max_future_ms=0,
        )
        assert isinstance(res, Event), res


def test_event_ids_are_the_same_for_the_same_content_and_differ_otherwise(tmp_path):
    rows = ("L-1,2026-11-01,250,,,HubSpot,crm,70,", "L-2,2026-11-01,250,,,HubSpot,crm,70,")
    first, _ = read(write_csv(tmp_path, HEADER, *rows, name="a.csv"))
    again, _ = read(write_csv(tmp_path, HEADER, *rows, name="b.csv"))
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert len({e["event_id"] for e in first}) == 6
    assert all(e["event_id"].startswith("enr-") for e in first)
    # The same moment spelled otherwise, and 70 as 70.0: the same events.
    same, _ = read(
        write_csv(tmp_path, HEADER, "L-1,2026-11-01T02:00:00+02:00,250,,,HubSpot,crm,70.0,")
    )
    assert [e["event_id"] for e in same] == [e["event_id"] for e in first[:3]]
    # Another value, time or provider: another event.
    for changed in (
        "L-1,2026-11-01,251,,,HubSpot,crm,70,",
        "L-1,2026-11-02,250,,,HubSpot,crm,70,",
        "L-1,2026-11-01,250,,,HubSpot,crm,70,zi",
    ):
        other, _ = read(write_csv(tmp_path, HEADER, changed, name="c.csv"))
        assert other[0]["event_id"] != first[0]["event_id"]


def test_a_parquet_export_reads_like_the_csv(tmp_path):
    path = tmp_path / "export.parquet"
    table = pa.table(
        {
            "LEAD_ID": ["L-1", "L-2", "L-3", "L-4", "L-5"],
            "observed_at": pa.array(
                [
                    datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
                    datetime(2026, 11, 2, 8, 0),
                    None,
                    datetime(2026, 11, 4, tzinfo=UTC),
                    datetime(2026, 11, 5, tzinfo=UTC),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "date": pa.array([None, None, date(2026, 11, 3), None, None], pa.date32()),
            "employees": pa.array([250.0, None, 3.0, float("nan"), 2.5]),
            "industry_code": pa.array([541511, None, None, None, None], pa.int64()),
            "technologies": pa.array(
                [["Salesforce", "HubSpot"], None, [], ["Looker", None], None],
                pa.list_(pa.string()),
            ),
            "intent_topic": ["crm", None, None, "payroll", None],
            "intent_score": pa.array([60, None, None, 12, None], pa.int32()),
        }
    )
    pq.write_table(table, path)
    events, summary = read(path)
    assert summary.rows == 5
    assert [(r.where, r.reason) for r in summary.rejections] == [
        ("row 5", "employees 2.5 is not a whole number")
    ]
    got = [(e["lead_id"], e["type"], e["ts"], e["attributes"]) for e in events]
    assert got == [
        (
            "L-1",
            "firmographics",
            "2026-11-01T09:30:00.000Z",
            {"employees": 250, "industry_code": "541511"},
        ),
        (
            "L-1",
            "technographics",
            "2026-11-01T09:30:00.000Z",
            {"technologies": ["Salesforce", "HubSpot"]},
        ),
        ("L-1", "intent", "2026-11-01T09:30:00.000Z", {"topic": "crm", "score": 60}),
        ("L-3", "firmographics", "2026-11-03T00:00:00.000Z", {"employees": 3}),
        ("L-3", "technographics", "2026-11-03T00:00:00.000Z", {"technologies": []}),
        ("L-4", "technographics", "2026-11-04T00:00:00.000Z", {"technologies": ["Looker"]}),
        ("L-4", "intent", "2026-11-04T00:00:00.000Z", {"topic": "payroll", "score": 12}),
    ]
    assert summary.without_data == 1  # L-2: a time and nothing else


def test_a_parquet_time_without_zone_is_utc_and_text_columns_work_too(tmp_path):
    path = tmp_path / "export.pq"
    table = pa.table(
        {
            "lead_id": ["L-1", "L-2"],
            "observed_at": pa.array([datetime(2026, 11, 2, 8, 0), None], pa.timestamp("ms")),
            "date": ["2026-11-03", "2026-11-04"],
            "technologies": ["Segment|Snowflake", "none"],
        }
    )
    pq.write_table(table, path)
    events, _ = read(path)
    assert [(e["ts"], e["attributes"]["technologies"]) for e in events] == [
        ("2026-11-02T08:00:00.000Z", ["Segment", "Snowflake"]),
        ("2026-11-04T00:00:00.000Z", []),
    ]


def test_the_events_give_the_enrichment_features(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER,
        "L-1,2026-11-01,250,10M-50M,541511,Salesforce;Snowflake;SAP,Lead Scoring,71,",
    )
    events, _ = read(path)
    parse = history_parser()
    validated = [parse(orjson.dumps(e)) for e in events]
    assert all(isinstance(e, Event) for e in validated)
    state = replay(validated)["L-1"]
    feats = state.features()
    assert feats["firmo_employees"] == 250
    assert feats["firmo_industry_sector"] == "54"
    assert (feats["tech_salesforce"], feats["tech_hubspot"], feats["tech_count"]) == (1, 0, 3)
    assert feats["intent_lead_scoring_surges_30d"] == 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("none.csv", None, "does not exist"),
        ("export.xlsx", "x", "use a .csv file"),
        ("export.csv", "", "is empty: its first line must name the columns"),
        ("export.csv", "id,date,employees\nL-1,2026-11-01,3\n", "no lead_id column"),
        ("export.csv", "lead_id,when,employees\n", "no time column"),
        ("export.csv", "lead_id;date;employees\n", "must be comma-separated"),
        ("export.csv", "lead_id,date,size\n", "none of the columns events are made of"),
        ("export.csv", "lead_id,LEAD_ID,date,employees\n", "are the same column"),
        ("export.csv", b"lead_id,date,employees\nL-\xe9,2026-11-01,3\n", "save the file as UTF-8"),
        ("export.parquet", "not parquet", "is not a readable Parquet file"),
    ],
)
def test_a_file_that_cant_make_events_says_why(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(EnrichmentFileError, match=message):
        open_export(path)


def test_a_missing_column_names_the_columns_found(tmp_path):
    path = write_csv(tmp_path, "LeadId,Date,Employees")
    with pytest.raises(EnrichmentFileError) as exc:
        open_export(path)
    assert "'LeadId', 'Date', 'Employees'" in str(exc.value)


def test_unknown_columns_are_listed_as_ignored(tmp_path):
    export = open_export(write_csv(tmp_path, "lead_id,date,employees,employee_count,notes"))
    assert isinstance(export, Export)
    assert export.ignored == ["employee_count", "notes"]


def test_dry_run_validates_and_counts_without_a_broker(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LEADSCORE_KAFKA_BOOTSTRAP", raising=False)
    path = write_csv(
        tmp_path, HEADER, "L-1,2026-11-01,250,,,HubSpot,crm,70,", "L-2,2026-11-01,x,,,,,,"
    )
    assert main(["enrich", str(path), "--dry-run", "--json", "--provider", "acme"]) == 0
    out, err = capsys.readouterr()
    summary = orjson.loads(out)
    assert summary["dry_run"] is True and summary["produced"] == 0
    assert summary["rows"] == 2 and summary["rejected"] == 1
    assert summary["events"] == {"firmographics": 1, "technographics": 1, "intent": 1}
    assert summary["rejections"] == [
        {"where": "line 3", "reason": "employees 'x' is not a whole number"}
    ]
    assert "export.csv line 3: rejected, employees 'x' is not a whole number" in err
    # Without --dry-run the same command needs a broker: the dry run did not touch one.
    assert main(["enrich", str(path)]) == 1
    assert "LEADSCORE_KAFKA_BOOTSTRAP is not set" in capsys.readouterr().err


def test_enrich_file_refuses_a_provider_the_schema_would_refuse(tmp_path):
    path = write_csv(tmp_path, "lead_id,date,employees", "L-1,2026-11-01,3")
    with pytest.raises(Exception, match="--provider must be 1 to 64"):
        enrich_file(Settings(), path, provider="p" * 65, dry_run=True)


def test_help_lists_enrich_and_explains_its_columns(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "enrich" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["enrich", "--help"])
    out = capsys.readouterr().out
    for col in ("lead_id", "observed_at", "date", "technologies", "intent_score", "provider"):
        assert col in out
