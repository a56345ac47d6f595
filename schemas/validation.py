"""Decoding and validation of raw event bytes, with a stable error code per failure.

This is the hot path of the worker: each message is decoded once with orjson and checked
by a fastjsonschema validator compiled at import time. ``validate_event`` never raises: any
bytes and any JSON value in any field give an :class:`Event` or an :class:`Invalid` with a
code (``internal_error`` if the checks themselves fail, which the fuzz tests look for).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import fastjsonschema
import orjson

from leadscore.errors import LeadscoreError
from leadscore.schemas import MAX_EVENT_BYTES, SOURCES, Source, load_schema
from leadscore.schemas.privacy import Redactor, json_object
from leadscore.schemas.sentiment import drop_text, replace_text

ErrorCode = Literal[
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unknown_source",
    "source_mismatch",
    "unknown_type",
    "bad_timestamp",
    "ts_in_future",
    "key_mismatch",
    "missing_key",
    "internal_error",
]
ERROR_CODES: tuple[ErrorCode, ...] = ErrorCode.__args__  # type: ignore[attr-defined]

_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    s: fastjsonschema.compile(load_schema(f"event.{s}")) for s in SOURCES
}
_score_validator: Callable[[Any], Any] = fastjsonschema.compile(load_schema("score"))
_record_validators: dict[str, Callable[[Any], Any]] = {
    name: fastjsonschema.compile(load_schema(name))
    for name in ("score", "alert", "dlq", "erasure_request", "erasure_audit")
}

log = logging.getLogger(__name__)

#: Messages up to this size are decoded even when over ``MAX_EVENT_BYTES`` (see ``_validate``).
PARSE_LIMIT = 1024 * 1024
#: Default bound on the original bytes a DLQ record carries (``LEADSCORE_DLQ_MAX_VALUE_BYTES``).
DLQ_MAX_VALUE_BYTES = 16 * 1024
#: The largest bound allowed: JSON escapes a control character in 6 bytes, so a DLQ record
#: with this many original bytes still fits a producer's default 1 MiB request.
DLQ_VALUE_BYTES_LIMIT = 128 * 1024
DLQ_MAX_KEY_BYTES = 1024
DLQ_MAX_MESSAGE_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event. ``ts_ms`` is the event time in epoch milliseconds (UTC)."""

    event_id: str
    lead_id: str
    source: Source
    type: str
    ts: str
    ts_ms: int
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a message was rejected: a stable ``code`` and a human-readable ``message``."""

    code: ErrorCode
    message: str


class SchemaError(LeadscoreError):
    """Base class: raised when a record breaks its schema."""


class InvalidScoreError(SchemaError, ValueError):
    """Raised when a score record does not match ``schemas/score.json``."""


def parse_ts_ms(ts: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 timestamp with offset, or None if it isn't one."""
    try:
        dt = datetime.fromisoformat(ts)
    except (ValueError, TypeError):
        return None
    if dt.tzinfo is None:
        return None
    # Integer arithmetic on the timedelta keeps sub-millisecond digits from rounding up.
    try:
        delta = dt - _EPOCH
    except OverflowError:  # an offset that moves a year-1 or year-9999 time out of range
        return None
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def format_ts_ms(ts_ms: int) -> str:
    """RFC 3339 UTC timestamp with milliseconds for epoch milliseconds ``ts_ms``."""
    seconds, millis = divmod(ts_ms, 1000)
    base = datetime.fromtimestamp(seconds, tz=_EPOCH.tzinfo).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{millis:03d}Z"


def _schema_error(source: str, exc: fastjsonschema.JsonSchemaValueException) -> Invalid:
    field = (exc.name or "data").removeprefix("data").lstrip(".") or "event"
    rule = exc.rule or ""
    if rule == "required":
        return Invalid("missing_field", f"{exc.message}")
    if rule == "anyOf" and _alternatives(exc.rule_definition):
        # An enrichment firmographics event needs one of its fields: it lacks them all, so
        # name them (fastjsonschema's "cannot be validated by any definition" doesn't).
        names = ", ".join(_alternatives(exc.rule_definition))
        return Invalid("missing_field", f"{field} must contain at least one of {names}")
    if rule == "type":
        return Invalid("wrong_type", f"{field}: {exc.message}")
    if rule == "enum" and field == "type":
        return Invalid("unknown_type", f"type is not a known {source} event type ({exc.message})")
    if field == "ts":
        return Invalid(
            "bad_timestamp", f"ts must be an RFC 3339 timestamp with offset ({exc.message})"
        )
    return Invalid("invalid_value", f"{field}: {exc.message}")


def _alternatives(branches: Any) -> list[str]:
    """The names of an ``anyOf`` whose every branch only requires properties (one of them
    must be present), else none."""
    if not isinstance(branches, list) or not branches:
        return []
    names: list[str] = []
    for branch in branches:
        if not isinstance(branch, dict) or set(branch) != {"required"}:
            return []
        names += branch["required"]
    return names


