"""``schemas.Shown``: what a response shows of an exact Decimal (at most 8 places, rounded
half-even, plain digits), while the model keeps the exact value."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starkmatter.core import schemas
from starkmatter.portfolio import routes, valuation

pytestmark = pytest.mark.timeout(60)

PLAIN = re.compile(r"-?\d+(\.\d{0,7}[1-9])?")


@pytest.mark.parametrize(
    ("exact", "text"),
    [
        ("100.3333333333333333333333333", "100.33333333"),
        ("100.6666666666666666666666667", "100.66666667"),
        ("2.0000000000000000000000001", "2"),
        ("0.000000015", "0.00000002"),
        ("0.000000025", "0.00000002"),
        ("0.000000005", "0"),
        ("-0.000000004", "0"),
        ("1E-8", "0.00000001"),
        ("0E-25", "0"),
        ("100.50", "100.5"),
        ("402.0", "402"),
        ("5", "5"),
        ("1E+2", "100"),
        ("-21.10", "-21.1"),
        ("1000000000000000000000000000000.123456785", "1000000000000000000000000000000.12345678"),
    ],
)
def test_a_value_is_shown_rounded_half_even_without_trailing_zeros_or_exponent(
    exact: str, text: str
) -> None:
    assert schemas.shown_text(D(exact)) == text


@given(st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False))
def test_the_shown_text_is_the_exact_value_rounded_half_even_to_eight_places(
    exact: D,
) -> None:
    text = schemas.shown_text(exact)
    assert PLAIN.fullmatch(text), text
    assert D(text) == exact.quantize(D("1E-8"), rounding=decimal.ROUND_HALF_EVEN)


def test_a_response_shows_rounded_values_and_keeps_the_exact_ones() -> None:
    third = D(1) / 3
    snapshot = routes.SnapshotPublic(
        ts=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        cash=D(100_000) - third,
        positions_value=third,
        equity=D(100_000),
        realized_pnl=third,
        unrealized_pnl=-third,
        daily_return=third / 100,
        cumulative_return=None,
        volatility=None,
        max_drawdown=D(0),
        sharpe=D(2) / 3,
    )
    assert snapshot.realized_pnl == third  # the model is exact; only its JSON is rounded
    shown = json.loads(snapshot.model_dump_json())
    assert shown["cash"] == "99999.66666667"
    assert shown["realized_pnl"] == "0.33333333"
    assert shown["unrealized_pnl"] == "-0.33333333"
    assert shown["daily_return"] == "0.00333333"
    assert shown["sharpe"] == "0.66666667"
    assert shown["max_drawdown"] == "0"
    assert shown["cumulative_return"] is None
    # Read back (the cached GET /portfolio), it is shown the same.
    assert json.loads(routes.SnapshotPublic.model_validate(shown).model_dump_json()) == shown


@given(
    cash=st.decimals(min_value=0, max_value=10**9, places=12),
    positions_value=st.decimals(min_value=-(10**9), max_value=10**9, places=12),
)
def test_the_equity_shown_is_cash_plus_positions_value_as_shown_and_a_unit_at_most_off(
    cash: D, positions_value: D
) -> None:
    equity = valuation.shown_equity(cash, positions_value)
    assert equity == schemas.shown(cash) + schemas.shown(positions_value)
    assert abs(equity - schemas.shown(cash + positions_value)) <= D("1E-8")


def test_a_snapshot_message_shows_numbers_as_the_api_does() -> None:
    ts = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    view = valuation.shown_snapshot(
        {
            "ts": ts,
            "cash": D("99899.949999989995"),
            "positions_value": D("100.000000015"),
            "equity": D("99999.950000004995"),
            "realized_pnl": D("2.6666666666666666666666666"),
            "unrealized_pnl": D("0E-20"),
            "sharpe": None,
        }
    )
    assert view == {
        "ts": str(ts),
        "cash": "99899.94999999",
        "positions_value": "100.00000002",
        "equity": "99999.95000001",  # the sum shown, a unit above the exact equity rounded
        "realized_pnl": "2.66666667",
        "unrealized_pnl": "0",
        "sharpe": None,
    }
