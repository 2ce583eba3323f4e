"""Storing market data in PostgreSQL: binary COPY of ticks and quotes, bar upserts,
dead letters, and day partitions.

The hot path never builds ``Decimal`` or ``datetime`` objects: rows are encoded straight
from fixed-point integers into PostgreSQL's binary COPY format (numeric digits in base
10,000, timestamps as microseconds since 2000-01-01), with per-value caches because
prices repeat. A batch goes in with one plain COPY; only when it collides with rows
already stored (a replay, a reconnect overlap) does it take the slower path through a
temporary table and ``INSERT ... ON CONFLICT DO NOTHING``, so nothing is stored twice.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from starkmatter.market import models

_PG_EPOCH_US = 946_684_800_000_000
_NS_PER_DAY = 86_400 * 1_000_000_000
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_TICK_PREFIX = struct.pack("!hi", 5, 8)
_QUOTE_PREFIX = struct.pack("!hi", 7, 8)
_pack_q = struct.Struct("!q").pack
_pack_uid = struct.Struct("!iq").pack

TICK_COLUMNS = ("ts", "symbol", "price", "size", "uid")
QUOTE_COLUMNS = ("ts", "symbol", "bid", "ask", "bid_size", "ask_size", "uid")

_NUMERIC_CACHE: dict[int, bytes] = {}
_SYMBOL_CACHE: dict[str, bytes] = {}


def encode_numeric(fixed: int) -> bytes:
    """Length-prefixed binary ``numeric`` for a fixed-point value (scale 8)."""
    encoded = _NUMERIC_CACHE.get(fixed)
    if encoded is not None:
        return encoded
    sign = 0x4000 if fixed < 0 else 0
    whole, frac = divmod(abs(fixed), models.SCALE)
    groups: list[int] = []
    while whole:
        whole, group = divmod(whole, 10_000)
        groups.append(group)
    groups.reverse()
    weight = len(groups) - 1
    digits = [*groups, frac // 10_000, frac % 10_000]
    while digits and digits[-1] == 0:
        digits.pop()
    while digits and digits[0] == 0:
        digits.pop(0)
        weight -= 1
    if not digits:
        weight, sign = 0, 0
    body = struct.pack(f"!hhHH{len(digits)}H", len(digits), weight, sign, models.DECIMALS, *digits)
    encoded = struct.pack("!i", len(body)) + body
    if len(_NUMERIC_CACHE) > 500_000:
        _NUMERIC_CACHE.clear()
    _NUMERIC_CACHE[fixed] = encoded
    return encoded


def _symbol(symbol: str) -> bytes:
    encoded = _SYMBOL_CACHE.get(symbol)
    if encoded is None:
        raw = symbol.encode()
        encoded = _SYMBOL_CACHE[symbol] = struct.pack("!i", len(raw)) + raw
    return encoded


def trade_uid(trade: models.Trade) -> int:
    identity = trade.trade_id if trade.trade_id is not None else f"{trade.price}:{trade.size}"
    return zlib.crc32(f"{trade.ts_ns % 1000}|{identity}".encode())


def quote_uid(quote: models.Quote) -> int:
    return zlib.crc32(
        f"{quote.ts_ns % 1000}|{quote.bid}:{quote.ask}:{quote.bid_size}:{quote.ask_size}".encode()
    )


def encode_trades(trades: Sequence[models.Trade]) -> bytes:
    """One binary COPY stream (header, rows, trailer) for ``market_ticks``."""
    numeric = encode_numeric
    parts = [_HEADER]
    append = parts.append
    for t in trades:
        append(_TICK_PREFIX)
        append(_pack_q(t.ts_ns // 1000 - _PG_EPOCH_US))
        append(_symbol(t.symbol))
        append(numeric(t.price))
        append(numeric(t.size))
        append(_pack_uid(8, trade_uid(t)))
    append(_TRAILER)
    return b"".join(parts)


def encode_quotes(quotes: Sequence[models.Quote]) -> bytes:
    """One binary COPY stream for ``market_quotes``."""
    numeric = encode_numeric
    parts = [_HEADER]
    append = parts.append
    for q in quotes:
        append(_QUOTE_PREFIX)
        append(_pack_q(q.ts_ns // 1000 - _PG_EPOCH_US))
        append(_symbol(q.symbol))
        append(numeric(q.bid))
        append(numeric(q.ask))
        append(numeric(q.bid_size))
        append(numeric(q.ask_size))
        append(_pack_uid(8, quote_uid(q)))
    append(_TRAILER)
    return b"".join(parts)


def days_of(events: Iterable[models.Trade | models.Quote]) -> set[int]:
    return {e.ts_ns // _NS_PER_DAY for e in events}


def _day(day_number: int) -> datetime.date:
    return datetime.date(1970, 1, 1) + datetime.timedelta(days=day_number)


class _Chunks:
    """Feeds a pre-encoded buffer to asyncpg's COPY in pieces."""

    def __init__(self, data: bytes, size: int = 1 << 20) -> None:
        self._view = memoryview(data)
        self._size = size

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self._view:
            raise StopAsyncIteration
        piece, self._view = self._view[: self._size], self._view[self._size :]
        return bytes(piece)


