"""A task that runs Redis commands stops when it is cancelled, whatever moment the cancel
lands: redis-py's own send (``asyncio.wait_for`` on Python 3.11) dropped a cancel landing
as a write completed, and a service loop stopped that way ran on (a feed's stop hung)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from starkmatter.core import redis_client, settings

ATTEMPTS = 300


async def _commands(redis: aioredis.Redis) -> None:
    while True:
        await redis.set(b"k", b"v")


async def test_a_loop_of_commands_always_stops_when_cancelled(config: settings.Settings) -> None:
    redis = redis_client.create_redis(config)
    lost = 0
    try:
        for attempt in range(ATTEMPTS):
            task = asyncio.create_task(_commands(redis))
            # Cancelled after a varying number of loop passes: some land mid-send.
            for _ in range(1 + attempt % 7):
                await asyncio.sleep(0)
            task.cancel()
            for _ in range(20):
                await asyncio.sleep(0)
                if task.done():
                    break
            else:
                lost += 1
                while not task.done():  # cancelled again until it ends (each may be lost)
                    task.cancel()
                    await asyncio.sleep(0.001)
            with pytest.raises(asyncio.CancelledError):
                await task
        assert lost == 0, f"{lost} of {ATTEMPTS} cancels were lost: the loop ran on"
    finally:
        await redis.aclose()
