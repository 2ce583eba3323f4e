"""An event trigger whose work failed is redone when the event comes again: the work is
not claimed before it is done (real PostgreSQL and Redis, the real outbox and relay)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from starkmatter.alerts import evaluating
from starkmatter.core import events
from starkmatter.portfolio import marking
from starkmatter.tasks import relaying

pytestmark = pytest.mark.timeout(60)

F = Callable[..., Awaitable[Any]]


def _failing_once(real: F, fault: Exception) -> F:
    """``real``, except that its first call raises ``fault`` before doing anything: the
    worker went away between the trigger's start and its effect."""
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise fault
        return await real(*args, **kwargs)

    return flaky


async def _user(db: asyncpg.Pool, email: str) -> uuid.UUID:
    user: uuid.UUID = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", email
    )
    return user


async def _relay_twice(pool: asyncpg.Pool, redis: aioredis.Redis, fault: type[Exception]) -> None:
    """The first pass fails and leaves the event queued; the second delivers it again."""
    deliver = relaying.in_process(pool, redis)
    with pytest.raises(fault):
        await events.relay_once(pool, deliver)
    assert await events.pending(pool) == 1
    assert await events.relay_once(pool, deliver) == 1
    assert await events.pending(pool) == 0


async def test_a_portfolio_change_whose_revaluation_failed_is_revalued_on_redelivery(
    pool: asyncpg.Pool, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await _user(pool, "holder@example.com")
    await pool.execute(
        "INSERT INTO trading_accounts (user_id, cash, starting_cash) VALUES ($1, 6000, 10000)", user
    )
    await pool.execute(
        """INSERT INTO trading_positions (user_id, symbol, quantity, avg_cost, mark_price)
           VALUES ($1, 'MSFT', 10, 400, 400)""",
        user,
    )
    await redis.set("quote:MSFT", json.dumps({"symbol": "MSFT", "bid": "409.99", "ask": "410.01"}))
    async with pool.acquire() as conn:
        await events.append(conn, "PortfolioChange", {"user_id": str(user)}, "fill-1")
    fault = redis_errors.ConnectionError("Redis went away")
    monkeypatch.setattr(marking, "revalue", _failing_once(marking.revalue, fault))

    await _relay_twice(pool, redis, redis_errors.ConnectionError)

    snapshots = await pool.fetch(
        "SELECT equity, unrealized_pnl FROM portfolio_snapshots WHERE user_id = $1", user
    )
    assert [(s["equity"], s["unrealized_pnl"]) for s in snapshots] == [
        (Decimal(10100), Decimal(100))  # 6000 cash + 10 x 410 (the mid); bought at 400
    ]
    mark = await pool.fetchval("SELECT mark_price FROM trading_positions WHERE user_id = $1", user)
    assert mark == Decimal(410)
    applied = await pool.fetch("SELECT event_key FROM task_applied_events")
    assert [r["event_key"] for r in applied] == ["PortfolioChange:fill-1"]


async def test_a_market_data_update_whose_evaluation_failed_fires_its_alert_on_redelivery(
    pool: asyncpg.Pool, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await _user(pool, "watcher@example.com")
    rule = await pool.fetchval(
        """INSERT INTO alert_rules (id, user_id, symbol, condition, threshold)
           VALUES (gen_random_uuid(), $1, 'AAPL', 'price_above', 200) RETURNING id""",
        user,
    )
    await redis.set("quote:AAPL", json.dumps({"symbol": "AAPL", "last": "200.50"}))
    update = {"feed": "sim", "symbols": ["AAPL"], "window_s": 1.0}
    async with pool.acquire() as conn:
        await events.append(conn, "MarketDataUpdate", update, "sim:1")
    real = evaluating.Evaluator.evaluate_price_alerts
    monkeypatch.setattr(
        evaluating.Evaluator,
        "evaluate_price_alerts",
        _failing_once(real, OSError("connection reset")),
    )

    await _relay_twice(pool, redis, OSError)
    # A late redelivery after the claim changes nothing.
    async with pool.acquire() as conn:
        await events.append(conn, "MarketDataUpdate", update, "sim:1")
    assert await events.relay_once(pool, relaying.in_process(pool, redis)) == 1

    fired = await pool.fetch("SELECT user_id, fingerprint, summary FROM alert_events")
    assert [(f["user_id"], f["fingerprint"], f["summary"]) for f in fired] == [
        (user, f"price:{rule}", "AAPL at 200.50 crossed above 200")
    ]
    assert await pool.fetchval("SELECT active FROM alert_rules WHERE id = $1", rule) is False
    applied = await pool.fetch("SELECT event_key FROM task_applied_events")
    assert [r["event_key"] for r in applied] == ["MarketDataUpdate:sim:1"]
