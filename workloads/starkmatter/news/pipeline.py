"""The seed's eight steps for one source: fetch, parse, clean, analyze, classify, store,
index, notify. ``run_once`` is one poll; ``run`` polls until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from typing import Any

import asyncpg
import httpx
import prometheus_client
import redis.asyncio as aioredis

from starkmatter.core import events, logs
from starkmatter.news import config, entities, fetching, parsing, processing, storing

log = logs.get_logger(__name__)

ARTICLES = prometheus_client.Counter(
    "starkmatter_news_articles_total",
    "News articles seen, by source and outcome (stored, duplicate, unreadable).",
    ["source", "outcome"],
)


@dataclasses.dataclass(frozen=True)
class PollStats:
    not_modified: bool
    parsed: int
    stored: int
    duplicates: int
    seconds: float


async def load_universe(pool: asyncpg.Pool | asyncpg.Connection[Any]) -> entities.Universe:
    """The bundled company names plus every instrument the trading tables know."""
    extra: list[str] = []
    if await pool.fetchval("SELECT to_regclass('trading_instruments') IS NOT NULL"):
        extra = [r["symbol"] for r in await pool.fetch("SELECT symbol FROM trading_instruments")]
    return entities.Universe.load(extra=extra)


def analyse_all(
    raws: list[parsing.RawArticle], universe: entities.Universe, now: dt.datetime, source: str
) -> list[processing.Article]:
    """Every article that can be read; one that cannot is logged and skipped, never allowed
    to stop the rest of the feed (and the next poll would only meet it again)."""
    articles = []
    for raw in raws:
        try:
            articles.append(processing.process(raw, universe, now=now))
        except (ValueError, ArithmeticError, TypeError, RecursionError) as exc:
            ARTICLES.labels(source=source, outcome="unreadable").inc()
            log.warning("news.article_skipped", url=raw.url, error=repr(exc))
    return articles


async def run_once(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    client: httpx.AsyncClient,
    source: config.NewsSource,
    universe: entities.Universe,
) -> PollStats:
    started = time.perf_counter()
    fetched = await fetching.fetch(
        pool, client, source.name, source.url, user_agent=source.user_agent
    )
    if fetched.not_modified:
        return PollStats(True, 0, 0, 0, time.perf_counter() - started)
    raws = parsing.parse(fetched.body, source)
    articles = analyse_all(raws, universe, dt.datetime.now(dt.UTC), source.name)
    async with pool.acquire() as conn, conn.transaction():
        stored = await storing.store(conn, source.name, articles)
        # Watcher alerts follow from NewsArticleReceived (durable, in this transaction);
        # the live broadcast below is pub/sub and best effort by design.
        await events.append_many(conn, storing.article_events(stored))
    await storing.broadcast(redis, stored, source.categories)
    # Validators last: a crash before this line means the next poll fetches everything
    # again, and deduplication makes that harmless.
    await fetching.remember(pool, source.name, source.url, 200, fetched.etag, fetched.last_modified)
    ARTICLES.labels(source=source.name, outcome="stored").inc(len(stored))
    ARTICLES.labels(source=source.name, outcome="duplicate").inc(len(articles) - len(stored))
    duplicates = len(articles) - len(stored)
    stats = PollStats(False, len(raws), len(stored), duplicates, time.perf_counter() - started)
    log.info("news.polled", source=source.name, **dataclasses.asdict(stats))
    return stats


async def run(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    source: config.NewsSource,
    *,
    once: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Poll every ``poll_interval_s`` until ``stop`` is set; a failed poll is logged and retried."""
    stop = stop or asyncio.Event()
    universe = await load_universe(pool)
    async with httpx.AsyncClient(timeout=30) as client:
        while not stop.is_set():
            if not source.suspend:
                try:
                    await run_once(pool, redis, client, source, universe)
                except (fetching.FetchFailed, parsing.FeedError) as exc:
                    log.warning("news.poll_failed", source=source.name, error=str(exc))
                    if once:
                        raise
                except (asyncpg.PostgresError, OSError) as exc:
                    # The database refused the batch or was away: the next poll tries again
                    # (nothing was remembered, so it fetches the same items).
                    log.error("news.store_failed", source=source.name, error=repr(exc))
                    if once:
                        raise
            if once:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(source.poll_interval_s):
                    await stop.wait()
