"""Context for an analysis: what is stored about the symbols, packed into a token budget.

:func:`pack` is pure. :func:`gather` and :func:`version_sql` read PostgreSQL and Redis;
they read tables owned by other components defensively: a table that does not exist (yet)
is left out of the context and named in its notes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import math
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from starkmatter.ai import models

CHARS_PER_TOKEN = 4
"""A conservative estimate for English and numbers; the budget is a bound, not a bill."""

BARS_PER_SYMBOL = 60
NEWS_ITEMS = 12
NEWS_MAX_AGE = dt.timedelta(days=7)
OPTIONAL_TABLES = ("market_bars", "trading_positions", "news_articles")


@dataclasses.dataclass(frozen=True)
class Bar:
    ts: dt.datetime
    open: decimal.Decimal
    high: decimal.Decimal
    low: decimal.Decimal
    close: decimal.Decimal
    volume: decimal.Decimal


@dataclasses.dataclass(frozen=True)
class SymbolData:
    symbol: str
    bars: tuple[Bar, ...] = ()
    """Oldest first."""
    indicators: dict[str, str] = dataclasses.field(default_factory=dict)
    quote: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Position:
    symbol: str
    quantity: decimal.Decimal
    avg_cost: decimal.Decimal
    mark_price: decimal.Decimal | None
    realized_pnl: decimal.Decimal


@dataclasses.dataclass(frozen=True)
class NewsItem:
    id: int
    published_at: dt.datetime
    title: str
    summary: str
    sentiment: decimal.Decimal
    category: str
    symbols: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Context:
    symbols: tuple[SymbolData, ...]
    positions: tuple[Position, ...] | None
    """None when positions are unavailable (no table), empty when the user holds none."""
    news: tuple[NewsItem, ...] | None
    notes: tuple[str, ...] = ()


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _change(bars: tuple[Bar, ...]) -> str | None:
    if len(bars) < 2 or bars[0].close == 0:
        return None
    pct = (bars[-1].close - bars[0].close) / bars[0].close * 100
    return f"{pct.quantize(decimal.Decimal('0.01'))}%"


def _symbol_header(data: SymbolData) -> str:
    parts = [f"## {data.symbol}"]
    if data.quote:
        fields = ("last", "bid", "ask")
        parts.append(
            "quote: " + ", ".join(f"{k}={data.quote[k]}" for k in fields if k in data.quote)
        )
    if data.bars:
        last = data.bars[-1]
        parts.append(
            f"last 1m bar {last.ts.isoformat()}: close={last.close} high={last.high}"
            f" low={last.low} volume={last.volume}"
        )
        change = _change(data.bars)
        if change is not None:
            parts.append(f"change over {len(data.bars)} bars: {change}")
    else:
        parts.append("no stored bars")
    if data.indicators:
        parts.append(
            "indicators: " + ", ".join(f"{k}={v}" for k, v in sorted(data.indicators.items()))
        )
    return "\n".join(parts)


def _bar_lines(data: SymbolData) -> list[str]:
    # Newest first, so that a tight budget keeps the most recent bars.
    return [
        f"{data.symbol} {b.ts:%H:%M} o={b.open} h={b.high} l={b.low} c={b.close} v={b.volume}"
        for b in reversed(data.bars)
    ]


def _news_line(item: NewsItem) -> str:
    summary = item.summary[:300]
    return (
        f"[{item.published_at:%Y-%m-%d %H:%M}] ({item.category}, sentiment {item.sentiment},"
        f" {','.join(item.symbols) or '-'}) {item.title} — {summary}"
    )


def _position_line(p: Position) -> str:
    mark = p.mark_price if p.mark_price is not None else "n/a"
    return (
        f"{p.symbol}: qty={p.quantity} avg_cost={p.avg_cost} mark={mark}"
        f" realized_pnl={p.realized_pnl}"
    )


@dataclasses.dataclass(frozen=True)
class Packed:
    text: str
    tokens: int
    omitted: dict[str, int]
    """Items left out for the budget, by section."""


def pack(context: Context, request: models.NormalizedRequest, budget_tokens: int) -> Packed:
    """Context text within ``budget_tokens``: headers first, then sections by the kind's order.

    Within a section items are newest first; the first item that does not fit ends the
    section (so what is kept is always a recent prefix, never a random sample).
    """
    budget = budget_tokens * CHARS_PER_TOKEN
    out: list[str] = []
    used = 0
    omitted: dict[str, int] = {}

    def add(line: str) -> bool:
        nonlocal used
        if used + len(line) + 1 > budget:
            return False
        out.append(line)
        used += len(line) + 1
        return True

    headers = [_symbol_header(s) for s in context.symbols]
    for i, header in enumerate(headers):
        if not add(header):
            omitted["symbols"] = len(headers) - i
            break
    sections: dict[str, list[str]] = {
        "positions": (
            ["# positions", *(_position_line(p) for p in context.positions)]
            if context.positions
            else []
        ),
        "news": ["# recent news", *(_news_line(n) for n in context.news)] if context.news else [],
        "bars": ["# 1m bars, newest first", *(ln for s in context.symbols for ln in _bar_lines(s))],
    }
    if len(sections["bars"]) == 1:
        sections["bars"] = []
    order = {
        "technical": ("bars", "news", "positions"),
        "news": ("news", "bars", "positions"),
        "portfolio_risk": ("positions", "news", "bars"),
    }[request.kind]
    for name in order:
        lines = sections[name]
        for i, line in enumerate(lines):
            if not add(line):
                # The heading alone is not worth its space.
                if i == 1:
                    out.pop()
                    used -= len(lines[0]) + 1
                omitted[name] = len(lines) - max(i, 1)
                break
    for note in context.notes:
        add(f"note: {note}")
    text = "\n".join(out)
    return Packed(text, estimate_tokens(text), omitted)


async def available_tables(conn: asyncpg.Connection[Any] | asyncpg.Pool) -> frozenset[str]:
    rows = await conn.fetch(
        "SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL",
        list(OPTIONAL_TABLES),
    )
    return frozenset(r["t"] for r in rows)


def version_sql(tables: frozenset[str], *, user_scoped: bool) -> str:
    """A SQL expression: a short digest of what the analysis would read (new data, new key).

    The latest 1m bar (not the live quote), the newest article on the symbols and, for
    portfolio risk, the latest position change: a cached answer lives at most one bar.
    Computed by PostgreSQL so that the cache-hit path checks the version and records its
    history row in one statement. Parameters: ``$1`` the symbols (``text[]``), ``$2`` the
    requesting user (``uuid``, read only when ``user_scoped``).
    """
    parts: list[str] = []
    if "market_bars" in tables:
        parts.append(
            """(SELECT max(b.ts)::text FROM unnest($1::text[]) s(sym),
                LATERAL (SELECT ts FROM market_bars WHERE symbol = s.sym AND interval = '1m'
                         ORDER BY ts DESC LIMIT 1) b)"""
        )
    if "news_articles" in tables:
        parts.append("(SELECT max(id)::text FROM news_articles WHERE symbols && $1::text[])")
    if user_scoped and "trading_positions" in tables:
        parts.append(
            "(SELECT max(updated_at)::text || ':' || count(*) FROM trading_positions"
            " WHERE user_id = $2::uuid)"
        )
    # Each part keeps its place (an absent value is '-'), so no two states share a digest.
    material = " || '|' || ".join(f"coalesce({p}, '-')" for p in parts) or "''"
    return f"substr(encode(sha256(convert_to({material}, 'UTF8')), 'hex'), 1, 16)"


def _decimal(value: Any) -> decimal.Decimal:
    return value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))


async def gather(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    request: models.NormalizedRequest,
    tables: frozenset[str],
    *,
    now: dt.datetime,
) -> Context:
    notes: list[str] = []
    symbols = list(request.symbols)
    bars: dict[str, list[Bar]] = {s: [] for s in symbols}
    indicators: dict[str, dict[str, str]] = {s: {} for s in symbols}
    if "market_bars" in tables:
        rows = await pool.fetch(
            """SELECT s.sym AS symbol, b.* FROM unnest($1::text[]) s(sym),
               LATERAL (SELECT ts, open, high, low, close, volume, indicators FROM market_bars
                        WHERE symbol = s.sym AND interval = '1m'
                        ORDER BY ts DESC LIMIT $2) b
               ORDER BY s.sym, b.ts""",
            symbols,
            BARS_PER_SYMBOL,
        )
        for row in rows:
            bars[row["symbol"]].append(
                Bar(row["ts"], row["open"], row["high"], row["low"], row["close"], row["volume"])
            )
            ind = row["indicators"]
            if isinstance(ind, str):
                ind = json.loads(ind)
            if ind:
                indicators[row["symbol"]] = {str(k): str(v) for k, v in ind.items()}
    else:
        notes.append("bars unavailable: market data tables are not installed")
    raw_quotes = await redis.mget([f"quote:{s}" for s in symbols])
    quotes: dict[str, dict[str, Any] | None] = {}
    for symbol, raw in zip(symbols, raw_quotes, strict=True):
        try:
            quotes[symbol] = json.loads(raw) if raw else None
        except ValueError:
            quotes[symbol] = None

    positions: tuple[Position, ...] | None = None
    if request.user_scope is None:
        # An analysis of the market alone is cached for, and shared with, every user who
        # asks the same: one user's holdings in it would reach the others.
        positions = ()
    elif "trading_positions" in tables:
        rows = await pool.fetch(
            """SELECT symbol, quantity, avg_cost, mark_price, realized_pnl FROM trading_positions
               WHERE user_id = $1::uuid AND (quantity <> 0 OR realized_pnl <> 0)
               ORDER BY symbol""",
            request.user_scope,
        )
        positions = tuple(
            Position(
                r["symbol"],
                _decimal(r["quantity"]),
                _decimal(r["avg_cost"]),
                None if r["mark_price"] is None else _decimal(r["mark_price"]),
                _decimal(r["realized_pnl"]),
            )
            for r in rows
        )
    else:
        notes.append("positions unavailable: trading tables are not installed")

    news: tuple[NewsItem, ...] | None = None
    if "news_articles" in tables:
        rows = await pool.fetch(
            """SELECT id, published_at, title, summary, sentiment, category, symbols
               FROM news_articles WHERE symbols && $1::text[] AND published_at >= $2
               ORDER BY published_at DESC, id DESC LIMIT $3""",
            symbols,
            now - NEWS_MAX_AGE,
            NEWS_ITEMS,
        )
        news = tuple(
            NewsItem(
                r["id"],
                r["published_at"],
                r["title"],
                r["summary"],
                _decimal(r["sentiment"]),
                r["category"],
                tuple(r["symbols"]),
            )
            for r in rows
        )
    else:
        notes.append("news unavailable: news tables are not installed")
    return Context(
        tuple(SymbolData(s, tuple(bars[s]), indicators[s], quotes.get(s)) for s in symbols),
        positions,
        news,
        tuple(notes),
    )
