"""A firing operational rule that is switched off or deleted resolves, instead of firing on
forever with nothing left to resolve it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import asyncpg
import prometheus_client
import pytest
import redis.asyncio as aioredis

from starkmatter.alerts import evaluating

pytestmark = pytest.mark.timeout(60)

T0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def _rule(folder: Path, name: str, **spec: Any) -> None:
    spec = {"condition": "DataIngestionStopped", "feed": "sim", "for": "1m", **spec}
    (folder / f"{name}.json").write_text(json.dumps({"metadata": {"name": name}, "spec": spec}))


def _firing(rule: str, severity: str) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(
        "starkmatter_alerts_firing", {"rule": rule, "severity": severity}
    )


async def _fire(evaluator: evaluating.Evaluator, redis: aioredis.Redis) -> None:
    await redis.hset("feed:heartbeat:sim", mapping={"last_tick_ts": T0.isoformat()})
    fired = await evaluator.evaluate_once(T0 + dt.timedelta(minutes=5))
    assert [e["state"] for e in fired] == ["firing"]


async def test_a_firing_rule_that_is_disabled_resolves(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    _rule(tmp_path, "sim-off", severity="critical")
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    await _fire(evaluator, redis)
    _rule(tmp_path, "sim-off", severity="critical", enabled=False)
    resolved = await evaluator.evaluate_once(T0 + dt.timedelta(minutes=6))
    again = await evaluator.evaluate_once(T0 + dt.timedelta(minutes=7))
    await evaluator.aclose()
    assert [(e["rule"], e["state"], e["severity"]) for e in resolved] == [
        ("sim-off", "resolved", "critical")
    ]
    assert again == []
    assert _firing("sim-off", "critical") == 0
    assert await pool.fetchval("SELECT state FROM alert_rule_state WHERE rule = 'sim-off'") == "ok"


async def test_a_firing_rule_whose_file_is_deleted_resolves_and_is_forgotten(
    pool: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    _rule(tmp_path, "sim-gone", severity="critical")
    _rule(tmp_path, "sim-kept")
    evaluator = evaluating.Evaluator(pool, redis, rules_dir=tmp_path)
    await redis.hset("feed:heartbeat:sim", mapping={"last_tick_ts": T0.isoformat()})
    fired = await evaluator.evaluate_once(T0 + dt.timedelta(minutes=5))
    assert sorted(e["rule"] for e in fired) == ["sim-gone", "sim-kept"]
    assert _firing("sim-gone", "critical") == 1
    (tmp_path / "sim-gone.json").unlink()
    resolved = await evaluator.evaluate_once(T0 + dt.timedelta(minutes=6))
    await evaluator.aclose()
    assert [(e["rule"], e["state"], e["severity"]) for e in resolved] == [
        ("sim-gone", "resolved", "critical")
    ]
    assert _firing("sim-gone", "critical") is None
    assert _firing("sim-kept", "warning") == 1
    remaining = await pool.fetch("SELECT rule, state FROM alert_rule_state")
    assert [(r["rule"], r["state"]) for r in remaining] == [("sim-kept", "firing")]
    stored = await pool.fetch("SELECT rule, state FROM alert_events ORDER BY id")
    assert [(r["rule"], r["state"]) for r in stored][-1] == ("sim-gone", "resolved")
