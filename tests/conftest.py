"""Real servers for every test tier: embedded PostgreSQL and Redis, a live API on loopback.

The servers start once per session. Each test gets its own database, cloned from a
template that already has every migration applied (fast, and fully isolated), and an
empty Redis.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.core import db as db_module
from starkmatter.core import embedded, migrating, settings
from starkmatter.core.auth import keys
from tests.support import LiveServer, serve_api

pytest_plugins = ["tests.watchdog"]

TEMPLATE_DB = "starkmatter_template"
_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="starkmatter-tests-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def pg_server(work_dir: Path) -> Iterator[embedded.EmbeddedPostgres]:
    server = embedded.EmbeddedPostgres(work_dir / "postgres", durable=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(work_dir: Path) -> Iterator[embedded.EmbeddedRedis]:
    server = embedded.EmbeddedRedis(work_dir / "redis", durable=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def template_database(pg_server: embedded.EmbeddedPostgres) -> str:
    url = await pg_server.ensure_database(TEMPLATE_DB)
    conn = await asyncpg.connect(url)
    try:
        await migrating.apply(conn)
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest.fixture
async def database_url(
    pg_server: embedded.EmbeddedPostgres, template_database: str
) -> AsyncIterator[str]:
    name = f"test_{os.getpid()}_{next(_db_numbers)}"
    admin = await asyncpg.connect(pg_server.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield pg_server.url_for(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def redis_url(redis_server: embedded.EmbeddedRedis) -> str:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    return redis_server.url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await asyncpg.connect(database_url)
    await db_module.init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test's database, with the platform's connection set-up."""
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=4, init=db_module.init_connection
    )
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def jwt_private_pem() -> str:
    return keys.generate_private_pem()


@pytest.fixture
def config(
    database_url: str, redis_url: str, jwt_private_pem: str, work_dir: Path
) -> settings.Settings:
    return settings.load(
        env="dev",
        database_url=database_url,
        redis_url=redis_url,
        jwt_private_key=jwt_private_pem,
        data_dir=work_dir / "data",
        db_pool_min=1,
        db_pool_max=10,
        log_json=True,
    )


@pytest.fixture
async def api(config: settings.Settings) -> AsyncIterator[LiveServer]:
    async with serve_api(config) as live:
        yield live
