"""A stopping feed stops even when the stop lands just as data arrives.

A stopping feed (``worker.run_feed``) cancels its provider's task, and once its drain is done
or out of time cancels it again, then its pipeline's, each time waiting for the task to end.
A cancel that lands while a frame (or a batch) is on its way to the code waiting for it, or
while the heartbeat is written, must still end the task: one that took the data (or the
write's reply) and went on would keep the feed running, and its stop waiting, for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import websockets
from websockets.asyncio import server as ws_server

from starkmatter.ingest import pipeline
from starkmatter.ingest.providers import alpaca, base, simulated
from starkmatter.market import validation

pytestmark = pytest.mark.timeout(60)

YIELDS = 8
"""Loop iterations between the data's arrival and the cancel, each tried in turn: together
they cover every step of its way to the code that waits for it."""


class ScriptedServer:
    """A vendor's server: greets, answers the client's requests in turn, then hands the
    connection to the test, which sends it frames."""

    def __init__(self, greeting: Any, replies: list[Any]) -> None:
        self.greeting = greeting
        self.replies = replies
        self.streaming: asyncio.Queue[ws_server.ServerConnection] = asyncio.Queue()

    async def handle(self, connection: ws_server.ServerConnection) -> None:
        await connection.send(json.dumps(self.greeting))
        replies = list(self.replies)
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _request in connection:
                reply = replies.pop(0)
                if reply is not None:
                    await connection.send(json.dumps(reply))
                if not replies:
                    await self.streaming.put(connection)


Vendor = tuple[ScriptedServer, Callable[[str], base.Provider], Callable[[int], str]]
"""A vendor's scripted server, its provider (given the server's url), and its n-th frame."""


def _simulator() -> Vendor:
    def trade(seq: int) -> str:
        return json.dumps([{"type": "trade", "symbol": "AAPL", "price": "227.50", "size": "1",
                            "ts": time.time_ns(), "seq": seq}])  # fmt: skip

    server = ScriptedServer({"type": "hello", "feed": "simulator", "references": {}}, [None])
    return server, lambda url: simulated.SimulatorProvider("sim", url, symbols=["AAPL"]), trade


def _alpaca() -> Vendor:
    def trade(seq: int) -> str:
        return json.dumps([{"T": "t", "S": "AAPL", "i": seq, "p": 227.5, "s": 1,
                            "t": "2026-12-03T15:00:00Z"}])  # fmt: skip

    server = ScriptedServer(
        [{"T": "success", "msg": "connected"}],
        [[{"T": "success", "msg": "authenticated"}], [{"T": "subscription", "trades": ["AAPL"]}]],
    )
    return server, lambda url: alpaca.AlpacaProvider("alp", url, ["AAPL"], token="K:S"), trade


@contextlib.asynccontextmanager
async def serving(server: ScriptedServer) -> AsyncIterator[str]:
    async with ws_server.serve(server.handle, "127.0.0.1", 0, compression=None) as listening:
        yield f"ws://127.0.0.1:{listening.sockets[0].getsockname()[1]}/"


async def _sink(batch: list[base.Incoming]) -> None:
    return None


async def _ended(task: asyncio.Task[None]) -> None:
    """Cancelled until it ends: a task that ran on must not outlive its test."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)


async def _cancelled_after(task: asyncio.Task[None], yields: int, what: str) -> None:
    """Cancel the pipeline ``task`` ``yields`` loop iterations from now: it must end."""
    try:
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        assert task.done(), (
            f"the pipeline went on after its cancel, {yields} loop iterations after {what}"
        )
        assert task.cancelled()
    finally:
        await _ended(task)


@pytest.mark.parametrize("vendor", [_simulator, _alpaca], ids=["simulator", "alpaca"])
async def test_a_provider_cancelled_as_a_frame_arrives_stops(
    vendor: Callable[[], Vendor],
) -> None:
    server, make, frame = vendor()
    async with serving(server) as url:
        for yields in range(YIELDS):
            provider = make(url)
            task = asyncio.create_task(provider.run(_sink))
            try:
                connection = await asyncio.wait_for(server.streaming.get(), 10)
                await asyncio.wait_for(provider.connected.wait(), 10)
                await asyncio.sleep(0.05)  # the session waits for its next frame
                websockets.broadcast([connection], frame(0))
                for _ in range(yields):
                    await asyncio.sleep(0)
                task.cancel()
                # The vendor streams on, as a live one does, while the provider stops.
                for seq in range(1, 100):
                    if task.done():
                        break
                    websockets.broadcast([connection], frame(seq))
                    await asyncio.sleep(0.02)
                assert task.done(), (
                    f"the provider read on after its cancel, {yields} loop iterations after a "
                    f"frame arrived: {provider.delivered} messages delivered"
                )
                assert task.cancelled()
            finally:
                await _ended(task)


async def test_a_pipeline_cancelled_as_it_takes_a_batch_stops(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    rules = validation.Rules(symbols=frozenset({"AAPL"}), max_staleness_s=None)
    trade = {"type": "trade", "symbol": "AAPL", "price": "227.50", "size": "1"}
    for yields in range(YIELDS):
        pipe = pipeline.Pipeline(f"stop-{yields}", validation.Validator(rules), pool, redis)
        task = asyncio.create_task(pipe.run())
        await asyncio.sleep(0.05)  # the pipeline waits for its next batch
        pipe.incoming.put_nowait([base.Incoming({**trade, "ts": time.time_ns()})])
        await _cancelled_after(task, yields, "a batch arrived")


class Beating(pipeline.Pipeline):
    """Tells the test when its heartbeat has begun (bars are closed first, then it is written)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beat = asyncio.Event()

    def close_due_bars(self, now_ns: int) -> None:
        super().close_due_bars(now_ns)
        self.beat.set()


async def test_a_pipeline_cancelled_as_its_heartbeat_is_written_stops(
    pool: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    rules = validation.Rules(symbols=frozenset({"AAPL"}), max_staleness_s=None)
    config = pipeline.PipelineConfig(heartbeat_interval_s=0.05)
    for yields in range(YIELDS):
        pipe = Beating(f"beat-{yields}", validation.Validator(rules), pool, redis, config)
        task = asyncio.create_task(pipe.run())
        await asyncio.wait_for(pipe.beat.wait(), 10)
        await _cancelled_after(task, yields, "its heartbeat began")
