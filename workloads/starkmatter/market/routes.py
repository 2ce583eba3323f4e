"""REST: symbols, latest quote and depth, bars, ticks, and (admins) rejections."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Annotated, Any, Literal

import fastapi
import pydantic

from starkmatter.api import deps
from starkmatter.core import errors
from starkmatter.market import normalizing, queries

router = fastapi.APIRouter(prefix="/market", tags=["market"])

Limit = Annotated[int, fastapi.Query(ge=1, le=5_000)]


def _plain(value: decimal.Decimal) -> str:
    """Exact decimal text without trailing zeros or exponent: ``227.5``, ``67000``."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


Price = Annotated[decimal.Decimal, pydantic.PlainSerializer(_plain, return_type=str)]
"""Prices and sizes: exact decimals, serialized as JSON strings."""


class QuotePublic(pydantic.BaseModel):
    symbol: str
    bid: Price | None
    ask: Price | None
    bid_size: Price | None
    ask_size: Price | None
    last: Price | None
    last_size: Price | None
    ts: datetime.datetime


class DepthPublic(pydantic.BaseModel):
    symbol: str
    bids: list[tuple[Price, Price]]
    asks: list[tuple[Price, Price]]
    ts: datetime.datetime


class BarPublic(pydantic.BaseModel):
    symbol: str
    interval: str
    ts: datetime.datetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Price
    vwap: Price
    trades: int
    indicators: dict[str, Price]


class TickPublic(pydantic.BaseModel):
    symbol: str
    ts: datetime.datetime
    price: Price
    size: Price


class RejectionPublic(pydantic.BaseModel):
    id: int
    received_at: datetime.datetime
    feed: str
    reason: str
    symbol: str | None
    detail: str
    raw: str


class BarPage(pydantic.BaseModel):
    items: list[BarPublic]
    next_cursor: str | None


class TickPage(pydantic.BaseModel):
    items: list[TickPublic]
    next_cursor: str | None


class RejectionPage(pydantic.BaseModel):
    items: list[RejectionPublic]
    next_cursor: str | None
    counts: dict[str, int]
    """Rejections stored per reason (for the feed filter, if any)."""


class SymbolsPublic(pydantic.BaseModel):
    symbols: list[str]


def _symbol(raw: str) -> str:
    try:
        return normalizing.normalize_symbol(raw)
    except normalizing.Malformed:
        raise errors.AppError(f"invalid symbol {raw[:24]!r}", code="invalid_symbol") from None


def _aware(moment: datetime.datetime | None, name: str) -> datetime.datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise errors.AppError(f"{name} needs a timezone (e.g. Z)", code="invalid_timestamp")
    return moment


async def _document(redis: Any, key: str) -> dict[str, Any]:
    raw = await redis.get(key)
    if raw is None:
        raise errors.NotFound(f"no data for {key.split(':', 1)[1]}", code="no_market_data")
    document: dict[str, Any] = json.loads(raw)
    return document


@router.get("/symbols")
async def list_symbols(_user: deps.CurrentUser, redis: deps.RedisDep) -> SymbolsPublic:
    members = await redis.smembers("market:symbols")
    return SymbolsPublic(
        symbols=sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
    )


@router.get("/quotes/{symbol:path}")
async def get_quote(symbol: str, _user: deps.CurrentUser, redis: deps.RedisDep) -> QuotePublic:
    return QuotePublic.model_validate(await _document(redis, f"quote:{_symbol(symbol)}"))


@router.get("/depth/{symbol:path}")
async def get_depth(symbol: str, _user: deps.CurrentUser, redis: deps.RedisDep) -> DepthPublic:
    return DepthPublic.model_validate(await _document(redis, f"depth:{_symbol(symbol)}"))


@router.get("/bars/{symbol:path}")
async def list_bars(
    symbol: str,
    _user: deps.CurrentUser,
    pool: deps.DbDep,
    interval: Literal["1s", "1m"] = "1m",
    start: datetime.datetime | None = None,
    end: datetime.datetime | None = None,
    limit: Limit = 500,
    cursor: str | None = None,
) -> BarPage:
    try:
        rows, next_cursor = await queries.bars(
            pool, _symbol(symbol), interval, _aware(start, "start"), _aware(end, "end"),
            limit, cursor,
        )  # fmt: skip
    except queries.BadCursor as exc:
        raise errors.AppError(str(exc), code="invalid_cursor") from None
    return BarPage(items=[BarPublic.model_validate(dict(r)) for r in rows], next_cursor=next_cursor)


@router.get("/ticks/{symbol:path}")
async def list_ticks(
    symbol: str,
    _user: deps.CurrentUser,
    pool: deps.DbDep,
    start: datetime.datetime | None = None,
    end: datetime.datetime | None = None,
    limit: Limit = 1_000,
    cursor: str | None = None,
) -> TickPage:
    try:
        rows, next_cursor = await queries.ticks(
            pool, _symbol(symbol), _aware(start, "start"), _aware(end, "end"), limit, cursor
        )
    except queries.BadCursor as exc:
        raise errors.AppError(str(exc), code="invalid_cursor") from None
    return TickPage(
        items=[TickPublic.model_validate(dict(r)) for r in rows], next_cursor=next_cursor
    )


@router.get("/rejections")
async def list_rejections(
    _admin: deps.AdminUser,
    pool: deps.DbDep,
    reason: str | None = None,
    feed: str | None = None,
    limit: Limit = 100,
    cursor: str | None = None,
) -> RejectionPage:
    try:
        rows, next_cursor, counts = await queries.rejections(pool, reason, feed, limit, cursor)
    except queries.BadCursor as exc:
        raise errors.AppError(str(exc), code="invalid_cursor") from None
    return RejectionPage(
        items=[RejectionPublic.model_validate(dict(r)) for r in rows],
        next_cursor=next_cursor,
        counts=counts,
    )
