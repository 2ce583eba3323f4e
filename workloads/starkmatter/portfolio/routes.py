"""REST for portfolios: ``/portfolio``, ``/portfolio/positions``, ``/portfolio/history``.

``GET /portfolio`` values positions at live marks and is cached in Redis under
``cache:portfolio:{userId}``; the order worker deletes that key whenever the user's
orders or portfolio change, and the API when it cancels an order, so the cache outlives a
change only by the moments between a placement and the worker taking it up (the TTL only
bounds mark staleness).

Values are exact in these models and rounded only when sent (``schemas.Shown``: at most 8
decimal places, half-even); the equity is sent as cash plus positions value, as shown.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import fastapi

from starkmatter.api import deps
from starkmatter.core import metrics as core_metrics
from starkmatter.core import schemas
from starkmatter.portfolio import ledger as ledgers
from starkmatter.portfolio import metrics, valuation
from starkmatter.portfolio.positions import Position

router = fastapi.APIRouter(tags=["portfolio"])


class PositionPublic(schemas.ResponseModel):
    symbol: str
    quantity: schemas.Shown
    reserved_quantity: schemas.Shown
    avg_cost: schemas.Shown
    mark_price: schemas.Shown | None
    market_value: schemas.Shown
    unrealized_pnl: schemas.Shown
    realized_pnl: schemas.Shown


class PortfolioPublic(schemas.ResponseModel):
    user_id: uuid.UUID
    cash: schemas.Shown
    reserved_cash: schemas.Shown
    positions_value: schemas.Shown
    equity: schemas.Shown
    realized_pnl: schemas.Shown
    unrealized_pnl: schemas.Shown
    starting_cash: schemas.Shown
    daily_return: schemas.Shown | None
    cumulative_return: schemas.Shown | None
    volatility: schemas.Shown | None
    max_drawdown: schemas.Shown
    sharpe: schemas.Shown | None
    as_of: dt.datetime


class SnapshotPublic(schemas.ResponseModel):
    ts: dt.datetime
    cash: schemas.Shown
    positions_value: schemas.Shown
    equity: schemas.Shown
    realized_pnl: schemas.Shown
    unrealized_pnl: schemas.Shown
    daily_return: schemas.Shown | None
    cumulative_return: schemas.Shown | None
    volatility: schemas.Shown | None
    max_drawdown: schemas.Shown
    sharpe: schemas.Shown | None


class HistoryPage(schemas.ResponseModel):
    items: list[SnapshotPublic]
    next_cursor: str | None


def _user(principal: deps.CurrentUser) -> uuid.UUID:
    return uuid.UUID(principal.user_id)


async def _positions(
    pool: deps.DbDep, redis: deps.RedisDep, user: uuid.UUID
) -> list[PositionPublic]:
    rows = await pool.fetch(
        "SELECT * FROM trading_positions WHERE user_id = $1 AND (quantity <> 0"
        " OR realized_pnl <> 0) ORDER BY symbol",
        user,
    )
    symbols = [r["symbol"] for r in rows]
    raw = await redis.mget([f"quote:{s}" for s in symbols]) if symbols else []
    live = ledgers.marks_from_quotes(dict(zip(symbols, raw, strict=True)))
    out = []
    for r in rows:
        pos = Position(r["quantity"], r["avg_cost"], r["realized_pnl"])
        mark = live.get(r["symbol"], r["mark_price"])
        basis = mark if mark is not None else pos.avg_cost
        out.append(
            PositionPublic(
                symbol=r["symbol"],
                quantity=pos.quantity,
                reserved_quantity=r["reserved_quantity"],
                avg_cost=pos.avg_cost,
                mark_price=mark,
                market_value=pos.market_value(basis),
                unrealized_pnl=pos.unrealized_pnl(basis),
                realized_pnl=pos.realized_pnl,
            )
        )
    return out


def _snapshot(row: Mapping[str, Any]) -> SnapshotPublic:
    fields = {k: row[k] for k in SnapshotPublic.model_fields}
    fields["equity"] = valuation.shown_equity(row["cash"], row["positions_value"])
    return SnapshotPublic(**fields)


@router.get("/portfolio", response_model=PortfolioPublic)
async def get_portfolio(
    principal: deps.CurrentUser, pool: deps.DbDep, redis: deps.RedisDep
) -> PortfolioPublic:
    user = _user(principal)
    key = f"cache:portfolio:{user}"
    cached = await redis.get(key)
    core_metrics.cache_result("portfolio", hit=cached is not None)
    if cached:
        return PortfolioPublic.model_validate(json.loads(cached))
    async with pool.acquire() as conn:
        await ledgers.ensure_account(conn, user)
        account = await conn.fetchrow("SELECT * FROM trading_accounts WHERE user_id = $1", user)
        closes = [
            r["close_equity"]
            for r in await conn.fetch(
                "SELECT close_equity FROM portfolio_daily WHERE user_id = $1 AND day < $2"
                " ORDER BY day DESC LIMIT 252",
                user,
                dt.datetime.now(dt.UTC).date(),
            )
        ][::-1]
    assert account is not None
    positions = await _positions(pool, redis, user)
    value = valuation.value(
        account["cash"],
        {p.symbol: Position(p.quantity, p.avg_cost, p.realized_pnl) for p in positions},
        {p.symbol: p.mark_price for p in positions if p.mark_price is not None},
    )
    m = metrics.compute(account["starting_cash"], [*closes, value.equity])
    body = PortfolioPublic(
        user_id=user,
        cash=value.cash,
        reserved_cash=account["reserved_cash"],
        positions_value=value.positions_value,
        equity=valuation.shown_equity(value.cash, value.positions_value),
        realized_pnl=value.realized_pnl,
        unrealized_pnl=value.unrealized_pnl,
        starting_cash=account["starting_cash"],
        daily_return=m.daily_return,
        cumulative_return=m.cumulative_return,
        volatility=m.volatility,
        max_drawdown=m.max_drawdown,
        sharpe=m.sharpe,
        as_of=dt.datetime.now(dt.UTC),
    )
    await redis.set(key, body.model_dump_json(), ex=ledgers.get_config().cache_ttl_s)
    return body


@router.get("/portfolio/positions", response_model=list[PositionPublic])
async def get_positions(
    principal: deps.CurrentUser, pool: deps.DbDep, redis: deps.RedisDep
) -> list[PositionPublic]:
    return await _positions(pool, redis, _user(principal))


@router.get("/portfolio/history", response_model=HistoryPage)
async def get_history(
    principal: deps.CurrentUser,
    pool: deps.DbDep,
    since: dt.datetime | None = None,
    limit: Annotated[int, fastapi.Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, fastapi.Query(ge=1)] = None,
) -> HistoryPage:
    """Newest first; ``cursor`` is the ``next_cursor`` of the previous page."""
    rows = await pool.fetch(
        """SELECT * FROM portfolio_snapshots WHERE user_id = $1
             AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::bigint IS NULL OR id < $3)
           ORDER BY id DESC LIMIT $4""",
        _user(principal),
        since,
        cursor,
        limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return HistoryPage(
        items=[_snapshot(r) for r in rows],
        next_cursor=str(rows[-1]["id"]) if more else None,
    )
