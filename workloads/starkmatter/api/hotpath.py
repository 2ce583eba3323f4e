"""The busiest routes, served without FastAPI's per-request machinery.

FastAPI resolves a route's dependencies generically on every request and passes it through
its router and exception layers: about half of the API's CPU on ``POST /orders``. A hot
route keeps its FastAPI declaration (OpenAPI, the one endpoint function) and gets a
*direct* resolver beside it, which reads the body and calls the same dependencies in the
order FastAPI does, then the same endpoint. :class:`HotRoutes` sends exact matches of
method and path to the direct resolver; everything else, and every request whose body is
not JSON, goes through FastAPI unchanged. A test sends the same requests both ways and
compares the answers.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import fastapi
import pydantic
from fastapi import exceptions, routing
from starlette import exceptions as starlette_exceptions
from starlette.types import ASGIApp, Receive, Scope, Send

from starkmatter.api import failing
from starkmatter.core import errors

Direct = Callable[[fastapi.Request], Awaitable[fastapi.Response]]
M = TypeVar("M", bound=pydantic.BaseModel)


class HotRoutes:
    """ASGI middleware: ``(method, path)`` -> a direct resolver (module docstring).

    ``routers``: where the routes are declared (without a prefix); each hot route must be,
    since its declaration is what metrics, logs and error labels name."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Mapping[tuple[str, str], Direct],
        routers: Sequence[fastapi.APIRouter],
    ) -> None:
        self.app = app
        declared = {
            (method, route.path): route
            for router in routers
            for route in router.routes
            if isinstance(route, routing.APIRoute)
            for method in route.methods or ()
        }
        missing = set(routes) - set(declared)
        if missing:
            raise ValueError(f"hot routes not declared in the given routers: {sorted(missing)}")
        self.routes = {key: (declared[key], direct) for key, direct in routes.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = (scope["method"], scope["path"])
            hot = self.routes.get(key)
            if hot is not None and _is_json(scope):
                scope["route"], direct = hot
                request = fastapi.Request(scope, receive)
                try:
                    response = await direct(request)
                except errors.AppError as exc:
                    response = await failing.on_app_error(request, exc)
                except exceptions.RequestValidationError as exc:
                    response = await failing.on_validation_error(request, exc)
                except starlette_exceptions.HTTPException as exc:  # 413 from api.limiting
                    response = await failing.on_http_error(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    """A JSON content type, as FastAPI decides it (others take FastAPI's own path)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            if value == b"application/json":
                return True
            message = email.message.Message()
            message["content-type"] = value.decode("latin-1")
            subtype = message.get_content_subtype()
            return message.get_content_maintype() == "application" and (
                subtype == "json" or subtype.endswith("+json")
            )
    return False


_NO_BODY = object()


async def json_body(request: fastapi.Request) -> Any:
    """The decoded JSON body, or the error FastAPI answers for it: 422 for JSON that does not
    parse, 400 for a body that cannot be read or decoded at all (bytes that are not UTF-8,
    nesting too deep, a number too long, the client gone), the body limit's 413 as it is."""
    try:
        raw = await request.body()
        return json.loads(raw) if raw else _NO_BODY
    except json.JSONDecodeError as exc:
        raise exceptions.RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ],
            body=exc.doc,
        ) from None
    except starlette_exceptions.HTTPException:
        raise
    except Exception as exc:  # as FastAPI's own body read answers it
        raise starlette_exceptions.HTTPException(
            400, "There was an error parsing the body"
        ) from exc


def validated(model: type[M], body: Any) -> M:
    """``body`` validated as FastAPI validates a route's single body model."""
    if body is _NO_BODY:
        raise exceptions.RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate(body, from_attributes=True)
    except pydantic.ValidationError as exc:
        raise exceptions.RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()], body=body
        ) from None
