"""What a stored bar must be: exactly what its stored trades give, with the indicators of
the stored series of closes up to it."""

from __future__ import annotations

import collections
import json
from typing import Any

import asyncpg

from starkmatter.market import indicators, models


def _div_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2):
        quotient += 1
    return quotient


async def assert_bars_agree_with_ticks(db: asyncpg.Connection[Any]) -> None:
    ticks = await db.fetch("SELECT symbol, ts, price, size FROM market_ticks ORDER BY ts")
    assert ticks
    for interval, step in models.INTERVALS_NS.items():
        bars = {
            (row["symbol"], models.from_datetime(row["ts"])): row
            for row in await db.fetch(
                "SELECT * FROM market_bars WHERE interval = $1 ORDER BY symbol, ts", interval
            )
        }
        groups: dict[tuple[str, int], list[asyncpg.Record]] = collections.defaultdict(list)
        for tick in ticks:
            ts = models.from_datetime(tick["ts"])
            groups[(tick["symbol"], ts - ts % step)].append(tick)
        # Every stored trade is in the stored bar of its interval, and no bar holds a trade
        # that is not stored.
        assert sorted(groups) == sorted(bars), interval
        for key, trades in groups.items():
            bar = bars[key]
            prices = [models.from_decimal(t["price"]) for t in trades]
            sizes = [models.from_decimal(t["size"]) for t in trades]
            first, last = trades[0]["ts"], trades[-1]["ts"]
            volume = sum(sizes)
            notional = sum(p * s for p, s in zip(prices, sizes, strict=True))
            expected = {
                "trades": len(trades),
                "volume": volume,
                "high": max(prices),
                "low": min(prices),
                "vwap": _div_half_even(notional, volume),
                "first_trade_at": first,
                "last_trade_at": last,
            }
            stored = {
                "trades": bar["trades"],
                "volume": models.from_decimal(bar["volume"]),
                "high": models.from_decimal(bar["high"]),
                "low": models.from_decimal(bar["low"]),
                "vwap": models.from_decimal(bar["vwap"]),
                "first_trade_at": bar["first_trade_at"],
                "last_trade_at": bar["last_trade_at"],
            }
            assert stored == expected, (interval, key)
            # Stored times have microseconds: trades in the same one are in no known order.
            opens = {models.from_decimal(t["price"]) for t in trades if t["ts"] == first}
            closes = {models.from_decimal(t["price"]) for t in trades if t["ts"] == last}
            assert models.from_decimal(bar["open"]) in opens, (interval, key)
            assert models.from_decimal(bar["close"]) in closes, (interval, key)


async def assert_indicators_follow_the_stored_closes(db: asyncpg.Connection[Any]) -> int:
    """Each bar's indicators are those of the stored series of closes up to it, as one
    unbroken worker would have computed them; returns how many bars had any."""
    with_values = 0
    for interval in models.INTERVALS_NS:
        series: dict[str, indicators.IndicatorSet] = {}
        for row in await db.fetch(
            """SELECT symbol, ts, close, indicators::text FROM market_bars
               WHERE interval = $1 ORDER BY symbol, ts""",
            interval,
        ):
            indicator_set = series.setdefault(row["symbol"], indicators.IndicatorSet())
            expected = indicator_set.update(models.from_decimal(row["close"]))
            assert json.loads(row["indicators"]) == expected, (interval, row["symbol"], row["ts"])
            with_values += bool(expected)
    return with_values
