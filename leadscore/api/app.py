"""The API's ASGI app: routes, authentication, limits, problems, metrics.

``create_app(settings)`` builds it; ``leadscore api`` serves it with uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, WithJsonSchema
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from leadscore import __version__
from leadscore.api import problems
from leadscore.api.auth import KeyRing, RateLimiter, load_keys
from leadscore.api.limits import BodyLimit, Instrument
from leadscore.api.metrics import ApiMetrics
from leadscore.api.problems import ProblemError
from leadscore.api.scoring import (
    TS_PATTERN,
    BatchRequest,
    BatchResult,
    ScoreRequest,
    ScoreResult,
    features_for,
    score_features,
)
from leadscore.features.exceptions import FeatureStateLostError, FeatureStoreUnavailableError
from leadscore.features.state import check_layout
from leadscore.features.store import RedisFeatureStore
from leadscore.infra.redis import redis_client
from leadscore.schemas import load_schema
from leadscore.schemas.validation import parse_ts_ms
from leadscore.settings import Settings
from leadscore.streamer.models import ModelHolder

log = logging.getLogger(__name__)

#: A lookup waits this long for Redis before answering 503.
REDIS_WAIT_S = 2.0
SCORE_RECORD_REF = {"$ref": "#/components/schemas/ScoreRecord"}


@dataclass
class ApiState:
    settings: Settings
    models: ModelHolder
    keys: KeyRing
    limiter: RateLimiter
    metrics: ApiMetrics
    store: RedisFeatureStore | None = None

    async def adopt_state(self) -> None:
        """Read (never create) the feature state's generation the workers write under."""
        assert self.store is not None  # noqa: S101 - set by the lifespan
        st = await self.store.marker.status()
        if st.generation is None:
            raise FeatureStateLostError(
                "Redis holds no leadscore feature state yet (no worker has started on it)"
            )
        check_layout(st.generation)
        if st.status != "ready":
            raise FeatureStateLostError(f"the feature store is being rebuilt ({st.status})")
        if not await self.store.marker.marker_holds(st.generation):
            raise FeatureStateLostError("the feature store's marker is missing: run rebuild")
        self.store.generation = st.generation


class LeadView(BaseModel):
    lead_id: str
    features: dict[str, int | float | str | None]
    score: Annotated[
        dict[str, Any] | None,
        WithJsonSchema({"anyOf": [SCORE_RECORD_REF, {"type": "null"}]}),
    ] = Field(description="The latest score record a worker published for the lead")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    status: str = Field(description="ok, degraded (a model problem) or not_ready")
    model_version: str
    problems: dict[str, str] | None = None
    model_problem: str | None = None


