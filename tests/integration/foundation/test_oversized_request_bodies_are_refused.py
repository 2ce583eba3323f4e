"""A request body over the API's limit gets 413 in the one JSON error shape, whether its
size is announced (refused unread) or it arrives in chunks (cut off at the limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from starkmatter.api import app as api_app
from tests.support import LiveServer, sign_up

pytestmark = pytest.mark.timeout(60)

JSON = {"content-type": "application/json"}


async def chunks(total: int) -> AsyncIterator[bytes]:
    """No content-length: httpx sends these chunked."""
    yield b'{"email": "'
    for _ in range(total // 65536):
        yield b"a" * 65536
    yield b'"}'


@pytest.mark.parametrize("path", ["/auth/login", "/orders"])
@pytest.mark.parametrize("chunked", [False, True], ids=["announced", "chunked"])
async def test_a_body_over_the_limit_is_refused_with_413_in_the_error_shape(
    api: LiveServer, path: str, chunked: bool
) -> None:
    user = await sign_up(api.client)
    size = api_app.MAX_BODY_BYTES + 1
    body = chunks(size) if chunked else b"a" * size
    r = await api.client.post(path, headers={**JSON, **user.headers}, content=body)
    assert r.status_code == 413
    if not chunked:  # refused unread: the connection cannot carry another request
        assert r.headers["connection"] == "close"
    error = r.json()["error"]
    assert error["code"] == "payload_too_large"
    assert str(api_app.MAX_BODY_BYTES) in error["message"]


async def test_a_body_at_the_limit_is_read(api: LiveServer) -> None:
    body = b'{"email": "' + b"a" * (api_app.MAX_BODY_BYTES - 40) + b'", "password": "x"}'
    assert len(body) <= api_app.MAX_BODY_BYTES
    r = await api.client.post("/auth/login", headers=JSON, content=body)
    assert r.status_code == 422, r.text  # validated (the e-mail is too long), not refused
