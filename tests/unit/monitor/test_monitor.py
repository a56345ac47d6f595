"""The monitor's evaluation from records handed to it (no broker: the integration test runs
the process against a real one), and its report."""

from __future__ import annotations

import numpy as np
import orjson
from prometheus_client import generate_latest
from sklearn.metrics import roc_auc_score

from leadscore.model.performance import SEGMENTS
from leadscore.monitor.book import moment_key
from leadscore.monitor.report import load_report, text, to_html
from leadscore.monitor.service import Monitor
from leadscore.schemas.validation import format_ts_ms
from leadscore.settings import Settings

DAY = 86_400_000


def _settings(tmp_path) -> Settings:
    return Settings(
        model_dir=tmp_path / "models",
        monitor_state_dir=tmp_path / "mon",
        monitor_horizon_days=7,
        monitor_window_days=365,
        monitor_min_group=20,
    )


def _feed(mon: Monitor, s: Settings, seed: int = 0) -> list[tuple[float, int]]:
    """200 leads, one score record a day for 30 days; a third convert. Returns the expected
    (score, label) of the matured sampled moments (rules version: no registry horizon)."""
    rng = np.random.default_rng(seed)
    start = 1_780_000_000_000
    expected = []
    for i in range(200):
        lead = f"L{i}"
        conv = start + int(rng.integers(5, 40)) * DAY if rng.uniform() < 0.33 else None
        moments = []
        for d in range(30):
            t = start + d * DAY + i
            if conv is not None and t >= conv:
                break
            score = float(rng.uniform())
            tier = "hot" if score > 0.7 else "cold"
            rec = {"lead_id": lead, "model_version": "rules-v1", "event_id": f"e{i}-{d}",
                   "event_ts": format_ts_ms(t), "score": score, "tier": tier}  # fmt: skip
            mon.handle(s.topic("scores"), 0, i * 100 + d, lead.encode(), orjson.dumps(rec))
            moments.append((moment_key(lead, f"e{i}-{d}"), t, score))
        crm = {"lead_id": lead, "type": "lead_created", "ts": format_ts_ms(start + i),
               "attributes": {"industry": "A" if i % 2 else "B"}}  # fmt: skip
        mon.handle(s.topic("crm"), 0, i * 2, None, orjson.dumps(crm))
        if conv is not None:
            out = {"lead_id": lead, "type": "converted", "ts": format_ts_ms(conv)}
            mon.handle(s.topic("crm"), 0, i * 2 + 1, None, orjson.dumps(out))
        expected.append((conv, moments))
    watermark = mon.book.watermark_ms
    pairs = []
    for conv, moments in expected:
        matured = sorted(m for m in moments if m[1] <= watermark - 7 * DAY)[:6]
        pairs += [(s_, int(conv is not None and t < conv <= t + 7 * DAY)) for _, t, s_ in matured]
    return pairs


def test_evaluation_matches_the_definition_and_survives_a_restart(tmp_path):
    s = _settings(tmp_path)
    mon = Monitor(s)
    pairs = _feed(mon, s)
    mon.book.crm_caught_up = True
    rep = mon.evaluate()
    perf = rep["versions"]["rules-v1"]["performance"]
    y = np.array([lab for _, lab in pairs])
    p = np.array([sc for sc, _ in pairs])
    assert perf["moments"] == len(pairs) and perf["roc_auc"] == roc_auc_score(y, p)
    assert rep["versions"]["rules-v1"]["estimate"]["moments"] > 0
    assert {f["segment"] for f in rep["versions"]["rules-v1"]["fairness"]} == {"A", "B"}
    scrape = generate_latest(mon.registry).decode()
    assert 'leadscore_online_roc_auc{model_version="rules-v1"}' in scrape
    mon.save()
    again = Monitor(s)
    again.book.crm_caught_up = True
    assert again.offsets == mon.offsets
    assert again.evaluate()["versions"]["rules-v1"]["performance"]["roc_auc"] == perf["roc_auc"]


def test_report_text_and_html(tmp_path):
    s = _settings(tmp_path)
    mon = Monitor(s)
    _feed(mon, s)
    mon.book.crm_caught_up = True
    for _ in range(3):
        mon.evaluate()
    mon.save()
    rep = load_report(s.monitor_state_dir)
    out = text(rep)
    assert "ROC AUC" in out and "ESTIMATED" in out
    page = to_html(rep)
    # AUC with its estimate, calibration, fairness; no drift plot without scraped workers.
    assert page.count("<svg") == 3 and page.count("<polyline") >= 3
    assert "Drift per feature - rules-v1</h3><p>no data yet" in page


def test_bad_records_are_skipped(tmp_path):
    s = _settings(tmp_path)
    mon = Monitor(s)
    for value in (b"not json", b"[1]", orjson.dumps({"lead_id": "L"}), None):
        mon.handle(s.topic("scores"), 0, 0, b"L", value)
        mon.handle(s.topic("crm"), 0, 0, b"L", value)
    assert mon.book.leads == {}


