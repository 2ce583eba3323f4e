"""The Alpaca-protocol adapter, the REST poller and CSV replay, end to end into PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from websockets.asyncio import server as ws_server

from starkmatter.core import settings
from starkmatter.ingest import alpaca_server, pipeline, simulation, worker
from starkmatter.ingest.providers import alpaca, base, polling, replay
from starkmatter.market import storing

pytestmark = pytest.mark.timeout(60)
SYMBOLS = {"AAPL": "227.50", "MSFT": "415.20"}
FAST = base.Backoff(initial_s=0.05, maximum_s=0.2)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state lives in other processes
            await asyncio.sleep(0.05)


async def _true(value: bool) -> bool:
    return value


@contextlib.asynccontextmanager
async def feed_task(
    config: settings.Settings, provider: base.Provider, spec: worker.FeedSpec
) -> AsyncIterator[asyncio.Task[None]]:
    pool = await asyncpg.create_pool(config.database_url, min_size=1, max_size=4)
    redis = aioredis.Redis.from_url(config.redis_url or "")
    task = asyncio.create_task(
        worker.run_feed(spec, pool, redis, provider=provider,
                        config=pipeline.PipelineConfig(flush_rows=100, flush_interval_s=0.05))
    )  # fmt: skip
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, base.FatalProviderError):
            await task
        await redis.aclose()
        await pool.close()


async def _count(db: asyncpg.Connection[Any], table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


async def test_alpaca_stream_is_authenticated_subscribed_and_stored_across_a_reconnect(
    config: settings.Settings, db: asyncpg.Connection[Any]
) -> None:
    sim = simulation.MarketSimulation(SYMBOLS, seed=3)
    spec = worker.FeedSpec(name="alpaca", provider="websocket", symbols=tuple(SYMBOLS))
    async with alpaca_server.AlpacaServer(sim, key="k", secret="s", rate=500, limit=1_000,
                                          paused=True) as server:  # fmt: skip
        provider = alpaca.AlpacaProvider("alpaca", server.url, list(SYMBOLS), token="k:s",
                                         backoff=FAST)  # fmt: skip
        async with feed_task(config, provider, spec):
            await eventually(lambda: _true(server.clients == 1))
            server.paused = False
            await eventually(lambda: _true(server.generated >= 400))
            server.paused = True
            assert server.drop_clients() == 1
            await eventually(lambda: _true(server.clients == 1 and provider.sessions >= 2))
            server.paused = False
            trades = lambda: sum(m["T"] == "t" for m in server.sent)  # noqa: E731
            quotes = lambda: sum(m["T"] == "q" for m in server.sent)  # noqa: E731

            async def stored() -> bool:
                return server.generated == 1_000 and (
                    await _count(db, "market_ticks"),
                    await _count(db, "market_quotes"),
                ) == (trades(), quotes())

            await eventually(stored)
    assert await _count(db, "market_rejections") == 0
    # Alpaca has no sequence numbers: the outage window is how the gap shows.
    (gap,) = provider.gaps
    assert 0 < gap[0] < gap[1]


async def test_alpaca_refused_credentials_stop_the_feed_instead_of_retrying(
    config: settings.Settings,
) -> None:
    sim = simulation.MarketSimulation(SYMBOLS, seed=3)
    async with alpaca_server.AlpacaServer(sim, key="k", secret="s") as server:
        provider = alpaca.AlpacaProvider("alpaca", server.url, ["AAPL"], token="k:wrong")
        with pytest.raises(base.FatalProviderError, match="auth failed"):
            await provider.run(lambda batch: asyncio.sleep(0))
        assert provider.sessions == 1


async def test_an_unexpected_alpaca_reply_echoing_the_secret_is_logged_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "s3cr3t-value-of-the-feed"
    connections = 0

    def reply(request: dict[str, Any], note: str) -> list[dict[str, Any]]:
        return [{"T": "success", "msg": "unexpected", "note": note, "request": request}]

    async def handle(connection: ws_server.ServerConnection) -> None:
        # A proxy that echoes the auth request instead of Alpaca's answer.
        nonlocal connections
        connections += 1
        await connection.send(json.dumps([{"T": "success", "msg": "connected"}]))
        request = json.loads(await connection.recv())
        # The secret straddles the 200th character of the reply's text.
        padding = 195 - str(reply(request, "")).index(secret)
        await connection.send(json.dumps(reply(request, "x" * padding)))

    async with ws_server.serve(handle, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        provider = alpaca.AlpacaProvider("alpaca", f"ws://127.0.0.1:{port}", ["AAPL"],
                                         token=f"k:{secret}", backoff=FAST)  # fmt: skip
        task = asyncio.create_task(provider.run(lambda batch: asyncio.sleep(0)))
        try:
            await eventually(lambda: _true(connections >= 2), within=10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if '"ingest.provider_disconnected"' in line]  # fmt: skip
    assert lines, "the failed session was not logged"
    error = lines[0]["error"]
    assert error.startswith("alpaca: expected 'authenticated', got [{'T': 'success'")
    assert secret[:5] not in error
    assert "'secret': '***'" in error


@contextlib.asynccontextmanager
async def json_http_server(documents: list[bytes]) -> AsyncIterator[str]:
    """Serves the next document on every GET (the last one forever)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = documents.pop(0) if len(documents) > 1 else documents[0]
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/quotes"
    finally:
        server.close()
        await server.wait_closed()


