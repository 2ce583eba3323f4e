"""A pipeline started after a killed one, on real PostgreSQL and Redis: the bars it stores
hold the trades its predecessor stored, once each, even when the provider sends them again."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.ingest import pipeline
from starkmatter.ingest.providers import base
from starkmatter.market import models, validation
from tests.integration.market import bar_checks

pytestmark = pytest.mark.timeout(60)

S = 1_000_000_000
MINUTE = 1_700_000_040 * S  # a minute boundary, long past: no clock closes its bars early


def _trades(symbol: str, first: int, count: int) -> list[base.Incoming]:
    """One trade every 1.5 s, so the 1-second bars close as the minute goes on."""
    return [
        base.Incoming({"type": "trade", "symbol": symbol, "ts": MINUTE + i * 3 * S // 2,
                       "price": f"{100 + (i * 37) % 5}.{(i * 13) % 100:02d}",
                       "size": 10 * (1 + i % 7), "trade_id": f"{symbol}-{i}"})
        for i in range(first, first + count)
    ]  # fmt: skip


def _pipeline(pool: asyncpg.Pool, redis: aioredis.Redis) -> pipeline.Pipeline:
    # A backfill's rules: the trades are old on purpose.
    rules = validation.Rules(symbols=frozenset({"AAPL", "MSFT"}), max_staleness_s=None)
    return pipeline.Pipeline("restart", validation.Validator(rules), pool, redis)


async def _ingest(pipe: pipeline.Pipeline, batches: list[list[base.Incoming]], *,
                  close_bars: bool) -> None:  # fmt: skip
    task = asyncio.create_task(pipe.run())
    try:
        for batch in batches:
            await pipe.submit(batch)
        await pipe.drain(close_bars=close_bars)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("symbols", [("AAPL", "MSFT"), ()], ids=["listed", "any-symbol feed"])
async def test_trades_sent_again_after_a_kill_are_counted_once_in_the_rebuilt_bars(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    db: asyncpg.Connection[Any],
    symbols: tuple[str, ...],
) -> None:
    # The first worker stores its ticks and closed bars, then dies with its bars open: a
    # drain that does not close them leaves exactly what a SIGKILL after a flush leaves.
    before = [_trades("AAPL", 0, 20), _trades("MSFT", 0, 20)]
    await _ingest(_pipeline(pool, redis), before, close_bars=False)
    assert not await db.fetchval("SELECT count(*) FROM market_bars WHERE interval = '1m'")

    # Its successor's provider sends part of the same trades again, then new ones.
    restarted = _pipeline(pool, redis)
    await restarted.reseed(symbols)
    after = [_trades("AAPL", 5, 25), _trades("MSFT", 10, 20)]
    await _ingest(restarted, after, close_bars=True)

    assert restarted.rejected == 0
    assert restarted.resent == 15 + 10
    assert await db.fetchval("SELECT count(*) FROM market_ticks") == 30 + 30
    assert await db.fetchval(
        "SELECT array_agg(trades ORDER BY symbol) FROM market_bars WHERE interval = '1m'"
    ) == [30, 30]
    await bar_checks.assert_bars_agree_with_ticks(db)
    await bar_checks.assert_indicators_follow_the_stored_closes(db)


async def test_a_restart_after_a_clean_stop_continues_the_indicators(
    pool: asyncpg.Pool, redis: aioredis.Redis, db: asyncpg.Connection[Any]
) -> None:
    # 40 one-second bars: enough for every indicator but the MACD signal to have a value.
    await _ingest(_pipeline(pool, redis), [_trades("AAPL", 0, 40)], close_bars=True)
    restarted = _pipeline(pool, redis)
    await restarted.reseed(["AAPL"])
    await _ingest(restarted, [_trades("AAPL", 40, 10)], close_bars=True)
    assert await bar_checks.assert_indicators_follow_the_stored_closes(db) > 0
    last = await db.fetchval(
        """SELECT indicators->>'sma_20' FROM market_bars
           WHERE interval = '1s' ORDER BY ts DESC LIMIT 1"""
    )
    assert last is not None
    assert models.to_fixed(last) > 0
