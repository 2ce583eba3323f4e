"""Helpers shared by test tiers: a live API server on loopback, signed-in users."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import asyncpg
import httpx

from starkmatter.api import app as api_app
from starkmatter.api import deps, hotpath
from starkmatter.core import embedded, serving, settings


@dataclasses.dataclass
class LiveServer:
    """A real uvicorn server on a loopback port, and an HTTP client bound to it."""

    base_url: str
    client: httpx.AsyncClient
    config: settings.Settings


@contextlib.asynccontextmanager
async def serve_api(
    config: settings.Settings,
    *,
    probes_port: int | None = None,
    hot_routes: Mapping[tuple[str, str], hotpath.Direct] = api_app.HOT_ROUTES,
    extra_routes: Mapping[str, Callable[..., Any]] | None = None,
) -> AsyncIterator[LiveServer]:
    """``probes_port``: the app's probe listener (``/metrics``) too, as ``starkmatter api``;
    ``hot_routes``: what the app serves without FastAPI (``api.hotpath``); ``extra_routes``:
    public GET routes a test adds (path -> endpoint)."""
    port = embedded.free_port()
    app = api_app.create_app(config, probes_port=probes_port, hot_routes=hot_routes)
    for path, endpoint in (extra_routes or {}).items():
        app.add_api_route(path, endpoint, dependencies=[deps.Public])
    server = serving.server(app, "127.0.0.1", port, lifespan="on")
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("API server exited before it started")
        await asyncio.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
            yield LiveServer(base_url, client, config)
    finally:
        server.should_exit = True
        await task


@dataclasses.dataclass
class SignedIn:
    user_id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


_emails = itertools.count(1)


async def sign_up(client: httpx.AsyncClient, *, email: str | None = None) -> SignedIn:
    """Register a new trader over HTTP and log in."""
    email = email or f"trader{next(_emails)}@example.com"
    password = "correct horse battery staple"
    created = await client.post("/auth/register", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    tokens = await client.post("/auth/login", json={"email": email, "password": password})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return SignedIn(
        created.json()["id"], email, password, body["access_token"], body["refresh_token"]
    )


async def sign_up_admin(live: LiveServer, db_url: str) -> SignedIn:
    """Create an admin directly (admins are never self-registered), then log in over HTTP."""
    from starkmatter.core import audit
    from starkmatter.core.auth import accounts

    email = f"admin{next(_emails)}@example.com"
    password = "correct horse battery staple"
    conn = await asyncpg.connect(db_url)
    try:
        user = await accounts.create_user(
            conn,
            audit.Actor(id="tests", service="tests", endpoint="conftest"),
            email=email,
            password=password,
            display_name="Admin",
            roles=("admin",),
            reason="test set-up",
        )
    finally:
        await conn.close()
    tokens = (
        await live.client.post("/auth/login", json={"email": email, "password": password})
    ).json()
    return SignedIn(user.id, email, password, tokens["access_token"], tokens["refresh_token"])
