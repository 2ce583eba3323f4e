"""Cancel-all and the kill switch end every order they cancel with their own reason
(``cancel_all``, ``kill_switch``), whether it was working or not yet, on the paper broker
and at Alpaca; a single ``DELETE /orders/{id}`` still ends it as ``user_cancel``.

An order the API cannot end at once (not yet working, or held by Alpaca) used to keep only
that a cancel was asked for, so the worker and the Alpaca adapter ended it as the user's.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
from decimal import Decimal
from typing import Any

import asyncpg
import pydantic
import pytest

from starkmatter.core import settings
from starkmatter.orders import config as orders_config
from starkmatter.orders.config import OrdersConfig
from tests.integration.trading import alpaca_fake
from tests.integration.trading.alpaca_fake import KEY, SECRET, FakeAlpaca
from tests.integration.trading.conftest import publish_market, running_worker, wait_for_order
from tests.support import LiveServer, SignedIn, sign_up, sign_up_admin

pytestmark = pytest.mark.timeout(60)

HOW = ("cancel_all", "kill_switch")
"""how the orders are cancelled, named as the reason they must end with"""


@pytest.fixture
async def alpaca() -> collections.abc.AsyncIterator[tuple[FakeAlpaca, str]]:
    """A local server speaking the Alpaca API, and its URL."""
    state = FakeAlpaca()
    async with alpaca_fake.running(state) as url:
        yield state, url


@pytest.fixture
def api_places_at_alpaca(monkeypatch: pytest.MonkeyPatch) -> collections.abc.Iterator[None]:
    monkeypatch.setenv("STARKMATTER_ORDERS_BROKER", "alpaca")
    orders_config.get_config.cache_clear()
    yield
    monkeypatch.undo()
    orders_config.get_config.cache_clear()


def alpaca_worker(
    config: settings.Settings, url: str
) -> contextlib.AbstractAsyncContextManager[Any]:
    return running_worker(
        config,
        OrdersConfig(
            broker="alpaca",
            alpaca_base_url=url,
            poll_interval_ms=50,
            alpaca_key_id=pydantic.SecretStr(KEY),
            alpaca_secret_key=pydantic.SecretStr(SECRET),
        ),
    )


def paper_worker(config: settings.Settings) -> contextlib.AbstractAsyncContextManager[Any]:
    return running_worker(config, OrdersConfig(poll_interval_ms=50))


async def rest(
    api: LiveServer, user: SignedIn, client_order_id: str, time_in_force: str = "gtc"
) -> str:
    """A limit buy below the market: it rests once working."""
    body = {"client_order_id": client_order_id, "symbol": "AAPL", "side": "buy",
            "quantity": "10", "type": "limit", "limit_price": "95.00"}  # fmt: skip
    body["time_in_force"] = time_in_force
    r = await api.client.post("/orders", headers=user.headers, json=body)
    assert r.status_code == 201, r.text
    oid: str = r.json()["id"]
    return oid


async def status(api: LiveServer, user: SignedIn, oid: str) -> str:
    got: str = (await api.client.get(f"/orders/{oid}", headers=user.headers)).json()["status"]
    return got


async def cancel_every_order(
    how: str, api: LiveServer, user: SignedIn, database_url: str
) -> list[str]:
    """Cancel-all for ``user``, or the kill switch for everyone; the ids it cancelled."""
    if how == "cancel_all":
        r = await api.client.delete("/orders", headers=user.headers)
        assert r.status_code == 200, r.text
        ids: list[str] = r.json()["order_ids"]
        return ids
    admin = await sign_up_admin(api, database_url)
    halt = {"active": True, "reason": "market incident", "cancel_working": True}
    r = await api.client.post("/admin/kill-switch", headers=admin.headers, json=halt)
    assert r.status_code == 200, r.text
    lift = {"active": False, "reason": "incident over"}
    assert (
        await api.client.post("/admin/kill-switch", headers=admin.headers, json=lift)
    ).status_code == 200
    return []


async def ended_with(api: LiveServer, user: SignedIn, oid: str) -> str:
    """The reason of the order's Cancelled event, once it has one."""
    got = await wait_for_order(api.client, user.headers, oid, "Cancelled")
    last = got["events"][-1]
    assert last["target"] == "Cancelled", got["events"]
    reason: str = last["reason"]
    return reason


