"""Rows PostgreSQL refuses, on real PostgreSQL and Redis: the ingest writer stores every other
row of their batch, dead-letters each refused one (``storage_refused``) and goes on storing;
a failure a retry can cure is retried instead, and dead-letters nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import prometheus_client
import pytest
import redis.asyncio as aioredis

from starkmatter.core import settings
from starkmatter.ingest import pipeline
from starkmatter.ingest.providers import base
from starkmatter.market import validation
from tests.integration.market import bar_checks, ingest_process
from tests.support import LiveServer, sign_up_admin

pytestmark = pytest.mark.timeout(90)

S = 1_000_000_000
MINUTE = 1_700_000_040 * S  # a minute boundary, long past
STORE_S = 20.0
"""Longest a drain may take here: the old writer retried a refused batch for ever."""


def _trade(ms: int, size: int, trade_id: str) -> dict[str, Any]:
    return {"type": "trade", "symbol": "AAPL", "ts": MINUTE + ms * 1_000_000,
            "price": f"100.{ms % 100:02d}", "size": size, "trade_id": trade_id}  # fmt: skip


def _quote(ms: int, bid_size: int) -> dict[str, Any]:
    return {"type": "quote", "symbol": "AAPL", "ts": MINUTE + ms * 1_000_000, "bid": "99.90",
            "ask": "100.10", "bid_size": bid_size, "ask_size": 5}  # fmt: skip


def _counted(name: str, feed: str, **labels: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(name, {"feed": feed, **labels})
    return value or 0.0


@contextlib.asynccontextmanager
async def _running(
    feed: str, pool: asyncpg.Pool, redis: aioredis.Redis
) -> AsyncIterator[pipeline.Pipeline]:
    rules = validation.Rules(symbols=frozenset({"AAPL"}), max_staleness_s=None)
    pipe = pipeline.Pipeline(feed, validation.Validator(rules), pool, redis)
    task = asyncio.create_task(pipe.run())
    try:
        yield pipe
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _store(pipe: pipeline.Pipeline, messages: list[dict[str, Any]], **kw: bool) -> None:
    await pipe.submit([base.Incoming(m) for m in messages])
    async with asyncio.timeout(STORE_S):
        await pipe.drain(**kw)


async def test_refused_rows_are_dead_lettered_the_rest_stored_and_later_batches_go_on(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    db: asyncpg.Connection[Any],
    api: LiveServer,
    config: settings.Settings,
) -> None:
    # Constraints the validator knows nothing of (a DBA's), and a connection that fails twice
    # with a serialization failure first: that one must be retried, not dead-lettered.
    await db.execute("""
        ALTER TABLE market_ticks ADD CONSTRAINT no_lot_of_13 CHECK (size <> 13);
        ALTER TABLE market_quotes ADD CONSTRAINT no_bid_lot_of_13 CHECK (bid_size <> 13);
        CREATE SEQUENCE flaky;
        CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('flaky') <= 2 THEN
                RAISE EXCEPTION 'could not serialize' USING ERRCODE = 'serialization_failure';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER flaky BEFORE INSERT ON market_ticks FOR EACH ROW EXECUTE FUNCTION flaky();
    """)  # fmt: skip
    feed = "refusing"
    refused_before = _counted("starkmatter_ingest_rejected_total", feed, reason="storage_refused")
    retries_before = _counted("starkmatter_ingest_store_retries_total", feed)
    trades = [_trade(i * 20, 13 if i in (7, 31) else 10, f"t{i}") for i in range(40)]
    quotes = [_quote(i * 20 + 5, 13 if i == 4 else 5) for i in range(10)]
    async with _running(feed, pool, redis) as pipe:
        # One submit, one batch: the refused rows share it with the good ones.
        await _store(pipe, [*trades, *quotes])
        assert await db.fetchval("SELECT count(*) FROM market_ticks") == 38
        assert await db.fetchval("SELECT count(*) FROM market_ticks WHERE size = 13") == 0
        assert await db.fetchval("SELECT count(*) FROM market_quotes") == 9
        # The writer goes on storing: a later batch (the next second) is stored too.
        await _store(pipe, [_trade(1_000 + i, 10, f"later{i}") for i in range(5)], close_bars=True)
        assert await db.fetchval("SELECT count(*) FROM market_ticks") == 43
        assert pipe.rejected == 3

    dead = await db.fetch(
        "SELECT reason, symbol, detail, raw FROM market_rejections ORDER BY detail, raw"
    )
    assert [(r["reason"], r["symbol"]) for r in dead] == [("storage_refused", "AAPL")] * 3
    assert [r["detail"].split(" refused it")[0] for r in dead] == [
        "market_quotes", "market_ticks", "market_ticks"
    ]  # fmt: skip
    assert all("(23514)" in r["detail"] and "no_" in r["detail"] for r in dead)
    # The raw payload is the row as a canonical message, exact to the nanosecond.
    raws = [json.loads(r["raw"]) for r in dead]
    assert raws[0] == {"type": "quote", "symbol": "AAPL", "ts": MINUTE + 85_000_000, "bid": "99.9",
                       "ask": "100.1", "bid_size": "13", "ask_size": "5"}  # fmt: skip
    assert sorted(r.get("trade_id") for r in raws[1:]) == ["t31", "t7"]
    assert all(r["size"] == "13" for r in raws[1:])
    # Counted once per refused row; the serialization failures were retried, twice.
    assert _counted("starkmatter_ingest_rejected_total", feed, reason="storage_refused") == (
        refused_before + 3
    )
    assert _counted("starkmatter_ingest_store_retries_total", feed) == retries_before + 2
    # The bars hold exactly the stored trades: not the two the database refused.
    await bar_checks.assert_bars_agree_with_ticks(db)

    admin = await sign_up_admin(api, config.database_url or "")
    listed = await api.client.get(
        "/market/rejections", headers=admin.headers, params={"reason": "storage_refused"}
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["counts"] == {"storage_refused": 3}
    assert len(listed.json()["items"]) == 3


async def test_a_bar_the_database_refuses_is_dead_lettered_and_the_other_bars_are_stored(
    pool: asyncpg.Pool, redis: aioredis.Redis, db: asyncpg.Connection[Any]
) -> None:
    await db.execute("ALTER TABLE market_bars ADD CONSTRAINT small CHECK (volume < 100)")
    # Second 0 trades 120 (refused as a 1 s bar, and so is the minute's), second 1 trades 20.
    trades = [_trade(i * 100, 40, f"a{i}") for i in range(3)]
    trades += [_trade(1_000 + i * 100, 10, f"b{i}") for i in range(2)]
    async with _running("bars", pool, redis) as pipe:
        await _store(pipe, trades, close_bars=True)
    assert await db.fetchval("SELECT count(*) FROM market_ticks") == 5
    stored = await db.fetch("SELECT interval, volume FROM market_bars")
    assert [(r["interval"], int(r["volume"])) for r in stored] == [("1s", 20)]
    dead = await db.fetch("SELECT reason, raw FROM market_rejections ORDER BY raw")
    assert {r["reason"] for r in dead} == {"storage_refused"}
    assert sorted((b["interval"], b["volume"]) for b in (json.loads(r["raw"]) for r in dead)) == [
        ("1m", "140"), ("1s", "120")
    ]  # fmt: skip


async def test_a_message_with_text_postgresql_cannot_hold_is_dead_lettered_with_its_batch(
    pool: asyncpg.Pool, redis: aioredis.Redis, db: asyncpg.Connection[Any]
) -> None:
    # Malformed symbols are dead-lettered as they came: PostgreSQL's text refuses a NUL, and
    # a lone surrogate (a JSON "\ud800" escape) cannot even be encoded as UTF-8.
    bad = [
        {**_trade(100, 10, "n"), "symbol": "AA\x00PL"},
        {**_trade(200, 10, "s"), "symbol": "\ud800"},
    ]
    async with _running("text", pool, redis) as pipe:
        await _store(pipe, [_trade(0, 10, "ok"), *bad])
        await _store(pipe, [_trade(1_000, 10, "later")])
    assert await db.fetchval("SELECT count(*) FROM market_ticks") == 2
    dead = await db.fetch("SELECT reason, symbol FROM market_rejections ORDER BY id")
    assert [(r["reason"], r["symbol"]) for r in dead] == [
        ("malformed", "AA\\u0000PL"), ("malformed", "\\ud800")
    ]  # fmt: skip


async def test_sigterm_stores_a_feed_whose_rows_the_database_partly_refuses_then_exits(
    config: settings.Settings, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    # About one trade in seven is refused, in nearly every batch: the worker must keep
    # storing the rest, and still store what it holds when it is stopped.
    await db.execute("ALTER TABLE market_ticks ADD CONSTRAINT sevenths CHECK (uid % 7 <> 0)")
    symbols = {"AAPL": "227.50", "MSFT": "415.20"}
    code, log = await ingest_process.run_until_sigterm(
        config, db, tmp_path, "sevenths", symbols, seed=11
    )
    assert code == 0, log[-2000:]
    assert '"ingest.drained"' in log and "drain_on_stop_failed" not in log, log[-2000:]
    refused = await db.fetchval(
        "SELECT count(*) FROM market_rejections WHERE reason = 'storage_refused'"
    )
    assert refused > 0
    # The bars (the open ones stored at the stop included) hold exactly the stored trades:
    # none of the refused ones.
    await bar_checks.assert_bars_agree_with_ticks(db)


async def test_ticks_for_a_day_retention_dropped_from_under_the_cache_are_stored_again(
    pool: asyncpg.Pool, redis: aioredis.Redis, db: asyncpg.Connection[Any]
) -> None:
    feed = "dropped_day"
    retries_before = _counted("starkmatter_ingest_store_retries_total", feed)
    async with _running(feed, pool, redis) as pipe:
        await _store(pipe, [_trade(i * 10, 10, f"a{i}") for i in range(5)])
        # Retention drops the day the writer has cached as created.
        dropped = await db.fetchval(
            "SELECT market_drop_partitions_before('market_ticks', $1::date + 1)",
            await db.fetchval("SELECT (min(ts) AT TIME ZONE 'UTC')::date FROM market_ticks"),
        )
        assert dropped == 1
        await _store(pipe, [_trade(1_000 + i * 10, 10, f"b{i}") for i in range(5)])
        assert pipe.rejected == 0
    # The day's partition was created again; the later ticks were stored, none dead-lettered.
    assert await db.fetchval("SELECT count(*) FROM market_ticks") == 5
    assert await db.fetchval("SELECT count(*) FROM market_rejections") == 0
    assert _counted("starkmatter_ingest_store_retries_total", feed) == retries_before + 1


async def test_a_check_refusing_every_row_is_retried_and_the_rows_stored_once_it_is_dropped(
    pool: asyncpg.Pool, redis: aioredis.Redis, db: asyncpg.Connection[Any]
) -> None:
    # A DBA's CHECK that refuses everything is the table's fault, not the rows': dead-lettering
    # would turn the whole feed into dead letters.
    await db.execute("ALTER TABLE market_ticks ADD CONSTRAINT frozen CHECK (size < 0)")
    feed = "frozen"
    retries_before = _counted("starkmatter_ingest_store_retries_total", feed)
    async with _running(feed, pool, redis) as pipe:
        await pipe.submit([base.Incoming(_trade(i * 10, 10, f"f{i}")) for i in range(30)])
        async with asyncio.timeout(STORE_S):
            while _counted("starkmatter_ingest_store_retries_total", feed) < retries_before + 3:  # noqa: ASYNC110 - counted by the writer task
                await asyncio.sleep(0.05)
        assert await db.fetchval("SELECT count(*) FROM market_rejections") == 0
        assert await db.fetchval("SELECT count(*) FROM market_ticks") == 0
        await db.execute("ALTER TABLE market_ticks DROP CONSTRAINT frozen")
        async with asyncio.timeout(STORE_S):
            await pipe.drain(close_bars=True)
        assert pipe.rejected == 0
    assert await db.fetchval("SELECT count(*) FROM market_ticks") == 30
    assert await db.fetchval("SELECT count(*) FROM market_rejections") == 0
    await bar_checks.assert_bars_agree_with_ticks(db)


async def test_two_bad_rows_among_fifty_are_dead_lettered_and_nothing_is_retried(
    pool: asyncpg.Pool, redis: aioredis.Redis, db: asyncpg.Connection[Any]
) -> None:
    # The first and the last row are bad: whichever rows are probed alone, not all three fail.
    await db.execute("ALTER TABLE market_ticks ADD CONSTRAINT no_lot_of_13 CHECK (size <> 13)")
    feed = "two_bad"
    retries_before = _counted("starkmatter_ingest_store_retries_total", feed)
    trades = [_trade(i * 10, 13 if i in (0, 49) else 10, f"t{i}") for i in range(50)]
    async with _running(feed, pool, redis) as pipe:
        await _store(pipe, trades, close_bars=True)
        assert pipe.rejected == 2
    assert await db.fetchval("SELECT count(*) FROM market_ticks") == 48
    dead = await db.fetch("SELECT reason, raw FROM market_rejections")
    assert {r["reason"] for r in dead} == {"storage_refused"}
    assert sorted(json.loads(r["raw"])["trade_id"] for r in dead) == ["t0", "t49"]
    assert _counted("starkmatter_ingest_store_retries_total", feed) == retries_before
    await bar_checks.assert_bars_agree_with_ticks(db)


async def test_a_row_refused_like_a_missing_partition_while_its_day_exists_is_not_retried_for_ever(
    pool: asyncpg.Pool, redis: aioredis.Redis, db: asyncpg.Connection[Any]
) -> None:
    # A trigger refusing a row with a check violation that names no constraint reads like a
    # row that found no partition: retried once (with the cache forgotten), then, its day
    # just checked, dead-lettered.
    await db.execute("""
        CREATE FUNCTION no_13() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.size = 13 THEN
                RAISE EXCEPTION 'lot of 13' USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER no_13 BEFORE INSERT ON market_ticks FOR EACH ROW EXECUTE FUNCTION no_13();
    """)  # fmt: skip
    feed = "no_13"
    async with _running(feed, pool, redis) as pipe:
        await _store(pipe, [_trade(i * 10, 13 if i == 2 else 10, f"a{i}") for i in range(5)])
        later = [_trade(1_000 + i * 10, 13 if i == 3 else 10, f"b{i}") for i in range(5)]
        await _store(pipe, later)
        assert pipe.rejected == 2
    assert await db.fetchval("SELECT count(*) FROM market_ticks") == 8
    dead = await db.fetch("SELECT raw FROM market_rejections")
    assert sorted(json.loads(r["raw"])["trade_id"] for r in dead) == ["a2", "b3"]
