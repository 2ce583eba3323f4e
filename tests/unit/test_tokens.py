"""Access tokens: only RS256 tokens with every claim right are accepted."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import time

import jwt
import pytest

from starkmatter.core import errors
from starkmatter.core.auth import keys, tokens

CONFIG = tokens.TokenConfig(issuer="starkmatter", audience="starkmatter-api", ttl_s=900, leeway_s=0)


@dataclasses.dataclass(frozen=True)
class Keys:
    public_pem: str
    private_pem: str


@pytest.fixture(scope="module")
def keypair() -> Keys:
    private = keys.generate_private_pem()
    return Keys(keys.public_from_private(private), private)


def _claims(**overrides: object) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, object] = {
        "iss": "starkmatter",
        "aud": "starkmatter-api",
        "sub": "u1",
        "sid": "s1",
        "jti": "j1",
        "roles": ["trader"],
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(minutes=5),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _reject(token: str, keypair: Keys) -> errors.Unauthenticated:
    with pytest.raises(errors.Unauthenticated) as caught:
        tokens.decode(token, keypair.public_pem, CONFIG)
    return caught.value


def test_issued_token_decodes_to_its_principal(keypair: Keys) -> None:
    token, _ = tokens.issue(
        keypair.private_pem, CONFIG, user_id="u1", roles=["trader"], session_id="s1"
    )
    principal = tokens.decode(token, keypair.public_pem, CONFIG)
    assert (principal.user_id, principal.roles, principal.session_id) == (
        "u1",
        frozenset({"trader"}),
        "s1",
    )


def test_decoded_principal_carries_the_token_expiry(keypair: Keys) -> None:
    # The gateway closes a connection at this instant (plus leeway): it must be exp itself.
    issued = dt.datetime.now(dt.UTC).replace(microsecond=0)
    token, expires = tokens.issue(
        keypair.private_pem, CONFIG, user_id="u1", roles=["trader"], session_id="s1", now=issued
    )
    for _ in range(2):  # verified, then from the cache of verified tokens
        principal = tokens.decode(token, keypair.public_pem, CONFIG)
        assert principal.expires_at == expires == issued + dt.timedelta(seconds=CONFIG.ttl_s)
        assert principal.expires_at.tzinfo is not None


def test_expired_token_is_rejected_as_expired(keypair: Keys) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    token = jwt.encode(
        _claims(iat=past, nbf=past, exp=past + dt.timedelta(minutes=1)),
        keypair.private_pem,
        algorithm="RS256",
    )
    assert _reject(token, keypair).code == "token_expired"


def test_a_token_verified_before_is_rejected_once_it_expires(keypair: Keys) -> None:
    expires = int(time.time()) + 2
    token = jwt.encode(
        _claims(exp=dt.datetime.fromtimestamp(expires, dt.UTC)),
        keypair.private_pem,
        algorithm="RS256",
    )
    assert tokens.decode(token, keypair.public_pem, CONFIG).user_id == "u1"
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    assert _reject(token, keypair).code == "token_expired"


def test_a_token_verified_for_one_audience_is_checked_again_for_another(keypair: Keys) -> None:
    token, _ = tokens.issue(
        keypair.private_pem, CONFIG, user_id="u1", roles=["trader"], session_id="s1"
    )
    assert tokens.decode(token, keypair.public_pem, CONFIG).user_id == "u1"
    other = dataclasses.replace(CONFIG, audience="another-service")
    with pytest.raises(errors.Unauthenticated, match="InvalidAudience"):
        tokens.decode(token, keypair.public_pem, other)


def test_not_yet_valid_token_is_rejected(keypair: Keys) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    token = jwt.encode(
        _claims(nbf=future, exp=future + dt.timedelta(hours=1)),
        keypair.private_pem,
        algorithm="RS256",
    )
    assert _reject(token, keypair).code == "token_invalid"


def test_wrong_audience_is_rejected(keypair: Keys) -> None:
    token = jwt.encode(_claims(aud="another-service"), keypair.private_pem, algorithm="RS256")
    assert "InvalidAudience" in _reject(token, keypair).message


def test_wrong_issuer_is_rejected(keypair: Keys) -> None:
    token = jwt.encode(_claims(iss="someone-else"), keypair.private_pem, algorithm="RS256")
    assert "InvalidIssuer" in _reject(token, keypair).message


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti", "sub", "sid", "roles"])
def test_token_missing_a_required_claim_is_rejected(keypair: Keys, claim: str) -> None:
    token = jwt.encode(_claims(**{claim: None}), keypair.private_pem, algorithm="RS256")
    assert "MissingRequiredClaim" in _reject(token, keypair).message


def test_tampered_payload_fails_the_signature_check(keypair: Keys) -> None:
    token = jwt.encode(_claims(), keypair.private_pem, algorithm="RS256")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert "InvalidSignature" in _reject(f"{header}.{forged}.{signature}", keypair).message


def test_alg_none_token_is_rejected(keypair: Keys) -> None:
    unsigned = jwt.encode(_claims(), key="", algorithm="none")
    assert _reject(unsigned, keypair).code == "token_invalid"


def test_hmac_token_signed_with_the_public_key_is_rejected(keypair: Keys) -> None:
    # Algorithm confusion: an attacker who knows the public key uses it as an HMAC secret.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {
        k: (int(v.timestamp()) if isinstance(v, dt.datetime) else v) for k, v in _claims().items()
    }
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(keypair.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    assert "InvalidAlgorithm" in _reject(f"{signing_input}.{b64(mac)}", keypair).message


def test_token_signed_by_another_key_is_rejected(keypair: Keys) -> None:
    token = jwt.encode(_claims(), keys.generate_private_pem(), algorithm="RS256")
    assert "InvalidSignature" in _reject(token, keypair).message


def test_unknown_role_in_token_is_rejected(keypair: Keys) -> None:
    token = jwt.encode(_claims(roles=["superuser"]), keypair.private_pem, algorithm="RS256")
    assert _reject(token, keypair).code == "token_invalid"
