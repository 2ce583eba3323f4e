"""The seed's auth flow: register, log in, refresh (rotating), log out, who am I."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import fastapi
import pydantic

from starkmatter.api import deps
from starkmatter.core import errors, schemas
from starkmatter.core.auth import accounts, ratelimiting

router = fastapi.APIRouter(prefix="/auth", tags=["auth"])

Email = Annotated[
    str,
    pydantic.Field(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$",
    ),
]


class RegisterRequest(schemas.RequestModel):
    email: Email
    password: Annotated[str, pydantic.Field(min_length=12, max_length=256)]
    display_name: Annotated[str, pydantic.Field(max_length=100), schemas.PrintableText] = ""


class LoginRequest(schemas.RequestModel):
    email: Annotated[str, pydantic.Field(min_length=1, max_length=254), schemas.PrintableText]
    password: Annotated[str, pydantic.Field(min_length=1, max_length=256)]


class RefreshRequest(schemas.RequestModel):
    refresh_token: Annotated[str, pydantic.Field(min_length=16, max_length=256)]


class TokenPublic(schemas.ResponseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class UserPublic(schemas.ResponseModel):
    id: str
    email: str
    display_name: str
    roles: list[str]
    created_at: dt.datetime


def _token_public(pair: accounts.TokenPair) -> TokenPublic:
    now = dt.datetime.now(dt.UTC)
    return TokenPublic(
        access_token=pair.access_token,
        expires_in=int((pair.access_expires_at - now).total_seconds()),
        refresh_token=pair.refresh_token,
        refresh_expires_in=int((pair.refresh_expires_at - now).total_seconds()),
    )


def _user_public(user: accounts.User) -> UserPublic:
    return UserPublic(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        roles=list(user.roles),
        created_at=user.created_at,
    )


@router.post("/register", status_code=201, dependencies=[deps.Public])
async def register(
    body: RegisterRequest, res: deps.ResourcesDep, request: fastapi.Request
) -> UserPublic:
    if not res.settings.registration_enabled:
        raise errors.Forbidden("self-registration is switched off", code="registration_disabled")
    # Public and costly (a password hash): limited per address like logins.
    await ratelimiting.check_address(
        res.redis, deps.client_address(request), res.auth.policy.rate_per_minute, "registration"
    )
    async with res.pool.acquire() as conn:
        user = await accounts.create_user(
            conn,
            None,
            email=body.email,
            password=body.password,
            display_name=body.display_name,
            reason="self-registration",
        )
    return _user_public(user)


@router.post("/login", dependencies=[deps.Public])
async def login(
    body: LoginRequest, res: deps.ResourcesDep, request: fastapi.Request
) -> TokenPublic:
    pair = await accounts.login(
        res.auth,
        email=body.email,
        password=body.password,
        address=deps.client_address(request),
        endpoint=deps.endpoint_of(request),
    )
    return _token_public(pair)


@router.post("/refresh", dependencies=[deps.Public])
async def refresh(
    body: RefreshRequest, res: deps.ResourcesDep, request: fastapi.Request
) -> TokenPublic:
    pair = await accounts.refresh(
        res.auth, refresh_token=body.refresh_token, endpoint=deps.endpoint_of(request)
    )
    return _token_public(pair)


@router.post("/logout", status_code=204)
async def logout(
    principal: deps.CurrentUser, res: deps.ResourcesDep, request: fastapi.Request
) -> fastapi.Response:
    await accounts.logout(res.auth, principal, endpoint=deps.endpoint_of(request))
    return fastapi.Response(status_code=204)


@router.get("/me")
async def me(principal: deps.CurrentUser, res: deps.ResourcesDep) -> UserPublic:
    async with res.pool.acquire() as conn:
        return _user_public(await accounts.get_user(conn, principal.user_id))