def validate_event(
    raw: bytes | None,
    *,
    topic_source: Source | None,
    key: bytes | None,
    now_ms: int,
    max_future_ms: int,
    check_key: bool = True,
    redactor: Redactor | None = None,
) -> Event | Invalid:
    """Decode and validate one message; never raises.

    ``topic_source`` is the source the topic carries (``None`` when reading a file, where
    any source is allowed). ``key`` is the Kafka key, which must equal ``lead_id`` so that
    all events of a lead land on one partition: a message without one is ``missing_key``.
    Files have no keys: pass ``check_key=False``.

    With ``redactor`` (``Settings.redactor``), the event's attributes are redacted before
    the schema is checked: what is validated is what is kept, so a redacted copy (the
    archive's) validates exactly when the event did.
    """
    try:
        return _validate(raw, topic_source, key, now_ms, max_future_ms, check_key, redactor)
    except Exception as exc:  # noqa: BLE001 - a check that fails must not stop the worker
        # The exception's message may quote the event (personal data): the log gets its
        # type and where it was raised; the DLQ record gets the message, redacted.
        log.error(
            "validating a message failed: %s\n%s",
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__, limit=-8)).rstrip(),
        )
        return Invalid("internal_error", f"validation failed: {type(exc).__name__}: {exc}")


def _validate(
    raw: bytes | None,
    topic_source: Source | None,
    key: bytes | None,
    now_ms: int,
    max_future_ms: int,
    check_key: bool,
    redactor: Redactor | None = None,
) -> Event | Invalid:
    """``validate_event`` without its safety net (the fuzz tests call this one)."""
    obj = _decode(raw)
    if isinstance(obj, Invalid):
        return obj
    source = _source(obj, topic_source)
    if isinstance(source, Invalid):
        return source
    attrs = obj.get("attributes")
    # A comment's text is scored and dropped first: nothing after this line sees it.
    if source == "social" and isinstance(attrs, dict):
        problem = replace_text(attrs)
        if problem is not None:
            return Invalid(*problem)
    if redactor is not None and isinstance(attrs, dict) and attrs:
        obj["attributes"] = redactor.redact_value(attrs)
    try:
        _VALIDATORS[source](obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        return _schema_error(source, exc)
    ts_ms = parse_ts_ms(obj["ts"])
    if ts_ms is None:
        return Invalid("bad_timestamp", f"ts {obj['ts']!r} is not an RFC 3339 timestamp")
    if ts_ms > now_ms + max_future_ms:
        return Invalid(
            "ts_in_future",
            f"ts {obj['ts']} is more than {max_future_ms // 1000} s ahead of the worker clock",
        )
    lead_id: str = obj["lead_id"]
    if check_key:
        if key is None:
            return Invalid("missing_key", "message has no key; it must be keyed by lead_id")
        if key != lead_id.encode("utf-8"):
            return Invalid("key_mismatch", "message key must equal lead_id (partitioning by lead)")
    return Event(
        event_id=obj["event_id"],
        lead_id=lead_id,
        source=source,
        type=obj["type"],
        ts=obj["ts"],
        ts_ms=ts_ms,
        attributes=obj.get("attributes") or {},
    )


def _decode(raw: bytes | None) -> dict[str, Any] | Invalid:
    """The message as a JSON object, or why it isn't one (or is too large)."""
    if raw is None:
        return Invalid("not_json", "message has no value (null)")
    # Up to PARSE_LIMIT a message too large is still decoded, so that garbage is named as
    # such (not UTF-8, not JSON) rather than only as too large; beyond it, never.
    if len(raw) > PARSE_LIMIT:
        return _oversized(raw)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Invalid("not_utf8", "message is not valid UTF-8")
        return Invalid("not_json", f"message is not JSON: {_clip(str(exc))}")
    if not isinstance(obj, dict):
        return Invalid("not_object", f"event must be a JSON object, got {type(obj).__name__}")
    if len(raw) > MAX_EVENT_BYTES:
        return _oversized(raw)
    return obj


def _oversized(raw: bytes) -> Invalid:
    return Invalid("oversized", f"message is {len(raw)} bytes, limit is {MAX_EVENT_BYTES}")


def _source(obj: dict[str, Any], topic_source: Source | None) -> Source | Invalid:
    """The event's source, checked before its schema (which depends on it)."""
    if "source" not in obj:
        return Invalid("missing_field", "data must contain ['source'] properties")
    source = obj["source"]
    # Checked before the lookup below: a list or an object can't be a dict key.
    if not isinstance(source, str):
        return Invalid("wrong_type", f"source must be a string, got {_json_type(source)}")
    if source not in _VALIDATORS:
        return Invalid(
            "unknown_source", f"source {_clip(repr(source))} is not one of {', '.join(SOURCES)}"
        )
    if topic_source is not None and source != topic_source:
        return Invalid("source_mismatch", f"source {source!r} sent to the {topic_source} topic")
    # Narrowed by the membership test above; ``typing.cast`` would cost a call per event.
    return source  # type: ignore[return-value]


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", bool: "a boolean", int: "a number"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, float) else "a string")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def validate_score(record: dict[str, Any]) -> None:
    """Raise :class:`InvalidScoreError` if ``record`` breaks the score contract."""
    try:
        _score_validator(record)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidScoreError(str(exc)) from exc


def validate_record(kind: str, record: Any) -> None:
    """Raise :class:`InvalidScoreError` if ``record`` breaks schema ``kind`` (``score``,
    ``alert`` or ``dlq``): the records a worker writes."""
    try:
        _record_validators[kind](record)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidScoreError(f"{kind} record: {exc}") from exc


def dlq_record(
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    error: Invalid,
    max_value_bytes: int = DLQ_MAX_VALUE_BYTES,
    now_ms: int | None = None,
    redactor: Redactor | None = None,
    keep_raw: bool = False,
) -> dict[str, Any]:
    """The value written to ``leads.dlq`` (``schemas/dlq.json``): where the message came from,
    why it was rejected, and its bytes up to ``max_value_bytes`` with the whole message's
    SHA-256 and length, so that the record always fits a producer request however large the
    message was.

    With ``redactor`` the bytes kept are the message redacted (``Redactor.redact_message``)
    and the error message has the patterns' matches replaced; a message that is not a JSON
    object (up to ``PARSE_LIMIT`` bytes) can't be redacted field by field, so none of it is
    kept. ``keep_raw`` (``LEADSCORE_DLQ_KEEP_RAW``) keeps the original bytes instead; without
    a redactor they are kept too (no policy to apply).
    """
    kept: bytes | None = raw
    redacted = redactor is not None and not keep_raw and raw is not None
    message = error.message
    if redactor is not None:
        message = redactor.redact_text(message)
        if redacted and raw is not None:
            kept = redactor.redact_message(raw) if len(raw) <= PARSE_LIMIT else None
    # A social comment's text is never kept, not even with keep_raw: only its score may be.
    # Parsed, not searched for: JSON may spell the key with escapes.
    if kept is not None and len(kept) <= PARSE_LIMIT:
        without = _without_text(kept)
        redacted = redacted or without != kept
        kept = without
    value, value_encoding, value_truncated = _excerpt(kept, max_value_bytes)
    key_text, key_encoding, key_truncated = _excerpt(key, DLQ_MAX_KEY_BYTES)
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key_text,
        "key_encoding": key_encoding,
        "key_length": None if key is None else len(key),
        "key_truncated": key_truncated,
        "error_code": error.code,
        "error_message": _clip(message, DLQ_MAX_MESSAGE_CHARS),
        "value": value,
        "value_redacted": redacted,
        "value_encoding": value_encoding,
        "value_length": None if raw is None else len(raw),
        "value_sha256": None if raw is None else hashlib.sha256(raw).hexdigest(),
        "value_truncated": value_truncated,
        "dlq_at": None if now_ms is None else format_ts_ms(now_ms),
    }