async def audited_as(database_url: str, oid: str) -> str:
    """The reason of the audit row that records the order's end as Cancelled."""
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(500):
            reason: str | None = await conn.fetchval(
                "SELECT reason FROM audit_log WHERE entity_type = 'order' AND entity_id = $1"
                " AND action IN ('order.Cancelled', 'order.cancelled') ORDER BY seq DESC LIMIT 1",
                oid,
            )
            if reason is not None:
                return reason
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise AssertionError(f"no audit row records order {oid} as cancelled")


async def account_reserves_nothing(api: LiveServer, user: SignedIn) -> None:
    got = (await api.client.get("/account", headers=user.headers)).json()
    assert Decimal(got["reserved_cash"]) == 0 and Decimal(got["cash"]) == 100_000, got


@pytest.mark.parametrize("how", HOW)
async def test_paper_orders_working_or_not_yet_end_with_the_reason_of_the_cancel_that_ended_them(
    how: str, api: LiveServer, config: settings.Settings, redis: Any, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with paper_worker(config):
        working = await rest(api, user, "working")
        await wait_for_order(api.client, user.headers, working, "Pending")
    # No worker now: these stay RiskChecked, where the graph has no way to cancel them.
    not_yet, single = await rest(api, user, "not-yet"), await rest(api, user, "single")
    assert [await status(api, user, o) for o in (not_yet, single)] == ["RiskChecked"] * 2
    deleted = await api.client.delete(f"/orders/{single}", headers=user.headers)
    assert deleted.status_code == 202, deleted.text
    cancelled = await cancel_every_order(how, api, user, database_url)
    if how == "cancel_all":
        assert sorted(cancelled) == sorted((working, not_yet, single))
    async with paper_worker(config):
        reasons = {o: await ended_with(api, user, o) for o in (working, not_yet, single)}
        audits = {o: await audited_as(database_url, o) for o in (working, not_yet, single)}
    # The single DELETE came first: the later cancel leaves its reason as it was.
    expected = {working: how, not_yet: how, single: "user_cancel"}
    assert reasons == expected
    assert audits == expected
    await account_reserves_nothing(api, user)


@pytest.mark.parametrize("how", HOW)
async def test_alpaca_orders_working_or_not_yet_end_with_the_reason_of_the_cancel_that_ended_them(
    how: str,
    api: LiveServer,
    config: settings.Settings,
    redis: Any,
    database_url: str,
    alpaca: tuple[FakeAlpaca, str],
    api_places_at_alpaca: None,
) -> None:
    server, url = alpaca
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    async with alpaca_worker(config, url):
        working, single = await rest(api, user, "working"), await rest(api, user, "single")
        for oid in (working, single):
            await wait_for_order(api.client, user.headers, oid, "Pending")
    # No worker now: this one stays RiskChecked, not yet at Alpaca.
    not_yet = await rest(api, user, "not-yet")
    assert await status(api, user, not_yet) == "RiskChecked"
    deleted = await api.client.delete(f"/orders/{single}", headers=user.headers)
    assert deleted.status_code == 202, deleted.text
    await cancel_every_order(how, api, user, database_url)
    async with alpaca_worker(config, url):
        reasons = {o: await ended_with(api, user, o) for o in (working, not_yet, single)}
        audits = {o: await audited_as(database_url, o) for o in (working, not_yet, single)}
    expected = {working: how, not_yet: how, single: "user_cancel"}
    assert reasons == expected
    assert audits == expected
    # Every one was cancelled at Alpaca by our DELETE, the one not yet there after it got there.
    assert sorted(o["status"] for o in server.orders.values()) == ["canceled"] * 3
    await account_reserves_nothing(api, user)


async def test_a_cancel_asked_before_the_close_names_the_reason_though_the_close_passed_since(
    api: LiveServer, config: settings.Settings, redis: Any, database_url: str
) -> None:
    # The worker used to end any order past its close as expired, even one whose cancel
    # was asked before it could end: the Alpaca adapter already said the cancel's reason.
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01")
    oid = await rest(api, user, "day", time_in_force="day")
    assert await cancel_every_order("cancel_all", api, user, database_url) == [oid]
    conn = await asyncpg.connect(database_url)
    try:  # the session close comes before the worker gets to the order
        await conn.execute(
            "UPDATE trading_orders SET expires_at = now() - interval '1 second' WHERE id = $1",
            oid,
        )
    finally:
        await conn.close()
    async with paper_worker(config):
        assert await ended_with(api, user, oid) == "cancel_all"
    await account_reserves_nothing(api, user)
