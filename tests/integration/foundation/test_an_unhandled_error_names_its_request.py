"""A request that fails unexpectedly gets a 500 that names the request, in the body and in
the ``x-request-id`` header, and the error log line names it too: the body tells the client
to quote it."""

from __future__ import annotations

import pytest
import structlog

from starkmatter.core import settings
from tests.support import serve_api

pytestmark = pytest.mark.timeout(60)


async def broken() -> None:
    raise RuntimeError("a bug")


async def test_an_unhandled_error_answers_500_with_the_request_id(
    config: settings.Settings,
) -> None:
    async with serve_api(config, extra_routes={"/broken": broken}) as api:
        with structlog.testing.capture_logs() as logged:
            r = await api.client.get("/broken", headers={"x-request-id": "req-42"})
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "internal"
    assert "a bug" not in r.text
    assert error["request_id"] == "req-42"
    assert r.headers["x-request-id"] == "req-42"
    unhandled = [e for e in logged if e["event"] == "http.unhandled"]
    assert [e["request_id"] for e in unhandled] == ["req-42"]
