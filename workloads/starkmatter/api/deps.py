"""Request dependencies, declared once and listed by routes.

Every route declares who may call it: ``Public`` for the few open endpoints, otherwise a
principal with a role (``CurrentUser`` = any signed-in user, ``TraderUser``, ``AdminUser``,
``ServiceUser``). A test walks every route and fails on one that declares neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import asyncpg
import fastapi
import redis.asyncio as aioredis
from fastapi import security

from starkmatter.api import resources
from starkmatter.core import errors
from starkmatter.core.auth import sessions, tokens

bearer = security.HTTPBearer(auto_error=False)
"""the ``Authorization: Bearer`` credentials, or None (``authenticate`` answers 401)"""


async def get_resources(request: fastapi.Request) -> resources.Resources:
    res: resources.Resources = request.app.state.resources
    return res


ResourcesDep = Annotated[resources.Resources, fastapi.Depends(get_resources)]


async def get_pool(res: ResourcesDep) -> asyncpg.Pool:
    return res.pool


async def get_redis(res: ResourcesDep) -> aioredis.Redis:
    return res.redis


DbDep = Annotated[asyncpg.Pool, fastapi.Depends(get_pool)]
RedisDep = Annotated[aioredis.Redis, fastapi.Depends(get_redis)]


async def public() -> None:
    """Marks a route as open to anyone (health, login, ...).

    Every dependency here is ``async``: FastAPI runs plain functions in a worker thread.
    """


Public = fastapi.Depends(public)


Bearer = Annotated[security.HTTPAuthorizationCredentials | None, fastapi.Depends(bearer)]


async def authenticate(
    request: fastapi.Request, credentials: security.HTTPAuthorizationCredentials | None
) -> tokens.Principal:
    """The caller's principal: a valid token of a session still open, or 401."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise errors.Unauthenticated()
    res: resources.Resources = request.app.state.resources
    return await sessions.authenticate(
        res.redis,
        credentials.credentials,
        res.keys.public_pem,
        res.token_config,
        res.open_sessions,
    )


def require_roles(*roles: str) -> Callable[..., Awaitable[tokens.Principal]]:
    # One dependency (plus the bearer scheme, which documents the security in OpenAPI),
    # not a chain: FastAPI spends tens of microseconds per dependency and request.
    async def dependency(request: fastapi.Request, credentials: Bearer) -> tokens.Principal:
        principal = await authenticate(request, credentials)
        if not principal.has_role(*roles):
            raise errors.Forbidden(f"requires role: {' or '.join(roles)}", code="forbidden")
        return principal

    dependency.required_roles = roles  # type: ignore[attr-defined]
    return dependency


CurrentUser = Annotated[
    tokens.Principal, fastapi.Depends(require_roles("trader", "admin", "service"))
]
trader = require_roles("trader", "admin")
"""the dependency behind ``TraderUser``, also called by hand on the hot path (api.hotpath)"""
TraderUser = Annotated[tokens.Principal, fastapi.Depends(trader)]
AdminUser = Annotated[tokens.Principal, fastapi.Depends(require_roles("admin"))]
ServiceUser = Annotated[tokens.Principal, fastapi.Depends(require_roles("service", "admin"))]


def client_address(request: fastapi.Request) -> str:
    return request.client.host if request.client else "unknown"


def endpoint_of(request: fastapi.Request) -> str:
    route = request.scope.get("route")
    path = route.path if route is not None else request.scope["path"]
    return f"{request.method} {path}"
