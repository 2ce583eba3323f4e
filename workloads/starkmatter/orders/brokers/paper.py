"""The paper broker: fills against ``quote:{SYMBOL}`` and ``depth:{SYMBOL}`` in Redis.

Liquidity taken from a depth snapshot stays taken until the market-data plane publishes a
newer one (a new ``ts``), so two orders, or one order twice, never take the same shares,
even when they are matched by different worker replicas or by a worker restarted in the
middle of a snapshot. What has been taken is therefore kept in Redis, not in the process:
``paper:taken:{SYMBOL}`` holds the snapshot's ``ts`` and the size taken at each price
level (a depth document whose sizes are what was taken, exact decimal strings). It is
read in the same MGET as the quote and the depth, so matching costs no extra round trip;
a record for another ``ts`` counts as nothing taken (that snapshot is gone). The record
expires ``taken_ttl`` after it was last written, so keys of symbols no longer traded do not
accumulate; a snapshot left unchanged for longer than that offers its shares again.

Recording is a compare-and-set, one script call for all the symbols a poll took from: a
record is replaced only if it still holds exactly what this poll read with the depth. The
arithmetic stays here, in ``Decimal``. A replica that lost the race (someone else took from
that symbol meanwhile) reads that symbol again and matches its orders again against what is
left, so two replicas never both take the last shares; after a few lost races in a row the
symbol's orders wait for the next poll.

The record is written before the order worker's database transaction commits. If that
transaction rolls back (or the worker dies before committing), the shares stay taken with
no fill to show for them: the order matches again against what is left, so it gets fewer
fills from that snapshot, never a double fill. A paper broker may undercount liquidity;
it must never sell the same displayed shares twice.

In the process, the last view of each symbol is reused while the three values read for
it are unchanged, and each working order remembers what it was last matched against and is
not matched again until its inputs (the order, the quote, the book left) change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence

import redis.asyncio as aioredis

from starkmatter.orders import fills, storage
from starkmatter.orders.brokers import base
from starkmatter.orders.model import OrderId, OrderSide

TAKEN_KEY = "paper:taken:{}"
_ATTEMPTS = 8
"""compare-and-set tries per symbol and poll: each lost try means another replica took"""

_TAKE = """
-- KEYS[i] := ARGV[2i+1], expiring in ARGV[1] ms, only if it still holds ARGV[2i]
-- ('' for no key). One reply per key: 1 if replaced, 0 if someone changed it first.
local out = {}
for i, key in ipairs(KEYS) do
  if (redis.call('GET', key) or '') == ARGV[2 * i] then
    redis.call('SET', key, ARGV[2 * i + 1], 'PX', ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

_Raw = bytes | str | None


@dataclasses.dataclass(frozen=True)
class _View:
    """One symbol as read in one MGET."""

    quote: fills.Quote | None
    shown: fills.Book | None
    """the displayed depth (or the quote's top of book when no depth is published)"""
    left: fills.Book | None
    """``shown`` less what has been taken from it"""
    record: bytes | str
    """``paper:taken:{SYMBOL}`` as read (empty when absent): what the write must replace"""


def _available(shown: fills.Book, record: bytes | str) -> fills.Book:
    """``shown`` less the liquidity ``record`` says was taken, if it is of that snapshot."""
    if not record:
        return shown
    taken = fills.Book.from_json(record)
    if taken.ts != shown.ts:
        return shown
    for side in (OrderSide.BUY, OrderSide.SELL):
        levels = taken.liquidity(side)
        shown = shown.consume(side, (fills.Fill(lv.price, lv.size, lv.price) for lv in levels))
    return shown


def _taken_record(shown: fills.Book, left: fills.Book) -> bytes:
    """The taken-liquidity record of ``shown`` when ``left`` is what remains of it."""

    def taken(side: OrderSide) -> list[list[str]]:
        rest = {lv.price: lv.size for lv in left.liquidity(side)}
        rows = (
            (lv.price, lv.size - rest.get(lv.price, fills.ZERO)) for lv in shown.liquidity(side)
        )
        return [[str(price), str(size)] for price, size in rows if size > 0]

    document = {
        "symbol": shown.symbol,
        "bids": taken(OrderSide.SELL),
        "asks": taken(OrderSide.BUY),
        "ts": shown.ts.isoformat(),
    }
    return json.dumps(document, separators=(",", ":")).encode()


class PaperBroker:
    name = "paper"

    def __init__(
        self,
        redis: aioredis.Redis,
        model: fills.FillModel,
        latency: dt.timedelta,
        *,
        taken_ttl: dt.timedelta = dt.timedelta(days=1),
    ) -> None:
        self._redis = redis
        self._model = model
        self._latency = latency
        self._taken_ttl_ms = max(1, int(taken_ttl / dt.timedelta(milliseconds=1)))
        self._take = redis.register_script(_TAKE)
        self._views: dict[str, tuple[_Raw, _Raw, _Raw, _View]] = {}
        """the last view of each symbol and the raw values it came from: unchanged, reused"""
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
        views = await self._read(symbols)
        return {s: (v.quote, v.left) for s, v in views.items()}

    async def _read(self, symbols: Sequence[str]) -> dict[str, _View]:
        """Quote, depth and taken liquidity of ``symbols``, in one MGET."""
        if not symbols:
            return {}
        keys = [k for s in symbols for k in (f"quote:{s}", f"depth:{s}", TAKEN_KEY.format(s))]
        raw = await self._redis.mget(keys)
        out: dict[str, _View] = {}
        for i, symbol in enumerate(symbols):
            q_raw, d_raw, t_raw = raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]
            seen = self._views.get(symbol)
            if seen is not None and seen[:3] == (q_raw, d_raw, t_raw):
                out[symbol] = seen[3]
                continue
            quote = fills.Quote.from_json(q_raw) if q_raw else None
            shown = fills.Book.from_json(d_raw) if d_raw else None
            if shown is None and quote is not None:
                shown = fills.book_from_quote(quote)
            record = t_raw or b""
            left = _available(shown, record) if shown is not None else None
            out[symbol] = view = _View(quote, shown, left, record)
            self._views[symbol] = (q_raw, d_raw, t_raw, view)
        return out

    async def poll(
        self, orders: Sequence[storage.OrderRecord], now: dt.datetime
    ) -> dict[OrderId, base.Update]:
        ready = [o for o in orders if o.updated_at + self._latency <= now or not self._latency]
        ready.sort(key=lambda o: (o.created_at, o.id))
        groups: dict[str, list[storage.OrderRecord]] = {}
        for order in ready:
            groups.setdefault(order.request.symbol, []).append(order)
        updates: dict[OrderId, base.Update] = {}
        pending = sorted(groups)
        for _ in range(_ATTEMPTS):
            if not pending:
                break
            views = await self._read(pending)
            takes: dict[str, tuple[dict[OrderId, base.Update], _View]] = {}
            for symbol in pending:
                view = views[symbol]
                got, left = self._match(groups[symbol], view)
                if left is view.left:  # nothing taken: nothing to record
                    updates.update(got)
                else:
                    takes[symbol] = (got, dataclasses.replace(view, left=left))
            pending = []
            if takes:
                for symbol, taken in zip(takes, await self._save(takes), strict=True):
                    if taken:
                        updates.update(takes[symbol][0])
                    else:
                        pending.append(symbol)
        if len(self._looked) > 100_000:  # forget orders that ended long ago
            self._looked.clear()
        return updates

    def _match(
        self, orders: Sequence[storage.OrderRecord], view: _View
    ) -> tuple[dict[OrderId, base.Update], fills.Book | None]:
        """Updates for one symbol's orders, oldest first, and the book they leave."""
        quote, book = view.quote, view.left
        updates: dict[OrderId, base.Update] = {}
        for order in orders:
            inputs = (order.updated_at, quote.ts if quote else None, book, order.filled_quantity)
            if self._looked.get(order.id) == inputs:
                continue
            got = fills.match(order.working(), quote, book, self._model)
            if not got.fills and got.cancel is None:
                self._looked[order.id] = inputs
            if book is not None and got.fills:
                book = book.consume(order.request.side, got.fills)
            if got.fills or got.cancel or got.triggered != order.triggered:
                updates[order.id] = base.Update(
                    executions=tuple(base.Execution(f.quantity, f.price) for f in got.fills),
                    triggered=got.triggered,
                    cancelled=got.cancel.value if got.cancel else None,
                )
        return updates, book

    async def _save(self, takes: dict[str, tuple[dict[OrderId, base.Update], _View]]) -> list[bool]:
        """Record what each symbol's orders took, unless someone took from that symbol since
        it was read; True for each symbol recorded."""
        keys: list[str] = []
        args: list[bytes | str | int] = [self._taken_ttl_ms]
        for symbol, (_, view) in takes.items():
            assert view.shown is not None and view.left is not None
            keys.append(TAKEN_KEY.format(symbol))
            args += [view.record, _taken_record(view.shown, view.left)]
        replies = await self._take(keys=keys, args=args)
        return [int(r) == 1 for r in replies]
