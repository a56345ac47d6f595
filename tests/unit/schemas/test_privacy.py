"""No raw PII at rest (issue 28): the redactor's names, patterns, pseudonyms and settings."""

from __future__ import annotations

import hashlib
import hmac
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadscore.errors import ConfigError
from leadscore.features.definitions import PROFILE_FIELDS
from leadscore.features.offline import replay
from leadscore.schemas.privacy import (
    DEFAULT_PII_ATTRIBUTES,
    DEFAULT_PII_PATTERNS,
    DROPPED,
    HMAC_HEX_CHARS,
    MAX_DEPTH,
    PrivacyConfigError,
    Redactor,
    compile_patterns,
)
from leadscore.schemas.validation import Event, validate_event
from leadscore.settings import Settings, load_settings
from leadscore.tooling.embedded import settings_env
from leadscore.tooling.simulator import COMPANY_SIZES, SimConfig, simulate

KEY = b"unit-test-privacy-key-0123456789"
HMAC = Redactor.build(attributes=DEFAULT_PII_ATTRIBUTES, patterns=DEFAULT_PII_PATTERNS, key=KEY)
DROP = Redactor.build(attributes=DEFAULT_PII_ATTRIBUTES, patterns=DEFAULT_PII_PATTERNS, key=None)

PII_STRINGS = [
    "jane.doe@example.com",
    "O'Brien+leads@sub.example.co.uk",
    "jane%40example.com",  # URL-encoded, in a query string
    "+1 415-555-0123",
    "+14155550123",
    "+1 (415) 555-0123",
    "(415) 555-0123",
    "415-555-0123",
    "415.555.0123",
    "020 7123 4567",
    "+44 20 7123 4567",
    "030-12345678",
    "0049 30 12345678",
    "06 12 34 56 78",
    "4155550123",
    "192.168.1.20",
    "8.8.8.8",
    "2001:db8::1",
    "fe80::1ff:fe23:4567:890a",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "::ffff:192.0.2.1",
]

#: Values like those the features read and the events carry: never touched.
ORDINARY = [
    "/pricing",
    "https://www.northwind-analytics.example/pricing/enterprise?utm_campaign=cmp-2026-11",
    "/resources/state-of-revops-2026.pdf",
    *[size for size, *_ in COMPANY_SIZES],
    "10001-50000",
    "5001-10000",
    "2026-11-27T14:03:11.512Z",
    "2026-11-27T14:03:11.512+01:00",
    "2026-11-27 14:03:11",
    "2026-11-27",
    "27.11.2026",
    "27.11.2026 14:03",
    "11/27/2026",
    "14:03:11",
    "L-000123",
    "L-0001234567",
    "ws-0123456789ab",
    "ws-012345678901",
    "sim-0000123",
    "evt_1234567",
    "9b1c4f0e2d3a4b5c",
    "123e4567-e89b-12d3-a456-426614174000",
    "12345678-1234-1234-1234-123456789012",
    "42",
    "42.5",
    "1234567.89",
    "0.123456789",
    "Chrome/120.0.6099.109",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "std::vector",
    "00:1a:2b:3c:4d:5e",
    "VP Sales",
    "Software",
    "DE",
    "cmp-welcome-series",
]


def test_listed_names_match_whatever_their_case_and_separators() -> None:
    attrs = {
        "email": "a@b.example",
        "E-Mail": "c@d.example",
        "firstName": "Jane",
        "Last Name": "Doe",
        "PHONE_NUMBER": 4155550123,
        "ipAddress": "10.1.2.3",
        "url": "/pricing",
    }
    assert DROP.redact_value(attrs) == {"url": "/pricing"}
    out = HMAC.redact_value(attrs)
    assert set(out) == set(attrs)
    assert out["url"] == "/pricing"
    assert out["firstName"] == HMAC.token("Jane")
    assert out["PHONE_NUMBER"] == HMAC.token(4155550123)  # not a string: hashed as JSON


