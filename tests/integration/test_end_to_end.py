"""Events in through Kafka; scores, DLQ records and lead features out, checked exactly."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections import Counter

import orjson
import pytest

from leadscore.infra.producer import EventProducer
from leadscore.integrations.erase import run_forget
from leadscore.schemas.validation import format_ts_ms, validate_record

from .helpers import read_to_end, read_topic

pytestmark = pytest.mark.integration

# (source, type) -> the 30-day count feature it feeds. Every event below is within the last
# ten days, so each 30-day count must equal the number of distinct events of that type sent.
COUNTED = {
    ("web", "page_view"): "web_page_views_30d",
    ("web", "pricing_view"): "web_pricing_views_30d",
    ("web", "form_submit"): "web_form_submits_30d",
    ("web", "content_download"): "web_content_downloads_30d",
    ("web", "demo_request"): "web_demo_requests_30d",
    ("email", "email_sent"): "email_sent_30d",
    ("email", "email_open"): "email_opens_30d",
    ("email", "email_click"): "email_clicks_30d",
    ("email", "email_unsubscribe"): "email_unsubscribes_30d",
    ("email", "email_bounce"): "email_bounces_30d",
}
KINDS = [*COUNTED, ("crm", "lead_updated"), ("crm", "stage_changed")]


def valid_events(n_leads: int, per_lead: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    # Ids are unique per run: Redis outlives a test run, and a repeated id is a duplicate.
    run = uuid.uuid4().hex[:8]
    events = []
    for i in range(n_leads):
        lead = f"L-{run}-{i:04d}"
        events.append(
            {
                "event_id": f"{lead}-c",
                "lead_id": lead,
                "source": "crm",
                "type": "lead_created",
                "ts": format_ts_ms(now - 10 * 86_400_000),
                "attributes": {"industry": "software", "company_size": "51-200"},
            }
        )
        for j in range(per_lead - 1):
            src, typ = rng.choice(KINDS)
            ts = now - rng.randint(0, 9 * 86_400_000)
            attrs = {"url": "/pricing"} if src == "web" else {}
            if typ == "lead_updated":
                attrs = {"job_title": "VP Sales"}
            elif typ == "stage_changed":
                attrs = {"stage": "mql"}
            events.append(
                {
                    "event_id": f"{lead}-{j}",
                    "lead_id": lead,
                    "source": src,
                    "type": typ,
                    "ts": format_ts_ms(ts),
                    "attributes": attrs,
                }
            )
    rng.shuffle(events)
    return events


def malformed(prefix: str) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic suffix, key, value, expected error code): one per DLQ case in DESIGN.md."""
    ok = {
        "event_id": "bad-1",
        "lead_id": "L-bad",
        "source": "web",
        "type": "page_view",
        "ts": "2026-01-01T00:00:00Z",
        "attributes": {},
    }

    def with_(**kw: object) -> bytes:
        return orjson.dumps({**ok, **kw})

    no_lead = {k: v for k, v in ok.items() if k != "lead_id"}
    return [
        ("web", b"L-bad", b"\xff\xfe\x00garbage", "not_utf8"),
        ("web", b"L-bad", b"{not json", "not_json"),
        ("web", b"L-bad", None, "not_json"),
        ("web", b"L-bad", b"[1, 2, 3]", "not_object"),
        ("web", b"L-bad", orjson.dumps(no_lead), "missing_field"),
        ("web", b"L-bad", with_(event_id=42), "wrong_type"),
        ("web", b"L-bad", with_(event_id=""), "invalid_value"),
        ("web", b"L-bad", with_(source="sms"), "unknown_source"),
        ("email", b"L-bad", with_(), "source_mismatch"),
        ("web", b"L-bad", with_(type="teleport"), "unknown_type"),
        ("web", b"L-bad", with_(ts="yesterday at noon"), "bad_timestamp"),
        ("web", b"L-bad", with_(ts="2031-01-01T00:00:00Z"), "ts_in_future"),
        ("web", b"L-bad", with_(attributes={"blob": "x" * 70_000}), "oversized"),
        ("web", b"L-other", with_(), "key_mismatch"),
    ]


