"""Redis access: one asyncio client per process (connection pool inside)."""

from __future__ import annotations

import redis.asyncio as aioredis

from starkmatter.core import settings


def create_redis(config: settings.Settings, *, url: str | None = None) -> aioredis.Redis:
    dsn = url or config.redis_url
    if dsn is None:
        raise settings.SettingsError("STARKMATTER_REDIS_URL is not set")
    return aioredis.Redis.from_url(
        dsn,
        decode_responses=False,
        health_check_interval=30,
        socket_connect_timeout=5,
        client_name=f"starkmatter-{config.service_name}",
    )
