"""The API's public port (the one the Ingress routes to) serves no metrics, schema or docs:
Prometheus metrics are on the probe listener (``STARKMATTER_METRICS_PORT``) only, and
``/docs`` and ``/openapi.json`` exist only where ``STARKMATTER_API_DOCS`` turns them on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from starkmatter.core import embedded, probes, settings
from tests.support import command_env, running_command, serve_api, sign_up, until_healthy

OPERATIONAL_PATHS = ("/metrics", "/docs", "/openapi.json")


async def test_metrics_docs_and_openapi_are_not_found_on_the_public_port(
    config: settings.Settings,
) -> None:
    async with serve_api(config, probes_port=embedded.free_port()) as api:
        for path in OPERATIONAL_PATHS:
            response = await api.client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found", path
        # the probes the Deployment asks on this port stay
        assert (await api.client.get("/healthz")).status_code == 200


async def test_the_probe_listener_serves_the_metrics_of_requests_to_the_public_app(
    config: settings.Settings,
) -> None:
    probes_port = embedded.free_port()
    async with (
        serve_api(config, probes_port=probes_port) as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{probes_port}", timeout=10) as probes,
    ):
        user = await sign_up(api.client)
        assert (await api.client.get("/auth/me", headers=user.headers)).status_code == 200
        response = await probes.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert (
            'starkmatter_http_request_duration_seconds_count{method="GET",route="/auth/me",'
            'status="200"}' in response.text
        )
        assert (await probes.get("/healthz")).json() == {"status": "ok"}
        ready = await probes.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_docs_and_openapi_are_served_when_the_setting_turns_them_on(
    config: settings.Settings,
) -> None:
    async with serve_api(config.model_copy(update={"api_docs": True})) as api:
        schema = await api.client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/orders" in schema.json()["paths"]
        assert "/metrics" not in schema.json()["paths"]
        docs = await api.client.get("/docs")
        assert docs.status_code == 200
        assert "/openapi.json" in docs.text
        assert (await api.client.get("/metrics")).status_code == 404


@contextlib.asynccontextmanager
async def api_command(
    config: settings.Settings, log_path: Path, port: int, metrics_port: int
) -> AsyncIterator[None]:
    """``starkmatter api`` as a Deployment runs it (prod mode), until it answers /healthz."""
    env = command_env(
        config, STARKMATTER_API_PORT=str(port), STARKMATTER_METRICS_PORT=str(metrics_port)
    )
    async with (
        running_command(["api"], env, log_path) as proc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
    ):
        await until_healthy(client, proc, log_path)
        yield


@pytest.mark.timeout(90)
async def test_the_api_command_serves_metrics_on_the_metrics_port_only(
    config: settings.Settings, tmp_path: Path
) -> None:
    port, metrics_port = embedded.free_port(), embedded.free_port()
    async with (
        api_command(config, tmp_path / "api.log", port, metrics_port),
        httpx.AsyncClient(timeout=10) as http,
    ):
        public = f"http://127.0.0.1:{port}"
        assert (await http.get(f"{public}/auth/me")).status_code == 401
        for path in OPERATIONAL_PATHS:
            assert (await http.get(public + path)).status_code == 404, path
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'starkmatter_http_errors_total{code="unauthenticated",route="/auth/me"}' in text


async def test_a_probe_listener_on_every_ipv6_address_answers_over_ipv4_too() -> None:
    """As uvicorn's own "::" bind does: a scraper may reach the pod over either."""

    async def ready() -> dict[str, str]:
        return {"self": "ok"}

    async with (
        probes.listening("::", 0, ready) as port,
        httpx.AsyncClient(timeout=5) as http,
    ):
        for address in ("127.0.0.1", "[::1]"):
            answer = await http.get(f"http://{address}:{port}/readyz")
            assert answer.status_code == 200, address
