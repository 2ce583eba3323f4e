"""Request bodies larger than any route takes are refused with 413, in the one JSON error
shape, before they are read whole: one announced too large is refused unread, and one sent
in chunks is cut off at the limit."""

from __future__ import annotations

import fastapi
from starlette import exceptions as starlette_exceptions
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starkmatter.api import failing


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of request body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> starlette_exceptions.HTTPException:
        detail = f"request body larger than {self.max_bytes} bytes"
        return starlette_exceptions.HTTPException(413, detail)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                request = fastapi.Request(scope, receive)
                response = await failing.on_http_error(request, self._too_large())
                # The body is never read: a client that waits for "100 Continue" before
                # sending it would otherwise find its next request read as that body.
                response.headers["connection"] = "close"
                await response(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised in the route's body read: FastAPI and the hot path turn it
                    # into the JSON error (failing.on_http_error).
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)
