"""How long the order worker waits between outbox batches."""

from __future__ import annotations

import pytest

from starkmatter.orders import processing
from starkmatter.orders.config import OrdersConfig

CONFIG = OrdersConfig(outbox_poll_ms=5, outbox_gather_ms=25, batch_size=200)


def test_an_idle_worker_polls_the_outbox_at_the_idle_interval() -> None:
    assert processing.pause_after(0, CONFIG) == pytest.approx(0.005)
    assert processing.pause_after(0, CONFIG, empty_in_a_row=1) == pytest.approx(0.005)


def test_empty_polls_in_a_row_back_off_up_to_the_gather_window() -> None:
    pauses = [processing.pause_after(0, CONFIG, n) for n in range(1, 8)]
    assert pauses == pytest.approx([0.005, 0.010, 0.020, 0.025, 0.025, 0.025, 0.025])
    assert processing.pause_after(0, CONFIG, 10_000) == pytest.approx(0.025)


def test_without_a_gather_window_an_idle_worker_does_not_back_off() -> None:
    config = OrdersConfig(outbox_poll_ms=5, outbox_gather_ms=0)
    assert processing.pause_after(0, config, 5) == pytest.approx(0.005)


@pytest.mark.parametrize("handled", [1, 37, 199])
def test_after_a_batch_that_was_not_full_the_worker_gathers_more_events(handled: int) -> None:
    assert processing.pause_after(handled, CONFIG) == pytest.approx(0.025)


def test_after_a_full_batch_the_worker_goes_straight_on() -> None:
    assert processing.pause_after(200, CONFIG) == 0.0


def test_a_zero_gather_window_turns_gathering_off() -> None:
    config = OrdersConfig(outbox_gather_ms=0)
    assert processing.pause_after(1, config) == 0.0
