"""Decoding and validation of raw event bytes, with a stable error code per failure.

This is the hot path of the worker: each message is decoded once with orjson and checked
by a fastjsonschema validator compiled at import time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import fastjsonschema
import orjson

from schemas import MAX_EVENT_BYTES, SOURCES, Source, load_schema

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
]
ERROR_CODES: tuple[ErrorCode, ...] = ErrorCode.__args__  # type: ignore[attr-defined]

_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    s: fastjsonschema.compile(load_schema(f"event.{s}")) for s in SOURCES
}
_score_validator: Callable[[Any], Any] = fastjsonschema.compile(load_schema("score"))


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


class InvalidScoreError(ValueError):
    """Raised when a score record does not match ``schemas/score.json``."""


def parse_ts_ms(ts: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 timestamp with offset, or None if it isn't one."""
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    # Integer arithmetic on the timedelta keeps sub-millisecond digits from rounding up.
    delta = dt - _EPOCH
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
    if rule == "type":
        return Invalid("wrong_type", f"{field}: {exc.message}")
    if rule == "enum" and field == "type":
        return Invalid("unknown_type", f"type is not a known {source} event type ({exc.message})")
    if field == "ts":
        return Invalid(
            "bad_timestamp", f"ts must be an RFC 3339 timestamp with offset ({exc.message})"
        )
    return Invalid("invalid_value", f"{field}: {exc.message}")


def validate_event(
    raw: bytes | None,
    *,
    topic_source: Source | None,
    key: bytes | None,
    now_ms: int,
    max_future_ms: int,
) -> Event | Invalid:
    """Decode and validate one message.

    ``topic_source`` is the source the topic carries (``None`` when reading a file, where
    any source is allowed). ``key`` is the Kafka key, which must equal ``lead_id`` so that
    all events of a lead land on one partition; pass ``None`` for files (not checked).
    """
    if raw is None:
        return Invalid("not_json", "message has no value (null)")
    if len(raw) > MAX_EVENT_BYTES:
        return Invalid("oversized", f"message is {len(raw)} bytes, limit is {MAX_EVENT_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return Invalid("not_utf8", "message is not valid UTF-8")
        return Invalid("not_json", f"message is not JSON: {exc}")
    if not isinstance(obj, dict):
        return Invalid("not_object", f"event must be a JSON object, got {type(obj).__name__}")
    source = obj.get("source")
    if source not in _VALIDATORS:
        if "source" not in obj:
            return Invalid("missing_field", "data must contain ['source'] properties")
        return Invalid("unknown_source", f"source {source!r} is not one of {', '.join(SOURCES)}")
    if topic_source is not None and source != topic_source:
        return Invalid("source_mismatch", f"source {source!r} sent to the {topic_source} topic")
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
    if key is not None and key != lead_id.encode("utf-8"):
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


def validate_score(record: dict[str, Any]) -> None:
    """Raise :class:`InvalidScoreError` if ``record`` breaks the score contract."""
    try:
        _score_validator(record)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidScoreError(str(exc)) from exc


def dlq_record(
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    error: Invalid,
) -> dict[str, Any]:
    """The value written to ``leads.dlq``: the original bytes plus where they came from and why."""
    payload: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": None if key is None else key.decode("utf-8", "backslashreplace"),
        "error_code": error.code,
        "error_message": error.message,
    }
    if raw is None:
        payload["value"] = None
        payload["value_encoding"] = "null"
    else:
        try:
            payload["value"] = raw.decode("utf-8")
            payload["value_encoding"] = "utf-8"
        except UnicodeDecodeError:
            payload["value"] = base64.b64encode(raw).decode("ascii")
            payload["value_encoding"] = "base64"
    return payload
