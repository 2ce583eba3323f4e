"""The seed's event triggers leave through the transactional outbox (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from starkmatter.core import events
from starkmatter.tasks import jobs, relaying

pytestmark = pytest.mark.timeout(60)


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.seen: list[events.Event] = []
        self.fail_on = fail_on

    async def __call__(self, event: events.Event) -> None:
        if event.key == self.fail_on:
            raise OSError("broker unreachable")
        self.seen.append(event)


async def test_an_event_exists_only_if_its_transaction_commits(pool: asyncpg.Pool) -> None:
    async def failing_change(conn: asyncpg.Connection[Any]) -> None:
        async with conn.transaction():
            await events.append(conn, "OrderPlaced", {"order_id": "o-1"}, "o-1")
            raise RuntimeError("the change failed")

    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await failing_change(conn)
        async with conn.transaction():
            await events.append(conn, "OrderPlaced", {"order_id": "o-2"}, "o-2")
    seen = Recorder()
    assert await events.relay_once(pool, seen) == 1
    assert seen.seen == [events.Event("OrderPlaced", "o-2", {"order_id": "o-2"})]


async def test_appending_the_same_event_twice_queues_it_once(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await events.append(conn, "PortfolioChange", {"user_id": "u"}, "fill-7")
        assert not await events.append(conn, "PortfolioChange", {"user_id": "u"}, "fill-7")
        batch = [
            events.Event("NewsArticleReceived", f"article-{i}", {"article_id": i})
            for i in (1, 2, 1)
        ]
        assert await events.append_many(conn, batch) == 2
    assert await events.pending(pool) == 3


async def test_unknown_events_and_empty_keys_are_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="unknown event 'OrderPlacd'"):
            await events.append(conn, "OrderPlacd", {}, "k")
        with pytest.raises(ValueError, match="non-empty key"):
            await events.append(conn, "OrderPlaced", {}, "")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO event_outbox (event, event_key, payload) VALUES ('Nope', 'k', '{}')"
            )


async def test_a_failed_delivery_keeps_the_events_for_the_next_pass(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for key in ("a", "b", "c"):
            await events.append(conn, "MarketDataUpdate", {"feed": "f", "key": key}, key)
    with pytest.raises(OSError, match="broker unreachable"):
        await events.relay_once(pool, Recorder(fail_on="b"))
    assert await events.pending(pool) == 3
    seen = Recorder()
    assert await events.relay_once(pool, seen) == 3
    assert [e.key for e in seen.seen] == ["a", "b", "c"]
    assert await events.pending(pool) == 0


async def test_concurrent_relays_never_deliver_the_same_event(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await events.append_many(
            conn,
            [events.Event("OrderPlaced", f"o-{i}", {"order_id": i}) for i in range(300)],
        )
    delivered: list[str] = []

    async def slow(event: events.Event) -> None:
        delivered.append(event.key)
        await asyncio.sleep(0)

    async def relay() -> None:
        while await events.relay_once(pool, slow, limit=25):
            pass

    await asyncio.gather(relay(), relay(), relay())
    assert sorted(delivered) == sorted(f"o-{i}" for i in range(300))


async def test_payloads_round_trip_as_json(pool: asyncpg.Pool) -> None:
    payload: dict[str, Any] = {"symbols": ["AAPL", "MSFT"], "qty": "1.50", "nested": {"a": 1}}
    async with pool.acquire() as conn:
        await events.append(conn, "MarketDataUpdate", payload, "feed:1")
    seen = Recorder()
    await events.relay_once(pool, seen)
    assert seen.seen[0].payload == payload


async def test_old_applied_event_keys_are_forgotten_but_backfill_keys_are_kept(
    pool: asyncpg.Pool,
) -> None:
    now = dt.datetime.now(dt.UTC)
    await pool.executemany(
        "INSERT INTO task_applied_events (event_key, task_name, applied_at) VALUES ($1, $2, $3)",
        [
            ("MarketDataUpdate:dev:1", "on_event", now - dt.timedelta(days=8)),
            ("MarketDataUpdate:dev:2", "on_event", now - dt.timedelta(days=1)),
            ("backfill:bars.csv:abc", "backfill", now - dt.timedelta(days=400)),
        ],
    )
    assert await jobs.forget_applied_events(pool, now - relaying.APPLIED_KEEP) == 1
    left = await pool.fetch("SELECT event_key FROM task_applied_events ORDER BY event_key")
    assert [r["event_key"] for r in left] == ["MarketDataUpdate:dev:2", "backfill:bars.csv:abc"]


async def test_a_bad_event_is_dead_lettered_in_process_and_does_not_block_the_rest(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    async with pool.acquire() as conn:
        await events.append_many(
            conn,
            [
                events.Event("NewsArticleReceived", "bad", {"article_id": "not-a-number"}),
                events.Event("PortfolioChange", "fill-1", {"user_id": str(uuid.uuid4())}),
            ],
        )
    assert await events.relay_once(pool, relaying.in_process(pool, redis)) == 2
    assert await events.pending(pool) == 0
    dead = await pool.fetch("SELECT task_id, task_name, args, error FROM task_dead_letters")
    assert [(d["task_id"], d["task_name"]) for d in dead] == [
        ("event:NewsArticleReceived:bad", "starkmatter.tasks.jobs.on_event")
    ]
    assert dead[0]["args"][1] == {"article_id": "not-a-number"} and "ValueError" in dead[0]["error"]
    applied = await pool.fetch("SELECT event_key FROM task_applied_events")
    assert [r["event_key"] for r in applied] == ["PortfolioChange:fill-1"]
