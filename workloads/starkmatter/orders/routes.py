"""REST for orders: ``/orders``, ``/account`` and ``/admin/kill-switch``."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Any

import fastapi
import pydantic

from starkmatter.api import deps, hotpath, resources
from starkmatter.core import audit, errors, schemas
from starkmatter.orders import commands, placing, storage
from starkmatter.orders.config import get_config
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
from starkmatter.portfolio import ledger as ledgers

router = fastapi.APIRouter(tags=["orders"])

Symbol = Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9.\-/]{0,19}$")]


class OrderRejected(errors.AppError):
    """An order was recorded and rejected; ``code`` is the rejection reason."""

    status = 422


class OrderCreate(schemas.RequestModel):
    client_order_id: Annotated[
        str, pydantic.StringConstraints(min_length=1, max_length=64), schemas.PrintableText
    ]
    symbol: Symbol
    side: OrderSide
    type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    quantity: schemas.Amount
    limit_price: schemas.Amount | None = None
    stop_price: schemas.Amount | None = None


class Rejection(schemas.ResponseModel):
    code: str
    message: str


class OrderEventPublic(schemas.ResponseModel):
    source: OrderStatus | None
    target: OrderStatus
    reason: str
    details: dict[str, Any] | None
    ts_event: dt.datetime
    ts_init: dt.datetime


class OrderPublic(schemas.ResponseModel):
    id: uuid.UUID
    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    status: OrderStatus
    filled_quantity: Decimal
    avg_fill_price: Decimal | None
    rejection: Rejection | None
    cancel_requested: bool
    expires_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    events: list[OrderEventPublic] | None = None

    @classmethod
    def of(
        cls, o: storage.OrderRecord, events: list[OrderEventPublic] | None = None
    ) -> OrderPublic:
        r = o.request
        return cls(
            id=o.id,
            client_order_id=o.client_order_id,
            symbol=r.symbol,
            side=r.side,
            type=r.type,
            time_in_force=r.time_in_force,
            quantity=r.quantity,
            limit_price=r.limit_price,
            stop_price=r.stop_price,
            status=o.status,
            filled_quantity=o.filled_quantity,
            avg_fill_price=o.avg_fill_price,
            rejection=Rejection(code=o.reject_code, message=o.reject_message or "")
            if o.reject_code
            else None,
            cancel_requested=o.cancel_requested,
            expires_at=o.expires_at,
            created_at=o.created_at,
            updated_at=o.updated_at,
            events=events,
        )


class OrderPage(schemas.ResponseModel):
    items: list[OrderPublic]
    next_cursor: str | None


class CancelAllResult(schemas.ResponseModel):
    cancel_requested: int
    order_ids: list[uuid.UUID]


class AccountPublic(schemas.ResponseModel):
    user_id: uuid.UUID
    cash: Decimal
    reserved_cash: Decimal
    buying_power: Decimal
    starting_cash: Decimal
    open_orders: int
    trading_halted: bool


class KillSwitchUpdate(schemas.RequestModel):
    active: bool
    reason: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=500)]
    cancel_working: bool = False


class KillSwitchPublic(schemas.ResponseModel):
    active: bool
    reason: str
    changed_by: str
    changed_at: dt.datetime
    cancelled_orders: int


def _actor(principal: Any, request: fastapi.Request) -> audit.Actor:
    return audit.Actor(id=principal.user_id, service="api", endpoint=deps.endpoint_of(request))


def _user(principal: Any) -> UserId:
    return UserId(uuid.UUID(principal.user_id))


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderPublic,
    responses={
        200: {"description": "replay of a known client_order_id"},
        422: {"description": "order rejected; error code is the reason"},
    },
)
async def place_order(
    body: OrderCreate,
    principal: deps.TraderUser,
    res: deps.ResourcesDep,  # pool and Redis as one dependency: the busiest route
    request: fastapi.Request,
) -> fastapi.Response:
    command = commands.SubmitOrder(
        _user(principal),
        ClientOrderId(body.client_order_id),
        OrderRequest(
            body.symbol,
            body.side,
            body.type,
            body.time_in_force,
            body.quantity,
            body.limit_price,
            body.stop_price,
        ),
    )
    placed = await placing.submit(
        res.pool, res.redis, get_config(), _actor(principal, request), command
    )
    order = placed.order
    if order.status is OrderStatus.REJECTED and order.reject_code:
        raise OrderRejected(
            order.reject_message or "order rejected",
            code=order.reject_code,
            details=[
                {
                    "order_id": str(order.id),
                    "client_order_id": order.client_order_id,
                    "status": order.status.value,
                    "replayed": not placed.created,
                }
            ],
        )
    # Serialized once, here: returning the model would have FastAPI validate it again and
    # encode it twice (to a dict, then to JSON) on the busiest route of the service.
    return fastapi.Response(
        OrderPublic.of(order).model_dump_json(),
        status_code=201 if placed.created else 200,
        media_type="application/json",
    )


async def place_order_direct(request: fastapi.Request) -> fastapi.Response:
    """``place_order`` with its arguments resolved by hand, in FastAPI's order: the body is
    read and decoded, then the caller authenticated, then the body validated
    (:mod:`starkmatter.api.hotpath`)."""
    body = await hotpath.json_body(request)
    principal = await deps.trader(request, await deps.bearer(request))
    res: resources.Resources = request.app.state.resources
    return await place_order(hotpath.validated(OrderCreate, body), principal, res, request)


def _encode_cursor(o: storage.OrderRecord) -> str:
    return base64.urlsafe_b64encode(f"{o.created_at.isoformat()}|{o.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        ts, oid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return dt.datetime.fromisoformat(ts), uuid.UUID(oid)
    except ValueError as exc:
        raise errors.AppError("cursor is not one this API issued", code="invalid_cursor") from exc


@router.get("/orders", response_model=OrderPage)
async def list_orders(
    principal: deps.CurrentUser,
    pool: deps.DbDep,
    status: Annotated[list[OrderStatus] | None, fastapi.Query()] = None,
    symbol: Symbol | None = None,
    side: OrderSide | None = None,
    open_only: Annotated[bool, fastapi.Query(alias="open")] = False,
    limit: Annotated[int, fastapi.Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> OrderPage:
    after_ts, after_id = _decode_cursor(cursor) if cursor else (None, None)
    statuses = [s.value for s in status] if status else None
    if open_only:
        statuses = ["RiskChecked", "Submitted", "Pending", "PartiallyFilled"]
    rows = await pool.fetch(
        """SELECT * FROM trading_orders
           WHERE user_id = $1
             AND ($2::text[] IS NULL OR status = ANY($2::text[]))
             AND ($3::text IS NULL OR symbol = $3)
             AND ($4::text IS NULL OR side = $4)
             AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
           ORDER BY created_at DESC, id DESC LIMIT $7""",
        _user(principal),
        statuses,
        symbol,
        side.value if side else None,
        after_ts,
        after_id,
        limit + 1,
    )
    records = [storage.OrderRecord.from_row(r) for r in rows]
    more = len(records) > limit
    records = records[:limit]
    return OrderPage(
        items=[OrderPublic.of(o) for o in records],
        next_cursor=_encode_cursor(records[-1]) if more else None,
    )


@router.get("/orders/{order_id}", response_model=OrderPublic)
async def get_order(
    order_id: uuid.UUID, principal: deps.CurrentUser, pool: deps.DbDep
) -> OrderPublic:
    row = await pool.fetchrow(
        "SELECT * FROM trading_orders WHERE id = $1 AND user_id = $2",
        order_id,
        _user(principal),
    )
    if row is None:
        raise errors.NotFound("no such order", code="order_not_found")
    events = await pool.fetch(
        "SELECT * FROM trading_order_events WHERE order_id = $1 ORDER BY id", order_id
    )
    return OrderPublic.of(
        storage.OrderRecord.from_row(row),
        [
            OrderEventPublic(
                source=e["source"],
                target=e["target"],
                reason=e["reason"],
                details=e["details"],
                ts_event=e["ts_event"],
                ts_init=e["ts_init"],
            )
            for e in events
        ],
    )


@router.delete(
    "/orders/{order_id}",
    response_model=OrderPublic,
    responses={202: {"description": "cancel requested; the worker completes it"}},
)
async def cancel_order(
    order_id: uuid.UUID,
    principal: deps.TraderUser,
    pool: deps.DbDep,
    redis: deps.RedisDep,
    request: fastapi.Request,
    response: fastapi.Response,
) -> OrderPublic:
    order = await placing.cancel(
        pool,
        redis,
        get_config(),
        _actor(principal, request),
        commands.CancelOrder(_user(principal), OrderId(order_id)),
    )
    if order is None:
        raise errors.NotFound("no such order", code="order_not_found")
    if order.status in (OrderStatus.FILLED, OrderStatus.REJECTED):
        raise errors.Conflict(
            f"order is {order.status.value}; nothing left to cancel", code="order_not_cancellable"
        )
    if order.status is not OrderStatus.CANCELLED:
        response.status_code = 202
    return OrderPublic.of(order)


@router.delete("/orders", response_model=CancelAllResult)
async def cancel_all_orders(
    principal: deps.TraderUser,
    pool: deps.DbDep,
    redis: deps.RedisDep,
    request: fastapi.Request,
) -> CancelAllResult:
    ids = await placing.cancel_all(
        pool,
        redis,
        get_config(),
        _actor(principal, request),
        commands.CancelAllOrders(_user(principal)),
    )
    return CancelAllResult(cancel_requested=len(ids), order_ids=list(ids))


@router.get("/account", response_model=AccountPublic)
async def get_account(principal: deps.CurrentUser, pool: deps.DbDep) -> AccountPublic:
    user = _user(principal)
    async with pool.acquire() as conn:
        await ledgers.ensure_account(conn, user)
        row = await conn.fetchrow(
            "SELECT a.*, k.active FROM trading_accounts a CROSS JOIN trading_kill_switch k"
            " WHERE a.user_id = $1",
            user,
        )
    assert row is not None
    return AccountPublic(
        user_id=user,
        cash=row["cash"],
        reserved_cash=row["reserved_cash"],
        buying_power=row["cash"] - row["reserved_cash"],
        starting_cash=row["starting_cash"],
        open_orders=row["open_orders"],
        trading_halted=row["active"],
    )


@router.post("/admin/kill-switch", response_model=KillSwitchPublic)
async def kill_switch(
    body: KillSwitchUpdate,
    principal: deps.AdminUser,
    pool: deps.DbDep,
    redis: deps.RedisDep,
    request: fastapi.Request,
) -> KillSwitchPublic:
    state = await placing.set_kill_switch(
        pool,
        redis,
        get_config(),
        _actor(principal, request),
        commands.SetKillSwitch(body.active, body.reason, body.cancel_working),
    )
    return KillSwitchPublic(**state)
