"""AI tests: a loopback Messages API server, and the SDK's variables pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.ai import anthropic_server


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
