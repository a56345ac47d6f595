"""ASGI middleware: the request body limit and per-route metrics."""

from __future__ import annotations

import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadscore.api.metrics import ApiMetrics
from leadscore.api.problems import problem_response


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by ``Content-Length`` before reading and
    by counting while reading (a chunked body has no length)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the body is over the {self.limit}-byte limit (LEADSCORE_API_MAX_BODY_BYTES)"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await problem_response(None, 413, detail, kind="too-large")(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI re-raises an HTTPException met while reading the body, and the
                    # app's handler answers it as a problem.
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


class Instrument:
    """Count requests and time them per route template (not per path: lead ids would make
    a series each)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(
                route=path, method=scope["method"], status=str(status)
            ).inc()
            self.metrics.latency.labels(route=path).observe(time.perf_counter() - start)
