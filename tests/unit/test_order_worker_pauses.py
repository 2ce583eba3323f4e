"""How long the order worker waits between outbox batches."""

from __future__ import annotations

import pytest

from starkmatter.orders import processing
from starkmatter.orders.config import OrdersConfig

CONFIG = OrdersConfig(outbox_poll_ms=5, outbox_gather_ms=25, batch_size=200)


def test_an_idle_worker_polls_the_outbox_at_the_idle_interval() -> None:
    assert processing.pause_after(0, CONFIG) == pytest.approx(0.005)


@pytest.mark.parametrize("handled", [1, 37, 199])
def test_after_a_batch_that_was_not_full_the_worker_gathers_more_events(handled: int) -> None:
    assert processing.pause_after(handled, CONFIG) == pytest.approx(0.025)


def test_after_a_full_batch_the_worker_goes_straight_on() -> None:
    assert processing.pause_after(200, CONFIG) == 0.0


def test_a_zero_gather_window_turns_gathering_off() -> None:
    config = OrdersConfig(outbox_gather_ms=0)
    assert processing.pause_after(1, config) == 0.0
