"""``starkmatter news --source NAME [--once]``: poll one NewsSource until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal as signals

from starkmatter.core import db, migrating, redis_client, settings
from starkmatter.news import config, pipeline, sampleserver


async def main(source_name: str, *, once: bool = False) -> int:
    """Read the spec from ``STARKMATTER_NEWS_CONFIG`` and poll; returns an exit status."""
    cfg = settings.get_settings()
    source = config.load(source_name)
    return await run(cfg, source, once=once)


async def run(cfg: settings.Settings, source: config.NewsSource, *, once: bool = False) -> int:
    pool = await db.create_pool(cfg)
    redis = redis_client.create_redis(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signals.SIGTERM, signals.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with pool.acquire() as conn:
            await migrating.apply(conn)
        await pipeline.run(pool, redis, source, once=once, stop=stop)
        return 0
    finally:
        await redis.aclose()
        await pool.close()


async def run_dev(
    cfg: settings.Settings, *, port: int = 8090, stop: asyncio.Event | None = None
) -> None:
    """Dev mode: serve the bundled sample feeds over HTTP and poll all three every minute."""
    stop = stop or asyncio.Event()
    pool = await db.create_pool(cfg)
    redis = redis_client.create_redis(cfg)
    try:
        async with sampleserver.serve(port=port) as base_url:
            sources = [
                s.model_copy(update={"poll_interval_s": 60.0})
                for s in sampleserver.sources(base_url)
            ]
            await asyncio.gather(*(pipeline.run(pool, redis, s, stop=stop) for s in sources))
    finally:
        await redis.aclose()
        await pool.close()
