"""Settings: validated at start, with a message that names the bad variable."""

from __future__ import annotations

import os

import pytest

from starkmatter.core import settings


def test_bad_variable_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARKMATTER_API_PORT", "not-a-port")
    with pytest.raises(settings.SettingsError, match="STARKMATTER_API_PORT"):
        settings.load(env="dev")


def test_wrong_database_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARKMATTER_DATABASE_URL", "mysql://localhost/db")
    with pytest.raises(settings.SettingsError, match="STARKMATTER_DATABASE_URL"):
        settings.load(env="dev")


def test_production_requires_database_and_redis_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STARKMATTER_DATABASE_URL", raising=False)
    monkeypatch.delenv("STARKMATTER_REDIS_URL", raising=False)
    with pytest.raises(settings.SettingsError) as caught:
        settings.load(env="prod")
    assert "STARKMATTER_DATABASE_URL" in str(caught.value)
    assert "STARKMATTER_REDIS_URL" in str(caught.value)


def test_environment_variables_configure_external_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARKMATTER_DATABASE_URL", "postgresql://db.internal/starkmatter")
    monkeypatch.setenv("STARKMATTER_REDIS_URL", "redis://cache.internal:6379/0")
    config = settings.load()
    assert config.env == "prod"
    assert config.database_url == "postgresql://db.internal/starkmatter"
    assert config.redis_url == "redis://cache.internal:6379/0"


def test_private_key_never_appears_in_the_settings_repr() -> None:
    config = settings.load(env="dev", jwt_private_key="-----BEGIN PRIVATE KEY-----abc")
    assert "BEGIN PRIVATE KEY" not in repr(config)


def test_docs_are_off_by_default_and_on_in_dev_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith(settings.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STARKMATTER_DATABASE_URL", "postgresql://db.example/starkmatter")
    monkeypatch.setenv("STARKMATTER_REDIS_URL", "redis://redis.example:6379/0")
    assert settings.for_command("api").api_docs is False
    assert settings.for_command("dev").api_docs is True
    monkeypatch.setenv("STARKMATTER_API_DOCS", "false")
    assert settings.for_command("dev").api_docs is False
    monkeypatch.setenv("STARKMATTER_API_DOCS", "true")
    assert settings.for_command("api").api_docs is True