def _without_text(raw: bytes) -> bytes:
    """``raw`` serialized again without its attributes' text, if it is a JSON object."""
    obj = json_object(raw)
    if obj is None:
        return raw
    stripped = drop_text(obj)
    if stripped is obj:
        return raw
    try:
        return orjson.dumps(stripped)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: keep nothing of it
        return b"{}"


def stored_value(raw: bytes, redactor: Redactor | None) -> bytes | None:
    """The bytes kept at rest (the archive) of a message ``validate_event`` passed: redacted
    as the worker redacts it, a social comment's text replaced by its sentiment, so reading
    it back validates into the same event. None if it isn't a JSON object."""
    active = redactor is not None and redactor.active
    obj = json_object(raw)
    if obj is None:
        return None
    social = obj.get("source") == "social"
    if not active and not social:
        return raw
    attrs = obj.get("attributes")
    if social and isinstance(attrs, dict) and replace_text(attrs):
        return None
    if active and redactor is not None:
        obj = redactor.redact_envelope(obj)
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return None


def dlq_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a DLQ record: the original key, cut to ``DLQ_MAX_KEY_BYTES``."""
    return key if key is None or len(key) <= DLQ_MAX_KEY_BYTES else key[:DLQ_MAX_KEY_BYTES]


def _excerpt(raw: bytes | None, limit: int) -> tuple[str | None, str, bool]:
    """``(text, encoding, truncated)`` of at most ``limit`` bytes of ``raw``: UTF-8 text when
    the kept bytes are UTF-8 (a character cut at the end is dropped whole), else base64."""
    if raw is None:
        return None, "null", False
    part = raw[:limit]
    try:
        return part.decode("utf-8"), "utf-8", len(part) < len(raw)
    except UnicodeDecodeError as exc:
        if len(part) < len(raw) and exc.reason == "unexpected end of data":
            return part[: exc.start].decode("utf-8"), "utf-8", True
    return base64.b64encode(part).decode("ascii"), "base64", len(part) < len(raw)
