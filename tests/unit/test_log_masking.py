"""Logs: tokens, passwords and personal data are masked in every line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("could not connect: host=db user=sm password=hunter2secret dbname=sm", "hunter2secret"),
        ("login failed password: hunter2secret", "hunter2secret"),
        ("login failed Password = 'hunter 2 secret'", "hunter 2 secret"),
        ("Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
        ("headers={'Authorization': 'Basic dXNlcjpodW50ZXIy'}", "dXNlcjpodW50ZXIy"),
        ("x-api-key: abcd1234efgh5678", "abcd1234efgh5678"),
        ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
        ('{"client_secret": "s3cr3t-value", "region": "eu"}', "s3cr3t-value"),
        ('body {"token":"opaque-refresh-value"}', "opaque-refresh-value"),
        ("refresh_token=opaque-refresh-value", "opaque-refresh-value"),
        ("api_key: abcd1234efgh5678", "abcd1234efgh5678"),
        ("apikey=abcd1234efgh5678", "abcd1234efgh5678"),
        ("access_key=abcd1234efgh5678 region=eu", "abcd1234efgh5678"),
        ("secret: abcd1234efgh5678", "abcd1234efgh5678"),
        ("APCA-API-SECRET-KEY: abcd1234efgh5678", "abcd1234efgh5678"),
        ("{'secret_key': 'abcd1234efgh5678'}", "abcd1234efgh5678"),
        ("fetching https://news.example/v2?client_secret=abcd1234efgh5678", "abcd1234efgh5678"),
        # An unencoded '@' in a URL's password: no tail of it may pass for the host.
        ("redis://default:p@ssw0rd@redis:6379/0", "ssw0rd"),
        # A message some caller cut inside the credentials, before the '@'.
        ("postgresql://sm:hunter2secret@db:5432/sm"[:29], "hunter2secret"),
        ("OSError('connect postgresql://sm:hunter2secret@db:5432/sm')"[:45], "hunter2"),
        # A JWT cut before its signature still names its subject.
        ("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0", "eyJzdWIiOiJ1In0"),
        # Redis echoes an AUTH it does not know (renamed, or a proxy) with its password.
        ("ERR unknown command `AUTH`, with args beginning with: `hunter2secret` ", "hunter2"),
        ("ERR unknown command 'HELLO', with args beginning with: '3' 'AUTH' 'u' 'pw-1x'", "pw-1x"),
    ],
)
def test_secrets_after_a_key_or_inside_a_url_are_masked(text: str, secret: str) -> None:
    assert secret not in logs.mask_text(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Only the value after a secret's key goes: "token" inside a reason code stays.
        (
            "auth.refresh_failed reason=token_expired refresh_token=abc123 attempts=2",
            "auth.refresh_failed reason=token_expired refresh_token=*** attempts=2",
        ),
        (
            '{"input_tokens": 500, "api_key": "abcd1234", "model": "m"}',
            '{"input_tokens": 500, "api_key": "***", "model": "m"}',
        ),
        ("Authorization: Basic dXNlcjpodW50ZXIy", "Authorization: Basic ***"),
        (
            "{'Authorization': 'Bearer abc.def', 'Accept': 'x'}",
            "{'Authorization': '***', 'Accept': 'x'}",
        ),
        ("redis://default:p@ss@redis:6379/0 refused", "redis://default:***@redis:6379/0 refused"),
        (
            "host=db port=5432 password=hunter2 dbname=sm",
            "host=db port=5432 password=*** dbname=sm",
        ),
        # A port at the end is no password cut short.
        ("api_key=abcd1234 polling http://news:8080", "api_key=*** polling http://news:8080"),
    ],
)
def test_masking_keeps_the_rest_of_the_text_readable(text: str, expected: str) -> None:
    assert logs.mask_text(text) == expected


def test_long_values_are_cut_after_masking(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", json=True)
    # The password straddles the cut: cut first, it would no longer look like a URL's.
    dsn = "postgresql://sm:hunter2secret@db:5432/sm"
    error = "x" * (logs.MAX_VALUE_CHARS - 20) + " " + dsn + " " + "y" * 500
    try:
        raise ConnectionError(error)
    except ConnectionError:
        logs.get_logger("test").exception("db.connect_failed", error=error, detail={"why": error})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert "hunter2" not in line
    assert len(record["error"]) < logs.MAX_VALUE_CHARS + 40
    assert record["error"].startswith("x" * (logs.MAX_VALUE_CHARS - 20) + " postgresql://sm:***")
    assert len(record["detail"]["why"]) < logs.MAX_VALUE_CHARS + 40
    # A traceback is kept whole (masked all the same): its frames are what an operator reads.
    assert "y" * 500 in record["exception"]


def _every_pattern(text: str) -> str:
    for pattern, replacement in logs._SENSITIVE_VALUES:
        text = pattern.sub(replacement, text)
    return text


_PIECES = st.sampled_from(
    ["eyJ", "hbG", ".", "-", "_", ":", "=", "@", "/", "//", "?", "&", " ", "\t", "'", '"',
     "sk-ant-", "bearer", "Basic", "password", "token", "key", "x", "9", "host", "a.b"]
)  # fmt: skip


@given(st.lists(_PIECES, max_size=24).map("".join))
def test_text_the_quick_check_passes_over_is_masked_as_by_every_pattern(text: str) -> None:
    assert logs.mask_text(text) == _every_pattern(text)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('{"password": "hunter2 secret"}', "hunter2 secret"),
        ("{'api_key': 'abcdefghijkl'}", "abcdefghijkl"),
        ("user jane.doe@example.com", "jane.doe@example.com"),
    ],
)
def test_text_kept_outside_a_log_is_masked_before_it_is_cut(text: str, secret: str) -> None:
    # The cut falls inside the secret: cut first, the rest of its quoted or e-mail form
    # would be gone, and the half before the cut left readable.
    padding = 300 - text.index(secret) - 5
    long_text = "x" * padding + text + "y" * 500
    assert secret[:5] in logs.mask_text(long_text[:300])  # what cutting first would leave
    kept = logs.masked(long_text, 300)
    assert secret[:5] not in kept
    assert kept == logs.mask_text(long_text)[:300] + f"...[cut, {len(long_text)} chars]"
    assert logs.masked("short: password=hunter2", 300) == "short: password=***"
