"""The gateway over real sockets, with real Redis pub/sub and real JWT verification."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets import frames as ws_frames
from websockets.asyncio import client as ws_client
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from starkmatter.core import embedded, settings
from starkmatter.gateway import connections, server
from tests.integration.market.gateway_support import recv_json, running_gateway, sign_in

pytestmark = pytest.mark.timeout(30)


async def subscribers(redis: aioredis.Redis, channel: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count)


async def eventually_subscribed(redis: aioredis.Redis, channel: str, count: int) -> None:
    async with asyncio.timeout(10):
        while await subscribers(redis, channel) != count:  # noqa: ASYNC110 - Redis state
            await asyncio.sleep(0.02)


async def test_subscribe_sends_the_snapshot_then_updates_as_they_are_published(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    await redis.set("quote:AAPL", json.dumps({"symbol": "AAPL", "bid": "227.5"}))
    token = await sign_in(config, redis, "u1")
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": ["market:quotes:AAPL"]}))
        snapshot = await recv_json(ws)
        assert snapshot == {
            "type": "snapshot", "topic": "market:quotes:AAPL",
            "data": {"symbol": "AAPL", "bid": "227.5"},
        }  # fmt: skip
        await redis.publish("market:quotes:AAPL", json.dumps({"symbol": "AAPL", "bid": "228"}))
        update = await recv_json(ws)
        assert update["type"] == "update" and update["data"]["bid"] == "228"


async def test_first_message_authentication_then_subscription(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": ["news:all"]}))
        assert (await recv_json(ws))["code"] == "unauthenticated"
        await ws.send(json.dumps({"op": "auth", "token": token}))
        await ws.send(json.dumps({"op": "subscribe", "topics": ["news:all"]}))
        assert await recv_json(ws) == {"type": "snapshot", "topic": "news:all", "data": None}


async def test_a_bad_token_is_refused_with_an_error_and_a_close(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws,
    ):
        await ws.send(json.dumps({"op": "auth", "token": "not-a-jwt"}))
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "token_invalid"
        await ws.wait_closed()
        assert ws.close_code == 1008
        with pytest.raises(Exception, match="401"):
            async with ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token=bad"):
                pass


async def test_other_users_private_topics_are_refused_and_own_ones_allowed(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "alice")
    await redis.set("ai:owner:req-bob", "bob")
    await redis.set("ai:owner:req-alice", "alice")
    refused = ["portfolio:bob", "alerts:bob", "orders:bob", "ai:analysis:req-bob",
               "ai:analysis:req-nobody"]  # fmt: skip
    allowed = ["portfolio:alice", "alerts:alice", "orders:alice", "ai:analysis:req-alice"]
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": refused + allowed}))
        frames = [await recv_json(ws) for _ in range(len(refused) + len(allowed))]
        errors = {f["topic"]: f["code"] for f in frames if f["type"] == "error"}
        snapshots = {f["topic"] for f in frames if f["type"] == "snapshot"}
        assert errors == dict.fromkeys(refused, "forbidden")
        assert snapshots == set(allowed)
        await ws.send(json.dumps({"op": "subscribe", "topics": ["secret:stuff"]}))
        assert (await recv_json(ws))["code"] == "unknown_topic"
        await redis.publish("portfolio:bob", b'{"value": "1"}')
        await redis.publish("portfolio:alice", b'{"value": "2"}')
        update = await recv_json(ws)
        assert update["topic"] == "portfolio:alice"


async def test_malformed_client_frames_get_error_frames_and_the_connection_lives_on(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    limits = connections.Limits(max_subscriptions=2, max_message_bytes=1024)
    async with (
        running_gateway(config, limits) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        # "[" * 1000 is nested too deep for the JSON reader (RecursionError, not
        # ValueError): it once killed the connection's reader and left it open, unread.
        for bad in ("{not json", "[1,2]", '{"op": 5}', '{"op": "dance"}',
                    '{"op": "subscribe", "topics": "news:all"}', "[" * 1000):  # fmt: skip
            await ws.send(bad)
            error = await recv_json(ws)
            assert error["type"] == "error" and error["code"] == "bad_request"
        await ws.send(b"\x00binary")
        assert (await recv_json(ws))["code"] == "bad_request"
        await ws.send(json.dumps({"op": "subscribe", "topics": ["news:a", "news:b", "news:c"]}))
        frames = [await recv_json(ws) for _ in range(3)]
        assert [f["type"] for f in frames] == ["snapshot", "snapshot", "error"]
        assert frames[2]["code"] == "too_many_subscriptions"
        await ws.send(json.dumps({"op": "ping"}))
        assert (await recv_json(ws))["type"] == "heartbeat"
        await ws.send("x" * 2048)
        await ws.wait_closed()
        assert ws.close_code == 1009


async def test_redis_subscriptions_are_reference_counted_across_clients(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    topic = "market:depth:MSFT"
    async with running_gateway(config) as gateway:
        url = f"ws://127.0.0.1:{gateway.port}/ws?token={token}"
        async with ws_client.connect(url) as first, ws_client.connect(url) as second:
            for ws in (first, second):
                await ws.send(json.dumps({"op": "subscribe", "topics": [topic]}))
                await recv_json(ws)
            assert await subscribers(redis, topic) == 1
            await first.send(json.dumps({"op": "unsubscribe", "topics": [topic]}))
            await redis.publish(topic, b'{"n": 1}')
            assert (await recv_json(second))["data"] == {"n": 1}
            assert await subscribers(redis, topic) == 1
        await eventually_subscribed(redis, topic, 0)
        assert gateway.hub.redis_topics == frozenset()


async def _raw_ws(port: int, token: str, rcvbuf: int) -> tuple[Any, Any, ClientProtocol]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws?token={token}"), max_size=None)
    protocol.send_request(protocol.connect())
    writer.write(b"".join(protocol.data_to_send()))
    while protocol.state is not State.OPEN:
        data = await reader.read(4_096)
        assert data, "handshake failed"
        protocol.receive_data(data)
    protocol.events_received()
    return reader, writer, protocol


async def _read_frames(reader: Any, protocol: ClientProtocol, until: Any) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while not until(frames):
        data = await reader.read(65_536)
        assert data, "connection closed"
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, ws_frames.Frame) and event.opcode is ws_frames.Opcode.TEXT:
                frames.append(json.loads(bytes(event.data)))
    return frames


SLOW = "market:quotes:SLOW"
SLOW_LIMITS = connections.Limits(high_water_bytes=8_192, low_water_bytes=1_024, max_lag_s=60)
PUBLISHED = 400


class _SlowClient:
    """A raw WebSocket client with a small socket buffer, subscribed to ``SLOW``, that
    reads nothing while ``PUBLISHED`` big updates are published: the gateway finds it
    congested and conflates."""

    def __init__(self, reader: Any, writer: Any, protocol: ClientProtocol) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self.writer.write(b"".join(self.protocol.data_to_send()))

    async def read_until(self, done: Any) -> list[dict[str, Any]]:
        return await _read_frames(self.reader, self.protocol, done)


async def _congested(
    gateway: server.Gateway, redis: aioredis.Redis, token: str
) -> tuple[_SlowClient, connections.Client]:
    slow = _SlowClient(*await _raw_ws(gateway.port, token, 4_096))
    slow.send({"op": "subscribe", "topics": [SLOW]})
    await slow.read_until(lambda f: any(x["type"] == "snapshot" for x in f))
    [client] = gateway.clients
    for n in range(PUBLISHED):
        await redis.publish(SLOW, json.dumps({"n": n, "pad": "x" * 16_000}))
    async with asyncio.timeout(10):
        while gateway.hub.dispatched < PUBLISHED:  # noqa: ASYNC110 - fed by Redis
            await asyncio.sleep(0.01)
    assert client.congested_since is not None and client.conflated > 0
    return slow, client


async def test_a_slow_client_gets_market_data_conflated_to_the_latest_value(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    async with running_gateway(config, SLOW_LIMITS) as gateway:
        slow, _ = await _congested(gateway, redis, token)
        frames = await slow.read_until(
            lambda f: any(x.get("data", {}).get("n") == PUBLISHED - 1 for x in f)
        )
        numbers = [f["data"]["n"] for f in frames if f["type"] == "update"]
        assert numbers == sorted(numbers) and numbers[-1] == PUBLISHED - 1
        assert len(numbers) < PUBLISHED
        slow.writer.close()


async def test_an_update_held_for_a_slow_client_is_dropped_when_it_unsubscribes(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    # The latest value held back for a congested client was written out once it drained,
    # though it had unsubscribed meanwhile (and after a newer snapshot, had it subscribed
    # again).
    token = await sign_in(config, redis, "u1")
    async with running_gateway(config, SLOW_LIMITS) as gateway:
        slow, client = await _congested(gateway, redis, token)
        slow.send({"op": "unsubscribe", "topics": [SLOW]})
        async with asyncio.timeout(10):
            while SLOW in client.topics:  # noqa: ASYNC110 - handled by the gateway's task
                await asyncio.sleep(0.01)
        frames: list[dict[str, Any]] = []
        for _ in range(2):  # the second reply comes after anything the drain let out
            slow.send({"op": "ping"})
            frames += await slow.read_until(lambda f: any(x["type"] == "heartbeat" for x in f))
        numbers = [f["data"]["n"] for f in frames if f["type"] == "update"]
        assert PUBLISHED - 1 not in numbers
        slow.writer.close()


async def test_a_client_that_keeps_lagging_is_disconnected_with_a_reason(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    limits = connections.Limits(high_water_bytes=8_192, low_water_bytes=1_024, max_backlog=5)
    topic = "alerts:u1"
    async with running_gateway(config, limits) as gateway:
        reader, writer, protocol = await _raw_ws(gateway.port, token, 4_096)
        protocol.send_text(json.dumps({"op": "subscribe", "topics": [topic]}).encode())
        writer.write(b"".join(protocol.data_to_send()))
        await _read_frames(reader, protocol, lambda f: any(x["type"] == "snapshot" for x in f))
        for n in range(300):
            await redis.publish(topic, json.dumps({"n": n, "pad": "y" * 16_000}))
        closed = None
        async with asyncio.timeout(15):
            while closed is None:
                data = await reader.read(65_536)
                if not data:
                    break
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if (
                        isinstance(event, ws_frames.Frame)
                        and event.opcode is ws_frames.Opcode.CLOSE
                    ):
                        closed = ws_frames.Close.parse(event.data)
        assert closed is not None and closed.code == 1008 and closed.reason == "slow_consumer"
        writer.close()


async def test_sse_streams_the_same_snapshot_and_updates(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    await redis.set("quote:AAPL", b'{"symbol":"AAPL","bid":"1"}')
    async with running_gateway(config) as gateway:
        url = f"http://127.0.0.1:{gateway.port}/sse"
        params = {"topics": "market:quotes:AAPL,portfolio:other", "token": token}
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(url, params={"topics": "news:all"})).status_code == 401
            async with http.stream("GET", url, params=params) as response:
                assert response.headers["content-type"] == "text/event-stream"
                events: list[tuple[str, dict[str, Any]]] = []
                kind = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        events.append((kind, json.loads(line[6:])))
                        if len(events) == 2:
                            await redis.publish("market:quotes:AAPL", b'{"bid":"2"}')
                        if len(events) == 3:
                            break
        assert events[0] == ("snapshot", {"type": "snapshot", "topic": "market:quotes:AAPL",
                                          "data": {"symbol": "AAPL", "bid": "1"}})  # fmt: skip
        assert events[1][0] == "error" and events[1][1]["code"] == "forbidden"
        assert events[2][0] == "update" and events[2][1]["data"] == {"bid": "2"}


async def test_graceful_shutdown_tells_clients_to_reconnect(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await gateway.stop()
        await ws.wait_closed()
        assert ws.close_code == 1012


async def test_health_is_served_on_the_client_port_and_metrics_only_on_the_probe_listener(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    port, probes_port = embedded.free_port(), embedded.free_port()
    started = asyncio.Event()
    running = asyncio.create_task(
        server.run(config, host="127.0.0.1", port=port, probes_port=probes_port, started=started)
    )
    try:
        async with asyncio.timeout(10):
            await started.wait()
        async with httpx.AsyncClient(timeout=5) as http:
            base = f"http://127.0.0.1:{port}"
            assert (await http.get(base + "/healthz")).status_code == 200
            assert (await http.get(base + "/readyz")).status_code == 200
            assert (await http.get(base + "/metrics")).status_code == 404
            assert (await http.get(base + "/nope")).status_code == 404
            probes = f"http://127.0.0.1:{probes_port}"
            metrics = await http.get(probes + "/metrics")
            assert metrics.status_code == 200
            assert "starkmatter_gateway_connections" in metrics.text
            ready = await http.get(probes + "/readyz")
            assert ready.status_code == 200, ready.text
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def _frames_until(reader: Any, protocol: ClientProtocol, until: Any) -> list[Any]:
    """Raw frames (any opcode) until ``until(frames)``; never answers pings by itself."""
    frames: list[Any] = []
    while not until(frames):
        data = await reader.read(65_536)
        assert data, "connection closed"
        protocol.receive_data(data)
        frames.extend(e for e in protocol.events_received() if isinstance(e, ws_frames.Frame))
    return frames


BEAT_OPCODES = {ws_frames.Opcode.TEXT, ws_frames.Opcode.PING}


async def test_every_client_gets_heartbeats_and_pings_within_the_interval(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    limits = connections.Limits(heartbeat_s=0.5)
    async with running_gateway(config, limits) as gateway:
        clients = [await _raw_ws(gateway.port, token, 65_536) for _ in range(5)]
        async with asyncio.timeout(3):
            for reader, _, protocol in clients:
                frames = await _frames_until(
                    reader, protocol, lambda f: {x.opcode for x in f} >= BEAT_OPCODES
                )
                texts = [json.loads(bytes(x.data)) for x in frames if x.opcode.name == "TEXT"]
                assert texts[0]["type"] == "heartbeat" and texts[0]["ts"].endswith("Z")
        for _, writer, _ in clients:
            writer.close()


async def test_a_client_that_never_answers_pings_is_closed(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    limits = connections.Limits(heartbeat_s=0.3)
    async with running_gateway(config, limits) as gateway:
        reader, writer, protocol = await _raw_ws(gateway.port, token, 65_536)
        async with asyncio.timeout(5):
            frames = await _frames_until(
                reader, protocol, lambda f: any(x.opcode is ws_frames.Opcode.CLOSE for x in f)
            )
        pings = [x for x in frames if x.opcode is ws_frames.Opcode.PING]
        close = ws_frames.Close.parse(frames[-1].data)
        assert len(pings) >= 2 and (close.code, close.reason) == (1011, "ping timeout")
        writer.close()


async def test_a_client_congested_longer_than_the_lag_limit_is_disconnected(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    token = await sign_in(config, redis, "u1")
    limits = connections.Limits(
        high_water_bytes=8_192, low_water_bytes=1_024, max_lag_s=0.5, heartbeat_s=0.5
    )
    topic = "market:quotes:LAG"
    async with running_gateway(config, limits) as gateway:
        reader, writer, protocol = await _raw_ws(gateway.port, token, 4_096)
        protocol.send_text(json.dumps({"op": "subscribe", "topics": [topic]}).encode())
        writer.write(b"".join(protocol.data_to_send()))
        await _read_frames(reader, protocol, lambda f: any(x["type"] == "snapshot" for x in f))
        [client] = gateway.clients
        # Market data is conflated, so the backlog never overflows: only the lag limit acts.
        async with asyncio.timeout(10):
            n = 0
            while client.congested_since is None:
                await redis.publish(topic, json.dumps({"n": n, "pad": "z" * 16_000}))
                n += 1
                await asyncio.sleep(0.001)
            while client.state is connections.ConnectionState.OPEN:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        frames = await _frames_until(
            reader, protocol, lambda f: any(x.opcode is ws_frames.Opcode.CLOSE for x in f)
        )
        close = ws_frames.Close.parse(frames[-1].data)
        assert (close.code, close.reason) == (1008, "slow_consumer")
        writer.close()


async def test_a_burst_read_at_once_reaches_every_client_whole_and_in_order(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    # What the subscriber hands over after a stall: many messages of several topics in one
    # read, which the hub joins into one write per client.
    token = await sign_in(config, redis, "u1")
    both, only_b = ["market:quotes:BRSTA", "market:quotes:BRSTB"], ["market:quotes:BRSTB"]
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as first,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as second,
        httpx.AsyncClient(timeout=10) as http,
    ):
        await first.send(json.dumps({"op": "subscribe", "topics": both}))
        await second.send(json.dumps({"op": "subscribe", "topics": only_b}))
        assert len([await recv_json(first) for _ in both]) == 2
        assert (await recv_json(second))["type"] == "snapshot"
        url = f"http://127.0.0.1:{gateway.port}/sse"
        params = {"topics": ",".join(both), "token": token}
        async with http.stream("GET", url, params=params) as response:
            lines = response.aiter_lines()
            events: list[tuple[str, dict[str, Any]]] = []

            async def next_event() -> tuple[str, dict[str, Any]]:
                event_id = ""
                async for line in lines:
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: "):
                        return event_id, json.loads(line[6:])
                raise AssertionError("the event stream ended")

            while len(events) < 2:
                event = await next_event()
                assert event[1]["type"] == "snapshot"
                events.append(event)
            channels = [both[n % 3 == 0] for n in range(30)]
            payloads = [json.dumps({"n": n}).encode() for n in range(30)]
            # 20 updates of A to two clients, 10 of B to three.
            assert gateway.hub.dispatch_many(channels, payloads) == 20 * 2 + 10 * 3
            expected = [(c, {"n": n}) for n, c in enumerate(channels)]
            got_first = [await recv_json(first) for _ in expected]
            assert [(f["topic"], f["data"]) for f in got_first] == expected
            wanted_b = [(c, d) for c, d in expected if c == both[1]]
            got_second = [await recv_json(second) for _ in wanted_b]
            assert [(f["topic"], f["data"]) for f in got_second] == wanted_b
            streamed = [await next_event() for _ in expected]
            assert [(e["topic"], e["data"]) for _, e in streamed] == expected
            seqs = [int(event_id.split("-")[1]) for event_id, _ in streamed]
            assert seqs == sorted(seqs) and len(set(seqs)) == 30
