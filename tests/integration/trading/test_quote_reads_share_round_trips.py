"""Quote reads that arrive together share one MGET (real Redis), and each order still gets
its own symbol's quote as stored at that moment."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from starkmatter.orders import quoting

pytestmark = pytest.mark.timeout(30)


async def _calls(redis: aioredis.Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _symbols(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"Q{tag}{i}" for i in range(n)]


async def test_concurrent_reads_get_each_symbols_quote_in_fewer_round_trips(
    redis: aioredis.Redis,
) -> None:
    symbols = _symbols(5)
    for i, symbol in enumerate(symbols[:4]):
        await redis.set(f"quote:{symbol}", f'{{"symbol": "{symbol}", "bid": "{i}"}}')
    mgets, gets = await _calls(redis, "mget"), await _calls(redis, "get")

    asked = [symbols[i % 5] for i in range(60)]
    answers = await asyncio.gather(*(quoting.of(redis).get(s) for s in asked))

    for symbol, answer in zip(asked, answers, strict=True):
        if symbol == symbols[4]:
            assert answer is None  # no quote stored
        else:
            assert answer is not None
            assert symbol.encode() in answer
    round_trips = await _calls(redis, "mget") - mgets
    assert 1 <= round_trips < len(asked) / 5
    assert await _calls(redis, "get") == gets


async def test_a_read_after_a_quote_changed_sees_the_new_quote(redis: aioredis.Redis) -> None:
    (symbol,) = _symbols(1)
    await redis.set(f"quote:{symbol}", b"old")
    assert await quoting.of(redis).get(symbol) == b"old"
    await redis.set(f"quote:{symbol}", b"new")
    assert await quoting.of(redis).get(symbol) == b"new"


async def test_every_waiting_read_gets_the_error_when_redis_fails() -> None:
    broken = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        results = await asyncio.gather(
            *(quoting.of(broken).get(s) for s in _symbols(3)), return_exceptions=True
        )
    finally:
        await broken.aclose()
    assert len(results) == 3
    assert all(isinstance(r, aioredis.ConnectionError) for r in results)
