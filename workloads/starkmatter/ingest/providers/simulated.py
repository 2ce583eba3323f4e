"""Client of the built-in simulator's WebSocket protocol (see :mod:`..simulator`)."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.asyncio import client as ws_client

from starkmatter.ingest.providers import base


class SimulatorProvider(base.Provider):
    def __init__(
        self, feed: str, url: str, *, symbols: list[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(feed, **kwargs)
        self.url = url
        self.symbols = symbols

    async def session(self, sink: base.Sink) -> None:
        async with ws_client.connect(
            self.url, compression=None, ping_interval=5, ping_timeout=10, max_size=2**24
        ) as ws:
            hello = json.loads(await self.receive(ws))
            if not isinstance(hello, dict) or hello.get("type") != "hello":
                raise base.ProviderError("simulator did not say hello")
            now = time.time_ns()
            await sink(
                [
                    base.Incoming(
                        {"type": "reference", "symbol": symbol, "price": price},
                        received_ns=now,
                    )
                    for symbol, price in (hello.get("references") or {}).items()
                ]
            )
            resume = dict(self.sequences.last) or None
            await ws.send(
                json.dumps({"op": "subscribe", "symbols": self.symbols or "*", "resume": resume})
            )
            self.mark_connected()
            while True:
                frame = await self.receive(ws)
                batch = self.decode(frame)
                if batch:
                    self.delivered += len(batch)
                    await sink(batch)

    def decode(self, frame: str | bytes) -> list[base.Incoming]:
        now = time.time_ns()
        try:
            payload = json.loads(frame, parse_float=str)
        except ValueError as exc:
            text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
            return [base.Incoming(None, text, f"invalid JSON: {exc}", now)]
        items = payload if isinstance(payload, list) else [payload]
        out = []
        track = self.track
        for item in items:
            if type(item) is dict:
                if item.get("type") == "heartbeat":
                    continue
                track(item.get("symbol"), item.get("seq"))
                out.append(base.Incoming(item, None, "", now))
            else:
                out.append(base.Incoming(None, json.dumps(item), "message is not an object", now))
        return out
