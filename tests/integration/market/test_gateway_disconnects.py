"""A client that goes away while the gateway is still setting it up leaves nothing behind:
no client object, no topic, no Redis subscription (over real sockets and real Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio import client as ws_client

from starkmatter.core import settings
from starkmatter.gateway import server
from tests.integration.market.gateway_support import recv_json, running_gateway, sign_in

pytestmark = pytest.mark.timeout(30)

TOPICS = [f"market:quotes:GONE{i}" for i in range(5)]


def _slowed(call: Callable[..., Awaitable[Any]], seconds: float) -> Callable[..., Awaitable[Any]]:
    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(seconds)
        return await call(*args, **kwargs)

    return slow


async def _nothing_left(gateway: server.Gateway, redis: aioredis.Redis) -> None:
    await asyncio.sleep(0.6)  # past every slowed step
    assert gateway.clients == set()
    assert gateway.hub.subscribers == {}
    assert gateway.hub.redis_topics == frozenset()
    counts = await redis.pubsub_numsub(*TOPICS)
    assert [count for _, count in counts] == [0] * len(TOPICS)


async def test_an_sse_client_gone_while_its_token_is_checked_leaves_nothing(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    async with running_gateway(config) as gateway:
        gateway.authenticate = _slowed(gateway.authenticate, 0.3)
        _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            f"GET /sse?topics={','.join(TOPICS)} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()
        await _nothing_left(gateway, redis)


async def test_a_websocket_gone_halfway_through_a_subscription_leaves_nothing(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    async with running_gateway(config) as gateway:
        hub: Any = gateway.hub
        hub._read_snapshot = _slowed(hub._read_snapshot, 0.1)
        async with ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws:
            await ws.send(json.dumps({"op": "subscribe", "topics": TOPICS}))
            assert (await recv_json(ws))["type"] == "snapshot"  # the first of five
        await _nothing_left(gateway, redis)


async def test_a_client_sending_faster_than_it_is_served_is_slowed_by_tcp_not_buffered(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    async with running_gateway(config) as gateway:
        served: Any = gateway
        served.handle = _slowed(gateway.handle, 0.005)
        async with ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws:
            for _ in range(300):
                await ws.send(json.dumps({"op": "ping"}))
            await asyncio.sleep(0.2)
            assert len(gateway.sockets) == 1
            connection: Any = next(iter(gateway.sockets))
            assert connection.reading_paused
            replies = [await recv_json(ws) for _ in range(300)]
            assert {reply["type"] for reply in replies} == {"heartbeat"}
            assert not connection.reading_paused
            assert connection.inbox.qsize() == 0
