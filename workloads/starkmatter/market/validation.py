"""Validation: the seed's market-data rules, on normalized events, as pure functions.

A rejected event gets one stable :class:`Reason` (a client and a dashboard can switch on
it); the ingest worker writes it, with the raw payload, to the dead-letter table. One reason,
``storage_refused``, is given after these rules, by the ingest writer, to a row the database
would not store.
"""

from __future__ import annotations

import collections
import dataclasses
import enum

from starkmatter.market import models

_NS_PER_S = 1_000_000_000


class Reason(enum.StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_SYMBOL = "unknown_symbol"
    INVALID_PRICE = "invalid_price"
    PRICE_OUT_OF_BAND = "price_out_of_band"
    NEGATIVE_VOLUME = "negative_volume"
    SIZE_OUT_OF_RANGE = "size_out_of_range"
    STALE_TIMESTAMP = "stale_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    CROSSED_QUOTE = "crossed_quote"
    INCONSISTENT_BAR = "inconsistent_bar"
    DUPLICATE = "duplicate"
    STORAGE_REFUSED = "storage_refused"
    """Passed these rules, but PostgreSQL refused the row (a value out of a column's range, a
    constraint the rules do not know): set by the ingest writer, never by :class:`Validator`."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    symbols: frozenset[str] | None = None
    """The feed's symbol universe; ``None`` accepts any well-formed symbol."""
    band_bps: int = 1_000
    """Daily limit: a price may differ from the reference by this many basis points (10%)."""
    max_staleness_s: float | None = 60.0
    """Older events are stale; ``None`` for backfills (file replay), where age is expected."""
    max_skew_s: float = 5.0
    """Events further in the future than this clock skew are refused."""
    dedup_window: int = 200_000
    """How many recent event identities are remembered to catch duplicates."""
    max_size: int = 10**12 * models.SCALE
    """Largest trade, quote or depth size, or bar volume (fixed-point): far beyond any real
    print, and low enough that a bar's summed volume stays within ``numeric(24,8)``."""


class Validator:
    """Holds the per-feed state the rules need: reference prices and recent identities."""

    def __init__(self, rules: Rules, references: dict[str, int] | None = None) -> None:
        self.rules = rules
        self.references: dict[str, int] = dict(references or {})
        self._seen: set[object] = set()
        self._order: collections.deque[object] = collections.deque()
        self._max_stale_ns = (
            None if rules.max_staleness_s is None else int(rules.max_staleness_s * _NS_PER_S)
        )
        self._max_skew_ns = int(rules.max_skew_s * _NS_PER_S)

    def set_reference(self, symbol: str, price: int) -> None:
        """Reference (previous close) the daily band is centred on."""
        if price > 0:
            self.references[symbol] = price

    def check(self, event: models.Event, now_ns: int) -> Reason | None:
        """The reason ``event`` is refused, or ``None``; remembers accepted identities."""
        rules = self.rules
        symbol = event.symbol
        if rules.symbols is not None and symbol not in rules.symbols:
            return Reason.UNKNOWN_SYMBOL
        ts = event.start_ns if isinstance(event, models.Bar) else event.ts_ns
        if ts - now_ns > self._max_skew_ns:
            return Reason.FUTURE_TIMESTAMP
        if self._max_stale_ns is not None:
            age = now_ns - ts
            if type(event) is models.Bar:
                age -= models.INTERVALS_NS[event.interval]
            if age > self._max_stale_ns:
                return Reason.STALE_TIMESTAMP
        kind = type(event)
        if kind is models.Trade:
            assert isinstance(event, models.Trade)
            reason = self._price(symbol, event.price) or self._size(event.size)
            key: object = (
                symbol,
                event.ts_ns,
                event.trade_id or (event.price, event.size),
            )
        elif kind is models.Quote:
            assert isinstance(event, models.Quote)
            reason = (
                self._price(symbol, event.bid)
                or self._price(symbol, event.ask)
                or self._size(event.bid_size)
                or self._size(event.ask_size)
                or (Reason.CROSSED_QUOTE if event.bid > event.ask else None)
            )
            key = (
                symbol,
                event.ts_ns,
                event.bid,
                event.ask,
                event.bid_size,
                event.ask_size,
            )
        elif kind is models.Depth:
            assert isinstance(event, models.Depth)
            reason = self._depth(event)
            key = ("depth", symbol, event.ts_ns, event.bids, event.asks)
        else:
            assert isinstance(event, models.Bar)
            reason = self._bar(event)
            key = ("bar", symbol, event.interval, event.start_ns)
        if reason is not None:
            return reason
        if key in self._seen:
            return Reason.DUPLICATE
        self._remember(key)
        return None

    def _remember(self, key: object) -> None:
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.rules.dedup_window:
            self._seen.discard(self._order.popleft())

    def _size(self, size: int) -> Reason | None:
        if size < 0:
            return Reason.NEGATIVE_VOLUME
        if size > self.rules.max_size:
            return Reason.SIZE_OUT_OF_RANGE
        return None

    def _price(self, symbol: str, price: int) -> Reason | None:
        if price <= 0:
            return Reason.INVALID_PRICE
        reference = self.references.get(symbol)
        if reference is None:
            # No previous close known: the first sane price of the session anchors the band.
            self.references[symbol] = price
            return None
        if abs(price - reference) * 10_000 > reference * self.rules.band_bps:
            return Reason.PRICE_OUT_OF_BAND
        return None

    def _depth(self, depth: models.Depth) -> Reason | None:
        for price, size in depth.bids + depth.asks:
            reason = self._price(depth.symbol, price) or self._size(size)
            if reason is not None:
                return reason
        if depth.bids and depth.asks and depth.bids[0][0] > depth.asks[0][0]:
            return Reason.CROSSED_QUOTE
        return None

    def _bar(self, bar: models.Bar) -> Reason | None:
        for price in (bar.open, bar.high, bar.low, bar.close):
            reason = self._price(bar.symbol, price)
            if reason is not None:
                return reason
        reason = self._size(bar.volume)
        if reason is not None:
            return reason
        if not bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high:
            return Reason.INCONSISTENT_BAR
        return None
