"""Average-cost positions, realized/unrealized P&L and valuation."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starkmatter.portfolio import valuation
from starkmatter.portfolio.positions import Position, cash_delta

pytestmark = pytest.mark.timeout(60)


def test_buys_average_their_cost() -> None:
    pos = Position().apply(D(10), D(100)).apply(D(30), D(120))
    assert pos == Position(D(40), D(115), D(0))


def test_selling_realizes_against_average_cost_and_keeps_the_average() -> None:
    pos = Position().apply(D(10), D(100)).apply(D(-4), D(110))
    assert pos == Position(D(6), D(100), D(40))


def test_closing_flat_resets_the_average() -> None:
    pos = Position().apply(D(10), D(100)).apply(D(-10), D(90))
    assert pos == Position(D(0), D(0), D(-100))


def test_crossing_zero_opens_the_other_side_at_the_trade_price() -> None:
    pos = Position().apply(D(10), D(100)).apply(D(-15), D(105))
    assert pos == Position(D(-5), D(105), D(50))


def test_valuation_adds_marked_positions_to_cash() -> None:
    book = {"A": Position(D(10), D(100)), "B": Position(D(-2), D(50), D(7))}
    v = valuation.value(D(1000), book, {"A": D(110)})
    assert v.equity == D(1000) + D(1100) - D(100)
    assert v.unrealized_pnl == D(100) and v.realized_pnl == D(7)
    assert v.gross_exposure == D(1100) + D(100)


trades = st.lists(st.tuples(st.integers(-50, 50).filter(bool), st.integers(1, 20_000)), max_size=40)


@given(trades=trades, mark=st.integers(1, 20_000))
def test_cash_plus_position_value_equals_start_plus_realized_plus_unrealized(
    trades: list[tuple[int, int]], mark: int
) -> None:
    start = D(1_000_000)
    cash, pos = start, Position()
    for qty, cents in trades:
        price = D(cents) / 100
        pos = pos.apply(D(qty), price)
        cash += cash_delta(D(qty), price)
    assert pos.quantity == sum(q for q, _ in trades)
    m = D(mark) / 100
    lhs = cash + pos.market_value(m)
    rhs = start + pos.realized_pnl + pos.unrealized_pnl(m)
    assert abs(lhs - rhs) < D("1e-12")
