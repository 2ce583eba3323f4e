"""A trade that arrives after its bar has closed, on real PostgreSQL and Redis: it is
stored, and so its bar is rebuilt to hold it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.ingest import pipeline
from starkmatter.ingest.providers import base
from starkmatter.market import validation
from tests.integration.market import bar_checks

pytestmark = pytest.mark.timeout(60)

S = 1_000_000_000
MINUTE = 1_700_000_040 * S  # a minute boundary, long past


def _trade(seconds: float, price: str, size: int, trade_id: str) -> base.Incoming:
    return base.Incoming({"type": "trade", "symbol": "AAPL", "ts": MINUTE + int(seconds * S),
                          "price": price, "size": size, "trade_id": trade_id})  # fmt: skip


async def test_a_late_trade_is_in_its_bar_after_the_bar_has_closed(
    pool: asyncpg.Pool, redis: aioredis.Redis, db: asyncpg.Connection[Any]
) -> None:
    rules = validation.Rules(symbols=frozenset({"AAPL"}), max_staleness_s=None)
    pipe = pipeline.Pipeline("late", validation.Validator(rules), pool, redis)
    task = asyncio.create_task(pipe.run())
    try:
        await pipe.submit([_trade(0.2, "100.10", 10, "a"), _trade(0.4, "100.30", 20, "b")])
        # The next second's trade closes the first 1-second bar, and it is stored.
        await pipe.submit([_trade(1.1, "100.20", 10, "c")])
        await pipe.drain()
        assert await db.fetchval("SELECT trades FROM market_bars WHERE interval = '1s'") == 2
        # A trade of that first second arrives now: the latest and the highest of it.
        await pipe.submit([_trade(0.9, "100.90", 30, "d")])
        await pipe.drain(close_bars=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert pipe.rejected == 0
    await bar_checks.assert_bars_agree_with_ticks(db)
    assert await db.fetchval(
        "SELECT array_agg(trades ORDER BY ts) FROM market_bars WHERE interval = '1s'"
    ) == [3, 1]
