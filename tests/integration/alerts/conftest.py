"""Alerts tests: an evaluator over the test's PostgreSQL and Redis (the API is the root fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from starkmatter.core import db as db_module


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, init=db_module.init_connection
    )
    yield pool
    await pool.close()
