"""Fill simulation for the paper broker: pure functions of an order, a quote and the book.

Market orders walk the displayed depth best level first and fill in part when the book is
thinner than the order; limit orders fill only at their price or better; stops trigger on
the last trade (else the touch) and then behave as market or limit orders; IOC cancels
what it could not fill at once, FOK fills all at once or nothing. No fill is ever worse
than the order's ``price_cap``, the price its reservation was made at.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from starkmatter.orders.model import OrderSide, OrderType, TimeInForce

ZERO = Decimal(0)
BPS = Decimal(10_000)


def _dec(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def _ts(value: Any) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Quote:
    """``quote:{SYMBOL}`` from the market-data plane."""

    symbol: str
    bid: Decimal | None
    ask: Decimal | None
    bid_size: Decimal | None
    ask_size: Decimal | None
    last: Decimal | None
    ts: dt.datetime

    @classmethod
    def from_json(cls, raw: str | bytes) -> Quote:
        data = json.loads(raw)
        return cls(
            symbol=data["symbol"],
            bid=_dec(data.get("bid")),
            ask=_dec(data.get("ask")),
            bid_size=_dec(data.get("bid_size")),
            ask_size=_dec(data.get("ask_size")),
            last=_dec(data.get("last")),
            ts=_ts(data["ts"]),
        )


@dataclasses.dataclass(frozen=True)
class Level:
    price: Decimal
    size: Decimal


@dataclasses.dataclass(frozen=True)
class Book:
    """``depth:{SYMBOL}``: displayed levels, best first."""

    symbol: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts: dt.datetime

    @classmethod
    def from_json(cls, raw: str | bytes) -> Book:
        data = json.loads(raw)

        def levels(rows: Iterable[list[Any]]) -> tuple[Level, ...]:
            return tuple(Level(Decimal(str(p)), Decimal(str(s))) for p, s in rows)

        return cls(data["symbol"], levels(data["bids"]), levels(data["asks"]), _ts(data["ts"]))

    def liquidity(self, side: OrderSide) -> tuple[Level, ...]:
        """The levels an order of ``side`` takes from: asks for a buy, bids for a sell."""
        return self.asks if side is OrderSide.BUY else self.bids

    def consume(self, side: OrderSide, fills: Iterable[Fill]) -> Book:
        """The book left after ``fills`` took liquidity, so no share is sold twice."""
        taken: dict[Decimal, Decimal] = {}
        for fill in fills:
            taken[fill.level_price] = taken.get(fill.level_price, ZERO) + fill.quantity
        left = tuple(
            Level(lv.price, lv.size - taken.get(lv.price, ZERO))
            for lv in self.liquidity(side)
            if lv.size - taken.get(lv.price, ZERO) > 0
        )
        if side is OrderSide.BUY:
            return dataclasses.replace(self, asks=left)
        return dataclasses.replace(self, bids=left)


def book_from_quote(quote: Quote) -> Book:
    """A one-level book from the top of book, for symbols with no depth published."""
    bids = (Level(quote.bid, quote.bid_size),) if quote.bid and quote.bid_size else ()
    asks = (Level(quote.ask, quote.ask_size),) if quote.ask and quote.ask_size else ()
    return Book(quote.symbol, bids, asks, quote.ts)


@dataclasses.dataclass(frozen=True)
class WorkingOrder:
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    filled_quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    price_cap: Decimal
    """worst acceptable fill price (a ceiling for buys, a floor for sells)"""
    triggered: bool = False

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity


@dataclasses.dataclass(frozen=True)
class FillModel:
    slippage_bps: Decimal = ZERO
    """adverse price move applied to every fill, in basis points, never past the cap"""


@dataclasses.dataclass(frozen=True)
class Fill:
    price: Decimal
    quantity: Decimal
    level_price: Decimal
    """the displayed level it took, before slippage"""


class CancelReason(enum.StrEnum):
    IOC_REMAINDER = "ioc_remainder"
    FOK_UNFILLABLE = "fok_unfillable"
    EXPIRED = "expired"
    USER = "user_cancel"
    CANCEL_ALL = "cancel_all"
    KILL_SWITCH = "kill_switch"
    BROKER = "broker_cancelled"


@dataclasses.dataclass(frozen=True)
class Match:
    fills: tuple[Fill, ...] = ()
    triggered: bool = False
    cancel: CancelReason | None = None
    """set when the rest of the order must be cancelled now"""

    @property
    def quantity(self) -> Decimal:
        return sum((f.quantity for f in self.fills), ZERO)


def is_triggered(order: WorkingOrder, quote: Quote | None) -> bool:
    if order.triggered or order.stop_price is None:
        return True
    if quote is None:
        return False
    touch = quote.ask if order.side is OrderSide.BUY else quote.bid
    trade = quote.last if quote.last is not None else touch
    if trade is None:
        return False
    if order.side is OrderSide.BUY:
        return trade >= order.stop_price
    return trade <= order.stop_price


def _bound(order: WorkingOrder) -> Decimal:
    if order.limit_price is None:
        return order.price_cap
    if order.side is OrderSide.BUY:
        return min(order.limit_price, order.price_cap)
    return max(order.limit_price, order.price_cap)


def _slipped(price: Decimal, side: OrderSide, bound: Decimal, model: FillModel) -> Decimal:
    if model.slippage_bps == 0:
        return price
    if side is OrderSide.BUY:
        return min(price * (1 + model.slippage_bps / BPS), bound)
    return max(price * (1 - model.slippage_bps / BPS), bound)


def match(order: WorkingOrder, quote: Quote | None, book: Book | None, model: FillModel) -> Match:
    """What the order gets from the market now; the caller applies the fills."""
    immediate = order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)
    if not is_triggered(order, quote):
        return Match()
    triggered = order.stop_price is not None
    if book is None and quote is not None:
        book = book_from_quote(quote)
    bound = _bound(order)
    fills: list[Fill] = []
    remaining = order.remaining
    for level in book.liquidity(order.side) if book is not None else ():
        if remaining <= 0:
            break
        worse = level.price > bound if order.side is OrderSide.BUY else level.price < bound
        if worse:
            break
        take = min(level.size, remaining)
        if take <= 0:
            continue
        fills.append(Fill(_slipped(level.price, order.side, bound, model), take, level.price))
        remaining -= take
    if remaining > 0 and order.time_in_force is TimeInForce.FOK:
        return Match((), triggered, CancelReason.FOK_UNFILLABLE)
    if remaining > 0 and immediate:
        return Match(tuple(fills), triggered, CancelReason.IOC_REMAINDER)
    return Match(tuple(fills), triggered, None)
