"""The scheduled P&L recalculation (Celery's ``recalculate_pnl``) stores what it computes."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.orders.processing import Worker
from starkmatter.tasks import jobs
from tests.integration.trading.conftest import publish_market, wait_for_order
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)


async def test_recalculation_marks_positions_snapshots_and_notifies_the_holder(
    api: LiveServer, worker: Worker, redis: aioredis.Redis, database_url: str
) -> None:
    holder = await sign_up(api.client)
    await sign_up(api.client)  # a funded account holding nothing: not revalued
    await publish_market(worker.redis, "MSFT", bid="399.99", ask="400.01")
    placed = await api.client.post(
        "/orders", headers=holder.headers,
        json={"client_order_id": "mtm", "symbol": "MSFT", "side": "buy", "quantity": "4"},
    )  # fmt: skip
    assert placed.status_code == 201, placed.text
    await wait_for_order(api.client, holder.headers, placed.json()["id"], "Filled")
    await publish_market(worker.redis, "MSFT", bid="409.99", ask="410.01")
    await redis.set(f"cache:portfolio:{holder.user_id}", "stale")
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"portfolio:{holder.user_id}")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        before = await pool.fetchval("SELECT count(*) FROM portfolio_snapshots")
        assert await jobs.recalculate(pool, redis, None) == 1
        mark = await pool.fetchval(
            "SELECT mark_price FROM trading_positions WHERE user_id = $1 AND symbol = 'MSFT'",
            uuid.UUID(holder.user_id),
        )
        snapshot = await pool.fetchrow(
            """SELECT unrealized_pnl, equity FROM portfolio_snapshots WHERE user_id = $1
               ORDER BY ts DESC, id DESC LIMIT 1""",
            uuid.UUID(holder.user_id),
        )
        after = await pool.fetchval("SELECT count(*) FROM portfolio_snapshots")
    finally:
        await pool.close()
    assert mark == Decimal(410)  # the mid
    assert snapshot is not None and snapshot["unrealized_pnl"] == Decimal("39.96")  # (410-400.01)*4
    assert after == before + 1  # the holder only; the bystander holds nothing
    assert await redis.get(f"cache:portfolio:{holder.user_id}") is None
    marked = None
    while marked is None:  # the fill's own notification may still be on its way
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        if message["type"] == "message" and json.loads(message["data"]).get("reason"):
            marked = json.loads(message["data"])
    await pubsub.aclose()
    assert marked["reason"] == "marked"
    assert Decimal(marked["snapshot"]["unrealized_pnl"]) == Decimal("39.96")
    portfolio = (await api.client.get("/portfolio", headers=holder.headers)).json()
    assert Decimal(portfolio["unrealized_pnl"]) == Decimal("39.96")
