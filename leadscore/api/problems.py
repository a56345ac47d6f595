"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
#: ``type`` names the kind of problem as a URN (RFC 9457 needs a URI, not a page to fetch);
#: ``about:blank`` is for plain HTTP statuses (unknown path, wrong method).
TYPE_BASE = "urn:leadscore:problem:"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class InvalidParam(BaseModel):
    """One reason a request was refused, with where in the request it is."""

    pointer: str = Field(description="JSON pointer into the body, or the parameter's name")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(default=None, description="The request path")
    errors: list[InvalidParam] | None = Field(
        default=None, description="Each invalid part of the request (422 and 400 only)"
    )


class ProblemError(Exception):
    """Raised by a handler to answer with a problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        errors: list[InvalidParam] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.kind = status, detail, kind
        self.errors, self.headers = errors, headers


def problem_response(
    request: Request | None,
    status: int,
    detail: str | None,
    *,
    kind: str | None = None,
    errors: list[InvalidParam] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=TYPE_BASE + kind if kind else "about:blank",
        title=TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else None,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_TYPE,
        headers=headers,
    )


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of an operation's problem responses."""
    return {
        s: {
            "description": TITLES[s],
            "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }


def _pointer(loc: tuple[Any, ...]) -> str:
    if loc and loc[0] == "body":
        return "/" + "/".join(str(p) for p in loc[1:])
    return ".".join(str(p) for p in loc[1:]) or str(loc[0]) if loc else ""


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        return problem_response(request, 400, "the body is not valid JSON", kind="invalid-json")
    params = [InvalidParam(pointer=_pointer(tuple(e["loc"])), message=e["msg"]) for e in errs]
    return problem_response(
        request,
        422,
        f"{len(params)} invalid part(s) of the request; see errors",
        kind="invalid-request",
        errors=params,
    )


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type
    return problem_response(
        request, exc.status_code, str(exc.detail), headers=dict(exc.headers or {})
    )


async def on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)  # noqa: S101 - registered for this type
    return problem_response(
        request, exc.status, exc.detail, kind=exc.kind, errors=exc.errors, headers=exc.headers
    )


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem_response(request, 500, f"{type(exc).__name__}: the error is in the API's log")
