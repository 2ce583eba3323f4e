"""The API gateway application: one FastAPI app composed of every component's router."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import fastapi

from starkmatter.ai import routes as ai_routes
from starkmatter.alerts import routes as alert_routes
from starkmatter.api import failing, hotpath, limiting, observing, resources
from starkmatter.api.routes import auth, health
from starkmatter.core import db, heap, loops, migrating, probes, redis_client, settings
from starkmatter.core.auth import keys
from starkmatter.market import routes as market_routes
from starkmatter.news import routes as news_routes
from starkmatter.orders import routes as order_routes
from starkmatter.portfolio import routes as portfolio_routes
from starkmatter.web import routes as web_routes

# The gateway's REST surface: every component's public router, in one place. FastAPI 0.165
# tries the routes of the included routers in turn, about 6 microseconds each, so the
# busiest route, POST /orders, comes first. No two routers share a path: the order changes
# nothing else.
COMPONENT_ROUTERS = (
    order_routes.router,
    portfolio_routes.router,
    market_routes.router,
    ai_routes.router,
    news_routes.router,
    alert_routes.router,
    web_routes.router,
)

HOT_ROUTES: dict[tuple[str, str], hotpath.Direct] = {
    ("POST", "/orders"): order_routes.place_order_direct,
}
"""routes served by their direct resolver (api.hotpath); empty, FastAPI serves them all"""

MAX_BODY_BYTES = 1024 * 1024
"""a larger request body is refused with 413 before it is read whole (the largest any route
takes, an alert rule or an analysis request, is a few kilobytes)"""


def create_app(
    config: settings.Settings,
    *,
    migrate: bool = True,
    settle: bool = False,
    probes_port: int | None = None,
    hot_routes: Mapping[tuple[str, str], hotpath.Direct] = HOT_ROUTES,
) -> fastapi.FastAPI:
    """The app; ``settle`` freezes the heap once started (``core.heap``), as the ``starkmatter
    api`` process does; tests serve apps inside pytest, whose heap is not the app's.

    ``probes_port``: serve ``/metrics`` (with ``/healthz`` and ``/readyz``) there while the
    app runs, never on the app itself, whose port the Ingress exposes. One listener per
    process (``starkmatter api`` runs one uvicorn worker; dev mode one API app)."""
    keypair = keys.load(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        pool = await db.create_pool(config)
        redis = redis_client.create_redis(config)
        try:
            if migrate:
                async with pool.acquire() as conn:
                    await migrating.apply(conn)
            app.state.resources = resources.build(config, pool, redis, keypair)
            following = asyncio.create_task(app.state.resources.open_sessions.follow(redis))
            try:
                ready = probes.storage_check(pool, redis)
                async with probes.listening_on(config.api_host, probes_port, ready):
                    if settle:
                        heap.settle()
                    yield
            finally:
                await loops.stopped(following)
        finally:
            await ai_routes.shutdown(app)
            await redis.aclose()
            await pool.close()

    app = fastapi.FastAPI(
        title="StarkMatter API",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json" if config.api_docs else None,
        docs_url="/docs" if config.api_docs else None,
        redoc_url=None,
        # Metrics are Prometheus (core.metrics) and logs structlog; FastAPI's native
        # OpenTelemetry would otherwise look up the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    failing.install(app)
    # Added innermost first: the observing middleware (access log, metrics) sees every
    # answer, the body limit applies to the hot routes too.
    app.add_middleware(hotpath.HotRoutes, routes=hot_routes, routers=COMPONENT_ROUTERS)
    app.add_middleware(limiting.BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(observing.ObservingMiddleware)
    for router in (*COMPONENT_ROUTERS, health.router, auth.router):
        app.include_router(router)
    return app
