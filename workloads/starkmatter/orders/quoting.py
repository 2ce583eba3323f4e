"""Quote reads that arrive together share one ``MGET``.

Every order reads its symbol's latest quote from Redis before it is judged. An API process
keeps at most ``IN_FLIGHT`` reads running (:class:`starkmatter.core.batching.Batcher`);
symbols asked for meanwhile wait for the next one and go together, each symbol once however
many orders asked. Nothing waits for a timer: a lone order reads at once, alone; the busier
the process, the more orders share a round trip (and redis-py's per-command work: 16
concurrent readers spent 15 us of CPU per read this way, against 70 us with a GET each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis

from starkmatter.core import batching

IN_FLIGHT = 2
"""reads one process runs at once"""
READ_TIMEOUT_S = 5.0
"""a read not answered by then fails its orders (TimeoutError) and frees its slot"""

Raw = bytes | str | None
"""a quote as stored (JSON), None when the symbol has none"""


class QuoteReads:
    """The coalesced quote reads of one Redis client."""

    def __init__(self, redis: aioredis.Redis, in_flight: int = IN_FLIGHT) -> None:
        self._redis = redis
        self._batches: batching.Batcher[str, Raw] = batching.Batcher(
            self._read, in_flight=in_flight, on_idle=lambda: _active.forget(redis, self)
        )

    async def get(self, symbol: str) -> Raw:
        """The quote of ``symbol`` as stored now."""
        return await self._batches.submit(symbol)

    async def _read(self, symbols: Sequence[str]) -> list[Raw]:
        distinct = list(dict.fromkeys(symbols))
        # Bounded: a read stuck on a dead connection would otherwise hold its slot, and with
        # every slot held, every order of the process would wait behind it.
        async with asyncio.timeout(READ_TIMEOUT_S):
            values = await self._redis.mget([f"quote:{s}" for s in distinct])
        found = dict(zip(distinct, values, strict=True))
        return [found[s] for s in symbols]


_active: batching.Registry[QuoteReads] = batching.Registry()
"""readers with reads in flight, by Redis client"""


def of(redis: aioredis.Redis) -> QuoteReads:
    """The quote reads of ``redis``: the active ones, or new ones."""
    return _active.get(redis, lambda: QuoteReads(redis))
