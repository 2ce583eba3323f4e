"""Health, readiness, metrics, request ids and the one error shape."""

from __future__ import annotations

import httpx

from starkmatter.core import embedded, settings
from tests.support import LiveServer, serve_api, sign_up


async def test_healthz_and_readyz_answer_when_everything_is_up(api: LiveServer) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_readyz_is_503_and_names_redis_when_redis_is_unreachable(
    config: settings.Settings,
) -> None:
    dead = f"redis://127.0.0.1:{embedded.free_port()}/0"
    async with serve_api(config.model_copy(update={"redis_url": dead})) as live:
        ready = await live.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["postgres"] == "ok"
    assert ready.json()["checks"]["redis"].startswith("unreachable")


async def test_metrics_expose_latency_per_route_template_db_time_and_errors(
    config: settings.Settings,
) -> None:
    probes_port = embedded.free_port()
    async with serve_api(config, probes_port=probes_port) as api:
        user = await sign_up(api.client)
        await api.client.get("/auth/me", headers=user.headers)
        await api.client.get("/auth/me")
        async with httpx.AsyncClient(timeout=10) as probes:
            text = (await probes.get(f"http://127.0.0.1:{probes_port}/metrics")).text
    assert 'starkmatter_http_request_duration_seconds_count{method="GET",route="/auth/me"' in text
    assert "starkmatter_db_query_duration_seconds_count" in text
    assert 'starkmatter_http_errors_total{code="unauthenticated",route="/auth/me"}' in text
    assert "starkmatter_cache_requests_total" in text


async def test_every_response_carries_a_request_id_and_errors_repeat_it(api: LiveServer) -> None:
    response = await api.client.get("/auth/me", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    assert response.json()["error"]["request_id"] == "abc123"


async def test_unknown_route_gets_the_json_error_shape(api: LiveServer) -> None:
    response = await api.client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_malformed_json_body_gets_a_validation_error_not_a_crash(api: LiveServer) -> None:
    response = await api.client.post(
        "/auth/login", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
