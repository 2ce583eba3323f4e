"""Every failure leaves as the one JSON error shape; no stack trace or SQL reaches a client."""

from __future__ import annotations

from typing import Any

import fastapi
from fastapi import exceptions, responses
from starlette import exceptions as starlette_exceptions

from starkmatter.api import observing
from starkmatter.core import errors, logs, metrics

_log = logs.get_logger("starkmatter.api.errors")


def _route(request: fastapi.Request) -> str:
    return getattr(request.scope.get("route"), "path", "unmatched")


def _respond(request: fastapi.Request, error: errors.AppError) -> responses.JSONResponse:
    metrics.HTTP_ERRORS.labels(route=_route(request), code=error.code).inc()
    body = error.body()
    headers = dict(error.headers)
    rid = logs.request_id.get()
    if not rid:
        # An unhandled error is answered outside the observing middleware, which would
        # otherwise name the request in the body and the header.
        rid = request.scope.get(observing.REQUEST_ID_KEY)
        if rid:
            headers["x-request-id"] = rid
    if rid:
        body["error"]["request_id"] = rid
    return responses.JSONResponse(body, status_code=error.status, headers=headers)


async def on_app_error(request: fastapi.Request, exc: Exception) -> responses.JSONResponse:
    assert isinstance(exc, errors.AppError)
    return _respond(request, exc)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def on_validation_error(request: fastapi.Request, exc: Exception) -> responses.JSONResponse:
    assert isinstance(exc, exceptions.RequestValidationError)
    details = [
        {
            "field": _field_path(tuple(err["loc"])),
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors()
    ]
    return _respond(
        request,
        errors.ValidationFailed("request validation failed", details=details),
    )


async def on_http_error(request: fastapi.Request, exc: Exception) -> responses.JSONResponse:
    assert isinstance(exc, starlette_exceptions.HTTPException)
    codes = {
        404: "not_found",
        405: "method_not_allowed",
        401: "unauthenticated",
        413: "payload_too_large",
    }
    error = errors.AppError(
        str(exc.detail),
        code=codes.get(exc.status_code, "http_error"),
        headers=dict(exc.headers or {}),
    )
    error.status = exc.status_code
    return _respond(request, error)


async def on_unexpected(request: fastapi.Request, exc: Exception) -> responses.JSONResponse:
    _log.error(
        "http.unhandled",
        route=_route(request),
        error_type=type(exc).__name__,
        request_id=request.scope.get(observing.REQUEST_ID_KEY),
        exc_info=exc,
    )
    return _internal(request)


def _internal(request: fastapi.Request) -> responses.JSONResponse:
    error = errors.AppError(
        "internal error; quote the request id when reporting it", code="internal"
    )
    error.status = 500
    return _respond(request, error)


def install(app: fastapi.FastAPI) -> None:
    app.add_exception_handler(errors.AppError, on_app_error)
    app.add_exception_handler(exceptions.RequestValidationError, on_validation_error)
    app.add_exception_handler(starlette_exceptions.HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
