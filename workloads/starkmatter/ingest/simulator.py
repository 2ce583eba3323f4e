"""The market simulator served as a real WebSocket provider (``starkmatter simulate``).

Protocol (JSON text frames):

* server -> client on connect: ``{"type": "hello", "feed": "simulator", "references":
  {"AAPL": "227.5", ...}}`` — the previous closes the daily price band is centred on;
* client -> server: ``{"op": "subscribe", "symbols": ["AAPL", ...] | "*", "resume":
  {"AAPL": 41, ...} | null}`` — with ``resume``, messages after those per-symbol sequence
  numbers still in the replay buffer are sent first, then the live stream;
* server -> client: arrays of messages (trade, quote, depth; each with ``seq`` per symbol),
  a malformed message alone in its own frame, and ``{"type": "heartbeat"}`` every second.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from typing import Any

import websockets
from websockets.asyncio import server as ws_server

from starkmatter.core import loops
from starkmatter.ingest import simulation

_HEARTBEAT_S = 1.0


class SimulatorServer:
    def __init__(
        self,
        sim: simulation.MarketSimulation,
        *,
        rate: float = 200.0,
        host: str = "127.0.0.1",
        port: int = 0,
        tick_s: float = 0.01,
        limit: int | None = None,
        buffer: int = 200_000,
        paused: bool = False,
    ) -> None:
        self.sim = sim
        self.rate = rate
        self.host = host
        self.requested_port = port
        self.tick_s = tick_s
        self.limit = limit
        self.generated = 0
        self._buffer: collections.deque[simulation.Emitted] = collections.deque(maxlen=buffer)
        self._clients: dict[ws_server.ServerConnection, frozenset[str] | None] = {}
        self._server: ws_server.Server | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self.paused = paused
        """While paused, nothing is generated (heartbeats still flow)."""

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        self._server = await ws_server.serve(
            self._handle, self.host, self.requested_port, compression=None, max_size=2**16
        )
        self._loop_task = asyncio.create_task(self._generate(), name="simulator-generate")

    async def stop(self) -> None:
        if self._loop_task is not None:
            await loops.stopped(self._loop_task)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def drop_clients(self) -> int:
        """Cut every client's TCP connection without a closing handshake (a network failure)."""
        dropped = 0
        for connection in list(self._clients):
            connection.transport.abort()
            dropped += 1
        self._clients.clear()
        return dropped

    async def _handle(self, connection: ws_server.ServerConnection) -> None:
        await connection.send(
            json.dumps({"type": "hello", "feed": "simulator", "references": self.sim.references()})
        )
        try:
            async for message in connection:
                try:
                    request: Any = json.loads(message)
                except ValueError:
                    await connection.send(json.dumps({"type": "error", "message": "bad json"}))
                    continue
                if not isinstance(request, dict) or request.get("op") != "subscribe":
                    await connection.send(json.dumps({"type": "error", "message": "bad request"}))
                    continue
                symbols = request.get("symbols", "*")
                wanted = None if symbols == "*" else frozenset(map(str, symbols))
                self._replay(connection, wanted, request.get("resume") or {})
                self._clients[connection] = wanted
        except websockets.ConnectionClosed:
            pass
        finally:
            self._clients.pop(connection, None)

    def _replay(
        self,
        connection: ws_server.ServerConnection,
        wanted: frozenset[str] | None,
        resume: dict[str, int],
    ) -> None:
        texts = [
            e.text
            for e in self._buffer
            if e.symbol is not None
            and e.seq is not None
            and e.symbol in resume
            and e.seq > resume[e.symbol]
            and (wanted is None or e.symbol in wanted)
        ]
        for start in range(0, len(texts), 500):
            websockets.broadcast([connection], "[" + ",".join(texts[start : start + 500]) + "]")

    async def _generate(self) -> None:
        owed = 0.0
        last = time.monotonic()
        last_heartbeat = last
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            owed = 0.0 if self.paused else owed + (now - last) * self.rate
            last = now
            count = int(owed)
            owed -= count
            if self.limit is not None:
                count = min(count, self.limit - self.generated)
            if count > 0 and not self.paused:
                self.generated += count
                self._publish(self.sim.step(time.time_ns(), count))
            if now - last_heartbeat >= _HEARTBEAT_S:
                last_heartbeat = now
                beat = json.dumps({"type": "heartbeat", "ts": time.time_ns()})
                websockets.broadcast(list(self._clients), beat)

    def _publish(self, emitted: list[simulation.Emitted]) -> None:
        for e in emitted:
            if e.seq is not None:
                self._buffer.append(e)
        # websockets.broadcast never waits: a slow client gets a growing buffer, then is
        # dropped by its ping timeout, as a real vendor would do.
        for connection, wanted in list(self._clients.items()):
            texts = []
            for e in emitted:
                if e.bad is simulation.BadKind.MALFORMED:
                    websockets.broadcast([connection], e.text)
                elif wanted is None or e.symbol is None or e.symbol in wanted:
                    texts.append(e.text)
            if texts:
                websockets.broadcast([connection], "[" + ",".join(texts) + "]")


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    rate: float = 200.0,
    bad_share: float = 0.01,
    seed: int | None = None,
    symbols: dict[str, str] | None = None,
) -> None:
    """Run the simulator until cancelled (the ``starkmatter simulate`` command)."""
    sim = simulation.MarketSimulation(
        symbols, seed=seed if seed is not None else time.time_ns(), bad_share=bad_share
    )
    async with SimulatorServer(sim, rate=rate, host=host, port=port):
        await asyncio.Future()


def main(argv: list[str] | None = None) -> None:
    """``starkmatter simulate [--host H] [--port P] [--rate N] [--bad-share F] [--seed S]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="starkmatter simulate")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--bad-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                host=args.host,
                port=args.port,
                rate=args.rate,
                bad_share=args.bad_share,
                seed=args.seed,
            )
        )
