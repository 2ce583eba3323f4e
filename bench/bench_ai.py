"""AI analysis: cache-hit latency p99 (target < 5 ms) and coalescing of identical requests.

Embedded PostgreSQL and Redis, the real service, the real SDK against a loopback server
that speaks the Messages API. Baseline for latency: one Redis GET of the cached answer
(the floor any cache hit pays). Baseline for coalescing: N requests, N upstream calls.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import pydantic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from starkmatter.ai import config, models, service
from starkmatter.core import db, embedded, migrating, redis_client, settings
from tests.integration.ai import anthropic_server

HITS = 2000
CONCURRENT = 50


async def main(work: Path) -> None:
    pg = embedded.EmbeddedPostgres(work / "pg", durable=False).start()
    rd = embedded.EmbeddedRedis(work / "redis", durable=False).start()
    try:
        url = await pg.ensure_database("bench_ai")
        conn = await asyncpg.connect(url)
        await migrating.apply(conn)
        user_id = await conn.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ('b@x.io', 'x') RETURNING id"
        )
        await conn.close()
        cfg = settings.load(env="dev", database_url=url, redis_url=rd.url)
        pool = await db.create_pool(cfg)
        redis = redis_client.create_redis(cfg)
        async with anthropic_server.serve() as fake:
            ai = config.AISettings(api_key=pydantic.SecretStr("test-bench-key"), base_url=fake.url)
            svc = service.AnalysisService(pool, redis, ai)
            request = models.AnalyzeRequest(symbols=["AAPL", "MSFT"], kind="technical")
            first = await svc.submit(str(user_id), request)
            await svc.wait(first.id)

            hit_ms: list[float] = []
            for _ in range(HITS):
                t0 = time.perf_counter()
                got = await svc.submit(str(user_id), request)
                hit_ms.append((time.perf_counter() - t0) * 1000)
                assert got.cached
            key = next(iter(await redis.keys("ai:cache:*")))
            get_ms: list[float] = []
            for _ in range(HITS):
                t0 = time.perf_counter()
                await redis.get(key)
                get_ms.append((time.perf_counter() - t0) * 1000)
            sel_ms: list[float] = []
            for _ in range(HITS):
                t0 = time.perf_counter()
                await pool.fetchval("SELECT 1")
                sel_ms.append((time.perf_counter() - t0) * 1000)
            p99, base = common.percentile(hit_ms, 99), common.percentile(get_ms, 99)
            common.report(
                f"AI cache hit, {HITS} requests (version query + Redis GET + history row)",
                [
                    ("cache hit p50", common.median(hit_ms), "ms"),
                    ("cache hit p99", p99, "ms"),
                    ("redis GET p99", base, "ms"),
                    ("PostgreSQL SELECT 1 p99", common.percentile(sel_ms, 99), "ms"),
                ],
                baseline="redis GET p99",
            )
            common.ratio("cache-hit p99 / Redis GET p99", p99, base)
            common.ratio("cache-hit p99 / SELECT 1 p99", p99, common.percentile(sel_ms, 99))
            print(f"  cache hit p99 {p99:.2f} ms, target < 5 ms: {'met' if p99 < 5 else 'MISSED'}")

            fake.gate = asyncio.Event()
            calls_before = len(fake.calls)
            fresh = models.AnalyzeRequest(symbols=["NVDA"], question=f"q {uuid.uuid4().hex}")
            t0 = time.perf_counter()
            subs = await asyncio.gather(
                *(svc.submit(str(user_id), fresh) for _ in range(CONCURRENT))
            )
            fake.gate.set()
            for sub in subs:
                await svc.wait(sub.id)
            elapsed = time.perf_counter() - t0
            upstream = len(fake.calls) - calls_before
            common.report(
                f"coalescing, {CONCURRENT} identical concurrent requests",
                [
                    ("upstream calls without coalescing", CONCURRENT, "calls"),
                    ("upstream calls", upstream, "calls"),
                    ("wall time", elapsed * 1000, "ms"),
                ],
                baseline="upstream calls without coalescing",
            )
            common.ratio("upstream calls / requests", upstream, CONCURRENT, target="1/N")
            await svc.aclose()
        await redis.aclose()
        await pool.close()
    finally:
        rd.stop()
        pg.stop()


if __name__ == "__main__":
    os.environ.setdefault("STARKMATTER_AI_QUOTA_PER_HOUR", "100000")
    with tempfile.TemporaryDirectory(prefix="bench-ai-") as tmp:
        asyncio.run(main(Path(tmp)))
