import decimal

from hypothesis import given
from hypothesis import strategies as st

from starkmatter.market import bars, models

S = 1_000_000_000
P = models.SCALE

trades = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=300 * S),  # ts offset
        st.integers(min_value=1, max_value=10_000 * P),  # price
        st.integers(min_value=0, max_value=1_000 * P),  # size
    ),
    min_size=1,
    max_size=200,
)


def _all_bars(series: list[tuple[int, int, int]], interval: str) -> list[models.Bar]:
    builder = bars.BarBuilder(interval)
    out = [b for ts, p, s in sorted(series) if (b := builder.add("X", ts, p, s)) is not None]
    out += builder.close_due(10**15)
    return out


@given(trades)
def test_every_bar_is_ohlc_consistent_with_vwap_inside_the_range(series) -> None:
    for bar in _all_bars(series, "1s"):
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.low <= bar.vwap <= bar.high


@given(trades)
def test_bars_account_for_every_trade_and_all_volume(series) -> None:
    for interval in ("1s", "1m"):
        built = _all_bars(series, interval)
        assert sum(b.trades for b in built) == len(series)
        assert sum(b.volume for b in built) == sum(s for _, _, s in series)
        assert [b.start_ns for b in built] == sorted({ts - ts % models.INTERVALS_NS[interval]
                                                     for ts, _, _ in series})  # fmt: skip


@given(trades)
def test_vwap_is_the_exactly_rounded_volume_weighted_price(series) -> None:
    for bar in _all_bars(series, "1m"):
        members = [(p, s) for ts, p, s in series if bar.start_ns <= ts < bar.start_ns + 60 * S]
        volume = sum(s for _, s in members)
        if volume:
            exact = decimal.Decimal(sum(p * s for p, s in members)) / decimal.Decimal(volume)
            assert abs(decimal.Decimal(bar.vwap) - exact) <= decimal.Decimal("0.5")


def test_a_late_trade_for_a_closed_bar_is_counted_not_folded_in() -> None:
    builder = bars.BarBuilder("1s")
    builder.add("X", 0, P, P)
    closed = builder.add("X", 2 * S, 2 * P, P)
    assert closed is not None and closed.trades == 1
    assert builder.add("X", S // 2, 3 * P, P) is None
    assert builder.late_trades == 1


def test_bars_close_on_time_even_when_trading_stops() -> None:
    builder = bars.BarBuilder("1s")
    builder.add("X", 0, P, P)
    assert builder.close_due(S + S // 2, grace_ns=S) == []
    [bar] = builder.close_due(2 * S, grace_ns=S)
    assert bar.start_ns == 0 and bar.close == P


def test_bars_seeded_from_storage_are_whole_and_live_ones_are_not() -> None:
    builder = bars.BarBuilder("1s")
    assert builder.seed("X", 10 * S, 5 * P, P) is None
    assert builder.add("X", 10 * S + 1, 6 * P, P) is None  # live, into the seeded bar
    seeded = builder.add("X", 11 * S, 7 * P, P)
    assert seeded is not None
    assert seeded.whole
    assert seeded.trades == 2
    (live,) = builder.close_due(10**15)
    assert not live.whole


def test_open_and_close_are_the_earliest_and_latest_trade_by_time_not_by_arrival() -> None:
    builder = bars.BarBuilder("1m")
    for ts, price in [(20 * S, 2 * P), (40 * S, 4 * P), (10 * S, 1 * P), (30 * S, 3 * P)]:
        assert builder.add("X", ts, price, P) is None
    (bar,) = builder.close_due(10**15)
    assert (bar.open, bar.close, bar.first_ns, bar.last_ns) == (P, 4 * P, 10 * S, 40 * S)


def test_a_trade_for_a_closed_bar_is_not_folded_in_but_reported_for_a_rebuild() -> None:
    builder = bars.BarBuilder("1s")
    assert builder.add("X", 10 * S, P, P) is None
    assert builder.add("X", 11 * S, P, P) is not None
    assert builder.add("X", 10 * S + 5, 2 * P, P) is None
    assert builder.late == [("X", 10 * S)]
    (open_bar,) = builder.close_due(10**15)
    assert open_bar.trades == 1


def test_a_trade_for_a_bar_the_timer_closed_is_late_too() -> None:
    # With no bar of the symbol open, a late trade used to open a new bar for the closed
    # interval: a bar of that one trade, which storage then ignored (the stored bar spans
    # more), and whose close fed the indicators that interval a second time.
    builder = bars.BarBuilder("1m")
    builder.add("X", 10 * S, P, P)
    [closed] = builder.close_due(62 * S, grace_ns=S)
    assert closed.start_ns == 0
    assert builder.add("X", 50 * S, 2 * P, P) is None
    assert builder.late == [("X", 0)] and builder.late_trades == 1
    assert builder.current("X") is None
    assert builder.add("X", 61 * S, 3 * P, P) is None  # the next interval opens as usual
    current = builder.current("X")
    assert current is not None and current.start_ns == 60 * S
