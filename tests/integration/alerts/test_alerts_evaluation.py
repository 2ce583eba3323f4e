"""Operational rules and price alerts evaluated against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.alerts import evaluating
from starkmatter.core import embedded, replaying
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)


def _numbered(data: bytes) -> Any:
    """The payload of a message published for replay (numbered by Redis)."""
    number, payload = replaying.split(data)
    assert number is not None, "published through replaying, so SSE clients can resume"
    return json.loads(payload)


T0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def _rule(folder: Path, name: str, **spec: Any) -> None:
    resource = {"apiVersion": "starkmatter.io/v1alpha1", "kind": "AlertRule",
                "metadata": {"name": name}, "spec": spec}  # fmt: skip
    (folder / f"{name}.json").write_text(json.dumps(resource))


async def _heartbeat(redis: aioredis.Redis, feed: str, last: dt.datetime, **rates: str) -> None:
    mapping: dict[str | bytes, str | bytes] = {
        "last_tick_ts": last.isoformat(),
        "updated_ts": last.isoformat(),
    }
    mapping.update(rates)
    await redis.hset(f"feed:heartbeat:{feed}", mapping=mapping)  # type: ignore[arg-type]


async def test_ingestion_stopped_fires_once_and_resolves_when_ticks_return(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    _rule(tmp_path, "sim-stalled", condition="DataIngestionStopped", feed="sim",
          severity="critical", **{"for": "2m"})  # fmt: skip
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    pubsub = redis.pubsub()
    await pubsub.subscribe("alerts:ops")
    await _heartbeat(redis, "sim", T0)
    states = []
    for minute in (1, 3, 4, 5):
        now = T0 + dt.timedelta(minutes=minute)
        states += [e["state"] for e in await evaluator.evaluate_once(now)]
    assert states == ["firing"]
    await _heartbeat(redis, "sim", T0 + dt.timedelta(minutes=6))
    for seconds in (365, 395, 425, 455):
        states += [
            e["state"] for e in await evaluator.evaluate_once(T0 + dt.timedelta(seconds=seconds))
        ]
    assert states == ["firing", "resolved"]
    received = []
    while (message := await pubsub.get_message(timeout=1)) is not None:
        if message["type"] == "message":
            received.append(_numbered(message["data"]))
    await pubsub.aclose()
    assert [(m["rule"], m["state"], m["severity"]) for m in received] == [
        ("sim-stalled", "firing", "critical"),
        ("sim-stalled", "resolved", "critical"),
    ]
    stored = await pool.fetch("SELECT state FROM alert_events ORDER BY id")
    assert [r["state"] for r in stored] == ["firing", "resolved"]
    await evaluator.aclose()


async def test_ingestion_stopped_is_quiet_on_a_finished_replay_while_its_worker_is_alive(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    for feed in ("live", "backfill", "dead-backfill"):
        _rule(tmp_path, f"{feed}-stalled", condition="DataIngestionStopped", feed=feed,
              **{"for": "2m"})  # fmt: skip
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    finished = {"replay_finished_ts": T0.isoformat()}
    # Every feed's last tick was at T0; only the dead worker stopped sending heartbeats.
    await _heartbeat(redis, "dead-backfill", T0, **finished)
    fired = []
    for minute in range(1, 11):
        now = T0 + dt.timedelta(minutes=minute)
        for feed, extra in (("live", {}), ("backfill", finished)):
            await _heartbeat(redis, feed, T0, **extra, updated_ts=now.isoformat())
        fired += [(e["rule"], e["state"]) for e in await evaluator.evaluate_once(now)]
    await evaluator.aclose()
    # The live feed's ticks stopped; the dead worker's heartbeat went stale; the finished
    # replay's worker is alive and expects no ticks.
    assert sorted(fired) == [("dead-backfill-stalled", "firing"), ("live-stalled", "firing")]
    assert (
        await pool.fetchval("SELECT state FROM alert_rule_state WHERE rule = 'backfill-stalled'")
        == "ok"
    )


async def test_firing_state_survives_an_evaluator_restart_without_a_repeat(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    _rule(tmp_path, "quality", condition="DataQualityIssue", feed="sim", threshold="5",
          **{"for": "30s"})  # fmt: skip
    await _heartbeat(redis, "sim", T0, ticks_per_s="90", rejected_per_s="10")
    first = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    fired = await first.evaluate_once(T0) + await first.evaluate_once(T0 + dt.timedelta(seconds=30))
    await first.aclose()
    assert [e["state"] for e in fired] == ["firing"]
    assert fired[0]["details"]["value"] == "10.00"
    second = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    assert await second.evaluate_once(T0 + dt.timedelta(seconds=60)) == []
    await second.aclose()


async def test_cache_failure_fires_when_redis_is_unreachable(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    _rule(tmp_path, "redis-down", condition="CacheFailure", **{"for": "30s"})
    dead = aioredis.Redis(port=embedded.free_port(), socket_connect_timeout=0.5)
    evaluator = evaluating.Evaluator(pool, dead, rules_dir=tmp_path)
    events = await evaluator.evaluate_once(T0)
    events += await evaluator.evaluate_once(T0 + dt.timedelta(seconds=30))
    # Redis is down, so the event cannot be broadcast: it is stored all the same.
    assert [e["state"] for e in events] == ["firing"]
    assert await pool.fetchval("SELECT count(*) FROM alert_events WHERE rule = 'redis-down'") == 1
    await evaluator.aclose()
    await dead.aclose()


async def test_price_alert_created_over_http_fires_once_on_crossing(
    api: LiveServer, pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    user = await sign_up(api.client)
    await redis.set("quote:AAPL", json.dumps({"symbol": "AAPL", "last": "195.00"}))
    created = await api.client.post(
        "/alerts",
        json={"symbol": "aapl", "condition": "price_above", "threshold": "200"},
        headers=user.headers,
    )
    assert created.status_code == 201, created.text
    alert = created.json()
    assert alert["symbol"] == "AAPL" and alert["active"] is True
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None)
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"alerts:{user.user_id}")
    assert await evaluator.evaluate_once() == []
    await redis.set("quote:AAPL", json.dumps({"symbol": "AAPL", "last": "200.50"}))
    fired = await evaluator.evaluate_once()
    assert [e["summary"] for e in fired] == ["AAPL at 200.50 crossed above 200"]
    assert await evaluator.evaluate_once() == []
    message = None
    while message is None or message["type"] != "message":
        message = await pubsub.get_message(timeout=5)
        assert message is not None
    await pubsub.aclose()
    assert _numbered(message["data"])["details"]["rule_id"] == alert["id"]
    listed = (await api.client.get("/alerts", headers=user.headers)).json()
    assert listed[0]["active"] is False and listed[0]["triggered_at"] is not None
    events = (await api.client.get("/alerts/events", headers=user.headers)).json()
    assert [e["kind"] for e in events] == ["price"]
    await evaluator.aclose()


async def test_two_evaluators_seeing_the_same_crossing_fire_it_once(
    api: LiveServer, pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """The periodic evaluator and a MarketDataUpdate trigger may run at the same moment."""
    user = await sign_up(api.client)
    await redis.set("quote:MSFT", json.dumps({"symbol": "MSFT", "last": "410.00"}))
    created = await api.client.post(
        "/alerts",
        json={"symbol": "MSFT", "condition": "price_below", "threshold": "400"},
        headers=user.headers,
    )
    assert created.status_code == 201, created.text
    first = evaluating.Evaluator(pool, redis, rules_dir=None)
    second = evaluating.Evaluator(pool, redis, rules_dir=None)
    assert await first.evaluate_price_alerts(T0) == []
    await redis.set("quote:MSFT", json.dumps({"symbol": "MSFT", "last": "399.00"}))
    fired = await asyncio.gather(
        *(e.evaluate_price_alerts(T0) for e in (first, second, first, second))
    )
    assert sum(len(f) for f in fired) == 1
    stored = await pool.fetchval("SELECT count(*) FROM alert_events WHERE kind = 'price'")
    assert stored == 1
    await first.aclose()
    await second.aclose()


async def test_percentage_move_needs_a_live_quote_and_measures_from_it(
    api: LiveServer, pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    user = await sign_up(api.client)
    body = {"symbol": "MSFT", "condition": "pct_move", "threshold": "2"}
    refused = await api.client.post("/alerts", json=body, headers=user.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_quote"
    await redis.set("quote:MSFT", json.dumps({"symbol": "MSFT", "last": "400"}))
    created = await api.client.post("/alerts", json=body, headers=user.headers)
    assert created.json()["reference_price"] == "400"
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=None)
    await redis.set("quote:MSFT", json.dumps({"symbol": "MSFT", "last": "391"}))
    fired = await evaluator.evaluate_once()
    assert fired[0]["summary"] == "MSFT moved -2.25% from 400 (to 391)"
    await evaluator.aclose()


async def test_alerts_are_private_deletable_and_audited(
    api: LiveServer, pool: asyncpg.Pool
) -> None:
    owner = await sign_up(api.client)
    other = await sign_up(api.client)
    created = await api.client.post(
        "/alerts",
        json={"symbol": "TSLA", "condition": "indicator", "threshold": "70",
              "indicator": "rsi_14", "comparison": "above"},
        headers=owner.headers,
    )  # fmt: skip
    alert_id = created.json()["id"]
    assert (await api.client.get("/alerts", headers=other.headers)).json() == []
    theirs = await api.client.delete(f"/alerts/{alert_id}", headers=other.headers)
    assert theirs.status_code == 404
    mine = await api.client.delete(f"/alerts/{alert_id}", headers=owner.headers)
    assert mine.status_code == 204
    actions = await pool.fetch(
        "SELECT action FROM audit_log WHERE entity_id = $1 ORDER BY seq", alert_id
    )
    assert [r["action"] for r in actions] == ["alert.created", "alert.deleted"]


async def test_indicator_alert_without_an_indicator_is_refused(api: LiveServer) -> None:
    user = await sign_up(api.client)
    resp = await api.client.post(
        "/alerts",
        json={"symbol": "TSLA", "condition": "indicator", "threshold": "70"},
        headers=user.headers,
    )
    assert resp.status_code == 422


async def test_indicator_alerts_take_signed_thresholds_and_price_alerts_positive_ones(
    api: LiveServer,
) -> None:
    # A MACD histogram crossing 0 or -1 is a real alert; a price of 0 or less is not.
    user = await sign_up(api.client)

    async def create(**fields: str) -> int:
        body = {"symbol": "TSLA", **fields}
        return (await api.client.post("/alerts", json=body, headers=user.headers)).status_code

    assert await create(condition="indicator", threshold="0", indicator="macd_histogram",
                        comparison="above") == 201  # fmt: skip
    assert await create(condition="indicator", threshold="-1", indicator="macd_histogram",
                        comparison="below") == 201  # fmt: skip
    assert await create(condition="price_above", threshold="0") == 422
    assert await create(condition="pct_move", threshold="-5") == 422
