"""Helpers shared by test tiers: a live API server on loopback, signed-in users."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
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


def command_env(config: settings.Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``starkmatter`` command as its Deployment runs it (prod mode), on
    the test's PostgreSQL, Redis and key; the test run's own STARKMATTER_ and ANTHROPIC_
    variables left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STARKMATTER_", "ANTHROPIC_"))}
    env.update(
        STARKMATTER_ENV="prod",
        STARKMATTER_DATABASE_URL=str(config.database_url),
        STARKMATTER_REDIS_URL=str(config.redis_url),
        STARKMATTER_JWT_PRIVATE_KEY=config.private_key_pem() or "",
        STARKMATTER_DB_POOL_MIN="1",
        **extra,
    )
    return env


@contextlib.asynccontextmanager
async def running_command(
    args: Sequence[str], env: dict[str, str], log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m starkmatter.cli ARGS`` (output to ``log_path``) until the block ends:
    then SIGTERM, and SIGKILL if it has not stopped 20 s later."""
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starkmatter.cli", *args, env=env, stdout=log, stderr=log
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def until_healthy(
    client: httpx.AsyncClient, proc: asyncio.subprocess.Process, log_path: Path
) -> None:
    """Wait (30 s at most) until the command behind ``client`` answers ``/healthz``."""
    for _ in range(600):
        if proc.returncode is not None:
            raise AssertionError(f"the command exited; its log is {log_path}")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/healthz")).status_code == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the command never answered /healthz; its log is {log_path}")
