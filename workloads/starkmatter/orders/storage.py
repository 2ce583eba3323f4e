"""Rows of the trading tables as Python values, and the SQL the order service shares."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg

from starkmatter.core import audit
from starkmatter.orders import events, fills
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

Conn: TypeAlias = "asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any]"


@dataclasses.dataclass(frozen=True)
class OrderRecord:
    id: OrderId
    user_id: UserId
    client_order_id: ClientOrderId
    request: OrderRequest
    status: OrderStatus
    filled_quantity: Decimal
    avg_fill_price: Decimal | None
    price_cap: Decimal | None
    reserved_cash: Decimal
    reserved_quantity: Decimal
    triggered: bool
    cancel_requested: bool
    reject_code: str | None
    reject_message: str | None
    broker: str
    broker_order_id: str | None
    expires_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    cancel_reason: fills.CancelReason | None = None
    """why the cancel flagged by ``cancel_requested`` was asked for (migration 0218)"""

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> OrderRecord:
        return cls(
            id=OrderId(row["id"]),
            user_id=UserId(row["user_id"]),
            client_order_id=ClientOrderId(row["client_order_id"]),
            request=OrderRequest(
                symbol=row["symbol"],
                side=OrderSide(row["side"]),
                type=OrderType(row["type"]),
                time_in_force=TimeInForce(row["time_in_force"]),
                quantity=row["quantity"],
                limit_price=row["limit_price"],
                stop_price=row["stop_price"],
            ),
            status=OrderStatus(row["status"]),
            filled_quantity=row["filled_quantity"],
            avg_fill_price=row["avg_fill_price"],
            price_cap=row["price_cap"],
            reserved_cash=row["reserved_cash"],
            reserved_quantity=row["reserved_quantity"],
            triggered=row["triggered"],
            cancel_requested=row["cancel_requested"],
            reject_code=row["reject_code"],
            reject_message=row["reject_message"],
            broker=row["broker"],
            broker_order_id=row["broker_order_id"],
            expires_at=row["expires_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            cancel_reason=_cancel_reason(row["cancel_reason"]),
        )

    @property
    def requested_cancel_reason(self) -> fills.CancelReason | None:
        """The reason to end the order with for the cancel flagged on it; None if none was
        asked for. A flag set before migration 0218 has no reason: it was always ended as
        the user's cancel, and still is."""
        if not self.cancel_requested:
            return None
        return self.cancel_reason or fills.CancelReason.USER

    @property
    def remaining(self) -> Decimal:
        return self.request.quantity - self.filled_quantity

    def working(self) -> fills.WorkingOrder:
        assert self.price_cap is not None, "only accepted orders work at a broker"
        r = self.request
        return fills.WorkingOrder(
            side=r.side,
            type=r.type,
            time_in_force=r.time_in_force,
            quantity=r.quantity,
            filled_quantity=self.filled_quantity,
            limit_price=r.limit_price,
            stop_price=r.stop_price,
            price_cap=self.price_cap,
            triggered=self.triggered,
        )

    def request_view(self) -> dict[str, Any]:
        """What was asked for, as JSON-ready text (audit rows and the OrderPlaced event)."""
        r = self.request
        return {
            "client_order_id": self.client_order_id,
            "symbol": r.symbol,
            "side": r.side.value,
            "type": r.type.value,
            "time_in_force": r.time_in_force.value,
            "quantity": str(r.quantity),
            "limit_price": None if r.limit_price is None else str(r.limit_price),
            "stop_price": None if r.stop_price is None else str(r.stop_price),
        }

    def audit_view(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            **self.request_view(),
            "status": self.status.value,
            "filled_quantity": str(self.filled_quantity),
            "reject_code": self.reject_code,
        }


def _cancel_reason(value: str | None) -> fills.CancelReason | None:
    return None if value is None else fills.CancelReason(value)


async def fetch_order(conn: Conn, order_id: uuid.UUID) -> OrderRecord | None:
    row = await conn.fetchrow("SELECT o.* FROM trading_orders o WHERE id = $1", order_id)
    return OrderRecord.from_row(row) if row else None


