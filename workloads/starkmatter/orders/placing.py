"""Placing and cancelling orders: the API side of the order service.

``submit`` validates, risk-checks and reserves in one transaction under the account's row
lock, so concurrent orders see each other's reservations; it writes ``OrderPlaced`` to the
outbox in that same transaction. Everything after (broker, fills, portfolio) is the
worker's, in :mod:`starkmatter.orders.processing`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from starkmatter.core import audit, logs
from starkmatter.orders import (
    commands,
    events,
    fills,
    grouping,
    lifecycle,
    observing,
    quoting,
    risk,
    storage,
)
from starkmatter.orders.config import OrdersConfig, day_expiry
from starkmatter.orders.model import OrderId, OrderStatus, TimeInForce
from starkmatter.portfolio import ledger as ledgers

S = OrderStatus
ZERO = Decimal(0)
_log = logs.get_logger("starkmatter.orders")


@dataclasses.dataclass(frozen=True)
class Placed:
    order: storage.OrderRecord
    created: bool
    """False when the client order id was seen before: this is the original order"""


async def ensure_account(conn: storage.Conn, user_id: uuid.UUID, starting_cash: Decimal) -> None:
    """Open a paper account funded with ``starting_cash`` if the user has none yet."""
    await conn.execute(
        "INSERT INTO trading_accounts (user_id, cash, starting_cash) VALUES ($1, $2, $2)"
        " ON CONFLICT (user_id) DO NOTHING",
        user_id,
        starting_cash,
    )


def audited(actor: audit.Actor, action: str, reason: str) -> dict[str, Any]:
    return {"actor": dataclasses.asdict(actor), "action": action, "reason": reason}


async def read_quote(redis: aioredis.Redis, symbol: str) -> fills.Quote | None:
    raw = await quoting.of(redis).get(symbol)
    return fills.Quote.from_json(raw) if raw else None


def _market(
    row: asyncpg.Record | None, quote: fills.Quote | None, limits: risk.RiskLimits
) -> risk.Market:
    # A symbol is tradable when the market-data plane quotes it, unless an instrument
    # row halts it; an instrument row alone (no quote) is tradable but has no reference.
    # Without the row (the optimistic attempt), the write checks the instrument.
    listed = row["tradable"] if row is not None else None
    return risk.Market(
        tradable=bool(listed) if listed is not None else quote is not None,
        tick_size=(row["tick_size"] if row is not None else None) or limits.default_tick_size,
        bid=quote.bid if quote else None,
        ask=quote.ask if quote else None,
        last=quote.last if quote else None,
        quote_ts=quote.ts if quote else None,
    )


class _NoAccountYet(Exception):
    pass


async def submit(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    config: OrdersConfig,
    actor: audit.Actor,
    command: commands.SubmitOrder,
) -> Placed:
    """Validate, risk-check and accept (or reject) an order; idempotent per client order id."""
    try:
        return await _submit(pool, redis, config, actor, command)
    except _NoAccountYet:
        # Opened in its own transaction: concurrent first orders of a new user would
        # otherwise deadlock on each other's uncommitted account row.
        async with pool.acquire() as conn:
            await ledgers.ensure_account(conn, command.user_id)
        return await _submit(pool, redis, config, actor, command)


OPTIMISTIC = True
"""accept on the order and the quote alone, the account checked by the write (one
statement, no transaction); False: always decide under the account lock (BEGIN, lock and
read, place, COMMIT)"""


async def _submit(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    config: OrdersConfig,
    actor: audit.Actor,
    command: commands.SubmitOrder,
) -> Placed:
    """Accept optimistically, with ``trading_order_place_checked`` (in a group with the
    process's other placements, :mod:`starkmatter.orders.grouping`): it checks, under the
    account lock, every limit that depends on the account or on reference data (migrations
    0212, 0216) and places the order if they hold. Anything else — an order that fails
    validation, a limit that no longer holds, an account not opened yet — is decided under
    the lock, in a transaction, which also gives the precise rejection reason."""
    request = command.request
    quote = await read_quote(redis, request.symbol)
    order_id = uuid.uuid4()
    row: asyncpg.Record | None = None
    if OPTIMISTIC:
        decision = decide(None, quote, config, actor, command, order_id)
        if decision[14] is None:
            groups = grouping.of(pool, config.grouping())
            row = await groups.place(config.limits(), decision)
            if row is None:
                observing.PLACEMENT_RETRIES.inc()
    if row is None:
        async with pool.acquire() as conn, conn.transaction():
            ctx = await conn.fetchrow(
                "SELECT * FROM trading_order_context($1, $2)", command.user_id, request.symbol
            )
            if ctx is None:
                raise _NoAccountYet
            decision = decide(ctx, quote, config, actor, command, order_id)
            row = await conn.fetchrow(PLACE, *decision)
    assert row is not None
    final = storage.OrderRecord.from_row(row)
    if final.id != order_id:
        return Placed(final, created=False)
    observing.ORDERS_PLACED.labels(outcome=final.reject_code or "accepted").inc()
    if final.status is S.REJECTED:
        _log.info("order.rejected", order_id=str(order_id), reason=final.reject_code)
        await _publish(redis, final, "rejected")
    return Placed(final, created=True)


PLACE = "SELECT * FROM trading_order_place(" + ", ".join(f"${i}" for i in range(1, 25)) + ")"


def decide(
    ctx: asyncpg.Record | None,
    quote: fills.Quote | None,
    config: OrdersConfig,
    actor: audit.Actor,
    command: commands.SubmitOrder,
    order_id: uuid.UUID,
) -> tuple[Any, ...]:
    """Validation and risk checks on ``ctx``; the arguments of ``trading_order_place``
    (index 14 is the rejection code, None when accepted).

    Without ``ctx`` (the optimistic attempt) the order is judged on itself and the quote,
    with the default tick size, and the account-bound checks are left to the write."""
    request = command.request
    limits = config.limits()
    now = events.utcnow()
    market = _market(ctx, quote, limits)
    failed = risk.validate(
        request, market, limits, now=now, kill_switch=ctx is not None and ctx["kill_switch"]
    )
    outcome: risk.Rejection | risk.Reservation
    # The write recounts the window on current rows when it re-checks (place_checked).
    window_start, count = (
        risk.rate_window(ctx["rate_window_start"], ctx["rate_window_count"], now)
        if ctx is not None
        else risk.rate_window(None, 0, now)
    )
    if failed is not None:
        outcome = failed
        path, reasons = [S.REJECTED], [failed.reason.value]
    else:
        if ctx is None:
            outcome = risk.reservation(request, market, limits)
        else:
            exposure = risk.Exposure(
                buying_power=ctx["cash"] - ctx["reserved_cash"],
                position_quantity=ctx["position_quantity"],
                reserved_sell_quantity=ctx["reserved_sell_quantity"],
                open_buy_notional=ctx["open_buy_notional"],
                gross_exposure=ctx["positions_gross"] + ctx["reserved_cash"],
                open_orders=ctx["open_orders"],
                orders_this_second=count,
            )
            outcome = risk.check(request, market, exposure, limits)
        if isinstance(outcome, risk.Rejection):
            path = [S.VALIDATED, S.REJECTED]
            reasons = ["validation passed", outcome.reason.value]
        else:
            path = [S.VALIDATED, S.RISK_CHECKED]
            reasons = ["validation passed", "risk checks passed"]
    cap = expires = None
    reserved = risk.Reservation(ZERO, ZERO)
    code: str | None = None
    message: str | None = None
    if isinstance(outcome, risk.Rejection):
        code, message = outcome.reason.value, outcome.message
        view = {
            "id": str(order_id),
            "client_order_id": command.client_order_id,
            "symbol": request.symbol,
            "status": S.REJECTED.value,
            "reject_code": code,
        }
        event: dict[str, Any] = storage.audit_due(
            actor, "order.rejected", outcome.message, "order", str(order_id), after=view
        ).payload()
        topic = events.AuditDue.topic
    else:
        reserved = outcome
        reference = risk.reference_price(request.side, market)
        assert reference is not None
        cap = risk.worst_price(request, reference, limits.market_protection)
        if request.time_in_force is TimeInForce.DAY:
            expires = day_expiry(now, config.session_close, config.session_zone())
        placed = events.OrderPlaced(OrderId(order_id), command.user_id, now)
        topic = placed.topic
        event = {**placed.payload(), "audit": audited(actor, "order.placed", "accepted")}
    return (
        order_id,
        command.user_id,
        command.client_order_id,
        request.symbol,
        request.side.value,
        request.type.value,
        request.time_in_force.value,
        request.quantity,
        request.limit_price,
        request.stop_price,
        config.broker,
        now,
        [p.value for p in path],
        reasons,
        code,
        message,
        reserved.cash,
        reserved.quantity,
        cap,
        expires,
        window_start,
        count + 1,
        topic,
        event,
    )


async def _publish(redis: aioredis.Redis, order: storage.OrderRecord, event: str) -> None:
    """Live broadcast only (best effort): the database already holds the truth. The user's
    cached portfolio goes too: a cancel here freed reserved cash the worker never saw."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.delete(f"cache:portfolio:{order.user_id}")
            pipe.publish(f"orders:{order.user_id}", json.dumps(storage.order_message(order, event)))
            await pipe.execute()
    except (aioredis.RedisError, OSError) as exc:
        _log.warning("orders.publish_failed", error=str(exc))


# -- cancelling -------------------------------------------------------------------------


async def release_and_cancel(
    conn: storage.Conn,
    order: storage.OrderRecord,
    reason: str,
    ts: dt.datetime,
) -> bool:
    """Cancel the unfilled rest of a working order and free its reservation.

    The caller holds the order's row lock; this takes the account (and position) row next.
    """
    if order.status not in lifecycle.OPEN:
        return False
    moved = await storage.advance(conn, order.id, order.status, [S.CANCELLED], [reason], ts)
    if not moved:
        return False
    await conn.execute(
        """WITH acc AS (
               UPDATE trading_accounts SET reserved_cash = reserved_cash - $2,
                   open_orders = open_orders - 1, updated_at = $5
               WHERE user_id = $1),
           pos AS (
               UPDATE trading_positions SET reserved_quantity = reserved_quantity - $3
               WHERE user_id = $1 AND symbol = $4 AND $3 > 0)
           UPDATE trading_orders SET reserved_cash = 0, reserved_quantity = 0 WHERE id = $6""",
        order.user_id,
        order.reserved_cash,
        order.reserved_quantity,
        order.request.symbol,
        ts,
        order.id,
    )
    return True


async def _lock_accounts(conn: storage.Conn, orders: list[storage.OrderRecord]) -> None:
    """Take the accounts' locks before changing any order row, as placement and the worker
    do: a placement holding its account may be waiting on one of these order rows."""
    await conn.execute(
        "SELECT 1 FROM trading_accounts WHERE user_id = ANY($1::uuid[]) ORDER BY user_id"
        " FOR UPDATE",
        sorted({o.user_id for o in orders}),
    )


async def _cancel_locked(
    conn: storage.Conn,
    config: OrdersConfig,
    actor: audit.Actor,
    order: storage.OrderRecord,
    reason: fills.CancelReason,
    now: dt.datetime,
) -> bool:
    """Cancel now if we can; otherwise flag it for the worker. True if cancelled now."""
    if order.status in lifecycle.TERMINAL:
        return False
    if order.status in lifecycle.OPEN and order.broker == "paper":
        await release_and_cancel(conn, order, reason, now)
        done = True
    else:
        # Not yet working at the broker (the graph has no way to cancel it there), or
        # held by a real broker that must confirm first: the worker finishes the cancel,
        # with the reason stored beside the flag. The first cancel asked for decides it,
        # as it does for an order that ends at once: a later one finds it ending already.
        await conn.execute(
            "UPDATE trading_orders SET cancel_requested = true,"
            " cancel_reason = CASE WHEN cancel_requested THEN cancel_reason ELSE $2 END"
            " WHERE id = $1",
            order.id,
            reason.value,
        )
        event = events.CancelRequested(order.id, now)
        await storage.enqueue(conn, event.topic, {**event.payload(), "reason": reason})
        done = False
    due = storage.audit_due(
        actor,
        "order.cancelled" if done else "order.cancel_requested",
        reason,
        "order",
        str(order.id),
        before=order.audit_view(),
    )
    await storage.enqueue(conn, due.topic, due.payload())
    return done


async def cancel(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    config: OrdersConfig,
    actor: audit.Actor,
    command: commands.CancelOrder,
) -> storage.OrderRecord | None:
    """The order after the cancel (or the request to cancel); None if the user has no such order."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM trading_orders WHERE id = $1 AND user_id = $2 FOR UPDATE",
            command.order_id,
            command.user_id,
        )
        if row is None:
            return None
        order = storage.OrderRecord.from_row(row)
        await _lock_accounts(conn, [order])
        await _cancel_locked(conn, config, actor, order, fills.CancelReason.USER, events.utcnow())
        after = await storage.fetch_order(conn, order.id)
    assert after is not None
    if after.status is not order.status:
        await _publish(redis, after, "cancelled")
    return after


_LIVE = ("RiskChecked", "Submitted", "Pending", "PartiallyFilled")


async def cancel_all(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    config: OrdersConfig,
    actor: audit.Actor,
    command: commands.CancelAllOrders,
) -> list[OrderId]:
    """Cancel every live order of the user (every user's when None); returns their ids."""
    user_id, reason = command.user_id, command.reason
    now = events.utcnow()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT * FROM trading_orders WHERE status = ANY($1::text[])"
            " AND ($2::uuid IS NULL OR user_id = $2) ORDER BY id FOR UPDATE",
            list(_LIVE),
            user_id,
        )
        orders = [storage.OrderRecord.from_row(r) for r in rows]
        await _lock_accounts(conn, orders)
        for order in orders:
            await _cancel_locked(conn, config, actor, order, reason, now)
    for order in orders:
        await _publish(redis, order, "cancel_requested")
    return [o.id for o in orders]


async def set_kill_switch(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    config: OrdersConfig,
    actor: audit.Actor,
    command: commands.SetKillSwitch,
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow("SELECT * FROM trading_kill_switch FOR UPDATE")
        after = await conn.fetchrow(
            "UPDATE trading_kill_switch SET active = $1, reason = $2, changed_by = $3,"
            " changed_at = now() RETURNING *",
            command.active,
            command.reason,
            actor.id,
        )
        await audit.record(
            conn,
            actor,
            action="trading.kill_switch",
            reason=command.reason,
            entity_type="kill_switch",
            entity_id="global",
            before=dict(before) if before else None,
            after=dict(after),
        )
    cancelled: list[OrderId] = []
    if command.active and command.cancel_working:
        cancelled = await cancel_all(
            pool,
            redis,
            config,
            actor,
            commands.CancelAllOrders(None, fills.CancelReason.KILL_SWITCH),
        )
    _log.warning("orders.kill_switch", active=command.active, reason=command.reason)
    return {
        "active": after["active"],
        "reason": after["reason"],
        "changed_by": after["changed_by"],
        "changed_at": after["changed_at"],
        "cancelled_orders": len(cancelled),
    }
