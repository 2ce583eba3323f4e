"""Paper fills over HTTP: thin depth, IOC/FOK, resting limits, stops, cancels, expiry."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from starkmatter.orders import processing
from starkmatter.orders.processing import Worker
from tests.integration.trading.conftest import publish_market, wait_for_order
from tests.support import LiveServer, sign_up, sign_up_admin

pytestmark = pytest.mark.timeout(60)

THIN = (("100.01", "100"), ("100.02", "50"))


async def place(api: LiveServer, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"client_order_id": "o", "symbol": "AAPL", "side": "buy", "quantity": "10"}
    body.update(fields)
    r = await api.client.post("/orders", headers=headers, json=body)
    assert r.status_code == 201, r.text
    result: dict[str, Any] = r.json()
    return result


async def reach_close(database_url: str, order_id: str) -> None:
    """The order's session close arrives: its expiry moves into the past."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE trading_orders SET expires_at = now() - interval '1 second' WHERE id = $1",
            order_id,
        )
    finally:
        await conn.close()


async def account(api: LiveServer, headers: dict[str, str]) -> dict[str, Decimal]:
    body = (await api.client.get("/account", headers=headers)).json()
    return {k: Decimal(body[k]) for k in ("cash", "reserved_cash", "buying_power")}


async def test_market_order_larger_than_thin_depth_fills_in_part_and_keeps_working(
    api: LiveServer, worker: Worker
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01", asks=THIN)
    o = await place(api, user.headers, quantity="300")
    got = await wait_for_order(api.client, user.headers, o["id"], "PartiallyFilled")
    assert Decimal(got["filled_quantity"]) == 150
    fills = [e["details"] for e in got["events"] if e["reason"] == "fill"]
    assert fills == [
        {"quantity": "100", "price": "100.01"},
        {"quantity": "50", "price": "100.02"},
    ]
    acct = await account(api, user.headers)
    cap = Decimal("100.01") * Decimal("1.02")
    assert acct["reserved_cash"] == 150 * cap

    cancelled = (await api.client.delete(f"/orders/{o['id']}", headers=user.headers)).json()
    assert cancelled["status"] == "Cancelled" and Decimal(cancelled["filled_quantity"]) == 150
    acct = await account(api, user.headers)
    spent = 100 * Decimal("100.01") + 50 * Decimal("100.02")
    assert acct == {"cash": 100_000 - spent, "reserved_cash": 0, "buying_power": 100_000 - spent}


async def test_ioc_fills_what_the_book_shows_and_cancels_the_rest(
    api: LiveServer, worker: Worker
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01", asks=THIN)
    o = await place(api, user.headers, quantity="300", time_in_force="ioc")
    got = await wait_for_order(api.client, user.headers, o["id"], "Cancelled")
    assert Decimal(got["filled_quantity"]) == 150
    assert [e["target"] for e in got["events"]][-2:] == ["PartiallyFilled", "Cancelled"]
    assert got["events"][-1]["reason"] == "ioc_remainder"


async def test_fok_that_cannot_fill_completely_fills_nothing(
    api: LiveServer, worker: Worker
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01", asks=THIN)
    o = await place(api, user.headers, quantity="300", time_in_force="fok")
    got = await wait_for_order(api.client, user.headers, o["id"], "Cancelled")
    assert Decimal(got["filled_quantity"]) == 0 and got["events"][-1]["reason"] == "fok_unfillable"
    assert (await account(api, user.headers))["cash"] == 100_000


async def test_limit_order_rests_until_the_market_crosses_it(
    api: LiveServer, worker: Worker
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    o = await place(api, user.headers, type="limit", limit_price="99.50", time_in_force="gtc")
    await wait_for_order(api.client, user.headers, o["id"], "Pending")
    await publish_market(worker.redis, "AAPL", bid="99.40", ask="99.45")
    got = await wait_for_order(api.client, user.headers, o["id"], "Filled")
    assert Decimal(got["avg_fill_price"]) == Decimal("99.45")


async def test_sell_stop_triggers_when_the_last_trade_falls_to_it(
    api: LiveServer, worker: Worker
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    bought = await place(api, user.headers, client_order_id="buy")
    await wait_for_order(api.client, user.headers, bought["id"], "Filled")
    stop = await place(
        api, user.headers, client_order_id="stop", side="sell", type="stop", stop_price="98.00"
    )
    await wait_for_order(api.client, user.headers, stop["id"], "Pending")
    await publish_market(worker.redis, "AAPL", bid="97.90", ask="98.10", last="97.95")
    got = await wait_for_order(api.client, user.headers, stop["id"], "Filled")
    assert Decimal(got["avg_fill_price"]) == Decimal("97.90")
    positions = (await api.client.get("/portfolio/positions", headers=user.headers)).json()
    assert Decimal(positions[0]["quantity"]) == 0
    assert Decimal(positions[0]["realized_pnl"]) == 10 * (Decimal("97.90") - Decimal("100.01"))


async def test_day_order_expires_at_the_close(
    api: LiveServer, worker: Worker, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    o = await place(api, user.headers, type="limit", limit_price="95.00")
    await wait_for_order(api.client, user.headers, o["id"], "Pending")
    await reach_close(database_url, o["id"])
    got = await wait_for_order(api.client, user.headers, o["id"], "Cancelled")
    assert got["events"][-1]["reason"] == "expired"
    assert (await account(api, user.headers))["reserved_cash"] == 0


async def test_working_orders_beyond_one_pass_are_all_re_matched_and_expired_in_turn(
    api: LiveServer, worker: Worker, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pass used to read the oldest 5,000 working orders only: any newer one was never
    # filled, expired or cancelled, and its reservation never freed. With 2 per pass here,
    # the passes must page through all of them.
    monkeypatch.setattr(processing, "MATCH_PAGE", 2)
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    resting = [
        await place(api, user.headers, client_order_id=f"r{i}", type="limit",
                    limit_price="95.00", time_in_force="gtc")
        for i in range(5)
    ]  # fmt: skip
    expiring = await place(api, user.headers, client_order_id="day", type="limit",
                           limit_price="95.00")  # fmt: skip
    for o in [*resting, expiring]:
        await wait_for_order(api.client, user.headers, o["id"], "Pending")
    await reach_close(database_url, expiring["id"])  # the newest order, on the last page
    got = await wait_for_order(api.client, user.headers, expiring["id"], "Cancelled")
    assert got["events"][-1]["reason"] == "expired"
    await publish_market(worker.redis, "AAPL", bid="94.90", ask="94.95")
    for o in resting:
        await wait_for_order(api.client, user.headers, o["id"], "Filled")
    assert (await account(api, user.headers))["reserved_cash"] == 0


async def test_cancel_all_cancels_every_working_order_of_the_user_only(
    api: LiveServer, worker: Worker
) -> None:
    user, other = await sign_up(api.client), await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    mine = [
        await place(api, user.headers, client_order_id=f"m{i}", type="limit", limit_price="95.00")
        for i in range(3)
    ]
    theirs = await place(api, other.headers, type="limit", limit_price="95.00")
    for o in mine:
        await wait_for_order(api.client, user.headers, o["id"], "Pending")
    r = await api.client.delete("/orders", headers=user.headers)
    assert r.status_code == 200 and r.json()["cancel_requested"] == 3
    for o in mine:
        await wait_for_order(api.client, user.headers, o["id"], "Cancelled")
    still = (await api.client.get(f"/orders/{theirs['id']}", headers=other.headers)).json()
    assert still["status"] in ("RiskChecked", "Submitted", "Pending")


async def test_filled_order_cannot_be_cancelled(api: LiveServer, worker: Worker) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    o = await place(api, user.headers)
    await wait_for_order(api.client, user.headers, o["id"], "Filled")
    r = await api.client.delete(f"/orders/{o['id']}", headers=user.headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_cancellable"


async def test_kill_switch_is_admin_only_cancels_working_orders_and_can_be_lifted(
    api: LiveServer, worker: Worker, database_url: str
) -> None:
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")
    resting = await place(api, user.headers, type="limit", limit_price="95.00")
    await wait_for_order(api.client, user.headers, resting["id"], "Pending")
    halt = {"active": True, "reason": "market incident", "cancel_working": True}
    refused = await api.client.post("/admin/kill-switch", headers=user.headers, json=halt)
    assert refused.status_code == 403

    admin = await sign_up_admin(api, database_url)
    halted = await api.client.post("/admin/kill-switch", headers=admin.headers, json=halt)
    assert halted.status_code == 200 and halted.json()["cancelled_orders"] == 1
    await wait_for_order(api.client, user.headers, resting["id"], "Cancelled")
    blocked = await api.client.post(
        "/orders",
        headers=user.headers,
        json={"client_order_id": "during", "symbol": "AAPL", "side": "buy", "quantity": "1"},
    )
    assert blocked.json()["error"]["code"] == "kill_switch"

    lift = {"active": False, "reason": "incident over"}
    assert (
        await api.client.post("/admin/kill-switch", headers=admin.headers, json=lift)
    ).status_code == 200
    after = await place(api, user.headers, client_order_id="after")
    await wait_for_order(api.client, user.headers, after["id"], "Filled")


async def test_the_cached_portfolio_follows_placements_and_cancels(
    api: LiveServer, worker: Worker
) -> None:
    # GET /portfolio is cached; only fills used to drop the cache, so the reserved cash of
    # a resting order, or of one just cancelled, was stale for up to the cache's TTL.
    user = await sign_up(api.client)
    await publish_market(worker.redis, "AAPL", bid="99.99", ask="100.01")

    async def reserved() -> Decimal:
        body = (await api.client.get("/portfolio", headers=user.headers)).json()
        return Decimal(body["reserved_cash"])

    assert await reserved() == 0  # now cached
    o = await place(api, user.headers, type="limit", limit_price="95.00", time_in_force="gtc")
    await wait_for_order(api.client, user.headers, o["id"], "Pending")
    async with asyncio.timeout(5):  # the worker drops the cache with its notifications
        while await reserved() != Decimal("950.00"):  # noqa: ASYNC110 - cached in Redis
            await asyncio.sleep(0.02)
    cancel = await api.client.delete(f"/orders/{o['id']}", headers=user.headers)
    assert cancel.status_code in (200, 202), cancel.text
    await wait_for_order(api.client, user.headers, o["id"], "Cancelled")
    assert await reserved() == 0
