"""Returns, volatility, drawdown and Sharpe from daily values."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starkmatter.portfolio import metrics

pytestmark = pytest.mark.timeout(60)


def test_first_day_has_returns_but_no_volatility() -> None:
    m = metrics.compute(D(100), [D(110)])
    assert m.daily_return == D("0.1") and m.cumulative_return == D("0.1")
    assert m.volatility is None and m.sharpe is None and m.max_drawdown == 0


def test_drawdown_is_the_largest_fall_from_a_peak() -> None:
    assert metrics.max_drawdown([D(100), D(120), D(90), D(130), D(117)]) == D("0.25")


def test_volatility_and_sharpe_annualise_daily_returns() -> None:
    m = metrics.compute(D(100), [D(110), D(99), D("108.9")])
    rets = [D("0.1"), D("-0.1"), D("0.1")]
    mean = sum(rets, D(0)) / 3
    sd = (sum(((r - mean) ** 2 for r in rets), D(0)) / 2).sqrt()
    assert m.volatility == sd * D(252).sqrt()
    assert m.sharpe == mean / sd * D(252).sqrt()


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=60))
def test_drawdown_lies_between_zero_and_one(values: list[int]) -> None:
    dd = metrics.max_drawdown([D(v) for v in values])
    assert 0 <= dd < 1
