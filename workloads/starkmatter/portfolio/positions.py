"""A position at average cost, and what one execution does to it and to cash."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

ZERO = Decimal(0)


@dataclasses.dataclass(frozen=True)
class Position:
    quantity: Decimal = ZERO
    """signed: long above zero, short below"""
    avg_cost: Decimal = ZERO
    """average price paid for the open quantity; zero when flat"""
    realized_pnl: Decimal = ZERO
    """profit taken by closing trades, accumulated"""

    def apply(self, signed_quantity: Decimal, price: Decimal) -> Position:
        """The position after trading ``signed_quantity`` (buy > 0, sell < 0) at ``price``.

        Trades that grow the position move the average cost; trades that shrink it
        realize ``(price - avg_cost)`` per unit closed and leave the average alone; a trade
        that crosses zero closes the old side and opens the new one at ``price``.
        """
        if signed_quantity == 0:
            return self
        qty = self.quantity
        if qty == 0 or (qty > 0) == (signed_quantity > 0):
            new_qty = qty + signed_quantity
            avg = (abs(qty) * self.avg_cost + abs(signed_quantity) * price) / abs(new_qty)
            return Position(new_qty, avg, self.realized_pnl)
        closing = min(abs(signed_quantity), abs(qty))
        direction = Decimal(1) if qty > 0 else Decimal(-1)
        realized = self.realized_pnl + closing * (price - self.avg_cost) * direction
        new_qty = qty + signed_quantity
        if new_qty == 0:
            return Position(ZERO, ZERO, realized)
        if (new_qty > 0) == (qty > 0):
            return Position(new_qty, self.avg_cost, realized)
        return Position(new_qty, price, realized)

    def market_value(self, mark: Decimal) -> Decimal:
        return self.quantity * mark

    def unrealized_pnl(self, mark: Decimal) -> Decimal:
        return self.quantity * (mark - self.avg_cost)


def cash_delta(signed_quantity: Decimal, price: Decimal, fee: Decimal = ZERO) -> Decimal:
    """Cash moved by one execution: a buy pays, a sell receives; fees always cost."""
    return -signed_quantity * price - fee
