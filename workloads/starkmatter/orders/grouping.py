"""Group placement: optimistic placements that arrive together share one statement.

Each API process keeps at most ``GroupConfig.in_flight`` placement statements running.
An order that arrives while they are all busy waits for the next free one and goes with
every other order that waited (up to ``max_orders``): one transaction, one lock of each
account, one commit. Nothing waits for a timer, so a lone order goes at once, alone; the
busier the process, the larger the groups (group commit). The database places each order
exactly as it would alone (``trading_order_place_checked_many``, migration 0217).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import asyncpg

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


@dataclasses.dataclass
class _Waiting:
    limits: risk.RiskLimits
    decision: tuple[Any, ...]
    placed: asyncio.Future[asyncpg.Record | None]


class Groups:
    """The placement groups of one connection pool."""

    def __init__(self, pool: asyncpg.Pool, config: GroupConfig) -> None:
        self._pool = pool
        self._config = config
        self._waiting: list[_Waiting] = []
        self._running: set[asyncio.Task[None]] = set()

    async def place(
        self, limits: risk.RiskLimits, decision: tuple[Any, ...]
    ) -> asyncpg.Record | None:
        """Place an accepted decision; the order's row, or None if a check refused it."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(limits, decision, loop.create_future())
        self._waiting.append(waiting)
        if len(self._running) < self._config.in_flight:
            task = loop.create_task(self._run())
            self._running.add(task)
            task.add_done_callback(self._ended)
        return await waiting.placed

    async def _run(self) -> None:
        while self._waiting:
            group = self._waiting[: self._config.max_orders]
            del self._waiting[: self._config.max_orders]
            await self._place(group)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task.cancelled() or task.exception() is not None:
            # Cancelled (the process is stopping), or a bug (_place hands every error to
            # its orders): the orders still waiting must not wait for ever.
            for w in self._waiting:
                if w.placed.done():
                    continue
                if task.cancelled():
                    w.placed.cancel()
                else:
                    w.placed.set_exception(task.exception())  # type: ignore[arg-type]
            self._waiting.clear()
        if not self._running and not self._waiting:
            _active.pop(id(self._pool), None)

    async def _place(self, group: Sequence[_Waiting]) -> None:
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
                    *_columns([w.decision for w in group]),
                )
        except asyncio.CancelledError:
            for w in group:
                w.placed.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every order of the group gets the error
            for w in group:
                if not w.placed.done():
                    w.placed.set_exception(exc)
            return
        by_id = {r["id"]: r for r in rows}
        # A reused client order id returns the order placed before, under its own id.
        by_client_id = {(r["user_id"], r["client_order_id"]): r for r in rows}
        for w in group:
            if not w.placed.done():
                d = w.decision
                w.placed.set_result(by_id.get(d[0]) or by_client_id.get((d[1], d[2])))


def _columns(decisions: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    columns = [list(column) for column in zip(*decisions, strict=True)]
    for i in _TEXT_LISTS:
        columns[i] = [_SEPARATOR.join(steps) for steps in columns[i]]
    columns[_JSON] = [json.dumps(payload) for payload in columns[_JSON]]
    return columns


_active: dict[int, Groups] = {}
"""groups with placements in flight, by pool (dropped when idle, so none outlives its pool)"""


def of(pool: asyncpg.Pool, config: GroupConfig) -> Groups:
    """The groups of ``pool``: the active ones, or new ones."""
    groups = _active.get(id(pool))
    if groups is None:
        groups = _active[id(pool)] = Groups(pool, config)
    return groups
