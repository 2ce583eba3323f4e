"""AI tests: a loopback Messages API server, and the SDK's variables pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from starkmatter.core import settings
from tests.integration.ai import anthropic_server, serving
from tests.support import LiveServer


@pytest.fixture(autouse=True)
def _no_ambient_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the machine has set, each test decides what the analyst sees.
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def anthropic(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[anthropic_server.FakeAnthropic]:
    async with anthropic_server.serve() as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        monkeypatch.setenv("STARKMATTER_AI_BACKOFF_BASE_S", "0.01")
        yield fake


@pytest.fixture
async def api(config: settings.Settings) -> AsyncIterator[LiveServer]:
    from starkmatter.ai import routes

    async with serving.serve(config, [routes.router], [routes.shutdown]) as live:
        yield live
