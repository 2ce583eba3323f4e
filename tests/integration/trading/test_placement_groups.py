"""Group placement never leaves an order waiting: errors reach every order of the group,
and an order that arrives as a group ends is placed too (cancellation and the batching
itself: tests/unit/test_batching.py)."""

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


async def test_orders_placed_one_after_another_never_wait_for_ever(pool: asyncpg.Pool) -> None:
    # The next order arrives after the one runner left its loop but before it was counted
    # as ended: with every slot still taken, it must be started for all the same.
    groups = grouping.Groups(pool, grouping.GroupConfig(in_flight=1, max_orders=8))

    async def one_after_another() -> list[object]:
        return [await groups.place(LIMITS, _decision()) for _ in range(5)]

    assert await asyncio.wait_for(one_after_another(), 10) == [None] * 5


async def test_a_failing_statement_fails_every_order_of_its_group(pool: asyncpg.Pool) -> None:
    groups = grouping.Groups(pool, grouping.GroupConfig(in_flight=1, max_orders=8))
    bad = list(_decision())
    bad[4] = "sideways"  # refused by the orders table's CHECK only if placed; break the type
    bad[7] = "not a number"
    results = await asyncio.gather(
        *(groups.place(LIMITS, tuple(bad)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)