def create_app(settings: Settings, *, models: ModelHolder | None = None) -> FastAPI:
    holder = models or ModelHolder(
        settings.registry_root,
        rules_file=settings.rules_file,
        explain=settings.explain,
        max_reasons=settings.max_reasons,
        count_drift=False,
    )
    keys = KeyRing(load_keys(settings.api_keys, settings.api_keys_file))
    state = ApiState(
        settings,
        holder,
        keys,
        RateLimiter(settings.api_rate_limit, float(settings.api_rate_burst)),
        ApiMetrics.create(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if models is None:
            await asyncio.to_thread(holder.start)
        state.metrics.set_model(holder.current.version)
        client = redis_client(settings)
        state.store = RedisFeatureStore(
            client,
            per_slot=settings.redis_cluster,
            retry_for_s=REDIS_WAIT_S,
            ttl_s=settings.state_ttl_s,
        )
        refresher = asyncio.create_task(_refresh_models(state))
        try:
            yield
        finally:
            refresher.cancel()
            await state.store.close()
            await client.aclose()

    app = FastAPI(
        title="leadscore API",
        version=__version__,
        description="Lead scores and features from the live feature store, and scoring of "
        "any lead from a profile and recent events. Errors are RFC 9457 problem details.",
        lifespan=lifespan,
    )
    app.state.api = state
    app.add_exception_handler(RequestValidationError, problems.on_validation_error)
    app.add_exception_handler(HTTPException, problems.on_http_error)
    app.add_exception_handler(ProblemError, problems.on_problem)
    app.add_exception_handler(Exception, problems.on_unexpected)
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes)
    app.add_middleware(Instrument, metrics=state.metrics)
    _routes(app, state)
    _openapi(app)
    return app


async def _refresh_models(state: ApiState) -> None:
    while True:
        await asyncio.sleep(state.settings.model_poll_s)
        try:
            if await asyncio.to_thread(state.models.refresh):
                state.metrics.set_model(state.models.current.version)
        except Exception:  # noqa: BLE001 - a registry hiccup must not stop the refresher
            log.exception("model refresh failed")


def _auth(state: ApiState, scope: str) -> Callable[..., Awaitable[str | None]]:
    bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")

    async def authenticate(
        cred: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
        x_api_key: str | None = Security(header),  # noqa: B008
    ) -> str | None:
        if not state.keys.enabled:
            return None
        presented = cred.credentials if cred is not None else x_api_key
        challenge = {"WWW-Authenticate": 'Bearer realm="leadscore"'}
        if not presented:
            raise ProblemError(
                401,
                "an API key is required: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                kind="unauthorized",
                headers=challenge,
            )
        key = state.keys.find(presented)
        if key is None:
            raise ProblemError(401, "unknown API key", kind="unauthorized", headers=challenge)
        if scope not in key.scopes:
            raise ProblemError(403, f"key {key.name!r} lacks the {scope!r} scope", kind="forbidden")
        wait = state.limiter.take(key.name)
        if wait > 0:
            state.metrics.rate_limited.labels(key=key.name).inc()
            raise ProblemError(
                429,
                f"key {key.name!r} is over its rate limit on this replica",
                kind="rate-limited",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        return key.name

    return authenticate


LeadId = Annotated[
    str,
    Path(min_length=1, max_length=128, description="The lead id (a slash as %2F)"),
]
AtParam = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=f"^(now|{TS_PATTERN[1:-1]})$",
        description="'now' or an RFC 3339 time: the features as of then "
        "(default: as of the lead's latest event)",
    ),
]

LOOKUP_ERRORS = problems.responses(401, 403, 404, 422, 429, 503)
SCORE_ERRORS = problems.responses(400, 401, 403, 413, 422, 429)


def _routes(app: FastAPI, state: ApiState) -> None:
    _service_routes(app, state)
    _lead_routes(app, state, Depends(_auth(state, "read")))
    _score_routes(app, state, Depends(_auth(state, "score")))


def _service_routes(app: FastAPI, state: ApiState) -> None:
    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=Ready,
        tags=["service"],
        responses={503: {"model": Ready, "description": "not ready"}},
    )
    async def ready() -> JSONResponse:
        """Redis answers and holds the feature state; the body says which model scores."""
        ok, body = await _readiness(state)
        state.metrics.ready.set(1 if ok else 0)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        """Prometheus metrics of this replica."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _lead_routes(app: FastAPI, state: ApiState, read: Any) -> None:
    @app.get(
        "/leads/{lead_id:path}/score",
        tags=["leads"],
        dependencies=[read],
        responses={
            200: {"content": {"application/json": {"schema": SCORE_RECORD_REF}}},
            **LOOKUP_ERRORS,
        },
    )
    async def lead_score(lead_id: LeadId) -> JSONResponse:
        """The latest score record a worker published for the lead (schemas/score.json)."""
        record = await _redis(state, lambda store: store.latest_score(lead_id))
        if record is None:
            raise ProblemError(404, f"no score for lead {lead_id!r}", kind="unknown-lead")
        return JSONResponse(record)

    @app.get(
        "/leads/{lead_id:path}",
        response_model=LeadView,
        tags=["leads"],
        dependencies=[read],
        responses=LOOKUP_ERRORS,
    )
    async def lead(
        lead_id: LeadId,
        at: AtParam = None,
    ) -> dict[str, Any]:
        """The lead's features from the live store, and its latest score."""
        at_ms = _at(at)
        feats = await _redis(state, lambda store: store.read(lead_id, at_ms))
        if feats is None:
            raise ProblemError(404, f"unknown lead {lead_id!r}", kind="unknown-lead")
        record = await _redis(state, lambda store: store.latest_score(lead_id))
        return {"lead_id": lead_id, "features": feats, "score": record}


