"""The simulator over a real WebSocket, through the pipeline into PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.core import settings
from starkmatter.ingest import pipeline, simulation, simulator, worker
from starkmatter.ingest.providers import base, simulated

SYMBOLS = {"AAPL": "227.50", "MSFT": "415.20", "BRK.B": "452.30", "BTC/USD": "67250.00"}


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Poll a condition on external state (rows, sockets) until it holds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state lives in other processes
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_feed(
    config: settings.Settings, provider: base.Provider, spec: worker.FeedSpec
) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(config.database_url, min_size=1, max_size=4)
    redis = aioredis.Redis.from_url(config.redis_url or "")
    task = asyncio.create_task(
        worker.run_feed(
            spec, pool, redis, provider=provider,
            config=pipeline.PipelineConfig(flush_rows=200, flush_interval_s=0.05),
        )
    )  # fmt: skip
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()
        await pool.close()


def _spec() -> worker.FeedSpec:
    return worker.FeedSpec(name="sim", symbols=tuple(SYMBOLS), max_daily_move_percent=10)


def _good_counts(sim: simulation.MarketSimulation, emitted: list[simulation.Emitted]) -> Any:
    counts: collections.Counter[str] = collections.Counter()
    for e in emitted:
        if e.bad is None:
            counts[json.loads(e.text)["type"]] += 1
    return counts


class RecordingSimulation(simulation.MarketSimulation):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.emitted: list[simulation.Emitted] = []

    def step(self, now_ns: int, count: int) -> list[simulation.Emitted]:
        out = super().step(now_ns, count)
        self.emitted.extend(out)
        return out


@pytest.mark.timeout(60)
async def test_every_bad_message_class_lands_in_the_dead_letter_table_with_its_reason(
    config: settings.Settings, db: asyncpg.Connection[Any], redis: aioredis.Redis
) -> None:
    sim = RecordingSimulation(SYMBOLS, seed=7, bad_share=0.25)
    async with simulator.SimulatorServer(sim, rate=2_000, limit=1_600, paused=True) as server:
        provider = simulated.SimulatorProvider("sim", server.url, seed=1)
        async with running_feed(config, provider, _spec()):
            await eventually(lambda: _true(server.clients == 1))
            server.paused = False

            async def all_stored() -> bool:
                rejected = await db.fetchval("SELECT count(*) FROM market_rejections")
                ticks = await db.fetchval("SELECT count(*) FROM market_ticks")
                quotes = await db.fetchval("SELECT count(*) FROM market_quotes")
                good = _good_counts(sim, sim.emitted)
                return (
                    server.generated == 1_600
                    and rejected == sum(sim.bad_counts.values())
                    and ticks == good["trade"]
                    and quotes == good["quote"]
                )

            await eventually(all_stored)

            async def heartbeat_written() -> bool:
                return bool(await redis.hexists("feed:heartbeat:sim", "last_tick_ts"))

            await eventually(heartbeat_written)
            beat = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in (await redis.hgetall("feed:heartbeat:sim")).items()
            }
            assert {"last_tick_ts", "ticks_per_s", "rejected_per_s", "updated_ts"} <= set(beat)
            assert beat["last_tick_ts"].endswith("Z")

    rows = await db.fetch("SELECT reason, count(*) AS n FROM market_rejections GROUP BY reason")
    by_reason = {row["reason"]: row["n"] for row in rows}
    assert by_reason == {kind.value: n for kind, n in sim.bad_counts.items() if n}
    assert set(by_reason) == {kind.value for kind in simulation.BadKind}
    malformed = await db.fetchval(
        "SELECT raw FROM market_rejections WHERE reason = 'malformed' LIMIT 1"
    )
    assert malformed.startswith('{"type":"trade"')
    stale = await db.fetchrow(
        "SELECT raw, symbol, feed FROM market_rejections WHERE reason = 'stale_timestamp' LIMIT 1"
    )
    assert json.loads(stale["raw"])["type"] == "trade" and stale["feed"] == "sim"
    quote = json.loads(await redis.get("quote:AAPL") or "null")
    assert set(quote) == {"symbol", "bid", "ask", "bid_size", "ask_size", "last", "last_size", "ts"}
    assert quote["ts"].endswith("Z")
    depth = json.loads(await redis.get("depth:MSFT") or "null")
    assert len(depth["bids"]) == 5 and depth["bids"][0][0] > depth["bids"][1][0]


@pytest.mark.timeout(60)
async def test_a_provider_disconnect_mid_stream_reconnects_and_resumes_without_duplicates(
    config: settings.Settings, db: asyncpg.Connection[Any]
) -> None:
    sim = RecordingSimulation(SYMBOLS, seed=11, bad_share=0.0)
    async with simulator.SimulatorServer(sim, rate=1_000, limit=3_000, paused=True) as server:
        provider = simulated.SimulatorProvider(
            "sim", server.url, seed=1, backoff=base.Backoff(initial_s=0.05, maximum_s=0.2)
        )
        async with running_feed(config, provider, _spec()):
            await eventually(lambda: _true(server.clients == 1))
            server.paused = False
            await eventually(lambda: _at_least(db, 300))
            sim_paused_at = server.generated
            assert server.drop_clients() == 1
            await eventually(lambda: _true(provider.sessions >= 2 and server.clients == 1))
            good = _good_counts(sim, sim.emitted)

            async def complete() -> bool:
                # Both counts, read again each time: the last events may reach sim.emitted
                # (and the quote table) a moment after the trades are all stored.
                nonlocal good
                good = _good_counts(sim, sim.emitted)
                trades = await db.fetchval("SELECT count(*) FROM market_ticks")
                quotes = await db.fetchval("SELECT count(*) FROM market_quotes")
                return server.generated == 3_000 and (trades, quotes) == (
                    good["trade"],
                    good["quote"],
                )

            await eventually(complete)
    # Every trade the simulator generated is stored exactly once: none lost in the cut,
    # none stored twice by the resume.
    assert sim_paused_at < 3_000 and provider.sessions >= 2
    assert await db.fetchval("SELECT count(*) FROM market_quotes") == good["quote"]
    assert await db.fetchval("SELECT count(*) FROM market_rejections") == 0
    assert provider.sequences.missing == 0


async def _at_least(db: asyncpg.Connection[Any], n: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM market_ticks") >= n)


async def _true(value: bool) -> bool:
    return value