def test_estimate_made_while_pending_is_set_beside_the_measurement(tmp_path):
    """A day's moments are estimated while pending and measured once matured: the report
    keeps both, so the estimate's error can be read off."""
    s = _settings(tmp_path)
    mon = Monitor(s)
    rng = np.random.default_rng(5)
    start = 1_780_000_000_000
    recs = []
    for i in range(300):
        for d in range(20):
            score = float(rng.beta(1, 4))
            t = start + d * DAY + i
            recs.append((t, f"L{i}", f"e{i}-{d}", score))
    recs.sort()
    converted = {
        f"L{i}": start + int(rng.integers(1, 25)) * DAY for i in range(300) if rng.uniform() < 0.3
    }
    half = start + 10 * DAY

    def feed(lo: int, hi: int) -> None:
        for t, lead, eid, score in recs:
            if lo <= t < hi:
                rec = {"lead_id": lead, "model_version": "rules-v1", "event_id": eid,
                       "event_ts": format_ts_ms(t), "score": score, "tier": "cold"}  # fmt: skip
                mon.handle(s.topic("scores"), 0, 0, None, orjson.dumps(rec))
        for lead, c in converted.items():
            if lo <= c < hi:
                out = {"lead_id": lead, "type": "converted", "ts": format_ts_ms(c)}
                mon.handle(s.topic("crm"), 0, 0, None, orjson.dumps(out))

    mon.book.crm_caught_up = True
    feed(0, half)
    mon.evaluate()
    day = format_ts_ms(start + 5 * DAY)[:10]
    assert mon.cohorts["rules-v1"][day]["estimated_roc_auc"] is not None
    assert "measured_roc_auc" not in mon.cohorts["rules-v1"][day]
    feed(half, 2**62)
    mon.evaluate()
    c = mon.cohorts["rules-v1"][day]
    assert c["estimated_from"] > 0 and c["measured_from"] > 0
    assert c["measured_roc_auc"] is not None
    assert "estimated AUC" in text(load_or_current(mon))


def load_or_current(mon: Monitor) -> dict:
    mon.save()
    return load_report(mon.dir)


def test_an_erased_lead_leaves_the_sample(tmp_path):
    s = _settings(tmp_path)
    mon = Monitor(s)
    _feed(mon, s)
    assert "L3" in mon.book.leads
    mon.handle(s.topic("scores"), 1, 99, b"L3", None)  # the tombstone `forget` writes
    assert "L3" not in mon.book.leads


def _firmographics(i: int, t: int, **attributes: object) -> bytes:
    return orjson.dumps(
        {"event_id": f"f{i}-{t}", "lead_id": f"L{i}", "source": "enrichment",
         "type": "firmographics", "ts": format_ts_ms(t), "attributes": attributes}
    )  # fmt: skip


def test_enrichment_firmographics_are_segments_valued_as_the_features(tmp_path):
    """firmo_revenue_band (a default segment) and firmo_industry_sector come from the
    enrichment firmographics the worker takes: the newest by event time, an industry code as
    its sector; intent, invalid events and the topic's own tombstones change nothing, nor does
    the watermark wait for them."""
    assert Settings.names(Settings.model_fields["monitor_segments"].default) == list(SEGMENTS)
    assert "firmo_revenue_band" in SEGMENTS
    wanted = f"{','.join(SEGMENTS)},firmo_industry_sector"
    s = _settings(tmp_path).model_copy(update={"monitor_segments": wanted})
    start = 1_780_000_000_000
    mon = Monitor(s, clock=lambda: start / 1000 + 90 * 86_400)
    _feed(mon, s)
    crm_ms = mon.book.crm_ms
    topic = s.topic("enrichment")
    for i in range(200):
        key, t = f"L{i}".encode(), start + i
        band, code = ("1M-10M", "541511") if i % 2 else ("50M-250M", "5221")
        mon.handle(topic, 0, 0, key, _firmographics(i, t + DAY, revenue_band=band))
        mon.handle(topic, 0, 1, key, _firmographics(i, t, revenue_band="<1M", industry_code=code))
        mon.handle(topic, 0, 2, key, _firmographics(i, t + 2 * DAY, revenue_band="huge"))
        mon.handle(topic, 0, 3, key, _firmographics(i, t + 3 * DAY, provider="none"))
        intent = {"event_id": f"i{i}", "lead_id": f"L{i}", "source": "enrichment",
                  "type": "intent", "ts": format_ts_ms(t), "attributes": {"topic": "x",
                  "score": 90, "revenue_band": "1B+"}}  # fmt: skip
        mon.handle(topic, 1, 4, key, orjson.dumps(intent))
        mon.handle(topic, 1, 5, key, None)  # not an erasure: those come on the score topics
    assert mon.book.crm_ms == crm_ms and len(mon.book.leads) == 200
    assert mon.book.leads["L1"].segments["firmo_revenue_band"] == (start + 1 + DAY, "1M-10M")
    assert mon.book.leads["L2"].segments["firmo_industry_sector"] == (start + 2, "52")
    mon.book.crm_caught_up = True
    fair = mon.evaluate()["versions"]["rules-v1"]["fairness"]
    got = {(f["attribute"], f["segment"]) for f in fair if f["attribute"].startswith("firmo_")}
    assert got == {
        ("firmo_revenue_band", "1M-10M"),
        ("firmo_revenue_band", "50M-250M"),
        ("firmo_industry_sector", "54"),
        ("firmo_industry_sector", "52"),
    }
    scrape = generate_latest(mon.registry).decode()
    assert 'attribute="firmo_revenue_band",metric="hot_share",model_version="rules-v1"' in scrape


def test_the_enrichment_topic_is_not_parsed_without_an_enrichment_segment(tmp_path):
    s = _settings(tmp_path).model_copy(update={"monitor_segments": "industry"})
    mon = Monitor(s, clock=lambda: 1_780_000_000)
    raw = _firmographics(1, 1_779_000_000_000, revenue_band="1B+")
    mon.handle(s.topic("enrichment"), 0, 0, b"L1", raw)
    assert mon.book.leads == {} and mon.offsets == {(s.topic("enrichment"), 0): 1}
