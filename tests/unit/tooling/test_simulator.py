"""Unit tests of the synthetic lead-history generator (no network, no broker)."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from leadscore.schemas.validation import Event, parse_ts_ms, validate_event
from leadscore.tooling.simulator import SimConfig, iter_live, simulate

START = 1_780_000_000_000  # 2026-05-28T20:26:40Z, a fixed start keeps the tests reproducible
DAY_MS = 86_400_000
FAR_FUTURE = 4_000_000_000_000
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

Events = list[dict[str, Any]]


@pytest.fixture(scope="module")
def config() -> SimConfig:
    return SimConfig(leads=1000, events=40_000, seed=11, start_ms=START, days=90.0)


@pytest.fixture(scope="module")
def history(config: SimConfig) -> Events:
    return simulate(config)


def _validate(ev: dict[str, Any]) -> Event:
    res = validate_event(
        orjson.dumps(ev),
        topic_source=None,
        key=None,
        now_ms=FAR_FUTURE,
        max_future_ms=0,
        check_key=False,
    )
    assert isinstance(res, Event), (res, ev)
    return res


def _by_lead(events: Events) -> dict[str, Events]:
    out: dict[str, Events] = defaultdict(list)
    for ev in events:
        out[ev["lead_id"]].append(ev)
    return out


def _outcome_ms(evs: Events, etype: str) -> int | None:
    return next((parse_ts_ms(e["ts"]) for e in evs if e["type"] == etype), None)


def test_same_seed_same_output_and_other_seed_differs() -> None:
    cfg = SimConfig(leads=150, events=5000, seed=5, start_ms=START, days=45.0)
    a = simulate(cfg)
    b = simulate(cfg)
    assert a == b
    c = simulate(SimConfig(leads=150, events=5000, seed=6, start_ms=START, days=45.0))
    assert [(e["lead_id"], e["type"], e["ts"]) for e in c] != [
        (e["lead_id"], e["type"], e["ts"]) for e in a
    ]


@pytest.mark.parametrize(
    ("leads", "events", "days"),
    [(1000, 40_000, 90.0), (200, 8000, 60.0), (500, 10_000, 90.0), (100, 12_000, 30.0)],
)
def test_total_events_within_ten_percent(leads: int, events: int, days: float) -> None:
    out = simulate(SimConfig(leads=leads, events=events, seed=3, start_ms=START, days=days))
    assert abs(len(out) - events) <= 0.10 * events, len(out)


def test_every_event_validates_and_is_well_formed(history: Events, config: SimConfig) -> None:
    end = START + round(config.days * DAY_MS)
    for ev in history:
        parsed = _validate(ev)
        assert set(ev) == {"event_id", "lead_id", "source", "type", "ts", "attributes"}
        assert TS_RE.match(ev["ts"]), ev["ts"]
        assert START <= parsed.ts_ms < end
        assert re.fullmatch(r"L-\d{6}", ev["lead_id"])
        if ev["source"] == "web":
            assert {"url", "duration_s", "session_id"} <= set(ev["attributes"])
            assert ev["attributes"]["duration_s"] >= 0
        elif ev["source"] == "email":
            assert "campaign_id" in ev["attributes"]
            if ev["type"] == "email_click":
                assert ev["attributes"]["link"].startswith("https://")


def test_sorted_by_time_and_ids_unique(history: Events) -> None:
    times = [parse_ts_ms(e["ts"]) for e in history]
    assert all(t is not None for t in times)
    assert times == sorted(times)  # type: ignore[type-var]
    ids = [e["event_id"] for e in history]
    assert len(set(ids)) == len(ids)


def test_every_lead_starts_with_lead_created(history: Events, config: SimConfig) -> None:
    by_lead = _by_lead(history)
    assert len(by_lead) == config.leads
    assert sorted(by_lead) == [f"L-{i:06d}" for i in range(1, config.leads + 1)]
    for evs in by_lead.values():
        assert evs[0]["type"] == "lead_created"
        assert sum(e["type"] == "lead_created" for e in evs) == 1
        attrs = evs[0]["attributes"]
        assert set(attrs) == {"company_size", "industry", "job_title", "country", "lead_source"}
        assert attrs["lead_source"] and attrs["country"]


def test_mix_of_event_types(history: Events) -> None:
    counts = Counter(e["type"] for e in history)
    every_type = {
        "page_view",
        "pricing_view",
        "form_submit",
        "content_download",
        "demo_request",
        "email_sent",
        "email_open",
        "email_click",
        "email_unsubscribe",
        "email_bounce",
        "lead_created",
        "lead_updated",
        "stage_changed",
        "converted",
        "disqualified",
    }
    assert every_type <= set(counts)
    # Page views dominate the web, opens are a fraction of sends, clicks a fraction of opens.
    assert counts["page_view"] > counts["pricing_view"] > counts["demo_request"]
    assert counts["email_sent"] > counts["email_open"] > counts["email_click"]


def test_conversion_rate_in_a_sane_band(history: Events, config: SimConfig) -> None:
    converted = {e["lead_id"] for e in history if e["type"] == "converted"}
    disqualified = {e["lead_id"] for e in history if e["type"] == "disqualified"}
    assert 0.08 <= len(converted) / config.leads <= 0.30
    assert 0.03 <= len(disqualified) / config.leads <= 0.25
    assert not converted & disqualified


def test_conversions_follow_an_opportunity_after_the_configured_delay(
    history: Events, config: SimConfig
) -> None:
    lo, hi = config.conversion_delay_days
    for evs in _by_lead(history).values():
        won = _outcome_ms(evs, "converted")
        if won is None:
            continue
        opp = next(e for e in evs if e["type"] == "stage_changed")
        assert opp["attributes"]["stage"] == "opportunity"
        opp_ms = parse_ts_ms(opp["ts"])
        assert opp_ms is not None
        assert lo * DAY_MS <= won - opp_ms <= hi * DAY_MS


def test_behaviour_carries_signal(history: Events) -> None:
    """Converted leads show more high-intent web activity before converting than the rest."""
    conv: list[int] = []
    rest: list[int] = []
    for evs in _by_lead(history).values():
        won = _outcome_ms(evs, "converted")
        cutoff = won if won is not None else 1 << 62
        n = sum(
            1
            for e in evs
            if e["type"] in ("pricing_view", "demo_request")
            and (parse_ts_ms(e["ts"]) or 0) < cutoff
        )
        (conv if won is not None else rest).append(n)
    assert conv and rest
    assert sum(conv) / len(conv) > 1.5 * sum(rest) / len(rest)


def test_closed_leads_go_quiet(history: Events) -> None:
    before = after = 0
    for evs in _by_lead(history).values():
        closed = _outcome_ms(evs, "converted") or _outcome_ms(evs, "disqualified")
        if closed is None:
            continue
        for e in evs:
            t = parse_ts_ms(e["ts"]) or 0
            if e["source"] != "crm" and closed - 14 * DAY_MS <= t < closed:
                before += 1
            elif e["source"] != "crm" and closed < t <= closed + 14 * DAY_MS:
                after += 1
    assert after < 0.3 * before


def test_iter_live_yields_valid_new_events_in_time_order() -> None:
    cfg = SimConfig(leads=200, events=8000, seed=4, days=60.0)
    live = list(itertools.islice(iter_live(cfg, START), 3000))
    assert len(live) == 3000
    times = [_validate(e).ts_ms for e in live]
    assert times[0] >= START
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert times[-1] - times[0] > DAY_MS  # time advances at a realistic pace
    assert len({e["event_id"] for e in live}) == len(live)
    lead_nums = {int(e["lead_id"][2:]) for e in live}
    assert any(n <= cfg.leads for n in lead_nums)  # existing leads stay active
    assert any(n > cfg.leads for n in lead_nums)  # and new ones arrive
    # New leads are introduced by their lead_created before anything else.
    seen: set[str] = set()
    for e in live:
        if int(e["lead_id"][2:]) > cfg.leads and e["lead_id"] not in seen:
            assert e["type"] == "lead_created"
        seen.add(e["lead_id"])
    again = list(itertools.islice(iter_live(cfg, START), 3000))
    assert again == live


def test_iter_live_ids_do_not_collide_with_the_history() -> None:
    cfg = SimConfig(leads=100, events=3000, seed=9, start_ms=START - 30 * DAY_MS, days=30.0)
    hist = {e["event_id"] for e in simulate(cfg)}
    live = {e["event_id"] for e in itertools.islice(iter_live(cfg, START), 500)}
    assert not hist & live


def test_default_start_ends_the_history_now() -> None:
    now = int(time.time() * 1000)
    out = simulate(SimConfig(leads=30, events=800, seed=2, days=10.0))
    first, last = parse_ts_ms(out[0]["ts"]), parse_ts_ms(out[-1]["ts"])
    assert first is not None and last is not None
    assert now - 10 * DAY_MS - 5000 <= first <= last <= now + 5000


def test_generation_is_fast_enough() -> None:
    t0 = time.perf_counter()
    out = simulate(SimConfig(leads=3000, events=120_000, seed=1, start_ms=START))
    assert time.perf_counter() - t0 < 10.0
    assert abs(len(out) - 120_000) <= 12_000


@pytest.mark.parametrize(
    "kwargs",
    [{"leads": 0}, {"events": -1}, {"days": 0.0}, {"conversion_delay_days": (5.0, 1.0)}],
)
def test_bad_config_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**kwargs)
