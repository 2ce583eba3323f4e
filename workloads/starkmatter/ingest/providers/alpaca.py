"""Alpaca market-data v2 streaming wire format (``wss://stream.data.alpaca.markets/v2/...``).

Session: the server greets with ``[{"T":"success","msg":"connected"}]``; the client sends
``{"action":"auth","key":...,"secret":...}`` and waits for ``authenticated``; then
``{"action":"subscribe","trades":[...],"quotes":[...],"bars":[...]}`` and reads arrays
of ``{"T":"t"|"q"|"b", "S": symbol, ...}``. Trades carry an id (``i``) that makes
re-delivery after a reconnect harmless (validation and storage both de-duplicate on it).
The stream has no sequence numbers, so gaps cannot be detected, only reconnects counted.
"""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.asyncio import client as ws_client

from starkmatter.ingest.providers import base

# Alpaca error codes that a reconnect cannot cure.
_FATAL = {402: "auth failed", 405: "symbol limit exceeded", 409: "insufficient subscription"}


def to_fields(message: dict[str, Any]) -> dict[str, Any] | None:
    """Canonical fields of one Alpaca message; ``None`` for control messages."""
    kind = message.get("T")
    if kind == "t":
        return {
            "type": "trade", "symbol": message.get("S"), "ts": message.get("t"),
            "price": message.get("p"), "size": message.get("s"), "trade_id": message.get("i"),
        }  # fmt: skip
    if kind == "q":
        return {
            "type": "quote", "symbol": message.get("S"), "ts": message.get("t"),
            "bid": message.get("bp"), "ask": message.get("ap"),
            "bid_size": message.get("bs"), "ask_size": message.get("as"),
        }  # fmt: skip
    if kind in ("b", "u", "d"):
        return {
            "type": "bar", "interval": "1m", "symbol": message.get("S"), "ts": message.get("t"),
            "open": message.get("o"), "high": message.get("h"), "low": message.get("l"),
            "close": message.get("c"), "volume": message.get("v"), "vwap": message.get("vw"),
            "trades": message.get("n", 0),
        }  # fmt: skip
    return None


class AlpacaProvider(base.Provider):
    def __init__(
        self,
        feed: str,
        url: str,
        symbols: list[str],
        *,
        token: str | None,
        bars: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("heartbeat_timeout_s", 30.0)
        super().__init__(feed, **kwargs)
        self.url = url
        self.symbols = symbols or ["*"]
        key, _, secret = (token or "").partition(":")
        self.key = key
        self.secret = secret
        self.bars = bars

    async def _expect(self, ws: ws_client.ClientConnection, wanted: str) -> list[Any]:
        reply = json.loads(await self.receive(ws))
        for message in reply if isinstance(reply, list) else [reply]:
            if message.get("T") == "error":
                code = message.get("code")
                if code in _FATAL:
                    raise base.FatalProviderError(f"alpaca error {code}: {message.get('msg')}")
                raise base.ProviderError(f"alpaca error {code}: {message.get('msg')}")
            if message.get("T") == wanted or (
                message.get("T") == "success" and message.get("msg") == wanted
            ):
                return list(reply) if isinstance(reply, list) else [reply]
        # The reply whole: the log line it reaches is masked, then cut.
        raise base.ProviderError(f"alpaca: expected {wanted!r}, got {reply}")

    async def session(self, sink: base.Sink) -> None:
        async with ws_client.connect(
            self.url, compression=None, ping_interval=10, ping_timeout=20, max_size=2**24
        ) as ws:
            await self._expect(ws, "connected")
            await ws.send(json.dumps({"action": "auth", "key": self.key, "secret": self.secret}))
            await self._expect(ws, "authenticated")
            request: dict[str, Any] = {
                "action": "subscribe",
                "trades": self.symbols,
                "quotes": self.symbols,
            }
            if self.bars:
                request["bars"] = self.symbols
            await ws.send(json.dumps(request))
            await self._expect(ws, "subscription")
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
        out = []
        for message in payload if isinstance(payload, list) else [payload]:
            if type(message) is not dict:
                out.append(
                    base.Incoming(None, json.dumps(message), "message is not an object", now)
                )
                continue
            if message.get("T") == "error":
                raise base.ProviderError(
                    f"alpaca error {message.get('code')}: {message.get('msg')}"
                )
            fields = to_fields(message)
            if fields is not None:
                out.append(base.Incoming(fields, json.dumps(message), "", now))
            elif message.get("T") not in ("success", "subscription"):
                out.append(base.Incoming(None, json.dumps(message), "unknown message type", now))
        return out
