"""The event relay: moves the outbox (``core.events``) to the event triggers.

In a cluster ``starkmatter beat`` runs the relay beside the scheduler and hands events to
the ``on_event`` task (late acks: durable until a worker has applied them). ``starkmatter
dev`` has no Celery worker, so its relay applies the triggers in process. Both paths call
the same idempotent :func:`jobs.handle_event`, so a redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import time

import asyncpg
import redis.asyncio as aioredis

from starkmatter.core import db, events, logs, redis_client, settings
from starkmatter.tasks import deadletters, jobs

log = logs.get_logger(__name__)

IDLE_WAIT_S = 0.25
"""How long the relay sleeps when the outbox is empty: the latency of an idle event."""
ERROR_WAIT_S = 2.0
"""Pause after a failed pass (database or broker away); pending events stay pending."""
APPLIED_KEEP = dt.timedelta(days=7)
"""How long an applied event's key is remembered: far longer than any redelivery (the
broker's visibility timeout is an hour), short enough that a feed's once-a-second
MarketDataUpdate does not grow the table without end."""
PRUNE_EVERY_S = 600.0


async def to_celery(event: events.Event) -> None:
    # apply_async blocks on the broker round trip: keep it off the event loop.
    await asyncio.to_thread(jobs.emit, event.name, event.payload, event.key)


def in_process(pool: asyncpg.Pool, redis_conn: aioredis.Redis) -> events.Deliver:
    async def deliver(event: events.Event) -> None:
        try:
            outcome = await jobs.handle_event(
                pool, redis_conn, event.name, event.payload, event.key
            )
        except jobs.TRANSIENT:
            raise  # the database or Redis is away: the event stays queued
        except Exception as exc:  # one bad event must not block the outbox
            log.exception("events.dead_lettered", event_name=event.name, key=event.key)
            await deadletters.store(
                pool, f"event:{event.name}:{event.key}", jobs.on_event.name,
                [event.name, event.payload, event.key], {}, repr(exc), 0,
            )  # fmt: skip
            return
        log.debug("events.applied", event_name=event.name, key=event.key, outcome=outcome)

    return deliver


async def run(pool: asyncpg.Pool, deliver: events.Deliver, stop: asyncio.Event) -> None:
    """Relay until ``stop`` is set: a full batch is followed at once by the next."""
    pruned_at = 0.0
    while not stop.is_set():
        try:
            if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                await jobs.forget_applied_events(pool, dt.datetime.now(dt.UTC) - APPLIED_KEEP)
                pruned_at = time.monotonic()
            moved = await events.relay_once(pool, deliver)
        except Exception as exc:  # noqa: BLE001 - database or broker away: retry, never die
            log.warning("events.relay_failed", error=repr(exc), retry_s=ERROR_WAIT_S)
            moved, wait = 0, ERROR_WAIT_S
        else:
            wait = IDLE_WAIT_S
        if moved == 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stop.wait()


async def run_dev(config: settings.Settings) -> None:
    """``starkmatter dev``: relay and apply in this process until cancelled."""
    pool = await db.create_pool(config.model_copy(update={"db_pool_min": 1, "db_pool_max": 2}))
    redis_conn = redis_client.create_redis(config)
    try:
        await run(pool, in_process(pool, redis_conn), asyncio.Event())
    finally:
        await redis_conn.aclose()
        await pool.close()


def start_beside_beat(config: settings.Settings) -> threading.Thread:
    """Run the Celery relay in a daemon thread of the beat process.

    Beat is the one process per deployment that produces tasks and never forks, so the relay
    lives there; it would be safe to run more (rows are claimed with SKIP LOCKED)."""

    async def main() -> None:
        pool = await db.create_pool(config.model_copy(update={"db_pool_min": 1, "db_pool_max": 2}))
        try:
            await run(pool, to_celery, asyncio.Event())
        finally:
            await pool.close()

    def forever() -> None:
        while True:  # e.g. the database is not reachable yet when beat starts
            try:
                asyncio.run(main())
            except Exception:
                log.exception("events.relay_stopped", restart_in_s=ERROR_WAIT_S)
            time.sleep(ERROR_WAIT_S)

    thread = threading.Thread(target=forever, daemon=True, name="event-relay")
    thread.start()
    return thread
