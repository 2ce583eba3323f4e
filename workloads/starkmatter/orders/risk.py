"""Pre-trade checks: validation (is the order well formed and sane?) and risk (can it be afforded?).

Both are pure functions of frozen inputs. Each failure is a :class:`Rejection` with a
stable :class:`Reason` code a client can switch on and a message for people. Validation
failures move an order ``OrderCreated -> Rejected``; risk failures ``Validated -> Rejected``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
from decimal import Decimal

from starkmatter.orders.model import OrderRequest, OrderSide, OrderType, TimeInForce

ZERO = Decimal(0)
ONE = Decimal(1)


class Reason(enum.StrEnum):
    # validation
    KILL_SWITCH = "kill_switch"
    SYMBOL_NOT_TRADABLE = "symbol_not_tradable"
    NO_MARKET_DATA = "no_market_data"
    INVALID_QUANTITY = "invalid_quantity"
    QUANTITY_LIMIT = "quantity_limit"
    NOTIONAL_LIMIT = "notional_limit"
    INVALID_PRICE = "invalid_price"
    TICK_SIZE = "tick_size"
    PRICE_COLLAR = "price_collar"
    UNSUPPORTED_TIME_IN_FORCE = "unsupported_time_in_force"
    # risk
    RATE_LIMIT = "rate_limit"
    OPEN_ORDERS_LIMIT = "open_orders_limit"
    BUYING_POWER = "buying_power"
    INSUFFICIENT_POSITION = "insufficient_position"
    POSITION_LIMIT = "position_limit"
    GROSS_EXPOSURE = "gross_exposure"
    # broker
    BROKER_REJECTED = "broker_rejected"


VALIDATION_REASONS = frozenset(
    {
        Reason.KILL_SWITCH,
        Reason.SYMBOL_NOT_TRADABLE,
        Reason.NO_MARKET_DATA,
        Reason.INVALID_QUANTITY,
        Reason.QUANTITY_LIMIT,
        Reason.NOTIONAL_LIMIT,
        Reason.INVALID_PRICE,
        Reason.TICK_SIZE,
        Reason.PRICE_COLLAR,
        Reason.UNSUPPORTED_TIME_IN_FORCE,
    }
)


@dataclasses.dataclass(frozen=True)
class Rejection:
    reason: Reason
    message: str


@dataclasses.dataclass(frozen=True)
class RiskLimits:
    """Limits for every account; each field says its unit."""

    max_order_quantity: Decimal = Decimal(100_000)
    """shares per order"""
    max_order_notional: Decimal = Decimal(1_000_000)
    """currency per order, at the worst price the order can fill at"""
    price_collar: Decimal = Decimal("0.10")
    """fraction: a limit/stop price must be within this of the reference quote"""
    market_protection: Decimal = Decimal("0.02")
    """fraction: a market order never fills further than this from the quote it was
    accepted against, so its cash reservation always covers its fills"""
    max_position_notional: Decimal = Decimal(2_000_000)
    """currency per symbol: position plus open buys, at the order's worst price"""
    max_gross_exposure: Decimal = Decimal(5_000_000)
    """currency: sum over symbols of |position| at mark, plus open buys"""
    max_open_orders: int = 500
    """working orders per user"""
    max_orders_per_second: int = 50
    """new orders per user per wall-clock second"""
    lot_size: Decimal = Decimal(1)
    """quantities must be multiples of this"""
    default_tick_size: Decimal = Decimal("0.01")
    max_quote_age: dt.timedelta = dt.timedelta(days=1)
    """a quote older than this is no reference price"""


@dataclasses.dataclass(frozen=True)
class Market:
    """What validation knows of the symbol at submission time."""

    tradable: bool
    tick_size: Decimal
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    quote_ts: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Exposure:
    """The account as risk sees it, read under the account's row lock."""

    buying_power: Decimal
    """cash not reserved by working buy orders"""
    position_quantity: Decimal
    """in the order's symbol (signed)"""
    reserved_sell_quantity: Decimal
    """of that position, already promised to working sell orders"""
    open_buy_notional: Decimal
    """reserved for working buys in the order's symbol"""
    gross_exposure: Decimal
    open_orders: int
    orders_this_second: int


