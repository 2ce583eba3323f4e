"""AI tests: a loopback Messages API server, the SDK's variables pointed at it, a gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from starkmatter.core import embedded, settings
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


@pytest.fixture
async def gateway(config: settings.Settings) -> AsyncIterator[str]:
    """A real WebSocket gateway on loopback (same Redis as the API); yields its ws:// URL."""
    from starkmatter.gateway import server as gateway_server

    port = embedded.free_port()
    started = asyncio.Event()
    task = asyncio.create_task(gateway_server.run(config, port=port, started=started))
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiting.cancel()
        task.result()
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
