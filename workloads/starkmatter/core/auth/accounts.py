"""Account flows: register, log in, rotate refresh tokens, log out.

A login opens a session (a refresh-token *family*, whose id is also the ``sid`` claim of
every access token it yields). Each refresh rotates the token; presenting an already
rotated token means it was stolen or replayed, so the whole family is revoked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from starkmatter.core import audit, errors, metrics
from starkmatter.core.auth import keys, passwords, ratelimiting, sessions, tokens


@dataclasses.dataclass(frozen=True)
class LoginPolicy:
    refresh_ttl_s: int
    max_failures: int
    lockout_s: int
    rate_per_minute: int


@dataclasses.dataclass(frozen=True)
class AuthService:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    keys: keys.KeyPair
    token_config: tokens.TokenConfig
    policy: LoginPolicy
    open_sessions: sessions.OpenSessions | None = None
    """this process's remembered sessions, forgotten here at once when one is closed"""


@dataclasses.dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_at: dt.datetime
    refresh_token: str
    refresh_expires_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    email: str
    display_name: str
    roles: tuple[str, ...]
    created_at: dt.datetime


def _digest(refresh_token: str) -> bytes:
    return hashlib.sha256(refresh_token.encode()).digest()


async def _user_roles(conn: asyncpg.Connection[Any], user_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role", user_id)
    return [r["role"] for r in rows]


async def get_user(conn: asyncpg.Connection[Any], user_id: str) -> User:
    row = await conn.fetchrow(
        "SELECT id, email, display_name, created_at FROM users WHERE id = $1 AND NOT disabled",
        uuid.UUID(user_id),
    )
    if row is None:
        raise errors.NotFound("user not found")
    roles = await _user_roles(conn, row["id"])
    return User(
        str(row["id"]),
        row["email"],
        row["display_name"],
        tuple(roles),
        row["created_at"],
    )


async def create_user(
    conn: asyncpg.Connection[Any],
    actor: audit.Actor | None,
    *,
    email: str,
    password: str,
    display_name: str,
    roles: Sequence[str] = ("trader",),
    reason: str,
) -> User:
    unknown = set(roles) - tokens.ROLES
    if unknown:
        raise errors.AppError(f"unknown roles: {sorted(unknown)}", code="invalid_role")
    # Tens of milliseconds of CPU: in a thread (argon2 releases the GIL), not on the loop.
    password_hash = await asyncio.to_thread(passwords.hash_password, password)
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                """INSERT INTO users (email, display_name, password_hash)
                   VALUES ($1, $2, $3) RETURNING id, created_at""",
                email.strip(),
                display_name,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise errors.Conflict(
                "an account with this e-mail already exists", code="email_taken"
            ) from None
        assert row is not None
        await conn.executemany(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
            [(row["id"], role) for role in roles],
        )
        user = User(
            str(row["id"]),
            email.strip(),
            display_name,
            tuple(sorted(roles)),
            row["created_at"],
        )
        who = actor or audit.Actor(id=user.id, service="api", endpoint="POST /auth/register")
        await audit.record(
            conn,
            who,
            action="user.created",
            reason=reason,
            entity_type="user",
            entity_id=user.id,
            after={
                "id": user.id,
                "display_name": display_name,
                "roles": list(user.roles),
            },
        )
    return user


async def _issue_pair(
    service: AuthService,
    conn: asyncpg.Connection[Any],
    *,
    user_id: uuid.UUID,
    roles: Sequence[str],
    family_id: uuid.UUID,
) -> TokenPair:
    if service.keys.private_pem is None:
        raise errors.ServiceUnavailable("this service cannot issue tokens")
    refresh_token = secrets.token_urlsafe(32)
    refresh_expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=service.policy.refresh_ttl_s)
    await conn.execute(
        """INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        uuid.uuid4(),
        family_id,
        user_id,
        _digest(refresh_token),
        refresh_expires,
    )
    access_token, access_expires = tokens.issue(
        service.keys.private_pem,
        service.token_config,
        user_id=str(user_id),
        roles=roles,
        session_id=str(family_id),
    )
    return TokenPair(access_token, access_expires, refresh_token, refresh_expires)


async def login(
    service: AuthService, *, email: str, password: str, address: str, endpoint: str
) -> TokenPair:
    policy = service.policy
    await ratelimiting.check_address(service.redis, address, policy.rate_per_minute)
    await ratelimiting.check_not_locked(service.redis, email)
    async with service.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, password_hash FROM users WHERE lower(email) = lower($1) AND NOT disabled",
            email.strip(),
        )
        stored = row["password_hash"] if row else None
        if not await asyncio.to_thread(passwords.verify_password, stored, password):
            metrics.AUTH_EVENTS.labels(event="login_failed").inc()
            if await ratelimiting.record_failure(
                service.redis, email, policy.max_failures, policy.lockout_s
            ):
                metrics.AUTH_EVENTS.labels(event="locked").inc()
            raise errors.Unauthenticated("wrong e-mail or password", code="invalid_credentials")
        await ratelimiting.clear_failures(service.redis, email)
        roles = await _user_roles(conn, row["id"])
        family_id = uuid.uuid4()
        async with conn.transaction():
            if passwords.needs_rehash(row["password_hash"]):
                await conn.execute(
                    "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
                    row["id"],
                    await asyncio.to_thread(passwords.hash_password, password),
                )
            pair = await _issue_pair(
                service, conn, user_id=row["id"], roles=roles, family_id=family_id
            )
            await audit.record(
                conn,
                audit.Actor(id=str(row["id"]), service="api", endpoint=endpoint),
                action="session.opened",
                reason="user logged in",
                entity_type="session",
                entity_id=str(family_id),
                after={"address": address},
            )
    await sessions.open_session(service.redis, str(family_id), str(row["id"]), policy.refresh_ttl_s)
    metrics.AUTH_EVENTS.labels(event="login_ok").inc()
    return pair


async def _revoke_family(conn: asyncpg.Connection[Any], family_id: uuid.UUID, reason: str) -> None:
    await conn.execute(
        """UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = $2
           WHERE family_id = $1 AND revoked_at IS NULL""",
        family_id,
        reason,
    )


async def refresh(service: AuthService, *, refresh_token: str, endpoint: str) -> TokenPair:
    invalid = errors.Unauthenticated("refresh token is not valid", code="refresh_invalid")
    async with service.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT t.id, t.family_id, t.user_id, t.expires_at, t.used_at, t.revoked_at,
                      u.disabled
               FROM refresh_tokens t JOIN users u ON u.id = t.user_id
               WHERE t.token_hash = $1 FOR UPDATE OF t""",
            _digest(refresh_token),
        )
        if row is None or row["disabled"]:
            # A disabled user signs in no more, by password or by refresh token.
            raise invalid
        actor = audit.Actor(id=str(row["user_id"]), service="api", endpoint=endpoint)
        if row["used_at"] is not None and row["revoked_at"] is None:
            # A rotated token came back: whoever holds it is not necessarily the user.
            await _revoke_family(conn, row["family_id"], "refresh token reuse")
            await audit.record(
                conn,
                actor,
                action="session.revoked",
                reason="rotated refresh token presented again (possible theft)",
                entity_type="session",
                entity_id=str(row["family_id"]),
            )
            metrics.AUTH_EVENTS.labels(event="refresh_reuse").inc()
            reuse = errors.Unauthenticated(
                "refresh token was already used; the session has been revoked",
                code="refresh_reused",
            )
        elif row["revoked_at"] is not None or row["expires_at"] <= dt.datetime.now(dt.UTC):
            raise invalid
        else:
            reuse = None
            await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", row["id"])
            roles = await _user_roles(conn, row["user_id"])
            pair = await _issue_pair(
                service,
                conn,
                user_id=row["user_id"],
                roles=roles,
                family_id=row["family_id"],
            )
    if reuse is not None:
        await sessions.close(service.redis, str(row["family_id"]), remembered=service.open_sessions)
        raise reuse
    await sessions.extend(service.redis, str(row["family_id"]), service.policy.refresh_ttl_s)
    return pair


async def logout(service: AuthService, principal: tokens.Principal, *, endpoint: str) -> None:
    async with service.pool.acquire() as conn, conn.transaction():
        await _revoke_family(conn, uuid.UUID(principal.session_id), "logout")
        await audit.record(
            conn,
            audit.Actor(id=principal.user_id, service="api", endpoint=endpoint),
            action="session.closed",
            reason="user logged out",
            entity_type="session",
            entity_id=principal.session_id,
        )
    await sessions.close(service.redis, principal.session_id, remembered=service.open_sessions)
