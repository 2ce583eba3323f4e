"""What a running API process holds: settings, pools and the auth service."""

from __future__ import annotations

import dataclasses

import asyncpg
import redis.asyncio as aioredis

from starkmatter.core import settings
from starkmatter.core.auth import accounts, keys, sessions, tokens


@dataclasses.dataclass(frozen=True)
class Resources:
    settings: settings.Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    keys: keys.KeyPair
    token_config: tokens.TokenConfig
    auth: accounts.AuthService
    open_sessions: sessions.OpenSessions
    """sessions checked recently; trusted while the lifespan's follower task runs"""


def token_config(config: settings.Settings) -> tokens.TokenConfig:
    return tokens.TokenConfig(
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        ttl_s=config.access_token_ttl_s,
        leeway_s=config.jwt_leeway_s,
    )


def build(
    config: settings.Settings,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    keypair: keys.KeyPair,
) -> Resources:
    tc = token_config(config)
    policy = accounts.LoginPolicy(
        refresh_ttl_s=config.refresh_token_ttl_s,
        max_failures=config.login_max_failures,
        lockout_s=config.login_lockout_s,
        rate_per_minute=config.login_rate_per_minute,
    )
    remembered = sessions.OpenSessions(config.session_cache_s)
    return Resources(
        config,
        pool,
        redis,
        keypair,
        tc,
        accounts.AuthService(pool, redis, keypair, tc, policy, remembered),
        remembered,
    )
