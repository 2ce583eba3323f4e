"""News pipeline throughput: articles/s for fetch -> parse -> clean -> analyze -> classify ->
store -> index -> notify, over HTTP from the sample server, into embedded PostgreSQL.

Baseline in the same run: COPY of the same processed rows into an unindexed table (the
floor of storing them), and the pure in-process steps alone (parse + process).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from starkmatter.core import db, embedded, migrating, redis_client, settings
from starkmatter.news import pipeline, processing, sampleserver

ARTICLES = 3000
_WORDS = (
    "beat estimates revenue growth acquire merger upgrade downgrade price target inflation "
    "rates lawsuit probe record surge fell sharply guidance quarter deal"
)
WORDS = _WORDS.split()
COMPANIES = ("Apple", "Microsoft", "$TSLA", "Nvidia", "(NYSE: JPM)", "Boeing", "Netflix")


def synthetic_feed(n: int) -> bytes:
    rng = random.Random(7)
    base = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    items = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(60))
        who = rng.choice(COMPANIES)
        when = email.utils.format_datetime(base - dt.timedelta(minutes=i))
        items.append(
            f"<item><title>{who} story {i}: {words[:60]}</title>"
            f"<link>http://bench/{i}</link><pubDate>{when}</pubDate>"
            f"<description><![CDATA[<p>{who} {words}</p>]]></description></item>"
        )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>bench</title>'
        + "".join(items)
        + "</channel></rss>"
    ).encode()


async def main(work: Path) -> None:
    pg = embedded.EmbeddedPostgres(work / "pg", durable=False).start()
    rd = embedded.EmbeddedRedis(work / "redis", durable=False).start()
    try:
        url = await pg.ensure_database("bench_news")
        conn = await asyncpg.connect(url)
        await migrating.apply(conn)
        await conn.close()
        cfg = settings.load(env="dev", database_url=url, redis_url=rd.url)
        pool = await db.create_pool(cfg)
        redis = redis_client.create_redis(cfg)
        body = synthetic_feed(ARTICLES)
        universe = await pipeline.load_universe(pool)

        t0 = time.perf_counter()
        from starkmatter.news import parsing

        raws = parsing.parse_feed(body)
        now = dt.datetime.now(dt.UTC)
        articles = [processing.process(r, universe, now=now) for r in raws]
        pure_s = time.perf_counter() - t0

        await pool.execute(
            "CREATE UNLOGGED TABLE copy_baseline (LIKE news_articles INCLUDING DEFAULTS)"
            "; ALTER TABLE copy_baseline DROP COLUMN search"
        )
        records = [
            (i, "bench", a.url, a.content_hash, a.title, a.summary, a.body, a.author,
             a.published_at, now, a.category, a.sentiment, a.sentiment_label,
             list(a.symbols), list(a.companies))
            for i, a in enumerate(articles)
        ]  # fmt: skip
        t0 = time.perf_counter()
        async with pool.acquire() as c:
            await c.copy_records_to_table("copy_baseline", records=records)
        copy_s = time.perf_counter() - t0

        async with sampleserver.serve(
            port=embedded.free_port(), overrides={"markets.rss": body}
        ) as base:
            source = sampleserver.sources(base)[0]
            async with httpx.AsyncClient(timeout=60) as client:
                t0 = time.perf_counter()
                stats = await pipeline.run_once(pool, redis, client, source, universe)
                full_s = time.perf_counter() - t0
        assert stats.stored == ARTICLES, stats
        common.report(
            f"news pipeline, {ARTICLES} articles (synthetic RSS over HTTP)",
            [
                ("full pipeline", ARTICLES / full_s, "articles/s"),
                ("parse + clean + analyze + classify only", ARTICLES / pure_s, "articles/s"),
                ("COPY of the processed rows (no index)", ARTICLES / copy_s, "articles/s"),
            ],
            baseline="COPY of the processed rows (no index)",
        )
        common.ratio("full pipeline / COPY baseline", ARTICLES / full_s, ARTICLES / copy_s)
        common.ratio("full pipeline / in-process steps", ARTICLES / full_s, ARTICLES / pure_s)
        await redis.aclose()
        await pool.close()
    finally:
        rd.stop()
        pg.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-news-") as tmp:
        asyncio.run(main(Path(tmp)))
