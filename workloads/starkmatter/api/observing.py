"""ASGI middleware: request ids, latency metrics per route template, one access-log line."""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starkmatter.core import logs, metrics

_log = logs.get_logger("starkmatter.api.access")
_REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_KEY = "starkmatter.request_id"
"""the request's id in its ASGI scope, for the answer to an unhandled error: that one is
sent after this middleware has returned (by Starlette's outermost error layer)"""


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == _REQUEST_ID_HEADER:
            candidate = bytes(value).decode("latin-1")[:64]
            if candidate.replace("-", "").isalnum():
                return candidate
    return uuid.uuid4().hex


class ObservingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope[REQUEST_ID_KEY] = _incoming_request_id(scope)
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (_REQUEST_ID_HEADER, rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            metrics.HTTP_REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                elapsed
            )
            _log.info(
                "http.request",
                method=scope["method"],
                route=template,
                status=status,
                ms=round(elapsed * 1000, 2),
            )
            logs.request_id.reset(token)
