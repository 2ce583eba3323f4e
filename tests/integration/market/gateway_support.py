"""What the gateway's integration tests share: signing in, a running gateway, frame readers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import redis.asyncio as aioredis
from websockets.asyncio import client as ws_client

from starkmatter.core import settings
from starkmatter.core.auth import sessions, tokens
from starkmatter.gateway import connections, fanout, server


async def sign_in(config: settings.Settings, redis: aioredis.Redis, user_id: str) -> str:
    session_id = uuid.uuid4().hex
    await sessions.open_session(redis, session_id, user_id, 600)
    token, _ = tokens.issue(
        config.private_key_pem() or "",
        tokens.TokenConfig(config.jwt_issuer, config.jwt_audience, 600, 5),
        user_id=user_id,
        roles=["trader"],
        session_id=session_id,
    )
    return token


@contextlib.asynccontextmanager
async def running_gateway(
    config: settings.Settings,
    limits: connections.Limits | None = None,
    *,
    redis_url: str | None = None,
) -> AsyncIterator[server.Gateway]:
    redis = aioredis.Redis.from_url(redis_url or config.redis_url or "")
    gateway = server.Gateway(
        fanout.Hub(redis), server.token_verifier(config, redis), redis=redis, limits=limits
    )
    await gateway.start("127.0.0.1", 0)
    try:
        yield gateway
    finally:
        if not gateway.closing:
            await gateway.stop()
        await redis.aclose()


async def kill_subscriber(redis: aioredis.Redis, gateway: server.Gateway) -> int:
    """Have Redis cut ``gateway``'s subscriber connection, found by its address: the
    server is shared, and another gateway's (a replica's, a browser test's) must survive.
    How many connections Redis cut."""
    transport = gateway.hub._subscriber._transport
    assert transport is not None, "the gateway's subscriber is not connected"
    host, port = transport.get_extra_info("sockname")[:2]
    killed = await redis.execute_command(
        "CLIENT", "KILL", "ADDR", f"{host}:{port}", "TYPE", "pubsub"
    )
    return int(killed)


async def recv_json(ws: ws_client.ClientConnection) -> dict[str, Any]:
    message = await ws.recv()
    frame: dict[str, Any] = json.loads(message)
    return frame


async def recv_data(ws: ws_client.ClientConnection) -> dict[str, Any]:
    """The next frame that is not a heartbeat (they come at any time, ``heartbeat_s``
    apart, spread over the clients)."""
    while True:
        frame = await recv_json(ws)
        if frame["type"] != "heartbeat":
            return frame


class SseEvent:
    def __init__(self, event_id: str | None, kind: str, data: dict[str, Any]) -> None:
        self.id = event_id
        self.kind = kind
        self.data = data

    def __repr__(self) -> str:
        return f"SseEvent({self.id!r}, {self.kind!r}, {self.data!r})"


class SseStream:
    """Server-Sent Events read off a streaming httpx response, one event at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.retry_ms: int | None = None
        self._lines = response.aiter_lines()

    async def next(self) -> SseEvent:
        event_id: str | None = None
        kind = "message"
        data: list[str] = []
        async with asyncio.timeout(10):
            async for line in self._lines:
                if line == "":
                    if data:
                        return SseEvent(event_id, kind, json.loads("\n".join(data)))
                    continue
                field, _, value = line.partition(": ")
                if field == "id":
                    event_id = value
                elif field == "event":
                    kind = value
                elif field == "data":
                    data.append(value)
                elif field == "retry":
                    self.retry_ms = int(value)
        raise AssertionError("the event stream ended")

    async def rest(self) -> list[str]:
        """Every line until the server ends the stream."""
        async with asyncio.timeout(10):
            return [line async for line in self._lines]
