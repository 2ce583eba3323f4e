"""Read side of market data for the REST API: bars, ticks and rejections with cursors.

Cursors are opaque to clients (URL-safe base64 of the last row's sort key) and stable
under concurrent inserts: a page continues strictly after the previous page's last row.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import asyncpg


class BadCursor(ValueError):
    pass


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, length: int) -> list[Any]:
    """The key of a cursor this API issued: a list of ``length`` items, else BadCursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, RecursionError):  # RecursionError: a key nested too deep
        raise BadCursor("invalid cursor") from None
    if not isinstance(key, list) or len(key) != length:
        raise BadCursor("invalid cursor")
    return key


def _ts(text: Any) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        raise BadCursor("invalid cursor") from None
    if moment.tzinfo is None:
        raise BadCursor("invalid cursor")
    return moment


async def bars(
    pool: asyncpg.Pool,
    symbol: str,
    interval: str,
    start: datetime.datetime | None,
    end: datetime.datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[asyncpg.Record], str | None]:
    after = _ts(decode_cursor(cursor, 1)[0]) if cursor else None
    rows = await pool.fetch(
        """
        SELECT symbol, interval, ts, open, high, low, close, volume, vwap, trades, indicators
        FROM market_bars
        WHERE symbol = $1 AND interval = $2
          AND ($3::timestamptz IS NULL OR ts >= $3) AND ($4::timestamptz IS NULL OR ts < $4)
          AND ($5::timestamptz IS NULL OR ts > $5)
        ORDER BY ts LIMIT $6
        """,
        symbol, interval, start, end, after, limit + 1,
    )  # fmt: skip
    page, more = rows[:limit], len(rows) > limit
    return page, encode_cursor(page[-1]["ts"].isoformat()) if more else None


async def ticks(
    pool: asyncpg.Pool,
    symbol: str,
    start: datetime.datetime | None,
    end: datetime.datetime | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[asyncpg.Record], str | None]:
    after_ts, after_uid = None, None
    if cursor:
        key = decode_cursor(cursor, 2)
        if not isinstance(key[1], int):
            raise BadCursor("invalid cursor")
        after_ts, after_uid = _ts(key[0]), key[1]
    rows = await pool.fetch(
        """
        SELECT ts, symbol, price, size, uid FROM market_ticks
        WHERE symbol = $1
          AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts < $3)
          AND ($4::timestamptz IS NULL OR (ts, uid) > ($4, $5::bigint))
        ORDER BY ts, uid LIMIT $6
        """,
        symbol, start, end, after_ts, after_uid, limit + 1,
    )  # fmt: skip
    page, more = rows[:limit], len(rows) > limit
    return page, encode_cursor(page[-1]["ts"].isoformat(), page[-1]["uid"]) if more else None


async def rejections(
    pool: asyncpg.Pool,
    reason: str | None,
    feed: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[asyncpg.Record], str | None, dict[str, int]]:
    before = None
    if cursor:
        key = decode_cursor(cursor, 1)
        if not isinstance(key[0], int):
            raise BadCursor("invalid cursor")
        before = key[0]
    rows = await pool.fetch(
        """
        SELECT id, received_at, feed, reason, symbol, detail, raw FROM market_rejections
        WHERE ($1::text IS NULL OR reason = $1) AND ($2::text IS NULL OR feed = $2)
          AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC LIMIT $4
        """,
        reason, feed, before, limit + 1,
    )  # fmt: skip
    counts = await pool.fetch(
        "SELECT reason, count(*) AS n FROM market_rejections "
        "WHERE ($1::text IS NULL OR feed = $1) GROUP BY reason",
        feed,
    )
    page, more = rows[:limit], len(rows) > limit
    return (
        page,
        encode_cursor(page[-1]["id"]) if more else None,
        {r["reason"]: r["n"] for r in counts},
    )
