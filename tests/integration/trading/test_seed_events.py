"""The order worker writes the seed's OrderPlaced and PortfolioChange triggers to the event
outbox in the transaction of the change they announce."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from starkmatter.core import db
from starkmatter.orders.processing import Worker
from tests.integration.trading.conftest import publish_market, wait_for_order
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)


async def test_filled_order_writes_order_placed_and_portfolio_change_events(
    api: LiveServer, worker: Worker, redis: Any, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    r = await api.client.post(
        "/orders",
        headers=user.headers,
        json={"client_order_id": "ev1", "symbol": "AAPL", "side": "buy", "quantity": "5"},
    )
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    await wait_for_order(api.client, user.headers, order_id, "Filled")
    conn = await asyncpg.connect(database_url)
    await db.init_connection(conn)
    try:
        rows = await conn.fetch("SELECT event, event_key, payload FROM event_outbox ORDER BY id")
        execution = await conn.fetchval(
            "SELECT id FROM trading_executions WHERE order_id = $1", order_id
        )
    finally:
        await conn.close()
    assert [(e["event"], e["event_key"]) for e in rows] == [
        ("OrderPlaced", order_id),
        ("PortfolioChange", str(execution)),
    ]
    placed, change = rows[0]["payload"], rows[1]["payload"]
    assert placed["order_id"] == order_id and placed["user_id"] == user.user_id
    assert (placed["symbol"], placed["side"], placed["quantity"]) == ("AAPL", "buy", "5")
    assert change["user_id"] == user.user_id
    # the snapshot the event carries is the one stored with the fill: 5 bought at 100.01
    assert change["snapshot"]["cash"] == "99499.95"


async def test_rejected_order_announces_nothing(
    api: LiveServer, worker: Worker, redis: Any, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    r = await api.client.post(
        "/orders",
        headers=user.headers,
        json={"client_order_id": "big", "symbol": "AAPL", "side": "buy", "quantity": "5000"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "buying_power"
    conn = await asyncpg.connect(database_url)
    try:
        # the rejection's audit row is written by the worker; once it is, the batch is done
        for _ in range(500):
            if await conn.fetchval("SELECT count(*) FROM trading_outbox") == 0:
                break
            await asyncio.sleep(0.02)
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'order.rejected'"
        )
        announced = await conn.fetchval("SELECT count(*) FROM event_outbox")
    finally:
        await conn.close()
    assert audited == 1
    assert announced == 0
