"""The browser tier: the real platform on loopback, driven through Debian's Chromium.

One platform per test (fresh database and Redis from the session's embedded servers): the
API gateway with every component router and the dashboard, the WebSocket gateway, the
order worker, and the market simulator feeding the real ingest pipeline. Chromium is
Debian's ``/usr/bin/chromium`` driven by Playwright (no browser download). Any console
error or uncaught page exception fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import fastapi
import pytest
import redis.asyncio as aioredis
from playwright import async_api

from starkmatter.ai import routes as ai_routes
from starkmatter.alerts import routes as alert_routes
from starkmatter.api import app as api_app
from starkmatter.core import db, embedded, redis_client, serving, settings
from starkmatter.gateway import fanout, server
from starkmatter.ingest import pipeline, simulation, simulator, worker
from starkmatter.ingest.providers import simulated
from starkmatter.market import routes as market_routes
from starkmatter.news import routes as news_routes
from starkmatter.orders import processing
from starkmatter.orders import routes as order_routes
from starkmatter.orders.config import OrdersConfig
from starkmatter.orders.service import make_broker
from starkmatter.portfolio import routes as portfolio_routes
from starkmatter.web import routes as web_routes

CHROMIUM = os.environ.get("STARKMATTER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# Assertions wait for the page (live data, the order worker); they never assert on timing.
async_api.expect.set_options(timeout=20_000)

SYMBOLS = {"AAPL": "227.50", "MSFT": "415.20", "NVDA": "131.40", "TSLA": "251.10"}


@dataclasses.dataclass
class Platform:
    base_url: str
    ws_url: str
    config: settings.Settings
    redis: aioredis.Redis
    pool: asyncpg.Pool
    gateway: server.Gateway


def platform_app(config: settings.Settings) -> fastapi.FastAPI:
    """The API gateway with every router the dashboard talks to (until app.py has them all)."""
    app = api_app.create_app(config)
    paths = {getattr(route, "path", "") for route in app.routes}
    for path, router in (
        ("/orders", order_routes.router),
        ("/portfolio", portfolio_routes.router),
        ("/ai/analyze", ai_routes.router),
        ("/market/symbols", market_routes.router),
        ("/news", news_routes.router),
        ("/alerts", alert_routes.router),
        ("/", web_routes.router),
    ):
        if path not in paths:
            app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def serving_app(app: fastapi.FastAPI) -> AsyncIterator[str]:
    port = embedded.free_port()
    # Bounded shutdown: a browser may leave a keep-alive connection behind.
    http = serving.server(app, "127.0.0.1", port, lifespan="on", timeout_graceful_shutdown=5)
    task = asyncio.create_task(http.serve())
    while not http.started:
        if task.done():
            task.result()
            raise RuntimeError("API server exited before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        http.should_exit = True
        await task


@contextlib.asynccontextmanager
async def running_gateway(config: settings.Settings) -> AsyncIterator[server.Gateway]:
    redis = redis_client.create_redis(config)
    gateway = server.Gateway(fanout.Hub(redis), server.token_verifier(config, redis), redis=redis)
    await gateway.start("127.0.0.1", 0)
    try:
        yield gateway
    finally:
        if not gateway.closing:
            await gateway.stop()
        await redis.aclose()


@contextlib.asynccontextmanager
async def running_market(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> AsyncIterator[simulator.SimulatorServer]:
    """The simulator over a real WebSocket, through the ingest pipeline into Redis/PostgreSQL."""
    sim = simulation.MarketSimulation(SYMBOLS, seed=11, bad_share=0.0)
    async with simulator.SimulatorServer(sim, rate=40) as feed:
        provider = simulated.SimulatorProvider("sim", feed.url, seed=1)
        spec = worker.FeedSpec(name="sim", symbols=tuple(SYMBOLS), max_daily_move_percent=20)
        task = asyncio.create_task(
            worker.run_feed(
                spec,
                pool,
                redis,
                provider=provider,
                config=pipeline.PipelineConfig(flush_rows=200, flush_interval_s=0.1),
            )
        )
        try:
            yield feed
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_orders(config: settings.Settings) -> AsyncIterator[None]:
    pool = await db.create_pool(config)
    redis = redis_client.create_redis(config)
    orders_config = OrdersConfig(poll_interval_ms=50)
    orders = processing.Worker(pool, redis, orders_config, make_broker(orders_config, redis))
    stop = asyncio.Event()
    task = asyncio.create_task(orders.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await redis.aclose()
        await pool.close()


TEARDOWN_S = 60
"""A platform stops in well under a second. One that hangs fails its test naming the await
that hung (the timeout's traceback), and its parts are still stopped: pytest-timeout would
abandon them running into the tests after it, all in the one session loop."""


@pytest.fixture
async def platform(config: settings.Settings) -> AsyncIterator[Platform]:
    parts = contextlib.AsyncExitStack()
    try:
        pool = await db.create_pool(config)
        parts.push_async_callback(pool.close)
        feed_pool = await db.create_pool(config)  # the ingest process's own, as deployed
        parts.push_async_callback(feed_pool.close)
        redis = redis_client.create_redis(config)
        parts.push_async_callback(redis.aclose)
        gateway = await parts.enter_async_context(running_gateway(config))
        await parts.enter_async_context(running_market(feed_pool, redis))
        await parts.enter_async_context(running_orders(config))
        app = platform_app(config)
        ws_url = f"ws://127.0.0.1:{gateway.port}/ws"
        app.state.web_ws_url = ws_url
        base_url = await parts.enter_async_context(serving_app(app))
        yield Platform(base_url, ws_url, config, redis, pool, gateway)
    finally:
        async with asyncio.timeout(TEARDOWN_S):
            await parts.aclose()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[async_api.Browser]:
    # launch() gives the browser a fresh temporary profile (user-data-dir) of its own.
    async with async_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        await chromium.close()


@dataclasses.dataclass
class PageWatch:
    """A page and every console error / uncaught exception it produced."""

    page: async_api.Page
    errors: list[str]
    allowed_statuses: set[int] = dataclasses.field(default_factory=set)

    def allow_http_error(self, status: int) -> None:
        """A test that provokes an error response says so (Chromium logs those as errors)."""
        self.allowed_statuses.add(status)

    def record(self, text: str) -> None:
        if any(f"status of {status} " in text for status in self.allowed_statuses):
            return
        self.errors.append(text)


@pytest.fixture
async def page(browser: async_api.Browser, platform: Platform) -> AsyncIterator[PageWatch]:
    context = await browser.new_context(
        base_url=platform.base_url, viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(20_000)
    tab = await context.new_page()
    watch = PageWatch(tab, [])

    def on_console(message: async_api.ConsoleMessage) -> None:
        if message.type == "error":
            watch.record(f"console: {message.text} at {message.location['url']}")

    def on_page_error(error: Any) -> None:
        watch.record(f"page error: {error}")

    tab.on("console", on_console)
    tab.on("pageerror", on_page_error)
    try:
        yield watch
    finally:
        await context.close()
    assert watch.errors == [], "the page logged errors"
