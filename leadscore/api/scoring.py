"""``POST /score``: a lead's features from a profile and recent events, and its score.

The features come from the offline replay (:class:`~leadscore.features.offline.LeadState`),
which the parity tests hold equal to the worker's Lua store, as of the latest event (as the
worker scores) or of ``at``. Events pass the worker's own validation. The model is the one
the worker would use for the lead: the champion, or in an A/B experiment the lead's arm.
Nothing is written anywhere.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from leadscore.api.problems import InvalidParam, ProblemError
from leadscore.features.definitions import PROFILE_FIELDS
from leadscore.features.offline import LeadState
from leadscore.features.wire import scrub
from leadscore.schemas import EVENT_TYPES, FeatureValue, Source
from leadscore.schemas.validation import Event, format_ts_ms, parse_ts_ms, validate_event
from leadscore.streamer.models import ModelHolder

log = logging.getLogger(__name__)

#: Events per lead in one request, and leads per ``/score:batch`` request.
MAX_EVENTS = 1000
MAX_BATCH = 100

TS_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
_TYPES = tuple(sorted({t for types in EVENT_TYPES.values() for t in types}))
#: A placeholder id for a lead the request does not name (its events need one).
ANONYMOUS = "_anonymous"

EventType = Literal[_TYPES]  # type: ignore[valid-type]


class EventIn(BaseModel):
    """An event as on the input topics, without ``lead_id`` (the request's) and with an
    optional ``event_id`` (default: its position in ``events``)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    source: Source
    type: EventType = Field(description="one of the source's types (schemas/event.*.json)")
    ts: str = Field(min_length=20, max_length=40, pattern=TS_PATTERN, description="RFC 3339")
    attributes: dict[str, Any] = Field(default_factory=dict)


_Text = Annotated[str, StringConstraints(max_length=256)]
_profile_fields: dict[str, Any] = {
    f: (_Text | int | None, None) if f == "company_size" else (_Text | None, None)
    for f in PROFILE_FIELDS
}
Profile = create_model(
    "Profile",
    __config__=ConfigDict(extra="forbid"),
    __doc__="What the CRM knows of the lead; CRM events in `events` that set an attribute win.",
    **_profile_fields,
)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lead_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Optional; decides the lead's arm when an A/B experiment runs",
    )
    profile: Profile | None = None  # type: ignore[valid-type]
    events: list[EventIn] = Field(default_factory=list, max_length=MAX_EVENTS)
    at: str | None = Field(
        default=None,
        min_length=20,
        max_length=40,
        pattern=TS_PATTERN,
        description="Score as of this time (default: the latest event's time, else now)",
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    leads: list[ScoreRequest] = Field(min_length=1, max_length=MAX_BATCH)


class Reason(BaseModel):
    feature: str
    value: int | float | str | None
    contribution: float


class ScoreResult(BaseModel):
    """A score as the worker would publish it for these events, with the features it used."""

    lead_id: str | None
    score: float = Field(ge=0, le=1, description="Calibrated probability of conversion")
    score_100: int = Field(ge=0, le=100)
    tier: Literal["hot", "warm", "cold"]
    model_version: str
    reasons: list[Reason]
    features: dict[str, int | float | str | None]
    as_of: str = Field(description="The time the features are computed at (RFC 3339)")
    experiment: str | None = None
    arm: Literal["champion", "challenger"] | None = None


class BatchResult(BaseModel):
    results: list[ScoreResult]


def features_for(
    req: ScoreRequest, *, now_ms: int, max_future_ms: int, pointer: str = ""
) -> tuple[dict[str, FeatureValue], int]:
    """The request's feature vector and the time it is computed at."""
    lead = req.lead_id or ANONYMOUS
    state = LeadState()
    for i, e in enumerate(req.events):
        envelope = {
            "event_id": e.event_id or f"request-{i}",
            "lead_id": lead,
            "source": e.source,
            "type": e.type,
            "ts": e.ts,
            "attributes": e.attributes,
        }
        try:
            raw = orjson.dumps(envelope)
        except orjson.JSONEncodeError as exc:
            # What Kafka would carry: JSON the worker's parser reads (it refuses integers
            # outside 64 bits, which Python's JSON reader accepted in the request).
            raise _invalid(i, pointer, f"not representable as an event: {exc}") from exc
        res = validate_event(
            raw,
            topic_source=None,
            key=None,
            now_ms=now_ms,
            max_future_ms=max_future_ms,
            check_key=False,
        )
        if not isinstance(res, Event):
            raise _invalid(i, pointer, res.message)
        state.apply(res)
    if req.profile is not None:
        for attr, value in req.profile.model_dump(exclude_none=True).items():
            # A CRM event of the request that set the attribute is newer than the profile.
            if attr not in state.stamps:
                state.profile[attr] = scrub(str(value))
    if req.at is not None:
        at_ms = parse_ts_ms(req.at)
        if at_ms is None:
            raise ProblemError(
                422,
                "at is not a valid RFC 3339 time",
                kind="invalid-request",
                errors=[InvalidParam(pointer=f"{pointer}/at", message="not a valid time")],
            )
    else:
        at_ms = state.max_ts if state.max_ts is not None else now_ms
    feats = state.features(at_ms)
    assert feats is not None  # noqa: S101 - with a time given there are always features
    return feats, at_ms


def _invalid(i: int, pointer: str, message: str) -> ProblemError:
    return ProblemError(
        422,
        f"event {i} is invalid: {message}",
        kind="invalid-event",
        errors=[InvalidParam(pointer=f"{pointer}/events/{i}", message=message)],
    )


def score_features(
    models: ModelHolder, feats: dict[str, FeatureValue], lead_id: str | None, at_ms: int
) -> dict[str, Any]:
    """Score one feature vector as the worker would (its model, its rounding, its reasons)."""
    scorer = models.current
    exp = models.experiment
    arm: str | None = None
    if exp is not None and lead_id is not None:
        e = exp.experiment
        by = e.by
        value = lead_id
        if by != "lead_id" and (v := feats.get(by)) not in (None, ""):
            value = str(v)
        arm = e.arm(value)
        if arm == "challenger":
            scorer = exp.scorer
    try:
        s = scorer.score_records([feats])[0]
    except Exception:  # noqa: BLE001 - as the worker: a failing model gives way to the rules
        log.exception("model %s failed to score; using the rules", scorer.version)
        scorer = models.rules
        s = scorer.score_records([feats])[0]
    out: dict[str, Any] = {
        "lead_id": lead_id,
        "score": round(s.score, 6),
        "score_100": int(round(s.score * 100)),
        "tier": s.tier,
        "model_version": scorer.version,
        "reasons": s.reasons,
        "features": feats,
        "as_of": format_ts_ms(at_ms),
    }
    if arm is not None and exp is not None:
        out["experiment"] = exp.experiment.id
        out["arm"] = arm
    return out
