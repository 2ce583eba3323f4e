"""`starkmatter ingest` on a csv feed: a finished replay is reported and the process stays
up (probes served, heartbeat sent) instead of exiting, so a Deployment does not restart it
and replay the file again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis

from starkmatter.core import embedded, settings
from tests.integration.market import ingest_process

pytestmark = pytest.mark.timeout(90)
CSV = """type,symbol,ts,price,size,trade_id
trade,AAPL,2024-01-02T14:30:00.120Z,187.15,100,r1
trade,AAPL,2024-01-02T14:30:00.480Z,187.18,250,r2
trade,AAPL,2024-01-02T14:30:01.050Z,187.10,50,r3
trade,AAPL,2024-01-02T14:31:00.010Z,187.32,300,r4
"""


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return int(answer.status), answer.read().decode()


@contextlib.asynccontextmanager
async def _ingest(
    config: settings.Settings, tmp_path: Path, feed: str, *, speed: float = 0, port: int = 0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``starkmatter ingest`` as its own process, replaying CSV (JSON logs on stderr); killed
    on the way out if the test did not stop it."""
    (tmp_path / "aapl.csv").write_text(CSV)
    spec = tmp_path / "feed.json"
    spec.write_text(json.dumps({"provider": "csv", "symbols": ["AAPL"], "speed": speed,
                                "referencePrices": {"AAPL": "185.64"},
                                "path": str(tmp_path / "aapl.csv")}))  # fmt: skip
    # STARKMATTER_API_HOST as the operator's pod sets it
    env = ingest_process.ingest_env(config, tmp_path, STARKMATTER_API_HOST="0.0.0.0")
    if port:
        env["STARKMATTER_METRICS_PORT"] = str(port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starkmatter.cli", "ingest", "--feed", feed, "--config",
        str(spec), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until_replay_finished(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """The worker's ``ingest.replay_finished`` log line."""
    assert proc.stderr is not None
    async with asyncio.timeout(45):
        while True:
            line = await proc.stderr.readline()
            assert line, f"ingest exited ({await proc.wait()}) before finishing the replay"
            with_event = json.loads(line) if line.startswith(b"{") else {}
            if with_event.get("event") == "ingest.replay_finished":
                return with_event


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-2000:]


async def test_finished_replay_is_reported_and_the_worker_stays_up_serving_probes(
    config: settings.Settings, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    port = embedded.free_port()
    async with (
        _ingest(config, tmp_path, "replayed", port=port) as proc,
        aioredis.Redis.from_url(config.redis_url or "", decode_responses=True) as redis,
    ):
        finished = await _until_replay_finished(proc)
        assert (finished["feed"], finished["accepted"], finished["rejected"]) == ("replayed", 4, 0)

        key = "feed:heartbeat:replayed"
        stamp = await redis.hget(key, "replay_finished_ts")
        assert stamp
        # Later heartbeats still come (a live worker) and still carry the finish time.
        before = await redis.hget(key, "updated_ts")
        async with asyncio.timeout(20):
            while await redis.hget(key, "updated_ts") == before:  # noqa: ASYNC110 - written by another process
                await asyncio.sleep(0.1)
        assert await redis.hget(key, "replay_finished_ts") == stamp
        assert proc.returncode is None

        # The probes listen on every address (a kubelet probes the pod's, not loopback).
        listening = {
            c.laddr.ip
            for c in psutil.Process(proc.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"0.0.0.0"}
        assert (await asyncio.to_thread(_get, port, "/healthz"))[0] == 200
        assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200
        _, exposition = await asyncio.to_thread(_get, port, "/metrics")
        assert 'starkmatter_ingest_replay_finished_timestamp_seconds{feed="replayed"}' in (
            exposition
        )
        rows = await db.fetch("SELECT price::text FROM market_ticks ORDER BY ts")
        assert [r["price"] for r in rows] == [
            "187.15000000",
            "187.18000000",
            "187.10000000",
            "187.32000000",
        ]
        # Nothing was written twice: no batch collided with stored rows (no second pass).
        assert "starkmatter_ingest_deduplicated_batches_total{" not in exposition

        await _stop(proc)


async def test_a_new_replay_clears_the_previous_runs_finish_time_until_it_finishes(
    config: settings.Settings, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    key = "feed:heartbeat:again"
    stale = {"replay_finished_ts": "2026-12-01T06:00:02.731904Z",
             "updated_ts": "2026-12-01T06:00:03.000000Z"}  # fmt: skip
    async with aioredis.Redis.from_url(config.redis_url or "", decode_responses=True) as redis:
        await redis.hset(key, mapping=stale)  # type: ignore[arg-type]
    # Paced: the file's trades span a minute, replayed 10x faster (about 6 s), so the
    # worker's heartbeats (every second) come while the replay still runs.
    async with (
        _ingest(config, tmp_path, "again", speed=10) as proc,
        aioredis.Redis.from_url(config.redis_url or "", decode_responses=True) as redis,
    ):
        async with asyncio.timeout(30):
            while await redis.hget(key, "updated_ts") == stale["updated_ts"]:  # noqa: ASYNC110 - written by another process
                await asyncio.sleep(0.05)
        running = await redis.hgetall(key)
        assert "last_tick_ts" in running  # this run's ticks
        assert "replay_finished_ts" not in running

        finished = await _until_replay_finished(proc)
        assert finished["accepted"] == 4
        stamp, seen_running = await redis.hget(key, "replay_finished_ts"), running["updated_ts"]
        assert isinstance(stamp, str) and isinstance(seen_running, str)
        assert stamp > stale["replay_finished_ts"]
        # The heartbeat seen above was sent before this run finished: mid-replay.
        assert stamp > seen_running
        await _stop(proc)
