"""core.heap: a started service's heap leaves the collector's reach, its garbage does not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from starkmatter.core import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unsettled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(heap, "_settled", False)
    yield
    gc.unfreeze()  # hand pytest's own heap back to the collector


@pytest.mark.usefixtures("unsettled")
def test_settle_collects_garbage_cycles_then_freezes_what_is_alive() -> None:
    garbage, kept = Node(), Node()
    garbage.other = garbage  # a cycle: only the collector frees it
    kept.other = kept
    dead = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()

    heap.settle()

    assert dead() is None
    assert gc.get_freeze_count() > before
    assert not any(o is kept for o in gc.get_objects())  # frozen: no collection scans it


@pytest.mark.usefixtures("unsettled")
def test_settle_freezes_once_per_process() -> None:
    heap.settle()
    later = Node()
    later.other = later

    heap.settle()

    assert any(o is later for o in gc.get_objects())  # not frozen by the second call
