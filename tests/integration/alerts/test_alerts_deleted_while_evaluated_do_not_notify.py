"""A user alert deleted (or whose user is deleted) while the evaluator works on it neither
notifies nor stops the other alerts of the batch."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.alerts import evaluating

pytestmark = pytest.mark.timeout(60)

T0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


async def _user(pool: asyncpg.Pool) -> uuid.UUID:
    user: uuid.UUID = await pool.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
        f"{uuid.uuid4().hex[:8]}@example.com",
    )
    return user


async def _price_alert(pool: asyncpg.Pool, user: uuid.UUID) -> uuid.UUID:
    alert = uuid.uuid4()
    await pool.execute(
        """INSERT INTO alert_rules (id, user_id, symbol, condition, threshold)
           VALUES ($1, $2, 'AAPL', 'price_above', 100)""",
        alert,
        user,
    )
    return alert


def _deleting_during_evaluation(
    monkeypatch: pytest.MonkeyPatch, pool: asyncpg.Pool, sql: str, key: uuid.UUID
) -> None:
    """Commit ``sql`` between the evaluator's read of the alerts and its write: where a
    DELETE /alerts/{id} or an account deletion lands in a busy evaluation."""
    real = evaluating.latest_indicators

    async def deleting(*args: Any, **kwargs: Any) -> Any:
        await pool.execute(sql, key)
        return await real(*args, **kwargs)

    monkeypatch.setattr(evaluating, "latest_indicators", deleting)


async def test_an_alert_deleted_during_its_evaluation_does_not_notify(
    pool: asyncpg.Pool, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await _user(pool)
    alert = await _price_alert(pool, user)
    await redis.set("quote:AAPL", json.dumps({"symbol": "AAPL", "last": "150",
                                               "ts": T0.isoformat()}))  # fmt: skip
    _deleting_during_evaluation(monkeypatch, pool, "DELETE FROM alert_rules WHERE id = $1", alert)
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None)
    published = await evaluator.evaluate_once(T0)
    await evaluator.aclose()
    assert published == []
    assert await pool.fetchval("SELECT count(*) FROM alert_events") == 0


async def test_a_user_deleted_during_evaluation_does_not_stop_the_other_users_alerts(
    pool: asyncpg.Pool, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone, other = await _user(pool), await _user(pool)
    await _price_alert(pool, gone)
    kept = await _price_alert(pool, other)
    await redis.set("quote:AAPL", json.dumps({"symbol": "AAPL", "last": "150",
                                               "ts": T0.isoformat()}))  # fmt: skip
    _deleting_during_evaluation(monkeypatch, pool, "DELETE FROM users WHERE id = $1", gone)
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None)
    published = await evaluator.evaluate_once(T0)
    await evaluator.aclose()
    assert [e["details"]["rule_id"] for e in published] == [str(kept)]
    assert await pool.fetchval(
        "SELECT triggered_at IS NOT NULL FROM alert_rules WHERE id = $1", kept
    )
