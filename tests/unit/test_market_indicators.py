import decimal
import fractions

from hypothesis import given
from hypothesis import strategies as st

from starkmatter.market import indicators, models

P = models.SCALE
Q = decimal.Decimal("0.00000001")
CTX = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)

closes = st.lists(st.integers(min_value=1 * P, max_value=5_000 * P), min_size=1, max_size=80)


def _price(fixed: int) -> decimal.Decimal:
    return decimal.Decimal(fixed).scaleb(-8)


def _batch_sma(series: list[int], n: int) -> list[decimal.Decimal | None]:
    out: list[decimal.Decimal | None] = []
    for i in range(len(series)):
        window = series[max(0, i - n + 1) : i + 1]
        out.append(
            None
            if len(window) < n
            else CTX.divide(decimal.Decimal(sum(window)), decimal.Decimal(P * n)).quantize(Q)
        )
    return out


@given(closes, st.integers(min_value=1, max_value=30))
def test_incremental_sma_equals_the_batch_average(series, n) -> None:
    sma = indicators.SMA(n)
    assert [sma.update(c) for c in series] == _batch_sma(series, n)


@given(closes, st.integers(min_value=2, max_value=30))
def test_incremental_ema_equals_the_batch_recurrence(series, n) -> None:
    ema = indicators.EMA(n)
    got = [ema.update(c) for c in series]
    alpha = CTX.divide(decimal.Decimal(2), decimal.Decimal(n + 1))
    expected: list[decimal.Decimal | None] = [None] * min(n - 1, len(series))
    if len(series) >= n:
        value = CTX.divide(sum((_price(c) for c in series[:n]), decimal.Decimal(0)),
                           decimal.Decimal(n))  # fmt: skip
        expected.append(value.quantize(Q))
        for c in series[n:]:
            value = CTX.add(value, CTX.multiply(alpha, CTX.subtract(_price(c), value)))
            expected.append(value.quantize(Q))
    assert got == expected


@given(closes, st.integers(min_value=2, max_value=25))
def test_incremental_bollinger_equals_the_two_pass_batch_computation(series, n) -> None:
    bands = indicators.Bollinger(n, 2)
    for i, close in enumerate(series):
        got = bands.update(close)
        window = series[max(0, i - n + 1) : i + 1]
        if len(window) < n:
            assert got is None
            continue
        mean = fractions.Fraction(sum(window), n)
        variance = sum((fractions.Fraction(x) - mean) ** 2 for x in window) / n
        std = CTX.divide(
            decimal.Decimal(variance.numerator), decimal.Decimal(variance.denominator) * P * P
        ).sqrt(CTX)
        middle = CTX.divide(decimal.Decimal(sum(window)), decimal.Decimal(P * n))
        assert got == ((middle - 2 * std).quantize(Q), middle.quantize(Q),
                       (middle + 2 * std).quantize(Q))  # fmt: skip


@given(closes)
def test_rsi_stays_between_0_and_100(series) -> None:
    rsi = indicators.RSI(14)
    for close in series:
        value = rsi.update(close)
        assert value is None or 0 <= value <= 100


def test_rsi_is_100_when_prices_only_rise() -> None:
    rsi = indicators.RSI(3)
    values = [rsi.update(c * P) for c in (1, 2, 3, 4, 5)]
    assert values[:3] == [None, None, None] and values[3:] == [100, 100]


@given(closes)
def test_macd_histogram_is_line_minus_signal(series) -> None:
    macd = indicators.MACD(3, 6, 4)
    for close in series:
        value = macd.update(close)
        if value is not None and value[1] is not None:
            line, signal, histogram = value
            assert (
                signal is not None
                and histogram is not None
                and abs(line - signal - histogram) <= Q * 2
            )


def test_the_indicator_set_reports_every_indicator_once_warmed_up() -> None:
    indicator_set = indicators.IndicatorSet()
    values: dict[str, str] = {}
    for i in range(40):
        values = indicator_set.update((100 + i % 7) * P)
    assert set(values) == {"sma_20", "ema_20", "rsi_14", "macd", "macd_signal",
                           "macd_histogram", "bb_lower", "bb_middle", "bb_upper"}  # fmt: skip
