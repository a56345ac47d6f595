"""The monitor's sample of scoring moments: which moments, which labels, and when."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from leadscore.monitor.book import Book, moment_key

H = 1000  # horizon (ms)


def test_key_is_the_documented_hash():
    import hashlib

    want = int.from_bytes(hashlib.sha256(b"L-1\x00e-9").digest()[:8], "big")
    assert moment_key("L-1", "e-9") == want


def test_matured_pending_and_labels():
    b = Book(k=6)
    for t in (100, 200, 300, 1500, 2500):
        b.score("L", "v1", f"e{t}", t, t / 10_000, "warm")
    b.crm("L", "converted", 1250, {})
    b.crm("L", "converted", 1260, {})  # the first conversion counts
    b.score("other", "v1", "x", 3000, 0.5, "cold")  # moves the watermark
    b.crm_caught_up = True
    rows = {r.t_ms: r.label for _, _, r in b.matured("v1", H, 10**9)}
    # Watermark 3000: moments up to 2000 are matured. 1500 is after the conversion: no moment.
    assert rows == {100: 0, 200: 0, 300: 1}  # 1250 is within 1000 of 300 only
    assert [r.lead_id for r in b.pending("v1", H)] == ["other"]


def test_pending_is_never_a_negative():
    b = Book(k=6)
    b.score("L", "v1", "a", 100, 0.2, "cold")
    b.score("L", "v1", "b", 900, 0.4, "cold")
    b.crm("L", "lead_updated", 950, {"industry": "Retail"})
    b.crm_caught_up = True
    assert [r.t_ms for _, _, r in b.matured("v1", H, 10**9)] == []
    assert sorted(r.t_ms for r in b.pending("v1", H)) == [100, 900]


def test_watermark_waits_for_the_crm_topic():
    b = Book()
    b.score("L", "v1", "a", 5000, 0.2, "cold")
    b.crm("L", "lead_created", 3000, {})
    assert b.watermark_ms == 3000
    b.crm_caught_up = True
    assert b.watermark_ms == 5000


def test_sample_is_k_smallest_keys_and_the_same_for_every_version():
    b = Book(k=6)
    for i in range(40):
        for v in ("champion", "shadow"):
            b.score("L", v, f"e{i}", i, 0.1, "cold")
    b.score("z", "champion", "z", 10_000, 0.1, "cold")
    b.crm_caught_up = True
    want = sorted((moment_key("L", f"e{i}"), i) for i in range(40))[:6]
    for v in ("champion", "shadow"):
        got = sorted(r.t_ms for lead, _, r in b.matured(v, H, 10**9) if lead == "L")
        assert got == sorted(t for _, t in want)


def test_redelivered_records_count_once_and_segments_keep_the_newest():
    b = Book()
    b.score("L", "v", "a", 10, 0.3, "cold")
    b.score("L", "v", "a", 10, 0.3, "cold")
    assert len(b.leads["L"].moments["v"]) == 1
    b.crm("L", "lead_updated", 50, {"industry": "Media"})
    b.crm("L", "lead_created", 20, {"industry": "Retail", "country": "DE"})
    assert b.leads["L"].segments == {"industry": (50, "Media"), "country": (20, "DE")}


def _brute(events, k, horizon, watermark):
    """The sample by definition: per lead, the k matured eligible moments of smallest key."""
    closed: dict[str, int] = {}
    conv: dict[str, int] = {}
    moments: dict[str, dict[str, int]] = {}
    for kind, lead, eid, t in events:
        if kind == "score":
            moments.setdefault(lead, {}).setdefault(eid, t)
        else:
            closed[lead] = min(closed.get(lead, t), t)
            if kind == "converted":
                conv[lead] = min(conv.get(lead, t), t)
    out = set()
    for lead, ms in moments.items():
        ok = [(moment_key(lead, e), t, e) for e, t in ms.items() if t < closed.get(lead, 10**12)]
        matured = sorted(x for x in ok if x[1] <= watermark - horizon)[:k]
        c = conv.get(lead)
        out |= {(lead, t, int(c is not None and t < c <= t + horizon)) for _, t, _ in matured}
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6))
def test_pruned_book_samples_what_the_definition_samples(seed):
    rng = random.Random(seed)
    events = []
    t = 0
    for i in range(300):
        t += rng.randint(0, 30)
        lead = f"L{rng.randint(0, 6)}"
        r = rng.random()
        kind = "score" if r < 0.93 else ("converted" if r < 0.97 else "disqualified")
        events.append((kind, lead, f"e{i}", t))
    b = Book(k=3)
    for n, (kind, lead, eid, ts) in enumerate(events):
        if kind == "score":
            b.score(lead, "v", eid, ts, 0.5, "cold")
        else:
            b.crm(lead, kind, ts, {})
        if n % 37 == 0:
            b.crm_caught_up = True
            b.compact({"v": 200}, 10**9)  # prunes along the way
    b.crm_caught_up = True
    got = {(lead, r.t_ms, r.label) for lead, _, r in b.matured("v", 200, 10**9)}
    assert got == _brute(events, 3, 200, b.watermark_ms)


def test_state_round_trip():
    b = Book()
    b.score("L", "v", "a", 10, 0.3, "hot")
    b.crm("L", "converted", 30, {"country": "FR"})
    again = Book.from_dict(b.as_dict())
    assert again.as_dict() == b.as_dict()
