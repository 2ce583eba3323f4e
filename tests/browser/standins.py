"""Stand-ins for REST routes whose component has not landed yet, built on the contracts.

The browser tier prefers each component's own router (``starkmatter.<component>.routes``);
only when a module does not exist does it mount the stand-in here, which serves the same
contract straight from the shared stores (``quote:{S}`` / ``depth:{S}`` in Redis, the
``market_bars`` table). Delete a stand-in once its component ships its router.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from typing import Annotated, Any

import fastapi

from starkmatter.api import deps
from starkmatter.core import errors

market = fastapi.APIRouter(prefix="/market", tags=["market (stand-in)"])
news = fastapi.APIRouter(tags=["news (stand-in)"])
alerts = fastapi.APIRouter(tags=["alerts (stand-in)"])


def component_router(module: str) -> fastapi.APIRouter | None:
    """The component's own ``router`` when its routes module exists."""
    if importlib.util.find_spec(module) is None:
        return None
    router: fastapi.APIRouter = importlib.import_module(module).router
    return router


@market.get("/symbols")
async def symbols(user: deps.CurrentUser, redis: deps.RedisDep) -> list[dict[str, str]]:
    names = sorted([key.decode()[len("quote:") :] async for key in redis.scan_iter("quote:*")])
    return [{"symbol": name} for name in names]


async def _snapshot(redis: Any, key: str) -> Any:
    raw = await redis.get(key)
    if raw is None:
        raise errors.NotFound(f"no data for {key}", code="symbol_not_found")
    return json.loads(raw)


@market.get("/quotes/{symbol}")
async def quote(symbol: str, user: deps.CurrentUser, redis: deps.RedisDep) -> Any:
    return await _snapshot(redis, f"quote:{symbol}")


@market.get("/depth/{symbol}")
async def depth(symbol: str, user: deps.CurrentUser, redis: deps.RedisDep) -> Any:
    return await _snapshot(redis, f"depth:{symbol}")


@market.get("/bars/{symbol}")
async def bars(
    symbol: str,
    user: deps.CurrentUser,
    pool: deps.DbDep,
    interval: Annotated[str, fastapi.Query(pattern="^(1s|1m)$")] = "1m",
    limit: Annotated[int, fastapi.Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT ts, open, high, low, close, volume FROM market_bars"
        " WHERE symbol = $1 AND interval = $2 ORDER BY ts DESC LIMIT $3",
        symbol,
        interval,
        limit,
    )
    return [
        {
            "start": row["ts"].isoformat(),
            **{k: str(row[k]) for k in ("open", "high", "low", "close", "volume")},
        }
        for row in reversed(rows)
    ]


@news.get("/news")
async def list_news(
    user: deps.CurrentUser,
    pool: deps.DbDep,
    q: str | None = None,
    limit: Annotated[int, fastapi.Query(ge=1, le=200)] = 50,
) -> dict[str, list[dict[str, Any]]]:
    rows = await pool.fetch(
        "SELECT id, source, url, title, summary, published_at, category, sentiment,"
        " sentiment_label, symbols FROM news_articles"
        " WHERE $1::text IS NULL OR search @@ websearch_to_tsquery('english', $1)"
        " ORDER BY published_at DESC LIMIT $2",
        q,
        limit,
    )
    return {"items": [article_json(dict(row)) for row in rows]}


def article_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "id": str(row["id"]),
        "published_at": row["published_at"].isoformat(),
        "sentiment": str(row["sentiment"]),
        "symbols": list(row["symbols"]),
    }


@alerts.get("/alerts")
async def list_alerts(user: deps.CurrentUser) -> dict[str, list[dict[str, Any]]]:
    return {"items": []}
