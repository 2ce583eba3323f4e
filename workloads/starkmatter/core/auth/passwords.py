"""Password hashing with argon2id (OWASP's recommended parameters: 19 MiB, t=2, p=1)."""

from __future__ import annotations

import argon2

_hasher = argon2.PasswordHasher(
    time_cost=2, memory_cost=19 * 1024, parallelism=1, type=argon2.Type.ID
)
# Verifying against this when the account does not exist keeps the response time the same,
# so timing does not reveal which e-mail addresses are registered.
_DUMMY_HASH = _hasher.hash("starkmatter-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
