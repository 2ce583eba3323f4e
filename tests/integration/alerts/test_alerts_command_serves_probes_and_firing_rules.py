"""``starkmatter alerts`` as its Deployment runs it serves /healthz, /readyz and /metrics on
its metrics port: the chart probes that port and the operator reads which rules fire there."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sys
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from starkmatter.core import embedded, settings

pytestmark = pytest.mark.timeout(90)


async def test_the_alerts_command_answers_its_probes_and_shows_a_firing_rule(
    config: settings.Settings, redis: aioredis.Redis, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = {"condition": "PriceAbove", "symbol": "MSFT", "threshold": "100", "for": "0s"}
    (rules / "msft-high.json").write_text(
        json.dumps({"metadata": {"name": "msft-high"}, "spec": rule})
    )
    quote = {"symbol": "MSFT", "last": "150", "ts": dt.datetime.now(dt.UTC).isoformat()}
    await redis.set("quote:MSFT", json.dumps(quote))
    metrics_port = embedded.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}
    env.update(
        STARKMATTER_ENV="prod",
        STARKMATTER_DATABASE_URL=str(config.database_url),
        STARKMATTER_REDIS_URL=str(config.redis_url),
        STARKMATTER_JWT_PRIVATE_KEY=config.private_key_pem() or "",
        STARKMATTER_METRICS_PORT=str(metrics_port),
        STARKMATTER_ALERT_RULES_DIR=str(rules),
        STARKMATTER_DB_POOL_MIN="1",
    )
    log_path = tmp_path / "alerts.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starkmatter.cli", "alerts", env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{metrics_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            firing = 'starkmatter_alerts_firing{rule="msft-high",severity="warning"} 1.0'
            for _ in range(600):
                assert proc.returncode is None, f"starkmatter alerts exited; see {log_path}"
                with contextlib.suppress(httpx.TransportError):
                    if firing in (await client.get("/metrics")).text:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"no firing rule on {base}/metrics; see {log_path}")
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
