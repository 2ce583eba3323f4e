"""The Alpaca adapter against a local server speaking the Alpaca API, through the worker."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import prometheus_client
import pydantic
import pytest

from starkmatter.core import embedded, serving, settings
from starkmatter.orders import config as orders_config
from starkmatter.orders import storage
from starkmatter.orders.brokers import alpaca, base
from starkmatter.orders.config import OrdersConfig
from starkmatter.orders.model import (
    OrderId,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from tests.integration.trading.alpaca_fake import KEY, SECRET, FakeAlpaca
from tests.integration.trading.conftest import publish_market, running_worker, wait_for_order
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeAlpaca, str]]:
    server_state = FakeAlpaca()
    port = embedded.free_port()
    server = serving.server(server_state.app(), "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
        await asyncio.sleep(0.01)
    yield server_state, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def alpaca_config(url: str) -> OrdersConfig:
    return OrdersConfig(
        broker="alpaca",
        alpaca_base_url=url,
        poll_interval_ms=50,
        alpaca_key_id=pydantic.SecretStr(KEY),
        alpaca_secret_key=pydantic.SecretStr(SECRET),
    )


@pytest.fixture
def alpaca_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("STARKMATTER_ORDERS_BROKER", "alpaca")
    orders_config.get_config.cache_clear()
    yield
    monkeypatch.undo()
    orders_config.get_config.cache_clear()


@contextlib.asynccontextmanager
async def alpaca_worker(config: settings.Settings, url: str) -> AsyncIterator[None]:
    async with running_worker(config, alpaca_config(url)):
        yield


async def test_market_order_fills_at_the_brokers_price(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
) -> None:
    server, url = fake
    server.price = Decimal("101.50")
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="101.40", ask="101.60")
    async with alpaca_worker(config, url):
        r = await api.client.post(
            "/orders",
            headers=user.headers,
            json={"client_order_id": "a1", "symbol": "AAPL", "side": "buy", "quantity": "10"},
        )
        got = await wait_for_order(api.client, user.headers, r.json()["id"], "Filled")
    assert Decimal(got["avg_fill_price"]) == Decimal("101.50")
    (remote,) = server.orders.values()
    assert remote["client_order_id"] == got["id"] and remote["qty"] == "10"


async def test_broker_refusal_rejects_the_order_and_frees_its_cash(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
) -> None:
    server, url = fake
    server.max_qty = Decimal(5)
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with alpaca_worker(config, url):
        r = await api.client.post(
            "/orders",
            headers=user.headers,
            json={"client_order_id": "big", "symbol": "AAPL", "side": "buy", "quantity": "10"},
        )
        got = await wait_for_order(api.client, user.headers, r.json()["id"], "Rejected")
    assert got["rejection"] == {"code": "broker_rejected", "message": "insufficient buying power"}
    assert [e["target"] for e in got["events"]][-2:] == ["Submitted", "Rejected"]
    account = (await api.client.get("/account", headers=user.headers)).json()
    assert Decimal(account["reserved_cash"]) == 0 and Decimal(account["cash"]) == 100_000


async def test_partial_fill_then_cancel_goes_through_the_broker(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
) -> None:
    server, url = fake
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with alpaca_worker(config, url):
        r = await api.client.post(
            "/orders",
            headers=user.headers,
            json={
                "client_order_id": "lim",
                "symbol": "AAPL",
                "side": "buy",
                "quantity": "10",
                "type": "limit",
                "limit_price": "99.50",
                "time_in_force": "gtc",
            },
        )
        oid = r.json()["id"]
        await wait_for_order(api.client, user.headers, oid, "Pending")
        (remote_id,) = server.orders
        server.fill(remote_id, Decimal(4), Decimal("99.40"))
        part = await wait_for_order(api.client, user.headers, oid, "PartiallyFilled")
        assert Decimal(part["filled_quantity"]) == 4
        cancel = await api.client.delete(f"/orders/{oid}", headers=user.headers)
        assert cancel.status_code == 202
        done = await wait_for_order(api.client, user.headers, oid, "Cancelled")
    assert server.orders[remote_id]["status"] == "canceled"
    assert done["events"][-1]["reason"] == "user_cancel"
    account = (await api.client.get("/account", headers=user.headers)).json()
    assert Decimal(account["reserved_cash"]) == 0
    assert Decimal(account["cash"]) == 100_000 - 4 * Decimal("99.40")


async def test_resubmitting_after_a_crash_returns_the_first_broker_order(
    fake: tuple[FakeAlpaca, str],
) -> None:
    server, url = fake
    broker = alpaca.AlpacaBroker.from_config(alpaca_config(url))
    order = _limit_order()
    try:
        first = await broker.submit(order)
        again = await broker.submit(order)
    finally:
        await broker.aclose()
    assert isinstance(first, base.Accepted) and first == again
    assert server.submissions == 2 and len(server.orders) == 1


def test_a_reject_reason_on_an_order_not_rejected_rejects_nothing() -> None:
    # "reason or default if rejected else None" read as "reason or (default if ... else
    # None)": any order the broker sent with a reject_reason was taken as rejected.
    order = _limit_order()
    data = {"id": "r1", "status": "partially_filled", "filled_qty": "1",
            "filled_avg_price": "98.50", "reject_reason": "informational"}  # fmt: skip
    update = alpaca._update(order, data)
    assert update is not None and update.rejected is None
    assert [e.quantity for e in update.executions] == [Decimal(1)]
    rejected = alpaca._update(order, {"id": "r1", "status": "rejected", "filled_qty": "0"})
    assert rejected is not None and rejected.rejected == "rejected by broker"


def _limit_order() -> storage.OrderRecord:
    now = dt.datetime.now(dt.UTC)
    return storage.OrderRecord(
        id=OrderId(uuid.uuid4()),
        user_id=uuid.uuid4(),  # type: ignore[arg-type]
        client_order_id="c1",  # type: ignore[arg-type]
        request=OrderRequest(
            "AAPL", OrderSide.BUY, OrderType.LIMIT, TimeInForce.DAY, Decimal(3), Decimal("99.00")
        ),
        status=OrderStatus.RISK_CHECKED,
        filled_quantity=Decimal(0),
        avg_fill_price=None,
        price_cap=Decimal("99.00"),
        reserved_cash=Decimal(297),
        reserved_quantity=Decimal(0),
        triggered=False,
        cancel_requested=False,
        reject_code=None,
        reject_message=None,
        broker="alpaca",
        broker_order_id=None,
        expires_at=None,
        created_at=now,
        updated_at=now,
    )


async def test_a_fill_the_ledger_refuses_holds_back_only_its_own_order(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
) -> None:
    # A real broker can fill a stop far beyond what the order reserved (a gap): the ledger
    # refuses to spend cash the account lacks. That used to fail every order re-matched in
    # the same pass, on every pass, for every user.
    server, url = fake
    refused_before = _refused()
    gapped, other = await sign_up(api.client), await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")

    async def place(user: Any, **fields: Any) -> str:
        body = {"symbol": "AAPL", "side": "buy", "time_in_force": "gtc", **fields}
        r = await api.client.post("/orders", headers=user.headers, json=body)
        assert r.status_code == 201, r.text
        oid: str = r.json()["id"]
        return oid

    async with alpaca_worker(config, url):
        stop = await place(gapped, client_order_id="s", type="stop", stop_price="105.00",
                           quantity="900")  # fmt: skip
        limit = await place(other, client_order_id="l", type="limit", limit_price="99.50",
                            quantity="10")  # fmt: skip
        for user, oid in ((gapped, stop), (other, limit)):
            await wait_for_order(api.client, user.headers, oid, "Pending")
        remote = {o["client_order_id"]: rid for rid, o in server.orders.items()}
        server.fill(remote[stop], Decimal(900), Decimal("200.00"))  # costs 180,000
        server.fill(remote[limit], Decimal(10), Decimal("99.40"))
        got = await wait_for_order(api.client, other.headers, limit, "Filled")
        assert Decimal(got["avg_fill_price"]) == Decimal("99.40")
        await asyncio.sleep(0.3)  # a few more passes
    held = (await api.client.get(f"/orders/{stop}", headers=gapped.headers)).json()
    assert held["status"] == "Pending" and Decimal(held["filled_quantity"]) == 0
    assert _refused() > refused_before


def _refused() -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "starkmatter_orders_refused_by_database_total"
    )
    return value or 0.0
