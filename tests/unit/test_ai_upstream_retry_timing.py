from __future__ import annotations

import email.utils
import time

import anthropic
import httpx2

from starkmatter.ai import upstream


def _error(status: int, headers: dict[str, str]) -> anthropic.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    response = httpx2.Response(status, headers=headers, request=request)
    return anthropic.APIStatusError("x", response=response, body=None)


def test_retry_after_seconds_and_milliseconds_are_honoured() -> None:
    assert upstream.retry_after_s(_error(429, {"retry-after": "7"})) == 7
    assert upstream.retry_after_s(_error(429, {"retry-after-ms": "250"})) == 0.25
    assert upstream.retry_after_s(_error(529, {})) is None


def test_retry_after_as_an_http_date_is_the_time_until_then() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    wait = upstream.retry_after_s(_error(429, {"retry-after": when}))
    assert wait is not None and 100 < wait <= 120


def test_backoff_is_jittered_within_an_exponential_cap() -> None:
    waits = [upstream.backoff_s(attempt, 0.5, 4) for attempt in (1, 2, 3, 6) for _ in range(50)]
    assert all(0 <= w <= 4 for w in waits)
    assert max(upstream.backoff_s(1, 0.5, 4) for _ in range(50)) <= 0.5
