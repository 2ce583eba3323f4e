"""Group placement: optimistic placements that arrive together share one statement.

Each API process keeps at most ``GroupConfig.in_flight`` placement statements running
(:class:`starkmatter.core.batching.Batcher`). An order that arrives while they are all busy
waits for the next free one and goes with every other order that waited (up to
``max_orders``): one transaction, one lock of each account, one commit. Nothing waits for a
timer, so a lone order goes at once, alone; the busier the process, the larger the groups
(group commit). The database places each order exactly as it would alone
(``trading_order_place_checked_many``, migration 0217).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from starkmatter.core import batching
from starkmatter.orders import observing, risk

PLACE_MANY = (
    "SELECT * FROM trading_order_place_checked_many("
    + ", ".join(f"${i}" for i in range(1, 29))
    + ")"
)
_TEXT_LISTS = (12, 13)
"""decision fields that are lists (steps, reasons): sent joined by the unit separator,
since arrays of arrays must be rectangular"""
_SEPARATOR = "\x1f"
_JSON = 23
"""the outbox payload: sent as JSON text"""


@dataclasses.dataclass(frozen=True)
class GroupConfig:
    in_flight: int = 4
    """placement statements one process runs at once; PostgreSQL overlaps their commits"""
    max_orders: int = 64
    """orders in one statement (and one transaction, holding its accounts' locks)"""


@dataclasses.dataclass(frozen=True)
class _Placement:
    limits: risk.RiskLimits
    decision: tuple[Any, ...]


class Groups:
    """The placement groups of one connection pool."""

    def __init__(self, pool: asyncpg.Pool, config: GroupConfig) -> None:
        self._pool = pool
        self._batches: batching.Batcher[_Placement, asyncpg.Record | None] = batching.Batcher(
            self._place,
            in_flight=config.in_flight,
            max_items=config.max_orders,
            on_idle=lambda: _active.forget(pool, self),
        )

    async def place(
        self, limits: risk.RiskLimits, decision: tuple[Any, ...]
    ) -> asyncpg.Record | None:
        """Place an accepted decision; the order's row, or None if a check refused it."""
        return await self._batches.submit(_Placement(limits, decision))

    async def _place(self, group: Sequence[_Placement]) -> list[asyncpg.Record | None]:
        limits = group[0].limits  # one configuration per process
        observing.PLACEMENT_GROUP_ORDERS.observe(len(group))
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    PLACE_MANY,
                    limits.max_orders_per_second,
                    limits.max_open_orders,
                    limits.max_position_notional,
                    limits.max_gross_exposure,
                    *_columns([p.decision for p in group]),
                )
        except asyncpg.DataError:
            if len(group) == 1:
                raise
            # One order's values the database refuses must not fail the others placed with
            # it: each is then decided alone, under its own lock (placing's fallback).
            return [None] * len(group)
        by_id = {r["id"]: r for r in rows}
        # A reused client order id returns the order placed before, under its own id.
        by_client_id = {(r["user_id"], r["client_order_id"]): r for r in rows}
        return [
            by_id.get(p.decision[0]) or by_client_id.get((p.decision[1], p.decision[2]))
            for p in group
        ]


def _columns(decisions: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    columns = [list(column) for column in zip(*decisions, strict=True)]
    for i in _TEXT_LISTS:
        columns[i] = [_SEPARATOR.join(steps) for steps in columns[i]]
    columns[_JSON] = [json.dumps(payload) for payload in columns[_JSON]]
    return columns


_active: batching.Registry[Groups] = batching.Registry()
"""groups with placements in flight, by pool"""


def of(pool: asyncpg.Pool, config: GroupConfig) -> Groups:
    """The groups of ``pool``: the active ones, or new ones."""
    return _active.get(pool, lambda: Groups(pool, config))
