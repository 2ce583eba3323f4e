"""API replicas remember sessions they found open (one Redis round trip less per request);
a logout on any replica still ends the session on every other one at once."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis

from starkmatter.api import resources
from starkmatter.core import settings
from starkmatter.core.auth import keys, sessions, tokens
from tests.support import serve_api, sign_up


async def _status_until(
    client: httpx.AsyncClient, headers: dict[str, str], want: int, within_s: float
) -> int:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        status = (await client.get("/auth/me", headers=headers)).status_code
        if status == want or asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.02)


async def test_logout_on_one_replica_ends_the_session_on_another_at_once(
    config: settings.Settings,
) -> None:
    # Remembered for 30 s: only the announced revocation can end it sooner.
    remembering = config.model_copy(update={"session_cache_s": 30.0})
    async with serve_api(remembering) as a, serve_api(remembering) as b:
        user = await sign_up(a.client)
        assert (await b.client.get("/auth/me", headers=user.headers)).status_code == 200
        assert (await a.client.post("/auth/logout", headers=user.headers)).status_code == 204
        assert await _status_until(b.client, user.headers, 401, within_s=3.0) == 401
        refused = await b.client.get("/auth/me", headers=user.headers)
        assert refused.json()["error"]["code"] == "session_revoked"
        # The replica that closed it refuses it on the very next request.
        assert (await a.client.get("/auth/me", headers=user.headers)).status_code == 401


async def test_a_session_ended_without_announcement_is_refused_after_the_bound(
    config: settings.Settings,
) -> None:
    bound = 0.5
    async with serve_api(config.model_copy(update={"session_cache_s": bound})) as api:
        user = await sign_up(api.client)
        assert (await api.client.get("/auth/me", headers=user.headers)).status_code == 200
        principal = tokens.decode(
            user.access_token, keys.load(config).public_pem, resources.token_config(config)
        )
        # As when the key expires in Redis: nothing is published.
        redis = aioredis.Redis.from_url(config.redis_url or "")
        try:
            assert await redis.delete(sessions.key(principal.session_id)) == 1
        finally:
            await redis.aclose()
        await asyncio.sleep(bound + 0.1)
        after = await api.client.get("/auth/me", headers=user.headers)
        assert after.status_code == 401
        assert after.json()["error"]["code"] == "session_revoked"
