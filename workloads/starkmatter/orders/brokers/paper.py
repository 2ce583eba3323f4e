"""The paper broker: fills against ``quote:{SYMBOL}`` and ``depth:{SYMBOL}`` in Redis.

Liquidity taken from a depth snapshot is remembered until the market-data plane publishes
a newer one (a new ``ts``), so two orders, or one order twice, never take the same shares.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import redis.asyncio as aioredis

from starkmatter.orders import fills, storage
from starkmatter.orders.brokers import base
from starkmatter.orders.model import OrderId


class PaperBroker:
    name = "paper"

    def __init__(
        self, redis: aioredis.Redis, model: fills.FillModel, latency: dt.timedelta
    ) -> None:
        self._redis = redis
        self._model = model
        self._latency = latency
        self._books: dict[str, fills.Book] = {}
        self._looked: dict[OrderId, tuple[object, ...]] = {}
        """what each working order was last matched against: unchanged inputs, no rematch"""

    async def submit(self, order: storage.OrderRecord) -> base.Accepted | base.Refused:
        return base.Accepted(f"paper-{order.id}")

    async def cancel(self, order: storage.OrderRecord) -> bool:
        return True

    async def aclose(self) -> None:
        return None

    async def market(
        self, symbols: Sequence[str]
    ) -> dict[str, tuple[fills.Quote | None, fills.Book | None]]:
        """Latest quote and the book still available, per symbol."""
        if not symbols:
            return {}
        keys = [k for s in symbols for k in (f"quote:{s}", f"depth:{s}")]
        raw = await self._redis.mget(keys)
        out: dict[str, tuple[fills.Quote | None, fills.Book | None]] = {}
        for i, symbol in enumerate(symbols):
            q_raw, d_raw = raw[2 * i], raw[2 * i + 1]
            quote = fills.Quote.from_json(q_raw) if q_raw else None
            book = fills.Book.from_json(d_raw) if d_raw else None
            if book is None and quote is not None:
                book = fills.book_from_quote(quote)
            seen = self._books.get(symbol)
            if book is not None and seen is not None and seen.ts == book.ts:
                book = seen
            if book is not None:
                self._books[symbol] = book
            out[symbol] = (quote, book)
        return out

    async def poll(
        self, orders: Sequence[storage.OrderRecord], now: dt.datetime
    ) -> dict[OrderId, base.Update]:
        ready = [o for o in orders if o.updated_at + self._latency <= now or not self._latency]
        ready.sort(key=lambda o: (o.created_at, o.id))
        market = await self.market(sorted({o.request.symbol for o in ready}))
        updates: dict[OrderId, base.Update] = {}
        for order in ready:
            quote, book = market[order.request.symbol]
            inputs = (order.updated_at, quote.ts if quote else None, book, order.filled_quantity)
            if self._looked.get(order.id) == inputs:
                continue
            got = fills.match(order.working(), quote, book, self._model)
            if not got.fills and got.cancel is None:
                self._looked[order.id] = inputs
            if book is not None and got.fills:
                book = book.consume(order.request.side, got.fills)
                self._books[order.request.symbol] = book
                market[order.request.symbol] = (quote, book)
            if got.fills or got.cancel or got.triggered != order.triggered:
                updates[order.id] = base.Update(
                    executions=tuple(base.Execution(f.quantity, f.price) for f in got.fills),
                    triggered=got.triggered,
                    cancelled=got.cancel.value if got.cancel else None,
                )
        if len(self._looked) > 100_000:  # forget orders that ended long ago
            self._looked.clear()
        return updates
