"""Users' price alerts: a price crossing, a percentage move, an indicator condition. Pure.

Alerts trigger on the edge: when the condition becomes true, not while it stays true. A
triggered alert is switched off (one-shot), as a trader expects from a price alert.
"""

from __future__ import annotations

import dataclasses
import decimal
from typing import Literal

Condition = Literal["price_above", "price_below", "pct_move", "indicator"]


@dataclasses.dataclass(frozen=True)
class PriceRule:
    id: str
    user_id: str
    symbol: str
    condition: Condition
    threshold: decimal.Decimal
    indicator: str | None = None
    comparison: Literal["above", "below"] | None = None
    reference_price: decimal.Decimal | None = None
    condition_held: bool = False


def holds(
    rule: PriceRule, last: decimal.Decimal | None, indicators: dict[str, decimal.Decimal]
) -> bool | None:
    """Whether the condition is true now; None when the data to decide is missing.

    A non-finite value (an indicator stored as ``NaN``) is missing too: comparing a NaN
    Decimal raises, and one bad value must not stop every other alert."""
    if rule.condition == "indicator":
        value = indicators.get(rule.indicator or "")
        if value is None or not value.is_finite():
            return None
        return value > rule.threshold if rule.comparison == "above" else value < rule.threshold
    if last is None or not last.is_finite():
        return None
    if rule.condition == "price_above":
        return last >= rule.threshold
    if rule.condition == "price_below":
        return last <= rule.threshold
    ref = rule.reference_price
    if ref is None or ref == 0:
        return None
    return abs(last - ref) / ref * 100 >= rule.threshold


def describe(rule: PriceRule, last: decimal.Decimal | None) -> str:
    if rule.condition == "price_above":
        return f"{rule.symbol} at {last} crossed above {rule.threshold}"
    if rule.condition == "price_below":
        return f"{rule.symbol} at {last} crossed below {rule.threshold}"
    if rule.condition == "pct_move":
        assert rule.reference_price is not None and last is not None
        move = ((last - rule.reference_price) / rule.reference_price * 100).quantize(
            decimal.Decimal("0.01")
        )
        return f"{rule.symbol} moved {move}% from {rule.reference_price} (to {last})"
    return f"{rule.symbol} {rule.indicator} is {rule.comparison} {rule.threshold}"


def triggers(
    rule: PriceRule, last: decimal.Decimal | None, indicators: dict[str, decimal.Decimal]
) -> tuple[bool, bool]:
    """(condition now held, fire now): fire only on the false -> true edge."""
    now = holds(rule, last, indicators)
    if now is None:
        return rule.condition_held, False
    return now, now and not rule.condition_held
