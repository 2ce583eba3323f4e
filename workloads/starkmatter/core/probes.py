"""``/healthz``, ``/readyz`` and ``/metrics`` for workers that serve no HTTP of their own.

Kubernetes probes and Prometheus need the same three endpoints on every pod; a worker runs
:func:`serve` beside its main loop, on ``STARKMATTER_METRICS_PORT``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette import applications, requests, responses, routing

from starkmatter.core import metrics, serving

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns a map of check name to "ok" or a reason; ready when every value is "ok"."""


def storage_check(pool: Any, redis: Any) -> ReadinessCheck:
    """Ready while PostgreSQL and Redis both answer (the check most workers need)."""

    async def ready() -> dict[str, str]:
        checks = {"postgres": "ok", "redis": "ok"}
        try:
            await pool.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["postgres"] = type(exc).__name__
        try:
            await redis.ping()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["redis"] = type(exc).__name__
        return checks

    return ready


def build_app(ready: ReadinessCheck) -> applications.Starlette:
    async def healthz(_: requests.Request) -> responses.Response:
        return responses.JSONResponse({"status": "ok"})

    async def readyz(_: requests.Request) -> responses.Response:
        try:
            checks = await asyncio.wait_for(ready(), timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            checks = {"readiness": f"failed ({type(exc).__name__})"}
        ok = all(value == "ok" for value in checks.values())
        return responses.JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    async def prometheus(_: requests.Request) -> responses.Response:
        body, content_type = metrics.exposition()
        return responses.Response(body, media_type=content_type)

    return applications.Starlette(
        routes=[
            routing.Route("/healthz", healthz),
            routing.Route("/readyz", readyz),
            routing.Route("/metrics", prometheus),
        ]
    )


async def serve(host: str, port: int, ready: ReadinessCheck) -> None:
    """Serve the probe endpoints until cancelled."""
    instance = serving.server(build_app(ready), host, port)
    try:
        await instance.serve()
    finally:
        instance.should_exit = True
