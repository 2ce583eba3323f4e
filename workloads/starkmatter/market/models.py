"""The canonical market-data model: trades, quotes, depth and bars.

Prices and sizes are *fixed-point integers* scaled by :data:`SCALE` (10**8) in the hot
path: exact like :class:`~decimal.Decimal`, but an order of magnitude cheaper to compare,
sum and encode. They become ``Decimal`` (or decimal strings) only at the edges, and
``numeric(24,8)`` in PostgreSQL. Timestamps are integer nanoseconds since the Unix epoch,
UTC; :func:`to_datetime` gives the timezone-aware ``datetime``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
from typing import Any

DECIMALS = 8
SCALE = 10**DECIMALS
_NS_PER_S = 1_000_000_000
_DECIMAL_QUANTUM = decimal.Decimal(1).scaleb(-DECIMALS)
WHOLE_DIGITS = 16
"""digits before the point that storage holds (``numeric(24,8)``)"""
LIMIT = 10 ** (WHOLE_DIGITS + DECIMALS)
"""fixed-point values must be strictly between -LIMIT and LIMIT"""

INTERVALS_NS: dict[str, int] = {"1s": _NS_PER_S, "1m": 60 * _NS_PER_S}
"""Bar intervals the enrichment stage builds, by name."""


def to_fixed(value: Any) -> int:
    """Exact fixed-point value of a vendor number: ``str``, ``int``, ``Decimal`` or ``float``.

    A float is read through its shortest ``repr`` (what the vendor wrote in its JSON), never
    through its binary value. More than :data:`DECIMALS` fractional digits round half-even.
    Raises ``ValueError`` for anything that is not a finite number, and for a number storage
    cannot hold (:data:`WHOLE_DIGITS` or more digits before the point).
    """
    kind = type(value)
    if kind is int:
        fixed = int(value * SCALE)
    elif kind is str:
        text: str = value
        if not text.isascii() or "_" in text:
            raise ValueError(f"not a number: {text!r}")
        whole, _, frac = text.partition(".")
        digits = whole[1:] if whole[:1] in ("+", "-") else whole
        if (
            "e" not in text
            and "E" not in text
            and len(frac) <= DECIMALS
            and (digits or frac)
            and whole.strip() == whole
        ):
            # int() alone would read a bare sign ("-" + "00000000") as zero.
            if (frac and not frac.isdigit()) or (digits and not digits.isdigit()):
                raise ValueError(f"not a number: {text!r}")
            fixed = int((whole or "0") + frac.ljust(DECIMALS, "0"))
        else:
            fixed = _via_decimal(text)
    elif kind is float:
        fixed = _via_decimal(repr(value))
    elif kind is decimal.Decimal:
        fixed = _via_decimal(value)
    else:
        raise ValueError(f"not a number: {value!r}")
    if not -LIMIT < fixed < LIMIT:
        raise ValueError(f"out of range: {value!r}")
    return fixed


def _via_decimal(value: str | decimal.Decimal) -> int:
    try:
        number = decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    if number and number.adjusted() >= WHOLE_DIGITS:
        # Refused before rounding: quantizing 1e30 to 8 places needs more digits than the
        # default context's 28 and raises InvalidOperation, which is not a ValueError.
        raise ValueError(f"out of range: {value!r}")
    return int(number.quantize(_DECIMAL_QUANTUM, rounding=decimal.ROUND_HALF_EVEN).scaleb(DECIMALS))


def to_decimal(fixed: int) -> decimal.Decimal:
    return decimal.Decimal(fixed).scaleb(-DECIMALS)


def from_decimal(value: decimal.Decimal) -> int:
    return _via_decimal(value)


_TEXT_CACHE: dict[int, str] = {}


def to_text(fixed: int) -> str:
    """Decimal string of a fixed-point value, trailing zeros trimmed (``"101.25"``)."""
    text = _TEXT_CACHE.get(fixed)
    if text is None:
        whole, frac = divmod(abs(fixed), SCALE)
        sign = "-" if fixed < 0 else ""
        text = f"{sign}{whole}.{frac:08d}".rstrip("0").rstrip(".") if frac else f"{sign}{whole}"
        if len(_TEXT_CACHE) > 200_000:
            _TEXT_CACHE.clear()
        _TEXT_CACHE[fixed] = text
    return text


def to_datetime(ts_ns: int) -> datetime.datetime:
    seconds, ns = divmod(ts_ns, _NS_PER_S)
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(microsecond=ns // 1000)


def from_datetime(moment: datetime.datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: a timezone is required")
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS_PER_S + delta.microseconds * 1000


_ISO_SECONDS: dict[int, str] = {}


def iso(ts_ns: int) -> str:
    """ISO-8601 UTC with microseconds and a ``Z``: ``2026-11-25T13:00:00.123456Z``."""
    seconds, ns = divmod(ts_ns, _NS_PER_S)
    prefix = _ISO_SECONDS.get(seconds)
    if prefix is None:
        if len(_ISO_SECONDS) > 10_000:
            _ISO_SECONDS.clear()
        prefix = _ISO_SECONDS[seconds] = datetime.datetime.fromtimestamp(
            seconds, datetime.UTC
        ).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{ns // 1000:06d}Z"


@dataclasses.dataclass(slots=True)
class Trade:
    symbol: str
    ts_ns: int
    price: int
    size: int
    trade_id: str | None = None
    seq: int | None = None


@dataclasses.dataclass(slots=True)
class Quote:
    symbol: str
    ts_ns: int
    bid: int
    ask: int
    bid_size: int
    ask_size: int
    seq: int | None = None


Level = tuple[int, int]
"""One depth level: (price, size), fixed-point."""


@dataclasses.dataclass(slots=True)
class Depth:
    symbol: str
    ts_ns: int
    bids: tuple[Level, ...]
    """Best (highest) first."""
    asks: tuple[Level, ...]
    """Best (lowest) first."""
    seq: int | None = None


@dataclasses.dataclass(slots=True)
class Bar:
    symbol: str
    interval: str
    start_ns: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    vwap: int
    trades: int
    first_ns: int = 0
    """Time of the earliest trade folded in (0 when the bar came whole from a vendor)."""
    last_ns: int = 0
    """Time of the latest trade folded in: with ``first_ns``, what storage merges on."""
    indicators: dict[str, str] = dataclasses.field(default_factory=dict)
    """Indicator values at this bar's close, as decimal strings (``{"sma_20": "101.5"}``)."""
    whole: bool = False
    """Built from every stored trade of its interval (re-read from storage when a worker
    starts): storage replaces the stored row with it instead of merging it as a part."""


Event = Trade | Quote | Depth | Bar
