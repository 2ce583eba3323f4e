"""An open WebSocket or SSE stream ends with its login: on logout, when its session is
revoked for refresh-token reuse, when its session key is gone without an announcement,
and when its token expires (over real sockets, the real API and real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets import exceptions as ws_exceptions
from websockets.asyncio import client as ws_client

from starkmatter.core import settings
from starkmatter.core.auth import sessions, tokens
from starkmatter.gateway import connections
from tests.integration.market.gateway_support import (
    SseStream,
    kill_subscriber,
    recv_json,
    running_gateway,
)
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(30)

ENDED_WITHIN_S = 2.0
LEEWAY = connections.Limits(token_leeway_s=1.0)


async def _frame(ws: ws_client.ClientConnection) -> dict[str, Any]:
    """The next frame that is not a heartbeat."""
    async with asyncio.timeout(5):
        while True:
            frame = await recv_json(ws)
            if frame["type"] != "heartbeat":
                return frame


async def _until_closed(ws: ws_client.ClientConnection, within: float) -> list[dict[str, Any]]:
    """Every frame but heartbeats until the server closes the socket (within ``within``)."""
    frames = []
    async with asyncio.timeout(within):
        try:
            while True:
                frame = await recv_json(ws)
                if frame["type"] != "heartbeat":
                    frames.append(frame)
        except ws_exceptions.ConnectionClosed:
            return frames


async def _assert_ended(ws: ws_client.ClientConnection, code: str, within: float) -> None:
    frames = await _until_closed(ws, within)
    assert [(f["type"], f.get("code")) for f in frames] == [("error", code)]
    assert ws.close_code == 1008


async def _sse_rest(stream: SseStream, within: float) -> str:
    """What the stream still sends until the server ends it (within ``within``)."""
    async with asyncio.timeout(within):
        return "\n".join(await stream.rest())


def _expiring_token(
    config: settings.Settings, user_id: str, session_id: str, in_s: int
) -> tuple[str, float]:
    """A token of an open session that expires ``in_s`` seconds from now; and when (epoch)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    token, expires = tokens.issue(
        config.private_key_pem() or "",
        tokens.TokenConfig(config.jwt_issuer, config.jwt_audience, in_s, config.jwt_leeway_s),
        user_id=user_id,
        roles=["trader"],
        session_id=session_id,
        now=now,
    )
    return token, expires.timestamp()


async def _session(
    config: settings.Settings, redis: aioredis.Redis, token_s: int
) -> tuple[str, str, str, float]:
    """A new user's open session (600 s) and a token of it expiring in ``token_s``: the
    user, the session, the token and when it expires (epoch)."""
    user_id, session_id = str(uuid.uuid4()), uuid.uuid4().hex
    await sessions.open_session(redis, session_id, user_id, 600)
    token, expires = _expiring_token(config, user_id, session_id, token_s)
    return user_id, session_id, token, expires


async def test_a_websocket_is_closed_as_session_revoked_on_logout(
    api: LiveServer, config: settings.Settings, redis: aioredis.Redis
) -> None:
    trader = await sign_up(api.client)
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(
            f"ws://127.0.0.1:{gateway.port}/ws", additional_headers=trader.headers
        ) as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": [f"orders:{trader.user_id}"]}))
        assert (await _frame(ws))["type"] == "snapshot"
        assert (await api.client.post("/auth/logout", headers=trader.headers)).status_code == 204
        await _assert_ended(ws, "session_revoked", ENDED_WITHIN_S)
        assert gateway.clients == set()


async def test_an_sse_stream_ends_as_session_revoked_on_logout(
    api: LiveServer, config: settings.Settings, redis: aioredis.Redis
) -> None:
    trader = await sign_up(api.client)
    url_topics = f"alerts:{trader.user_id}"
    async with (
        running_gateway(config) as gateway,
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "GET",
            f"http://127.0.0.1:{gateway.port}/sse?topics={url_topics}",
            headers=trader.headers,
        ) as response,
    ):
        assert response.status_code == 200
        stream = SseStream(response)
        assert (await stream.next()).kind == "snapshot"
        assert (await api.client.post("/auth/logout", headers=trader.headers)).status_code == 204
        rest = await _sse_rest(stream, ENDED_WITHIN_S)
        assert "event: error" in rest
        assert '"code":"session_revoked"' in rest


async def test_a_websocket_of_a_session_revoked_for_refresh_token_reuse_is_closed(
    api: LiveServer, config: settings.Settings, redis: aioredis.Redis
) -> None:
    trader = await sign_up(api.client)
    refreshed = await api.client.post("/auth/refresh", json={"refresh_token": trader.refresh_token})
    assert refreshed.status_code == 200
    token = refreshed.json()["access_token"]
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": [f"orders:{trader.user_id}"]}))
        assert (await _frame(ws))["type"] == "snapshot"
        # The old refresh token again: a thief's replay; the API revokes the whole family.
        reused = await api.client.post(
            "/auth/refresh", json={"refresh_token": trader.refresh_token}
        )
        assert reused.status_code == 401
        await _assert_ended(ws, "session_revoked", ENDED_WITHIN_S)


