"""Validation and risk checks: each rejection reason, and what an accepted order reserves."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starkmatter.orders import risk
from starkmatter.orders.model import OrderRequest, OrderSide, OrderType, TimeInForce
from starkmatter.orders.risk import Reason

pytestmark = pytest.mark.timeout(60)

NOW = dt.datetime(2026, 11, 25, 15, 0, tzinfo=dt.UTC)
MARKET = risk.Market(
    tradable=True,
    tick_size=D("0.01"),
    bid=D("99.99"),
    ask=D("100.01"),
    last=D("100"),
    quote_ts=NOW - dt.timedelta(seconds=1),
)
LIMITS = risk.RiskLimits()
ROOMY = risk.Exposure(
    buying_power=D(1_000_000),
    position_quantity=D(1000),
    reserved_sell_quantity=D(0),
    open_buy_notional=D(0),
    gross_exposure=D(0),
    open_orders=0,
    orders_this_second=0,
)


def buy(qty: str = "10", **kw: object) -> OrderRequest:
    fields: dict[str, object] = dict(
        symbol="AAPL",
        side=OrderSide.BUY,
        type=OrderType.MARKET,
        time_in_force=TimeInForce.DAY,
        quantity=D(qty),
    )
    fields.update(kw)
    return OrderRequest(**fields)  # type: ignore[arg-type]


def rejected_by(
    order: OrderRequest,
    *,
    market: risk.Market = MARKET,
    limits: risk.RiskLimits = LIMITS,
    exposure: risk.Exposure = ROOMY,
    kill: bool = False,
) -> Reason | None:
    failed = risk.validate(order, market, limits, now=NOW, kill_switch=kill)
    if failed is not None:
        return failed.reason
    outcome = risk.check(order, market, exposure, limits)
    return outcome.reason if isinstance(outcome, risk.Rejection) else None


def test_a_plain_market_buy_passes_and_reserves_quantity_times_protected_ask() -> None:
    assert rejected_by(buy()) is None
    reservation = risk.check(buy(), MARKET, ROOMY, LIMITS)
    assert reservation == risk.Reservation(cash=D("10") * D("100.01") * D("1.02"), quantity=D(0))


def test_a_sell_reserves_shares_not_cash() -> None:
    order = buy(side=OrderSide.SELL)
    assert risk.check(order, MARKET, ROOMY, LIMITS) == risk.Reservation(D(0), D(10))


def test_kill_switch_rejects_everything() -> None:
    assert rejected_by(buy(), kill=True) is Reason.KILL_SWITCH


def test_untradable_symbol_is_rejected() -> None:
    halted = dataclasses.replace(MARKET, tradable=False)
    assert rejected_by(buy(), market=halted) is Reason.SYMBOL_NOT_TRADABLE


def test_missing_or_stale_quote_is_rejected() -> None:
    stale = dataclasses.replace(MARKET, quote_ts=NOW - dt.timedelta(days=2))
    empty = dataclasses.replace(MARKET, bid=None, ask=None, last=None)
    assert rejected_by(buy(), market=stale) is Reason.NO_MARKET_DATA
    assert rejected_by(buy(), market=empty) is Reason.NO_MARKET_DATA


@pytest.mark.parametrize("qty", ["0", "-5", "1.5"])
def test_zero_negative_or_fractional_quantity_is_invalid(qty: str) -> None:
    assert rejected_by(buy(qty)) is Reason.INVALID_QUANTITY


def test_quantity_above_the_order_limit_is_rejected() -> None:
    assert rejected_by(buy("100001")) is Reason.QUANTITY_LIMIT


@pytest.mark.parametrize("qty", ["1E+30", "123456789012345678901234567890"])
def test_a_huge_quantity_is_over_the_limit_not_an_arithmetic_error(qty: str) -> None:
    # In the default 28-digit context, 1E+30 % 1 raises decimal.InvalidOperation: a 500.
    assert rejected_by(buy(qty)) is Reason.QUANTITY_LIMIT


def test_notional_above_the_order_limit_is_rejected() -> None:
    assert rejected_by(buy("10000")) is Reason.NOTIONAL_LIMIT


def test_limit_order_without_a_limit_price_is_an_invalid_price() -> None:
    assert rejected_by(buy(type=OrderType.LIMIT)) is Reason.INVALID_PRICE
    assert rejected_by(buy(limit_price=D("100"))) is Reason.INVALID_PRICE


def test_price_off_the_tick_grid_is_rejected() -> None:
    assert rejected_by(buy(type=OrderType.LIMIT, limit_price=D("100.005"))) is Reason.TICK_SIZE


def test_limit_price_outside_the_collar_is_rejected_both_ways() -> None:
    assert rejected_by(buy(type=OrderType.LIMIT, limit_price=D("120"))) is Reason.PRICE_COLLAR
    assert rejected_by(buy(type=OrderType.LIMIT, limit_price=D("80"))) is Reason.PRICE_COLLAR


def test_stop_orders_refuse_ioc_and_fok() -> None:
    order = buy(type=OrderType.STOP, stop_price=D("101"), time_in_force=TimeInForce.IOC)
    assert rejected_by(order) is Reason.UNSUPPORTED_TIME_IN_FORCE


def test_order_rate_above_the_per_second_limit_is_rejected() -> None:
    busy = dataclasses.replace(ROOMY, orders_this_second=LIMITS.max_orders_per_second)
    assert rejected_by(buy(), exposure=busy) is Reason.RATE_LIMIT


def test_too_many_working_orders_is_rejected() -> None:
    busy = dataclasses.replace(ROOMY, open_orders=LIMITS.max_open_orders)
    assert rejected_by(buy(), exposure=busy) is Reason.OPEN_ORDERS_LIMIT


def test_buy_beyond_buying_power_is_rejected() -> None:
    poor = dataclasses.replace(ROOMY, buying_power=D("500"))
    assert rejected_by(buy(), exposure=poor) is Reason.BUYING_POWER


def test_selling_more_than_the_unreserved_position_is_rejected() -> None:
    held = dataclasses.replace(ROOMY, position_quantity=D(10), reserved_sell_quantity=D(5))
    assert rejected_by(buy("6", side=OrderSide.SELL), exposure=held) is Reason.INSUFFICIENT_POSITION
    assert rejected_by(buy("5", side=OrderSide.SELL), exposure=held) is None


def test_position_above_the_per_symbol_limit_is_rejected() -> None:
    tight = dataclasses.replace(LIMITS, max_position_notional=D(50_000))
    big = dataclasses.replace(ROOMY, position_quantity=D(490))
    assert rejected_by(buy(), limits=tight, exposure=big) is Reason.POSITION_LIMIT


def test_gross_exposure_above_the_limit_is_rejected() -> None:
    exposed = dataclasses.replace(ROOMY, gross_exposure=LIMITS.max_gross_exposure)
    assert rejected_by(buy(), exposure=exposed) is Reason.GROSS_EXPOSURE


def test_every_reason_is_either_validation_risk_or_broker() -> None:
    risk_reasons = {
        Reason.RATE_LIMIT,
        Reason.OPEN_ORDERS_LIMIT,
        Reason.BUYING_POWER,
        Reason.INSUFFICIENT_POSITION,
        Reason.POSITION_LIMIT,
        Reason.GROSS_EXPOSURE,
    }
    assert set(Reason) == risk.VALIDATION_REASONS | risk_reasons | {Reason.BROKER_REJECTED}


@given(
    bp=st.decimals(min_value=0, max_value=10**6, places=2),
    qty=st.integers(min_value=1, max_value=5000),
    limit=st.decimals(min_value=D("90.01"), max_value=D("110"), places=2),
)
def test_an_accepted_buy_never_reserves_more_than_the_buying_power(
    bp: D, qty: int, limit: D
) -> None:
    exposure = dataclasses.replace(ROOMY, buying_power=bp)
    order = buy(str(qty), type=OrderType.LIMIT, limit_price=limit)
    outcome = risk.check(order, MARKET, exposure, LIMITS)
    if isinstance(outcome, risk.Reservation):
        assert outcome.cash == qty * limit <= bp
    else:
        assert outcome.reason in {Reason.BUYING_POWER, Reason.POSITION_LIMIT, Reason.GROSS_EXPOSURE}


def test_rate_window_resets_each_second() -> None:
    start, count = risk.rate_window(None, 0, NOW)
    assert (start, count) == (NOW, 0)
    assert risk.rate_window(NOW, 7, NOW + dt.timedelta(milliseconds=300)) == (NOW, 7)
    assert risk.rate_window(NOW, 7, NOW + dt.timedelta(seconds=1)) == (
        NOW + dt.timedelta(seconds=1),
        0,
    )
