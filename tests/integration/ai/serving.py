"""A live API with this team's routers included (until the lead wires them in app.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import fastapi
import httpx
import uvicorn

from starkmatter.api import app as api_app
from starkmatter.core import embedded, settings
from tests.support import LiveServer


def with_routers(app: fastapi.FastAPI, routers: Sequence[fastapi.APIRouter]) -> fastapi.FastAPI:
    present = {getattr(r, "path", None) for r in app.routes}
    for router in routers:
        if not any(getattr(r, "path", None) in present for r in router.routes):
            app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def serve(
    config: settings.Settings,
    routers: Sequence[fastapi.APIRouter],
    on_shutdown: Sequence[Callable[[fastapi.FastAPI], Awaitable[None]]] = (),
) -> AsyncIterator[LiveServer]:
    app = with_routers(api_app.create_app(config), routers)
    port = embedded.free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("API server exited before it started")
        await asyncio.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            yield LiveServer(base_url, client, config)
    finally:
        for hook in on_shutdown:
            await hook(app)
        server.should_exit = True
        await task
