"""Quote reads that arrive together share one ``MGET``.

Every order reads its symbol's latest quote from Redis before it is judged. An API process
keeps at most ``IN_FLIGHT`` reads running; symbols asked for meanwhile wait for the next
one and go together, each symbol once however many orders asked. Nothing waits for a
timer: a lone order reads at once, alone; the busier the process, the more orders share a
round trip (and redis-py's per-command work, about a tenth of the API's CPU per order when
each order made its own).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

IN_FLIGHT = 2
"""reads one process runs at once"""


class QuoteReads:
    """The coalesced quote reads of one Redis client."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._waiting: dict[str, list[asyncio.Future[bytes | str | None]]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def get(self, symbol: str) -> bytes | str | None:
        """The raw quote of ``symbol`` as stored now, or None when it has none."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes | str | None] = loop.create_future()
        self._waiting.setdefault(symbol, []).append(answer)
        if len(self._running) < IN_FLIGHT:
            task = loop.create_task(self._run())
            self._running.add(task)
            task.add_done_callback(self._ended)
        return await answer

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            await self._read(batch)

    async def _read(self, batch: dict[str, list[asyncio.Future[bytes | str | None]]]) -> None:
        symbols = list(batch)
        try:
            values = await self._redis.mget([f"quote:{s}" for s in symbols])
        except asyncio.CancelledError:
            for answers in batch.values():
                for answer in answers:
                    answer.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every order of the batch gets the error
            for answers in batch.values():
                for answer in answers:
                    if not answer.done():
                        answer.set_exception(exc)
            return
        for symbol, value in zip(symbols, values, strict=True):
            for answer in batch[symbol]:
                if not answer.done():
                    answer.set_result(value)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task.cancelled() or task.exception() is not None:
            # Cancelled (the process is stopping), or a bug (_read hands every error to
            # its readers): the reads still waiting must not wait for ever.
            for answers in self._waiting.values():
                for answer in answers:
                    if answer.done():
                        continue
                    if task.cancelled():
                        answer.cancel()
                    else:
                        answer.set_exception(task.exception())  # type: ignore[arg-type]
            self._waiting.clear()
        if not self._running and not self._waiting:
            _active.pop(id(self._redis), None)


_active: dict[int, QuoteReads] = {}
"""readers with reads in flight, by Redis client (dropped when idle, so none outlives it)"""


def of(redis: aioredis.Redis) -> QuoteReads:
    """The quote reads of ``redis``: the active ones, or new ones."""
    reads = _active.get(id(redis))
    if reads is None:
        reads = _active[id(redis)] = QuoteReads(redis)
    return reads
