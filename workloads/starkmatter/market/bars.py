"""OHLCV bars with VWAP, built incrementally from trades (pure, no I/O)."""

from __future__ import annotations

from starkmatter.market import models


def _div_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


class _Open:
    __slots__ = (
        "close", "first_ns", "high", "last_ns", "low", "notional", "open", "start", "trades",
        "volume", "whole",
    )  # fmt: skip

    def __init__(self, start: int, ts_ns: int, price: int, size: int) -> None:
        self.start = start
        self.first_ns = self.last_ns = ts_ns
        self.open = self.high = self.low = self.close = price
        self.volume = size
        self.notional = price * size
        self.trades = 1
        self.whole = False

    def bar(self, symbol: str, interval: str) -> models.Bar:
        vwap = _div_half_even(self.notional, self.volume) if self.volume > 0 else self.close
        return models.Bar(
            symbol,
            interval,
            self.start,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            vwap,
            self.trades,
            first_ns=self.first_ns,
            last_ns=self.last_ns,
            whole=self.whole,
        )


class BarBuilder:
    """Bars of one interval for many symbols; a bar closes when a later trade arrives or
    when :meth:`close_due` finds its interval over (plus a grace period for late trades)."""

    def __init__(self, interval: str) -> None:
        self.interval = interval
        self.step = models.INTERVALS_NS[interval]
        self._open: dict[str, _Open] = {}
        self.late_trades = 0
        """Trades for a bar that had already closed: counted, not folded in."""
        self.late: list[tuple[str, int]] = []
        """(symbol, interval start) of each late trade since the owner last emptied this:
        the bars the owner rebuilds from storage once those trades are stored."""
        self._closed: dict[str, int] = {}
        """Per symbol, the start of the last bar :meth:`close_due` closed: a trade of that
        interval or an earlier one is late, though no bar of the symbol is open."""

    def add(self, symbol: str, ts_ns: int, price: int, size: int) -> models.Bar | None:
        """Fold one trade in; returns the bar this trade closed, if any."""
        start = ts_ns - ts_ns % self.step
        current = self._open.get(symbol)
        if current is None:
            closed = self._closed.get(symbol)
            if closed is not None and start <= closed:
                # Its bar was closed by the timer: a new bar of that interval would hold
                # this trade alone, and overwrite nothing when stored (and would feed the
                # indicators that interval's close twice).
                self.late_trades += 1
                self.late.append((symbol, start))
                return None
            self._open[symbol] = _Open(start, ts_ns, price, size)
            return None
        if start == current.start:
            # Open and close are the earliest and the latest trade by time, not by arrival:
            # a bar rebuilt from storage (where trades are in time order) must come out the
            # same. Trades at the same time keep their arrival order.
            if ts_ns >= current.last_ns:
                current.last_ns = ts_ns
                current.close = price
            elif ts_ns < current.first_ns:
                current.first_ns = ts_ns
                current.open = price
            if price > current.high:
                current.high = price
            elif price < current.low:
                current.low = price
            current.volume += size
            current.notional += price * size
            current.trades += 1
            return None
        if start > current.start:
            self._open[symbol] = _Open(start, ts_ns, price, size)
            return current.bar(symbol, self.interval)
        self.late_trades += 1
        self.late.append((symbol, start))
        return None

    def seed(self, symbol: str, ts_ns: int, price: int, size: int) -> models.Bar | None:
        """Fold in one trade read back from storage, in time order, at start-up.

        The bar it lands in is marked whole: seeding starts at the start of an interval, so
        that bar holds every stored trade of its interval, plus the live trades added later.
        """
        closed = self.add(symbol, ts_ns, price, size)
        self._open[symbol].whole = True
        return closed

    def close_due(self, now_ns: int, grace_ns: int = 0) -> list[models.Bar]:
        """Close every bar whose interval ended at least ``grace_ns`` before ``now_ns``."""
        due = [
            symbol
            for symbol, current in self._open.items()
            if current.start + self.step + grace_ns <= now_ns
        ]
        bars = [self._open.pop(symbol).bar(symbol, self.interval) for symbol in due]
        for bar in bars:
            self._closed[bar.symbol] = bar.start_ns
        return bars

    def current(self, symbol: str) -> models.Bar | None:
        """The still-open bar of ``symbol`` as it stands."""
        current = self._open.get(symbol)
        return None if current is None else current.bar(symbol, self.interval)