def test_names_and_patterns_apply_at_any_depth() -> None:
    attrs = {
        "contact": {"name": {"first": "Jane", "last": "Doe"}, "note": "ring 415-555-0123"},
        "people": [{"email": "x@y.example"}, "cc jane@example.com please", 7],
        "jane@example.com": True,  # a key is text too
    }
    out = HMAC.redact_value(attrs)
    text = json.dumps(out)
    for secret in ("Jane", "Doe", "415-555-0123", "x@y.example", "jane@example.com"):
        assert secret not in text
    assert out["contact"]["name"] == HMAC.token({"first": "Jane", "last": "Doe"})
    assert out["contact"]["note"] == "ring " + HMAC.token("415-555-0123")
    assert out["people"][1] == f"cc {HMAC.token('jane@example.com')} please"
    assert out["people"][2] == 7
    dropped = DROP.redact_value(attrs)
    assert dropped == {
        "contact": {"note": f"ring {DROPPED}"},
        "people": [{}, f"cc {DROPPED} please", 7],
        DROPPED: True,
    }


def test_none_and_booleans_under_a_listed_name_say_nothing_and_stay() -> None:
    attrs = {"email": None, "phone": False}
    assert HMAC.redact_value(attrs) is attrs
    assert DROP.redact_value(attrs) is attrs


@pytest.mark.parametrize("pii", PII_STRINGS)
def test_each_pattern_finds_its_kind_inside_other_text(pii: str) -> None:
    text = f"note: {pii}, thanks"
    hashed = HMAC.redact_text(text)
    assert pii not in hashed
    assert hashed == f"note: {HMAC.token(pii)}, thanks"
    assert DROP.redact_text(text) == f"note: {DROPPED}, thanks"


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_values_are_left_alone(value: str) -> None:
    assert HMAC.redact_text(value) is value
    assert DROP.redact_text(value) is value


def test_the_attributes_the_features_read_are_untouched_and_features_unchanged() -> None:
    history = simulate(SimConfig(leads=300, events=15_000, seed=28))
    read = {k for e in history for k in e["attributes"]}
    assert set(PROFILE_FIELDS) <= read  # the simulated history carries every profile field
    for e in history:
        assert HMAC.redact_value(e["attributes"]) is e["attributes"], e
    parsed = [
        validate_event(
            orjson.dumps(e),
            topic_source=None,
            key=None,
            now_ms=2**60,
            max_future_ms=0,
            check_key=False,
            redactor=r,
        )
        for r in (None, HMAC)
        for e in history
    ]
    plain, redacted = parsed[: len(history)], parsed[len(history) :]
    assert all(isinstance(ev, Event) for ev in parsed)
    assert plain == redacted
    before = {k: s.features() for k, s in replay(plain).items()}  # type: ignore[arg-type]
    after = {k: s.features() for k, s in replay(redacted).items()}  # type: ignore[arg-type]
    assert before == after


def test_pseudonyms_are_keyed_hmac_stable_per_key_and_differ_between_keys() -> None:
    token = HMAC.token("jane@example.com")
    digest = hmac.new(KEY, b"jane@example.com", hashlib.sha256).hexdigest()
    assert token == "hmac:" + digest[:HMAC_HEX_CHARS]
    assert HMAC.token(" Jane@Example.COM ") == token  # one address, however it is typed
    other = Redactor.build(attributes=[], patterns=[], key=b"another-key-of-32-bytes-long....")
    assert other.token("jane@example.com") != token
    again = Redactor.build(
        attributes=DEFAULT_PII_ATTRIBUTES, patterns=DEFAULT_PII_PATTERNS, key=KEY
    )
    assert again.redact_value({"email": "jane@example.com"}) == {"email": token}
    # An unkeyed SHA-256 of the address (what a guesser computes) is not the pseudonym.
    assert hashlib.sha256(b"jane@example.com").hexdigest()[:HMAC_HEX_CHARS] not in token


def test_without_a_key_the_action_is_drop_and_hmac_is_refused() -> None:
    assert DROP.action == "drop" and HMAC.action == "hmac"
    with pytest.raises(PrivacyConfigError, match="PRIVACY_KEY"):
        Redactor.build(attributes=["email"], patterns=[], key=None, action="hmac")
    with pytest.raises(PrivacyConfigError):
        DROP.token("x")