@dataclasses.dataclass
class CopyResult:
    rows: int
    """Rows given."""
    fallback: bool
    """Whether the batch collided with stored rows and went through de-duplication."""


class PartitionKeeper:
    """Creates day partitions on first sight of a day (cached per process).

    Retention drops days behind the cache's back (``market_drop_partitions_before``): a row
    for a dropped day then finds no partition, and the writer has the cache :meth:`forget` the
    table's days so that the next :meth:`ensure` creates them again."""

    def __init__(self) -> None:
        self._known: set[tuple[str, int]] = set()

    async def ensure(self, conn: asyncpg.Connection[Any], table: str, days: set[int]) -> bool:
        """Create the partitions of ``days`` not seen yet. Returns whether each was checked
        in the database just now (none taken on trust from the cache)."""
        checked = True
        for day in sorted(days):
            if (table, day) in self._known:
                checked = False
                continue
            await conn.execute("SELECT market_ensure_partition($1, $2)", table, _day(day))
            self._known.add((table, day))
        return checked

    def forget(self, table: str) -> None:
        """Drop ``table``'s days from the cache: the next :meth:`ensure` checks them again."""
        self._known = {known for known in self._known if known[0] != table}


async def copy_rows(
    conn: asyncpg.Connection[Any],
    table: str,
    columns: Sequence[str],
    data: bytes,
    rows: int,
) -> CopyResult:
    """COPY a binary stream into ``table``; on an identity collision, store only new rows."""
    try:
        await conn.copy_to_table(
            table, source=_Chunks(data), columns=list(columns), format="binary"
        )
        return CopyResult(rows, fallback=False)
    except asyncpg.UniqueViolationError:
        pass
    staging = f"_staging_{table}"
    async with conn.transaction():
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DELETE ROWS"
        )
        await conn.copy_to_table(
            staging, source=_Chunks(data), columns=list(columns), format="binary"
        )
        await conn.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} "
            f"FROM {staging} ON CONFLICT DO NOTHING"
        )
    return CopyResult(rows, fallback=True)


# Two parts of one bar: ``covers`` (the new part spans the stored one, or either has no
# span, or the new one is whole: rebuilt from every stored trade of its interval) replaces;
# ``after``/``before`` (disjoint) merge; a part inside the stored span (a late partial
# replay) changes nothing.
_COVERS = """($14::boolean OR b.first_trade_at IS NULL OR EXCLUDED.first_trade_at IS NULL
    OR (EXCLUDED.first_trade_at <= b.first_trade_at
        AND EXCLUDED.last_trade_at >= b.last_trade_at))"""
