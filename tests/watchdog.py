"""Shortly before pytest-timeout fails a test, print where every asyncio task is waiting.

Tests and async fixtures share one session event loop. pytest-timeout interrupts that
loop's poll from a signal handler, so its traceback ends in ``selector.poll`` and never
names the coroutine that hung; and a teardown it interrupts is abandoned half done, so its
servers go on running into the tests after it. This plugin prints, a few seconds before
the timeout, each pending task's chain of awaits (innermost last) to stderr, which the
failed test's report shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest

LEAD_S = 10.0
"""How long before the timeout the tasks are printed."""


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """``file:line in function`` for each coroutine ``task`` is suspended in, outermost
    first, then the future the task waits on (another task's repr names that task)."""
    lines: list[str] = []
    step: Any = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "ag_frame", None)
        frame = frame or getattr(step, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        step = (
            getattr(step, "cr_await", None)
            or getattr(step, "ag_await", None)
            or getattr(step, "gi_yieldfrom", None)
        )
        if type(step).__name__ in ("async_generator_asend", "async_generator_athrow"):
            # ``await agen.__anext__()`` or ``.athrow()`` (an async fixture, a context manager):
            # the awaitable does not name its generator; the awaiting frame holds it, or
            # its ``self`` does (contextlib's ``self.gen``).
            held = [*frame.f_locals.values(), getattr(frame.f_locals.get("self"), "gen", None)]
            step = next((v for v in held if inspect.isasyncgen(v) and v.ag_running), None)
    waiter = getattr(task, "_fut_waiter", None)  # asyncio's own record of it
    if waiter is not None:
        lines.append(f"awaiting {waiter!r}")
    return lines


def print_tasks(nodeid: str) -> None:
    out = sys.stderr
    tasks = asyncio.all_tasks()
    print(f"watchdog: {nodeid} is {LEAD_S:.0f} s from its timeout; {len(tasks)} tasks:", file=out)
    for task in sorted(tasks, key=lambda t: t.get_name()):
        print(f"--- task {task.get_name()}", file=out)
        for line in awaiting(task):
            print(f"    {line}", file=out)
    out.flush()


class Watchdog:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float, nodeid: str) -> None:
        self.disarm()
        if seconds <= LEAD_S:
            return
        self._timer = threading.Timer(seconds - LEAD_S, self._fire, args=(nodeid,))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, nodeid: str) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(print_tasks, nodeid)


_watchdog = Watchdog()


@pytest.fixture(scope="session", autouse=True)
async def _watched_loop() -> AsyncIterator[None]:
    _watchdog.loop = asyncio.get_running_loop()
    yield
    _watchdog.loop = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    marker = item.get_closest_marker("timeout")
    timeout = marker.args[0] if marker and marker.args else item.config.getini("timeout")
    _watchdog.arm(float(timeout or 0), item.nodeid)
    try:
        yield
    finally:
        _watchdog.disarm()
