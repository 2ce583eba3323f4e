"""JWT access tokens: RS256 only, every registered claim required and checked."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from starkmatter.core import errors

ALGORITHMS = ["RS256"]
"""The one allow-list: ``none`` and HMAC algorithms are refused, so a token signed with the
public key as an HMAC secret (algorithm confusion) never verifies."""
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "jti", "sub", "sid", "roles"]
ROLES = frozenset({"trader", "admin", "service"})


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is asking: the token's subject, roles and session, and until when."""

    user_id: str
    roles: frozenset[str]
    session_id: str
    token_id: str
    expires_at: dt.datetime | None = None
    """The token's ``exp`` (UTC): a connection that outlives it must end (None: unknown, a
    principal made by hand rather than decoded)."""

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


@dataclasses.dataclass(frozen=True)
class TokenConfig:
    issuer: str
    audience: str
    ttl_s: int
    leeway_s: int


def issue(
    private_pem: str,
    config: TokenConfig,
    *,
    user_id: str,
    roles: Sequence[str],
    session_id: str,
    now: dt.datetime | None = None,
) -> tuple[str, dt.datetime]:
    issued = now or dt.datetime.now(dt.UTC)
    expires = issued + dt.timedelta(seconds=config.ttl_s)
    claims = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": user_id,
        "sid": session_id,
        "jti": uuid.uuid4().hex,
        "roles": sorted(roles),
        "iat": issued,
        "nbf": issued,
        "exp": expires,
    }
    return jwt.encode(claims, private_pem, algorithm="RS256"), expires


@functools.lru_cache(maxsize=8)
def _public_key(public_pem: str) -> Any:
    # Parsing PEM costs about a millisecond; tokens are verified on every request.
    return serialization.load_pem_public_key(public_pem.encode())


VERIFIED_CACHE_SIZE = 4096
"""tokens remembered as verified, per process (a trader sends the same token for minutes)"""
_verified: dict[tuple[str, str, TokenConfig], tuple[Principal, float, float]] = {}


def decode(token: str, public_pem: str, config: TokenConfig) -> Principal:
    """Verify signature and claims; every failure is the same 401 with a precise reason code.

    A token verified once is remembered until it expires: its signature and claims cannot
    change, so only its validity window is checked again (about 8% of an API request's CPU
    otherwise). Whether its session is still open is the caller's check, on every request.
    """
    key = (token, public_pem, config)
    known = _verified.get(key)
    if known is not None:
        principal, valid_from, valid_until = known
        if valid_from <= time.time() < valid_until:
            return principal
        del _verified[key]  # verified again below, for the precise reason code
    principal, claims = _verify(token, public_pem, config)
    if len(_verified) >= VERIFIED_CACHE_SIZE:
        del _verified[next(iter(_verified))]
    leeway = config.leeway_s
    not_before = max(float(claims["nbf"]), float(claims["iat"]))
    _verified[key] = (principal, not_before - leeway, float(claims["exp"]) + leeway)
    return principal


def _verify(token: str, public_pem: str, config: TokenConfig) -> tuple[Principal, dict[str, Any]]:
    try:
        claims = jwt.decode(
            token,
            _public_key(public_pem),
            algorithms=ALGORITHMS,
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway_s,
            options={"require": REQUIRED_CLAIMS, "verify_iat": True},
        )
    except jwt.ExpiredSignatureError:
        raise errors.Unauthenticated("access token expired", code="token_expired") from None
    except jwt.ImmatureSignatureError:
        raise errors.Unauthenticated("access token not yet valid", code="token_invalid") from None
    except jwt.InvalidTokenError as exc:
        raise errors.Unauthenticated(
            f"invalid access token: {type(exc).__name__}", code="token_invalid"
        ) from None
    roles = claims["roles"]
    if not isinstance(roles, list) or not set(roles) <= ROLES:
        raise errors.Unauthenticated("invalid access token: roles", code="token_invalid")
    principal = Principal(
        user_id=str(claims["sub"]),
        roles=frozenset(roles),
        session_id=str(claims["sid"]),
        token_id=str(claims["jti"]),
        expires_at=dt.datetime.fromtimestamp(float(claims["exp"]), dt.UTC),
    )
    return principal, claims
