"""Every rejection reason over HTTP: a 422 whose code is the reason, and a stored order."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from starkmatter.orders import config as orders_config
from tests.integration.trading.conftest import publish_market
from tests.support import LiveServer, SignedIn, sign_up, sign_up_admin

pytestmark = pytest.mark.timeout(60)

Setup = Callable[[LiveServer, SignedIn, str, Any], Awaitable[None]]


def order(**fields: Any) -> dict[str, Any]:
    body = {"client_order_id": "x", "symbol": "AAPL", "side": "buy", "quantity": "10"}
    body.update(fields)
    return body


async def nothing(live: LiveServer, user: SignedIn, db_url: str, redis: Any) -> None:
    return None


async def halt_trading(live: LiveServer, user: SignedIn, db_url: str, redis: Any) -> None:
    admin = await sign_up_admin(live, db_url)
    r = await live.client.post(
        "/admin/kill-switch", headers=admin.headers, json={"active": True, "reason": "test halt"}
    )
    assert r.status_code == 200, r.text


async def list_without_quote(live: LiveServer, user: SignedIn, db_url: str, redis: Any) -> None:
    conn = await asyncpg.connect(db_url)
    await conn.execute("INSERT INTO trading_instruments (symbol) VALUES ('MSFT')")
    await conn.close()


async def _instrument(db_url: str, tradable: bool, tick_size: str | None) -> None:
    conn = await asyncpg.connect(db_url)
    await conn.execute(
        "INSERT INTO trading_instruments (symbol, tradable, tick_size) VALUES ('AAPL', $1, $2)",
        tradable,
        None if tick_size is None else Decimal(tick_size),
    )
    await conn.close()


async def halt_the_instrument(live: LiveServer, user: SignedIn, db_url: str, redis: Any) -> None:
    await _instrument(db_url, tradable=False, tick_size=None)


async def coarse_ticks(live: LiveServer, user: SignedIn, db_url: str, redis: Any) -> None:
    await _instrument(db_url, tradable=True, tick_size="0.05")


async def stale_quote(live: LiveServer, user: SignedIn, db_url: str, redis: Any) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", ts=old)


async def two_resting_orders(live: LiveServer, user: SignedIn, db_url: str, redis: Any) -> None:
    for i in range(2):
        r = await live.client.post(
            "/orders",
            headers=user.headers,
            json=order(client_order_id=f"rest{i}", type="limit", limit_price="95.00", quantity="1"),
        )
        assert r.status_code == 201, r.text


CASES: list[tuple[str, dict[str, Any], Setup, dict[str, str]]] = [
    ("kill_switch", order(), halt_trading, {}),
    ("symbol_not_tradable", order(symbol="ZZZZ"), nothing, {}),
    # quoted, but halted by its instrument row
    ("symbol_not_tradable", order(), halt_the_instrument, {}),
    ("no_market_data", order(symbol="MSFT"), list_without_quote, {}),
    ("no_market_data", order(), stale_quote, {}),
    ("invalid_quantity", order(quantity="0"), nothing, {}),
    ("quantity_limit", order(quantity="100001"), nothing, {}),
    ("notional_limit", order(quantity="9999"), nothing, {}),
    ("invalid_price", order(type="limit"), nothing, {}),
    ("tick_size", order(type="limit", limit_price="100.005"), nothing, {}),
    # on the default grid (0.01), off the instrument's
    ("tick_size", order(type="limit", limit_price="100.01"), coarse_ticks, {}),
    ("price_collar", order(type="limit", limit_price="150.00"), nothing, {}),
    (
        "unsupported_time_in_force",
        order(type="stop", stop_price="101.00", time_in_force="ioc"),
        nothing,
        {},
    ),
    # no timing in tests: a zero budget makes the first order of the second the one too many
    ("rate_limit", order(), nothing, {"MAX_ORDERS_PER_SECOND": "0"}),
    ("open_orders_limit", order(), two_resting_orders, {"MAX_OPEN_ORDERS": "2"}),
    ("buying_power", order(quantity="2000"), nothing, {}),
    ("insufficient_position", order(side="sell"), nothing, {}),
    ("position_limit", order(quantity="100"), nothing, {"MAX_POSITION_NOTIONAL": "5000"}),
    ("gross_exposure", order(quantity="100"), nothing, {"MAX_GROSS_EXPOSURE": "5000"}),
]


@pytest.fixture
def limits_env(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[dict[str, str]], None]]:
    def apply(env: dict[str, str]) -> None:
        for key, value in env.items():
            monkeypatch.setenv(f"STARKMATTER_ORDERS_{key}", value)
        orders_config.get_config.cache_clear()

    yield apply
    monkeypatch.undo()
    orders_config.get_config.cache_clear()


@pytest.mark.parametrize(
    ("reason", "body", "setup", "env"), CASES, ids=[f"{c[0]}-{c[2].__name__}" for c in CASES]
)
async def test_rejection_carries_its_reason_code_and_is_stored_as_rejected(
    api: LiveServer,
    database_url: str,
    redis: Any,
    limits_env: Callable[[dict[str, str]], None],
    reason: str,
    body: dict[str, Any],
    setup: Setup,
    env: dict[str, str],
) -> None:
    limits_env(env)
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    await setup(api, user, database_url, redis)

    r = await api.client.post("/orders", headers=user.headers, json=body)

    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == reason and error["message"]
    order_id = error["details"][0]["order_id"]
    stored = (await api.client.get(f"/orders/{order_id}", headers=user.headers)).json()
    assert stored["status"] == "Rejected" and stored["rejection"]["code"] == reason
    assert stored["events"][-1]["reason"] == reason
    assert stored["filled_quantity"] == "0"


async def test_a_price_on_the_instruments_finer_grid_is_accepted(
    api: LiveServer, database_url: str, redis: Any
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    await _instrument(database_url, tradable=True, tick_size="0.005")

    r = await api.client.post(
        "/orders", headers=user.headers, json=order(type="limit", limit_price="100.005")
    )

    assert r.status_code == 201, r.text
    assert r.json()["status"] == "RiskChecked"


@pytest.mark.parametrize(
    "body",
    [
        order(client_order_id="nul\x00inside"),
        order(client_order_id="line\nbreak"),
        order(quantity="1." + "0" * 17_000),
        order(quantity="1E+30"),
        order(quantity="12345678901"),
        order(quantity="0.000000001"),
        order(type="limit", limit_price="1E+26"),
    ],
    ids=["nul", "newline", "huge-text", "huge", "11-digits", "9-places", "huge-price"],
)
async def test_bodies_the_order_tables_cannot_hold_are_refused_before_anything_is_stored(
    api: LiveServer, database_url: str, redis: Any, body: dict[str, Any]
) -> None:
    # Each of these once reached the database or the risk arithmetic: a 500, and (for the
    # first and third) the failure of every other order placed in the same statement.
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")

    r = await api.client.post("/orders", headers=user.headers, json=body)

    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM trading_orders") == 0
    finally:
        await conn.close()
