"""The Alpaca adapter against a local server speaking the Alpaca API, through the worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import prometheus_client
import pydantic
import pytest
import structlog
from starlette import applications, requests, responses, routing

from starkmatter.core import settings
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
from tests.integration.trading import alpaca_fake
from tests.integration.trading.alpaca_fake import KEY, SECRET, FakeAlpaca
from tests.integration.trading.conftest import publish_market, running_worker, wait_for_order
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeAlpaca, str]]:
    server_state = FakeAlpaca()
    async with alpaca_fake.running(server_state) as url:
        yield server_state, url


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


# What a proxy in front of the broker may answer with: the request's credentials echoed back.
ECHOED = "Authorization: Bearer abc.def.ghi password=hunter2 APCA-API-SECRET-KEY: {secret}"


class CredentialEchoingAlpaca(FakeAlpaca):
    """Answers every order with ``status``, its message echoing the request's credentials."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def app(self) -> applications.Starlette:
        async def create(request: requests.Request) -> responses.Response:
            echoed = ECHOED.format(secret=request.headers.get("APCA-API-SECRET-KEY"))
            return responses.JSONResponse(
                {"code": 40000000 + self.status, "message": f"refused: {echoed}"},
                status_code=self.status,
            )

        return applications.Starlette(
            routes=[routing.Route("/v2/orders", create, methods=["POST"])]
        )


class ListRefusingAlpaca(FakeAlpaca):
    """Refuses every order with a JSON body that is a list (a proxy's, not Alpaca's shape)."""

    def app(self) -> applications.Starlette:
        async def create(request: requests.Request) -> responses.Response:
            return responses.JSONResponse(["order refused", "by the gateway"], status_code=422)

        return applications.Starlette(
            routes=[routing.Route("/v2/orders", create, methods=["POST"])]
        )


def assert_no_secret(text: str) -> None:
    for secret in ("abc.def.ghi", "hunter2", SECRET):
        assert secret not in text
    assert "refused: Authorization: Bearer ***" in text


