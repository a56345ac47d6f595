"""Every DLQ reason in DESIGN.md, one case each, plus the happy path."""

from __future__ import annotations

import base64
import hashlib
import json

import orjson
import pytest

from leadscore.schemas import EVENT_TYPES, load_schema
from leadscore.schemas.privacy import DEFAULT_PII_ATTRIBUTES, DEFAULT_PII_PATTERNS, Redactor
from leadscore.schemas.validation import (
    ERROR_CODES,
    Event,
    Invalid,
    InvalidScoreError,
    dlq_record,
    format_ts_ms,
    parse_ts_ms,
    validate_event,
    validate_record,
    validate_score,
)

NOW = parse_ts_ms("2026-11-27T12:00:00Z") or 0
DAY = 86_400_000
GOOD = {
    "event_id": "e1",
    "lead_id": "L-1",
    "source": "web",
    "type": "page_view",
    "ts": "2026-11-27T11:59:00.250+00:00",
    "attributes": {"url": "/pricing", "duration_s": 4},
}


def check(value: bytes | None, *, topic: str | None = "web", key: bytes | None = b"L-1"):
    return validate_event(value, topic_source=topic, key=key, now_ms=NOW, max_future_ms=DAY)


def with_(**kw: object) -> bytes:
    return orjson.dumps({**GOOD, **kw})


def test_valid_event_is_decoded_with_event_time_in_ms():
    ev = check(orjson.dumps(GOOD))
    assert isinstance(ev, Event)
    assert ev.ts_ms == NOW - 60_000 + 250
    assert ev.attributes == {"url": "/pricing", "duration_s": 4}


@pytest.mark.parametrize(
    ("value", "kwargs", "code"),
    [
        (b"\xff\xfe\x00", {}, "not_utf8"),
        (b"{oops", {}, "not_json"),
        (None, {}, "not_json"),
        (b'"a string"', {}, "not_object"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "ts"}), {}, "missing_field"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "source"}), {}, "missing_field"),
        (with_(lead_id=7), {}, "wrong_type"),
        (with_(attributes=[1]), {}, "wrong_type"),
        (with_(event_id=""), {}, "invalid_value"),
        (with_(lead_id="x" * 129), {}, "invalid_value"),
        (with_(source="fax"), {}, "unknown_source"),
        (with_(), {"topic": "email"}, "source_mismatch"),
        (with_(type="email_open"), {}, "unknown_type"),
        (with_(ts="2026-11-27T11:59:00"), {}, "bad_timestamp"),
        (with_(ts="2026-02-30T11:59:00Z"), {}, "bad_timestamp"),
        (with_(ts="2026-11-29T12:00:00Z"), {}, "ts_in_future"),
        (with_(attributes={"pad": "x" * 66_000}), {}, "oversized"),
        (with_(), {"key": b"L-2"}, "key_mismatch"),
        (with_(), {"key": None, "topic": "web"}, "missing_key"),
        (with_(source=[]), {}, "wrong_type"),
        (with_(source={"web": 1}), {}, "wrong_type"),
        (with_(source=7), {}, "wrong_type"),
    ],
)
def test_each_bad_input_gets_its_error_code(value, kwargs, code):
    res = check(value, **kwargs)
    if code is None:
        assert isinstance(res, Event)
    else:
        assert isinstance(res, Invalid), res
        assert res.code == code
        assert res.code in ERROR_CODES
        assert res.message


def test_file_reading_accepts_any_source_without_key():
    ev = validate_event(
        with_(source="email", type="email_open"),
        topic_source=None,
        key=None,
        now_ms=NOW,
        max_future_ms=DAY,
        check_key=False,
    )
    assert isinstance(ev, Event) and ev.source == "email"


def _enrichment(typ: str, **attributes: object) -> bytes:
    return with_(source="enrichment", type=typ, attributes=attributes)


@pytest.mark.parametrize(
    ("value", "code", "says"),
    [
        (_enrichment("intent", topic="CRM"), "missing_field", "score"),
        (_enrichment("intent", topic="CRM", score=150), "invalid_value", "attributes.score"),
        (_enrichment("intent", topic="CRM", score="high"), "wrong_type", "attributes.score"),
        (with_(source="enrichment", type="intent"), "missing_field", "attributes"),
        (_enrichment("technographics", provider="g2"), "missing_field", "technologies"),
        (_enrichment("technographics", technologies="SAP"), "wrong_type", "technologies"),
        (
            _enrichment("firmographics", provider="clearbit"),
            "missing_field",
            "at least one of employees, revenue_band, industry_code",
        ),
        (_enrichment("firmographics", industry_code="54A1"), "invalid_value", "industry_code"),
        (_enrichment("firmographics", industry_code=54), "wrong_type", "industry_code"),
        (_enrichment("firmographics", revenue_band="huge"), "invalid_value", "revenue_band"),
        (_enrichment("firmographics", employees=-1), "invalid_value", "employees"),
        (with_(source="enrichment", type="news"), "unknown_type", "enrichment event type"),
        (_enrichment("intent", topic="CRM", score=60), None, ""),
        (_enrichment("firmographics", employees=None), None, ""),  # null clears a field
        (_enrichment("technographics", technologies=[]), None, ""),
    ],
)
def test_each_bad_enrichment_event_gets_a_code_that_names_the_field(value, code, says):
    res = check(value, topic="enrichment")
    if code is None:
        assert isinstance(res, Event), res
    else:
        assert isinstance(res, Invalid), res
        assert (res.code, says in res.message) == (code, True), res


def test_schema_event_types_match_design():
    assert "pricing_view" in EVENT_TYPES["web"]
    assert "email_click" in EVENT_TYPES["email"]
    assert {"converted", "disqualified", "lead_updated"} <= set(EVENT_TYPES["crm"])
    assert load_schema("event.crm")["properties"]["source"]["enum"] == ["crm"]


