"""``starkmatter gateway`` as a process: the command a Deployment runs, on uvloop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio import client as ws_client

from starkmatter.core import embedded, settings
from tests.integration.market.gateway_support import recv_json, sign_in

pytestmark = pytest.mark.timeout(60)


async def test_the_gateway_command_serves_on_uvloop_and_stops_gracefully_on_sigterm(
    config: settings.Settings, redis: aioredis.Redis
) -> None:
    port, metrics_port = embedded.free_port(), embedded.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}
    env.update(
        {
            "STARKMATTER_ENV": "dev",
            "STARKMATTER_DATABASE_URL": str(config.database_url),
            "STARKMATTER_REDIS_URL": str(config.redis_url),
            "STARKMATTER_JWT_PRIVATE_KEY": config.private_key_pem() or "",
            "STARKMATTER_DATA_DIR": str(config.data_dir),
            "STARKMATTER_LOG_JSON": "true",
            "STARKMATTER_METRICS_PORT": str(metrics_port),
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starkmatter.cli", "gateway", "--host", "127.0.0.1",
        "--port", str(port), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        started: dict[str, object] = {}
        async with asyncio.timeout(30):
            while not started:
                line = await process.stdout.readline()
                assert line, "the gateway exited before it started"
                if b"gateway.started" in line:
                    started = json.loads(line)
        assert started["loop"] == "uvloop" and started["port"] == port
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/metrics")).status_code == 404
            metrics = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert "starkmatter_gateway_connections" in metrics.text
        await redis.set("quote:AAPL", b'{"bid": "1"}')
        token = await sign_in(config, redis, "u1")
        async with ws_client.connect(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
            await ws.send(json.dumps({"op": "subscribe", "topics": ["market:quotes:AAPL"]}))
            assert (await recv_json(ws))["data"] == {"bid": "1"}
            await redis.publish("market:quotes:AAPL", b'{"bid": "2"}')
            assert (await recv_json(ws))["data"] == {"bid": "2"}
            process.send_signal(signal.SIGTERM)
            await ws.wait_closed()
            assert ws.close_code == 1012
        async with asyncio.timeout(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
