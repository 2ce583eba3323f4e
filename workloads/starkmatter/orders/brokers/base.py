"""The interface between the order worker and a broker."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from starkmatter.orders import storage
from starkmatter.orders.model import OrderId


@dataclasses.dataclass(frozen=True)
class Accepted:
    broker_order_id: str


@dataclasses.dataclass(frozen=True)
class Refused:
    message: str


@dataclasses.dataclass(frozen=True)
class Execution:
    quantity: Decimal
    price: Decimal
    execution_id: str | None = None
    """the broker's id for the execution, when it has one (deduplicates replays)"""


@dataclasses.dataclass(frozen=True)
class Update:
    """What happened to one working order at the broker since we last looked."""

    executions: tuple[Execution, ...] = ()
    triggered: bool = False
    cancelled: str | None = None
    """reason, when the broker ended the unfilled rest (IOC, FOK, expiry, cancel)"""
    rejected: str | None = None
    """message, when the broker rejected an order it had accepted"""


class Broker(Protocol):
    name: str

    async def submit(self, order: storage.OrderRecord) -> Accepted | Refused:
        """Hand the order over. Must be idempotent: a retry after a crash returns the
        original acceptance, never a second order (our order id is the client id)."""
        ...

    async def cancel(self, order: storage.OrderRecord) -> bool:
        """Ask the broker to cancel; True once it confirms the order no longer works."""
        ...

    async def poll(
        self, orders: Sequence[storage.OrderRecord], now: dt.datetime
    ) -> dict[OrderId, Update]:
        """Fills and cancels for working orders; orders with nothing new are left out."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
