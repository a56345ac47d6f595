"""The validator and the DLQ record under any input: nothing escapes, everything is bounded.

Hypothesis drives arbitrary bytes and arbitrary JSON values in every field of an envelope
through ``_validate`` (the validator without its safety net, so a crash is seen, not caught)
and through ``dlq_record``; the coverage-guided run (atheris) is in ``test_atheris.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json

import fastjsonschema
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.schemas import SOURCES, load_schema
from leadscore.schemas.privacy import DEFAULT_PII_ATTRIBUTES, DEFAULT_PII_PATTERNS, Redactor
from leadscore.schemas.validation import (
    DLQ_MAX_KEY_BYTES,
    DLQ_VALUE_BYTES_LIMIT,
    ERROR_CODES,
    Event,
    Invalid,
    _validate,
    dlq_key,
    dlq_record,
    parse_ts_ms,
)

NOW = parse_ts_ms("2026-11-27T12:00:00Z") or 0
DAY = 86_400_000
GOOD = {
    "event_id": "e1",
    "lead_id": "L-1",
    "source": "web",
    "type": "page_view",
    "ts": "2026-11-27T11:59:00.250+00:00",
    "attributes": {"url": "/pricing"},
}
FIELDS = ("event_id", "lead_id", "source", "type", "ts", "attributes")
PRODUCER_LIMIT = 1024 * 1024
_dlq_validator = fastjsonschema.compile(load_schema("dlq"))

# Integers beyond 64 bits too (stdlib json writes them; orjson reads them as floats).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


REDACTOR = Redactor.build(
    attributes=DEFAULT_PII_ATTRIBUTES, patterns=DEFAULT_PII_PATTERNS, key=b"fuzz-key" * 4
)


def check(raw: bytes | None, key: bytes | None = b"L-1", topic: str | None = "web"):
    res = _validate(raw, topic, key, NOW, DAY, True)  # type: ignore[arg-type]
    assert isinstance(res, Event | Invalid)
    if isinstance(res, Invalid):
        assert res.code in ERROR_CODES and res.message
    # Redacted, the same message gets the same kind of outcome (no crash either).
    redacted = _validate(raw, topic, key, NOW, DAY, True, REDACTOR)  # type: ignore[arg-type]
    assert type(redacted) is type(res)
    return res


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_give_an_event_or_an_error_code(raw: bytes) -> None:
    check(raw)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(FIELDS),
    value=json_values,
    key=st.one_of(st.none(), st.binary(max_size=20)),
    topic=st.sampled_from([*SOURCES, None]),
)
def test_any_json_value_in_any_field_gives_an_event_or_an_error_code(field, value, key, topic):
    check(json.dumps({**GOOD, field: value}).encode(), key=key, topic=topic)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_any_json_object_gives_an_event_or_an_error_code(obj) -> None:
    check(json.dumps(obj).encode())


def test_the_issue_cases_get_their_codes() -> None:
    assert check(orjson.dumps({**GOOD, "source": []})).code == "wrong_type"
    assert check(orjson.dumps({**GOOD, "source": {"a": 1}})).code == "wrong_type"
    assert check(b"\x01" * 170_000).code == "not_json"
    assert check(b"\xff" * 170_000).code == "not_utf8"
    huge = orjson.dumps({**GOOD, "lead_id": "x" * 1_000_000})
    assert check(huge, key=b"x" * 1_000_000).code == "oversized"
    assert check(b"{" * 10 * PRODUCER_LIMIT).code == "oversized"
    assert check(orjson.dumps(GOOD), key=None).code == "missing_key"
    assert check(orjson.dumps(GOOD), key=b"L-2").code == "key_mismatch"


def test_error_codes_match_the_dlq_schema() -> None:
    enum = load_schema("dlq")["properties"]["error_code"]["enum"]
    assert tuple(enum) == ERROR_CODES


def _decoded(value: str | None, encoding: str) -> bytes | None:
    if encoding == "null":
        return None
    return value.encode() if encoding == "utf-8" else base64.b64decode(value or "")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(st.none(), st.binary(max_size=3000), st.text(max_size=1500).map(str.encode)),
    key=st.one_of(st.none(), st.binary(max_size=3000)),
    limit=st.integers(min_value=0, max_value=2000),
)
def test_dlq_records_keep_a_bounded_prefix_with_the_whole_messages_hash(raw, key, limit):
    rec = dlq_record(
        raw,
        topic="leads.web",
        partition=1,
        offset=7,
        key=key,
        error=Invalid("not_json", "m" * 5000),
        max_value_bytes=limit,
        now_ms=NOW,
    )
    _dlq_validator(rec)
    kept = _decoded(rec["value"], rec["value_encoding"])
    if raw is None:
        assert kept is None and rec["value_length"] is None
    else:
        assert kept is not None and raw.startswith(kept) and len(kept) <= limit
        assert rec["value_truncated"] == (len(kept) < len(raw))
        assert rec["value_length"] == len(raw)
        assert rec["value_sha256"] == hashlib.sha256(raw).hexdigest()
    kept_key = _decoded(rec["key"], rec["key_encoding"])
    if key is not None:
        assert kept_key is not None and key.startswith(kept_key)
        assert len(kept_key) <= DLQ_MAX_KEY_BYTES and rec["key_length"] == len(key)
    k = dlq_key(key)
    assert k is None if key is None else len(k) <= DLQ_MAX_KEY_BYTES
    assert len(rec["error_message"]) <= 1100


def test_the_largest_dlq_record_fits_a_producer_request() -> None:
    # Control characters are escaped to six bytes each in JSON: the worst case.
    worst = b"\x01" * (10 * PRODUCER_LIMIT)
    rec = dlq_record(
        worst,
        topic="t" * 249,
        partition=2**31 - 1,
        offset=2**63 - 1,
        key=worst,
        error=Invalid("internal_error", "\x01" * 10_000),
        max_value_bytes=DLQ_VALUE_BYTES_LIMIT,
        now_ms=NOW,
    )
    assert len(orjson.dumps(rec)) + len(dlq_key(worst) or b"") < PRODUCER_LIMIT - 1024


def _dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(
        st.none(),
        st.binary(max_size=300),
        st.dictionaries(st.text(max_size=10), json_values, max_size=6).map(_dumps),
        st.builds(lambda f, v: _dumps({**GOOD, f: v}), st.sampled_from(FIELDS), json_values),
    ),
    limit=st.integers(min_value=0, max_value=400),
)
def test_redacted_dlq_records_hold_an_object_or_nothing(raw, limit):
    rec = dlq_record(
        raw,
        topic="leads.web",
        partition=0,
        offset=1,
        key=b"L-1",
        error=Invalid("not_json", "m"),
        max_value_bytes=limit,
        now_ms=NOW,
        redactor=REDACTOR,
    )
    _dlq_validator(rec)
    assert rec["value_redacted"] == (raw is not None)
    if raw is not None:
        assert rec["value_sha256"] == hashlib.sha256(raw).hexdigest()
    if rec["value"] is not None and not rec["value_truncated"]:
        assert isinstance(orjson.loads(rec["value"]), dict)
    elif raw is not None and rec["value"] is None:
        assert not isinstance(_parsed(raw), dict)


def _parsed(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
