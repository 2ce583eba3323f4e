"""Alerts tests: the API with /alerts, and an evaluator over the test's PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from starkmatter.core import db as db_module
from starkmatter.core import settings
from tests.integration.ai import serving
from tests.support import LiveServer


@pytest.fixture
async def api(config: settings.Settings) -> AsyncIterator[LiveServer]:
    from starkmatter.alerts import routes

    async with serving.serve(config, [routes.router]) as live:
        yield live


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, init=db_module.init_connection
    )
    yield pool
    await pool.close()
