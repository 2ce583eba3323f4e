"""Quote reads that arrive together share one MGET (real Redis), and each order still gets
its own symbol's quote as stored at that moment."""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from starkmatter.orders import quoting

pytestmark = pytest.mark.timeout(30)


class CountingRedis(aioredis.Redis):
    """The real client, counting the commands it sends (the server's own statistics would
    count every other client of the test server too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: collections.Counter[str] = collections.Counter()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent[str(args[0]).upper()] += 1
        return await super().execute_command(*args, **options)


@pytest.fixture
async def counting(redis_url: str) -> AsyncIterator[CountingRedis]:
    client = CountingRedis.from_url(redis_url)
    assert isinstance(client, CountingRedis)
    yield client
    await client.aclose()


def _symbols(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"Q{tag}{i}" for i in range(n)]


async def test_concurrent_reads_get_each_symbols_quote_in_fewer_round_trips(
    redis: aioredis.Redis, counting: CountingRedis
) -> None:
    symbols = _symbols(5)
    for i, symbol in enumerate(symbols[:4]):
        await redis.set(f"quote:{symbol}", f'{{"symbol": "{symbol}", "bid": "{i}"}}')

    asked = [symbols[i % 5] for i in range(60)]
    answers = await asyncio.gather(*(quoting.of(counting).get(s) for s in asked))

    for symbol, answer in zip(asked, answers, strict=True):
        if symbol == symbols[4]:
            assert answer is None  # no quote stored
        else:
            assert answer is not None
            assert symbol.encode() in answer
    assert 1 <= counting.sent["MGET"] < len(asked) / 5
    assert set(counting.sent) == {"MGET"}


async def test_a_read_after_a_quote_changed_sees_the_new_quote(redis: aioredis.Redis) -> None:
    (symbol,) = _symbols(1)
    await redis.set(f"quote:{symbol}", b"old")
    assert await quoting.of(redis).get(symbol) == b"old"
    await redis.set(f"quote:{symbol}", b"new")
    assert await quoting.of(redis).get(symbol) == b"new"


async def test_every_waiting_read_gets_the_error_when_redis_fails() -> None:
    # No retries: redis-py's default backs off and reconnects for seconds, which on a busy
    # machine outlasted the read's own timeout (a TimeoutError, not the refusal).
    broken = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    try:
        results = await asyncio.gather(
            *(quoting.of(broken).get(s) for s in _symbols(3)), return_exceptions=True
        )
    finally:
        await broken.aclose()
    assert len(results) == 3
    assert all(isinstance(r, aioredis.ConnectionError) for r in results)