def reference_price(side: OrderSide, market: Market) -> Decimal | None:
    """Price an order of this side would trade at now: the far touch, else the last trade."""
    touch = market.ask if side is OrderSide.BUY else market.bid
    if touch is not None and touch > 0:
        return touch
    if market.last is not None and market.last > 0:
        return market.last
    return None


def protection_price(side: OrderSide, reference: Decimal, collar: Decimal) -> Decimal:
    """The worst price a market order may fill at: the reference moved by the collar."""
    return reference * (ONE + collar) if side is OrderSide.BUY else reference * (ONE - collar)


def worst_price(order: OrderRequest, reference: Decimal, protection: Decimal) -> Decimal:
    """The worst price the order can fill at, the price its reservation is made at."""
    if order.limit_price is not None:
        return order.limit_price
    if order.stop_price is not None:
        return protection_price(order.side, order.stop_price, protection)
    return protection_price(order.side, reference, protection)


_GRID = decimal.Context(prec=100)
"""enough digits for the remainder of any value the API admits (at most 18 digits, 8 after
the point) by any step: in the default 28-digit context, 1e30 % 0.01 raises"""


def _on_grid(value: Decimal, step: Decimal) -> bool:
    return step > 0 and _GRID.remainder(value, step) == 0


def validate(
    order: OrderRequest,
    market: Market,
    limits: RiskLimits,
    *,
    now: dt.datetime,
    kill_switch: bool,
) -> Rejection | None:
    """Is the order well formed and reasonable? Checks run cheapest and broadest first."""
    if kill_switch:
        return Rejection(Reason.KILL_SWITCH, "trading is halted by the kill switch")
    if not market.tradable:
        return Rejection(Reason.SYMBOL_NOT_TRADABLE, f"{order.symbol} is not tradable")
    if order.quantity <= 0 or not _on_grid(order.quantity, limits.lot_size):
        return Rejection(
            Reason.INVALID_QUANTITY,
            f"quantity must be a positive multiple of {limits.lot_size}",
        )
    if order.quantity > limits.max_order_quantity:
        return Rejection(
            Reason.QUANTITY_LIMIT,
            f"quantity {order.quantity} exceeds the limit of {limits.max_order_quantity}",
        )
    if order.type in (OrderType.STOP, OrderType.STOP_LIMIT) and order.time_in_force in (
        TimeInForce.IOC,
        TimeInForce.FOK,
    ):
        return Rejection(
            Reason.UNSUPPORTED_TIME_IN_FORCE,
            f"{order.type.value} orders take time in force day or gtc",
        )
    for name, price, needed in (
        ("limit_price", order.limit_price, order.type.needs_limit_price),
        ("stop_price", order.stop_price, order.type.needs_stop_price),
    ):
        if needed and (price is None or price <= 0):
            return Rejection(
                Reason.INVALID_PRICE,
                f"a {order.type.value} order needs a positive {name}",
            )
        if not needed and price is not None:
            return Rejection(Reason.INVALID_PRICE, f"a {order.type.value} order takes no {name}")
        if price is not None and not _on_grid(price, market.tick_size):
            return Rejection(
                Reason.TICK_SIZE,
                f"{name} {price} is not a multiple of tick {market.tick_size}",
            )
    reference = reference_price(order.side, market)
    fresh = market.quote_ts is not None and now - market.quote_ts <= limits.max_quote_age
    if reference is None or not fresh:
        return Rejection(Reason.NO_MARKET_DATA, f"no recent quote for {order.symbol}")
    for name, price in (
        ("limit_price", order.limit_price),
        ("stop_price", order.stop_price),
    ):
        if price is not None and abs(price - reference) > reference * limits.price_collar:
            return Rejection(
                Reason.PRICE_COLLAR,
                f"{name} {price} is more than {limits.price_collar:%} away from"
                f" the quote {reference}",
            )
    notional = order.quantity * worst_price(order, reference, limits.market_protection)
    if notional > limits.max_order_notional:
        return Rejection(
            Reason.NOTIONAL_LIMIT,
            f"notional {notional:.2f} exceeds the limit of {limits.max_order_notional}",
        )
    return None


