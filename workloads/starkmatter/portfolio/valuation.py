"""What a portfolio is worth now: cash plus positions at their marks (pure), and how that
is shown to its holder (:func:`shown_equity`, :func:`shown_snapshot`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from starkmatter.core import schemas
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


def shown_equity(cash: Decimal, positions_value: Decimal) -> Decimal:
    """The equity shown beside ``cash`` and ``positions_value``: the sum of the two as shown,
    so that cash + positions value = equity holds for the numbers on screen too.

    The exact equity rounded could miss that sum by a unit in the last shown place when cash
    and the positions value both have more places than are shown (fills with slippage, a
    mid between two 8-place quotes); this is at most that unit away from it. Cash stays
    the ledger's balance and the positions value the holdings' worth, each rounded once,
    as the positions list shows them.
    """
    return schemas.shown(cash) + schemas.shown(positions_value)


def shown_snapshot(snapshot: Mapping[str, Any]) -> dict[str, str | None]:
    """A snapshot from ``ledger.record`` as ``portfolio:{userId}`` messages carry it: every
    number as the REST API shows it (:func:`starkmatter.core.schemas.shown_text`, the
    equity by :func:`shown_equity`), other values as their text."""
    view = {
        key: schemas.shown_text(v) if isinstance(v, Decimal) else None if v is None else str(v)
        for key, v in snapshot.items()
    }
    view["equity"] = schemas.shown_text(shown_equity(snapshot["cash"], snapshot["positions_value"]))
    return view
