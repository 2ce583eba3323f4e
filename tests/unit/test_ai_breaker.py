from __future__ import annotations

from starkmatter.ai import breaker


def _state(b: breaker.CircuitBreaker) -> breaker.State:
    return b.state


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_consecutive_failures_only() -> None:
    b = breaker.CircuitBreaker(3, 10, Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert _state(b) is breaker.State.CLOSED and b.allow()
    b.record_failure()
    assert _state(b) is breaker.State.OPEN and not b.allow()


def test_half_open_lets_exactly_one_trial_through_after_the_reset_time() -> None:
    clock = Clock()
    b = breaker.CircuitBreaker(1, 10, clock)
    b.record_failure()
    clock.now = 9.9
    assert not b.allow() and b.retry_in() > 0
    clock.now = 10.0
    assert _state(b) is breaker.State.HALF_OPEN
    assert b.allow()
    assert not b.allow()


def test_successful_trial_closes_and_failed_trial_reopens() -> None:
    clock = Clock()
    b = breaker.CircuitBreaker(1, 10, clock)
    b.record_failure()
    clock.now = 10
    assert b.allow()
    b.record_failure()
    assert _state(b) is breaker.State.OPEN
    clock.now = 20
    assert b.allow()
    b.record_success()
    assert _state(b) is breaker.State.CLOSED and b.allow() and b.allow()
