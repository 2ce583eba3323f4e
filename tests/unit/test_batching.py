"""Batcher: items that arrive together go together, and no item ever waits for ever."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from starkmatter.core import batching

pytestmark = pytest.mark.timeout(10)


class Recorder:
    """A handler that records its batches and can be held open."""

    def __init__(self, *, held: bool = False, fail_with: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.fail_with = fail_with

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [i * 10 for i in items]


async def test_a_lone_item_goes_at_once_alone() -> None:
    handler = Recorder()
    batcher = batching.Batcher(handler, in_flight=2)
    assert await batcher.submit(7) == 70
    assert handler.batches == [[7]]


async def test_items_that_arrive_while_every_batch_runs_go_together_next() -> None:
    handler = Recorder(held=True)
    batcher = batching.Batcher(handler, in_flight=1)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.01)  # the first batch is running, held open
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)
    handler.release.set()
    assert await asyncio.gather(first, *later) == [10, 20, 30, 40]
    assert handler.batches == [[1], [2, 3, 4]]


async def test_a_batch_holds_at_most_max_items() -> None:
    handler = Recorder(held=True)
    batcher = batching.Batcher(handler, in_flight=1, max_items=2)
    submitted = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    handler.release.set()
    assert await asyncio.gather(*submitted) == [0, 10, 20, 30, 40]
    assert handler.batches == [[0, 1], [2, 3], [4]]


async def test_items_submitted_one_after_another_never_wait_for_ever() -> None:
    # Each next item arrives after the only runner left its loop but before its end was
    # counted: every slot looks taken, and the item must be started all the same.
    handler = Recorder()
    batcher = batching.Batcher(handler, in_flight=1)

    async def one_after_another() -> list[int]:
        return [await batcher.submit(i) for i in range(5)]

    assert await asyncio.wait_for(one_after_another(), 5) == [0, 10, 20, 30, 40]


async def test_an_error_reaches_every_item_of_its_batch_and_later_batches_go_on() -> None:
    handler = Recorder(held=True, fail_with=ConnectionError("database went away"))
    batcher = batching.Batcher(handler, in_flight=1)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.01)
    failing = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0.01)
    handler.release.set()
    results = await asyncio.gather(first, *failing, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    handler.fail_with = None
    assert await batcher.submit(4) == 40


async def test_a_handler_returning_the_wrong_number_of_results_fails_its_items() -> None:
    async def short(items: Sequence[int]) -> list[int]:
        return []

    batcher = batching.Batcher(short, in_flight=1)
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        await batcher.submit(1)


async def test_cancelling_the_runner_cancels_its_batch_and_every_waiting_item() -> None:
    handler = Recorder(held=True)
    batcher = batching.Batcher(handler, in_flight=1, max_items=1)
    submitted = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    mine = {asyncio.current_task(), *submitted}
    for task in asyncio.all_tasks() - mine:  # the runner (as when the process stops)
        task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*submitted, return_exceptions=True), 5)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)


async def test_idle_is_announced_once_nothing_runs_or_waits() -> None:
    idle: list[bool] = []
    batcher = batching.Batcher(Recorder(), in_flight=2, on_idle=lambda: idle.append(True))
    await asyncio.gather(*(batcher.submit(i) for i in range(4)))
    await asyncio.sleep(0)  # the runners' end callbacks
    assert idle == [True]  # once, when the last runner ended: not while another ran
    assert await batcher.submit(5) == 50  # idle is not closed: it starts again
    await asyncio.sleep(0)
    assert idle == [True, True]


def test_in_flight_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="in_flight"):
        batching.Batcher(Recorder(), in_flight=0)


@settings(max_examples=150, deadline=None)
@given(
    in_flight=st.integers(1, 3),
    max_items=st.none() | st.integers(1, 4),
    gaps=st.lists(st.integers(0, 3), min_size=1, max_size=25),
    holds=st.lists(st.integers(0, 3), min_size=1, max_size=8),
    failing=st.sets(st.integers(0, 7), max_size=3),
)
def test_every_item_is_answered_once_whatever_the_interleaving(
    in_flight: int, max_items: int | None, gaps: list[int], holds: list[int], failing: set[int]
) -> None:
    # Items arrive with random numbers of loop turns between them; each batch is held for a
    # random number of turns, and some batches fail. Whatever the order of events, every
    # item gets exactly one answer (its result, or its batch's error), no batch is larger
    # than allowed, no more batches run at once than allowed, and nothing waits for ever.
    handled: list[int] = []
    running = peak = batches = 0

    async def handle(items: Sequence[int]) -> list[int]:
        nonlocal running, peak, batches
        number, batches = batches, batches + 1
        running += 1
        peak = max(peak, running)
        try:
            assert max_items is None or len(items) <= max_items
            handled.extend(items)
            for _ in range(holds[number % len(holds)]):
                await asyncio.sleep(0)
            if number in failing:
                raise ConnectionError(f"batch {number} failed")
            return [i * 10 for i in items]
        finally:
            running -= 1

    async def scenario() -> list[int | BaseException]:
        idle: list[bool] = []
        batcher = batching.Batcher(
            handle, in_flight=in_flight, max_items=max_items, on_idle=lambda: idle.append(True)
        )
        submitted = []
        for n, gap in enumerate(gaps):
            submitted.append(asyncio.ensure_future(batcher.submit(n)))
            for _ in range(gap):
                await asyncio.sleep(0)
        answers = await asyncio.wait_for(asyncio.gather(*submitted, return_exceptions=True), 2)
        for _ in range(10):  # runners that found nothing left end a turn or two later
            if idle:
                break
            await asyncio.sleep(0)
        assert idle  # announced once everything was answered
        return answers

    answers = asyncio.run(scenario())

    assert sorted(handled) == list(range(len(gaps)))  # each item handed over exactly once
    assert peak <= in_flight
    for n, answer in enumerate(answers):
        assert answer == n * 10 or isinstance(answer, ConnectionError)


def test_a_registry_keeps_one_object_per_owner_and_forgets_only_its_own() -> None:
    registry: batching.Registry[list[int]] = batching.Registry()
    owner = object()
    live = registry.get(owner, list)
    assert registry.get(owner, list) is live
    registry.forget(owner, [])  # another object of that owner (built directly): kept
    assert registry.get(owner, list) is live
    registry.forget(owner, live)
    assert registry.get(owner, list) is not live
