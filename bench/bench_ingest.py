"""Ingestion throughput: the full pipeline against the raw ceiling and a naive loop.

One run, same machine, same embedded PostgreSQL (fsync on) and Redis:

* pipeline — canonical provider messages (half trades, half quotes, 100 symbols) through
  validate -> normalize -> enrich (1 s and 1 min bars, indicators) -> store (binary COPY)
  -> cache (latest quote per symbol) -> publish (one PUBLISH per event);
* raw ceiling — the same rows as Decimal/datetime records through asyncpg's
  ``copy_records_to_table``, overlapped with a pipelined PUBLISH of a pre-built payload
  per row: no validation, no enrichment, no encoding of our own;
* naive — one INSERT and one PUBLISH per row, awaited one after the other.

A stricter ceiling is printed too: the same rows already in our binary COPY format and the
publishes already RESP-encoded, so only the I/O is left; it shows the per-event cost left.

Targets: pipeline >= 0.5 x raw ceiling, and >= 20 x naive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from starkmatter.core import embedded, migrating
from starkmatter.ingest import pipeline, publishing
from starkmatter.ingest.providers import base
from starkmatter.market import models, normalizing, storing, validation

EVENTS = int(os.environ.get("BENCH_INGEST_EVENTS", "200000"))
NAIVE_EVENTS = int(os.environ.get("BENCH_INGEST_NAIVE_EVENTS", "3000"))
FRAME = 500  # messages per provider frame
SYMBOLS = [f"S{i:03d}" for i in range(100)]


def make_messages(count: int, start_ns: int) -> list[dict[str, Any]]:
    messages = []
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        cents = 10_000 + (i * 7919) % 200
        ts = start_ns + i * 1_000
        if i % 2:
            messages.append({"type": "trade", "symbol": symbol, "ts": ts,
                             "price": f"{cents // 100}.{cents % 100:02d}", "size": 100,
                             "trade_id": str(i), "seq": i})  # fmt: skip
        else:
            messages.append({"type": "quote", "symbol": symbol, "ts": ts,
                             "bid": f"{cents // 100}.{cents % 100:02d}",
                             "ask": f"{(cents + 2) // 100}.{(cents + 2) % 100:02d}",
                             "bid_size": 300, "ask_size": 400, "seq": i})  # fmt: skip
    return messages


async def reset(pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
    await pool.execute("TRUNCATE market_ticks, market_quotes, market_bars, market_rejections")
    await redis.flushall()


async def run_pipeline(
    pool: asyncpg.Pool, redis: aioredis.Redis, messages: list[dict[str, Any]]
) -> float:
    validator = validation.Validator(
        validation.Rules(symbols=frozenset(SYMBOLS), max_staleness_s=3600, max_skew_s=3600)
    )
    pipe = pipeline.Pipeline("bench", validator, pool, redis)
    batches = [
        [base.Incoming(dict(m), None, "", 0) for m in messages[i : i + FRAME]]
        for i in range(0, len(messages), FRAME)
    ]
    task = asyncio.create_task(pipe.run())
    started = time.perf_counter()
    for batch in batches:
        await pipe.submit(batch)
    await pipe.drain()
    elapsed = time.perf_counter() - started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert pipe.rejected == 0, f"{pipe.rejected} rejected"
    stored = await pool.fetchval(
        "SELECT (SELECT count(*) FROM market_ticks) + (SELECT count(*) FROM market_quotes)"
    )
    assert stored == len(messages), (stored, len(messages))
    return len(messages) / elapsed


def records(messages: list[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    ticks, quotes = [], []
    for m in messages:
        ts = models.to_datetime(normalizing.parse_timestamp(m["ts"]))
        uid = int(m["seq"])
        if m["type"] == "trade":
            ticks.append((ts, m["symbol"], models.to_decimal(models.to_fixed(m["price"])),
                          models.to_decimal(models.to_fixed(m["size"])), uid))  # fmt: skip
        else:
            quotes.append((ts, m["symbol"], models.to_decimal(models.to_fixed(m["bid"])),
                           models.to_decimal(models.to_fixed(m["ask"])),
                           models.to_decimal(models.to_fixed(m["bid_size"])),
                           models.to_decimal(models.to_fixed(m["ask_size"])), uid))  # fmt: skip
    return ticks, quotes


async def run_ceiling(
    pool: asyncpg.Pool, redis: aioredis.Redis, messages: list[dict[str, Any]]
) -> float:
    ticks, quotes = records(messages)
    payloads = [
        (f"market:quotes:{m['symbol']}", f'{{"symbol":"{m["symbol"]}","ts":{m["ts"]}}}')
        for m in messages
    ]
    async with pool.acquire() as conn:
        for day in {t[0].date() for t in ticks + quotes}:
            await conn.execute("SELECT market_ensure_partition('market_ticks', $1)", day)
            await conn.execute("SELECT market_ensure_partition('market_quotes', $1)", day)

    async def copy(table: str, rows: list[tuple[Any, ...]], columns: list[str]) -> None:
        async with pool.acquire() as conn:
            for i in range(0, len(rows), 5_000):
                await conn.copy_records_to_table(
                    table, records=rows[i : i + 5_000], columns=columns
                )

    async def publish() -> None:
        for i in range(0, len(payloads), 5_000):
            pipe = redis.pipeline(transaction=False)
            for channel, payload in payloads[i : i + 5_000]:
                pipe.publish(channel, payload)
            await pipe.execute()

    started = time.perf_counter()
    await asyncio.gather(
        copy("market_ticks", ticks, ["ts", "symbol", "price", "size", "uid"]),
        copy(
            "market_quotes", quotes, ["ts", "symbol", "bid", "ask", "bid_size", "ask_size", "uid"]
        ),
        publish(),
    )
    return len(messages) / (time.perf_counter() - started)


async def run_preencoded(
    pool: asyncpg.Pool, redis: aioredis.Redis, messages: list[dict[str, Any]]
) -> float:
    """Stricter ceiling: rows already in our binary COPY format, PUBLISH already in RESP."""
    events = [normalizing.normalize(m) for m in messages]
    trades = [e for e in events if isinstance(e, models.Trade)]
    quotes = [e for e in events if isinstance(e, models.Quote)]
    chunks = [
        ("market_ticks", storing.TICK_COLUMNS, storing.encode_trades(trades[i : i + 5_000]),
         len(trades[i : i + 5_000]))
        for i in range(0, len(trades), 5_000)
    ] + [
        ("market_quotes", storing.QUOTE_COLUMNS, storing.encode_quotes(quotes[i : i + 5_000]),
         len(quotes[i : i + 5_000]))
        for i in range(0, len(quotes), 5_000)
    ]  # fmt: skip
    commands = [
        publishing.encode_publish(f"market:quotes:{m['symbol']}".encode(), b'{"t":1}')
        for m in messages
    ]
    writer = publishing.RedisWriter(redis)

    async def copy(part: list[Any]) -> None:
        async with pool.acquire() as conn:
            for table, columns, data, rows in part:
                await storing.copy_rows(conn, table, columns, data, rows)

    async def publish() -> None:
        for i in range(0, len(commands), 5_000):
            await writer.write(commands[i : i + 5_000])
        await writer.settle()

    started = time.perf_counter()
    await asyncio.gather(copy(chunks[0::2]), copy(chunks[1::2]), publish())
    elapsed = time.perf_counter() - started
    await writer.close()
    return len(messages) / elapsed


async def run_naive(
    pool: asyncpg.Pool, redis: aioredis.Redis, messages: list[dict[str, Any]]
) -> float:
    ticks, quotes = records(messages)
    started = time.perf_counter()
    async with pool.acquire() as conn:
        for row in ticks:
            await conn.execute(
                "INSERT INTO market_ticks (ts, symbol, price, size, uid) "
                "VALUES ($1, $2, $3, $4, $5)",
                *row,
            )
            await redis.publish(f"market:quotes:{row[1]}", str(row[2]))
        for row in quotes:
            await conn.execute(
                "INSERT INTO market_quotes (ts, symbol, bid, ask, bid_size, ask_size, uid) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)", *row)  # fmt: skip
            await redis.publish(f"market:quotes:{row[1]}", str(row[2]))
    return len(messages) / (time.perf_counter() - started)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        pg = embedded.EmbeddedPostgres(Path(tmp) / "pg", durable=True).start()
        rd = embedded.EmbeddedRedis(Path(tmp) / "redis", durable=False).start()
        try:
            url = await pg.ensure_database("bench")
            pool = await asyncpg.create_pool(url, min_size=4, max_size=6)
            redis = aioredis.Redis.from_url(rd.url)
            async with pool.acquire() as conn:
                await migrating.apply(conn)
            now = time.time_ns()
            messages = make_messages(EVENTS, now - EVENTS * 1_000)
            # Warm-up (partitions, caches, JIT-free Python paths), not measured.
            await run_pipeline(pool, redis, make_messages(20_000, now - 10**12))
            results: dict[str, list[float]] = {
                "pipeline": [], "ceiling": [], "preencoded": [], "naive": []
            }  # fmt: skip
            for _ in range(3):
                await reset(pool, redis)
                results["ceiling"].append(await run_ceiling(pool, redis, messages))
                await reset(pool, redis)
                results["preencoded"].append(await run_preencoded(pool, redis, messages))
                await reset(pool, redis)
                results["pipeline"].append(await run_pipeline(pool, redis, messages))
            await reset(pool, redis)
            results["naive"].append(await run_naive(pool, redis, messages[:NAIVE_EVENTS]))
            pipeline_rate = common.median(results["pipeline"])
            ceiling_rate = common.median(results["ceiling"])
            naive_rate = common.median(results["naive"])
            preencoded_rate = common.median(results["preencoded"])
            common.report(
                f"ingest: {EVENTS} events (trades + quotes, 100 symbols), median of 3",
                [
                    ("pipeline validate..publish", pipeline_rate, "events/s"),
                    ("raw ceiling COPY + pipelined PUBLISH", ceiling_rate, "rows/s"),
                    ("naive INSERT + PUBLISH per row", naive_rate, "rows/s"),
                    ("stricter ceiling: pre-encoded COPY + RESP", preencoded_rate, "rows/s"),
                ],
                baseline="raw ceiling COPY + pipelined PUBLISH",
            )
            common.ratio("pipeline / raw ceiling", pipeline_rate, ceiling_rate, target=">= 0.5")
            common.ratio("pipeline / naive", pipeline_rate, naive_rate, target=">= 20")
            common.ratio(
                "pipeline / stricter ceiling (our encoders, no per-event work)",
                pipeline_rate,
                preencoded_rate,
            )
            await redis.aclose()
            await pool.close()
        finally:
            rd.stop()
            pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
