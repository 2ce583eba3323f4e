"""``loops.stopped`` ends the tasks it is given and never swallows its caller's own cancel."""

from __future__ import annotations

import asyncio

import pytest

from starkmatter.core import loops


async def _forever() -> None:
    await asyncio.Event().wait()


async def _slow_to_stop(stopping: asyncio.Event, release: asyncio.Event) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        stopping.set()
        await release.wait()  # cleans up for a while after its cancel


async def _fails() -> None:
    raise LookupError("the task's own failure")


async def test_every_task_is_cancelled_and_ended() -> None:
    tasks = [asyncio.create_task(_forever()) for _ in range(3)]
    await asyncio.sleep(0)
    await loops.stopped(*tasks)
    assert all(t.cancelled() for t in tasks)


async def test_a_failure_other_than_the_cancel_is_raised_after_all_have_ended() -> None:
    failing = asyncio.create_task(_fails())
    waiting = asyncio.create_task(_forever())
    await asyncio.sleep(0)
    with pytest.raises(LookupError, match="own failure"):
        await loops.stopped(failing, waiting)
    assert waiting.cancelled()


async def test_the_callers_own_cancel_while_waiting_is_not_swallowed() -> None:
    stopping, release = asyncio.Event(), asyncio.Event()
    child = asyncio.create_task(_slow_to_stop(stopping, release))
    await asyncio.sleep(0)
    went_on = []

    async def owner() -> None:
        await loops.stopped(child)
        went_on.append(True)  # must not run: the owner itself was cancelled meanwhile

    task = asyncio.create_task(owner())
    await stopping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert went_on == []
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await child
