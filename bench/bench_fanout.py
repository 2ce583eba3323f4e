"""Fan-out: 1,000 WebSocket clients over 100 symbols on loopback.

One run measures, with the same clients (a separate process of lightweight clients, 10 per
symbol) and the same frames:

* the gateway's delivered frames/s (updates injected into its fan-out hub), against
* the ``websockets`` library's own ``broadcast()`` from a plain ``websockets`` server
  (no compression on either side), the baseline;
* tick-to-client latency p50/p99 through Redis pub/sub -> gateway -> client, with a
  publisher process pacing messages at half the gateway's measured maximum rate.

Targets: gateway >= 0.7 x broadcast(); p99 < 10 ms at half the maximum rate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

CLIENTS = int(os.environ.get("BENCH_FANOUT_CLIENTS", "1000"))
SYMBOLS = 100
FRAMES_PER_CLIENT = int(os.environ.get("BENCH_FANOUT_FRAMES", "300"))
LATENCY_SECONDS = float(os.environ.get("BENCH_FANOUT_LATENCY_S", "5"))


def topic_of(i: int) -> str:
    return f"market:quotes:S{i % SYMBOLS:03d}"


# ---------------------------------------------------------------- the client process


class _Client(asyncio.Protocol):
    """A minimal WebSocket client: handshake, one masked subscribe frame, count frames."""

    def __init__(self, path: str, subscribe: bytes, stats: dict[str, Any]) -> None:
        self.path = path
        self.subscribe = subscribe
        self.stats = stats
        self.buffer = b""
        self.open = False
        self.ready = asyncio.get_running_loop().create_future()
        self.frames = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            assert buffer.startswith(b"HTTP/1.1 101"), buffer[:80]
            buffer = buffer[end + 4 :]
            self.open = True
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.subscribe))
            assert self.transport is not None
            self.transport.write(bytes((0x81, 0x80 | len(payload))) + mask + payload)
        stats = self.stats
        position = 0
        size = len(buffer)
        while size - position >= 2:
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                start = position + 10
            end = start + length
            if end > size:
                break
            if buffer[position] & 0x0F == 1:
                body = buffer[start:end]
                if body.startswith(b'{"type":"update"'):
                    self.frames += 1
                    stats["frames"] += 1
                    if stats["latency"]:
                        mark = body.find(b'"t":')
                        if mark > 0:
                            stop = body.find(b",", mark)
                            sent = int(body[mark + 4 : stop if stop > 0 else body.find(b"}", mark)])
                            stats["samples"].append((time.time_ns() - sent) / 1e6)
                elif body.startswith(b'{"type":"snapshot"') and not self.ready.done():
                    self.ready.set_result(None)
            position = end
        self.buffer = buffer[position:]


async def _clients(port: int, path: str, control: Connection) -> None:
    loop = asyncio.get_running_loop()
    stats: dict[str, Any] = {"frames": 0, "latency": False, "samples": []}
    clients: list[_Client] = []
    for start in range(0, CLIENTS, 100):
        batch = []
        for i in range(start, min(CLIENTS, start + 100)):
            subscribe = b'{"op":"subscribe","topics":["' + topic_of(i).encode() + b'"]}'
            client = _Client(path, subscribe, stats)
            batch.append(loop.create_connection(lambda c=client: c, "127.0.0.1", port))  # type: ignore[misc]
            clients.append(client)
        await asyncio.gather(*batch)
    await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), 60)
    control.send("ready")
    while True:
        command = await loop.run_in_executor(None, control.recv)
        if command == "reset":
            stats["frames"] = 0
            stats["samples"] = []
            control.send("ok")
        elif command == "latency":
            stats["latency"] = True
            control.send("ok")
        elif isinstance(command, tuple) and command[0] == "wait":
            deadline = time.monotonic() + command[2]
            while stats["frames"] < command[1] and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            control.send((stats["frames"], time.perf_counter()))
        elif command == "samples":
            control.send(list(stats["samples"]))
        elif command == "stop":
            for c in clients:
                if c.transport is not None:
                    c.transport.close()
            control.send("ok")
            return


def client_process(port: int, path: str, control: Connection) -> None:
    asyncio.run(_clients(port, path, control))


# ---------------------------------------------------------------- the publisher process


def publisher_process(redis_url: str, rate: float, seconds: float) -> None:
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate) - sent
        if due <= 0:
            time.sleep(0.0005)
            continue
        pipe = client.pipeline(transaction=False)
        for _ in range(due):
            symbol = sent % SYMBOLS
            pipe.publish(topic_of(symbol), f'{{"symbol":"S{symbol:03d}","t":{time.time_ns()}}}')
            sent += 1
        pipe.execute()


# ---------------------------------------------------------------- the servers


async def _deliver_rounds(send: Any, rounds: int) -> None:
    for n in range(rounds):
        for s in range(SYMBOLS):
            send(topic_of(s), n)
        await asyncio.sleep(0)


async def measure(control: Connection, send: Any) -> float:
    control.send("reset")
    control.recv()
    expected = CLIENTS * FRAMES_PER_CLIENT
    started = time.perf_counter()
    await _deliver_rounds(send, FRAMES_PER_CLIENT)
    control.send(("wait", expected, 120))
    # The clients' clock and ours are the same perf_counter only within a process: the
    # end time is taken here, when the answer arrives (a small, conservative overhead).
    received, _ = await asyncio.get_running_loop().run_in_executor(None, control.recv)
    elapsed = time.perf_counter() - started
    assert received >= expected, (received, expected)
    return float(received) / elapsed


def _payload(topic: str, n: int) -> bytes:
    return b'{"symbol":"' + topic[14:].encode() + b'","bid":"101.25","ask":"101.27","n":%d}' % n


async def run_baseline() -> float:
    import json

    import websockets
    from websockets.asyncio import server as ws_server

    subscribers: dict[str, list[Any]] = {}

    async def handler(connection: Any) -> None:
        request = json.loads(await connection.recv())
        topic = request["topics"][0]
        subscribers.setdefault(topic, []).append(connection)
        await connection.send(
            json.dumps({"type": "snapshot", "topic": topic, "data": None}, separators=(",", ":"))
        )
        await connection.wait_closed()

    def send(topic: str, n: int) -> None:
        body = (
            b'{"type":"update","topic":"'
            + topic.encode()
            + b'","data":'
            + _payload(topic, n)
            + b"}"
        )
        websockets.broadcast(subscribers.get(topic, ()), body, text=True)

    async with ws_server.serve(handler, "127.0.0.1", 0, compression=None, backlog=2048,
                               max_queue=None) as server:  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.Process(target=client_process, args=(port, "/", child))
        process.start()
        await asyncio.get_running_loop().run_in_executor(None, parent.recv)
        try:
            return await measure(parent, send)
        finally:
            parent.send("stop")
            parent.recv()
            process.join(30)


async def run_gateway(redis_url: str) -> tuple[float, dict[float, tuple[list[float], float]]]:
    import redis.asyncio as aioredis

    from starkmatter.core.auth import tokens
    from starkmatter.gateway import fanout, server

    async def authenticate(token: str) -> tokens.Principal:
        return tokens.Principal(user_id="bench", roles=frozenset({"trader"}),
                                session_id="s", token_id=token)  # fmt: skip

    redis = aioredis.Redis.from_url(redis_url)
    hub = fanout.Hub(redis)
    gateway = server.Gateway(hub, authenticate, redis=redis)
    await gateway.start("127.0.0.1", 0)
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(
        target=client_process, args=(gateway.port, "/ws?token=bench", child)
    )
    process.start()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, parent.recv)

        def send(topic: str, n: int) -> None:
            hub.dispatch(topic, _payload(topic, n))

        rate = await measure(parent, send)
        # Latency through Redis at half the maximum message rate (the target), and at a
        # tenth of it (the floor when nothing queues).
        latencies: dict[float, tuple[list[float], float]] = {}
        parent.send("latency")
        parent.recv()
        for fraction in (0.5, 0.1):
            message_rate = rate / (CLIENTS / SYMBOLS) * fraction
            parent.send("reset")
            parent.recv()
            publisher = multiprocessing.Process(
                target=publisher_process, args=(redis_url, message_rate, LATENCY_SECONDS)
            )
            publisher.start()
            await loop.run_in_executor(None, publisher.join)
            await asyncio.sleep(0.5)
            parent.send("samples")
            latencies[fraction] = (await loop.run_in_executor(None, parent.recv), message_rate)
        return rate, latencies
    finally:
        parent.send("stop")
        parent.recv()
        process.join(30)
        await gateway.stop()
        await redis.aclose()


async def main() -> None:
    from starkmatter.core import embedded

    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        rd = embedded.EmbeddedRedis(Path(tmp) / "redis", durable=False).start()
        try:
            baseline = common.median([await run_baseline() for _ in range(2)])
            results = [await run_gateway(rd.url) for _ in range(2)]
            gateway_rate = common.median([r[0] for r in results])
            latencies = results[-1][1]
        finally:
            rd.stop()
    total = CLIENTS * FRAMES_PER_CLIENT
    common.report(
        f"fan-out: {CLIENTS} clients, {SYMBOLS} symbols, {total} frames per run, median of 2",
        [
            ("websockets broadcast()", baseline, "frames/s"),
            ("gateway fan-out", gateway_rate, "frames/s"),
        ],
        baseline="websockets broadcast()",
    )
    common.ratio("gateway / broadcast()", gateway_rate, baseline, target=">= 0.7")
    for fraction, (samples, message_rate) in latencies.items():
        if not samples:
            print(f"  no latency samples received at {fraction} of the maximum")
            continue
        print(
            f"  tick-to-client latency via Redis at {fraction:.1f} x max = {message_rate:.0f} "
            f"msg/s ({message_rate * CLIENTS / SYMBOLS:.0f} frames/s): "
            f"p50 {common.percentile(samples, 50):.2f} ms, "
            f"p99 {common.percentile(samples, 99):.2f} ms over {len(samples)} frames"
            + ("   target p99 < 10 ms" if fraction == 0.5 else "")
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
