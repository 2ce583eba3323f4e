"""Kill the order worker process between steps; a restarted worker loses nothing and
applies nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from starkmatter.core import audit, settings
from tests.integration.trading.conftest import publish_market, wait_for_order
from tests.support import LiveServer, SignedIn, sign_up

pytestmark = pytest.mark.timeout(120)

ORDERS = 6


def worker_env(config: settings.Settings, failpoint: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}
    env.update(
        {
            "STARKMATTER_ENV": "prod",
            "STARKMATTER_DATABASE_URL": str(config.database_url),
            "STARKMATTER_REDIS_URL": str(config.redis_url),
            "STARKMATTER_SERVICE_NAME": "orders",
            "STARKMATTER_ORDERS_POLL_INTERVAL_MS": "50",
        }
    )
    if failpoint:
        env["STARKMATTER_ORDERS_FAILPOINT"] = failpoint
    return env


async def start_worker(
    config: settings.Settings, failpoint: str | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starkmatter.orders.service",
        env=worker_env(config, failpoint),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    await process.wait()


@pytest.fixture
async def db_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def place_orders(api: LiveServer, user: SignedIn, n: int, prefix: str) -> list[str]:
    ids = []
    for i in range(n):
        r = await api.client.post(
            "/orders",
            headers=user.headers,
            json={
                "client_order_id": f"{prefix}{i}",
                "symbol": "AAPL",
                "side": "buy",
                "quantity": "10",
            },
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


async def assert_applied_exactly_once(
    api: LiveServer, user: SignedIn, conn: asyncpg.Connection, ids: list[str]
) -> None:
    for oid in ids:
        await wait_for_order(api.client, user.headers, oid, "Filled", within_s=60)
    per_order = await conn.fetch(
        "SELECT order_id, count(*) AS n, sum(quantity) AS q FROM trading_executions"
        " GROUP BY order_id"
    )
    assert len(per_order) == len(ids)
    assert all(r["q"] == 10 for r in per_order)
    spent = await conn.fetchval("SELECT sum(quantity * price) FROM trading_executions")
    account = await conn.fetchrow("SELECT cash, reserved_cash, open_orders FROM trading_accounts")
    assert account["cash"] == Decimal(100_000) - spent
    assert account["reserved_cash"] == 0 and account["open_orders"] == 0
    position = await conn.fetchval("SELECT quantity FROM trading_positions")
    assert position == 10 * len(ids)
    filled_events = await conn.fetchval(
        "SELECT count(*) FROM trading_order_events WHERE target = 'Filled'"
    )
    assert filled_events == len(ids)
    audited = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'order.Filled'")
    assert audited == len(ids)
    assert (await audit.verify(conn)).ok
    for _ in range(1000):  # notifications are the last outbox step; bounded wait
        if await conn.fetchval("SELECT count(*) FROM trading_outbox") == 0:
            break
        await asyncio.sleep(0.02)
    assert await conn.fetchval("SELECT count(*) FROM trading_outbox") == 0
    # the seed's triggers: one OrderPlaced per order, one PortfolioChange per committed fill
    # batch, keyed by one of that batch's executions (nothing relays them in this test)
    placed = await conn.fetch("SELECT event_key FROM event_outbox WHERE event = 'OrderPlaced'")
    assert sorted(r["event_key"] for r in placed) == sorted(ids)
    changes = await conn.fetch(
        "SELECT event_key, payload->>'user_id' AS user_id FROM event_outbox"
        " WHERE event = 'PortfolioChange'"
    )
    executions = {str(r["id"]) for r in await conn.fetch("SELECT id FROM trading_executions")}
    assert changes and {r["event_key"] for r in changes} <= executions
    assert {r["user_id"] for r in changes} == {user.user_id}


@pytest.mark.parametrize("failpoint", ["after_broker_submit", "before_commit", "after_commit"])
async def test_worker_killed_at_a_step_recovers_with_nothing_lost_or_doubled(
    api: LiveServer,
    config: settings.Settings,
    db_conn: asyncpg.Connection,
    redis: Any,
    failpoint: str,
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", asks=(("100.01", "100000"),))
    ids = await place_orders(api, user, ORDERS, "c")

    crashing = await start_worker(config, failpoint)
    assert await asyncio.wait_for(crashing.wait(), 60) == 70

    executions = await db_conn.fetchval("SELECT count(*) FROM trading_executions")
    if failpoint == "after_commit":
        assert executions == ORDERS  # the batch committed before the process died
    else:
        assert executions == 0
        statuses = await db_conn.fetch("SELECT DISTINCT status FROM trading_orders")
        assert [r["status"] for r in statuses] == ["RiskChecked"]
        assert await db_conn.fetchval("SELECT count(*) FROM event_outbox") == 0
    healthy = await start_worker(config)
    try:
        await assert_applied_exactly_once(api, user, db_conn, ids)
    finally:
        await stop(healthy)


async def test_worker_killed_repeatedly_while_orders_arrive_loses_and_doubles_nothing(
    api: LiveServer,
    config: settings.Settings,
    db_conn: asyncpg.Connection,
    redis: Any,
) -> None:
    user = await sign_up(api.client)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", asks=(("100.01", "100000"),))
    ids: list[str] = []
    for round_no in range(4):
        process = await start_worker(config)
        ids += await place_orders(api, user, 8, f"r{round_no}-")
        await stop(process)  # SIGKILL, wherever it is
    healthy = await start_worker(config)
    try:
        await assert_applied_exactly_once(api, user, db_conn, ids)
    finally:
        await stop(healthy)
