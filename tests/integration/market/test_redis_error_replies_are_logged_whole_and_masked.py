"""Redis error replies reach the log whole, so the log masks a secret in them before it cuts.

Redis echoes an unknown command's name and arguments in its error; cut at a fixed length
before the log saw it, a secret straddling the cut lost its closing quote and half of it
was left readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from starkmatter.gateway import subscribing
from starkmatter.ingest import publishing

pytestmark = pytest.mark.timeout(30)
SECRET_FIELD = '{"password": "hunter2secret"}'


def _logged(err: str, event: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if f'"{event}"' in line]


async def test_an_error_reply_to_the_ingest_publisher_is_logged_masked(
    redis: aioredis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command's name pushes the echoed secret across the 200th character of the reply.
    writer = publishing.RedisWriter(redis)
    try:
        await writer.write([publishing.encode(b"N" * 129, SECRET_FIELD.encode())])
        await writer.settle()
        assert writer.errors == 1
    finally:
        await writer.close()
    (line,) = _logged(capsys.readouterr().err, "ingest.redis_error")
    error = line["error"]
    assert error.index('"password": "') + len('"password": "') in range(190, 200)
    assert "hunt" not in error
    assert '{"password": "***"}' in error


async def test_a_refused_gateway_subscriber_handshake_is_logged_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A server in front of Redis refuses the handshake, a secret across its reply's 80th byte.
    refusal = b"-ERR " + b"x" * 55 + SECRET_FIELD.encode() + b"\r\n"
    connections = 0

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read(1024)
        writer.write(refusal)
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}")
    subscriber = subscribing.Subscriber(client, lambda channels, payloads: None)
    starting = asyncio.create_task(subscriber.start())
    try:
        async with asyncio.timeout(10):
            while connections < 2:  # noqa: ASYNC110 - the state lives in the server's handler
                await asyncio.sleep(0.02)
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await starting
        await subscriber.stop()
        await client.aclose()
        server.close()
        await server.wait_closed()
    line = _logged(capsys.readouterr().err, "gateway.redis_connect_failed")[0]
    assert line["error"].startswith("redis refused the subscriber: b'-ERR xxx")
    assert "hunt" not in line["error"]
    assert '{"password": "***"}' in line["error"]
