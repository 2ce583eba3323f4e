"""JWT signing keys: loaded from settings, or generated once in dev mode."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from starkmatter.core import settings


@dataclasses.dataclass(frozen=True)
class KeyPair:
    public_pem: str
    private_pem: str | None
    """None in services that only verify tokens (least privilege: they cannot mint)."""


def generate_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_from_private(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def dev_key_file(data_dir: Path) -> Path:
    """Where dev mode keeps its generated key (0600), created on first use."""
    path = data_dir / "jwt-private.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_private_pem())
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return path


def load(config: settings.Settings) -> KeyPair:
    private_pem = config.private_key_pem()
    public_pem = config.public_key_pem()
    if private_pem is not None:
        return KeyPair(public_pem or public_from_private(private_pem), private_pem)
    if public_pem is not None:
        return KeyPair(public_pem, None)
    raise settings.SettingsError(
        "STARKMATTER_JWT_PRIVATE_KEY(_FILE) or STARKMATTER_JWT_PUBLIC_KEY(_FILE) must be set"
    )
