"""Commands: what a client or an admin asks the order service to do (imperative names)."""

from __future__ import annotations

import dataclasses

from starkmatter.orders import fills
from starkmatter.orders.model import ClientOrderId, OrderId, OrderRequest, UserId


@dataclasses.dataclass(frozen=True)
class SubmitOrder:
    user_id: UserId
    client_order_id: ClientOrderId
    request: OrderRequest


@dataclasses.dataclass(frozen=True)
class CancelOrder:
    user_id: UserId
    order_id: OrderId


@dataclasses.dataclass(frozen=True)
class CancelAllOrders:
    user_id: UserId | None
    """None: every user's orders (the kill switch)"""
    reason: fills.CancelReason = fills.CancelReason.CANCEL_ALL


@dataclasses.dataclass(frozen=True)
class SetKillSwitch:
    active: bool
    reason: str
    cancel_working: bool = False
    """also cancel every working order of every user"""
