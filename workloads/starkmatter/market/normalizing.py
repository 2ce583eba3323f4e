"""Normalizing: vendor-neutral raw fields -> the canonical model.

Providers translate their wire format into a flat mapping with canonical keys (below) but
untrusted values; :func:`normalize` turns it into a :mod:`~starkmatter.market.models`
event with exact fixed-point prices, UTC nanosecond timestamps and a normalized symbol,
or raises :class:`Malformed` naming what was wrong. Value rules (bands, staleness,
crossed quotes) are :mod:`~starkmatter.market.validation`'s job, on the normalized event.

Canonical keys: ``type`` (``trade`` | ``quote`` | ``depth`` | ``bar``), ``symbol``, ``ts``,
``seq``; trades ``price``, ``size``, ``trade_id``; quotes ``bid``, ``ask``, ``bid_size``,
``ask_size``; depth ``bids``, ``asks`` (lists of ``[price, size]``, best first); bars
``interval``, ``open``, ``high``, ``low``, ``close``, ``volume``, ``vwap``, ``trades``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from typing import Any

from starkmatter.market import models

_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9.\-/]{0,23}")
_NS_PER_S = 1_000_000_000


class Malformed(ValueError):
    """A message that cannot be read as market data; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


_SYMBOL_CACHE: dict[str, str] = {}


def normalize_symbol(raw: Any) -> str:
    """Upper-case, trimmed; ``BTC/USD`` stays ``BTC/USD``. Raises :class:`Malformed`."""
    if type(raw) is not str:
        raise Malformed("symbol is not a string")
    symbol = _SYMBOL_CACHE.get(raw)
    if symbol is None:
        symbol = raw.strip().upper()
        if not _SYMBOL.fullmatch(symbol):
            raise Malformed(f"invalid symbol {raw[:32]!r}")
        if len(_SYMBOL_CACHE) < 100_000:
            _SYMBOL_CACHE[raw] = symbol
    return symbol


_SECOND_CACHE: dict[str, int] = {}


def parse_timestamp(raw: Any) -> int:
    """UTC epoch nanoseconds from epoch numbers or ISO-8601/RFC 3339 text with a zone.

    Integers are read by magnitude: seconds, milliseconds, microseconds or nanoseconds.
    Text without a timezone is refused: its meaning depends on where it was written.
    """
    kind = type(raw)
    if kind is int:
        value: int = raw
        if value <= 0:
            raise Malformed("timestamp is not positive")
        if value < 10**11:
            return value * _NS_PER_S
        if value < 10**14:
            return value * 1_000_000
        if value < 10**17:
            return value * 1_000
        return value
    if kind is not str:
        raise Malformed("timestamp is neither an epoch number nor ISO-8601 text")
    text: str = raw
    if len(text) < 20 or text[10] not in "Tt ":
        raise Malformed(f"unreadable timestamp {text[:40]!r}")
    head = text[:19]
    base = _SECOND_CACHE.get(head)
    if base is None:
        fields = (text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19])
        if not (
            all(f.isascii() and f.isdigit() for f in fields)
            and text[4] == text[7] == "-"
            and text[13] == text[16] == ":"
        ):
            raise Malformed(f"unreadable timestamp {text[:40]!r}")
        year, month, day, hour, minute, second = map(int, fields)
        # timegm would roll an impossible date or time (30 February, 25:00) into a real one.
        if not (
            1 <= month <= 12
            and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour <= 23
            and minute <= 59
            and second <= 59
        ):
            raise Malformed(f"impossible timestamp {text[:40]!r}")
        base = calendar.timegm((year, month, day, hour, minute, second))
        if len(_SECOND_CACHE) > 10_000:
            _SECOND_CACHE.clear()
        _SECOND_CACHE[head] = base
    rest = text[19:]
    frac_ns = 0
    if rest[:1] == ".":
        digits = 1
        while digits < len(rest) and rest[digits].isdigit():
            digits += 1
        fraction = rest[1:digits]
        if not fraction or len(fraction) > 9:
            raise Malformed(f"unreadable timestamp {text[:40]!r}")
        frac_ns = int(fraction.ljust(9, "0"))
        rest = rest[digits:]
    if rest in ("Z", "z", "+00:00", "-00:00", "+0000"):
        offset = 0
    elif (
        len(rest) == 6
        and rest[0] in "+-"
        and rest[3] == ":"
        and rest[1:3].isdigit()
        and rest[4:6].isdigit()
        and int(rest[1:3]) <= 23
        and int(rest[4:6]) <= 59
    ):
        offset = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
        if rest[0] == "-":
            offset = -offset
    elif not rest:
        raise Malformed(f"timestamp without a timezone {text[:40]!r}")
    else:
        raise Malformed(f"unreadable timestamp {text[:40]!r}")
    return (base - offset) * _NS_PER_S + frac_ns


