"""What a portfolio is worth now: cash plus positions at their marks (pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal

from starkmatter.portfolio.positions import Position

ZERO = Decimal(0)


@dataclasses.dataclass(frozen=True)
class Valuation:
    cash: Decimal
    positions_value: Decimal
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    gross_exposure: Decimal


def value(
    cash: Decimal, positions: Mapping[str, Position], marks: Mapping[str, Decimal]
) -> Valuation:
    """Positions without a mark are valued at their average cost (no unrealized P&L)."""
    positions_value = unrealized = realized = gross = ZERO
    for symbol, pos in positions.items():
        mark = marks.get(symbol, pos.avg_cost)
        positions_value += pos.market_value(mark)
        unrealized += pos.unrealized_pnl(mark)
        realized += pos.realized_pnl
        gross += abs(pos.market_value(mark))
    return Valuation(
        cash=cash,
        positions_value=positions_value,
        equity=cash + positions_value,
        realized_pnl=realized,
        unrealized_pnl=unrealized,
        gross_exposure=gross,
    )
