"""HighLatency reads p99 from a service's Prometheus histogram over HTTP, between scrapes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import fastapi
import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette import responses

from starkmatter.alerts import evaluating
from starkmatter.core import embedded, logs

T0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
BOUNDS = ("0.005", "0.05", "0.5", "+Inf")


def _exposition(counts: tuple[int, int, int, int]) -> str:
    lines = ["# TYPE starkmatter_http_request_duration_seconds histogram"]
    for bound, count in zip(BOUNDS, counts, strict=True):
        lines.append(
            'starkmatter_http_request_duration_seconds_bucket{method="GET",route="/x",'
            f'status="200",le="{bound}"}} {count}'
        )
    labels = '{method="GET",route="/x",status="200"}'
    lines.append(f"starkmatter_http_request_duration_seconds_count{labels} {counts[-1]}")
    lines.append(f"starkmatter_http_request_duration_seconds_sum{labels} 1.0")
    return "\n".join(lines) + "\n"


@pytest.fixture
async def metrics_server() -> AsyncIterator[tuple[str, list[str]]]:
    """Serves the scripted expositions one per scrape (the last one repeats)."""
    script: list[str] = []
    app = fastapi.FastAPI()

    @app.get("/metrics")
    async def metrics() -> responses.Response:
        body = script.pop(0) if len(script) > 1 else script[0]
        return responses.Response(body, media_type="text/plain; version=0.0.4")

    port = embedded.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}/metrics", script
    server.should_exit = True
    await task


async def test_high_latency_fires_on_the_recent_p99_and_resolves_when_it_drops(
    db: asyncpg.Connection[object],
    database_url: str,
    redis: aioredis.Redis,
    tmp_path: Path,
    metrics_server: tuple[str, list[str]],
) -> None:
    url, script = metrics_server
    (tmp_path / "latency.json").write_text(
        json.dumps({"metadata": {"name": "api-p99"},
                    "spec": {"condition": "HighLatency", "threshold": "100", "for": "30s"}})
    )  # fmt: skip
    script += [
        _exposition((1000, 1000, 1000, 1000)),
        _exposition((1000, 1000, 1100, 1100)),  # 100 new requests, all 50-500 ms: p99 500 ms
        _exposition((1000, 1000, 1200, 1200)),
        _exposition((2000, 2000, 1200 + 1000, 2200)),  # 1000 fast requests: p99 5 ms
        _exposition((3000, 3000, 3200, 3200)),
        _exposition((4000, 4000, 4200, 4200)),
    ]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path, metrics_url=url)
    states = []
    for i in range(6):
        for event in await evaluator.evaluate_once(T0 + dt.timedelta(seconds=30 * i)):
            states.append((i, event["state"], event["details"]["value"]))
    await evaluator.aclose()
    await pool.close()
    assert states == [(2, "firing", "500.000"), (4, "resolved", "5.000")]


async def test_a_failed_rules_error_reaches_the_log_whole_and_masked(
    database_url: str,
    redis: aioredis.Redis,
    tmp_path: Path,
    metrics_server: tuple[str, list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A bucket bound that is no number: the rule fails with the bound in its error, here
    # a secret that straddles the 300th character, where the error text used to be cut.
    url, script = metrics_server
    (tmp_path / "latency.json").write_text(
        json.dumps({"metadata": {"name": "api-p99"},
                    "spec": {"condition": "HighLatency", "threshold": "100", "for": "30s"}})
    )  # fmt: skip
    described = "ValueError: could not convert string to float: \"{'password': '"
    bound = "x" * (300 - len(described) - 5) + "{'password': 'hunter2 secret'}"
    script.append(
        "# TYPE starkmatter_http_request_duration_seconds histogram\n"
        f'starkmatter_http_request_duration_seconds_bucket{{le="{bound}"}} 1\n'
    )
    logs.configure("INFO", json=True)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path, metrics_url=url)
    try:
        assert await evaluator.evaluate_once(T0) == []
    finally:
        await evaluator.aclose()
        await pool.close()
    (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()
               if '"alerts.rule_failed"' in line]  # fmt: skip
    assert line["rule"] == "api-p99"
    assert "hunter2" not in line["error"]
    assert line["error"].endswith("{'password': '***'}\"")