async def test_a_private_subscribe_sent_right_after_logout_is_refused(
    api: LiveServer, config: settings.Settings, redis: aioredis.Redis
) -> None:
    trader = await sign_up(api.client)
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(
            f"ws://127.0.0.1:{gateway.port}/ws", additional_headers=trader.headers
        ) as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": ["news:all"]}))
        assert (await _frame(ws))["type"] == "snapshot"
        assert (await api.client.post("/auth/logout", headers=trader.headers)).status_code == 204
        # Sent at once: it may reach the gateway before the announcement of the logout (or
        # find the socket closed already).
        with contextlib.suppress(ws_exceptions.ConnectionClosed):
            await ws.send(
                json.dumps({"op": "subscribe", "topics": [f"portfolio:{trader.user_id}"]})
            )
        await _assert_ended(ws, "session_revoked", ENDED_WITHIN_S)


async def test_a_private_subscribe_of_a_session_gone_unannounced_is_refused(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    # The session key is gone and no revocation arrives (pub/sub lost it): a private topic
    # is granted only after Redis confirms the session.
    user_id, session_id, token, _ = await _session(config, redis, 600)
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": ["news:all"]}))
        assert (await _frame(ws))["type"] == "snapshot"
        await redis.delete(sessions.key(session_id))
        await ws.send(json.dumps({"op": "subscribe", "topics": [f"orders:{user_id}"]}))
        await _assert_ended(ws, "session_revoked", ENDED_WITHIN_S)
        assert gateway.hub.subscribers.get(f"orders:{user_id}") is None


async def test_a_session_gone_unannounced_is_found_by_the_periodic_recheck(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    user_id, session_id, token, _ = await _session(config, redis, 600)
    limits = connections.Limits(heartbeat_s=1.0)
    async with (
        running_gateway(config, limits) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": [f"orders:{user_id}"]}))
        assert (await _frame(ws))["type"] == "snapshot"
        await redis.delete(sessions.key(session_id))  # no announcement on sessions:revoked
        await _assert_ended(ws, "session_revoked", limits.heartbeat_s + ENDED_WITHIN_S)


async def test_a_websocket_is_closed_as_token_expired_at_expiry_plus_leeway(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    user_id, _, token, expires = await _session(config, redis, 3)
    async with (
        running_gateway(config, LEEWAY) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": [f"orders:{user_id}"]}))
        assert (await _frame(ws))["type"] == "snapshot"
        await _assert_ended(ws, "token_expired", expires - time.time() + 1.0 + ENDED_WITHIN_S)
        assert time.time() >= expires + LEEWAY.token_leeway_s - 0.1


async def test_an_sse_stream_ends_as_token_expired_at_expiry_plus_leeway(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    user_id, _, token, expires = await _session(config, redis, 3)
    async with (
        running_gateway(config, LEEWAY) as gateway,
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "GET",
            f"http://127.0.0.1:{gateway.port}/sse?topics=portfolio:{user_id}",
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status_code == 200
        stream = SseStream(response)
        assert (await stream.next()).kind == "snapshot"
        rest = await _sse_rest(stream, expires - time.time() + 1.0 + ENDED_WITHIN_S)
        assert time.time() >= expires + LEEWAY.token_leeway_s - 0.1
        assert "event: error" in rest
        assert '"code":"token_expired"' in rest


async def test_a_fresh_token_of_the_same_user_keeps_a_websocket_open_past_expiry(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    user_id, session_id, token, expires = await _session(config, redis, 2)
    fresh, fresh_expires = _expiring_token(config, user_id, session_id, 600)
    other_id, other_session = str(uuid.uuid4()), uuid.uuid4().hex
    await sessions.open_session(redis, other_session, other_id, 600)
    other, _ = _expiring_token(config, other_id, other_session, 600)
    async with (
        running_gateway(config, LEEWAY) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "auth", "token": other}))
        assert (await _frame(ws))["code"] == "forbidden"
        await ws.send(json.dumps({"op": "auth", "token": fresh}))
        await asyncio.sleep(expires - time.time() + LEEWAY.token_leeway_s + 1.0)
        await ws.send(json.dumps({"op": "subscribe", "topics": [f"orders:{user_id}"]}))
        assert (await _frame(ws))["type"] == "snapshot"
        await redis.publish(f"orders:{user_id}", json.dumps({"event": "filled"}))
        assert (await _frame(ws))["data"] == {"event": "filled"}
        assert fresh_expires > time.time()


async def test_sessions_are_checked_again_once_the_subscriber_reconnects(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    # An announcement published while the subscriber is disconnected is lost: once it has
    # re-subscribed, the gateway asks Redis (long before the periodic check, 15 s away).
    user_id, session_id, token, _ = await _session(config, redis, 600)
    async with (
        running_gateway(config) as gateway,
        ws_client.connect(f"ws://127.0.0.1:{gateway.port}/ws?token={token}") as ws,
    ):
        await ws.send(json.dumps({"op": "subscribe", "topics": [f"orders:{user_id}"]}))
        assert (await _frame(ws))["type"] == "snapshot"
        await redis.delete(sessions.key(session_id))  # as if its announcement was lost
        assert await kill_subscriber(redis, gateway) == 1
        await _assert_ended(ws, "session_revoked", ENDED_WITHIN_S)
