"""Liveness and readiness on the public port, where the Deployment's probes ask.

``/metrics`` is not here: the process serves it on its probe listener
(``core.probes.listening``, ``STARKMATTER_METRICS_PORT``), which no Ingress reaches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import fastapi
from fastapi import responses

from starkmatter.api import deps

router = fastapi.APIRouter(tags=["health"], dependencies=[deps.Public])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(res: deps.ResourcesDep) -> responses.JSONResponse:
    """PostgreSQL and Redis both answer within a second."""
    checks: dict[str, str] = {}

    async def check(name: str, probe: Awaitable[object]) -> None:
        try:
            async with asyncio.timeout(1.0):
                await probe
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            checks[name] = f"unreachable ({type(exc).__name__})"

    await asyncio.gather(
        check("postgres", res.pool.fetchval("SELECT 1")),
        check("redis", res.redis.ping()),
    )
    ready = all(v == "ok" for v in checks.values())
    return responses.JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
