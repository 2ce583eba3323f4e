"""One bad value, one bad rule or one failed cycle must not stop the alert evaluator."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import structlog

from starkmatter.alerts import evaluating

pytestmark = pytest.mark.timeout(60)

T0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def _rule(folder: Path, name: str, **spec: Any) -> None:
    (folder / f"{name}.json").write_text(json.dumps({"metadata": {"name": name}, "spec": spec}))


async def _user(pool: asyncpg.Pool) -> uuid.UUID:
    user: uuid.UUID = await pool.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
        f"{uuid.uuid4().hex[:8]}@example.com",
    )
    return user


async def _price_alert(
    pool: asyncpg.Pool, user: uuid.UUID, symbol: str, condition: str, threshold: str, **kw: str
) -> uuid.UUID:
    alert = uuid.uuid4()
    await pool.execute(
        """INSERT INTO alert_rules (id, user_id, symbol, condition, threshold, indicator,
               comparison) VALUES ($1, $2, $3, $4, $5::numeric, $6, $7)""",
        alert, user, symbol, condition, threshold, kw.get("indicator"), kw.get("comparison"),
    )  # fmt: skip
    return alert


async def _quote(redis: aioredis.Redis, symbol: str, last: str, ts: dt.datetime) -> None:
    await redis.set(f"quote:{symbol}", json.dumps({"symbol": symbol, "last": last,
                                                    "ts": ts.isoformat()}))  # fmt: skip


async def _bar(pool: asyncpg.Pool, symbol: str, ts: dt.datetime, indicators: str) -> None:
    await pool.execute(
        """INSERT INTO market_bars (symbol, interval, ts, open, high, low, close, volume, vwap,
               trades, indicators) VALUES ($1, '1m', $2, 1, 1, 1, 1, 1, 1, 1, $3::jsonb)""",
        symbol, ts, indicators,
    )  # fmt: skip


async def test_a_nan_indicator_is_unknown_and_other_price_alerts_still_fire(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    user = await _user(pool)
    good = await _price_alert(pool, user, "MSFT", "price_above", "100")
    nan = await _price_alert(pool, user, "AAPL", "indicator", "70", indicator="rsi_14",
                             comparison="above")  # fmt: skip
    await _bar(pool, "AAPL", T0, '{"rsi_14": "NaN"}')
    await _quote(redis, "MSFT", "150", T0)
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None)
    fired = await evaluator.evaluate_price_alerts(T0)
    await evaluator.aclose()
    assert [e["details"]["rule_id"] for e in fired] == [str(good)]
    untouched = await pool.fetchrow(
        "SELECT active, condition_held FROM alert_rules WHERE id = $1", nan
    )
    assert (untouched["active"], untouched["condition_held"]) == (True, False)


async def test_an_unreadable_quote_reads_as_missing_and_is_logged_once(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    _rule(tmp_path, "aapl-high", condition="PriceAbove", symbol="AAPL", threshold="1",
          **{"for": "30s"})  # fmt: skip
    _rule(tmp_path, "tsla-high", condition="PriceAbove", symbol="TSLA", threshold="1",
          **{"for": "30s"})  # fmt: skip
    _rule(tmp_path, "msft-high", condition="PriceAbove", symbol="MSFT", threshold="100",
          **{"for": "30s"})  # fmt: skip
    user = await _user(pool)
    await _price_alert(pool, user, "TSLA", "price_above", "1")
    await redis.set("quote:AAPL", b"not json")
    await redis.set("quote:TSLA", b"[1, 2]")  # JSON, but not a quote document
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    fired = []
    with structlog.testing.capture_logs() as logged:
        for seconds in (0, 30, 60):
            now = T0 + dt.timedelta(seconds=seconds)
            await _quote(redis, "MSFT", "150", now)
            fired += [(e["rule"], e["state"]) for e in await evaluator.evaluate_once(now)]
    await evaluator.aclose()
    assert fired == [("msft-high", "firing")]
    unreadable = sorted(e["symbol"] for e in logged if e["event"] == "alerts.quote_unreadable")
    assert unreadable == ["AAPL", "TSLA"]


async def test_a_rule_whose_evaluation_raises_is_logged_and_the_other_rules_still_fire(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    _rule(tmp_path, "broken-quality", condition="DataQualityIssue", feed="broken",
          **{"for": "30s"})  # fmt: skip
    _rule(tmp_path, "sim-stalled", condition="DataIngestionStopped", feed="sim",
          **{"for": "1m"})  # fmt: skip
    # A negative rate makes the rejected share too large for a Decimal quantize: it raises.
    await redis.hset("feed:heartbeat:broken", mapping={
        "ticks_per_s": "-0.99999999999999999999999999", "rejected_per_s": "1",
        "last_tick_ts": T0.isoformat(),
    })  # fmt: skip
    await redis.hset("feed:heartbeat:sim", mapping={"last_tick_ts": T0.isoformat()})
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    with structlog.testing.capture_logs() as logged:
        fired = await evaluator.evaluate_once(T0 + dt.timedelta(minutes=5))
    await evaluator.aclose()
    assert [(e["rule"], e["state"]) for e in fired] == [("sim-stalled", "firing")]
    assert [e["rule"] for e in logged if e["event"] == "alerts.rule_failed"] == ["broken-quality"]


async def test_the_evaluation_loop_logs_a_failed_cycle_and_evaluates_again(
    pool: asyncpg.Pool, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await _user(pool)
    alert = await _price_alert(pool, user, "MSFT", "price_above", "100")
    await _quote(redis, "MSFT", "150", dt.datetime.now(dt.UTC))
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None)
    real = evaluator.evaluate_once
    calls = 0

    async def failing_once(now: dt.datetime | None = None) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("something nobody foresaw")
        return await real(now)

    monkeypatch.setattr(evaluator, "evaluate_once", failing_once)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logged:
        task = asyncio.create_task(evaluating.run(evaluator, interval_s=0.05, stop=stop))
        for _ in range(100):
            if calls >= 2 or task.done():
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
    await evaluator.aclose()
    assert calls >= 2
    assert await pool.fetchval("SELECT triggered_at IS NOT NULL FROM alert_rules WHERE id = $1",
                               alert)  # fmt: skip
    (failure,) = [e for e in logged if e["event"] == "alerts.evaluation_failed"]
    assert failure["error"] == "RuntimeError: something nobody foresaw"
