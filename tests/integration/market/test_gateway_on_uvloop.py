"""The gateway on the event loop ``starkmatter gateway`` runs it on (uvloop), over real
sockets with real Redis: the rest of the suite runs it on the default asyncio loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvloop
from websockets.asyncio import client as ws_client

from starkmatter.core import loops, settings
from starkmatter.gateway import connections, fanout, server
from tests.integration.market.gateway_support import recv_json, sign_in

pytestmark = pytest.mark.timeout(60)


class GatewayThread:
    """A gateway serving from its own thread, on the loop its entry point uses."""

    def __init__(self, config: settings.Settings, limits: connections.Limits) -> None:
        self.config = config
        self.limits = limits
        self.started: concurrent.futures.Future[server.Gateway] = concurrent.futures.Future()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, name="gateway-on-uvloop")

    def _main(self) -> None:
        with asyncio.Runner(loop_factory=loops.new_event_loop) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        redis = aioredis.Redis.from_url(self.config.redis_url or "")
        gateway = server.Gateway(
            fanout.Hub(redis), server.token_verifier(self.config, redis), redis=redis,
            limits=self.limits,
        )  # fmt: skip
        await gateway.start("127.0.0.1", 0)
        self.started.set_result(gateway)
        await self._stop.wait()
        await gateway.stop()
        await redis.aclose()

    def stop(self) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(20)


@pytest.fixture
def uvloop_gateway(config: settings.Settings) -> Iterator[tuple[server.Gateway, GatewayThread]]:
    limits = connections.Limits(high_water_bytes=8_192, low_water_bytes=1_024, max_lag_s=60)
    runner = GatewayThread(config, limits)
    runner.thread.start()
    gateway = runner.started.result(20)
    yield gateway, runner
    if runner.thread.is_alive():
        runner.stop()


async def test_snapshot_updates_errors_and_shutdown_on_uvloop(
    config: settings.Settings,
    redis: aioredis.Redis,
    uvloop_gateway: tuple[server.Gateway, GatewayThread],
) -> None:
    gateway, runner = uvloop_gateway
    assert isinstance(runner.loop, uvloop.Loop)
    await redis.set("quote:AAPL", b'{"bid": "1"}')
    token = await sign_in(config, redis, "u1")
    async with ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws:
        await ws.send("{not json")
        assert (await recv_json(ws))["code"] == "bad_request"
        await ws.send(json.dumps({"op": "subscribe", "topics": ["market:quotes:AAPL"]}))
        assert (await recv_json(ws))["data"] == {"bid": "1"}
        await redis.publish("market:quotes:AAPL", b'{"bid": "2"}')
        update = await recv_json(ws)
        assert (update["type"], update["data"]) == ("update", {"bid": "2"})
        await asyncio.get_running_loop().run_in_executor(None, runner.stop)
        await ws.wait_closed()
        assert ws.close_code == 1012


async def test_a_slow_client_is_conflated_on_uvloop_too(
    config: settings.Settings,
    redis: aioredis.Redis,
    uvloop_gateway: tuple[server.Gateway, GatewayThread],
) -> None:
    gateway, _ = uvloop_gateway
    token = await sign_in(config, redis, "u1")
    topic = "market:quotes:SLOW"
    # A client that subscribes and then does not read until everything is published.
    async with ws_client.connect(
        f"ws://127.0.0.1:{gateway.port}/ws?token={token}", max_queue=1, max_size=None
    ) as ws:
        await ws.send(json.dumps({"op": "subscribe", "topics": [topic]}))
        assert (await recv_json(ws))["type"] == "snapshot"
        published = 400
        for n in range(published):
            await redis.publish(topic, json.dumps({"n": n, "pad": "x" * 16_000}))
        async with asyncio.timeout(15):
            while gateway.hub.dispatched < published:  # noqa: ASYNC110 - another thread
                await asyncio.sleep(0.01)
        [client] = list(gateway.clients)
        assert client.conflated > 0
        numbers: list[Any] = []
        while not numbers or numbers[-1] != published - 1:
            frame = await recv_json(ws)
            numbers.append(frame["data"]["n"])
        assert numbers == sorted(numbers) and len(numbers) < published
