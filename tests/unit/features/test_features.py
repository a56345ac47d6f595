"""Feature arithmetic on hand-made histories, and oracle tests against pandas."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from leadscore.features.definitions import (
    BUCKET_MS,
    DAY_MS,
    DECAY_POOLS,
    FEATURE_NAMES,
    RETENTION_MS,
    SPECS,
    Count,
    Decayed,
    Flag,
    Profile,
    by_name,
    decay_factors,
    event_kind,
    feature_sources,
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


#: Comment sentiments on both sides of each cut-off (0.05 and -0.05), and none at all.
SENTIMENTS = (None, -0.6, -0.05, -0.0499, 0.0, 0.0499, 0.05, 0.7)


#: Intent topics as providers spell them: configured ones, and one that is not.
TOPICS = ("Lead Scoring", "marketing-automation", "CRM software", "ERP", "revenue_operations")
#: Intent scores on both sides of the surge cut-off (60).
SCORES = (0, 35.5, 59.99, 60, 60.01, 88, 100)


def _random_stream(seed: int, n: int) -> list[Event]:
    rng = random.Random(seed)
    kinds = [f"{s}:{t}" for s, ts in EVENT_TYPES.items() for t in ts]
    out = []
    for i in range(n):
        ts = T0 + rng.randint(0, 45 * DAY_MS)
        kind = rng.choice(kinds)
        attrs: dict[str, object] = {}
        if kind == "social:comment":
            sentiment = rng.choice(SENTIMENTS)
            if sentiment is not None:
                attrs["sentiment"] = sentiment
        elif kind == "enrichment:intent":
            attrs = {"topic": rng.choice(TOPICS), "score": rng.choice(SCORES)}
        out.append(ev(i, kind, ts, lead=f"L{rng.randint(0, 2)}", **attrs))
    out.sort(key=lambda e: e.ts_ms)
    return out


def test_enrichment_latest_values_multi_hot_and_intent_by_hand():
    st = LeadState()
    h = 3_600_000
    st.apply(ev(1, "enrichment:firmographics", T0 + 5 * h, employees=250, revenue_band="10M-50M"))
    # An older observation arriving later loses; a newer one wins field by field.
    st.apply(ev(2, "enrichment:firmographics", T0 + 1 * h, employees=40, industry_code="541511"))
    st.apply(ev(3, "enrichment:technographics", T0, technologies=["Salesforce", "ERP-X"]))
    st.apply(ev(4, "enrichment:technographics", T0 + 2 * h, technologies=["hub spot", "Looker"]))
    st.apply(ev(5, "enrichment:intent", T0 + 3 * h, topic="Lead Scoring", score=72))
    st.apply(ev(6, "enrichment:intent", T0 + 26 * h, topic="ERP", score=90))
    st.apply(ev(7, "enrichment:intent", T0 + 27 * h, topic="lead_scoring", score=59.9))
    f = st.features()
    assert f is not None
    assert f["firmo_employees"] == 250.0 and f["firmo_revenue_band"] == "10M-50M"
    assert f["firmo_industry_sector"] == "54"
    assert f["tech_hubspot"] == 1 and f["tech_looker"] == 1 and f["tech_salesforce"] == 0
    assert f["tech_count"] == 2.0
    assert f["intent_signals_30d"] == 3 and f["intent_surges_30d"] == 2
    assert f["intent_surges_7d"] == 2 and f["intent_lead_scoring_surges_30d"] == 1
    assert f["intent_crm_software_surges_30d"] == 0
    assert f["days_since_last_intent_surge"] == 1 * h / DAY_MS
    d = decay_factors(7.0, 30)
    assert f["intent_decayed"] == 0.0 + 3 * d[1] + (3 + 1) * d[0]
    # Enrichment is not the lead's own activity: no activity recency, no engagement.
    assert f["days_since_last_activity"] is None and f["engagement_decayed"] == 0.0
    # Before any technographics the flags are missing, not 0.
    fresh = LeadState()
    fresh.apply(ev(8, "enrichment:intent", T0, topic="x", score=1))
    g = fresh.features()
    assert g is not None and g["tech_hubspot"] is None and g["firmo_employees"] is None


def test_social_counts_sentiment_recency_and_decay_by_hand():
    st = LeadState()
    h = 3_600_000
    st.apply(ev(1, "social:follow", T0))
    st.apply(ev(2, "social:mention", T0 + 1 * h, platform="linkedin"))
    st.apply(ev(3, "social:comment", T0 + 2 * h, sentiment=0.6696))
    st.apply(ev(4, "social:comment", T0 + 26 * h, sentiment=-0.5))
    st.apply(ev(5, "social:comment", T0 + 26 * h))  # no text: neither positive nor negative
    st.apply(ev(6, "web:page_view", T0 + 27 * h))
    f = st.features()
    assert f is not None
    assert f["social_comments_30d"] == 3 and f["social_comments_7d"] == 3
    assert f["social_positive_comments_30d"] == 1
    assert f["social_negative_comments_30d"] == 1
    assert f["social_positive_comment_rate_30d"] == 1 / 3
    assert f["social_mentions_7d"] == 1 and f["social_follows_30d"] == 1
    assert f["social_shares_30d"] == 0
    assert f["days_since_last_social"] == 1 * h / DAY_MS
    d = decay_factors(7.0, 30)
    # day 0: follow 2, mention 3, positive comment 5; day 1: negative 1, neutral 3
    assert f["social_engagement_decayed"] == 0.0 + 10 * d[1] + 4 * d[0]
    # The old features don't see the new source: one page view of engagement, no activity
    # but the page view's.
    assert f["engagement_decayed"] == 1.0
    assert f["days_since_last_activity"] == 0.0


@pytest.mark.parametrize("seed", [1, 2])
def test_every_decayed_pool_matches_numpy_on_every_prefix(seed):
    """Oracle: each decayed feature is its pool's points per day weighted by the decay of
    the day's age, summed in day order, over the retention before the latest event."""
    events = _random_stream(seed, 300)
    decayed = [s for s in SPECS if isinstance(s, Decayed)]
    assert {s.pool for s in decayed} == set(DECAY_POOLS)
    factors = np.array(decay_factors(7.0, RETENTION_MS // DAY_MS))
    states: dict[str, LeadState] = {}
    seen: dict[str, list[Event]] = {}
    for e in events:
        st = states.setdefault(e.lead_id, LeadState())
        st.apply(e)
        mine = seen.setdefault(e.lead_id, [])
        mine.append(e)
        feats = st.features()
        assert feats is not None
        ref_day = max(x.ts_ms for x in mine) // DAY_MS
        for spec in decayed:
            points = DECAY_POOLS[spec.pool]
            per_day: dict[int, int] = {}
            for x in mine:
                day = x.ts_ms // DAY_MS
                if ref_day - day < len(factors):
                    pts = points.get(event_kind(x.source, x.type, x.attributes), 0)
                    per_day[day] = per_day.get(day, 0) + pts
            total = 0.0
            for day in sorted(per_day):
                total = total + per_day[day] * factors[ref_day - day]
            assert feats[spec.name] == total, spec.name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_window_count_matches_pandas_on_every_prefix(seed):
    """Oracle: each count equals a pandas count over the same bucket-aligned window."""
    events = _random_stream(seed, 300)
    df = pd.DataFrame(
        {
            "lead": [e.lead_id for e in events],
            "kind": [event_kind(e.source, e.type, e.attributes) for e in events],
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
                (mine.kind.isin(spec.kinds) & (bucket > rb - spec.n_buckets) & (bucket <= rb)).sum()
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
        elif isinstance(s, Flag):
            values.append("1")
        elif isinstance(s, Profile):
            values.append("")
        else:
            values.append(format(0.1 + 0.2, ".17g"))
    parsed = parse_vector("\x1f".join(values))
    assert list(parsed) == list(FEATURE_NAMES)
    assert parsed["web_page_views_1h"] == 3
    assert parsed["email_open_rate_30d"] == 0.1 + 0.2
    assert parsed["industry"] is None and parsed["firmo_revenue_band"] is None
    assert parsed["tech_hubspot"] == 1 and parsed["firmo_employees"] == 0.1 + 0.2
    assert by_name("engagement_decayed").name == "engagement_decayed"
    assert np.isclose(decay_factors(7.0, 8)[7], 0.5)


def test_each_sources_features_read_only_its_own_events():
    """A source's features stay its own (what `train --compare-without` leaves out): a
    derived kind counted by another source's feature would be a silent mix-up."""
    reads = feature_sources()
    assert set(reads) == set(FEATURE_NAMES)
    for name, sources in reads.items():
        if name.startswith(("social_", "days_since_last_social")):
            assert sources == {"social"}, name
        elif name.startswith(("firmo_", "tech_", "intent_", "days_since_last_intent")):
            assert sources == {"enrichment"}, name
        else:
            assert sources <= {"web", "email", "crm"}, name
