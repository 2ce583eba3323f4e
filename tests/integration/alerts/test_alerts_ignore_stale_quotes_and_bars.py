"""A quote or a bar too old to be the market now neither fires nor decides an alert."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.alerts import evaluating
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)

T0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


async def _user(pool: asyncpg.Pool) -> uuid.UUID:
    user: uuid.UUID = await pool.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
        f"{uuid.uuid4().hex[:8]}@example.com",
    )
    return user


async def _price_alert(pool: asyncpg.Pool, symbol: str, condition: str, threshold: str,
                       **kw: str) -> uuid.UUID:  # fmt: skip
    alert = uuid.uuid4()
    await pool.execute(
        """INSERT INTO alert_rules (id, user_id, symbol, condition, threshold, indicator,
               comparison) VALUES ($1, $2, $3, $4, $5::numeric, $6, $7)""",
        alert, await _user(pool), symbol, condition, threshold, kw.get("indicator"),
        kw.get("comparison"),
    )  # fmt: skip
    return alert


async def _quote(redis: aioredis.Redis, symbol: str, last: str, ts: dt.datetime) -> None:
    await redis.set(f"quote:{symbol}", json.dumps({"symbol": symbol, "last": last,
                                                    "ts": ts.isoformat()}))  # fmt: skip


async def test_a_price_alert_does_not_fire_on_a_quote_older_than_a_minute(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    alert = await _price_alert(pool, "AAPL", "price_above", "100")
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None)
    # The feed stopped three days ago (or a replay wrote a price of then).
    await _quote(redis, "AAPL", "150", T0 - dt.timedelta(days=3))
    assert await evaluator.evaluate_once(T0) == []
    await _quote(redis, "AAPL", "150", T0 - dt.timedelta(seconds=61))
    assert await evaluator.evaluate_once(T0) == []
    await _quote(redis, "AAPL", "150", T0 - dt.timedelta(seconds=5))
    fired = await evaluator.evaluate_once(T0)
    await evaluator.aclose()
    assert [e["details"]["rule_id"] for e in fired] == [str(alert)]


async def test_an_operational_price_rule_does_not_fire_on_a_stale_quote(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    spec: dict[str, Any] = {"condition": "PriceAbove", "symbol": "AAPL", "threshold": "100",
                            "for": "30s"}  # fmt: skip
    (tmp_path / "aapl-high.json").write_text(json.dumps({"spec": spec}))
    await _quote(redis, "AAPL", "150", T0 - dt.timedelta(hours=1))
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    fired = []
    for seconds in (0, 30, 60, 90):
        fired += await evaluator.evaluate_once(T0 + dt.timedelta(seconds=seconds))
    await evaluator.aclose()
    assert fired == []
    assert await pool.fetchval("SELECT state FROM alert_rule_state") == "ok"


async def test_the_quote_age_limit_is_configurable(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    await _price_alert(pool, "AAPL", "price_above", "100")
    freshness = evaluating.Freshness.from_env({"STARKMATTER_ALERTS_QUOTE_MAX_AGE_S": "600"})
    assert freshness.quote_max_age == dt.timedelta(minutes=10)
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None, freshness=freshness)
    await _quote(redis, "AAPL", "150", T0 - dt.timedelta(minutes=5))
    fired = await evaluator.evaluate_once(T0)
    await evaluator.aclose()
    assert len(fired) == 1


async def test_an_indicator_alert_ignores_the_indicators_of_an_old_bar(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    alert = await _price_alert(pool, "AAPL", "indicator", "70", indicator="rsi_14",
                               comparison="above")  # fmt: skip

    async def bar(ts: dt.datetime) -> None:
        await pool.execute(
            """INSERT INTO market_bars (symbol, interval, ts, open, high, low, close, volume,
                   vwap, trades, indicators)
               VALUES ('AAPL', '1m', $1, 1, 1, 1, 1, 1, 1, 1, '{"rsi_14": "80"}'::jsonb)""",
            ts,
        )

    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None)
    await bar(T0 - dt.timedelta(hours=1))
    assert await evaluator.evaluate_once(T0) == []
    await bar(T0 - dt.timedelta(minutes=1))
    fired = await evaluator.evaluate_once(T0)
    await evaluator.aclose()
    assert [e["details"]["rule_id"] for e in fired] == [str(alert)]


async def test_a_percentage_move_alert_is_refused_on_a_stale_or_unreadable_quote(
    api: LiveServer, redis: aioredis.Redis
) -> None:
    user = await sign_up(api.client)
    body = {"symbol": "MSFT", "condition": "pct_move", "threshold": "2"}
    now = dt.datetime.now(dt.UTC)
    for raw in (
        json.dumps(
            {"symbol": "MSFT", "last": "400", "ts": (now - dt.timedelta(hours=1)).isoformat()}
        ),
        "not json",
        "[400]",
    ):
        await redis.set("quote:MSFT", raw)
        refused = await api.client.post("/alerts", json=body, headers=user.headers)
        assert refused.status_code == 409, (raw, refused.text)
        assert refused.json()["error"]["code"] == "no_quote"
    await _quote(redis, "MSFT", "400", now)
    created = await api.client.post("/alerts", json=body, headers=user.headers)
    assert created.json()["reference_price"] == "400"