def _fixed(fields: Mapping[str, Any], key: str) -> int:
    try:
        value = fields[key]
    except KeyError:
        raise Malformed(f"missing {key}") from None
    try:
        return models.to_fixed(value)
    except ValueError:
        raise Malformed(f"{key} is not a number") from None


def _seq(fields: Mapping[str, Any]) -> int | None:
    seq = fields.get("seq")
    if seq is None or type(seq) is int:
        return seq
    raise Malformed("seq is not an integer")


def _levels(raw: Any, side: str) -> tuple[models.Level, ...]:
    if not isinstance(raw, list | tuple):
        raise Malformed(f"{side} is not a list of levels")
    levels = []
    for level in raw:
        if not isinstance(level, list | tuple) or len(level) != 2:
            raise Malformed(f"{side} level is not [price, size]")
        try:
            levels.append((models.to_fixed(level[0]), models.to_fixed(level[1])))
        except ValueError:
            raise Malformed(f"{side} level is not numeric") from None
    return tuple(levels)


def normalize(fields: Mapping[str, Any]) -> models.Event:
    """The canonical event for one provider message; raises :class:`Malformed`."""
    if not isinstance(fields, Mapping):
        raise Malformed("message is not an object")
    kind = fields.get("type")
    symbol = normalize_symbol(fields.get("symbol"))
    if "ts" not in fields:
        raise Malformed("missing ts")
    ts_ns = parse_timestamp(fields["ts"])
    if kind == "trade":
        trade_id = fields.get("trade_id")
        return models.Trade(
            symbol,
            ts_ns,
            _fixed(fields, "price"),
            _fixed(fields, "size"),
            None if trade_id is None else str(trade_id),
            _seq(fields),
        )
    if kind == "quote":
        return models.Quote(
            symbol,
            ts_ns,
            _fixed(fields, "bid"),
            _fixed(fields, "ask"),
            _fixed(fields, "bid_size"),
            _fixed(fields, "ask_size"),
            _seq(fields),
        )
    if kind == "depth":
        return models.Depth(
            symbol,
            ts_ns,
            _levels(fields.get("bids"), "bids"),
            _levels(fields.get("asks"), "asks"),
            _seq(fields),
        )
    if kind == "bar":
        interval = fields.get("interval", "1m")
        if interval not in models.INTERVALS_NS:
            raise Malformed(f"unknown bar interval {str(interval)[:8]!r}")
        volume = _fixed(fields, "volume")
        close = _fixed(fields, "close")
        vwap = _fixed(fields, "vwap") if fields.get("vwap") is not None else close
        trades = fields.get("trades", 0)
        if type(trades) is not int:
            raise Malformed("trades is not an integer")
        step = models.INTERVALS_NS[interval]
        return models.Bar(
            symbol,
            interval,
            ts_ns - ts_ns % step,
            _fixed(fields, "open"),
            _fixed(fields, "high"),
            _fixed(fields, "low"),
            close,
            volume,
            vwap,
            trades,
        )
    raise Malformed(f"unknown message type {str(kind)[:16]!r}")