async def test_rest_poller_maps_vendor_fields_and_skips_unchanged_state(
    config: settings.Settings, db: asyncpg.Connection[Any]
) -> None:
    now = datetime.datetime.now(datetime.UTC)

    def document(bid: str, seconds: int) -> bytes:
        ts = (now + datetime.timedelta(seconds=seconds)).isoformat()
        return json.dumps({"data": {"quotes": [
            {"sym": "aapl", "quote": {"b": bid, "a": "227.60", "bs": 3, "as": 4, "time": ts}},
        ]}}).encode()  # fmt: skip

    documents = [document("227.40", 0), document("227.40", 0), document("227.45", 1)]
    mapping = polling.FieldMapping.from_spec({
        "items": "data.quotes", "symbol": "sym", "ts": "quote.time", "bid": "quote.b",
        "ask": "quote.a", "bid_size": "quote.bs", "ask_size": "quote.as",
    })  # fmt: skip
    spec = worker.FeedSpec(name="rest", provider="rest", symbols=("AAPL",))
    async with json_http_server(documents) as url:
        provider = polling.RestPoller("rest", url, mapping, interval_s=0.05)
        async with feed_task(config, provider, spec):
            await eventually(lambda: _true(provider.polls >= 5))
            await eventually(lambda: _count_is(db, "market_quotes", 2))
    rows = await db.fetch("SELECT bid::text FROM market_quotes ORDER BY ts")
    assert [r["bid"] for r in rows] == ["227.40000000", "227.45000000"]
    assert await _count(db, "market_rejections") == 0


async def _count_is(db: asyncpg.Connection[Any], table: str, n: int) -> bool:
    return await _count(db, table) == n


async def test_csv_replay_backfills_once_with_its_rejections_and_old_partitions_drop_whole(
    config: settings.Settings, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    path = tmp_path / "backfill.csv"
    rows = ["type,symbol,ts,price,size,trade_id"]
    rows += [f"trade,AAPL,2020-03-02T14:30:{i:02d}.5Z,{100 + i}.25,10,t{i}" for i in range(50)]
    rows += ["trade,AAPL,2020-03-02T14:31:00Z,-5,10,bad", "trade,AAPL,only-four-columns"]
    path.write_text("\n".join(rows) + "\n")
    spec = worker.FeedSpec(name="backfill", provider="csv", symbols=("AAPL",),
                           max_tick_age_s=None, max_daily_move_percent=100)  # fmt: skip
    for _ in range(2):
        async with feed_task(config, replay.CsvReplay("backfill", path), spec) as task:
            await task
    assert await _count(db, "market_ticks") == 50
    reasons = await db.fetch("SELECT reason, origin FROM market_rejections ORDER BY id")
    assert [r["reason"] for r in reasons] == ["invalid_price", "malformed"]
    lines = [r["origin"].rsplit(":", 1)[0] for r in reasons]
    assert lines == ["backfill.csv:52", "backfill.csv:53"]
    updates = await db.fetch("SELECT payload FROM event_outbox WHERE event = 'MarketDataUpdate'")
    assert updates and all(u["payload"]["feed"] == "backfill" for u in updates)
    assert {s for u in updates for s in u["payload"]["symbols"]} == {"AAPL"}
    bars = await db.fetch(
        "SELECT ts, open::text, close::text, trades FROM market_bars WHERE interval = '1m'"
    )
    assert len(bars) == 1 and bars[0]["trades"] == 50 and bars[0]["close"] == "149.25000000"
    assert await db.fetchval("SELECT to_regclass('market_ticks_20200302')") is not None
    dropped = await storing.drop_partitions_before(db, datetime.date(2020, 3, 3))
    assert dropped["market_ticks"] == 1
    assert await _count(db, "market_ticks") == 0
