"""Reading back what a dead worker stored, so that its successor's bars hold it.

A worker that stops cleanly stores its open bars as parts. One that is killed (SIGKILL, an
OOM kill, a lost node) leaves ticks in ``market_ticks`` that no stored bar holds: its open
bars lived only in memory, and a bar that had just closed may still have been in its write
buffer. Its successor re-reads, per symbol and interval, every stored tick from the start
of the latest stored bar on and rebuilds those bars from them (the ingest pipeline's
``reseed``), so that stored bars and stored ticks agree again.

Starting at the latest stored bar is enough because the pipeline stores the bars of one
symbol and interval in the order they close: every earlier bar is stored. That bar itself
is rebuilt too, because the trades it was built from may not all have been stored.

Closes of the stored bars before that point come back as well: the indicators continue
over the stored series instead of starting from nothing.

Like bar building itself, this assumes a symbol is ingested by one feed: the re-read takes
every stored tick of the symbol, and its bars replace the stored ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from starkmatter.market import bars, models


@dataclasses.dataclass(frozen=True, slots=True)
class StoredTrade:
    ts_ns: int
    """Microsecond precision, as stored."""
    price: int
    size: int
    uid: int
    """The stored identity hash (see ``storing.trade_uid``): with ``ts_ns // 1000`` it tells
    a trade the provider sends again from a new one."""


@dataclasses.dataclass
class Seed:
    """What one symbol's bars are rebuilt from."""

    symbol: str
    starts: dict[str, int]
    """Per interval, the start (ns) of the first bar to rebuild: trades before it are
    already in stored bars of that interval."""
    closes: dict[str, list[int]]
    """Per interval, closes of the stored bars before ``starts``, oldest first."""
    trades: list[StoredTrade]
    """Stored trades from the earliest of ``starts`` on, in time order."""


# The symbols that have ticks at all, by a skip scan of the (symbol, ts, uid) index: one
# probe per symbol (and partition) instead of reading every row.
_SYMBOLS_WITH_TICKS = """
WITH RECURSIVE s(symbol) AS (
    (SELECT symbol FROM market_ticks ORDER BY symbol LIMIT 1)
    UNION ALL
    SELECT (SELECT t.symbol FROM market_ticks t WHERE t.symbol > s.symbol
            ORDER BY t.symbol LIMIT 1)
    FROM s WHERE s.symbol IS NOT NULL
)
SELECT symbol FROM s WHERE symbol IS NOT NULL
"""


async def symbols_with_ticks(conn: asyncpg.Connection[Any]) -> list[str]:
    """Every symbol with a stored tick: what a feed without a symbol list re-reads."""
    return [row["symbol"] for row in await conn.fetch(_SYMBOLS_WITH_TICKS)]


def _floor(ts_ns: int, step: int) -> int:
    return ts_ns - ts_ns % step


async def read_seed(
    conn: asyncpg.Connection[Any],
    symbol: str,
    intervals: Mapping[str, int],
    *,
    horizon_ns: int,
    history: int,
) -> Seed | None:
    """What ``symbol``'s bars of each interval (name -> length in ns) are rebuilt from.

    ``horizon_ns`` bounds the re-read: no tick more than that before the symbol's newest
    one is read (they matter only when no bar was ever stored after them). ``history`` is
    how many closes per interval come back for the indicators. ``None`` when the symbol
    has no stored tick.
    """
    newest = await conn.fetchval("SELECT max(ts) FROM market_ticks WHERE symbol = $1", symbol)
    if newest is None:
        return None
    newest_ns = models.from_datetime(newest)
    starts: dict[str, int] = {}
    closes: dict[str, list[int]] = {}
    for interval, step in intervals.items():
        floor = _floor(newest_ns - horizon_ns, step)
        latest = await conn.fetchrow(
            """SELECT ts, first_trade_at IS NULL AS vendor FROM market_bars
               WHERE symbol = $1 AND interval = $2 ORDER BY ts DESC LIMIT 1""",
            symbol,
            interval,
        )
        if latest is None:
            start = floor
        else:
            start = models.from_datetime(latest["ts"])
            if latest["vendor"]:
                # A vendor's bar came whole, not from ticks: rebuilding it would lose it.
                start += step
            start = max(start, floor)
        starts[interval] = start
        rows = await conn.fetch(
            """SELECT close::text FROM market_bars
               WHERE symbol = $1 AND interval = $2 AND ts < $3 ORDER BY ts DESC LIMIT $4""",
            symbol,
            interval,
            models.to_datetime(start),
            history,
        )
        closes[interval] = [models.to_fixed(row["close"]) for row in reversed(rows)]
    rows = await conn.fetch(
        # Microseconds since the epoch as an exact integer and prices as text: no float,
        # and no datetime or Decimal object per row.
        """SELECT (extract(epoch FROM ts) * 1000000)::bigint AS us, price::text, size::text, uid
           FROM market_ticks WHERE symbol = $1 AND ts >= $2 ORDER BY ts, uid""",
        symbol,
        models.to_datetime(min(starts.values())),
    )
    to_fixed = models.to_fixed
    trades = [
        StoredTrade(row["us"] * 1000, to_fixed(row["price"]), to_fixed(row["size"]), row["uid"])
        for row in rows
    ]
    return Seed(symbol, starts, closes, trades)


async def rebuild_bar(
    conn: asyncpg.Connection[Any], symbol: str, interval: str, start_ns: int
) -> models.Bar | None:
    """The whole bar of ``symbol`` for the interval starting at ``start_ns``, from its stored
    trades: for a trade that arrived after its bar had closed (and is stored by now).

    The stored indicators are kept: they were published at the bar's close, and the ones of
    later bars were computed from this bar's close as it was then.
    """
    step = models.INTERVALS_NS[interval]
    rows = await conn.fetch(
        """SELECT (extract(epoch FROM ts) * 1000000)::bigint AS us, price::text, size::text
           FROM market_ticks WHERE symbol = $1 AND ts >= $2 AND ts < $3 ORDER BY ts, uid""",
        symbol,
        models.to_datetime(start_ns),
        models.to_datetime(start_ns + step),
    )
    if not rows:
        return None
    builder = bars.BarBuilder(interval)
    for row in rows:
        builder.seed(symbol, row["us"] * 1000, models.to_fixed(row["price"]),
                     models.to_fixed(row["size"]))  # fmt: skip
    (bar,) = builder.close_due(2**62)
    stored = await conn.fetchval(
        "SELECT indicators::text FROM market_bars WHERE symbol = $1 AND interval = $2 AND ts = $3",
        symbol,
        interval,
        models.to_datetime(start_ns),
    )
    bar.indicators = json.loads(stored) if stored else {}
    return bar


async def read_seeds(
    conn: asyncpg.Connection[Any],
    symbols: Sequence[str],
    intervals: Mapping[str, int],
    *,
    horizon_ns: int,
    history: int,
) -> list[Seed]:
    seeds = []
    for symbol in symbols:
        seed = await read_seed(conn, symbol, intervals, horizon_ns=horizon_ns, history=history)
        if seed is not None:
            seeds.append(seed)
    return seeds
