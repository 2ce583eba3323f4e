"""The seed's auth flow over real HTTP, with real PostgreSQL and Redis behind it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import jwt
import redis.asyncio as aioredis

from starkmatter.core import settings
from tests.support import LiveServer, sign_up


async def test_register_login_and_me_return_the_same_user(api: LiveServer) -> None:
    user = await sign_up(api.client, email="Jane@Example.com")
    me = await api.client.get("/auth/me", headers=user.headers)
    assert me.status_code == 200
    assert me.json()["id"] == user.user_id
    assert me.json()["roles"] == ["trader"]


async def test_password_is_stored_as_an_argon2id_hash(api: LiveServer, db: Any) -> None:
    user = await sign_up(api.client)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1::uuid", user.user_id)
    assert stored.startswith("$argon2id$")
    assert user.password not in stored


async def test_duplicate_email_in_another_case_is_a_conflict(api: LiveServer) -> None:
    await sign_up(api.client, email="dup@example.com")
    again = await api.client.post(
        "/auth/register", json={"email": "DUP@example.com", "password": "another long password"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "email_taken"


async def test_unknown_fields_are_rejected_with_their_field_path(api: LiveServer) -> None:
    response = await api.client.post(
        "/auth/register",
        json={"email": "x@example.com", "password": "long enough password", "roles": ["admin"]},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == "body.roles"


async def test_short_password_is_rejected_with_a_clear_field_error(api: LiveServer) -> None:
    response = await api.client.post(
        "/auth/register", json={"email": "x@example.com", "password": "short"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.password"


async def test_wrong_password_is_401_without_saying_which_part_was_wrong(api: LiveServer) -> None:
    user = await sign_up(api.client)
    wrong = await api.client.post("/auth/login", json={"email": user.email, "password": "nope"})
    unknown = await api.client.post(
        "/auth/login", json={"email": "nobody@example.com", "password": "nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_missing_or_garbage_bearer_token_is_401(api: LiveServer) -> None:
    assert (await api.client.get("/auth/me")).status_code == 401
    garbage = await api.client.get("/auth/me", headers={"Authorization": "Bearer not-a-jwt"})
    assert garbage.status_code == 401
    assert garbage.json()["error"]["code"] == "token_invalid"


async def test_token_is_rejected_right_after_logout(api: LiveServer) -> None:
    user = await sign_up(api.client)
    assert (await api.client.post("/auth/logout", headers=user.headers)).status_code == 204
    after = await api.client.get("/auth/me", headers=user.headers)
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "session_revoked"
    refreshed = await api.client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert refreshed.status_code == 401


async def test_refresh_rotates_the_refresh_token(api: LiveServer) -> None:
    user = await sign_up(api.client)
    rotated = await api.client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["refresh_token"] != user.refresh_token
    me = await api.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(api: LiveServer) -> None:
    user = await sign_up(api.client)
    first = (
        await api.client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    ).json()
    replay = await api.client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "refresh_reused"
    # Every token of the family is dead now, including the newest pair.
    newest = await api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert newest.status_code == 401
    me = await api.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert me.status_code == 401
    assert (await api.client.get("/auth/me", headers=user.headers)).status_code == 401


async def test_other_sessions_survive_one_session_logout(api: LiveServer) -> None:
    user = await sign_up(api.client)
    second = (
        await api.client.post("/auth/login", json={"email": user.email, "password": user.password})
    ).json()
    await api.client.post("/auth/logout", headers=user.headers)
    still = await api.client.get(
        "/auth/me", headers={"Authorization": f"Bearer {second['access_token']}"}
    )
    assert still.status_code == 200


async def test_account_locks_after_repeated_failures_with_retry_after(api: LiveServer) -> None:
    user = await sign_up(api.client)
    limit = api.config.login_max_failures
    for _ in range(limit):
        failed = await api.client.post(
            "/auth/login", json={"email": user.email, "password": "wrong password"}
        )
        assert failed.status_code == 401
    locked = await api.client.post(
        "/auth/login", json={"email": user.email, "password": user.password}
    )
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "account_locked"
    assert 0 < int(locked.headers["Retry-After"]) <= api.config.login_lockout_s


async def test_login_attempts_per_address_are_rate_limited(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    from tests.support import serve_api

    limited = config.model_copy(update={"login_rate_per_minute": 3})
    async with serve_api(limited) as live:
        codes = [
            (
                await live.client.post(
                    "/auth/login", json={"email": f"u{i}@example.com", "password": "x"}
                )
            ).status_code
            for i in range(4)
        ]
        assert codes[:3] == [401, 401, 401]
        assert codes[3] == 429


async def test_registrations_per_address_are_rate_limited_apart_from_logins(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    # Registration is public and costs a password hash: it had no limit at all.
    from tests.support import serve_api

    limited = config.model_copy(update={"login_rate_per_minute": 3})
    async with serve_api(limited) as live:
        codes = [
            (
                await live.client.post(
                    "/auth/register",
                    json={"email": f"r{i}@example.com", "password": "long enough password"},
                )
            ).status_code
            for i in range(4)
        ]
        assert codes == [201, 201, 201, 429]
        login = await live.client.post(
            "/auth/login", json={"email": "r0@example.com", "password": "long enough password"}
        )
        assert login.status_code == 200, login.text


async def test_registration_can_be_switched_off(config: settings.Settings) -> None:
    from tests.support import serve_api

    closed = config.model_copy(update={"registration_enabled": False})
    async with serve_api(closed) as live:
        response = await live.client.post(
            "/auth/register", json={"email": "a@example.com", "password": "long enough password"}
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "registration_disabled"


async def test_access_token_carries_every_registered_claim(
    api: LiveServer, jwt_private_pem: str
) -> None:
    user = await sign_up(api.client)
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    assert {"exp", "iat", "nbf", "iss", "aud", "jti", "sub", "roles", "sid"} <= set(claims)
    assert jwt.get_unverified_header(user.access_token)["alg"] == "RS256"
    assert claims["exp"] - claims["iat"] == api.config.access_token_ttl_s


async def test_expired_token_signed_by_the_real_key_is_rejected_over_http(
    api: LiveServer, jwt_private_pem: str
) -> None:
    user = await sign_up(api.client)
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    claims.update(iat=past, nbf=past, exp=past + dt.timedelta(minutes=15))
    expired = jwt.encode(claims, jwt_private_pem, algorithm="RS256")
    response = await api.client.get("/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


async def test_login_logout_and_registration_are_audited(
    api: LiveServer, db: asyncpg.Connection[Any]
) -> None:
    user = await sign_up(api.client)
    await api.client.post("/auth/logout", headers=user.headers)
    actions = [
        r["action"]
        for r in await db.fetch(
            "SELECT action FROM audit_log WHERE actor = $1 ORDER BY seq", user.user_id
        )
    ]
    assert actions == ["user.created", "session.opened", "session.closed"]


async def test_control_characters_in_auth_input_are_a_validation_error_not_a_500(
    api: LiveServer,
) -> None:
    # PostgreSQL refuses a NUL in text: these once reached it and answered 500.
    for path, body in (
        ("/auth/register", {"email": "nul\x00@example.com", "password": "long enough password"}),
        (
            "/auth/register",
            {
                "email": "n@example.com",
                "password": "long enough password",
                "display_name": "a\x00b",
            },
        ),
        ("/auth/login", {"email": "nul\x00@example.com", "password": "whatever"}),
    ):
        response = await api.client.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["code"] == "validation_error"


async def test_a_disabled_user_cannot_refresh_their_way_back_in(api: LiveServer, db: Any) -> None:
    user = await sign_up(api.client)
    await db.execute("UPDATE users SET disabled = true WHERE id = $1::uuid", user.user_id)
    refreshed = await api.client.post("/auth/refresh", json={"refresh_token": user.refresh_token})
    assert refreshed.status_code == 401
    assert refreshed.json()["error"]["code"] == "refresh_invalid"
