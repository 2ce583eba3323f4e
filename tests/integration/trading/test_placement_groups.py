"""Group placement never leaves an order waiting: errors and cancellation reach every
order of the group and every order queued behind it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from starkmatter.orders import grouping, risk

pytestmark = pytest.mark.timeout(30)

LIMITS = risk.RiskLimits()


def _decision() -> tuple[object, ...]:
    # Arguments of trading_order_place for a user who has no account: refused (no row).
    return (
        uuid.uuid4(), uuid.uuid4(), "c1", "AAPL", "buy", "market", "day", 1, None, None,
        "paper", None, ["Validated", "RiskChecked"], ["validation passed", "risk checks passed"],
        None, None, 0, 0, None, None, None, 1, "order.placed", {},
    )  # fmt: skip


async def test_an_order_without_an_account_is_refused_not_lost(pool: asyncpg.Pool) -> None:
    groups = grouping.Groups(pool, grouping.GroupConfig(in_flight=1, max_orders=8))
    assert await groups.place(LIMITS, _decision()) is None


async def test_stopping_the_groups_cancels_every_waiting_order(pool: asyncpg.Pool) -> None:
    groups = grouping.Groups(pool, grouping.GroupConfig(in_flight=1, max_orders=1))
    placing = [asyncio.ensure_future(groups.place(LIMITS, _decision())) for _ in range(3)]
    await asyncio.sleep(0)  # every place() has queued its order and the runner started
    for runner in list(groups._running):
        runner.cancel()
    results = await asyncio.wait_for(asyncio.gather(*placing, return_exceptions=True), 10)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_a_failing_statement_fails_every_order_of_its_group(pool: asyncpg.Pool) -> None:
    groups = grouping.Groups(pool, grouping.GroupConfig(in_flight=1, max_orders=8))
    bad = list(_decision())
    bad[4] = "sideways"  # refused by the orders table's CHECK only if placed; break the type
    bad[7] = "not a number"
    results = await asyncio.gather(
        *(groups.place(LIMITS, tuple(bad)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)