def test_stream_scores_every_distinct_event_once_and_dead_letters_the_rest(
    settings_factory, worker_factory, api_factory
):
    s = settings_factory(privacy_key="end-to-end-test-key")
    worker = worker_factory(s)
    api = api_factory(s)
    events = valid_events(n_leads=200, per_lead=15, seed=11)
    assert len(events) == 3000
    dupes = random.Random(3).sample(events, 50)
    bad = malformed(s.topic_prefix)

    producer = EventProducer(s)
    for ev in events[:1500]:
        producer.send(ev)
    for suffix, key, value, _code in bad:
        producer.send_raw(s.topic(suffix), key, value)
    for ev in events[1500:]:
        producer.send(ev)
    for ev in dupes:  # redelivery: same event_id, same bytes
        producer.send(ev)
    producer.flush()
    assert producer.errors == []

    scores = read_topic(s, "scores", until=3000, timeout=120)
    dlq = read_topic(s, "dlq", until=len(bad), timeout=30)

    ids = Counter(r["value"]["event_id"] for r in scores)
    assert len(scores) == 3000, f"{len(scores)} score records for 3000 distinct events"
    assert set(ids) == {e["event_id"] for e in events}
    assert max(ids.values()) == 1
    for rec in scores:
        assert rec["key"] == rec["value"]["lead_id"].encode()
        assert rec["value"]["model_version"].startswith("rules")

    codes = sorted(r["value"]["error_code"] for r in dlq)
    assert codes == sorted(code for *_, code in bad)
    binary = next(r["value"] for r in dlq if r["value"]["error_code"] == "not_utf8")
    # Not JSON: nothing of it is kept (no raw bytes at rest), only its hash and length.
    assert binary["value"] is None and binary["value_redacted"]
    assert binary["value_sha256"] == hashlib.sha256(b"\xff\xfe\x00garbage").hexdigest()
    assert all({"topic", "partition", "offset", "error_message"} <= r["value"].keys() for r in dlq)

    expected: dict[str, Counter] = {}
    for ev in events:
        key = COUNTED.get((ev["source"], ev["type"]))
        c = expected.setdefault(ev["lead_id"], Counter())
        if key:
            c[key] += 1
    for lead, counts in expected.items():
        status, body = api.get(f"/leads/{lead}")
        assert status == 200
        doc = orjson.loads(body)
        feats = doc["features"]
        for name in COUNTED.values():
            assert feats[name] == counts[name], (lead, name, feats[name], counts[name])
        assert feats["industry"] == "software"
        assert doc["score"]["lead_id"] == lead

    assert api.get("/leads/L-nobody")[0] == 404
    assert api.get(f"/leads/{lead}/score")[0] == 200
    _every_record_matches_its_schema(s, events[0]["lead_id"], len(bad))
    assert worker.proc.poll() is None, "the worker must survive malformed input"

    status, body = worker.get("/metrics")
    text = body.decode()
    assert status == 200
    assert 'leadscore_dlq_total{code="ts_in_future"} 1.0' in text
    scored = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("leadscore_events_total{") and 'outcome="scored"' in line
    )
    dup = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("leadscore_events_total{") and 'outcome="duplicate"' in line
    )
    assert (scored, dup) == (3000.0, 50.0)
    assert "leadscore_score_latency_seconds_bucket" in text
    assert 'leadscore_model_info{version="rules-v1"} 1.0' in text
    # The standard process, platform and GC metrics of any Prometheus target.
    rss = next(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("process_resident_memory_bytes ")
    )
    assert rss > 10e6
    assert 'python_gc_collections_total{generation="0"}' in text
    assert "python_info{" in text


def _every_record_matches_its_schema(s, forgotten: str, n_dlq: int) -> None:
    """Scores, a tombstone, tier-change alerts and DLQ records, as a consumer written from
    schemas/ reads them: each validates, and each kind was seen at least once."""
    run_forget(s, [forgotten])
    seen: Counter = Counter()
    for rec in read_topic(s, "scores", until=3001, timeout=60):
        if rec["value"] is None:
            assert rec["key"] == forgotten.encode()  # a tombstone, keyed by the erased lead
            seen["tombstone"] += 1
        else:
            validate_record("score", rec["value"])
            seen["score"] += 1
    for value in read_to_end(s, "alerts"):
        if value is None:  # the erasure's tombstone (alerts are keyed by lead too)
            seen["alert tombstone"] += 1
            continue
        validate_record("alert", value)
        assert value["from_tier"] != value["to_tier"]
        seen["alert"] += 1
    for rec in read_topic(s, "dlq", until=n_dlq + 1, timeout=30):
        if rec["value"] is None:
            assert rec["key"] == forgotten.encode()
            seen["dlq tombstone"] += 1
            continue
        validate_record("dlq", rec["value"])
        seen["dlq"] += 1
    assert (seen["score"], seen["tombstone"], seen["dlq"]) == (3000, 1, n_dlq), seen
    assert (seen["alert tombstone"], seen["dlq tombstone"]) == (1, 1), seen
    assert seen["alert"] > 0, seen
