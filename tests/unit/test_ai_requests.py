from __future__ import annotations

import anthropic._data
import pydantic
import pytest

from starkmatter.ai import config, models


def _normalized(user: str = "u1", **body: object) -> models.NormalizedRequest:
    body.setdefault("symbols", ["AAPL"])
    return models.normalize(models.AnalyzeRequest.model_validate(body), user)


def test_default_model_is_not_deprecated_in_the_installed_sdk() -> None:
    assert config.DEFAULT_MODEL not in anthropic._data.DEPRECATED_MODELS


def test_model_is_configurable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARKMATTER_AI_MODEL", "claude-opus-4-7")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-x")
    settings = config.AISettings()
    assert settings.model == "claude-opus-4-7"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "test-key-x"


def test_same_request_written_differently_has_one_cache_key() -> None:
    a = _normalized(symbols=["msft", "AAPL", "aapl"], question="Where is AAPL  heading?")
    b = _normalized(symbols=["AAPL", "MSFT"], question="where is aapl heading")
    assert a == b
    assert models.cache_key(a, "v1", "m") == models.cache_key(b, "v1", "m")


def test_new_data_or_model_changes_the_cache_key() -> None:
    n = _normalized()
    keys = {models.cache_key(n, "v1", "m"), models.cache_key(n, "v2", "m")}
    keys.add(models.cache_key(n, "v1", "other-model"))
    assert len(keys) == 3


def test_portfolio_risk_is_never_shared_between_users() -> None:
    a = _normalized("u1", kind="portfolio_risk")
    b = _normalized("u2", kind="portfolio_risk")
    assert models.cache_key(a, "v", "m") != models.cache_key(b, "v", "m")
    assert _normalized("u1") == _normalized("u2")


def test_unknown_fields_and_kinds_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        models.AnalyzeRequest.model_validate({"symbols": ["A"], "kind": "astrology"})
    with pytest.raises(pydantic.ValidationError):
        models.AnalyzeRequest.model_validate({"symbols": ["A"], "temperature": 2})


def test_a_question_with_control_characters_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        models.AnalyzeRequest.model_validate({"symbols": ["A"], "question": "why\x00 so?"})
    ok = models.AnalyzeRequest.model_validate({"symbols": ["A"], "question": "why so high?"})
    assert ok.question == "why so high?"
