"""Pieces of ``leadscore bench``: the soak's memory summary, its event stream, percentiles."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.validation import parse_ts_ms
from streamer.bench import RSS_SAMPLE_S, _by_period, _event_at, _percentiles, _rss_summary


def test_flat_memory_has_no_growth() -> None:
    s = _rss_summary([300.0, 301.0, 300.0, 301.0, 300.0, 301.0])
    assert s["samples"] == 6 and s["first"] == 300.0 and s["max"] == 301.0
    assert abs(s["growth_mb_per_min"]) < 1.0  # noise of +-1 MB, not a trend


def test_a_leak_shows_as_growth_per_minute() -> None:
    per_sample = 2.0
    samples = [300.0 + per_sample * i for i in range(12)]
    s = _rss_summary(samples)
    assert s["growth_mb_per_min"] == pytest.approx(per_sample * 60 / RSS_SAMPLE_S)
    assert s["last"] == samples[-1]


def test_no_samples_says_so() -> None:
    assert _rss_summary([]) == {"samples": 0}


def test_the_event_stream_has_fresh_ids_and_turns_its_leads_over() -> None:
    template = [
        {"event_id": "a", "lead_id": "L1", "source": "web", "type": "page_view", "ts": "x"},
        {"event_id": "b", "lead_id": "L2", "source": "web", "type": "page_view", "ts": "x"},
    ]
    events = [_event_at(template, i, "s1", 1_700_000_000_000 + i) for i in range(6)]
    assert len({e["event_id"] for e in events}) == 6
    # Each pass over the template brings new leads, as real traffic does.
    assert [e["lead_id"] for e in events] == [
        "s10-L1",
        "s10-L2",
        "s11-L1",
        "s11-L2",
        "s12-L1",
        "s12-L2",
    ]
    assert parse_ts_ms(events[5]["ts"]) == 1_700_000_000_005
    assert template[0]["event_id"] == "a"  # the template is not modified


def test_percentiles_of_nothing_are_none() -> None:
    assert _percentiles(np.array([])) == {
        "n": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
    }
    p = _percentiles(np.arange(1, 101, dtype=float))
    assert p["n"] == 100 and p["max"] == 100.0 and 50 <= p["p50"] <= 51


def test_latency_by_period_groups_by_event_time_from_the_first_event() -> None:
    pairs = [(100.2, 0.010), (100.9, 0.030), (101.3, 0.050), (103.5, 0.020)]
    rows = _by_period(pairs, 1.0, "second")
    got = [(r["second"], r["n"], r["max"]) for r in rows]
    assert got == [(0, 2, 30.0), (1, 1, 50.0), (3, 1, 20.0)]
    assert _by_period([], 60.0, "minute") == []
