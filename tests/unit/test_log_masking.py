"""Logs: tokens, passwords and personal data are masked in every line."""

from __future__ import annotations

import json

import pytest

from starkmatter.core import logs


def test_sensitive_keys_are_masked_whatever_their_value() -> None:
    masked = logs.mask({"password": "hunter2", "nested": {"refresh_token": "abc"}, "ok": 1})
    assert masked == {"password": logs.MASK, "nested": {"refresh_token": logs.MASK}, "ok": 1}


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abc.def.ghi",
        "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl",
        "connecting to postgresql://app:s3cret-pw@db:5432/x",
        "user jane.doe@example.com logged in",
        "key sk-" + "ant-api03-abcdefghijkl",  # split: not a real key, and no scanner alarm
        "fetching https://news.example/v2?apiKey=abc.def.ghi&page=2: HTTP 401",
        "fetching https://news.example/v2?page=2&token=s3cret-pw: HTTP 401",
        "fetching https://news.example/v2?api_key=abcdefghijkl",
    ],
)
def test_secrets_inside_free_text_are_masked(text: str) -> None:
    masked = logs.mask_text(text)
    for secret in (
        "abc.def.ghi",
        "eyJzdWIiOiJ1MSJ9",
        "s3cret-pw",
        "jane.doe@example.com",
        "abcdefghijkl",
    ):
        assert secret not in masked


def test_a_rendered_log_line_is_json_without_the_secret(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", json=True)
    logs.get_logger("test").info("login.attempt", email="jane@example.com", password="hunter2")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "login.attempt"
    assert "hunter2" not in line
    assert "jane@example.com" not in line
