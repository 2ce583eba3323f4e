"""Placement decides on an unlocked read and its write re-checks the account-bound limits
under the account lock; when one no longer holds, the order is decided again under the
lock. Both paths keep buying power, positions and the limits safe."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import prometheus_client
import pytest

from starkmatter.core import audit, db
from starkmatter.orders import commands, placing
from starkmatter.orders import config as orders_config
from starkmatter.orders.config import OrdersConfig
from starkmatter.orders.model import (
    ClientOrderId,
    OrderRequest,
    OrderSide,
    OrderType,
    TimeInForce,
    UserId,
)
from tests.integration.trading.conftest import publish_market
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(90)

PLACE_CHECKED = (
    "SELECT * FROM trading_order_place_checked(" + ", ".join(f"${i}" for i in range(1, 29)) + ")"
)


def _groups_so_far() -> tuple[float, float]:
    """(groups, orders in them) placed by this process so far"""
    sample = prometheus_client.REGISTRY.get_sample_value
    return (
        sample("starkmatter_orders_placement_group_orders_count") or 0.0,
        sample("starkmatter_orders_placement_group_orders_sum") or 0.0,
    )


@pytest.mark.parametrize("path", ["optimistic", "grouped", "locked"])
async def test_racing_orders_never_spend_the_same_buying_power_on_any_placement_path(
    api: LiveServer,
    redis: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    monkeypatch.setattr(placing, "OPTIMISTIC", path != "locked")
    if path == "grouped":  # one statement in flight: orders arriving meanwhile share the next
        monkeypatch.setenv("STARKMATTER_ORDERS_PLACEMENT_IN_FLIGHT", "1")
    orders_config.get_config.cache_clear()
    groups_before, grouped_before = _groups_so_far()
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    # each order reserves 98 * 100.01 * 1.02 = 9,996.99: ten fit in 100,000, not eleven
    bodies = [
        {"client_order_id": f"race{i}", "symbol": "AAPL", "side": "buy", "quantity": "98"}
        for i in range(16)
    ]
    results = await asyncio.gather(
        *(api.client.post("/orders", headers=user.headers, json=b) for b in bodies)
    )
    assert sorted(r.status_code for r in results).count(201) == 10
    assert all(r.json()["error"]["code"] == "buying_power" for r in results if r.status_code == 422)
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT cash, reserved_cash, open_orders FROM trading_accounts")
        reserved = await conn.fetchval(
            "SELECT sum(reserved_cash) FROM trading_orders WHERE status = 'RiskChecked'"
        )
    finally:
        await conn.close()
    assert row["reserved_cash"] == reserved <= row["cash"]
    assert row["open_orders"] == 10
    groups, grouped = (
        a - b for a, b in zip(_groups_so_far(), (groups_before, grouped_before), strict=True)
    )
    if path == "grouped":
        assert groups < grouped, "some orders shared a statement"
    if path == "locked":
        assert groups == 0
    orders_config.get_config.cache_clear()


@pytest.mark.parametrize(
    ("env", "allowed", "reason"),
    [
        ({"MAX_OPEN_ORDERS": "5"}, 5, "open_orders_limit"),
        ({"MAX_ORDERS_PER_SECOND": "4"}, 4, "rate_limit"),
        ({"MAX_POSITION_NOTIONAL": "3500"}, 3, "position_limit"),
        ({"MAX_GROSS_EXPOSURE": "3500"}, 3, "gross_exposure"),
    ],
)
async def test_racing_orders_never_pass_an_account_limit_together(
    api: LiveServer,
    redis: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    allowed: int,
    reason: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"STARKMATTER_ORDERS_{key}", value)
    orders_config.get_config.cache_clear()
    try:
        user = await sign_up(api.client)
        await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
        # each order reserves 10 * 100.01 * 1.02 = 1,020.10 of notional
        bodies = [
            {"client_order_id": f"lim{i}", "symbol": "AAPL", "side": "buy", "quantity": "10"}
            for i in range(12)
        ]
        results = await asyncio.gather(
            *(api.client.post("/orders", headers=user.headers, json=b) for b in bodies)
        )
    finally:
        monkeypatch.undo()
        orders_config.get_config.cache_clear()
    accepted = [r for r in results if r.status_code == 201]
    refused = [r for r in results if r.status_code != 201]
    assert refused and all(r.json()["error"]["code"] == reason for r in refused)
    if reason != "rate_limit":
        assert len(accepted) == allowed
        return
    # the rate window is one wall-clock second, and the burst may straddle two or more
    conn = await asyncpg.connect(database_url)
    try:
        per_second = await conn.fetch(
            "SELECT date_trunc('second', created_at) AS s, count(*) AS n FROM trading_orders"
            " WHERE status <> 'Rejected' GROUP BY 1"
        )
    finally:
        await conn.close()
    assert sum(r["n"] for r in per_second) == len(accepted) >= allowed
    assert all(r["n"] <= allowed for r in per_second)


def _command(
    user_id: str, client_order_id: str, side: OrderSide = OrderSide.BUY, quantity: int = 10
) -> commands.SubmitOrder:
    return commands.SubmitOrder(
        UserId(uuid.UUID(user_id)),
        ClientOrderId(client_order_id),
        OrderRequest(
            "AAPL", side, OrderType.MARKET, TimeInForce.DAY, Decimal(quantity), None, None
        ),
    )


def _limits(config: OrdersConfig) -> tuple[Any, ...]:
    limits = config.limits()
    return (
        limits.max_orders_per_second,
        limits.max_open_orders,
        limits.max_position_notional,
        limits.max_gross_exposure,
    )


async def test_an_acceptance_decided_on_data_that_changed_since_is_not_placed(
    api: LiveServer, redis: Any, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    opened = await api.client.get("/account", headers=user.headers)
    assert opened.status_code == 200
    quote = await placing.read_quote(redis, "AAPL")
    actor = audit.Actor(id=user.user_id, service="tests", endpoint="tests")
    command = _command(user.user_id, "stale")
    conn = await asyncpg.connect(database_url)
    await db.init_connection(conn)  # jsonb as Python objects, as the API's pool has it
    try:
        ctx = await conn.fetchrow(
            "SELECT * FROM trading_order_context_peek($1, 'AAPL')", uuid.UUID(user.user_id)
        )
        decision = placing.decide(ctx, quote, OrdersConfig(), actor, command, uuid.uuid4())
        assert decision[12][-1] == "RiskChecked"  # on what it read, the order fits
        # the account changes between the read and the write (a fill, another order, ...)
        await conn.execute("UPDATE trading_accounts SET cash = cash - 99000")
        config = OrdersConfig()
        checked = await conn.fetchrow(PLACE_CHECKED, *_limits(config), *decision)
        assert checked is None
        assert await conn.fetchval("SELECT count(*) FROM trading_orders") == 0
        assert await conn.fetchval("SELECT reserved_cash FROM trading_accounts") == 0
        # decided again on what is there now (as the API does, under the lock), it no
        # longer fits: recorded as rejected
        fresh = await conn.fetchrow(
            "SELECT * FROM trading_order_context_peek($1, 'AAPL')", uuid.UUID(user.user_id)
        )
        decision = placing.decide(fresh, quote, OrdersConfig(), actor, command, uuid.uuid4())
        placed = await conn.fetchrow(placing.PLACE, *decision)
        assert placed is not None
        assert (placed["status"], placed["reject_code"]) == ("Rejected", "buying_power")
        assert await conn.fetchval("SELECT reserved_cash FROM trading_accounts") == 0
    finally:
        await conn.close()


async def test_a_repeated_client_order_id_returns_the_original_on_the_checked_path(
    api: LiveServer, redis: Any, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    first = await api.client.post(
        "/orders",
        headers=user.headers,
        json={"client_order_id": "same", "symbol": "AAPL", "side": "buy", "quantity": "10"},
    )
    assert first.status_code == 201
    quote = await placing.read_quote(redis, "AAPL")
    actor = audit.Actor(id=user.user_id, service="tests", endpoint="tests")
    conn = await asyncpg.connect(database_url)
    await db.init_connection(conn)  # jsonb as Python objects, as the API's pool has it
    try:
        ctx = await conn.fetchrow(
            "SELECT * FROM trading_order_context_peek($1, 'AAPL')", uuid.UUID(user.user_id)
        )
        decision = placing.decide(
            ctx, quote, OrdersConfig(), actor, _command(user.user_id, "same"), uuid.uuid4()
        )
        row = await conn.fetchrow(PLACE_CHECKED, *_limits(OrdersConfig()), *decision)
        assert row is not None and str(row["id"]) == first.json()["id"]
        assert await conn.fetchval("SELECT count(*) FROM trading_orders") == 1
    finally:
        await conn.close()
