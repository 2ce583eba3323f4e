"""News tests: the bundled sample feeds served over loopback HTTP; the API with /news."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from starkmatter.core import embedded, settings
from starkmatter.news import sampleserver
from tests.integration.ai import serving
from tests.support import LiveServer


@pytest.fixture
async def api(config: settings.Settings) -> AsyncIterator[LiveServer]:
    from starkmatter.news import routes

    async with serving.serve(config, [routes.router]) as live:
        yield live


@pytest.fixture
def feed_bodies() -> dict[str, bytes]:
    """Change an entry to change what the sample server serves (new ETag and all)."""
    return {}


@pytest.fixture
async def feeds(feed_bodies: dict[str, bytes]) -> AsyncIterator[str]:
    async with sampleserver.serve(port=embedded.free_port(), overrides=feed_bodies) as url:
        yield url
