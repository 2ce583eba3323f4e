"""Serves the dashboard: ``/`` (the page), ``/static/...`` (its modules) and ``/config.json``.

The page is plain ES modules and CSS, so nothing but this service is needed at run time.
Every response carries a strict Content-Security-Policy: scripts and styles only from this
origin, nothing inline, and connections only to this origin and the WebSocket gateway.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from pathlib import Path

import fastapi

from starkmatter.api import deps
from starkmatter.core import errors

router = fastapi.APIRouter(tags=["web"], include_in_schema=False)

STATIC_DIR = Path(__file__).parent / "static"

WS_URL_ENV = "STARKMATTER_WEB_WS_URL"
"""Where browsers reach the WebSocket gateway, when it is not on this origin's ``/ws``
nor on this host at the gateway port (e.g. ``wss://trade.example.com/ws`` behind an
ingress). Read per request, so a test or a Deployment can set it without a rebuild."""

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
}


def _security_headers(connect_src: str) -> dict[str, str]:
    csp = "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect_src}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def _has_local_ws(request: fastapi.Request) -> bool:
    return any(getattr(route, "path", None) == "/ws" for route in request.app.routes)


def gateway_ws_url(request: fastapi.Request) -> str:
    """The WebSocket URL the page should open, absolute, as seen from the browser."""
    configured = getattr(request.app.state, "web_ws_url", None) or os.environ.get(WS_URL_ENV)
    if configured:
        return str(configured)
    scheme = "wss" if request.url.scheme == "https" else "ws"
    host = request.url.hostname or "127.0.0.1"
    if _has_local_ws(request):
        port = f":{request.url.port}" if request.url.port else ""
        return f"{scheme}://{host}{port}/ws"
    resources = getattr(request.app.state, "resources", None)
    port_number = resources.settings.gateway_port if resources is not None else 8001
    return f"{scheme}://{host}:{port_number}/ws"


def _connect_src(request: fastapi.Request) -> str:
    ws_url = gateway_ws_url(request)
    origin = "/".join(ws_url.split("/", 3)[:3])
    return f"'self' {origin}"


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _file_response(request: fastapi.Request, path: Path) -> fastapi.Response:
    body = path.read_bytes()
    etag = _etag(body)
    headers = {
        **_security_headers(_connect_src(request)),
        "ETag": etag,
        # Not content-hashed file names (no build step): revalidate every time, cheaply.
        "Cache-Control": "no-cache",
    }
    if request.headers.get("if-none-match") == etag:
        return fastapi.Response(status_code=304, headers=headers)
    media_type = _CONTENT_TYPES.get(path.suffix) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    return fastapi.Response(content=body, media_type=media_type, headers=headers)


@router.get("/", dependencies=[deps.Public])
async def index(request: fastapi.Request) -> fastapi.Response:
    return _file_response(request, STATIC_DIR / "index.html")


@router.get("/favicon.ico", dependencies=[deps.Public])
async def favicon(request: fastapi.Request) -> fastapi.Response:
    return _file_response(request, STATIC_DIR / "favicon.svg")


@router.get("/static/{path:path}", dependencies=[deps.Public])
async def static(path: str, request: fastapi.Request) -> fastapi.Response:
    root = STATIC_DIR.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise errors.NotFound(f"no such file: /static/{path}", code="not_found")
    return _file_response(request, target)


@router.get("/config.json", dependencies=[deps.Public])
async def config(request: fastapi.Request) -> fastapi.Response:
    resources = getattr(request.app.state, "resources", None)
    body = {
        "ws_url": gateway_ws_url(request),
        "registration_enabled": (
            resources.settings.registration_enabled if resources is not None else True
        ),
    }
    return fastapi.responses.JSONResponse(
        body, headers={**_security_headers("'none'"), "Cache-Control": "no-store"}
    )