_near_pii = st.lists(
    st.sampled_from(
        [*"0123456789@.:-+() /abcx[]%_'", "hmac:", "::", "jane@x.com", "415-555-0123", "10.0.0.1"]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.recursive(
        _near_pii | st.integers() | st.none(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(_near_pii | st.just("email"), c),
        max_leaves=8,
    )
)
def test_redacting_twice_changes_nothing(value) -> None:
    # The archive keeps redacted messages, and reading it redacts them again.
    for r in (HMAC, DROP):
        once = r.redact_value(value)
        assert r.redact_value(once) == once


def test_a_whole_message_keeps_its_envelope_and_loses_its_pii() -> None:
    good = {
        "event_id": "4155550123",  # ids are kept whatever they look like
        "lead_id": "L-000123",
        "source": "crm",
        "type": "lead_updated",
        "ts": "2026-11-27T14:03:11.512+01:00",
        "attributes": {"email": "jane@example.com", "job_title": "CTO", "ip": "10.0.0.1"},
    }
    out = orjson.loads(HMAC.redact_message(orjson.dumps(good)) or b"")
    assert {k: out[k] for k in ("event_id", "lead_id", "source", "type", "ts")} == {
        k: good[k] for k in ("event_id", "lead_id", "source", "type", "ts")
    }
    assert out["attributes"]["job_title"] == "CTO"
    assert "jane@example.com" not in json.dumps(out)
    # An invalid message (DLQ): PII wherever it is, envelope fields included.
    bad = {**good, "type": "jane@example.com", "ts": {"phone": "x"}, "extra": "ring 415-555-0123"}
    text = (DROP.redact_message(orjson.dumps(bad)) or b"").decode()
    assert "jane@example.com" not in text and "415-555-0123" not in text
    assert orjson.loads(text)["ts"] == {}
    assert HMAC.redact_message(b"[1, 2]") is None
    assert HMAC.redact_message(b"jane@example.com") is None
    # A repeated key: the parser keeps the last value, the bytes as sent hold both.
    dup = b'{"event_id":"e","attributes":{"note":"jane@example.com","note":"hi"}}'
    assert b"jane@example.com" not in (HMAC.redact_message(dup) or b"")


@pytest.mark.parametrize("depth", [5, 300, 1000])
def test_deep_nesting_is_cut_not_a_crash(depth: int) -> None:
    # Before the bound, 1000 levels overflowed the stack and 256 broke orjson's writer: the
    # worker's DLQ record for such a message raised.
    attrs = '{"a":' * depth + '{"email":"jane@example.com"}' + "}" * depth
    raw = (
        '{"event_id":"e","lead_id":"L","source":"web","type":"page_view",'
        f'"ts":"2026-11-27T14:03:11Z","attributes":{attrs}}}'
    ).encode()
    ev = validate_event(
        raw, topic_source="web", key=b"L", now_ms=2**60, max_future_ms=0, redactor=HMAC
    )
    assert isinstance(ev, Event)
    kept = HMAC.redact_message(raw)
    assert kept is not None and b"jane@example.com" not in kept
    assert (DROPPED.encode() in kept) == (depth > MAX_DEPTH)


def test_a_redacted_message_validates_into_the_redacted_event() -> None:
    raw = orjson.dumps(
        {
            "event_id": "e-1",
            "lead_id": "L-1",
            "source": "web",
            "type": "form_submit",
            "ts": "2026-11-27T14:03:11Z",
            "attributes": {"Email": "jane@example.com", "url": "/contact?tel=+14155550123"},
        }
    )

    def parse(value: bytes) -> Event:
        ev = validate_event(
            value, topic_source="web", key=b"L-1", now_ms=2**60, max_future_ms=0, redactor=HMAC
        )
        assert isinstance(ev, Event)
        return ev

    event = parse(raw)
    assert event.attributes == {
        "Email": HMAC.token("jane@example.com"),
        "url": "/contact?tel=" + HMAC.token("+14155550123"),
    }
    stored = HMAC.redact_message(raw)
    assert stored is not None and b"jane" not in stored and b"4155550123" not in stored
    assert parse(stored) == event  # the archive reads back the same event


def test_custom_patterns_with_flags_and_bad_ones_are_named() -> None:
    r = Redactor.build(
        attributes=[], patterns=["(?i)secret-\\d+", "(?xi) DE \\d{9}  # a VAT id"], key=None
    )
    assert r.redact_text("SECRET-42 and de123456789") == f"{DROPPED} and {DROPPED}"
    with pytest.raises(PrivacyConfigError, match=r"pattern 2 \('\[a-'\)"):
        compile_patterns(["builtin:email", "[a-"])
    with pytest.raises(PrivacyConfigError, match="empty string"):
        compile_patterns(["x*"])
    with pytest.raises(PrivacyConfigError, match="builtin:ssn"):
        compile_patterns(["builtin:ssn"])
    assert compile_patterns([]) is None
    assert not Redactor.build(attributes=[], patterns=[], key=None).active


def _settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name in ("PRIVACY_KEY", "PII_ACTION", "PII_PATTERNS", "PII_ATTRIBUTES"):
        monkeypatch.delenv(f"LEADSCORE_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(f"LEADSCORE_{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


def test_settings_refuse_a_bad_pattern_naming_the_setting(monkeypatch) -> None:
    msg = _settings_error(monkeypatch, PII_PATTERNS='["builtin:email", "(unclosed"]')
    assert msg.startswith("LEADSCORE_PII_PATTERNS:") and "(unclosed" in msg
    msg = _settings_error(monkeypatch, PII_PATTERNS="builtin:email")
    assert msg.startswith("LEADSCORE_PII_PATTERNS:") and "JSON array" in msg


def test_settings_refuse_hmac_without_a_key_and_a_short_key(monkeypatch) -> None:
    msg = _settings_error(monkeypatch, PII_ACTION="hmac")
    assert "LEADSCORE_PRIVACY_KEY is not set" in msg
    monkeypatch.delenv("LEADSCORE_PII_ACTION")
    msg = _settings_error(monkeypatch, PRIVACY_KEY="too-short")
    assert msg.startswith("LEADSCORE_PRIVACY_KEY:") and "16" in msg


def test_the_action_follows_the_key_and_the_redactor_is_built_once(monkeypatch) -> None:
    for name in ("PRIVACY_KEY", "PII_ACTION"):
        monkeypatch.delenv(f"LEADSCORE_{name}", raising=False)
    assert Settings().redactor.action == "drop"
    monkeypatch.setenv("LEADSCORE_PRIVACY_KEY", KEY.decode())
    s = load_settings()
    assert s.redactor.action == "hmac" and s.redactor is s.redactor
    assert s.redactor.token("x") == HMAC.token("x")
    monkeypatch.setenv("LEADSCORE_PII_ACTION", "drop")
    assert load_settings().redactor.action == "drop"
    monkeypatch.delenv("LEADSCORE_PII_ACTION")
    monkeypatch.setenv("LEADSCORE_PRIVACY_KEY", "")  # compose's ${LEADSCORE_PRIVACY_KEY:-}
    assert load_settings().privacy_key is None


def test_list_settings_read_back_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LEADSCORE_PII_ATTRIBUTES", "email, Home Phone")
    s = load_settings()
    assert s.pii_attributes == ("email", "Home Phone")
    assert s.redactor.redact_value({"homePhone": "x", "email": "y", "z": 1}) == {"z": 1}
    custom = Settings(pii_patterns=("builtin:email", "a{1,3}b"), pii_attributes=("x, y",))
    for name, value in settings_env(custom).items():
        if name.startswith("LEADSCORE_PII"):
            monkeypatch.setenv(name, value)
    again = load_settings()
    assert again.pii_patterns == custom.pii_patterns  # a comma inside a regex survives
    assert again.pii_attributes == ("x, y",)
