"""Feature arithmetic on hand-made histories, and oracle tests against pandas."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from leadscore.features.definitions import (
    BUCKET_MS,
    DAY_MS,
    FEATURE_NAMES,
    RETENTION_MS,
    SPECS,
    Count,
    by_name,
    decay_factors,
)
from leadscore.features.lua import render_script
from leadscore.features.offline import LeadState, replay
from leadscore.features.wire import parse_vector
from leadscore.schemas import EVENT_TYPES
from leadscore.schemas.validation import Event, format_ts_ms

T0 = 1_795_000_000_000 - (1_795_000_000_000 % DAY_MS)  # a day boundary


def ev(i: int, kind: str, ts: int, lead: str = "L", **attrs: object) -> Event:
    src, typ = kind.split(":")
    return Event(f"e{i}", lead, src, typ, format_ts_ms(ts), ts, dict(attrs))  # type: ignore[arg-type]


def test_window_counts_recency_and_rates_by_hand():
    st = LeadState()
    h = 3_600_000
    st.apply(ev(1, "crm:lead_created", T0, industry="retail"))
    st.apply(ev(2, "web:page_view", T0 + 1 * h))
    st.apply(ev(3, "web:page_view", T0 + 30 * h))
    st.apply(ev(4, "web:pricing_view", T0 + 30 * h + 10 * 60_000))
    st.apply(ev(5, "email:email_sent", T0 + 31 * h))
    st.apply(ev(6, "email:email_sent", T0 + 31 * h))
    st.apply(ev(7, "email:email_open", T0 + 31 * h + 5 * 60_000))
    f = st.features()
    assert f is not None
    assert f["web_page_views_1h"] == 0  # latest page view is 65 minutes before ref
    assert f["web_page_views_24h"] == 1
    assert f["web_page_views_7d"] == 2
    assert f["web_pricing_views_24h"] == 1
    assert f["email_opens_7d"] == 1 and f["email_sent_30d"] == 2
    assert f["email_open_rate_30d"] == 0.5
    assert f["email_click_rate_30d"] == 0.0
    ref = T0 + 31 * h + 5 * 60_000
    assert f["days_since_last_web"] == (ref - (T0 + 30 * h + 10 * 60_000)) / DAY_MS
    assert f["days_since_last_email"] == 0.0
    assert f["days_since_created"] == (ref - T0) / DAY_MS
    assert f["industry"] == "retail" and f["country"] is None
    pts = {0: 1, 1: 1 + 5 + 1}  # day 0: a page view; day 1: page view, pricing view, open
    d = decay_factors(7.0, 30)
    assert f["engagement_decayed"] == 0.0 + pts[0] * d[1] + pts[1] * d[0]


def test_rate_is_missing_without_denominator_and_recency_without_history():
    st = LeadState()
    st.apply(ev(1, "web:page_view", T0))
    f = st.features()
    assert f is not None
    assert f["email_open_rate_30d"] is None
    assert f["days_since_last_email"] is None
    assert f["days_since_last_web"] == 0.0


def test_duplicates_change_nothing_and_late_events_are_ignored():
    st = LeadState()
    assert st.apply(ev(1, "web:page_view", T0 + 40 * DAY_MS)) == "ok"
    before = st.features()
    assert st.apply(ev(1, "web:page_view", T0 + 40 * DAY_MS)) == "dup"
    assert st.apply(ev(2, "web:page_view", T0 + 40 * DAY_MS - RETENTION_MS - 1)) == "late"
    assert st.features() == before
    assert st.apply(ev(3, "web:page_view", T0 + 40 * DAY_MS - RETENTION_MS)) == "ok"


def test_late_profile_update_still_counts_and_final_state_ignores_arrival_order():
    events = _random_stream(4, 400)
    events.append(ev(999, "crm:lead_updated", T0 - 90 * DAY_MS, lead="L1", country="FR"))
    want = replay(sorted(events, key=lambda e: e.ts_ms))
    rng = random.Random(0)
    for _ in range(5):
        rng.shuffle(events)
        got = replay(events)
        assert {k: v.features() for k, v in got.items()} == {
            k: v.features() for k, v in want.items()
        }
    assert want["L1"].features()["country"] == "FR"  # type: ignore[index]


def test_newer_profile_update_wins_regardless_of_arrival_order():
    a = ev(1, "crm:lead_updated", T0 + 10, job_title="Manager")
    b = ev(2, "crm:lead_updated", T0 + 20, job_title="Director")
    c = ev(3, "crm:lead_updated", T0 + 20, country=None)
    s1, s2 = LeadState(), LeadState()
    for e in (a, b, c):
        s1.apply(e)
    for e in (c, b, a):
        s2.apply(e)
    assert s1.features() == s2.features()
    f = s1.features()
    assert f is not None and f["job_title"] == "Director"


def test_as_of_an_earlier_moment_uses_only_earlier_events():
    events = [ev(i, "web:page_view", T0 + i * 3_600_000) for i in range(10)]
    at = T0 + 4 * 3_600_000
    st = replay(events, at)["L"]
    f = st.features(at)
    assert f is not None and f["web_page_views_24h"] == 5


def _random_stream(seed: int, n: int) -> list[Event]:
    rng = random.Random(seed)
    kinds = [f"{s}:{t}" for s, ts in EVENT_TYPES.items() for t in ts]
    out = []
    for i in range(n):
        ts = T0 + rng.randint(0, 45 * DAY_MS)
        out.append(ev(i, rng.choice(kinds), ts, lead=f"L{rng.randint(0, 2)}"))
    out.sort(key=lambda e: e.ts_ms)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_window_count_matches_pandas_on_every_prefix(seed):
    """Oracle: each count equals a pandas count over the same bucket-aligned window."""
    events = _random_stream(seed, 300)
    df = pd.DataFrame(
        {
            "lead": [e.lead_id for e in events],
            "kind": [f"{e.source}:{e.type}" for e in events],
            "ts": [e.ts_ms for e in events],
        }
    )
    counts = [s for s in SPECS if isinstance(s, Count)]
    states: dict[str, LeadState] = {}
    for i, e in enumerate(events):
        st = states.setdefault(e.lead_id, LeadState())
        st.apply(e)
        feats = st.features()
        assert feats is not None
        prefix = df.iloc[: i + 1]
        mine = prefix[prefix.lead == e.lead_id]
        ref = int(mine.ts.max())
        for spec in counts:
            b = BUCKET_MS[spec.resolution]
            rb = ref // b
            bucket = mine.ts // b
            want = int(
                ((mine.kind == spec.kind) & (bucket > rb - spec.n_buckets) & (bucket <= rb)).sum()
            )
            assert feats[spec.name] == want, (i, spec.name)


def test_lua_script_is_generated_from_the_specs():
    script = render_script(SPECS, 3600)
    assert "local TTL_S = 3600" in script
    assert script.count("t = 'c'") == sum(isinstance(s, Count) for s in SPECS)
    assert "--@SPEC@" not in script


def test_vector_parsing_round_trips_types():
    values = []
    for s in SPECS:
        if isinstance(s, Count):
            values.append("3")
        elif s.name in ("industry", "company_size", "job_title", "country", "lead_source"):
            values.append("")
        else:
            values.append(format(0.1 + 0.2, ".17g"))
    parsed = parse_vector("\x1f".join(values))
    assert list(parsed) == list(FEATURE_NAMES)
    assert parsed["web_page_views_1h"] == 3
    assert parsed["email_open_rate_30d"] == 0.1 + 0.2
    assert parsed["industry"] is None
    assert by_name("engagement_decayed").name == "engagement_decayed"
    assert np.isclose(decay_factors(7.0, 8)[7], 0.5)
