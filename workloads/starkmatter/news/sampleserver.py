"""The bundled sample feeds served over real HTTP (with ETag, Last-Modified and 304), so
``make run`` and the tests run the whole pipeline with no internet.

Paths: ``/markets.rss`` (RSS), ``/edgar.atom`` (SEC EDGAR filings, Atom), ``/wire.json``
(a JSON API; its field map is :data:`WIRE_FIELD_MAP`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import fastapi
from starlette import responses

from starkmatter.core import serving
from starkmatter.news import config

SAMPLES = Path(__file__).parent / "samples"
FILES = {"markets.rss": "application/rss+xml", "edgar.atom": "application/atom+xml",
         "wire.json": "application/json"}  # fmt: skip
WIRE_FIELD_MAP = config.FieldMap(
    items="data.stories", url="link", title="headline", summary="teaser", body="body",
    published="time", author="byline", symbols="tickers",
)  # fmt: skip


def sources(base_url: str) -> list[config.NewsSource]:
    """NewsSource specs for the three sample feeds at ``base_url``."""
    return [
        config.NewsSource(name="sample-rss", format="rss", url=f"{base_url}/markets.rss"),
        config.NewsSource(name="sample-edgar", format="atom", url=f"{base_url}/edgar.atom"),
        config.NewsSource(
            name="sample-wire", format="json", url=f"{base_url}/wire.json",
            fieldMap=WIRE_FIELD_MAP,
        ),
    ]  # fmt: skip


def build_app(overrides: dict[str, bytes] | None = None) -> fastapi.FastAPI:
    """``overrides`` (name -> body) lets tests change a feed while it is being served."""
    app = fastapi.FastAPI(openapi_url=None, docs_url=None)
    bodies = overrides if overrides is not None else {}
    started = email.utils.formatdate(usegmt=True)

    @app.get("/{name}")
    async def feed(name: str, request: fastapi.Request) -> responses.Response:
        if name not in FILES:
            return responses.Response(status_code=404)
        body = bodies.get(name) or (SAMPLES / name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Last-Modified": started, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return responses.Response(status_code=304, headers=headers)
        return responses.Response(body, media_type=FILES[name], headers=headers)

    return app


@contextlib.asynccontextmanager
async def serve(
    host: str = "127.0.0.1", port: int = 8090, overrides: dict[str, bytes] | None = None
) -> AsyncIterator[str]:
    """Serve the samples until the context exits; yields the base URL."""
    # Signals stay with the owner (dev mode, tests): see core.serving.
    server = serving.server(build_app(overrides), host, port, lifespan="off")
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("sample feed server exited before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
