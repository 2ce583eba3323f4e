"""A local server speaking Alpaca's market-data v2 stream protocol, fed by the simulation.

For tests and demos of the ``websocket`` provider without an Alpaca account: it checks
the key and secret, answers subscriptions, and streams the simulation's trades and quotes
(and, on request, 1-minute bars) in Alpaca's message shapes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets
from websockets.asyncio import server as ws_server

from starkmatter.core import loops
from starkmatter.ingest import simulation


def _rfc3339(ts_ns: int) -> str:
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns:09d}Z"


def to_alpaca(message: dict[str, Any]) -> dict[str, Any] | None:
    ts = _rfc3339(message["ts"]) if isinstance(message.get("ts"), int) else message.get("ts")
    if message.get("type") == "trade":
        return {"T": "t", "S": message["symbol"], "i": message.get("seq"), "x": "V",
                "p": message["price"], "s": message["size"], "t": ts, "c": ["@"],
                "z": "C"}  # fmt: skip
    if message.get("type") == "quote":
        return {"T": "q", "S": message["symbol"], "bx": "V", "bp": message["bid"],
                "bs": message["bid_size"], "ax": "V", "ap": message["ask"],
                "as": message["ask_size"], "t": ts, "c": ["R"], "z": "C"}  # fmt: skip
    return None


class AlpacaServer:
    def __init__(
        self,
        sim: simulation.MarketSimulation,
        *,
        key: str,
        secret: str,
        rate: float = 200.0,
        host: str = "127.0.0.1",
        port: int = 0,
        limit: int | None = None,
        paused: bool = False,
    ) -> None:
        self.sim = sim
        self.key = key
        self.secret = secret
        self.rate = rate
        self.host = host
        self.requested_port = port
        self.limit = limit
        self.paused = paused
        self.generated = 0
        self.sent: list[dict[str, Any]] = []
        self._subscribed: dict[ws_server.ServerConnection, set[str]] = {}
        self._server: ws_server.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://{self.host}:{self._server.sockets[0].getsockname()[1]}/v2/test"

    @property
    def clients(self) -> int:
        return len(self._subscribed)

    async def __aenter__(self) -> AlpacaServer:
        self._server = await ws_server.serve(self._handle, self.host, self.requested_port,
                                             compression=None)  # fmt: skip
        self._task = asyncio.create_task(self._generate())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await loops.stopped(self._task)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop_clients(self) -> int:
        dropped = len(self._subscribed)
        for connection in list(self._subscribed):
            connection.transport.abort()
        self._subscribed.clear()
        return dropped

    async def _handle(self, connection: ws_server.ServerConnection) -> None:
        await connection.send(json.dumps([{"T": "success", "msg": "connected"}]))
        authenticated = False
        try:
            async for raw in connection:
                try:
                    request = json.loads(raw)
                except ValueError:
                    await connection.send(
                        json.dumps([{"T": "error", "code": 400, "msg": "invalid syntax"}])
                    )
                    continue
                action = request.get("action") if isinstance(request, dict) else None
                if action == "auth":
                    if authenticated:
                        await connection.send(
                            json.dumps(
                                [{"T": "error", "code": 403, "msg": "already authenticated"}]
                            )
                        )
                    elif request.get("key") == self.key and request.get("secret") == self.secret:
                        authenticated = True
                        await connection.send(
                            json.dumps([{"T": "success", "msg": "authenticated"}])
                        )
                    else:
                        await connection.send(
                            json.dumps([{"T": "error", "code": 402, "msg": "auth failed"}])
                        )
                        await connection.close()
                        return
                elif action == "subscribe":
                    if not authenticated:
                        await connection.send(
                            json.dumps([{"T": "error", "code": 401, "msg": "not authenticated"}])
                        )
                        continue
                    symbols = set(request.get("trades", [])) | set(request.get("quotes", []))
                    self._subscribed[connection] = symbols
                    await connection.send(json.dumps([{
                        "T": "subscription", "trades": sorted(set(request.get("trades", []))),
                        "quotes": sorted(set(request.get("quotes", []))),
                        "bars": request.get("bars", []),
                    }]))  # fmt: skip
                else:
                    await connection.send(
                        json.dumps([{"T": "error", "code": 400, "msg": "invalid syntax"}])
                    )
        except websockets.ConnectionClosed:
            pass
        finally:
            self._subscribed.pop(connection, None)

    async def _generate(self) -> None:
        owed = 0.0
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            owed = 0.0 if self.paused else owed + (now - last) * self.rate
            last = now
            count = int(owed)
            owed -= count
            if self.limit is not None:
                count = min(count, self.limit - self.generated)
            if count <= 0:
                continue
            self.generated += count
            messages = [
                m
                for e in self.sim.step(time.time_ns(), count)
                if e.bad is None
                and (m := to_alpaca(json.loads(e.text, parse_float=str))) is not None
            ]
            # Alpaca sends numbers; keep the simulation's decimal text as JSON numbers.
            self.sent.extend(messages)
            for connection, symbols in list(self._subscribed.items()):
                wanted = [m for m in messages if "*" in symbols or m["S"] in symbols]
                if wanted:
                    websockets.broadcast([connection], _dump_numbers(wanted))


def _dump_numbers(messages: list[dict[str, Any]]) -> str:
    """JSON with decimal-text prices written as JSON numbers, as Alpaca does."""
    numeric = {"p", "bp", "ap"}
    parts = []
    for m in messages:
        fields = ",".join(
            f'"{k}":{v}' if k in numeric else f'"{k}":{json.dumps(v)}' for k, v in m.items()
        )
        parts.append("{" + fields + "}")
    return "[" + ",".join(parts) + "]"
