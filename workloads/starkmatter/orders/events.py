"""Events: what happened (past-tense names), as carried by the transactional outbox.

Each carries ``ts_event`` (when it happened) and ``ts_init`` (when this object was made),
both UTC. Topics are the outbox's ``topic`` column.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, ClassVar

from starkmatter.orders.model import OrderId, UserId


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class OrderPlaced:
    """An order passed risk and holds its reservation; the broker must now get it."""

    topic: ClassVar[str] = "order.placed"
    order_id: OrderId
    user_id: UserId
    ts_event: dt.datetime
    ts_init: dt.datetime = dataclasses.field(default_factory=utcnow)

    def payload(self) -> dict[str, Any]:
        return {
            "order_id": str(self.order_id),
            "user_id": str(self.user_id),
            "ts_event": self.ts_event.isoformat(),
            "ts_init": self.ts_init.isoformat(),
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> OrderPlaced:
        return cls(
            OrderId(uuid.UUID(data["order_id"])),
            UserId(uuid.UUID(data["user_id"])),
            dt.datetime.fromisoformat(data["ts_event"]),
            dt.datetime.fromisoformat(data["ts_init"]),
        )


@dataclasses.dataclass(frozen=True)
class CancelRequested:
    """A user asked to cancel an order the broker holds (real brokers only)."""

    topic: ClassVar[str] = "order.cancel_requested"
    order_id: OrderId
    ts_event: dt.datetime

    def payload(self) -> dict[str, Any]:
        return {"order_id": str(self.order_id), "ts_event": self.ts_event.isoformat()}


@dataclasses.dataclass(frozen=True)
class NotificationsDue:
    """Live messages to publish (``orders:{userId}``, ``portfolio:{userId}``) and caches to
    drop, once the change they describe is committed. Published at least once."""

    topic: ClassVar[str] = "notify"
    messages: tuple[tuple[str, dict[str, Any]], ...]
    invalidate: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        return {"messages": [list(m) for m in self.messages], "invalidate": list(self.invalidate)}


@dataclasses.dataclass(frozen=True)
class AuditDue:
    """An audit row to append, written to the outbox in the transaction of the change.

    The order service appends its audit rows from the worker, many per transaction: the
    audit chain head is one row lock held until commit, and taking it in every API
    transaction would make every order wait for every other order's commit.
    """

    topic: ClassVar[str] = "audit"
    actor: dict[str, str]
    action: str
    reason: str
    entity_type: str
    entity_id: str
    before: Any = None
    after: Any = None

    def payload(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
