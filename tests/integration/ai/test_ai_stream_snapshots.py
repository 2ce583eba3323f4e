"""A client that subscribes to ``ai:analysis:{id}`` late still gets everything: the service
keeps ``snapshot:ai:analysis:{id}`` (what the gateway sends first) up to date as it
publishes. Through a real gateway, as the owner, with the real SDK streaming from a loopback
Messages API server that stops half way through its answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from starkmatter.ai import config as ai_config
from tests.integration.ai import anthropic_server
from tests.support import LiveServer, SignedIn, sign_up

pytestmark = pytest.mark.timeout(60)


async def _analyze(live: LiveServer, user: SignedIn, **body: Any) -> dict[str, Any]:
    body.setdefault("symbols", ["AAPL"])
    resp = await live.client.post("/ai/analyze", json=body, headers=user.headers)
    assert resp.status_code == 202, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def _stored_snapshot(redis: aioredis.Redis, analysis_id: str) -> dict[str, Any] | None:
    raw = await redis.get(f"snapshot:ai:analysis:{analysis_id}")
    return None if raw is None else dict(json.loads(raw))


async def _frame(ws: websockets.ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return frame


async def _subscribe(gateway: str, user: SignedIn, topic: str) -> websockets.ClientConnection:
    ws = await websockets.connect(f"{gateway}?token={user.access_token}")
    await ws.send(json.dumps({"op": "subscribe", "topics": [topic]}))
    return ws


async def test_late_subscriber_gets_the_text_streamed_so_far_then_the_rest(
    api: LiveServer,
    redis: aioredis.Redis,
    gateway: str,
    anthropic: anthropic_server.FakeAnthropic,
) -> None:
    user = await sign_up(api.client)
    anthropic.pause_after_deltas = 3
    accepted = await _analyze(api, user, symbols=["AAPL"])
    await asyncio.wait_for(anthropic.paused.wait(), 10)
    # Three deltas were published before anyone subscribed; wait until the service has
    # folded them in (they are in flight between the SDK and Redis for a moment).
    for _ in range(200):
        stored = await _stored_snapshot(redis, accepted["id"])
        if stored is not None and stored["seq"] == 3:
            break
        await asyncio.sleep(0.02)
    ws = await _subscribe(gateway, user, accepted["channel"])
    try:
        first = await _frame(ws)
        assert first["type"] == "snapshot" and first["topic"] == accepted["channel"]
        snapshot = first["data"]
        assert snapshot["status"] == "streaming" and snapshot["seq"] == 3
        assert snapshot["final"] is None
        full = json.dumps(anthropic_server.good_analysis(["AAPL"]))
        assert snapshot["partial_json"] == full[:120]  # three 40-character deltas
        anthropic.resume.set()
        updates: list[dict[str, Any]] = []
        while not updates or updates[-1]["type"] != "result":
            frame = await _frame(ws)
            assert frame["type"] == "update", frame
            updates.append(frame["data"])
    finally:
        await ws.close()
    # No gap and no repeat after the snapshot: the numbering continues from it.
    assert [u["seq"] for u in updates] == list(range(4, 4 + len(updates)))
    streamed = snapshot["partial_json"] + "".join(
        u["partial_json"] for u in updates if u["type"] == "delta"
    )
    assert json.loads(streamed) == anthropic_server.good_analysis(["AAPL"])
    result = updates[-1]
    assert result["source"] == "anthropic" and result["cached"] is False
    assert result["model"] == ai_config.DEFAULT_MODEL
    assert result["result"]["summary"] == json.loads(streamed)["summary"]
    final_snapshot = await _stored_snapshot(redis, accepted["id"])
    assert final_snapshot is not None
    assert final_snapshot["status"] == "done" and final_snapshot["final"] == result
    assert 0 < await redis.ttl(f"snapshot:ai:analysis:{accepted['id']}") <= 3600


async def test_subscriber_after_the_end_gets_the_final_result_as_the_snapshot(
    api: LiveServer, gateway: str, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    accepted = await _analyze(api, user, symbols=["MSFT"])
    for _ in range(500):
        got = await api.client.get(f"/ai/analyses/{accepted['id']}", headers=user.headers)
        if got.json()["status"] == "done":
            break
        await asyncio.sleep(0.02)
    ws = await _subscribe(gateway, user, accepted["channel"])
    try:
        snapshot = (await _frame(ws))["data"]
    finally:
        await ws.close()
    assert snapshot["status"] == "done"
    assert snapshot["final"]["type"] == "result"
    assert snapshot["final"]["result"] == got.json()["result"]
    assert json.loads(snapshot["partial_json"]) == anthropic_server.good_analysis(["MSFT"])


async def test_a_cache_hit_has_its_answer_as_the_snapshot_of_its_stream(
    api: LiveServer, gateway: str, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    first = await _analyze(api, user, symbols=["NVDA"])
    for _ in range(500):
        got = await api.client.get(f"/ai/analyses/{first['id']}", headers=user.headers)
        if got.json()["status"] == "done":
            break
        await asyncio.sleep(0.02)
    hit = await _analyze(api, user, symbols=["NVDA"])
    assert hit["cached"] is True and hit["status"] == "done"
    ws = await _subscribe(gateway, user, hit["channel"])
    try:
        snapshot = (await _frame(ws))["data"]
    finally:
        await ws.close()
    assert snapshot["status"] == "done"
    assert snapshot["final"]["cached"] is True
    assert snapshot["final"]["result"] == hit["result"]
    assert snapshot["final"]["source"] == "anthropic" and snapshot["final"]["label"] is None
    assert len(anthropic.calls) == 1


async def test_request_joining_a_stream_in_flight_starts_from_what_it_has_so_far(
    api: LiveServer, redis: aioredis.Redis, anthropic: anthropic_server.FakeAnthropic
) -> None:
    user = await sign_up(api.client)
    anthropic.pause_after_deltas = 2
    first = await _analyze(api, user, symbols=["AMD"])
    await asyncio.wait_for(anthropic.paused.wait(), 10)
    for _ in range(200):
        leader = await _stored_snapshot(redis, first["id"])
        if leader is not None and leader["seq"] == 2:
            break
        await asyncio.sleep(0.02)
    joined = await _analyze(api, user, symbols=["amd"])
    assert joined["status"] == "pending" and joined["cached"] is False
    assert await _stored_snapshot(redis, joined["id"]) == leader
    anthropic.resume.set()
    for _ in range(500):
        late = await _stored_snapshot(redis, joined["id"])
        if late is not None and late["status"] == "done":
            break
        await asyncio.sleep(0.02)
    assert late == await _stored_snapshot(redis, first["id"])
    assert len(anthropic.calls) == 1
