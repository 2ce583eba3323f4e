"""News tests: the bundled sample feeds served over loopback HTTP (the API is the root fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from starkmatter.core import embedded
from starkmatter.news import sampleserver


@pytest.fixture
def feed_bodies() -> dict[str, bytes]:
    """Change an entry to change what the sample server serves (new ETag and all)."""
    return {}


@pytest.fixture
async def feeds(feed_bodies: dict[str, bytes]) -> AsyncIterator[str]:
    async with sampleserver.serve(port=embedded.free_port(), overrides=feed_bodies) as url:
        yield url
