"""``GET /news`` (search, filters, ranking, pagination), ``GET /news/{id}``, and the
user's watch list (``GET/PUT/DELETE /news/watchlist``): news on a watched symbol alerts."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import fastapi
import pydantic

from starkmatter.api import deps
from starkmatter.core import errors, schemas

router = fastapi.APIRouter(prefix="/news", tags=["news"])

Category = Literal["earnings", "mna", "analyst_action", "regulatory", "macro", "other"]
SymbolParam = Annotated[
    str, pydantic.Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9.\-]+$")
]


class ArticlePublic(schemas.ResponseModel):
    id: int
    source: str
    url: str
    title: str
    summary: str
    published_at: dt.datetime
    category: str
    sentiment: str
    sentiment_label: str
    symbols: list[str]
    companies: list[str]
    rank: float | None = None


class ArticlePage(schemas.ResponseModel):
    items: list[ArticlePublic]
    total: int
    limit: int
    offset: int


class WatchlistPublic(schemas.ResponseModel):
    symbols: list[str]


_COLUMNS = """id, source, url, title, summary, published_at, category, sentiment::text AS sentiment,
              sentiment_label, symbols, companies"""

# Ranking: text relevance, decayed by age (half weight after 3 days), so a fresh article
# about the query outranks an old one that matches slightly better.
_RANK = """ts_rank_cd(search, query, 32)
           / (1 + extract(epoch FROM (now() - published_at)) / 259200.0)"""


@router.get("")
async def list_news(
    user: deps.CurrentUser,
    pool: deps.DbDep,
    symbol: SymbolParam | None = None,
    category: Category | None = None,
    q: Annotated[str, pydantic.Field(min_length=1, max_length=200), schemas.PrintableText]
    | None = None,
    limit: Annotated[int, pydantic.Field(ge=1, le=100)] = 20,
    offset: Annotated[int, pydantic.Field(ge=0, le=10_000)] = 0,
) -> ArticlePage:
    """Newest first; with ``q`` (web search syntax: words, "phrases", -exclusions), by rank."""
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS},
                   CASE WHEN query IS NULL THEN NULL ELSE {_RANK} END AS rank,
                   count(*) OVER () AS total
            FROM news_articles,
                 (SELECT CASE WHEN $3::text IS NULL THEN NULL
                              ELSE websearch_to_tsquery('english', $3) END AS query) AS q
            WHERE ($1::text IS NULL OR symbols @> ARRAY[$1::text])
              AND ($2::text IS NULL OR category = $2)
              AND (query IS NULL OR search @@ query)
            ORDER BY rank DESC NULLS LAST, published_at DESC, id DESC
            LIMIT $4 OFFSET $5""",
        symbol.upper() if symbol else None,
        category,
        q,
        limit,
        offset,
    )
    total = rows[0]["total"] if rows else 0
    return ArticlePage(
        items=[ArticlePublic(**{k: v for k, v in dict(r).items() if k != "total"}) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/watchlist")
async def get_watchlist(user: deps.CurrentUser, pool: deps.DbDep) -> WatchlistPublic:
    rows = await pool.fetch(
        "SELECT symbol FROM user_watchlist WHERE user_id = $1 ORDER BY symbol",
        uuid.UUID(user.user_id),
    )
    return WatchlistPublic(symbols=[r["symbol"] for r in rows])


@router.put("/watchlist/{symbol}")
async def watch(symbol: SymbolParam, user: deps.CurrentUser, pool: deps.DbDep) -> WatchlistPublic:
    await pool.execute(
        "INSERT INTO user_watchlist (user_id, symbol) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        uuid.UUID(user.user_id),
        symbol.upper(),
    )
    return await get_watchlist(user, pool)


@router.delete("/watchlist/{symbol}")
async def unwatch(symbol: SymbolParam, user: deps.CurrentUser, pool: deps.DbDep) -> WatchlistPublic:
    await pool.execute(
        "DELETE FROM user_watchlist WHERE user_id = $1 AND symbol = $2",
        uuid.UUID(user.user_id),
        symbol.upper(),
    )
    return await get_watchlist(user, pool)


@router.get("/{article_id}")
async def get_article(
    article_id: Annotated[int, fastapi.Path(ge=1, le=2**63 - 1)],
    user: deps.CurrentUser,
    pool: deps.DbDep,
) -> ArticlePublic:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS}, NULL::float8 AS rank FROM news_articles WHERE id = $1", article_id
    )
    if row is None:
        raise errors.NotFound("no such article", code="article_not_found")
    return ArticlePublic(**dict(row))
