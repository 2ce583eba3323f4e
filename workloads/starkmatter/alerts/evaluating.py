"""``starkmatter alerts``: evaluate operational rules and users' price alerts on a cadence.

Measurements come from where the platform already publishes them: the feed heartbeat hash
``feed:heartbeat:{FEED}``, a Redis PING, the API's ``/metrics`` histogram, ``quote:{SYMBOL}``
and the latest bar's indicators.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import prometheus_client
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import parser as prom_parser

from starkmatter.alerts import delivering, pricing, rules
from starkmatter.core import logs

log = logs.get_logger(__name__)

FIRING = prometheus_client.Gauge(
    "starkmatter_alerts_firing", "Operational alert rules currently firing.", ["rule", "severity"]
)
LATENCY_METRIC = "starkmatter_http_request_duration_seconds"
_D = decimal.Decimal


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _parse_ts(raw: bytes | str | None) -> dt.datetime | None:
    if not raw:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _decimal(raw: Any) -> decimal.Decimal | None:
    if raw is None:
        return None
    try:
        return _D(raw.decode() if isinstance(raw, bytes) else str(raw))
    except decimal.InvalidOperation:
        return None


def _last_sign_of_ingestion(beat: dict[bytes, bytes]) -> dt.datetime | None:
    """When the feed last showed it ingests as it should: its last tick; once a replay has
    finished (``replay_finished_ts``, the worker idles and no tick is expected) the worker's
    last heartbeat instead, so a finished backfill is quiet and a dead worker still fires."""
    finished = _parse_ts(beat.get(b"replay_finished_ts"))
    if finished is None:
        return _parse_ts(beat.get(b"last_tick_ts"))
    updated = _parse_ts(beat.get(b"updated_ts"))
    # The finish is itself written by the live worker, maybe before its next heartbeat.
    return finished if updated is None else max(finished, updated)


def histogram_buckets(text: str, metric: str = LATENCY_METRIC) -> dict[float, float]:
    """Cumulative bucket counts of one histogram, summed over all its label sets."""
    buckets: dict[float, float] = {}
    for family in prom_parser.text_string_to_metric_families(text):
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


class Evaluator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        *,
        rules_dir: Path | None,
        metrics_url: str | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.rules_dir = rules_dir
        self.metrics_url = metrics_url
        self._last_scrape: dict[float, float] | None = None
        self._http = httpx.AsyncClient(timeout=5)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def evaluate_once(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        now = now or dt.datetime.now(dt.UTC)
        published = await self.evaluate_operational(now)
        with contextlib.suppress(redis.exceptions.RedisError):
            published += await self.evaluate_price_alerts(now)
        return published

    # -- operational rules -------------------------------------------------------------

    async def _heartbeat(self, feed: str) -> dict[bytes, bytes] | None:
        data = await self.redis.hgetall(f"feed:heartbeat:{feed}")
        return {_bytes(k): _bytes(v) for k, v in data.items()} or None

    async def _latency_p99(self) -> decimal.Decimal | None:
        if self.metrics_url is None:
            return None
        try:
            resp = await self._http.get(self.metrics_url)
            resp.raise_for_status()
        except httpx.HTTPError:
            return None
        current = histogram_buckets(resp.text)
        previous, self._last_scrape = self._last_scrape, current
        if previous is None:
            return None
        return rules.p99_from_buckets(previous, current)

    async def measure(
        self, rule: rules.AlertRule, now: dt.datetime, cache: dict[str, Any]
    ) -> decimal.Decimal | None:
        if rule.condition == "CacheFailure":
            try:
                await asyncio.wait_for(self.redis.ping(), timeout=2)
            except (redis.exceptions.RedisError, OSError, TimeoutError):
                return _D(1)
            return _D(0)
        try:
            if rule.condition == "HighLatency":
                if "p99" not in cache:
                    cache["p99"] = await self._latency_p99()
                value: decimal.Decimal | None = cache["p99"]
                return value
            if rule.condition in ("PriceAbove", "PriceBelow"):
                raw = await self.redis.get(f"quote:{rule.symbol}")
                return _decimal(json.loads(raw).get("last")) if raw else None
            assert rule.feed is not None
            beat = await self._heartbeat(rule.feed)
        except (redis.exceptions.RedisError, OSError):
            return None  # CacheFailure reports this; other rules cannot tell
        if rule.condition == "DataIngestionStopped":
            last = _last_sign_of_ingestion(beat) if beat else None
            if last is None:
                return None
            return _D(int((now - last).total_seconds()))
        if beat is None:
            return None
        ticks = _decimal(beat.get(b"ticks_per_s")) or _D(0)
        rejected = _decimal(beat.get(b"rejected_per_s")) or _D(0)
        if ticks + rejected == 0:
            return None
        return (rejected / (ticks + rejected) * 100).quantize(_D("0.01"))

    async def _load_state(self) -> dict[str, rules.RuleState]:
        out = {}
        for row in await self.pool.fetch("SELECT rule, state, since, value FROM alert_rule_state"):
            extra = json.loads(row["value"]) if row["value"] else {}
            out[row["rule"]] = rules.RuleState(
                row["state"],
                row["since"],
                _parse_ts(extra.get("clearing_since")),
                _parse_ts(extra.get("fired_at")),
            )
        return out

    async def evaluate_operational(self, now: dt.datetime) -> list[dict[str, Any]]:
        if self.rules_dir is None or not self.rules_dir.is_dir():
            return []
        loaded, problems = rules.load_dir(self.rules_dir)
        for problem in problems:
            log.warning("alerts.rule_invalid", problem=problem)
        states = await self._load_state()
        cache: dict[str, Any] = {}
        events = []
        rows = []
        for rule in loaded:
            value = await self.measure(rule, now, cache)
            seen = rules.observe(rule, value)
            current = states.get(rule.name, rules.RuleState("ok", now))
            new, transition = rules.step(rule, current, seen, now)
            FIRING.labels(rule=rule.name, severity=rule.severity).set(new.state == "firing")
            rows.append(
                (
                    rule.name,
                    new.state,
                    new.since,
                    json.dumps(
                        {
                            "value": None if value is None else str(value),
                            "clearing_since": new.clearing_since and new.clearing_since.isoformat(),
                            "fired_at": new.fired_at and new.fired_at.isoformat(),
                        }
                    ),
                )
            )
            if transition is not None:
                events.append(
                    delivering.AlertEvent(
                        rule=rule.name,
                        kind="operational",
                        severity=rule.severity,
                        state=transition.state,
                        fingerprint=transition.fingerprint,
                        summary=(rule.summary or f"{rule.condition} on {rule.name}")
                        + (" — resolved" if transition.state == "resolved" else ""),
                        details={
                            "condition": rule.condition,
                            "value": None if value is None else str(value),
                            "threshold": None if rule.threshold is None else str(rule.threshold),
                            "feed": rule.feed,
                            "symbol": rule.symbol,
                        },
                    )
                )
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                """INSERT INTO alert_rule_state (rule, state, since, value, updated_at)
                   VALUES ($1, $2, $3, $4, now())
                   ON CONFLICT (rule) DO UPDATE SET state = EXCLUDED.state,
                       since = EXCLUDED.since, value = EXCLUDED.value, updated_at = now()""",
                rows,
            )
            stored = await delivering.store(conn, events)
        for event in stored:
            log.warning("alerts.transition", rule=event["rule"], state=event["state"])
        try:
            return await delivering.publish(self.redis, stored)
        except redis.exceptions.RedisError:
            return stored  # stored is what counts; the broadcast is best effort

    # -- users' price alerts -----------------------------------------------------------

    async def evaluate_price_alerts(
        self, now: dt.datetime, symbols: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Evaluate the active user price alerts (only those on ``symbols``, when given)."""
        rows = await self.pool.fetch(
            """SELECT id, user_id, symbol, condition, threshold, indicator, comparison,
                      reference_price, condition_held FROM alert_rules
               WHERE active AND ($1::text[] IS NULL OR symbol = ANY($1::text[]))""",
            None if symbols is None else list(symbols),
        )
        if not rows:
            return []
        symbols = sorted({r["symbol"] for r in rows})
        quotes = await self.redis.mget([f"quote:{s}" for s in symbols])
        last: dict[str, decimal.Decimal | None] = {}
        for symbol, raw in zip(symbols, quotes, strict=True):
            try:
                last[symbol] = _decimal(json.loads(raw).get("last")) if raw else None
            except ValueError:
                last[symbol] = None
        indicators = await latest_indicators(self.pool, symbols)
        updates, events = [], []
        for row in rows:
            rule = pricing.PriceRule(
                str(row["id"]), str(row["user_id"]), row["symbol"], row["condition"],
                row["threshold"], row["indicator"], row["comparison"], row["reference_price"],
                row["condition_held"],
            )  # fmt: skip
            price = last.get(rule.symbol)
            held, fire = pricing.triggers(rule, price, indicators.get(rule.symbol, {}))
            if held != rule.condition_held or fire:
                updates.append((row["id"], held, fire))
            if fire:
                events.append(
                    delivering.AlertEvent(
                        rule=f"price:{rule.id}",
                        kind="price",
                        severity="info",
                        state="triggered",
                        fingerprint=f"price:{rule.id}",
                        summary=pricing.describe(rule, price),
                        user_id=rule.user_id,
                        details={
                            "rule_id": rule.id,
                            "symbol": rule.symbol,
                            "condition": rule.condition,
                            "threshold": str(rule.threshold),
                            "price": None if price is None else str(price),
                        },
                    )
                )
        if not updates:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                """UPDATE alert_rules SET condition_held = $2,
                          active = active AND NOT $3,
                          triggered_at = CASE WHEN $3 THEN now() ELSE triggered_at END
                   WHERE id = $1 AND active""",
                updates,
            )
            stored = await delivering.store(conn, events)
        return await delivering.publish(self.redis, stored)