_AFTER = "EXCLUDED.first_trade_at > b.last_trade_at"
_BEFORE = "EXCLUDED.last_trade_at < b.first_trade_at"
_BAR_UPSERT = f"""
INSERT INTO market_bars AS b (symbol, interval, ts, open, high, low, close, volume, vwap,
                              trades, indicators, first_trade_at, last_trade_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12, $13, now())
ON CONFLICT (symbol, interval, ts) DO UPDATE SET
    open = CASE WHEN {_COVERS} OR NOT {_AFTER} THEN EXCLUDED.open ELSE b.open END,
    high = CASE WHEN {_COVERS} THEN EXCLUDED.high ELSE greatest(b.high, EXCLUDED.high) END,
    low = CASE WHEN {_COVERS} THEN EXCLUDED.low ELSE least(b.low, EXCLUDED.low) END,
    close = CASE WHEN {_COVERS} OR NOT {_BEFORE} THEN EXCLUDED.close ELSE b.close END,
    volume = CASE WHEN {_COVERS} THEN EXCLUDED.volume ELSE b.volume + EXCLUDED.volume END,
    vwap = CASE WHEN {_COVERS} OR b.volume + EXCLUDED.volume = 0 THEN EXCLUDED.vwap
                ELSE round((b.vwap * b.volume + EXCLUDED.vwap * EXCLUDED.volume)
                           / (b.volume + EXCLUDED.volume), 8) END,
    trades = CASE WHEN {_COVERS} THEN EXCLUDED.trades ELSE b.trades + EXCLUDED.trades END,
    indicators = CASE WHEN {_COVERS} OR NOT {_BEFORE} THEN EXCLUDED.indicators
                      ELSE b.indicators END,
    first_trade_at = CASE WHEN {_COVERS} THEN EXCLUDED.first_trade_at
                          ELSE least(b.first_trade_at, EXCLUDED.first_trade_at) END,
    last_trade_at = CASE WHEN {_COVERS} THEN EXCLUDED.last_trade_at
                         ELSE greatest(b.last_trade_at, EXCLUDED.last_trade_at) END,
    updated_at = now()
WHERE {_COVERS} OR {_AFTER} OR {_BEFORE}
"""


def _span(ns: int) -> datetime.datetime | None:
    return models.to_datetime(ns) if ns else None


async def upsert_bars(conn: asyncpg.Connection[Any], bars: Sequence[models.Bar]) -> None:
    """Insert, replace or merge bars (see ``_BAR_UPSERT``): the same input always leaves the
    same row, a bar stored in two parts across a restart holds both, and a whole bar (rebuilt
    from storage after a crash) replaces whatever part was stored."""
    d = models.to_decimal
    await conn.executemany(
        _BAR_UPSERT,
        [
            (
                b.symbol,
                b.interval,
                models.to_datetime(b.start_ns),
                d(b.open),
                d(b.high),
                d(b.low),
                d(b.close),
                d(b.volume),
                d(b.vwap),
                b.trades,
                json.dumps(b.indicators),
                _span(b.first_ns),
                _span(b.last_ns),
                b.whole,
            )
            for b in bars
        ],
    )


@dataclasses.dataclass(slots=True)
class Rejection:
    feed: str
    reason: str
    raw: str
    symbol: str | None = None
    detail: str = ""
    received_ns: int = 0
    origin: str | None = None
    """Where the source can find this message again (replay: file, line, line hash)."""


def _storable(text: str) -> str:
    """``text`` as PostgreSQL can hold it: a dead letter must store whatever arrived, but
    ``text`` refuses NUL, and a lone surrogate (JSON's ``"\\ud800"``) is no UTF-8 at all.
    Either is spelt out as an escape instead."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text


async def insert_rejections(conn: asyncpg.Connection[Any], rejections: Sequence[Rejection]) -> None:
    """Dead-letter rows; one with a known origin is stored once however often it is replayed.

    Text fields go through :func:`_storable`: a raw symbol with a NUL in it once made the
    whole batch's insert fail, every time it was retried."""
    await conn.execute(
        """INSERT INTO market_rejections (received_at, feed, reason, symbol, detail, raw, origin)
           SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                                $5::text[], $6::text[], $7::text[])
           ON CONFLICT DO NOTHING""",
        [models.to_datetime(r.received_ns) for r in rejections],
        [r.feed for r in rejections],
        [r.reason for r in rejections],
        [None if r.symbol is None else _storable(r.symbol) for r in rejections],
        [_storable(r.detail) for r in rejections],
        [_storable(r.raw) for r in rejections],
        [None if r.origin is None else _storable(r.origin) for r in rejections],
    )


async def drop_partitions_before(
    conn: asyncpg.Connection[Any], cutoff: datetime.date
) -> dict[str, int]:
    """Drop whole days of ticks and quotes older than ``cutoff``; returns counts per table."""
    return {
        table: await conn.fetchval("SELECT market_drop_partitions_before($1, $2)", table, cutoff)
        for table in ("market_ticks", "market_quotes")
    }
