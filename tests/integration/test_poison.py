"""Issue 22: poison messages on a real broker and Redis. The worker never exits, every valid
event is scored exactly once, every poison message is in the DLQ with its code, features
equal the offline replay, and two leads whose ids once aliased read back their own counts."""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from collections import Counter
from urllib.parse import quote

import fastjsonschema
import orjson
import pytest
from confluent_kafka import Producer

from leadscore.schemas import load_schema
from leadscore.schemas.validation import format_ts_ms

from .helpers import (
    assert_features_match_replay,
    produce,
    read_to_end,
    recent_events,
    wait_caught_up,
)

pytestmark = pytest.mark.integration

PRODUCER_LIMIT = 1024 * 1024


def _event(i: int, lead: str, tag: str) -> dict:
    return {
        "event_id": f"{tag}-alias-{i}",
        "lead_id": lead,
        "source": "web",
        "type": "pricing_view",
        "ts": format_ts_ms(int(time.time() * 1000) - 120_000 + i),
        "attributes": {},
    }


def _enrichment_edges(tag: str) -> list[dict]:
    """Enrichment events at the edges of their schema: all valid, all to be scored."""
    now = int(time.time() * 1000) - 90_000
    edges = [
        ("firmographics", {"employees": None, "revenue_band": None}),  # nulls clear fields
        ("firmographics", {"industry_code": "54", "provider": "clearbit"}),
        ("technographics", {"technologies": []}),
        ("technographics", {"technologies": ["SALESFORCE", "snow flake", "x" * 64]}),
        ("intent", {"topic": "Lead Scoring", "score": 100}),
        ("intent", {"topic": "ERP", "score": 0}),
    ]
    return [
        {
            "event_id": f"{tag}-enr-{i}",
            "lead_id": f"enr-{tag}",
            "source": "enrichment",
            "type": typ,
            "ts": format_ts_ms(now + i),
            "attributes": attrs,
        }
        for i, (typ, attrs) in enumerate(edges)
    ]


def _enrichment_poison(valid: dict) -> list[tuple[dict, str]]:
    """Invalid enrichment events (variants of ``valid``, same lead) and the code of each:
    what it lacks or breaks."""
    tag = valid["event_id"]
    firmo = dict(valid, type="firmographics", attributes={"employees": 10})
    intent = dict(firmo, type="intent")
    tech = dict(firmo, type="technographics")
    return [
        (dict(intent, event_id=f"{tag}-e0", attributes={"topic": "CRM"}), "missing_field"),
        (
            dict(intent, event_id=f"{tag}-e1", attributes={"topic": "CRM", "score": 150}),
            "invalid_value",
        ),
        (dict(tech, event_id=f"{tag}-e2", attributes={"provider": "g2"}), "missing_field"),
        (dict(firmo, event_id=f"{tag}-e3", attributes={"provider": "clearbit"}), "missing_field"),
        (dict(firmo, event_id=f"{tag}-e4", attributes={"industry_code": "54-11"}), "invalid_value"),
        (dict(firmo, event_id=f"{tag}-e5", type="news"), "unknown_type"),
        (dict(firmo, event_id=f"{tag}-e6", source="crm"), "source_mismatch"),
    ]


def _produce_poison(producer: Producer, topic: str, poison: list[tuple[dict, str]]) -> None:
    for bad, _code in poison:
        producer.produce(topic, value=orjson.dumps(bad), key=bad["lead_id"].encode())
    assert producer.flush(30) == 0


def _check_enrichment_dlq(records: list[dict], poison: list[tuple[dict, str]]) -> None:
    """The DLQ records of leads.enrichment: one per poison message, in the order sent (one
    lead, one partition), each with its code and a message naming what is wrong."""
    got = sorted((r["offset"], r["error_code"], r["error_message"]) for r in records)
    assert [code for _, code, _ in got] == [code for _, code in poison], got
    messages = [message for *_, message in got]
    assert "score" in messages[0] and "score" in messages[1]
    assert "technologies" in messages[2]
    assert "at least one of employees, revenue_band, industry_code" in messages[3]
    assert "industry_code" in messages[4]


