"""Incremental technical indicators over bar closes: SMA, EMA, RSI, MACD, Bollinger bands.

Each indicator takes one close at a time in O(1) and returns its value once it has enough
history (``None`` before). Sums run on exact fixed-point integers; divisions and square
roots use :mod:`decimal` with 28 significant digits and results are quantized to
:data:`~starkmatter.market.models.DECIMALS` places, so an incremental value equals the
value recomputed from the whole series (the unit tests check exactly that).
"""

from __future__ import annotations

import collections
import decimal

from starkmatter.market import models

_CONTEXT = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)
_QUANTUM = decimal.Decimal(1).scaleb(-models.DECIMALS)
_SCALE = decimal.Decimal(models.SCALE)


def _quantize(value: decimal.Decimal) -> decimal.Decimal:
    return value.quantize(_QUANTUM, context=_CONTEXT)


def _price(fixed: int) -> decimal.Decimal:
    return decimal.Decimal(fixed).scaleb(-models.DECIMALS)


class SMA:
    def __init__(self, period: int) -> None:
        self.period = period
        self._window: collections.deque[int] = collections.deque()
        self._sum = 0

    def update(self, close: int) -> decimal.Decimal | None:
        self._window.append(close)
        self._sum += close
        if len(self._window) > self.period:
            self._sum -= self._window.popleft()
        if len(self._window) < self.period:
            return None
        return _quantize(_CONTEXT.divide(decimal.Decimal(self._sum), _SCALE * self.period))


class EMA:
    """Seeded with the SMA of the first ``period`` closes, then ``alpha = 2 / (period + 1)``."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.alpha = _CONTEXT.divide(decimal.Decimal(2), decimal.Decimal(period + 1))
        self._seeded = 0
        self._seed_sum = decimal.Decimal(0)
        self.value: decimal.Decimal | None = None

    def update(self, close: int) -> decimal.Decimal | None:
        return self.update_decimal(_price(close))

    def update_decimal(self, price: decimal.Decimal) -> decimal.Decimal | None:
        if self.value is None:
            self._seeded += 1
            self._seed_sum = _CONTEXT.add(self._seed_sum, price)
            if self._seeded < self.period:
                return None
            self.value = _CONTEXT.divide(self._seed_sum, decimal.Decimal(self.period))
        else:
            self.value = _CONTEXT.add(
                self.value, _CONTEXT.multiply(self.alpha, _CONTEXT.subtract(price, self.value))
            )
        return _quantize(self.value)


class RSI:
    """Wilder's RSI: average gain and loss seeded over ``period`` changes, then smoothed."""

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self._previous: int | None = None
        self._count = 0
        self._gain = decimal.Decimal(0)
        self._loss = decimal.Decimal(0)

    def update(self, close: int) -> decimal.Decimal | None:
        previous, self._previous = self._previous, close
        if previous is None:
            return None
        change = _price(close - previous)
        gain = change if change > 0 else decimal.Decimal(0)
        loss = -change if change < 0 else decimal.Decimal(0)
        n = decimal.Decimal(self.period)
        self._count += 1
        if self._count <= self.period:
            self._gain += gain
            self._loss += loss
            if self._count < self.period:
                return None
            self._gain = _CONTEXT.divide(self._gain, n)
            self._loss = _CONTEXT.divide(self._loss, n)
        else:
            self._gain = _CONTEXT.divide(self._gain * (n - 1) + gain, n)
            self._loss = _CONTEXT.divide(self._loss * (n - 1) + loss, n)
        if self._loss == 0:
            return decimal.Decimal(100) if self._gain > 0 else decimal.Decimal(50)
        rs = _CONTEXT.divide(self._gain, self._loss)
        return _quantize(100 - _CONTEXT.divide(decimal.Decimal(100), 1 + rs))


class MACD:
    """MACD line (EMA fast - EMA slow), its signal EMA, and the histogram."""

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self._fast = EMA(fast)
        self._slow = EMA(slow)
        self._signal = EMA(signal)

    def update(
        self, close: int
    ) -> tuple[decimal.Decimal, decimal.Decimal | None, decimal.Decimal | None] | None:
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        if fast is None or slow is None:
            return None
        assert self._fast.value is not None and self._slow.value is not None
        line = _CONTEXT.subtract(self._fast.value, self._slow.value)
        signal = self._signal.update_decimal(line)
        histogram = None if signal is None else _quantize(_CONTEXT.subtract(line, signal))
        return _quantize(line), signal, histogram


def std_from_sums(total: int, squares: int, count: int) -> decimal.Decimal:
    """Population standard deviation (as a price) from exact fixed-point sums."""
    variance_num = count * squares - total * total  # scaled by SCALE**2 * count**2
    variance = _CONTEXT.divide(
        decimal.Decimal(variance_num), decimal.Decimal(count * count) * _SCALE * _SCALE
    )
    return variance.sqrt(_CONTEXT)


class Bollinger:
    """Middle band = SMA; upper/lower = middle ± ``width`` population standard deviations."""

    def __init__(self, period: int = 20, width: int = 2) -> None:
        self.period = period
        self.width = width
        self._window: collections.deque[int] = collections.deque()
        self._sum = 0
        self._squares = 0

    def update(self, close: int) -> tuple[decimal.Decimal, decimal.Decimal, decimal.Decimal] | None:
        self._window.append(close)
        self._sum += close
        self._squares += close * close
        if len(self._window) > self.period:
            old = self._window.popleft()
            self._sum -= old
            self._squares -= old * old
        if len(self._window) < self.period:
            return None
        middle = _CONTEXT.divide(decimal.Decimal(self._sum), _SCALE * self.period)
        spread = self.width * std_from_sums(self._sum, self._squares, self.period)
        return (
            _quantize(middle - spread),
            _quantize(middle),
            _quantize(middle + spread),
        )


class IndicatorSet:
    """The indicators the platform publishes for one symbol and interval."""

    def __init__(self) -> None:
        self.sma = SMA(20)
        self.ema = EMA(20)
        self.rsi = RSI(14)
        self.macd = MACD()
        self.bollinger = Bollinger()

    def update(self, close: int) -> dict[str, str]:
        values: dict[str, str] = {}
        sma = self.sma.update(close)
        ema = self.ema.update(close)
        rsi = self.rsi.update(close)
        macd = self.macd.update(close)
        bands = self.bollinger.update(close)
        if sma is not None:
            values["sma_20"] = str(sma)
        if ema is not None:
            values["ema_20"] = str(ema)
        if rsi is not None:
            values["rsi_14"] = str(rsi)
        if macd is not None:
            values["macd"] = str(macd[0])
            if macd[1] is not None and macd[2] is not None:
                values["macd_signal"] = str(macd[1])
                values["macd_histogram"] = str(macd[2])
        if bands is not None:
            values["bb_lower"], values["bb_middle"], values["bb_upper"] = map(str, bands)
        return values