async def latest_indicators(
    pool: asyncpg.Pool | asyncpg.Connection[Any], symbols: list[str]
) -> dict[str, dict[str, decimal.Decimal]]:
    if not await pool.fetchval("SELECT to_regclass('market_bars') IS NOT NULL"):
        return {}
    rows = await pool.fetch(
        """SELECT s.sym AS symbol, b.indicators FROM unnest($1::text[]) s(sym),
           LATERAL (SELECT indicators FROM market_bars WHERE symbol = s.sym AND interval = '1m'
                    ORDER BY ts DESC LIMIT 1) b""",
        symbols,
    )
    out: dict[str, dict[str, decimal.Decimal]] = {}
    for row in rows:
        values = row["indicators"]
        if isinstance(values, str):
            values = json.loads(values)
        out[row["symbol"]] = {
            str(k): v for k, raw in (values or {}).items() if (v := _decimal(raw)) is not None
        }
    return out


async def run(
    evaluator: Evaluator, *, interval_s: float = 5.0, stop: asyncio.Event | None = None
) -> None:
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await evaluator.evaluate_once()
        except (asyncpg.PostgresError, OSError) as exc:
            log.error("alerts.evaluation_failed", error=str(exc)[:300])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)


async def main() -> int:
    """``starkmatter alerts``: rules from ``STARKMATTER_ALERT_RULES_DIR``."""
    import os
    import signal as signals

    from starkmatter.core import db, migrating, redis_client, settings

    cfg = settings.get_settings()
    pool = await db.create_pool(cfg)
    redis_conn = redis_client.create_redis(cfg)
    rules_dir = os.environ.get("STARKMATTER_ALERT_RULES_DIR")
    evaluator = Evaluator(
        pool,
        redis_conn,
        rules_dir=Path(rules_dir) if rules_dir else None,
        metrics_url=os.environ.get(
            "STARKMATTER_ALERTS_METRICS_URL", f"http://{cfg.api_host}:{cfg.api_port}/metrics"
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signals.SIGTERM, signals.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with pool.acquire() as conn:
            await migrating.apply(conn)
        await run(evaluator, stop=stop)
        return 0
    finally:
        await evaluator.aclose()
        await redis_conn.aclose()
        await pool.close()