def test_poison_messages_go_to_the_dlq_and_every_valid_event_is_scored_once(
    settings_factory, worker_factory, api_factory
):
    s = settings_factory()
    worker = worker_factory(s)
    api = api_factory(s)
    tag = uuid.uuid4().hex[:8]
    events = recent_events(120, 2_000, seed=61)
    # Two leads whose ids mapped to the same Redis keys under the old digest-based tag.
    evil = "{evil-" + tag + "}/x?y#z"
    alias = "#" + hashlib.sha256(evil.encode()).hexdigest()[:24]
    aliased = [_event(i, evil, tag) for i in range(5)] + [
        _event(5 + i, alias, tag) for i in range(3)
    ]
    # recent_events draws every source's kinds (a few hundred enrichment events among them).
    enriched = _enrichment_edges(tag)
    valid = events + aliased + enriched

    web = s.topic("web")
    base = dict(recent_events(1, 1, seed=62)[0], source="web", type="page_view")
    poison: list[tuple[bytes | None, bytes, str]] = []
    for i in range(12):
        bad = dict(base, event_id=f"{tag}-p{i}", source=[] if i % 2 else [1, "web"])
        poison.append((bad["lead_id"].encode(), orjson.dumps(bad), "wrong_type"))
    for i in range(3):
        bad = dict(base, event_id=f"{tag}-o{i}", source={"web": True})
        poison.append((bad["lead_id"].encode(), orjson.dumps(bad), "wrong_type"))
    for _ in range(2):
        poison.append((b"k-bin", b"\x01" * 170_000, "not_json"))
    for i in range(3):
        keyless = dict(base, event_id=f"{tag}-nokey{i}")
        poison.append((None, orjson.dumps(keyless), "missing_key"))
    for i in range(3):
        other = dict(base, event_id=f"{tag}-wrongkey{i}")
        poison.append((b"someone-else", orjson.dumps(other), "key_mismatch"))
    huge_id = "x" * 1_000_000
    huge = orjson.dumps(dict(base, event_id=f"{tag}-huge", lead_id=huge_id))
    assert len(huge) > 1_000_000  # with its key: the DLQ copy of old exceeded a request

    # A producer allowed to send what the worker must survive (librdkafka caps at 1 MB).
    big = Producer({**s.kafka_client_config(), "message.max.bytes": 20_000_000})
    chunks = [valid[k : k + 200] for k in range(0, len(valid), 200)]
    for n, chunk in enumerate(chunks):
        produce(s, chunk)
        for key, value, _code in poison[n :: len(chunks)]:
            big.produce(web, value=value, key=key)
        if n == 3:
            big.produce(web, value=huge, key=huge_id.encode())
        assert big.flush(30) == 0
    # Invalid social comments: dead-lettered without their text, whatever the reason.
    secret = f"SECRET-{tag} what a wonderful product"
    comment = dict(base, source="social", type="comment", attributes={"text": secret})
    social_poison = [
        (dict(comment, event_id=f"{tag}-s0", ts="yesterday"), "bad_timestamp"),
        (dict(comment, event_id=f"{tag}-s1", type="rant"), "unknown_type"),
        (dict(comment, event_id=f"{tag}-s2", attributes={"text": [secret]}), "wrong_type"),
    ]
    enrichment_poison = _enrichment_poison(enriched[0])
    _produce_poison(big, s.topic("social"), social_poison)
    _produce_poison(big, s.topic("enrichment"), enrichment_poison)
    expected_codes = (
        Counter(code for *_, code in poison)
        + Counter(code for _, code in [*social_poison, *enrichment_poison])
        + Counter({"oversized": 1})
    )

    wait_caught_up(s, [worker], timeout=120)
    assert worker.proc.poll() is None, worker.log_tail()

    scored = Counter(r["event_id"] for r in read_to_end(s, "scores"))
    assert scored == Counter({e["event_id"]: 1 for e in valid}), "not every event exactly once"

    dlq = read_to_end(s, "dlq")
    check = fastjsonschema.compile(load_schema("dlq"))
    for rec in dlq:
        check(rec)
        assert len(orjson.dumps(rec)) < 200_000
    assert Counter(r["error_code"] for r in dlq) == expected_codes
    assert not [r for r in dlq if f"SECRET-{tag}" in orjson.dumps(r).decode()]
    assert sum(1 for r in dlq if r["topic"] == s.topic("social")) == len(social_poison)
    _check_enrichment_dlq(
        [r for r in dlq if r["topic"] == s.topic("enrichment")], enrichment_poison
    )
    [huge_rec] = [r for r in dlq if r["error_code"] == "oversized"]
    assert huge_rec["value_length"] == len(huge) and huge_rec["value_truncated"]
    assert huge_rec["value_sha256"] == hashlib.sha256(huge).hexdigest()
    assert huge_rec["key_length"] == len(huge_id) and huge_rec["key_truncated"]

    assert_features_match_replay(worker, valid)
    for lead, n in ((evil, 5), (alias, 3)):
        status, body = api.get(f"/leads/{quote(lead, safe='')}")
        assert status == 200, (lead, body)
        assert json.loads(body)["features"]["web_pricing_views_7d"] == n
    metrics = worker.get("/metrics")[1].decode()
    assert f'leadscore_dlq_total{{code="wrong_type"}} {expected_codes["wrong_type"]}.0' in metrics
    assert 'leadscore_dlq_total{code="oversized"} 1.0' in metrics


def test_the_web_server_serves_only_its_pages_and_cuts_off_slow_clients(
    settings_factory, worker_factory
):
    s = settings_factory(web_keepalive_timeout_s=2.0)
    worker = worker_factory(s)
    # Only /health, /ready and /metrics: lead data and scoring are the API's (leadscore api).
    for path in ("/router/", "/router/score_leads/", "/table/", "/leads/x", "/score"):
        assert worker.get(path)[0] == 404, path
    assert worker.request("POST", "/score", {"features": {}})[0] == 404
    # Twenty clients sending a request head one byte a second are cut off by the server.
    socks = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", s.web_port), timeout=5)
        socks.append(sock)
    start = time.monotonic()
    closed: set[int] = set()
    while len(closed) < len(socks) and time.monotonic() - start < 10:
        for i, sock in enumerate(socks):
            if i in closed:
                continue
            try:
                if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed.add(i)  # the server closed it
                    continue
            except BlockingIOError:
                pass  # still open, nothing to read
            except OSError:
                closed.add(i)
                continue
            try:
                sock.sendall(b"G")
            except OSError:
                closed.add(i)
        time.sleep(0.25)
    elapsed = time.monotonic() - start
    for sock in socks:
        sock.close()
    assert len(closed) == len(socks), f"{len(socks) - len(closed)} slow clients still connected"
    assert elapsed < 6.0
    assert worker.get("/health")[0] == 200
