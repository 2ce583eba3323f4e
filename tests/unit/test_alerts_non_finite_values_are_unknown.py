"""A NaN or infinite price or indicator is an unknown value: it decides no alert."""

from __future__ import annotations

import decimal

import pytest

from starkmatter.alerts import pricing


@pytest.mark.parametrize("bad", ["NaN", "sNaN", "Infinity"])
def test_a_non_finite_indicator_neither_holds_nor_fires(bad: str) -> None:
    alert = pricing.PriceRule("a", "u", "AAPL", "indicator", decimal.Decimal(70), "rsi_14",
                              "above")  # fmt: skip
    assert pricing.triggers(alert, None, {"rsi_14": decimal.Decimal(bad)}) == (False, False)


@pytest.mark.parametrize("bad", ["NaN", "sNaN", "Infinity"])
def test_a_non_finite_last_price_neither_holds_nor_fires(bad: str) -> None:
    alert = pricing.PriceRule("a", "u", "AAPL", "price_above", decimal.Decimal(100))
    assert pricing.triggers(alert, decimal.Decimal(bad), {}) == (False, False)
