"""The worker's web server: ``/health``, ``/ready``, ``/metrics``, ``GET /leads/{id}``,
``POST /score``, and the options that cut slow clients off."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import orjson
from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from leadscore.features.exceptions import FeatureStateLostError
from leadscore.schemas.validation import parse_ts_ms
from leadscore.settings import Settings
from leadscore.streamer.runtime import Runtime


def web_options(settings: Settings) -> dict[str, Any]:
    """aiohttp options of the worker's web server: slow clients are cut off.

    Faust runs aiohttp without timeouts (a keep-alive of an hour), so a client sending a
    byte a second held its connection indefinitely. ``keepalive_timeout`` also bounds how
    long a client may take to send its request head (aiohttp's timer runs from the
    connection's start and is not reset by partial data); the middleware bounds handling.
    """
    timeout = settings.web_request_timeout_s

    @web.middleware
    async def request_deadline(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            async with asyncio.timeout(timeout):
                response: web.StreamResponse = await handler(request)
                return response
        except TimeoutError:
            return web.json_response({"error": f"not answered within {timeout} s"}, status=503)

    return {
        "handler_args": {
            "keepalive_timeout": settings.web_keepalive_timeout_s,
            "handler_cancellation": True,
            "lingering_time": 2.0,
        },
        "middlewares": [request_deadline],
    }


def register(app: faust.App, rt: Runtime) -> None:
    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        ok, body = rt.readiness(app.rebalancing)
        rt.metrics.ready.set(1 if ok else 0)
        return web.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics_view(web: View, request: Request) -> Response:
        rt.metrics.ready.set(1 if rt.readiness(app.rebalancing)[0] else 0)
        # aiohttp refuses a charset inside content_type, so the full header goes in headers.
        return web.bytes(
            generate_latest(rt.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # Any id: a slash arrives as %2F (aiohttp routes on the path with %2F kept), and braces,
    # which the default pattern ([^{}/]+) refuses, match too.
    @app.page("/leads/{lead_id:[^/]+}")
    async def lead_view(web: View, request: Request, lead_id: str) -> Response:
        return await _lead(web, request, rt, lead_id)

    @app.page("/score")
    async def score_view(web: View, request: Request) -> Response:
        return await _score(web, request, rt)


async def _lead(web: View, request: Request, rt: Runtime, lead_id: str) -> Response:
    at = request.query.get("at")
    at_ms: int | None = None
    if at == "now":
        at_ms = int(time.time() * 1000)
    elif at:
        at_ms = parse_ts_ms(at)
        if at_ms is None:
            return web.json({"error": "at must be 'now' or an RFC 3339 timestamp"}, status=400)
    try:
        feats = await rt.store.read(lead_id, at_ms)
    except FeatureStateLostError as exc:
        return web.json({"error": str(exc)}, status=503)
    if feats is None:
        return web.json({"error": f"unknown lead {lead_id}"}, status=404)
    score = await rt.store.latest_score(lead_id)
    return web.json({"lead_id": lead_id, "features": feats, "score": score})


async def _score(web: View, request: Request, rt: Runtime) -> Response:
    if request.method != "POST":
        return web.json(
            {"error": 'use POST with {"features": {...}} or {"lead_id": ...}'}, status=405
        )
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.json({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json({"error": "body must be a JSON object"}, status=400)
    if "lead_id" in body:
        try:
            feats = await rt.store.read(str(body["lead_id"]), None)
        except FeatureStateLostError as exc:
            return web.json({"error": str(exc)}, status=503)
        if feats is None:
            return web.json({"error": f"unknown lead {body['lead_id']}"}, status=404)
    elif isinstance(body.get("features"), dict):
        feats = body["features"]
    else:
        return web.json({"error": 'give {"features": {...}} or {"lead_id": ...}'}, status=400)
    scorer = rt.models.current
    s = scorer.score_batch([feats])[0]
    return web.json(
        {
            "score": round(s.score, 6),
            "score_100": int(round(s.score * 100)),
            "tier": s.tier,
            "model_version": scorer.version,
            "reasons": [r.as_dict() for r in s.reasons],
            "features": feats,
        }
    )
