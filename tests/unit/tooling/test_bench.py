"""Pieces of ``leadscore bench``: the soak's memory summary, its event stream, percentiles,
CPU shares."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import numpy as np
import orjson
import pytest

from leadscore.cli import build_parser
from leadscore.schemas import SOURCES
from leadscore.schemas.validation import Event, parse_ts_ms, validate_event
from leadscore.settings import Settings
from leadscore.tooling.bench import (
    RSS_SAMPLE_S,
    ScoreReader,
    _by_period,
    _cpu_text,
    _event_at,
    _events_now,
    _percentiles,
    _rss_summary,
    only_sources,
    source_mix,
    traffic_template,
)
from leadscore.tooling.cpu import CpuMeter, Target, machine_cpu_seconds, process_cpu_seconds
from leadscore.tooling.exceptions import BenchConfigError


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


def test_warm_up_then_flat_shows_no_second_half_growth() -> None:
    samples = [300.0 + 3.0 * i for i in range(6)] + [315.0, 315.5, 315.0, 315.5, 315.0, 315.5]
    s = _rss_summary(samples)
    assert s["growth_mb_per_min"] > 1.0  # the warm-up lifts the whole-run slope
    assert abs(s["second_half_growth_mb_per_min"]) < 0.5
    leak = _rss_summary([300.0 + 2.0 * i for i in range(12)])
    assert leak["second_half_growth_mb_per_min"] == pytest.approx(2.0 * 60 / RSS_SAMPLE_S)


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


def test_cpu_meter_gives_each_process_its_share_of_one_core_over_the_interval() -> None:
    now = [100.0]
    used = {"worker": 10.0, "broker": 4.0, "machine": 30.0, "steal": 0.0}

    def sample(pids: Mapping[str, Target]) -> dict[str, float]:
        assert set(pids) == {"worker", "broker"}
        return dict(used)

    meter = CpuMeter({"worker": 1, "broker": 2}, sample=sample, clock=lambda: now[0])
    with pytest.raises(RuntimeError, match="before start"):
        meter.read()
    meter.start()
    now[0] += 4.0
    used.update(worker=13.6, broker=5.0, machine=37.2, steal=0.4)
    shares = meter.read()
    assert shares["worker"] == 90.0 and shares["broker"] == 25.0
    assert shares["machine"] == 180.0 and shares["steal"] == 10.0
    assert meter.seconds()["worker"] == pytest.approx(3.6)
    assert _cpu_text(shares).startswith("worker 90, broker 25, machine 180 of ")


def test_cpu_meter_leaves_out_a_process_it_cannot_read() -> None:
    values = iter([{"worker": 1.0, "gone": float("nan")}, {"worker": 2.0, "gone": float("nan")}])
    meter = CpuMeter({"worker": 1, "gone": 2}, sample=lambda _p: next(values), clock=lambda: 0.0)
    meter.start()
    assert meter.seconds() == {"worker": 1.0}


def test_cpu_figures_come_from_proc_for_this_process_and_the_machine() -> None:
    t = process_cpu_seconds(os.getpid())
    assert t > 0  # this test process has used some CPU already
    main_thread = process_cpu_seconds((os.getpid(), threading.get_native_id()))
    assert 0 < main_thread <= process_cpu_seconds(os.getpid())
    assert process_cpu_seconds(2**22 + 12345) != process_cpu_seconds(2**22 + 12345)  # NaN
    machine = machine_cpu_seconds()
    assert machine["busy"] >= t and machine["steal"] >= 0


class _Record:
    def __init__(self, event_ts: str, scored_at: str) -> None:
        self.value = orjson.dumps({"event_ts": event_ts, "scored_at": scored_at})
        self.key = b"L-1"


def test_the_score_reader_splits_each_latency_at_the_workers_scored_at() -> None:
    reader = ScoreReader(Settings(kafka_bootstrap="127.0.0.1:1"))
    first = _Record("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.030Z")
    reader._count([first], 0.0)
    assert reader.count == 1 and reader.latencies == [] and reader.to_scored == []
    assert reader.bytes == len(first.value) + len(first.key)  # the broker's bytes out
    reader.track_latency = True
    now = parse_ts_ms("2026-01-01T00:00:01.050Z") / 1000  # type: ignore[operator]
    reader._count(
        [
            _Record("2026-01-01T00:00:01.000Z", "2026-01-01T00:00:01.030Z"),
            _Record("2026-01-01T00:00:01.010Z", "2026-01-01T00:00:01.030Z"),
        ],
        now,
    )
    assert [round(lat, 3) for _, lat in reader.latencies] == [0.05, 0.04]
    # 30 and 20 ms to the score; the rest (20 ms each) after it.
    assert [round(x, 3) for x in reader.to_scored] == [0.03, 0.02]


def test_five_source_traffic_holds_scorable_comments_and_enrichment_events() -> None:
    events = _events_now(traffic_template(30_000), 30_000, "t1")
    mix = source_mix(events)
    assert sum(mix.values()) == 30_000 and list(mix) == list(SOURCES)
    assert all(mix[s] > 0 for s in SOURCES), mix
    comment = next(e for e in events if e["source"] == "social" and e["type"] == "comment")
    assert comment["attributes"]["text"]
    # The worker validates it as production does: the text becomes a sentiment score.
    ev = validate_event(
        orjson.dumps(comment),
        topic_source="social",
        key=comment["lead_id"].encode(),
        now_ms=parse_ts_ms(comment["ts"]) or 0,  # the stream's times are "now"
        max_future_ms=60_000,
    )
    assert isinstance(ev, Event), ev
    assert "text" not in ev.attributes and isinstance(ev.attributes["sentiment"], float)


def test_traffic_of_some_sources_still_sends_every_event() -> None:
    template = traffic_template(30_000)
    three = only_sources(template, ("web", "email", "crm"))
    assert [e for e in template if e["source"] in ("web", "email", "crm")] == three
    mix = source_mix(_events_now(three, 30_000, "t1"))
    assert mix["social"] == mix["enrichment"] == 0
    assert mix["web"] > 0 and mix["email"] > 0 and mix["crm"] > 0
    assert sum(mix.values()) == 30_000


def test_unknown_or_absent_sources_are_refused() -> None:
    template = [{"event_id": "a", "lead_id": "L1", "source": "web", "type": "page_view"}]
    with pytest.raises(BenchConfigError, match="unknown source"):
        only_sources(template, ("web", "fax"))
    with pytest.raises(BenchConfigError, match="no events of crm"):
        only_sources(template, ("crm",))


def test_bench_sources_option_defaults_to_all_and_names_the_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert build_parser().parse_args(["bench"]).sources == SOURCES
    args = build_parser().parse_args(["bench", "--sources", "crm,web, email"])
    assert args.sources == ("web", "email", "crm")
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "--sources", "web,tiktok"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown source(s) tiktok" in err and ", ".join(SOURCES) in err
