"""Order vocabulary shared by every orders module: ids, enums and the order request."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from decimal import Decimal
from typing import NewType

OrderId = NewType("OrderId", uuid.UUID)
"""Our id for an order, assigned when it is created."""
ClientOrderId = NewType("ClientOrderId", str)
"""The client's id for an order; unique per user, it makes submission idempotent."""
UserId = NewType("UserId", uuid.UUID)
ExecutionId = NewType("ExecutionId", uuid.UUID)


class OrderSide(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is OrderSide.BUY else -1


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"

    @property
    def needs_limit_price(self) -> bool:
        return self in (OrderType.LIMIT, OrderType.STOP_LIMIT)

    @property
    def needs_stop_price(self) -> bool:
        return self in (OrderType.STOP, OrderType.STOP_LIMIT)


class TimeInForce(enum.StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(enum.StrEnum):
    """The seed's state names, spelled as the seed spells them."""

    CREATED = "OrderCreated"
    VALIDATED = "Validated"
    RISK_CHECKED = "RiskChecked"
    SUBMITTED = "Submitted"
    PENDING = "Pending"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"


@dataclasses.dataclass(frozen=True)
class OrderRequest:
    """What a client asks for; checked by :mod:`risk` before anything reserves money."""

    symbol: str
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
