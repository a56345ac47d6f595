"""The worker's web server: ``/health``, ``/ready``, ``/metrics``, and the options that cut
slow clients off. Lead lookups and scoring on request are the API's (``leadscore api``), which
scales apart from the workers and authenticates its clients."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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
