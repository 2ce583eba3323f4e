"""Performance metrics from a series of portfolio values (pure, Decimal throughout).

Returns are simple returns between consecutive daily closing values. Volatility and Sharpe
are annualised with 252 trading days; Sharpe takes a zero risk-free rate. Metrics that need
more data than there is (volatility from fewer than two returns) are ``None``, not zero.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from decimal import Decimal

ZERO = Decimal(0)
TRADING_DAYS = Decimal(252)


@dataclasses.dataclass(frozen=True)
class Metrics:
    daily_return: Decimal | None
    """today's value against the previous day's close (or the start, on the first day)"""
    cumulative_return: Decimal | None
    volatility: Decimal | None
    max_drawdown: Decimal
    """largest fall from a peak, as a fraction of that peak (0 = never fell)"""
    sharpe: Decimal | None


def returns(values: Sequence[Decimal]) -> list[Decimal]:
    return [(b - a) / a for a, b in itertools.pairwise(values) if a != 0]


def max_drawdown(values: Sequence[Decimal]) -> Decimal:
    peak: Decimal | None = None
    worst = ZERO
    for v in values:
        if peak is None or v > peak:
            peak = v
        if peak > 0:
            worst = max(worst, (peak - v) / peak)
    return worst


def _stdev(xs: Sequence[Decimal]) -> Decimal | None:
    if len(xs) < 2:
        return None
    mean = sum(xs, ZERO) / len(xs)
    var = sum(((x - mean) ** 2 for x in xs), ZERO) / (len(xs) - 1)
    return var.sqrt()


def compute(starting_value: Decimal, daily_closes: Sequence[Decimal]) -> Metrics:
    """``daily_closes``: one value per day, oldest first, the last being today's latest."""
    series = [starting_value, *daily_closes]
    rets = returns(series)
    sd = _stdev(rets)
    vol = sd * TRADING_DAYS.sqrt() if sd is not None else None
    sharpe = None
    if sd is not None and sd != 0:
        sharpe = (sum(rets, ZERO) / len(rets)) / sd * TRADING_DAYS.sqrt()
    current = series[-1]
    return Metrics(
        daily_return=rets[-1] if len(series) >= 2 and series[-2] != 0 else None,
        cumulative_return=(current - starting_value) / starting_value
        if starting_value != 0
        else None,
        volatility=vol,
        max_drawdown=max_drawdown(series),
        sharpe=sharpe,
    )