async def test_a_broker_error_echoing_credentials_is_stored_on_its_event_masked(
    api: LiveServer, config: settings.Settings, alpaca_env: Any, redis: Any, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with alpaca_fake.running(CredentialEchoingAlpaca(502)) as url:
        parks_at_once = alpaca_config(url).model_copy(update={"max_attempts": 1})
        async with running_worker(config, parks_at_once):
            r = await api.client.post(
                "/orders",
                headers=user.headers,
                json={"client_order_id": "echo", "symbol": "AAPL", "side": "buy", "quantity": "1"},
            )
            assert r.status_code == 201
            conn = await asyncpg.connect(database_url)
            try:
                for _ in range(500):
                    error = await conn.fetchval(
                        "SELECT last_error FROM trading_outbox WHERE parked"
                    )
                    if error is not None:
                        break
                    await asyncio.sleep(0.02)
            finally:
                await conn.close()
    assert error is not None and "submit failed: HTTP 502" in error
    assert_no_secret(error)


async def test_a_broker_refusal_echoing_credentials_reaches_the_trader_masked(
    api: LiveServer, config: settings.Settings, alpaca_env: Any, redis: Any
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with (
        alpaca_fake.running(CredentialEchoingAlpaca(403)) as url,
        alpaca_worker(config, url),
    ):
        r = await api.client.post(
            "/orders",
            headers=user.headers,
            json={"client_order_id": "echo", "symbol": "AAPL", "side": "buy", "quantity": "1"},
        )
        got = await wait_for_order(api.client, user.headers, r.json()["id"], "Rejected")
    assert got["rejection"]["code"] == "broker_rejected"
    assert_no_secret(got["rejection"]["message"])
    assert_no_secret(got["events"][-1]["details"]["message"])


async def test_a_refusal_whose_body_is_not_an_object_rejects_the_order_with_that_body(
    api: LiveServer, config: settings.Settings, alpaca_env: Any, redis: Any
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with alpaca_fake.running(ListRefusingAlpaca()) as url, alpaca_worker(config, url):
        r = await api.client.post(
            "/orders",
            headers=user.headers,
            json={"client_order_id": "list", "symbol": "AAPL", "side": "buy", "quantity": "1"},
        )
        got = await wait_for_order(
            api.client, user.headers, r.json()["id"], "Rejected", within_s=10
        )
    assert got["rejection"]["code"] == "broker_rejected"
    assert got["rejection"]["message"] == '["order refused","by the gateway"]'


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
    now = dt.datetime.now(dt.UTC)
    update = alpaca._update(order, data, now)
    assert update is not None and update.rejected is None
    assert [e.quantity for e in update.executions] == [Decimal(1)]
    rejected = alpaca._update(order, {"id": "r1", "status": "rejected", "filled_qty": "0"}, now)
    assert rejected is not None and rejected.rejected == "rejected by broker"


def _limit_order() -> storage.OrderRecord:
    return _record(OrderRequest("AAPL", OrderSide.BUY, OrderType.LIMIT, TimeInForce.DAY,
                                Decimal(3), Decimal("99.00")), Decimal("99.00"))  # fmt: skip


def _record(request: OrderRequest, price_cap: Decimal) -> storage.OrderRecord:
    """An accepted order as the worker hands it to the broker."""
    now = dt.datetime.now(dt.UTC)
    buy = request.side is OrderSide.BUY
    return storage.OrderRecord(
        id=OrderId(uuid.uuid4()),
        user_id=uuid.uuid4(),  # type: ignore[arg-type]
        client_order_id="c1",  # type: ignore[arg-type]
        request=request,
        status=OrderStatus.RISK_CHECKED,
        filled_quantity=Decimal(0),
        avg_fill_price=None,
        price_cap=price_cap,
        reserved_cash=request.quantity * price_cap if buy else Decimal(0),
        reserved_quantity=Decimal(0) if buy else request.quantity,
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
    # A stop goes out as a stop_limit at what it reserved, so only a broker error can fill
    # it far beyond that (here a gap at 200): the ledger refuses to spend cash the account
    # lacks. That used to fail every order re-matched in the same pass, on every pass, for
    # every user.
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
        server.fill(remote[stop], Decimal(900), Decimal("200.00"), beyond_limit=True)
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


# Price protection: what an order reserved is the worst price Alpaca may fill it at.
# With the default market_protection of 2%, a market buy against an ask of 100.25 reserved
# 102.255 a share: it goes out as a limit at 102.25 (down, inside the cap, where the
# nearest cent is 102.26); a market sell against a bid of 99.99 has a floor of 97.9902 and
# goes out at 98.00 (up, where the nearest cent is 97.99).


async def _place(api: LiveServer, user: Any, **fields: Any) -> str:
    body = {"symbol": "AAPL", "quantity": "10", "time_in_force": "day", **fields}
    r = await api.client.post("/orders", headers=user.headers, json=body)
    assert r.status_code == 201, r.text
    oid: str = r.json()["id"]
    return oid


def _remote(server: FakeAlpaca, oid: str) -> dict[str, Any]:
    (remote,) = (o for o in server.orders.values() if o["client_order_id"] == oid)
    return remote


def _sent(remote: dict[str, Any]) -> tuple[str | None, ...]:
    """side, type, limit_price, stop_price, time_in_force, as the order reached Alpaca"""
    keys = ("side", "type", "limit_price", "stop_price", "time_in_force")
    return tuple(remote.get(k) for k in keys)


async def _account(api: LiveServer, user: Any) -> dict[str, Decimal]:
    got = (await api.client.get("/account", headers=user.headers)).json()
    return {k: Decimal(got[k]) for k in ("cash", "reserved_cash")}


async def _stays_unfilled(api: LiveServer, user: Any, oid: str) -> None:
    await asyncio.sleep(0.3)  # several polls
    got = (await api.client.get(f"/orders/{oid}", headers=user.headers)).json()
    assert got["status"] == "Pending" and Decimal(got["filled_quantity"]) == 0, got


async def _hold_ten(api: LiveServer, user: Any, server: FakeAlpaca) -> None:
    """Buy the 10 shares a sell needs, at 100.00."""
    server.price = Decimal("100.00")
    oid = await _place(api, user, client_order_id="hold", side="buy")
    await wait_for_order(api.client, user.headers, oid, "Filled")


async def test_a_market_buy_goes_out_as_a_limit_at_its_cap_and_never_fills_beyond_it(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
) -> None:
    server, url = fake
    refused_before = _refused()
    server.price = Decimal("103.00")  # the market is already past the cap
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="100.15", ask="100.25")
    async with alpaca_worker(config, url):
        oid = await _place(api, user, client_order_id="m", side="buy")
        await wait_for_order(api.client, user.headers, oid, "Pending", "Filled")
        remote = _remote(server, oid)
        assert _sent(remote) == ("buy", "limit", "102.25", None, "day")
        reserved = (await _account(api, user))["reserved_cash"]
        assert reserved == 10 * Decimal("102.255") >= 10 * Decimal(remote["limit_price"])
        await _stays_unfilled(api, user, oid)
        server.trade(Decimal("104.00"))
        await _stays_unfilled(api, user, oid)
        server.trade(Decimal("101.90"))
        got = await wait_for_order(api.client, user.headers, oid, "Filled")
    assert Decimal(got["avg_fill_price"]) == Decimal("101.90")
    assert await _account(api, user) == {"cash": 100_000 - 10 * Decimal("101.90"),
                                         "reserved_cash": 0}  # fmt: skip
    assert _refused() == refused_before


async def test_a_market_sell_goes_out_as_a_limit_at_its_floor(
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
        await _hold_ten(api, user, server)
        server.price = Decimal("97.00")  # below the floor
        oid = await _place(api, user, client_order_id="s", side="sell", time_in_force="gtc")
        await wait_for_order(api.client, user.headers, oid, "Pending", "Filled")
        assert _sent(_remote(server, oid)) == ("sell", "limit", "98.00", None, "gtc")
        await _stays_unfilled(api, user, oid)
        server.trade(Decimal("97.50"))
        await _stays_unfilled(api, user, oid)
        server.trade(Decimal("98.50"))
        got = await wait_for_order(api.client, user.headers, oid, "Filled")
    assert Decimal(got["avg_fill_price"]) == Decimal("98.50")
    positions = (await api.client.get("/portfolio/positions", headers=user.headers)).json()
    assert all(Decimal(p["quantity"]) == 0 for p in positions), positions


@pytest.mark.parametrize(("tif", "reason"), [("ioc", "ioc_remainder"), ("fok", "fok_unfillable")])
async def test_an_immediate_market_order_beyond_its_cap_is_cancelled_not_filled(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
    tif: str,
    reason: str,
) -> None:
    server, url = fake
    server.price = Decimal("103.00")
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with alpaca_worker(config, url):
        oid = await _place(api, user, client_order_id="i", side="buy", time_in_force=tif)
        got = await wait_for_order(api.client, user.headers, oid, "Cancelled", "Filled")
    assert _sent(_remote(server, oid)) == ("buy", "limit", "102.01", None, tif)
    assert got["status"] == "Cancelled" and got["events"][-1]["reason"] == reason
    assert await _account(api, user) == {"cash": 100_000, "reserved_cash": 0}


async def test_a_stop_buy_goes_out_as_a_stop_limit_at_its_cap_and_a_gap_leaves_it_unfilled(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
) -> None:
    server, url = fake
    refused_before = _refused()
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with alpaca_worker(config, url):
        oid = await _place(api, user, client_order_id="st", side="buy", type="stop",
                           stop_price="105.00", time_in_force="gtc")  # fmt: skip
        await wait_for_order(api.client, user.headers, oid, "Pending")
        sent = _sent(_remote(server, oid))
        assert sent == ("buy", "stop_limit", "107.10", "105.00", "gtc")
        assert (await _account(api, user))["reserved_cash"] == 10 * Decimal("107.10")
        server.trade(Decimal("110.00"))  # gaps through the stop and past the cap
        await _stays_unfilled(api, user, oid)
        server.trade(Decimal("106.00"))
        got = await wait_for_order(api.client, user.headers, oid, "Filled")
    assert Decimal(got["avg_fill_price"]) == Decimal("106.00")
    assert await _account(api, user) == {"cash": 100_000 - 1060, "reserved_cash": 0}
    assert _refused() == refused_before


async def test_a_stop_sell_goes_out_as_a_stop_limit_at_its_floor(
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
        await _hold_ten(api, user, server)
        oid = await _place(api, user, client_order_id="ss", side="sell", type="stop",
                           stop_price="95.00")  # fmt: skip
        await wait_for_order(api.client, user.headers, oid, "Pending")
        sent = _sent(_remote(server, oid))
        assert sent == ("sell", "stop_limit", "93.10", "95.00", "day")
        server.trade(Decimal("90.00"))  # gaps through the stop and past the floor
        await _stays_unfilled(api, user, oid)
        server.trade(Decimal("94.00"))
        got = await wait_for_order(api.client, user.headers, oid, "Filled")
    assert Decimal(got["avg_fill_price"]) == Decimal("94.00")


@pytest.mark.parametrize(
    ("side", "kind", "cap", "sent", "limit"),
    [
        (OrderSide.BUY, OrderType.MARKET, "102.255", "limit", "102.25"),
        (OrderSide.SELL, OrderType.MARKET, "97.9902", "limit", "98.00"),
        (OrderSide.BUY, OrderType.MARKET, "1.00999", "limit", "1.00"),
        (OrderSide.BUY, OrderType.MARKET, "0.465834", "limit", "0.4658"),
        (OrderSide.SELL, OrderType.MARKET, "0.465834", "limit", "0.4659"),
        (OrderSide.SELL, OrderType.MARKET, "0.99995", "limit", "1.00"),
        (OrderSide.BUY, OrderType.STOP, "102.0000", "stop_limit", "102.00"),
        (OrderSide.SELL, OrderType.STOP, "97.9999", "stop_limit", "98.00"),
        (OrderSide.BUY, OrderType.LIMIT, "99.00", "limit", "99.00"),
    ],
)
async def test_the_limit_sent_is_the_cap_on_alpacas_price_grid_inside_the_reservation(
    fake: tuple[FakeAlpaca, str],
    side: OrderSide,
    kind: OrderType,
    cap: str,
    sent: str,
    limit: str,
) -> None:
    server, url = fake
    server.price = Decimal("500.00") if side is OrderSide.BUY else Decimal("0.01")  # no fill
    stop = Decimal("100.00") if kind is OrderType.STOP else None
    own_limit = Decimal(cap) if kind is OrderType.LIMIT else None
    request = OrderRequest("AAPL", side, kind, TimeInForce.GTC, Decimal(3), own_limit, stop)
    broker = alpaca.AlpacaBroker.from_config(alpaca_config(url))
    try:
        accepted = await broker.submit(_record(request, Decimal(cap)))
    finally:
        await broker.aclose()
    assert isinstance(accepted, base.Accepted), accepted  # Alpaca took the price's format
    remote = server.orders[accepted.broker_order_id]
    assert (remote["type"], remote["limit_price"]) == (sent, limit)
    assert remote.get("stop_price") == (None if stop is None else str(stop))
    # inside the reservation: a buy's limit at most its cap, a sell's at least its floor
    assert (Decimal(cap) - Decimal(limit)) * side.sign >= 0


async def test_a_day_order_our_worker_cancels_at_its_close_is_labelled_expired(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
    database_url: str,
) -> None:
    # At the close the worker DELETEs the order and Alpaca reports "canceled", which was
    # taken as the broker's own cancel (broker_cancelled); the paper broker says expired.
    server, url = fake
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with alpaca_worker(config, url):
        oid = await _place(api, user, client_order_id="d", side="buy", type="limit",
                           limit_price="95.00")  # fmt: skip
        await wait_for_order(api.client, user.headers, oid, "Pending")
        await _reach_close(database_url, oid)
        got = await wait_for_order(api.client, user.headers, oid, "Cancelled")
    assert _remote(server, oid)["status"] == "canceled"  # by our DELETE
    assert got["events"][-1]["reason"] == "expired"
    assert await _account(api, user) == {"cash": 100_000, "reserved_cash": 0}


async def _reach_close(database_url: str, order_id: str) -> None:
    """The order's session close arrives: its expiry moves into the past."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE trading_orders SET expires_at = now() - interval '1 second' WHERE id = $1",
            order_id,
        )
    finally:
        await conn.close()


async def test_a_fill_price_a_rounded_average_puts_beyond_the_limit_is_taken_at_the_limit(
    api: LiveServer,
    config: settings.Settings,
    fake: tuple[FakeAlpaca, str],
    alpaca_env: Any,
    redis: Any,
) -> None:
    # Buy 10,000 at a limit of 10.00 with all the cash: 1 @ 9.99, 2 @ 10.00, 9,997 @ 10.00.
    # Alpaca reports the average to 4 places ("9.9967" for 9.99666...), from which the 2
    # came out at 10.00005 and the 9,997 at 10.00000099..., beyond the limit no exchange
    # fills past: the last cost a hair more than the cash left, and the ledger refused it.
    server, url = fake
    server.avg_places, server.max_qty, server.price = 4, Decimal(10_000), Decimal("10.50")
    refused_before = _refused()
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="10.49", ask="10.51")
    with structlog.testing.capture_logs() as logged:
        async with alpaca_worker(config, url):
            oid = await _place(api, user, client_order_id="r", side="buy", type="limit",
                               limit_price="10.00", quantity="10000",
                               time_in_force="gtc")  # fmt: skip
            await wait_for_order(api.client, user.headers, oid, "Pending")
            assert await _account(api, user) == {"cash": 100_000, "reserved_cash": 100_000}
            remote = _remote(server, oid)["id"]
            for qty, price, total in (("1", "9.99", "1"), ("2", "10.00", "3"),
                                      ("9997", "10.00", "10000")):  # fmt: skip
                server.fill(remote, Decimal(qty), Decimal(price))
                await _wait_filled(api, user, oid, Decimal(total))
            assert server.orders[remote]["filled_avg_price"] == "10.0000"
            got = await wait_for_order(api.client, user.headers, oid, "Filled")
    prices = [Decimal(e["details"]["price"]) for e in got["events"] if e["reason"] == "fill"]
    assert prices == [Decimal("9.99"), Decimal("10.00"), Decimal("10.00")]
    assert await _account(api, user) == {"cash": Decimal("0.01"), "reserved_cash": 0}
    assert _refused() == refused_before
    assert not [e for e in logged if e["event"] == "alpaca.fill_beyond_limit"]


async def _wait_filled(api: LiveServer, user: Any, oid: str, quantity: Decimal) -> None:
    for _ in range(500):
        got = (await api.client.get(f"/orders/{oid}", headers=user.headers)).json()
        if Decimal(got["filled_quantity"]) == quantity:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"filled {got['filled_quantity']}, wanted {quantity}")


async def test_a_fill_beyond_the_limit_by_more_than_rounding_is_kept_and_logged(
    fake: tuple[FakeAlpaca, str],
) -> None:
    # A broker error, not rounding: booked as Alpaca reports it (the ledger refuses it if
    # the cash is lacking), and logged for a person to look at.
    server, url = fake
    server.price = Decimal("500.00")
    broker = alpaca.AlpacaBroker.from_config(alpaca_config(url))
    order = _limit_order()
    try:
        accepted = await broker.submit(order)
        assert isinstance(accepted, base.Accepted)
        order = dataclasses.replace(order, broker_order_id=accepted.broker_order_id)
        server.fill(accepted.broker_order_id, Decimal(1), Decimal("99.50"), beyond_limit=True)
        with structlog.testing.capture_logs() as logged:
            updates = await broker.poll([order], dt.datetime.now(dt.UTC))
    finally:
        await broker.aclose()
    assert [e.price for e in updates[order.id].executions] == [Decimal("99.50")]
    (line,) = [e for e in logged if e["event"] == "alpaca.fill_beyond_limit"]
    assert (line["price"], line["limit"]) == ("99.50", "99.00")