def test_dlq_record_keeps_original_bytes_base64_when_not_utf8():
    raw = b"\x00\xffbinary"
    rec = dlq_record(
        raw,
        topic="leads.web",
        partition=2,
        offset=9,
        key=b"k",
        error=Invalid("not_utf8", "message is not valid UTF-8"),
    )
    assert rec["value_encoding"] == "base64"
    assert base64.b64decode(rec["value"]) == raw
    assert (rec["topic"], rec["partition"], rec["offset"], rec["key"]) == ("leads.web", 2, 9, "k")
    assert rec["error_code"] == "not_utf8"
    text = dlq_record(
        b"{bad", topic="t", partition=0, offset=1, key=None, error=Invalid("not_json", "m")
    )
    assert text["value"] == "{bad" and text["value_encoding"] == "utf-8"
    assert not rec["value_redacted"] and not text["value_redacted"]  # no redactor: no policy


_PII_EVENT = {
    "event_id": "e-9",
    "lead_id": "L-9",
    "source": "web",
    "type": "page_vieww",
    "ts": "2026-11-27T14:03:11Z",
    "attributes": {"email": "jane@example.com", "note": "call +1 415-555-0123", "url": "/x"},
}
_REDACTOR = Redactor.build(
    attributes=DEFAULT_PII_ATTRIBUTES, patterns=DEFAULT_PII_PATTERNS, key=b"k" * 32
)


def _dlq(raw: bytes | None, message: str = "m", **kw: object) -> dict:
    rec = dlq_record(
        raw,
        topic="leads.web",
        partition=0,
        offset=3,
        key=b"L-9",
        error=Invalid("unknown_type", message),
        now_ms=NOW,
        **kw,  # type: ignore[arg-type]
    )
    validate_record("dlq", rec)
    return rec


def test_dlq_record_keeps_a_redacted_copy_and_the_originals_hash():
    raw = orjson.dumps(_PII_EVENT)
    rec = _dlq(raw, "type 'jane@example.com' is unknown", redactor=_REDACTOR)
    assert rec["value_redacted"] and rec["value_encoding"] == "utf-8"
    assert "jane@example.com" not in json.dumps(rec) and "415-555-0123" not in rec["value"]
    copy = json.loads(rec["value"])
    assert copy["attributes"]["url"] == "/x" and copy["type"] == "page_vieww"
    assert copy["attributes"]["email"] == _REDACTOR.token("jane@example.com")
    assert rec["error_message"] == f"type '{_REDACTOR.token('jane@example.com')}' is unknown"
    assert (rec["value_length"], rec["value_sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())


@pytest.mark.parametrize("raw", [b"jane@example.com", b"\xff\xfejane@example.com", b'["a@b.co"]'])
def test_dlq_record_keeps_nothing_of_a_message_that_is_not_an_object(raw: bytes):
    rec = _dlq(raw, redactor=_REDACTOR)
    assert rec["value"] is None and rec["value_encoding"] == "null" and rec["value_redacted"]
    assert (rec["value_length"], rec["value_sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())


def test_dlq_record_keeps_the_raw_bytes_only_when_asked():
    raw = orjson.dumps(_PII_EVENT)
    rec = _dlq(raw, redactor=_REDACTOR, keep_raw=True)
    assert rec["value"] == raw.decode() and not rec["value_redacted"]
    binary = _dlq(b"\xff\x00", redactor=_REDACTOR, keep_raw=True)
    assert base64.b64decode(binary["value"]) == b"\xff\x00" and not binary["value_redacted"]


def test_timestamps_round_trip_through_epoch_ms():
    ms = parse_ts_ms("2026-11-27T14:03:11.512+02:00")
    assert ms is not None
    assert format_ts_ms(ms) == "2026-11-27T12:03:11.512Z"
    assert parse_ts_ms("not a time") is None
    assert parse_ts_ms("2026-11-27T14:03:11") is None


def test_score_schema_rejects_out_of_range_score():
    rec = {
        "lead_id": "L",
        "score": 0.5,
        "score_100": 50,
        "tier": "warm",
        "model_version": "rules-v1",
        "reasons": [],
        "event_id": "e",
        "event_ts": "t",
        "scored_at": "t",
    }
    validate_score(rec)
    with pytest.raises(InvalidScoreError):
        validate_score({**rec, "score": 1.5})
    with pytest.raises(InvalidScoreError):
        validate_score({**rec, "tier": "lukewarm"})


def test_alert_and_dlq_records_have_contracts():
    from leadscore.schemas.validation import InvalidScoreError, validate_record

    alert = {
        "type": "tier_change",
        "lead_id": "L-1",
        "from_tier": "cold",
        "to_tier": "hot",
        "score": 0.91,
        "model_version": "rules-v1",
        "event_id": "e-1",
        "event_ts": "2026-12-01T10:00:00.000Z",
        "scored_at": "2026-12-01T10:00:00.010Z",
    }
    validate_record("alert", alert)
    swap = {"type": "model_swap", "from_version": "a", "to_version": "b"}
    swap["scored_at"] = "2026-12-01T10:00:00.010Z"
    validate_record("alert", swap)
    for broken in (
        {**alert, "to_tier": "lukewarm"},
        {k: v for k, v in alert.items() if k != "score"},
        {**swap, "lead_id": "L-1"},
        {**alert, "type": "model_swap"},
    ):
        with pytest.raises(InvalidScoreError):
            validate_record("alert", broken)
    with pytest.raises(InvalidScoreError):
        validate_record("dlq", {"topic": "leads.web"})
