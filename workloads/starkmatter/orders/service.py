"""``starkmatter orders``: the order worker, run until cancelled.

It drains the trading outbox, hands orders to the broker, re-matches working orders and
expires day orders. Several replicas may run: outbox rows and order rows are taken with
row locks (``SKIP LOCKED`` for the outbox), so no event is handled twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys

import redis.asyncio as aioredis

from starkmatter.core import db, heap, loops, migrating, probes, redis_client, settings
from starkmatter.orders import processing
from starkmatter.orders.brokers import alpaca, base, paper
from starkmatter.orders.config import OrdersConfig


def make_broker(config: OrdersConfig, redis: aioredis.Redis) -> base.Broker:
    if config.broker == "alpaca":
        return alpaca.AlpacaBroker.from_config(config)
    return paper.PaperBroker(
        redis, config.fill_model(), dt.timedelta(milliseconds=config.latency_ms)
    )


async def run(
    config: settings.Settings,
    *,
    orders_config: OrdersConfig | None = None,
    probes_port: int | None = None,
    settle: bool = False,
) -> None:
    """Run the order worker until cancelled; serve probes when ``probes_port`` is given;
    ``settle``: freeze the heap once started (:func:`starkmatter.core.heap.settle`)."""
    oc = orders_config or OrdersConfig()
    pool = await db.create_pool(config)
    redis = redis_client.create_redis(config)
    try:
        async with pool.acquire() as conn:
            await migrating.apply(conn)
        broker = make_broker(oc, redis)
        worker = processing.Worker(pool, redis, oc, broker)
        ready = probes.storage_check(pool, redis)
        try:
            async with probes.listening_on(config.api_host, probes_port, ready):
                if settle:
                    heap.settle()
                await worker.run(asyncio.Event())
        finally:
            await broker.aclose()
    finally:
        await redis.aclose()
        await pool.close()


def main() -> None:
    """``python -m starkmatter.orders.service``: the worker alone (used by crash tests)."""
    config = settings.for_command("orders")
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loops.new_event_loop) as runner,
    ):
        runner.run(run(config, probes_port=None, settle=True))
    sys.exit(0)


if __name__ == "__main__":
    main()
