"""Coalescing of events into reconciles, one pending pass per owner."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable

import kopf

from starkmatter_operator.state import Key

log = logging.getLogger(__name__)
RETRY_DELAY_S = 10


@dataclasses.dataclass(frozen=True)
class Pass:
    """What a pending reconcile must do; two requests for one owner merge into one."""

    apply: bool = False
    prune: bool = False
    spec: bool = False  # a new spec (or first look after start), rather than a child event

    def __or__(self, other: Pass) -> Pass:
        return Pass(self.apply or other.apply, self.prune or other.prune, self.spec or other.spec)


class Debouncer:
    """Collapses a burst of events into one reconcile per owner, and retries failures."""

    def __init__(
        self, delay: float, run: Callable[[Key, Pass], Awaitable[None]], *, concurrency: int = 32
    ) -> None:
        self._delay = delay
        self._run = run
        self._pending: dict[Key, Pass] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Reconciles in flight at once. More than the apiserver connections can serve only
        # holds more bodies and answers in memory; an owner waiting for a slot keeps
        # collecting events into its one pending pass.
        self._slots = asyncio.Semaphore(concurrency)

    def poke(self, owner: Key, work: Pass, *, delay: float | None = None) -> None:
        if owner in self._pending:
            self._pending[owner] = self._pending[owner] | work
            return
        self._pending[owner] = work
        task = asyncio.get_running_loop().create_task(
            self._later(owner, self._delay if delay is None else delay)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, owner: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._slots.acquire()
        work = self._pending.pop(owner)
        try:
            await self._run(owner, work)
        except kopf.TemporaryError as e:
            # The apiserver is busy, or the fix lies outside the CR (a Secret): look again.
            log.info("event=reconcile.retry owner=%s reason=%s", "/".join(owner), e)
            self.poke(owner, work, delay=e.delay or RETRY_DELAY_S)
        except Exception:
            log.exception("event=reconcile.failed owner=%s", "/".join(owner))
        finally:
            self._slots.release()

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