def _score_routes(app: FastAPI, state: ApiState, score: Any) -> None:
    @app.post(
        "/score",
        response_model=ScoreResult,
        tags=["scoring"],
        dependencies=[score],
        responses=SCORE_ERRORS,
    )
    async def score_one(body: ScoreRequest) -> dict[str, Any]:
        """Score a lead, known or not, from a profile and recent events; changes nothing."""
        return _score(state, body, "")

    @app.post(
        "/score:batch",
        response_model=BatchResult,
        tags=["scoring"],
        dependencies=[score],
        responses=SCORE_ERRORS,
    )
    async def score_batch(body: BatchRequest) -> dict[str, Any]:
        """Score up to 100 leads; the results in the order of `leads`."""
        return {"results": [_score(state, r, f"/leads/{i}") for i, r in enumerate(body.leads)]}


def _score(state: ApiState, req: ScoreRequest, pointer: str) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    feats, at_ms = features_for(
        req,
        now_ms=now_ms,
        max_future_ms=state.settings.max_future_skew_s * 1000,
        pointer=pointer,
    )
    return score_features(state.models, feats, req.lead_id, at_ms)


def _at(at: str | None) -> int | None:
    if at is None:
        return None
    if at == "now":
        return int(time.time() * 1000)
    at_ms = parse_ts_ms(at)
    if at_ms is None:
        raise ProblemError(
            422,
            "at must be 'now' or an RFC 3339 time",
            kind="invalid-request",
            errors=[problems.InvalidParam(pointer="at", message="not 'now' or a time")],
        )
    return at_ms


async def _redis(state: ApiState, call: Callable[[RedisFeatureStore], Awaitable[Any]]) -> Any:
    """Run a store call; adopt the feature state first (again after a rebuild); 503 when
    Redis is away or holds no state."""
    store = state.store
    assert store is not None  # noqa: S101 - set by the lifespan
    for attempt in range(2):
        try:
            if not store.generation:
                await state.adopt_state()
            return await asyncio.wait_for(call(store), REDIS_WAIT_S * 2)
        except FeatureStateLostError as exc:
            store.generation = ""
            if attempt:
                raise ProblemError(503, str(exc), kind="no-feature-state") from exc
        except (FeatureStoreUnavailableError, RedisError, OSError, TimeoutError) as exc:
            raise ProblemError(
                503,
                f"Redis is unavailable: {type(exc).__name__}",
                kind="redis-unavailable",
                headers={"Retry-After": "1"},
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def _readiness(state: ApiState) -> tuple[bool, dict[str, Any]]:
    failing: dict[str, str] = {}
    store = state.store
    if store is None:
        failing["redis"] = "not connected yet"
    else:
        try:
            await asyncio.wait_for(store.client.ping(), REDIS_WAIT_S)
            if not store.generation:
                await state.adopt_state()
            else:
                await asyncio.wait_for(store.check(), REDIS_WAIT_S)
        except FeatureStateLostError as exc:
            store.generation = ""
            failing["feature_state"] = str(exc)
        except (RedisError, OSError, TimeoutError) as exc:
            failing["redis"] = f"unreachable: {type(exc).__name__}: {exc}"
    models = state.models
    body: dict[str, Any] = {
        "ready": not failing,
        "status": "not_ready" if failing else "degraded" if models.problem else "ok",
        "model_version": models.current.version,
    }
    if failing:
        body["problems"] = failing
    if models.problem:
        body["model_problem"] = models.problem
    return not failing, body


def _openapi(app: FastAPI) -> None:
    """The generated spec, with the score record's schema from ``schemas/score.json`` (the
    contract the workers' records follow) and the problem schema."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        comps = spec.setdefault("components", {}).setdefault("schemas", {})
        record = {k: v for k, v in load_schema("score").items() if k not in ("$schema", "$id")}
        comps["ScoreRecord"] = record
        comps["Problem"] = problems.Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        comps.update(comps["Problem"].pop("$defs", {}))
        app.openapi_schema = spec
        return spec

    app.openapi = build  # type: ignore[method-assign]
