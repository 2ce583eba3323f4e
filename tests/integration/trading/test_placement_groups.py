"""Group placement never leaves an order waiting: errors reach every order of the group
(except values the database refuses, which fail only their own order), and an order that
arrives as a group ends is placed too (cancellation and the batching
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


async def test_a_failing_statement_fails_every_order_of_its_group(database_url: str) -> None:
    closed = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    await closed.close()
    groups = grouping.Groups(closed, grouping.GroupConfig(in_flight=1, max_orders=8))
    results = await asyncio.gather(
        *(groups.place(LIMITS, _decision()) for _ in range(3)), return_exceptions=True
    )
    assert len(results) == 3
    assert all(isinstance(r, asyncpg.InterfaceError) for r in results)


async def test_values_the_database_refuses_fail_only_their_own_order(pool: asyncpg.Pool) -> None:
    # One order's bad values (here a NUL, which PostgreSQL refuses in text) used to fail
    # every order placed in the same statement. Now the group hands each order back to be
    # decided alone (None), and only the bad one fails, when it is placed on its own.
    groups = grouping.Groups(pool, grouping.GroupConfig(in_flight=1, max_orders=8))
    bad = list(_decision())
    bad[2] = "nul\x00inside"
    results = await asyncio.gather(
        groups.place(LIMITS, tuple(bad)),
        groups.place(LIMITS, _decision()),
        groups.place(LIMITS, _decision()),
        return_exceptions=True,
    )
    assert list(results) == [None, None, None]
    with pytest.raises(asyncpg.DataError):
        await groups.place(LIMITS, tuple(bad))
