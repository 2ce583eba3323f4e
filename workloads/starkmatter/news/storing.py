"""Steps 6-8: store (deduplicated by URL and by content hash), index, notify.

Indexing is PostgreSQL's: the ``search`` column is generated from title, summary and body
and has a GIN index, so a stored article is searchable in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from starkmatter.alerts import delivering
from starkmatter.core import events, replaying
from starkmatter.news import processing


async def store(
    pool: asyncpg.Pool | asyncpg.Connection[Any],
    source: str,
    articles: Sequence[processing.Article],
) -> list[dict[str, Any]]:
    """Insert the new ones; returns the stored rows (duplicates are silently skipped)."""
    if not articles:
        return []
    rows = await pool.fetch(
        """INSERT INTO news_articles (source, url, content_hash, title, summary, body, author,
                   published_at, category, sentiment, sentiment_label, symbols, companies)
           SELECT $1, u, h, t, s, b, a, p, c, sn, sl,
                  coalesce(string_to_array(nullif(sy, ''), ','), '{}'),
                  coalesce(string_to_array(nullif(co, ''), '|'), '{}')
           FROM unnest($2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::timestamptz[], $9::text[], $10::numeric[], $11::text[], $12::text[],
                       $13::text[]) AS x(u, h, t, s, b, a, p, c, sn, sl, sy, co)
           ON CONFLICT DO NOTHING
           RETURNING id, url, title, summary, published_at, category, sentiment,
                     sentiment_label, symbols""",
        source,
        [a.url for a in articles],
        [a.content_hash for a in articles],
        [a.title for a in articles],
        [a.summary for a in articles],
        [a.body for a in articles],
        [a.author for a in articles],
        [a.published_at for a in articles],
        [a.category for a in articles],
        [a.sentiment for a in articles],
        [a.sentiment_label for a in articles],
        [",".join(a.symbols) for a in articles],
        ["|".join(a.companies) for a in articles],
    )
    return [dict(r) for r in rows]


def public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "title": row["title"],
        "summary": row["summary"],
        "published_at": row["published_at"].isoformat(),
        "category": row["category"],
        "sentiment": str(row["sentiment"]),
        "sentiment_label": row["sentiment_label"],
        "symbols": list(row["symbols"]),
    }


async def watchers(
    pool: asyncpg.Pool | asyncpg.Connection[Any], symbols: Sequence[str]
) -> dict[str, set[str]]:
    """Symbol -> users watching it: the watch list, and holders of a position in it."""
    positions = await pool.fetchval("SELECT to_regclass('trading_positions') IS NOT NULL")
    sql = "SELECT user_id, symbol FROM user_watchlist WHERE symbol = ANY($1::text[])"
    if positions:
        sql += (
            " UNION SELECT user_id, symbol FROM trading_positions"
            " WHERE symbol = ANY($1::text[]) AND quantity <> 0"
        )
    out: dict[str, set[str]] = {}
    for row in await pool.fetch(sql, list(symbols)):
        out.setdefault(row["symbol"], set()).add(str(row["user_id"]))
    return out


def article_events(stored: Sequence[dict[str, Any]]) -> list[events.Event]:
    """One ``NewsArticleReceived`` per stored article, for the outbox in the storing
    transaction: the watcher alerts it triggers are durable."""
    return [
        events.Event("NewsArticleReceived", f"article-{row['id']}", {"article_id": row["id"]})
        for row in stored
    ]


async def broadcast(
    redis: aioredis.Redis, stored: Sequence[dict[str, Any]], categories: Sequence[str] = ()
) -> None:
    """Live broadcast on news:all and news:{category} (pub/sub: best effort by design)."""
    if not stored:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for row in stored:
            message = json.dumps(public(row))
            # numbered and kept: an SSE client resumes on any gateway replica
            await replaying.queue_publish(pipe, "news:all", message)
            for category in dict.fromkeys([row["category"], *categories]):
                await replaying.queue_publish(pipe, f"news:{category}", message)
        await pipe.execute()


async def watcher_alerts(
    conn: asyncpg.Pool | asyncpg.Connection[Any], stored: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Store an alert for each user watching a mentioned symbol (the ``NewsArticleReceived``
    trigger), in the caller's transaction; returns the alerts stored, for
    :func:`delivering.publish` once that transaction has committed."""
    if not stored:
        return []
    watching = await watchers(conn, sorted({s for r in stored for s in r["symbols"]}))
    alerts = []
    for row in stored:
        users: dict[str, list[str]] = {}
        for symbol in row["symbols"]:
            for user in watching.get(symbol, ()):
                users.setdefault(user, []).append(symbol)
        strong = abs(row["sentiment"]) >= 0.5
        for user, symbols in users.items():
            alerts.append(
                delivering.AlertEvent(
                    rule="news",
                    kind="news",
                    severity="warning" if strong else "info",
                    state="triggered",
                    fingerprint=f"news:{row['id']}:{user}",
                    summary=f"{', '.join(symbols)}: {row['title']}"[:300],
                    user_id=user,
                    details={"article": public(row), "symbols": symbols},
                )
            )
    return await delivering.store(conn, alerts)
