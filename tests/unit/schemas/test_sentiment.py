"""leads.social: a comment's text becomes its sentiment at validation and is never kept
(events, the archive's copy, DLQ records), whatever the redaction policy."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadscore.features.definitions import event_kind
from leadscore.schemas import EVENT_TYPES, SOURCES, load_schema
from leadscore.schemas.privacy import DEFAULT_PII_ATTRIBUTES, DEFAULT_PII_PATTERNS, Redactor
from leadscore.schemas.sentiment import SCORED_CHARS, score
from leadscore.schemas.validation import (
    Event,
    Invalid,
    dlq_record,
    parse_ts_ms,
    stored_value,
    validate_event,
    validate_record,
)

NOW = parse_ts_ms("2026-11-27T12:00:00Z") or 0
DAY = 86_400_000
TEXT = "Loved the webinar, this is exactly what our team needs!"
COMMENT = {
    "event_id": "s1",
    "lead_id": "L-1",
    "source": "social",
    "type": "comment",
    "ts": "2026-11-27T11:59:00Z",
    "attributes": {"platform": "linkedin", "url": "https://x.example/p/1", "text": TEXT},
}
REDACTOR = Redactor.build(
    attributes=DEFAULT_PII_ATTRIBUTES, patterns=DEFAULT_PII_PATTERNS, key=b"k" * 32
)


def check(event: dict, redactor: Redactor | None = None) -> Event | Invalid:
    return validate_event(
        orjson.dumps(event),
        topic_source="social",
        key=b"L-1",
        now_ms=NOW,
        max_future_ms=DAY,
        redactor=redactor,
    )


def test_social_is_a_source_with_its_schema_and_types():
    # After the older sources, before the newer: the store's kind codes of the others keep.
    assert SOURCES[:4] == ("web", "email", "crm", "social")
    assert set(EVENT_TYPES["social"]) == {"mention", "reply", "share", "follow", "comment"}
    assert load_schema("event.social")["properties"]["source"]["enum"] == ["social"]


@pytest.mark.parametrize("redactor", [None, REDACTOR], ids=["no-redactor", "redactor"])
def test_a_comments_text_becomes_its_sentiment_and_is_dropped(redactor):
    ev = check(COMMENT, redactor)
    assert isinstance(ev, Event)
    assert "text" not in ev.attributes
    assert TEXT not in json.dumps(ev.attributes)
    assert ev.attributes["sentiment"] == score(TEXT) > 0.05
    assert ev.attributes["platform"] == "linkedin"
    assert event_kind(ev.source, ev.type, ev.attributes) == "social:comment_positive"


def test_the_score_is_rounded_in_range_and_deterministic():
    texts = [TEXT, "This is terrible, worst product ever :(", "The meeting is at 3pm.", ""]
    scores = [score(t) for t in texts]
    assert scores == [score(t) for t in texts]
    assert all(-1 <= s <= 1 and s == round(s, 4) for s in scores)
    assert scores[0] > 0.05 and scores[1] < -0.05 and scores[2] == scores[3] == 0.0
    # What JSON carries back (the archive) is the same double.
    assert orjson.loads(orjson.dumps(scores)) == scores


@pytest.mark.parametrize("text", [42, None, ["secret words"]])
def test_a_text_that_cant_be_scored_is_rejected_without_quoting_it(text):
    res = check({**COMMENT, "attributes": {"text": text}})
    assert isinstance(res, Invalid) and res.code == "wrong_type"
    assert "attributes.text" in res.message and "secret" not in res.message


def test_a_long_text_is_scored_on_its_beginning():
    """VADER's time grows faster than the text: the hot path scores a bounded prefix."""
    filler = " the team will meet on Monday." * (SCORED_CHARS // 10)
    long = TEXT + filler + " Terrible, awful, a disaster."  # past the scored prefix
    assert score(long) < score(long[:SCORED_CHARS])
    ev = check({**COMMENT, "attributes": {"text": long}})
    assert isinstance(ev, Event) and "text" not in ev.attributes
    assert ev.attributes["sentiment"] == score(long[:SCORED_CHARS]) > 0.05


def test_a_sentiment_without_text_is_kept_and_checked():
    """An archived event read back, or a producer that scored upstream."""
    ev = check({**COMMENT, "attributes": {"sentiment": -0.3}})
    assert isinstance(ev, Event) and ev.attributes == {"sentiment": -0.3}
    bad = check({**COMMENT, "attributes": {"sentiment": 3}})
    assert isinstance(bad, Invalid) and bad.code == "invalid_value"


@pytest.mark.parametrize("redactor", [None, REDACTOR], ids=["no-redactor", "redactor"])
def test_the_archived_copy_holds_the_sentiment_and_reads_back_into_the_same_event(redactor):
    raw = orjson.dumps(COMMENT)
    kept = stored_value(raw, redactor)
    assert kept is not None and TEXT.encode() not in kept
    again = validate_event(
        kept, topic_source="social", key=b"L-1", now_ms=NOW, max_future_ms=DAY, redactor=redactor
    )
    assert again == check(COMMENT, redactor)
    web = orjson.dumps({**COMMENT, "source": "web", "type": "page_view", "attributes": {}})
    assert stored_value(web, None) == web  # nothing to change: the bytes as sent


def test_an_escaped_key_is_still_the_text_for_the_archive_and_the_dlq():
    raw = orjson.dumps(COMMENT).replace(b'"text"', b'"te\\u0078t"')
    assert b'"text"' not in raw and orjson.loads(raw) == COMMENT
    kept = stored_value(raw, None)
    assert kept is not None and TEXT.encode() not in kept
    rec = dlq_record(
        raw,
        topic="leads.social",
        partition=0,
        offset=1,
        key=b"L-1",
        error=Invalid("bad_timestamp", "m"),
    )
    assert TEXT not in json.dumps(rec)


@pytest.mark.parametrize(
    ("redactor", "keep_raw"),
    [(None, False), (REDACTOR, False), (REDACTOR, True)],
    ids=["no-redactor", "redacted", "keep-raw"],
)
def test_an_invalid_social_event_reaches_the_dlq_without_its_text(redactor, keep_raw):
    raw = orjson.dumps({**COMMENT, "ts": "yesterday"})
    res = check(orjson.loads(raw), redactor)
    assert isinstance(res, Invalid) and res.code == "bad_timestamp"
    rec = dlq_record(
        raw,
        topic="leads.social",
        partition=0,
        offset=1,
        key=b"L-1",
        error=res,
        redactor=redactor,
        keep_raw=keep_raw,
    )
    validate_record("dlq", rec)
    assert TEXT not in json.dumps(rec)
    assert rec["value_redacted"]  # the value is not the message as sent
    assert json.loads(rec["value"])["attributes"]["platform"] == "linkedin"


class _Message:
    """A consumed Kafka message, as the archiver reads it."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def topic(self) -> str:
        return "leads.social"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def key(self) -> bytes:
        return b"L-1"

    def value(self) -> bytes:
        return self._value


def test_the_archiver_buffers_the_sentiment_not_the_text(tmp_path):
    from leadscore.integrations.archive import Archiver
    from leadscore.settings import Settings

    s = Settings(kafka_bootstrap="127.0.0.1:9", redis_url=None)
    archiver = Archiver(s, str(tmp_path / "archive"))
    try:
        archiver._take(_Message(orjson.dumps({**COMMENT, "ts": "2026-11-27T11:59:00Z"})))
        [rec] = archiver._buffer
        assert TEXT.encode() not in rec.value
        assert orjson.loads(rec.value)["attributes"]["sentiment"] == score(TEXT)
    finally:
        archiver.consumer.close()


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(text=_json, sentiment=st.one_of(st.just(None), _json), event_type=st.text(max_size=8))
def test_any_text_or_sentiment_gives_an_event_or_an_error_code_and_never_keeps_the_text(
    text, sentiment, event_type
):
    attrs: dict = {"text": text}
    if sentiment is not None:
        attrs["sentiment"] = sentiment
    event = {**COMMENT, "type": event_type or "comment", "attributes": attrs}
    res = check(event)
    if isinstance(res, Event):
        assert "text" not in res.attributes
        assert -1 <= res.attributes["sentiment"] <= 1
    else:
        rec = dlq_record(
            orjson.dumps(event),
            topic="leads.social",
            partition=0,
            offset=0,
            key=b"L-1",
            error=res,
            keep_raw=True,
        )
        assert "text" not in (json.loads(rec["value"])["attributes"])
