"""What a trader sees of a portfolio: at most 8 decimal places, rounded half-even, while the
ledger keeps the exact average cost and P&L (GET /portfolio, /portfolio/positions,
/portfolio/history and the ``portfolio:{userId}`` messages)."""

from __future__ import annotations

import json
import re
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.core import settings
from starkmatter.orders.config import OrdersConfig
from starkmatter.orders.processing import Worker
from starkmatter.portfolio.positions import Position
from starkmatter.tasks import jobs
from tests.integration.trading.conftest import publish_market, running_worker, wait_for_order
from tests.support import LiveServer, SignedIn, sign_up

pytestmark = pytest.mark.timeout(90)

START = Decimal(100_000)
UNIT = Decimal("0.00000001")
SHOWN = re.compile(r"-?\d+(\.\d{0,7}[1-9])?")
"""plain digits, at most 8 places, no trailing zero, no exponent"""
MONEY = ("cash", "positions_value", "equity", "realized_pnl", "unrealized_pnl")
METRICS = ("daily_return", "cumulative_return", "volatility", "max_drawdown", "sharpe")


def rounded(exact: Decimal) -> Decimal:
    return exact.quantize(UNIT, rounding=ROUND_HALF_EVEN)


def assert_shown(text: str | None, exact: Decimal) -> None:
    assert text is not None and SHOWN.fullmatch(text), text
    assert Decimal(text) == rounded(exact), (text, exact)


def assert_adds_up(body: dict[str, Any]) -> None:
    """Every number has at most 8 places, and cash + positions value = equity as shown."""
    for key in (*MONEY, *METRICS):
        assert body[key] is None or SHOWN.fullmatch(body[key]), (key, body[key])
    assert Decimal(body["cash"]) + Decimal(body["positions_value"]) == Decimal(body["equity"])


async def trade(
    api: LiveServer, redis: aioredis.Redis, user: SignedIn, side: str, quantity: str, price: str
) -> Decimal:
    """A market order taking the level at ``price`` (the ask for a buy, the bid for a sell);
    returns the price it filled at."""
    if side == "buy":
        await publish_market(redis, "AAPL", bid=str(Decimal(price) - 1), ask=price)
    else:
        await publish_market(redis, "AAPL", bid=price, ask=str(Decimal(price) + 1))
    placed = await api.client.post(
        "/orders", headers=user.headers,
        json={"client_order_id": f"{side}-{quantity}-{price}", "symbol": "AAPL", "side": side,
              "quantity": quantity},
    )  # fmt: skip
    assert placed.status_code == 201, placed.text
    filled = await wait_for_order(api.client, user.headers, placed.json()["id"], "Filled")
    return Decimal(filled["avg_fill_price"])


async def test_an_average_cost_that_terminates_is_shown_as_it_is(
    api: LiveServer, worker: Worker
) -> None:
    user = await sign_up(api.client)
    assert await trade(api, worker.redis, user, "buy", "3", "100") == 100
    assert await trade(api, worker.redis, user, "buy", "1", "101") == 101
    [position] = (await api.client.get("/portfolio/positions", headers=user.headers)).json()
    assert (position["quantity"], position["avg_cost"]) == ("4", "100.25")
    assert_adds_up((await api.client.get("/portfolio", headers=user.headers)).json())


async def test_a_repeating_average_cost_and_its_realized_pnl_are_rounded_half_even(
    api: LiveServer, worker: Worker, redis: aioredis.Redis, database_url: str
) -> None:
    user = await sign_up(api.client)
    fills = [("buy", "1", "100"), ("buy", "2", "100.5"), ("buy", "3", "101"), ("sell", "2", "102")]
    exact, cash = Position(), START
    for side, quantity, price in fills:
        assert await trade(api, worker.redis, user, side, quantity, price) == Decimal(price)
        signed = Decimal(quantity) if side == "buy" else -Decimal(quantity)
        exact = exact.apply(signed, Decimal(price))
        cash -= signed * Decimal(price)
    mark = (Decimal(102) + Decimal(103)) / 2  # the mid of the last quote
    # The ledger keeps what the arithmetic gave, digits beyond the 8th and all.
    stored = await _stored_position(database_url, user)
    assert stored == (exact.avg_cost, exact.realized_pnl)
    assert len(str(exact.avg_cost).split(".")[1]) > 8
    assert len(str(exact.realized_pnl).split(".")[1]) > 8

    [position] = (await api.client.get("/portfolio/positions", headers=user.headers)).json()
    assert position["quantity"] == "4"
    assert_shown(position["avg_cost"], exact.avg_cost)
    assert position["avg_cost"] == "100.66666667"
    assert_shown(position["realized_pnl"], exact.realized_pnl)
    assert position["realized_pnl"] == "2.66666667"
    assert_shown(position["unrealized_pnl"], exact.unrealized_pnl(mark))
    assert_shown(position["market_value"], exact.market_value(mark))
    assert_shown(position["mark_price"], mark)

    portfolio = (await api.client.get("/portfolio", headers=user.headers)).json()
    assert_adds_up(portfolio)
    assert_shown(portfolio["cash"], cash)
    assert_shown(portfolio["equity"], cash + exact.market_value(mark))
    assert_shown(portfolio["realized_pnl"], exact.realized_pnl)
    assert_shown(portfolio["unrealized_pnl"], exact.unrealized_pnl(mark))
    # Served again from the Redis cache: the same text.
    again = (await api.client.get("/portfolio", headers=user.headers)).json()
    assert {k: again[k] for k in MONEY} == {k: portfolio[k] for k in MONEY}

    history = (await api.client.get("/portfolio/history", headers=user.headers)).json()["items"]
    assert history
    for snapshot in history:
        assert_adds_up(snapshot)
    assert_shown(history[0]["realized_pnl"], exact.realized_pnl)
    assert_shown(history[0]["unrealized_pnl"], exact.unrealized_pnl(mark))

    marked = await _marked(redis, database_url, user)
    assert_adds_up(marked)
    assert_shown(marked["realized_pnl"], exact.realized_pnl)
    assert_shown(marked["unrealized_pnl"], exact.unrealized_pnl(mark))


