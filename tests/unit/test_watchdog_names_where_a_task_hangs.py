"""The test watchdog names the line a hung task waits on, not just the event loop's poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests import watchdog


async def _inner(never: asyncio.Event) -> None:
    await never.wait()


async def _outer(never: asyncio.Event) -> None:
    await _inner(never)


async def test_a_suspended_task_is_shown_down_to_what_it_awaits() -> None:
    never = asyncio.Event()
    task = asyncio.create_task(_outer(never), name="stuck")
    await asyncio.sleep(0)
    try:
        chain = watchdog.awaiting(task)
        assert [line.rsplit(" in ", 1)[-1] for line in chain[:2]] == ["_outer", "_inner"]
        assert "locks.py" in chain[2] and chain[2].endswith(" in wait")
        assert chain[-1].startswith("awaiting <Future pending")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_every_pending_task_is_printed_with_the_test_it_belongs_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    never = asyncio.Event()
    task = asyncio.create_task(_outer(never), name="stuck-teardown")
    await asyncio.sleep(0)
    try:
        watchdog.print_tasks("tests/x.py::test_y")
        err = capsys.readouterr().err
        assert err.startswith("watchdog: tests/x.py::test_y is 10 s from its timeout")
        assert "--- task stuck-teardown" in err
        assert "in _inner" in err
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _server(never: asyncio.Event) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await never.wait()


async def _uses_server(never: asyncio.Event) -> None:
    async with _server(never):
        pass


async def test_a_context_manager_that_hangs_on_exit_is_followed_into() -> None:
    never = asyncio.Event()
    task = asyncio.create_task(_uses_server(never))
    await asyncio.sleep(0)
    try:
        functions = [line.rsplit(" in ", 1)[-1] for line in watchdog.awaiting(task)]
        assert functions[:4] == ["_uses_server", "__aexit__", "_server", "wait"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
