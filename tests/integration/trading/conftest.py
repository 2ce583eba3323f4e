"""Trading tier: the real API (the root `api` fixture), a real order worker, embedded
PostgreSQL and Redis, and helpers to publish market data the way ingest does."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from starkmatter.core import db, redis_client, settings
from starkmatter.orders import processing
from starkmatter.orders.config import OrdersConfig
from starkmatter.orders.service import make_broker


@contextlib.asynccontextmanager
async def running_worker(
    config: settings.Settings, orders_config: OrdersConfig
) -> AsyncIterator[processing.Worker]:
    pool = await db.create_pool(config)
    redis = redis_client.create_redis(config)
    worker = processing.Worker(pool, redis, orders_config, make_broker(orders_config, redis))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await worker.broker.aclose()
        await redis.aclose()
        await pool.close()


@pytest.fixture
def orders_config() -> OrdersConfig:
    return OrdersConfig(poll_interval_ms=50)


@pytest.fixture
async def worker(
    config: settings.Settings, orders_config: OrdersConfig
) -> AsyncIterator[processing.Worker]:
    async with running_worker(config, orders_config) as w:
        yield w


async def publish_market(
    redis: aioredis.Redis,
    symbol: str,
    *,
    bid: str,
    ask: str,
    asks: Sequence[tuple[str, str]] = (),
    bids: Sequence[tuple[str, str]] = (),
    last: str | None = None,
    ts: dt.datetime | None = None,
) -> None:
    """Write quote:{SYMBOL} and depth:{SYMBOL} exactly as the market-data contract says."""
    ts = ts or dt.datetime.now(dt.UTC)
    asks = asks or ((ask, "1000"),)
    bids = bids or ((bid, "1000"),)
    quote = {
        "symbol": symbol,
        "bid": bid,
        "ask": ask,
        "bid_size": bids[0][1],
        "ask_size": asks[0][1],
        "last": last or str((Decimal(bid) + Decimal(ask)) / 2),
        "last_size": "1",
        "ts": ts.isoformat(),
    }
    depth = {
        "symbol": symbol,
        "bids": [list(b) for b in bids],
        "asks": [list(a) for a in asks],
        "ts": ts.isoformat(),
    }
    await redis.mset({f"quote:{symbol}": json.dumps(quote), f"depth:{symbol}": json.dumps(depth)})


async def wait_for_order(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    order_id: str,
    *statuses: str,
    within_s: float = 15.0,
) -> dict[str, Any]:
    """Poll GET /orders/{id} until it reaches one of ``statuses``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        body: dict[str, Any] = (await client.get(f"/orders/{order_id}", headers=headers)).json()
        if body.get("status") in statuses:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"order stayed {body.get('status')}, wanted {statuses}: {body}")
        await asyncio.sleep(0.02)
