"""Work that arrives together goes together, with no timer.

A :class:`Batcher` runs at most ``in_flight`` batches at once. Items submitted while they
are all busy wait, and the next free one takes every item waiting (up to ``max_items``)
as one batch. A lone item goes at once, alone; the busier the process, the larger the
batches: one database statement and commit, or one Redis round trip, for many callers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")


@dataclasses.dataclass
class _Waiting(Generic[T, R]):
    item: T
    answer: asyncio.Future[R]


class Batcher(Generic[T, R]):
    """Hands submitted items to ``handle`` in batches; each caller gets its item's result.

    ``handle`` returns one result per item, in order. If it raises, every item of that
    batch gets the error, and later batches go on. ``on_idle`` is called whenever nothing
    is running or waiting any more.
    """

    def __init__(
        self,
        handle: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        in_flight: int,
        max_items: int | None = None,
        on_idle: Callable[[], object] | None = None,
    ) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._handle = handle
        self._in_flight = in_flight
        self._max_items = max_items
        self._on_idle = on_idle
        self._waiting: list[_Waiting[T, R]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, answer))
        self._start()
        return await answer

    def _start(self) -> None:
        if self._waiting and len(self._running) < self._in_flight:
            task = asyncio.get_running_loop().create_task(self._run())
            self._running.add(task)
            task.add_done_callback(self._ended)

    async def _run(self) -> None:
        while self._waiting:
            size = self._max_items or len(self._waiting)
            batch = self._waiting[:size]
            del self._waiting[:size]
            await self._one(batch)

    async def _one(self, batch: list[_Waiting[T, R]]) -> None:
        try:
            results = await self._handle([w.item for w in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for w in batch:
                w.answer.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every item of the batch gets the error
            for w in batch:
                if not w.answer.done():
                    w.answer.set_exception(exc)
            return
        for w, result in zip(batch, results, strict=True):
            if not w.answer.done():  # its caller may have given up (cancelled)
                w.answer.set_result(result)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task.cancelled() or task.exception() is not None:
            # Cancelled (the process is stopping), or a bug (_one hands every error to
            # its items): the items still waiting must not wait for ever.
            for w in self._waiting:
                if w.answer.done():
                    continue
                if task.cancelled():
                    w.answer.cancel()
                else:
                    w.answer.set_exception(task.exception())  # type: ignore[arg-type]
            self._waiting.clear()
        else:
            # A task leaves its loop when nothing waits, but is counted as running until
            # this callback: an item submitted in between found no free slot, and would
            # wait for ever if nothing started a batch for it here.
            self._start()
        if not self._running and not self._waiting and self._on_idle is not None:
            self._on_idle()


class Registry(Generic[V]):
    """One batching object per owner (a connection pool, a Redis client) while it has work
    in flight. The object forgets itself when idle, so none outlives its owner."""

    def __init__(self) -> None:
        self._active: dict[int, V] = {}

    def get(self, owner: object, make: Callable[[], V]) -> V:
        """The owner's active object, or a new one from ``make``."""
        value = self._active.get(id(owner))
        if value is None:
            value = self._active[id(owner)] = make()
        return value

    def forget(self, owner: object, value: V) -> None:
        """Drop ``value`` if it is the owner's entry (one built directly, as tests do, must
        not drop the live one)."""
        if self._active.get(id(owner)) is value:
            del self._active[id(owner)]
