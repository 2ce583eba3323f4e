"""Liquidity the paper broker takes from a depth snapshot is shared through Redis: worker
replicas side by side, or a worker restarted mid-snapshot, never take the same displayed
shares twice; a newer snapshot offers its full depth again."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from starkmatter.orders import fills, storage
from starkmatter.orders.brokers import base, paper
from starkmatter.orders.model import (
    ClientOrderId,
    OrderId,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    UserId,
)
from tests.integration.trading.conftest import publish_market

pytestmark = pytest.mark.timeout(60)

THIN = (("100.01", "100"), ("100.02", "50"))
SHOWN = {Decimal("100.01"): Decimal(100), Decimal("100.02"): Decimal(50)}
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)


def broker(redis: aioredis.Redis) -> paper.PaperBroker:
    """A fresh broker, as a new worker process or another replica has."""
    return paper.PaperBroker(redis, fills.FillModel(), dt.timedelta(0))


def buy(quantity: str, *, symbol: str = "AAPL") -> storage.OrderRecord:
    """A working market buy, as the worker hands it to the broker."""
    return storage.OrderRecord(
        id=OrderId(uuid.uuid4()),
        user_id=UserId(uuid.uuid4()),
        client_order_id=ClientOrderId("c"),
        request=OrderRequest(
            symbol, OrderSide.BUY, OrderType.MARKET, TimeInForce.GTC, Decimal(quantity)
        ),
        status=OrderStatus.PENDING,
        filled_quantity=Decimal(0),
        avg_fill_price=None,
        price_cap=Decimal("110"),
        reserved_cash=Decimal(0),
        reserved_quantity=Decimal(0),
        triggered=False,
        cancel_requested=False,
        reject_code=None,
        reject_message=None,
        broker="paper",
        broker_order_id="paper-x",
        expires_at=None,
        created_at=T0,
        updated_at=T0,
    )


def taken(*updates: dict[OrderId, base.Update]) -> dict[Decimal, Decimal]:
    """Shares filled at each price, over every update of every poll."""
    out: dict[Decimal, Decimal] = {}
    for batch in updates:
        for update in batch.values():
            for e in update.executions:
                out[e.price] = out.get(e.price, Decimal(0)) + e.quantity
    return out


async def test_two_replicas_never_fill_more_than_one_snapshot_displays(
    redis: aioredis.Redis,
) -> None:
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", asks=THIN, ts=T0)
    a, b = broker(redis), broker(redis)
    got = await asyncio.gather(a.poll([buy("300")], T0), b.poll([buy("300")], T0))
    assert taken(*got) == SHOWN
    assert sorted(len(g) for g in got) == [0, 1]  # one took it all, the other found none


async def test_many_replicas_racing_take_each_displayed_share_exactly_once(
    redis: aioredis.Redis,
) -> None:
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", asks=THIN, ts=T0)
    replicas = [broker(redis) for _ in range(4)]
    got = await asyncio.gather(*(r.poll([buy("30"), buy("25")], T0) for r in replicas))
    assert taken(*got) == SHOWN  # 220 wanted, 150 shown: every share once, none twice


async def test_restarted_worker_does_not_take_shares_the_old_one_took(
    redis: aioredis.Redis,
) -> None:
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", asks=THIN, ts=T0)
    old = broker(redis)
    assert taken(await old.poll([buy("120")], T0)) == {
        Decimal("100.01"): 100,
        Decimal("100.02"): 20,
    }
    restarted = broker(redis)
    assert taken(await restarted.poll([buy("300")], T0)) == {Decimal("100.02"): 30}
    assert taken(await broker(redis).poll([buy("300")], T0)) == {}


async def test_newer_snapshot_offers_the_full_depth_again(redis: aioredis.Redis) -> None:
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", asks=THIN, ts=T0)
    assert taken(await broker(redis).poll([buy("300")], T0)) == SHOWN
    other = broker(redis)
    assert taken(await other.poll([buy("300")], T0)) == {}  # same snapshot: all gone
    later = T0 + dt.timedelta(milliseconds=250)
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", asks=THIN, ts=later)
    assert taken(await other.poll([buy("300")], later)) == SHOWN


async def test_taken_record_is_one_expiring_key_per_symbol_read_in_the_quote_mget(
    redis: aioredis.Redis,
) -> None:
    await publish_market(redis, "AAPL", bid="99.99", ask="100.01", asks=THIN, ts=T0)
    await publish_market(redis, "MSFT", bid="99.99", ask="100.01", asks=THIN, ts=T0)
    ttl = dt.timedelta(minutes=5)
    b = paper.PaperBroker(redis, fills.FillModel(), dt.timedelta(0), taken_ttl=ttl)
    await b.poll([buy("1", symbol="AAPL")], T0)  # loads the script once
    await redis.config_resetstat()
    got = await b.poll([buy("10", symbol="AAPL"), buy("10", symbol="MSFT")], T0)
    assert taken(got) == {Decimal("100.01"): 20}
    stats = await redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
    assert calls.pop("mget") == 1 and calls.pop("evalsha") == 1  # one read, one write
    assert set(calls) <= {"get", "set", "config", "info"}  # inside the script, and ours
    for symbol, took in (("AAPL", "11"), ("MSFT", "10")):
        left = await redis.pttl(f"paper:taken:{symbol}")
        assert 0 < left <= ttl / dt.timedelta(milliseconds=1)
        raw = await redis.get(f"paper:taken:{symbol}")
        assert raw is not None
        record = fills.Book.from_json(raw)
        assert record.ts == T0 and record.bids == ()
        assert record.asks == (fills.Level(Decimal("100.01"), Decimal(took)),)
