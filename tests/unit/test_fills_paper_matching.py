"""Paper-broker fill simulation against the displayed book."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starkmatter.orders import fills
from starkmatter.orders.fills import CancelReason, Level
from starkmatter.orders.model import OrderSide, OrderType, TimeInForce

pytestmark = pytest.mark.timeout(60)

TS = dt.datetime(2026, 11, 25, 15, 0, tzinfo=dt.UTC)
BOOK = fills.Book(
    "AAPL",
    bids=(Level(D("99.99"), D(100)), Level(D("99.98"), D(200))),
    asks=(Level(D("100.01"), D(100)), Level(D("100.02"), D(200)), Level(D("100.05"), D(300))),
    ts=TS,
)
QUOTE = fills.Quote("AAPL", D("99.99"), D("100.01"), D(100), D(100), D("100"), TS)
NO_SLIP = fills.FillModel()


def order(
    qty: str,
    side: OrderSide = OrderSide.BUY,
    kind: OrderType = OrderType.MARKET,
    tif: TimeInForce = TimeInForce.DAY,
    limit: str | None = None,
    stop: str | None = None,
    cap: str = "102",
    filled: str = "0",
) -> fills.WorkingOrder:
    return fills.WorkingOrder(
        side=side,
        type=kind,
        time_in_force=tif,
        quantity=D(qty),
        filled_quantity=D(filled),
        limit_price=D(limit) if limit else None,
        stop_price=D(stop) if stop else None,
        price_cap=D(cap),
    )


def test_market_buy_walks_the_asks_best_first() -> None:
    got = fills.match(order("250"), QUOTE, BOOK, NO_SLIP)
    assert [(f.price, f.quantity) for f in got.fills] == [
        (D("100.01"), D(100)),
        (D("100.02"), D(150)),
    ]
    assert got.cancel is None


def test_partial_fill_when_order_exceeds_displayed_depth() -> None:
    got = fills.match(order("1000"), QUOTE, BOOK, NO_SLIP)
    assert got.quantity == 600
    assert got.cancel is None


def test_market_order_never_fills_beyond_its_price_cap() -> None:
    got = fills.match(order("1000", cap="100.02"), QUOTE, BOOK, NO_SLIP)
    assert got.quantity == 300
    assert max(f.price for f in got.fills) <= D("100.02")


def test_limit_buy_below_the_ask_rests_without_fills() -> None:
    got = fills.match(order("10", kind=OrderType.LIMIT, limit="100.00"), QUOTE, BOOK, NO_SLIP)
    assert got.fills == () and got.cancel is None


def test_limit_sell_fills_only_at_its_price_or_better() -> None:
    got = fills.match(
        order("500", side=OrderSide.SELL, kind=OrderType.LIMIT, limit="99.99", cap="98"),
        QUOTE,
        BOOK,
        NO_SLIP,
    )
    assert [(f.price, f.quantity) for f in got.fills] == [(D("99.99"), D(100))]


def test_ioc_cancels_what_it_cannot_fill_at_once() -> None:
    got = fills.match(order("1000", tif=TimeInForce.IOC), QUOTE, BOOK, NO_SLIP)
    assert got.quantity == 600 and got.cancel is CancelReason.IOC_REMAINDER


def test_fok_fills_nothing_unless_it_can_fill_everything() -> None:
    got = fills.match(order("1000", tif=TimeInForce.FOK), QUOTE, BOOK, NO_SLIP)
    assert got.fills == () and got.cancel is CancelReason.FOK_UNFILLABLE
    whole = fills.match(order("300", tif=TimeInForce.FOK), QUOTE, BOOK, NO_SLIP)
    assert whole.quantity == 300 and whole.cancel is None


def test_buy_stop_waits_until_the_last_trade_reaches_the_stop() -> None:
    stop = order("10", kind=OrderType.STOP, stop="101")
    assert fills.match(stop, QUOTE, BOOK, NO_SLIP) == fills.Match()
    risen = fills.Quote("AAPL", D("100.99"), D("101.01"), D(1), D(1), D("101"), TS)
    book = fills.Book("AAPL", (), (Level(D("101.01"), D(50)),), TS)
    got = fills.match(stop, risen, book, NO_SLIP)
    assert got.triggered and got.quantity == 10


def test_stop_limit_becomes_a_limit_once_triggered() -> None:
    stop = order("10", kind=OrderType.STOP_LIMIT, stop="101", limit="101.00")
    risen = fills.Quote("AAPL", D("100.99"), D("101.01"), D(1), D(1), D("101"), TS)
    book = fills.Book("AAPL", (), (Level(D("101.01"), D(50)),), TS)
    got = fills.match(stop, risen, book, NO_SLIP)
    assert got.triggered and got.fills == ()


def test_slippage_moves_price_against_the_order_but_never_past_the_cap() -> None:
    model = fills.FillModel(slippage_bps=D(10))
    got = fills.match(order("100", cap="100.05"), QUOTE, BOOK, model)
    assert got.fills[0].price == D("100.05")
    sell = fills.match(order("100", side=OrderSide.SELL, cap="90"), QUOTE, BOOK, model)
    assert sell.fills[0].price == D("99.99") * (1 - D(10) / D(10_000))


def test_without_depth_the_top_of_book_is_the_only_liquidity() -> None:
    got = fills.match(order("500"), QUOTE, None, NO_SLIP)
    assert [(f.price, f.quantity) for f in got.fills] == [(D("100.01"), D(100))]


def test_consumed_liquidity_is_not_offered_to_the_next_order() -> None:
    first = fills.match(order("150"), QUOTE, BOOK, NO_SLIP)
    left = BOOK.consume(OrderSide.BUY, first.fills)
    assert left.asks == (Level(D("100.02"), D(150)), Level(D("100.05"), D(300)))
    assert left.bids == BOOK.bids


def test_quote_and_depth_parse_from_the_market_data_contract() -> None:
    quote = fills.Quote.from_json(
        json.dumps(
            {
                "symbol": "AAPL",
                "bid": "1.5",
                "ask": "1.6",
                "bid_size": "10",
                "ask_size": "20",
                "last": "1.55",
                "last_size": "5",
                "ts": "2026-11-25T15:00:00Z",
            }
        )
    )
    book = fills.Book.from_json(
        json.dumps(
            {
                "symbol": "AAPL",
                "bids": [["1.5", "10"]],
                "asks": [["1.6", "20"], ["1.7", "5"]],
                "ts": "2026-11-25T15:00:00+00:00",
            }
        )
    )
    assert quote.ask == D("1.6") and quote.ts == TS
    assert book.asks[1] == Level(D("1.7"), D(5)) and book.ts == TS


levels = st.lists(st.tuples(st.integers(1, 500), st.integers(1, 1000)), min_size=0, max_size=6)


@given(
    levels=levels,
    qty=st.integers(1, 3000),
    filled=st.integers(0, 100),
    tif=st.sampled_from(TimeInForce),
    side=st.sampled_from(OrderSide),
    slip=st.integers(0, 50),
)
def test_fills_never_exceed_the_remaining_quantity_or_the_price_bound(
    levels: list[tuple[int, int]],
    qty: int,
    filled: int,
    tif: TimeInForce,
    side: OrderSide,
    slip: int,
) -> None:
    filled = min(filled, qty - 1)
    prices = sorted({p for p, _ in levels}, reverse=side is OrderSide.SELL)
    sizes = dict(levels)
    book_levels = tuple(Level(D(p) / 100 + 100, D(sizes[p])) for p in prices)
    book = fills.Book("X", book_levels, book_levels, TS)
    cap = D("102") if side is OrderSide.BUY else D("101")
    got = fills.match(
        order(str(qty), side=side, tif=tif, cap=str(cap), filled=str(filled)),
        None,
        book,
        fills.FillModel(slippage_bps=D(slip)),
    )
    assert got.quantity <= qty - filled
    for f in got.fills:
        assert f.quantity > 0
        assert f.price <= cap if side is OrderSide.BUY else f.price >= cap
    if tif is TimeInForce.FOK:
        assert got.quantity in (0, qty - filled)
