"""Racing orders and repeated submissions over HTTP, and the graph enforced by PostgreSQL."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from starkmatter.orders import lifecycle
from starkmatter.orders.config import OrdersConfig
from starkmatter.orders.processing import Worker
from tests.integration.trading.conftest import publish_market, running_worker, wait_for_order
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(90)


async def test_concurrent_orders_never_spend_the_same_buying_power(
    api: LiveServer, redis: Any, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    # each order reserves 98 * 100.01 * 1.02 = 9,996.99: ten fit in 100,000, not eleven
    bodies = [
        {"client_order_id": f"race{i}", "symbol": "AAPL", "side": "buy", "quantity": "98"}
        for i in range(24)
    ]
    results = await asyncio.gather(
        *(api.client.post("/orders", headers=user.headers, json=b) for b in bodies)
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(201) == 10
    assert all(r.json()["error"]["code"] == "buying_power" for r in results if r.status_code == 422)
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT cash, reserved_cash FROM trading_accounts")
        reserved = await conn.fetchval(
            "SELECT sum(reserved_cash) FROM trading_orders WHERE status = 'RiskChecked'"
        )
    finally:
        await conn.close()
    assert row["reserved_cash"] == reserved <= row["cash"]


async def test_concurrent_sells_never_sell_more_than_the_position(
    api: LiveServer, worker: Worker
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    r = await api.client.post(
        "/orders",
        headers=user.headers,
        json={"client_order_id": "buy", "symbol": "AAPL", "side": "buy", "quantity": "30"},
    )
    await wait_for_order(api.client, user.headers, r.json()["id"], "Filled")
    sells = await asyncio.gather(
        *(
            api.client.post(
                "/orders",
                headers=user.headers,
                json={
                    "client_order_id": f"s{i}",
                    "symbol": "AAPL",
                    "side": "sell",
                    "quantity": "7",
                },
            )
            for i in range(10)
        )
    )
    accepted = [s.json()["id"] for s in sells if s.status_code == 201]
    assert len(accepted) == 4
    for oid in accepted:
        await wait_for_order(api.client, user.headers, oid, "Filled")
    positions = (await api.client.get("/portfolio/positions", headers=user.headers)).json()
    assert Decimal(positions[0]["quantity"]) == 2


async def test_resubmitting_a_client_order_id_returns_the_same_order(
    api: LiveServer, worker: Worker, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    body = {"client_order_id": "same", "symbol": "AAPL", "side": "buy", "quantity": "5"}
    first, *again = await asyncio.gather(
        *(api.client.post("/orders", headers=user.headers, json=body) for _ in range(5))
    )
    responses = [first, *again]
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    await wait_for_order(api.client, user.headers, first.json()["id"], "Filled")
    later = await api.client.post("/orders", headers=user.headers, json=body)
    assert later.status_code == 200 and later.json()["status"] == "Filled"
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM trading_orders") == 1
        assert await conn.fetchval("SELECT count(*) FROM trading_executions") == 1
    finally:
        await conn.close()


async def test_database_transition_table_is_the_code_table(db: asyncpg.Connection) -> None:
    rows = await db.fetch("SELECT source, target, seed, why FROM trading_order_transitions")
    assert {(r["source"], r["target"], r["seed"], r["why"]) for r in rows} == {
        (t.source.value, t.target.value, t.seed, t.why) for t in lifecycle.TRANSITIONS
    }


async def test_database_refuses_a_status_change_outside_the_graph(
    api: LiveServer, worker: Worker, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    r = await api.client.post(
        "/orders",
        headers=user.headers,
        json={"client_order_id": "g", "symbol": "AAPL", "side": "buy", "quantity": "1"},
    )
    await wait_for_order(api.client, user.headers, r.json()["id"], "Filled")
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError, match="cannot go from Filled to Pending"):
            await conn.execute("UPDATE trading_orders SET status = 'Pending'")
        with pytest.raises(asyncpg.CheckViolationError, match="starts in OrderCreated"):
            await conn.execute(
                "INSERT INTO trading_orders (id, user_id, client_order_id, symbol,"
                " side, type, time_in_force, quantity, status, created_at, updated_at)"
                " SELECT gen_random_uuid(), user_id, 'forged', symbol, side, type,"
                " time_in_force, quantity, 'Filled', now(), now() FROM trading_orders"
            )
        forged = (
            "INSERT INTO trading_orders (id, user_id, client_order_id, symbol, side, type,"
            " time_in_force, quantity, status, status_path, created_at, updated_at)"
            " SELECT gen_random_uuid(), user_id, 'forged', symbol, side, type, time_in_force,"
            " quantity, 'Filled', $1, now(), now() FROM trading_orders"
        )
        # A write may take several steps at once, but each is checked against the graph.
        with pytest.raises(asyncpg.CheckViolationError, match="cannot go from Validated to Pe"):
            await conn.execute(forged, ["Validated", "Pending", "Filled"])
        with pytest.raises(asyncpg.CheckViolationError, match="steps end in Pending, not in"):
            await conn.execute(forged, ["Validated", "RiskChecked", "Submitted", "Pending"])
        assert (
            await conn.fetchval("SELECT count(*) FROM trading_orders WHERE status_path IS NOT NULL")
            == 0
        )
    finally:
        await conn.close()


async def test_list_orders_filters_and_pages_with_a_cursor(api: LiveServer, redis: Any) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    await publish_market(redis, "MSFT", bid="199.99", ask="200.01")
    for i in range(5):
        for symbol in ("AAPL", "MSFT"):
            await api.client.post(
                "/orders",
                headers=user.headers,
                json={
                    "client_order_id": f"{symbol}{i}",
                    "symbol": symbol,
                    "side": "buy",
                    "quantity": "1",
                },
            )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"symbol": "AAPL", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get("/orders", headers=user.headers, params=params)).json()
        seen += [o["client_order_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"AAPL{i}" for i in reversed(range(5))]


async def test_a_poison_outbox_event_is_parked_and_does_not_hold_up_the_others(
    api: LiveServer, config: Any, database_url: str, redis: Any
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO trading_outbox (topic, payload) VALUES ('no.such.topic', '{}')"
        )
        r = await api.client.post(
            "/orders",
            headers=user.headers,
            json={
                "client_order_id": "after-poison",
                "symbol": "AAPL",
                "side": "buy",
                "quantity": "1",
            },
        )
        async with running_worker(config, OrdersConfig(poll_interval_ms=50, max_attempts=1)):
            await wait_for_order(api.client, user.headers, r.json()["id"], "Filled")
        parked = await conn.fetchrow(
            "SELECT parked, attempts, last_error FROM trading_outbox WHERE topic = 'no.such.topic'"
        )
    finally:
        await conn.close()
    assert parked["parked"] and parked["attempts"] == 1
    assert "unknown outbox topic" in parked["last_error"]
