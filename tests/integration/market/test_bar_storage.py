"""Bars stored in parts across a worker restart, and replays, on real PostgreSQL."""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import pytest

from starkmatter.market import bars, models, storing

pytestmark = pytest.mark.timeout(60)

S = 1_000_000_000
P = models.SCALE
MINUTE = 1_700_000_040 * S  # a minute boundary
TRADES = [(MINUTE + i * 2 * S, (100 + random.Random(i).randint(-50, 50)) * P // 10, (i + 1) * P)
          for i in range(30)]  # fmt: skip


def _bar(trades: list[tuple[int, int, int]]) -> models.Bar:
    """The 1-minute bar a fresh worker builds from these trades alone."""
    builder = bars.BarBuilder("1m")
    for ts, price, size in trades:
        assert builder.add("AAPL", ts, price, size) is None
    (bar,) = builder.close_due(2**62)
    return bar


async def _stored(db: asyncpg.Connection[Any]) -> dict[str, Any]:
    row = await db.fetchrow(
        """SELECT open, high, low, close, volume, vwap, trades FROM market_bars
           WHERE symbol = 'AAPL' AND interval = '1m'"""
    )
    assert row is not None
    return dict(row)


def _expected(bar: models.Bar) -> dict[str, Any]:
    d = models.to_decimal
    return {"open": d(bar.open), "high": d(bar.high), "low": d(bar.low), "close": d(bar.close),
            "volume": d(bar.volume), "vwap": d(bar.vwap), "trades": bar.trades}  # fmt: skip


async def test_a_bar_stored_in_two_parts_across_a_restart_holds_every_trade(
    db: asyncpg.Connection[Any],
) -> None:
    whole = _bar(TRADES)
    await storing.upsert_bars(db, [_bar(TRADES[:12])])  # stored as the worker stopped
    await storing.upsert_bars(db, [_bar(TRADES[12:])])  # the restarted worker's part
    assert await _stored(db) == _expected(whole)


async def test_the_earlier_part_stored_last_merges_the_same_way(
    db: asyncpg.Connection[Any],
) -> None:
    await storing.upsert_bars(db, [_bar(TRADES[20:])])
    await storing.upsert_bars(db, [_bar(TRADES[:20])])
    assert await _stored(db) == _expected(_bar(TRADES))


async def test_a_replay_of_the_whole_input_leaves_the_same_row(
    db: asyncpg.Connection[Any],
) -> None:
    for _ in range(2):
        await storing.upsert_bars(db, [_bar(TRADES)])
    assert await _stored(db) == _expected(_bar(TRADES))
    await storing.upsert_bars(db, [_bar(TRADES[:10])])
    await storing.upsert_bars(db, [_bar(TRADES[10:])])
    # Parts inside the stored span are a late partial replay: the complete bar stays.
    assert await _stored(db) == _expected(_bar(TRADES))


async def test_a_whole_bar_replaces_a_partial_one(db: asyncpg.Connection[Any]) -> None:
    await storing.upsert_bars(db, [_bar(TRADES[5:15])])
    await storing.upsert_bars(db, [_bar(TRADES)])
    assert await _stored(db) == _expected(_bar(TRADES))


async def test_a_whole_bar_replaces_a_stored_part_it_does_not_cover(
    db: asyncpg.Connection[Any],
) -> None:
    # The stored bar holds trades that never reached market_ticks (a worker killed between
    # storing a bar and storing all its trades); its successor rebuilds the bar from the
    # stored trades only, and that bar is the truth even though its span is narrower.
    await storing.upsert_bars(db, [_bar(TRADES)])
    rebuilt = _bar(TRADES[3:27])
    rebuilt.whole = True
    await storing.upsert_bars(db, [rebuilt])
    assert await _stored(db) == _expected(rebuilt)


async def test_a_part_that_is_not_whole_does_not_shrink_a_stored_bar(
    db: asyncpg.Connection[Any],
) -> None:
    await storing.upsert_bars(db, [_bar(TRADES)])
    await storing.upsert_bars(db, [_bar(TRADES[3:27])])
    assert await _stored(db) == _expected(_bar(TRADES))
