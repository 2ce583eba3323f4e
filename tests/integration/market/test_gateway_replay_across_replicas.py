"""SSE ``Last-Event-ID`` across replicas: two gateways, one Redis, real sockets.

A client reads from one gateway, is cut off, and reconnects to the other, as it would
behind a load balancer.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import prometheus_client
import pytest
import redis.asyncio as aioredis
from websockets.asyncio import client as ws_client

from starkmatter.core import replaying, settings
from starkmatter.gateway import fanout, server
from tests.integration.market.gateway_support import (
    SseEvent,
    SseStream,
    kill_subscriber,
    recv_json,
    running_gateway,
    sign_in,
)

pytestmark = pytest.mark.timeout(60)


def replays() -> float:
    name = "starkmatter_gateway_sse_resumes_total"
    return prometheus_client.REGISTRY.get_sample_value(name, {"outcome": "replay"}) or 0.0


async def first_update_then_cut(
    http: httpx.AsyncClient, gateway: server.Gateway, params: dict[str, str], topic: str
) -> SseEvent:
    """Read the snapshot and one update from ``gateway``, then disconnect."""
    url = f"http://127.0.0.1:{gateway.port}/sse"
    async with http.stream("GET", url, params=params) as response:
        stream = SseStream(response)
        assert (await stream.next()).kind == "snapshot"
        await replaying.publish(gateway.redis, topic, b'{"n": 1}')
        update = await stream.next()
        assert update.kind == "update" and update.data["data"] == {"n": 1}
        assert update.id is not None and fanout.parse_clock(update.id) is not None
        return update


async def test_sse_resume_on_another_gateway_replays_the_updates_it_missed(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    topic = "alerts:u1"
    params = {"topics": topic, "token": token}
    async with (
        running_gateway(config) as a,
        running_gateway(config) as b,
        httpx.AsyncClient(timeout=10) as http,
    ):
        assert a.hub.epoch != b.hub.epoch
        first = await first_update_then_cut(http, a, params, topic)
        # Published while the client is away and no gateway holds the topic at all.
        for n in (2, 3):
            await replaying.publish(redis, topic, json.dumps({"n": n}))
        before = replays()
        url = f"http://127.0.0.1:{b.port}/sse"
        headers = {"Last-Event-ID": str(first.id)}
        async with http.stream("GET", url, params=params, headers=headers) as response:
            stream = SseStream(response)
            replayed = [await stream.next(), await stream.next()]
            assert [(e.kind, e.data["data"]) for e in replayed] == [
                ("update", {"n": 2}),
                ("update", {"n": 3}),
            ]
            assert replays() == before + 1
            await replaying.publish(redis, topic, b'{"n": 4}')
            live = await stream.next()
            assert (live.kind, live.data["data"]) == ("update", {"n": 4})
        # The replay names the position the client came with (cut off during it, the client
        # gets it again); the live update after it, a later one.
        clocks = [fanout.parse_clock(str(e.id)) or 0 for e in (first, *replayed, live)]
        assert clocks[:3] == [clocks[0]] * 3 and clocks[3] > clocks[0] > 0


async def test_updates_arriving_live_during_a_replay_are_sent_once(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u2")
    topic = "alerts:u2"
    params = {"topics": topic, "token": token}
    async with (
        running_gateway(config) as a,
        running_gateway(config) as b,
        httpx.AsyncClient(timeout=10) as http,
        # Another client keeps the topic live on the second gateway throughout.
        ws_client.connect(f"ws://127.0.0.1:{b.port}/ws?token={token}") as holder,
    ):
        await holder.send(json.dumps({"op": "subscribe", "topics": [topic]}))
        assert (await recv_json(holder))["type"] == "snapshot"
        first = await first_update_then_cut(http, a, params, topic)
        assert (await recv_json(holder))["data"] == {"n": 1}
        await replaying.publish(redis, topic, b'{"n": 2}')
        assert (await recv_json(holder))["data"] == {"n": 2}
        # Hold the replay back (its Redis read waits for the gateway's read permits) while
        # update 3 arrives live: it is then both in the stream and held for the client.
        reads = b.hub._reads
        for _ in range(16):
            await reads.acquire()
        url = f"http://127.0.0.1:{b.port}/sse"
        headers = {"Last-Event-ID": str(first.id)}
        async with http.stream("GET", url, params=params, headers=headers) as response:
            async with asyncio.timeout(10):
                while len(b.hub.subscribers.get(topic, ())) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await replaying.publish(redis, topic, b'{"n": 3}')
            assert (await recv_json(holder))["data"] == {"n": 3}
            for _ in range(16):
                reads.release()
            stream = SseStream(response)
            replayed = [await stream.next() for _ in range(2)]
            assert [(e.kind, e.data["data"]) for e in replayed] == [
                ("update", {"n": 2}),
                ("update", {"n": 3}),
            ]
            # The next event is the next update, not update 3 a second time.
            await replaying.publish(redis, topic, b'{"n": 4}')
            live = await stream.next()
            assert (live.kind, live.data["data"]) == ("update", {"n": 4})


async def test_sse_resume_on_another_gateway_gets_a_snapshot_when_replay_cannot_be_exact(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u3")
    await redis.set("snapshot:portfolio:u3", b'{"value": "1"}')
    async with (
        running_gateway(config) as a,
        running_gateway(config) as b,
        httpx.AsyncClient(timeout=10) as http,
    ):
        first = await first_update_then_cut(
            http, a, {"topics": "alerts:u3", "token": token}, "alerts:u3"
        )
        clock = fanout.parse_clock(str(first.id))
        assert clock is not None
        url = f"http://127.0.0.1:{b.port}/sse"
        cases = [
            # Published with a plain PUBLISH: not in any stream, a replay could skip some.
            ("portfolio:u3", str(first.id)),
            # Older than the replay window: trimmed entries could be missing.
            ("alerts:u3", f"ab12cd34-1-{clock - replaying.WINDOW_US - 1}"),
            # A number this Redis never issued (another data set).
            ("alerts:u3", f"ab12cd34-1-{clock + 10**12}"),
        ]
        for topic, last_event_id in cases:
            params = {"topics": topic, "token": token}
            headers = {"Last-Event-ID": last_event_id}
            async with http.stream("GET", url, params=params, headers=headers) as response:
                stream = SseStream(response)
                fresh = await stream.next()
                assert fresh.kind == "snapshot", (topic, last_event_id)
                if topic == "portfolio:u3":
                    assert fresh.data["data"] == {"value": "1"}


async def test_a_replay_starts_only_once_redis_has_confirmed_the_live_subscription(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    # What makes the replay and the live updates meet without a gap: the subscriber says
    # a channel is live only when Redis has confirmed it, even across a reconnect.
    async with running_gateway(config) as gateway:
        subscriber = gateway.hub._subscriber
        subscriber.subscribe("alerts:u5")
        await subscriber.subscribed("alerts:u5")
        assert await kill_subscriber(redis, gateway) == 1
        subscriber.subscribe("alerts:u4")
        async with asyncio.timeout(10):
            await subscriber.subscribed("alerts:u4")
        assert b"alerts:u4" in subscriber.live
        [(_, holders)] = await redis.pubsub_numsub("alerts:u4")
        assert holders == 1


async def test_an_sse_stream_sends_no_update_before_every_topic_has_its_snapshot(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    # Otherwise a client cut off after an update of its first topic would resume every
    # topic from there, past what its other topics had not delivered yet.
    token = await sign_in(config, redis, "u6")
    first, second = "alerts:u6", "news:hold-u6"
    async with running_gateway(config) as gateway, httpx.AsyncClient(timeout=10) as http:
        reads = gateway.hub._reads
        for _ in range(16):
            await reads.acquire()
        url = f"http://127.0.0.1:{gateway.port}/sse"
        params = {"topics": f"{first},{second}", "token": token}
        async with http.stream("GET", url, params=params) as response:
            async with asyncio.timeout(10):
                while first not in gateway.hub.subscribers:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            dispatched = gateway.hub.dispatched
            await redis.publish(first, b'{"n": 1}')
            async with asyncio.timeout(10):
                while gateway.hub.dispatched == dispatched:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            for _ in range(16):
                reads.release()
            stream = SseStream(response)
            events = [await stream.next() for _ in range(3)]
            assert [(e.kind, e.data["topic"]) for e in events] == [
                ("snapshot", first),
                ("snapshot", second),
                ("update", first),
            ]
            assert events[0].id == events[1].id
            seqs = [int(str(e.id).split("-")[1]) for e in events]
            assert seqs[2] > seqs[0]


async def test_once_set_up_an_sse_stream_moves_the_last_event_id_to_the_present(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    # Replayed frames name the position the client came with; an id-only event (no data,
    # so EventSource fires nothing) then tells it that it has everything up to now.
    token = await sign_in(config, redis, "u7")
    async with running_gateway(config) as gateway, httpx.AsyncClient(timeout=10) as http:
        url = f"http://127.0.0.1:{gateway.port}/sse"
        async with http.stream("GET", url, params={"topics": "alerts:u7", "token": token}) as r:
            blocks: list[list[str]] = [[]]
            async with asyncio.timeout(10):
                async for line in r.aiter_lines():
                    if line:
                        blocks[-1].append(line)
                    elif blocks[-1]:
                        if len(blocks) == 3:
                            break
                        blocks.append([])
        retry, snapshot, marker = blocks
        assert retry == ["retry: 1000"]
        assert snapshot[0].startswith("id: ") and snapshot[1] == "event: snapshot"
        assert marker == [f"id: {gateway.hub.event_id()}"]
