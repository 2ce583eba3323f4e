"""Orders over HTTP against real PostgreSQL, Redis, API server and order worker."""

from __future__ import annotations

from decimal import Decimal

import pytest

from starkmatter.orders.processing import Worker
from tests.integration.trading.conftest import publish_market, wait_for_order
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)


async def test_a_new_user_gets_a_funded_account_and_a_market_order_fills_at_once(
    api: LiveServer, worker: Worker, redis: object
) -> None:
    user = await sign_up(api.client)
    account = (await api.client.get("/account", headers=user.headers)).json()
    assert Decimal(account["cash"]) == Decimal(100_000)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")

    placed = await api.client.post(
        "/orders",
        headers=user.headers,
        json={"client_order_id": "first", "symbol": "AAPL", "side": "buy", "quantity": "10"},
    )
    assert placed.status_code == 201, placed.text
    filled = await wait_for_order(api.client, user.headers, placed.json()["id"], "Filled")

    assert Decimal(filled["filled_quantity"]) == 10
    assert Decimal(filled["avg_fill_price"]) == Decimal("100.01")
    assert [e["target"] for e in filled["events"]] == [
        "OrderCreated",
        "Validated",
        "RiskChecked",
        "Submitted",
        "Pending",
        "Filled",
    ]
    account = (await api.client.get("/account", headers=user.headers)).json()
    assert Decimal(account["cash"]) == Decimal(100_000) - Decimal("1000.1")
    assert Decimal(account["reserved_cash"]) == 0
    positions = (await api.client.get("/portfolio/positions", headers=user.headers)).json()
    assert [(p["symbol"], Decimal(p["quantity"])) for p in positions] == [("AAPL", Decimal(10))]
