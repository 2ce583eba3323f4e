"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

import fastapi
from fastapi import responses

from starkmatter.api import deps
from starkmatter.core import metrics

router = fastapi.APIRouter(tags=["health"], dependencies=[deps.Public])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(res: deps.ResourcesDep) -> responses.JSONResponse:
    """PostgreSQL and Redis both answer within a second."""
    checks: dict[str, str] = {}

    async def check(name: str, probe: asyncio.Future[object] | object) -> None:
        try:
            await asyncio.wait_for(probe, timeout=1.0)  # type: ignore[arg-type]
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


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> fastapi.Response:
    body, content_type = metrics.exposition()
    return fastapi.Response(body, media_type=content_type)
