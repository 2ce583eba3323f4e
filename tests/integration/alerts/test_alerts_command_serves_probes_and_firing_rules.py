"""``starkmatter alerts`` as its Deployment runs it serves /healthz, /readyz and /metrics on
its metrics port: the chart probes that port and the operator reads which rules fire there."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from starkmatter.core import embedded, settings
from tests.support import command_env, running_command

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
    env = command_env(
        config, STARKMATTER_METRICS_PORT=str(metrics_port), STARKMATTER_ALERT_RULES_DIR=str(rules)
    )
    log_path = tmp_path / "alerts.log"
    base = f"http://127.0.0.1:{metrics_port}"
    async with (
        running_command(["alerts"], env, log_path) as proc,
        httpx.AsyncClient(base_url=base, timeout=5) as client,
    ):
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