async def test_equity_is_shown_as_cash_plus_positions_value_when_both_were_rounded(
    api: LiveServer, config: settings.Settings, redis: aioredis.Redis, database_url: str
) -> None:
    # With 5 bps of slippage, a share taken at 100.00000001 costs 100.050000010005, which
    # leaves cash with 12 places; a mid of 100.000000015 values it with 9. Rounded half-even
    # on their own they add up to a unit more than the exact equity rounded.
    user = await sign_up(api.client)
    slipping = OrdersConfig(poll_interval_ms=50, slippage_bps=Decimal(5))
    async with running_worker(config, slipping):
        price = await trade(api, redis, user, "buy", "1", "100.00000001")
    await publish_market(redis, "AAPL", bid="100.00000001", ask="100.00000002")
    cash, value = START - price, Decimal("100.000000015")
    assert rounded(cash) + rounded(value) == rounded(cash + value) + UNIT

    portfolio = (await api.client.get("/portfolio", headers=user.headers)).json()
    assert_adds_up(portfolio)
    assert_shown(portfolio["cash"], cash)
    assert_shown(portfolio["positions_value"], value)
    assert Decimal(portfolio["equity"]) == rounded(cash + value) + UNIT
    [position] = (await api.client.get("/portfolio/positions", headers=user.headers)).json()
    assert position["market_value"] == portfolio["positions_value"]

    marked = await _marked(redis, database_url, user)
    assert_adds_up(marked)
    assert {k: marked[k] for k in MONEY} == {k: portfolio[k] for k in MONEY}
    snapshot = (await api.client.get("/portfolio/history", headers=user.headers)).json()["items"][0]
    assert_adds_up(snapshot)
    assert {k: snapshot[k] for k in MONEY} == {k: portfolio[k] for k in MONEY}


async def _stored_position(database_url: str, user: SignedIn) -> tuple[Decimal, Decimal]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT avg_cost, realized_pnl FROM trading_positions WHERE user_id = $1",
            uuid.UUID(user.user_id),
        )
    finally:
        await conn.close()
    assert row is not None
    return row["avg_cost"], row["realized_pnl"]


async def _marked(redis: aioredis.Redis, database_url: str, user: SignedIn) -> dict[str, Any]:
    """The snapshot of the ``portfolio:{userId}`` message the mark-to-market job sends."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"portfolio:{user.user_id}")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        assert await jobs.recalculate(pool, redis, user.user_id) == 1
        while True:  # a fill's own notification may still be on its way
            message = await pubsub.get_message(timeout=5)
            assert message is not None
            if message["type"] == "message":
                body = json.loads(message["data"])
                if body.get("reason") == "marked":
                    snapshot: dict[str, Any] = body["snapshot"]
                    return snapshot
    finally:
        await pool.close()
        await pubsub.aclose()


async def test_the_message_after_a_fill_shows_its_snapshot_rounded(
    api: LiveServer, worker: Worker, redis: aioredis.Redis
) -> None:
    user = await sign_up(api.client)
    exact = Position()
    for side, quantity, price in [("buy", "1", "100"), ("buy", "2", "100.5"), ("buy", "3", "101")]:
        await trade(api, worker.redis, user, side, quantity, price)
        exact = exact.apply(Decimal(quantity), Decimal(price))
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"portfolio:{user.user_id}")
    try:
        await trade(api, worker.redis, user, "sell", "2", "102")
        exact = exact.apply(Decimal(-2), Decimal(102))
        while True:  # the buys' own notifications may still be on their way
            message = await pubsub.get_message(timeout=5)
            assert message is not None
            if message["type"] == "message":
                snapshot: dict[str, Any] = json.loads(message["data"])["snapshot"]
                if snapshot["realized_pnl"] != "0":
                    break
    finally:
        await pubsub.aclose()

    assert_adds_up(snapshot)
    assert snapshot["realized_pnl"] == "2.66666667"
    assert_shown(snapshot["realized_pnl"], exact.realized_pnl)
