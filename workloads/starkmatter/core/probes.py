"""``/healthz``, ``/readyz`` and ``/metrics`` on a listener of their own.

Kubernetes probes and Prometheus need the same three endpoints on every pod, on
``STARKMATTER_METRICS_PORT``: a worker runs :func:`serve` beside its main loop, and a
process with a public port (the API, the gateway) runs :func:`listening` beside it, so that
its metrics are never served where the Ingress or clients reach it. One listener per
process: the registry it serves is the process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette import applications, requests, responses, routing

from starkmatter.core import logs, metrics, serving

log = logs.get_logger(__name__)

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
            async with asyncio.timeout(2.0):
                checks = await ready()
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


@contextlib.asynccontextmanager
async def listening(host: str, port: int, ready: ReadinessCheck) -> AsyncIterator[int]:
    """Serve the probe endpoints while the block runs; yields the bound port.

    The socket is bound before the block starts, so a port already in use raises
    ``OSError`` here, in the caller, rather than uvicorn's ``sys.exit`` from a task."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # "::" serves IPv4 too, as the public port's uvicorn does (scrapers may use either).
    dual = host == "::" and socket.has_dualstack_ipv6()
    sock = socket.create_server((host, port), family=family, dualstack_ipv6=dual)
    instance = serving.server(build_app(ready), host, port)
    task = asyncio.create_task(instance.serve(sockets=[sock]), name="probes")
    try:
        while not instance.started:
            if task.done():
                task.result()
                raise RuntimeError("the probe listener stopped before it started")
            await asyncio.sleep(0.01)
        bound = int(sock.getsockname()[1])
        log.info("probes.listening", host=host, port=bound)
        yield bound
    finally:
        instance.should_exit = True
        await task
        sock.close()


def listening_on(
    host: str, port: int | None, ready: ReadinessCheck
) -> contextlib.AbstractAsyncContextManager[int | None]:
    """:func:`listening` when ``port`` is given, else nothing: dev mode runs every service in
    one process, whose one registry its API's probe listener serves."""
    return contextlib.nullcontext() if port is None else listening(host, port, ready)
