"""Identical requests in flight at the same time in two API server processes share one
upstream call: two real ``starkmatter api`` processes (each its own service, PostgreSQL pool
and Redis connections) against one loopback Messages API server that counts the calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from starkmatter.core import embedded, settings
from tests.integration.ai import anthropic_server
from tests.support import SignedIn, command_env, running_command, sign_up, until_healthy

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def api_process(
    config: settings.Settings, fake_url: str, log_path: Path, **extra_env: str
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.subprocess.Process]]:
    """``python -m starkmatter.cli api`` on a free port, with the SDK pointed at ``fake_url``."""
    port = embedded.free_port()
    env = command_env(
        config,
        STARKMATTER_API_PORT=str(port),
        # each process its own probe listener, as each pod has
        STARKMATTER_METRICS_PORT=str(embedded.free_port()),
        STARKMATTER_AI_BACKOFF_BASE_S="0.01",
        ANTHROPIC_API_KEY="test-anthropic-key",
        ANTHROPIC_BASE_URL=fake_url,
        **extra_env,
    )
    async with (
        running_command(["api"], env, log_path) as proc,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client,
    ):
        await until_healthy(client, proc, log_path)
        yield client, proc


async def _analyze(client: httpx.AsyncClient, user: SignedIn, body: dict[str, Any]) -> str:
    resp = await client.post("/ai/analyze", json=body, headers=user.headers)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert accepted["status"] == "pending", accepted
    return str(accepted["id"])


async def _done(client: httpx.AsyncClient, user: SignedIn, analysis_id: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 60  # generous: a shared, loaded machine
    while asyncio.get_running_loop().time() < deadline:
        got = await client.get(f"/ai/analyses/{analysis_id}", headers=user.headers)
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        if body["status"] != "pending":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"analysis {analysis_id} never completed")


async def test_identical_requests_in_two_api_processes_share_one_upstream_call(
    config: settings.Settings,
    redis: aioredis.Redis,
    anthropic: anthropic_server.FakeAnthropic,
    tmp_path: Path,
) -> None:
    async with (
        api_process(config, anthropic.url, tmp_path / "api-1.log") as (one, _),
        api_process(config, anthropic.url, tmp_path / "api-2.log") as (two, _),
    ):
        user = await sign_up(one)
        anthropic.gate = asyncio.Event()
        body = {"symbols": ["NVDA", "AMD"], "question": "Which one is stronger?"}
        ids_one = await asyncio.gather(*(_analyze(one, user, body) for _ in range(3)))
        ids_two = await asyncio.gather(*(_analyze(two, user, body) for _ in range(3)))
        await asyncio.wait_for(anthropic.arrived.wait(), 20)
        # Both processes now hold the request in flight; had the second made its own
        # call, it would have arrived by now (it starts at once, nothing holds it back).
        await asyncio.sleep(0.5)
        assert len(anthropic.calls) == 1
        assert await redis.exists(*[k async for k in redis.scan_iter("ai:inflight:*")]) == 1
        anthropic.gate.set()
        done = [await _done(one, user, i) for i in ids_one]
        done += [await _done(two, user, i) for i in ids_two]
    assert len(anthropic.calls) == 1
    assert all(d["status"] == "done" and d["source"] == "anthropic" for d in done)
    assert all(d["cached"] is False for d in done)
    assert len({json.dumps(d["result"], sort_keys=True) for d in done}) == 1
    assert sorted(done[0]["result"]["symbols"]) == ["AMD", "NVDA"]


async def test_the_holder_keeps_its_claim_while_its_call_outlasts_the_lock_lifetime(
    config: settings.Settings,
    anthropic: anthropic_server.FakeAnthropic,
    tmp_path: Path,
) -> None:
    # Long enough that a loaded machine's scheduling stalls do not let it lapse unrenewed.
    short = {"STARKMATTER_AI_COALESCE_LOCK_TTL_S": "2"}
    async with (
        api_process(config, anthropic.url, tmp_path / "api-1.log", **short) as (one, _),
        api_process(config, anthropic.url, tmp_path / "api-2.log", **short) as (two, _),
    ):
        user = await sign_up(one)
        anthropic.gate = asyncio.Event()
        body = {"symbols": ["TSLA"]}
        first = await _analyze(one, user, body)
        await asyncio.wait_for(anthropic.arrived.wait(), 20)
        second = await _analyze(two, user, body)
        # Two and a half lock lifetimes pass while the first call is held: renewed, it stays.
        await asyncio.sleep(5.0)
        assert len(anthropic.calls) == 1
        anthropic.gate.set()
        done = [await _done(one, user, first), await _done(two, user, second)]
    assert len(anthropic.calls) == 1
    assert done[0]["result"] == done[1]["result"] and done[1]["source"] == "anthropic"


async def test_a_waiting_process_takes_over_when_the_holder_dies_mid_call(
    config: settings.Settings,
    anthropic: anthropic_server.FakeAnthropic,
    tmp_path: Path,
) -> None:
    fast = {"STARKMATTER_AI_COALESCE_LOCK_TTL_S": "0.6"}
    async with (
        api_process(config, anthropic.url, tmp_path / "api-1.log", **fast) as (one, holder),
        api_process(config, anthropic.url, tmp_path / "api-2.log", **fast) as (two, _),
    ):
        user = await sign_up(two)
        anthropic.gate = asyncio.Event()
        body = {"symbols": ["META"]}
        await _analyze(one, user, body)
        await asyncio.wait_for(anthropic.arrived.wait(), 20)
        waiting = await _analyze(two, user, body)
        holder.kill()  # a crash: no shutdown, no release of the lock
        await holder.wait()
        for _ in range(500):
            if len(anthropic.calls) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(anthropic.calls) == 2, "the waiting process never took over"
        anthropic.gate.set()
        done = await _done(two, user, waiting)
    assert done["status"] == "done" and done["source"] == "anthropic"


async def test_a_request_waiting_in_another_process_gets_the_holders_stream(
    config: settings.Settings,
    redis: aioredis.Redis,
    anthropic: anthropic_server.FakeAnthropic,
    tmp_path: Path,
) -> None:
    async with (
        api_process(config, anthropic.url, tmp_path / "api-1.log") as (one, _),
        api_process(config, anthropic.url, tmp_path / "api-2.log") as (two, _),
    ):
        user = await sign_up(one)
        anthropic.pause_after_deltas = 2
        body = {"symbols": ["NFLX"]}
        holder = await _analyze(one, user, body)
        await asyncio.wait_for(anthropic.paused.wait(), 20)
        waiting = await _analyze(two, user, body)
        key = f"snapshot:ai:analysis:{waiting}"
        # What the holder streamed before this request arrived reaches it all the same.
        for _ in range(500):
            raw = await redis.get(key)
            if raw is not None and json.loads(raw)["partial_json"]:
                break
            await asyncio.sleep(0.02)
        snapshot = json.loads(await redis.get(key) or b"null")
        full = json.dumps(anthropic_server.good_analysis(["NFLX"]))
        assert snapshot["status"] == "streaming" and snapshot["partial_json"] == full[:80]
        pubsub = redis.pubsub()
        await pubsub.subscribe(f"ai:analysis:{waiting}")
        anthropic.resume.set()
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "result":
            message = await pubsub.get_message(timeout=20)
            assert message is not None, f"stream ended after {events}"
            if message["type"] == "message":
                events.append(json.loads(message["data"]))
        await pubsub.aclose()
        done = [await _done(one, user, holder), await _done(two, user, waiting)]
    assert [e["seq"] for e in events] == list(range(snapshot["seq"] + 1, events[-1]["seq"] + 1))
    streamed = snapshot["partial_json"] + "".join(
        e["partial_json"] for e in events if e["type"] == "delta"
    )
    assert json.loads(streamed) == anthropic_server.good_analysis(["NFLX"])
    assert [e["type"] for e in events].count("result") == 1
    assert events[-1]["result"] == done[1]["result"] == done[0]["result"]
    assert len(anthropic.calls) == 1