async def lock_orders(conn: Conn, order_ids: Sequence[uuid.UUID]) -> list[OrderRecord]:
    """Lock in id order: every writer takes order rows before account rows, ids ascending."""
    rows = await conn.fetch(
        "SELECT o.* FROM trading_orders o WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        list(order_ids),
    )
    return [OrderRecord.from_row(r) for r in rows]


async def advance(
    conn: Conn,
    order_id: uuid.UUID,
    source: OrderStatus,
    targets: Sequence[OrderStatus],
    reasons: Sequence[str],
    ts_event: dt.datetime,
    details: dict[str, Any] | None = None,
) -> bool:
    """Move the order along the graph if it is still in ``source``; False if it was not."""
    moved: bool = await conn.fetchval(
        "SELECT trading_order_advance($1, $2, $3, $4, $5, $6)",
        order_id,
        source.value,
        [t.value for t in targets],
        list(reasons),
        ts_event,
        details,
    )
    return moved


Step: TypeAlias = tuple[uuid.UUID, OrderStatus, OrderStatus, str, "dict[str, Any] | None"]
"""One edge of the graph for one order: (order id, source, target, reason, details)"""


async def record_steps(conn: Conn, steps: Sequence[Step], ts_event: dt.datetime) -> None:
    """One order event per step, in the order given (the steps of one order consecutive).

    The order rows themselves are written by the caller with their ``status_path``, which
    the database checks against the graph (migration 0215)."""
    if not steps:
        return
    await conn.execute(
        """INSERT INTO trading_order_events (order_id, source, target, reason, details,
               ts_event, ts_init)
           SELECT o, s, t, r, d::jsonb, $6, clock_timestamp()
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
                WITH ORDINALITY AS x (o, s, t, r, d, k)
           ORDER BY k""",
        [s[0] for s in steps],
        [s[1].value for s in steps],
        [s[2].value for s in steps],
        [s[3] for s in steps],
        [None if s[4] is None else json.dumps(s[4]) for s in steps],
        ts_event,
    )


@dataclasses.dataclass(frozen=True)
class AuditRow:
    """One audit row to append (see :mod:`starkmatter.core.audit`)."""

    actor: audit.Actor
    action: str
    reason: str
    entity_type: str
    entity_id: str
    before: Any = None
    after: Any = None


def _json_text(value: Any) -> str | None:
    # The same text audit.record sends, so a row reads the same whichever path wrote it.
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


async def audit_many(conn: Conn, rows: Sequence[AuditRow]) -> None:
    """Append the rows to the audit chain in one call, in order, in the caller's
    transaction. Call it last: the chain head stays locked until commit."""
    if not rows:
        return
    await conn.execute(
        "SELECT trading_audit_append_many($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [r.actor.id for r in rows],
        [r.action for r in rows],
        [r.actor.service for r in rows],
        [r.actor.endpoint for r in rows],
        [r.reason for r in rows],
        [r.entity_type for r in rows],
        [r.entity_id for r in rows],
        [_json_text(r.before) for r in rows],
        [_json_text(r.after) for r in rows],
    )


async def enqueue(conn: Conn, topic: str, payload: dict[str, Any]) -> None:
    """Write an outbox event in the caller's transaction.

    No NOTIFY: PostgreSQL serialises the commits of notifying transactions, which would cap
    order placement at one commit per disk flush; the worker polls the outbox instead.
    """
    # Encoded here, once (values that are not JSON, like Decimal, as their text); sent as
    # text so the connection's jsonb codec does not encode it again.
    await conn.execute(
        "INSERT INTO trading_outbox (topic, payload) VALUES ($1, $2::text::jsonb)",
        topic,
        json.dumps(payload, default=str),
    )


def audit_due(
    actor: audit.Actor,
    action: str,
    reason: str,
    entity_type: str,
    entity_id: str,
    before: Any = None,
    after: Any = None,
) -> events.AuditDue:
    return events.AuditDue(
        dataclasses.asdict(actor), action, reason, entity_type, entity_id, before, after
    )


def order_message(order: OrderRecord, event: str) -> dict[str, Any]:
    """What ``orders:{userId}`` subscribers receive about an order."""
    return {"event": event, "order": order.audit_view()}  # JSON-ready text already
