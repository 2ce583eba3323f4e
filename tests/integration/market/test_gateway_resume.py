"""Resuming streams over real sockets: SSE ``Last-Event-ID``, and Redis dropping the gateway."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import prometheus_client
import pytest
import redis.asyncio as aioredis
from websockets.asyncio import client as ws_client

from starkmatter.core import embedded, settings
from starkmatter.gateway import server
from tests.integration.market.gateway_support import (
    SseStream,
    kill_subscriber,
    recv_data,
    recv_json,
    running_gateway,
    sign_in,
)

pytestmark = pytest.mark.timeout(60)


def counted(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_sse_reconnect_with_last_event_id_replays_the_updates_it_missed(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    topic = "alerts:u1"
    async with running_gateway(config) as gateway:
        url = f"http://127.0.0.1:{gateway.port}/sse"
        params = {"topics": topic, "token": token}
        # A WebSocket client holds the topic throughout, so this gateway keeps its history.
        async with (
            ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as holder,
            httpx.AsyncClient(timeout=10) as http,
        ):
            await holder.send(json.dumps({"op": "subscribe", "topics": [topic]}))
            assert (await recv_json(holder))["type"] == "snapshot"
            async with http.stream("GET", url, params=params) as response:
                stream = SseStream(response)
                snapshot = await stream.next()
                assert snapshot.kind == "snapshot" and snapshot.id is not None
                assert stream.retry_ms == 1_000
                await redis.publish(topic, b'{"n": 1}')
                first = await stream.next()
                assert first.kind == "update" and first.data["data"] == {"n": 1}
                assert first.id is not None and first.id != snapshot.id
            for n in (2, 3):
                await redis.publish(topic, json.dumps({"n": n}))
            # The gateway has dispatched both while the SSE client was away.
            for n in (1, 2, 3):
                assert (await recv_json(holder))["data"] == {"n": n}
            headers = {"Last-Event-ID": first.id}
            replays = counted("starkmatter_gateway_sse_resumes_total", outcome="replay")
            async with http.stream("GET", url, params=params, headers=headers) as response:
                stream = SseStream(response)
                replayed = [await stream.next(), await stream.next()]
                assert counted("starkmatter_gateway_sse_resumes_total", outcome="replay") == (
                    replays + 1
                )
                assert [(e.kind, e.data["data"]) for e in replayed] == [
                    ("update", {"n": 2}),
                    ("update", {"n": 3}),
                ]
                await redis.publish(topic, b'{"n": 4}')
                live = await stream.next()
                assert live.kind == "update" and live.data["data"] == {"n": 4}
                # A replay names the position the client came with (cut off during it, the
                # client gets it again); the live update after it, a later one.
                assert [e.id for e in replayed] == [first.id, first.id]
                ids = [first.id, *(e.id for e in replayed), live.id]
                sequence = [int(str(i).split("-")[1]) for i in ids]
                assert sequence == sorted(sequence) and sequence[-1] > sequence[0]


async def test_sse_resume_gets_a_fresh_snapshot_when_the_missed_updates_are_not_kept(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    topic = "market:quotes:AAPL"
    await redis.set("quote:AAPL", b'{"bid": "1"}')
    async with running_gateway(config) as gateway, httpx.AsyncClient(timeout=10) as http:
        url = f"http://127.0.0.1:{gateway.port}/sse"
        params = {"topics": topic, "token": token}
        async with http.stream("GET", url, params=params) as response:
            stream = SseStream(response)
            snapshot = await stream.next()
            assert snapshot.kind == "snapshot" and snapshot.data["data"] == {"bid": "1"}
        # Nobody held the topic meanwhile: the gateway dropped it, and its history.
        await redis.set("quote:AAPL", b'{"bid": "2"}')
        snapshots = counted("starkmatter_gateway_sse_resumes_total", outcome="snapshot")
        for last_event_id in (str(snapshot.id), "another-gateway-7", "garbage"):
            headers = {"Last-Event-ID": last_event_id}
            async with http.stream("GET", url, params=params, headers=headers) as response:
                stream = SseStream(response)
                fresh = await stream.next()
                assert fresh.kind == "snapshot" and fresh.data["data"] == {"bid": "2"}
                await redis.publish(topic, b'{"bid": "3"}')
                update = await stream.next()
                assert update.kind == "update" and update.data["data"] == {"bid": "3"}
        resumed = counted("starkmatter_gateway_sse_resumes_total", outcome="snapshot")
        assert resumed == snapshots + 3


async def _wait_for_reconnects(gateway: server.Gateway, count: int) -> None:
    hub = gateway.hub
    async with asyncio.timeout(20):
        while hub.reconnects < count or not hub.ready:  # noqa: ASYNC110 - set by the subscriber
            await asyncio.sleep(0.02)


async def test_the_gateway_resubscribes_when_redis_kills_its_subscriber_connection(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    await redis.set("quote:AAPL", b'{"bid": "1"}')
    topics = ["market:quotes:AAPL", "alerts:u1"]
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": topics}))
        assert {(await recv_json(ws))["topic"] for _ in topics} == set(topics)
        await redis.set("quote:AAPL", b'{"bid": "2"}')  # changed while no update flows
        reconnects = counted("starkmatter_gateway_redis_reconnects_total")
        assert await kill_subscriber(redis, gateway) == 1
        await _wait_for_reconnects(gateway, 1)
        fresh = [await recv_json(ws) for _ in topics]
        assert counted("starkmatter_gateway_redis_reconnects_total") == reconnects + 1
        assert {f["topic"]: (f["type"], f["data"]) for f in fresh} == {
            "market:quotes:AAPL": ("snapshot", {"bid": "2"}),
            "alerts:u1": ("snapshot", None),
        }
        for topic in topics:
            [(_, holders)] = await redis.pubsub_numsub(topic)
            assert holders == 1
        await redis.publish("alerts:u1", b'{"alert": "fired"}')
        await redis.publish("market:quotes:AAPL", b'{"bid": "3"}')
        updates = [await recv_json(ws) for _ in topics]
        assert [(u["type"], u["data"]) for u in updates] == [
            ("update", {"alert": "fired"}),
            ("update", {"bid": "3"}),
        ]


async def test_the_gateway_reconnects_with_backoff_when_redis_restarts(
    config: settings.Settings, tmp_path: Path
) -> None:
    # Durable, as a production Redis is: the session outlives the restart (one gone after
    # it would rightly end the connection as revoked, racing this test's steps).
    backend = embedded.EmbeddedRedis(tmp_path / "redis", durable=True).start()
    own = aioredis.Redis.from_url(backend.url)
    try:
        token = await sign_in(config, own, "u1")
        await own.set("quote:MSFT", b'{"bid": "1"}')
        async with (
            running_gateway(config, redis_url=backend.url) as gateway,
            ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
            httpx.AsyncClient(timeout=5) as http,
        ):
            await ws.send(json.dumps({"op": "subscribe", "topics": ["market:quotes:MSFT"]}))
            assert (await recv_data(ws))["data"] == {"bid": "1"}
            backend.stop()
            async with asyncio.timeout(10):
                while gateway.hub.ready:  # noqa: ASYNC110 - set by the subscriber
                    await asyncio.sleep(0.02)
            ready = await http.get(f"http://127.0.0.1:{gateway.port}/readyz")
            assert ready.status_code == 503
            # Subscribing meanwhile fails with an error frame, and leaves nothing behind.
            await ws.send(json.dumps({"op": "subscribe", "topics": ["market:quotes:IBM"]}))
            error = await recv_data(ws)
            assert (error["type"], error["code"]) == ("error", "unavailable")
            assert "market:quotes:IBM" not in gateway.hub.subscribers
            await asyncio.sleep(1.0)  # a few failed attempts, backing off
            backend.start()  # same port, same data
            await own.aclose()
            own = aioredis.Redis.from_url(backend.url)
            await own.set("quote:MSFT", b'{"bid": "2"}')
            await _wait_for_reconnects(gateway, 1)
            snapshot = await recv_data(ws)
            assert (snapshot["type"], snapshot["data"]) == ("snapshot", {"bid": "2"})
            await own.publish("market:quotes:MSFT", b'{"bid": "3"}')
            update = await recv_data(ws)
            assert (update["type"], update["data"]) == ("update", {"bid": "3"})
            ready = await http.get(f"http://127.0.0.1:{gateway.port}/readyz")
            assert ready.status_code == 200
            # The subscription that failed during the outage works when retried.
            await ws.send(json.dumps({"op": "subscribe", "topics": ["market:quotes:IBM"]}))
            retried = await recv_data(ws)
            assert (retried["type"], retried["topic"]) == ("snapshot", "market:quotes:IBM")
    finally:
        await own.aclose()  # also when failing: a client left open warns in the next test
        backend.stop()


async def test_graceful_shutdown_tells_sse_clients_to_reconnect(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    async with running_gateway(config) as gateway, httpx.AsyncClient(timeout=10) as http:
        url = f"http://127.0.0.1:{gateway.port}/sse"
        params = {"topics": "news:all", "token": token}
        async with http.stream("GET", url, params=params) as response:
            stream = SseStream(response)
            assert (await stream.next()).kind == "snapshot"
            stopping = asyncio.ensure_future(gateway.stop())
            goodbye = await stream.next()
            assert goodbye.kind == "error" and goodbye.data["code"] == "restarting"
            assert await stream.rest() == []
            await stopping