@dataclasses.dataclass(frozen=True)
class Reservation:
    """What an accepted order holds until it fills or ends: cash for buys, shares for sells."""

    cash: Decimal
    quantity: Decimal


def check(
    order: OrderRequest,
    market: Market,
    exposure: Exposure,
    limits: RiskLimits,
) -> Rejection | Reservation:
    """Can this account afford the order? Call only after :func:`validate` passed."""
    if exposure.orders_this_second >= limits.max_orders_per_second:
        return Rejection(
            Reason.RATE_LIMIT,
            f"more than {limits.max_orders_per_second} orders in one second",
        )
    if exposure.open_orders >= limits.max_open_orders:
        return Rejection(Reason.OPEN_ORDERS_LIMIT, f"already {exposure.open_orders} working orders")
    price = _worst_price(order, market, limits)
    notional = order.quantity * price
    if order.side is OrderSide.SELL:
        sellable = exposure.position_quantity - exposure.reserved_sell_quantity
        if order.quantity > sellable:
            return Rejection(
                Reason.INSUFFICIENT_POSITION,
                f"selling {order.quantity} {order.symbol} but only {max(sellable, ZERO)}"
                " can be sold (short selling is not allowed)",
            )
        return reservation(order, market, limits)
    if notional > exposure.buying_power:
        return Rejection(
            Reason.BUYING_POWER,
            f"order needs {notional:.2f} but buying power is {exposure.buying_power:.2f}",
        )
    position_notional = exposure.position_quantity * price + exposure.open_buy_notional + notional
    if position_notional > limits.max_position_notional:
        return Rejection(
            Reason.POSITION_LIMIT,
            f"{order.symbol} position would reach {position_notional:.2f},"
            f" above the limit of {limits.max_position_notional}",
        )
    if exposure.gross_exposure + notional > limits.max_gross_exposure:
        return Rejection(
            Reason.GROSS_EXPOSURE,
            f"gross exposure would reach {exposure.gross_exposure + notional:.2f},"
            f" above the limit of {limits.max_gross_exposure}",
        )
    return reservation(order, market, limits)


def _worst_price(order: OrderRequest, market: Market, limits: RiskLimits) -> Decimal:
    reference = reference_price(order.side, market)
    assert reference is not None, "validate() refuses orders without a reference price"
    return worst_price(order, reference, limits.market_protection)


def reservation(order: OrderRequest, market: Market, limits: RiskLimits) -> Reservation:
    """What the order holds if accepted: the cash of its worst price for a buy, the shares
    for a sell. Call only after :func:`validate` passed."""
    if order.side is OrderSide.SELL:
        return Reservation(cash=ZERO, quantity=order.quantity)
    return Reservation(cash=order.quantity * _worst_price(order, market, limits), quantity=ZERO)


def rate_window(
    window_start: dt.datetime | None, count: int, now: dt.datetime
) -> tuple[dt.datetime, int]:
    """Orders counted in the current one-second window, before this one."""
    second = now.replace(microsecond=0)
    if window_start is None or window_start != second:
        return second, 0
    return second, count


def released(side: OrderSide, price_cap: Decimal, quantity: Decimal) -> Reservation:
    """What filling or cancelling ``quantity`` of an order frees of its reservation.

    A buy reserved ``quantity * price_cap`` and no fill is worse than ``price_cap``, so the
    freed cash always covers the fill's cost and buying power never goes negative.
    """
    if side is OrderSide.BUY:
        return Reservation(cash=quantity * price_cap, quantity=ZERO)
    return Reservation(cash=ZERO, quantity=quantity)
