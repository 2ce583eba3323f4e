"""``starkmatter alerts``: evaluate operational rules and users' price alerts on a cadence.

Measurements come from where the platform already publishes them: the feed heartbeat hash
``feed:heartbeat:{FEED}``, a Redis PING, the API's ``/metrics`` histogram, ``quote:{SYMBOL}``
and the latest bar's indicators.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import decimal
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

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
MAX_BACKOFF_S = 60.0
"""Longest pause between evaluations while they keep failing (doubling from the interval)."""
_D = decimal.Decimal
_SEVERITIES = ("info", "warning", "critical")


@dataclasses.dataclass(frozen=True)
class Freshness:
    """How old a measurement may be and still decide an alert. Older reads as missing: a
    ``quote:{SYMBOL}`` never expires, so a dead feed or a csv replay (historical prices
    with their historical ``ts``) would otherwise fire alerts on prices that are not now."""

    quote_max_age: dt.timedelta = dt.timedelta(seconds=60)
    """Age of a quote's ``ts`` beyond which it is missing (``STARKMATTER_ALERTS_QUOTE_MAX_AGE_S``).
    A live feed rewrites the quote on every tick; a minute without one is a stopped feed."""
    bar_max_age: dt.timedelta = dt.timedelta(minutes=5)
    """Age of the newest 1m bar's start beyond which its indicators are missing
    (``STARKMATTER_ALERTS_BAR_MAX_AGE_S``): five bar intervals, room for a late bar."""

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> Freshness:
        default = cls()
        return cls(
            quote_max_age=_seconds(
                environ, "STARKMATTER_ALERTS_QUOTE_MAX_AGE_S", default.quote_max_age
            ),
            bar_max_age=_seconds(environ, "STARKMATTER_ALERTS_BAR_MAX_AGE_S", default.bar_max_age),
        )


def _seconds(environ: dict[str, str], name: str, default: dt.timedelta) -> dt.timedelta:
    raw = environ.get(name)
    if not raw:
        return default
    value = float(raw)
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {raw!r}")
    return dt.timedelta(seconds=value)


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
    """A finite Decimal, or None: ``NaN`` and infinities are unknown values, since comparing
    a NaN Decimal raises and one bad value must not stop the evaluator."""
    if raw is None:
        return None
    try:
        value = _D(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (decimal.InvalidOperation, UnicodeDecodeError):
        return None
    return value if value.is_finite() else None


def parse_quote(raw: bytes | str) -> tuple[decimal.Decimal | None, dt.datetime | None]:
    """``last`` and ``ts`` of a ``quote:{SYMBOL}`` document; ValueError when it is not one.

    A document without ``ts`` (the contract always has one) is judged on its price alone."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object but {type(data).__name__}")
    ts = data.get("ts")
    moment = _parse_ts(ts) if isinstance(ts, str) else None
    if ts is not None and moment is None:
        raise ValueError(f"ts is not an ISO 8601 time: {str(ts)[:40]!r}")
    return _decimal(data.get("last")), moment


def _severity(text: Any) -> delivering.Severity:
    return cast(delivering.Severity, text) if text in _SEVERITIES else "warning"


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
        freshness: Freshness | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.rules_dir = rules_dir
        self.metrics_url = metrics_url
        self.freshness = freshness or Freshness()
        self._last_scrape: dict[float, float] | None = None
        self._http = httpx.AsyncClient(timeout=5)
        self._bad_quotes: set[str] = set()
        """Symbols whose quote was unreadable at the last look: logged once, not per cycle."""
        self._gauged: dict[str, str] = {}
        """Rule name -> the severity label this process set on FIRING for it."""

    async def aclose(self) -> None:
        await self._http.aclose()

    async def evaluate_once(self, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        now = now or dt.datetime.now(dt.UTC)
        published = await self.evaluate_operational(now)
        with contextlib.suppress(redis.exceptions.RedisError):
            published += await self.evaluate_price_alerts(now)
        return published

    def _last_price(
        self, symbol: str, raw: bytes | str | None, now: dt.datetime
    ) -> decimal.Decimal | None:
        """The quote's ``last``; None when it is missing, unreadable or older than allowed."""
        if not raw:
            return None
        try:
            last, ts = parse_quote(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if symbol not in self._bad_quotes:
                self._bad_quotes.add(symbol)
                log.warning("alerts.quote_unreadable", symbol=symbol, error=str(exc))
            return None
        self._bad_quotes.discard(symbol)
        if ts is not None and now - ts > self.freshness.quote_max_age:
            return None
        return last

    def _gauge(self, name: str, severity: str, firing: bool) -> None:
        previous = self._gauged.get(name)
        if previous is not None and previous != severity:
            FIRING.remove(name, previous)
        FIRING.labels(rule=name, severity=severity).set(firing)
        self._gauged[name] = severity

    def _ungauge(self, name: str) -> None:
        severity = self._gauged.pop(name, None)
        if severity is not None:
            FIRING.remove(name, severity)

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
                async with asyncio.timeout(2):
                    await self.redis.ping()
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
                assert rule.symbol is not None
                return self._last_price(
                    rule.symbol, await self.redis.get(f"quote:{rule.symbol}"), now
                )
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

    async def _load_state(self) -> tuple[dict[str, rules.RuleState], dict[str, str]]:
        """Each rule's stored state, and the severity it was stored with."""
        states, severities = {}, {}
        for row in await self.pool.fetch("SELECT rule, state, since, value FROM alert_rule_state"):
            extra = json.loads(row["value"]) if row["value"] else {}
            states[row["rule"]] = rules.RuleState(
                row["state"],
                row["since"],
                _parse_ts(extra.get("clearing_since")),
                _parse_ts(extra.get("fired_at")),
            )
            if "severity" in extra:
                severities[row["rule"]] = extra["severity"]
        return states, severities

    def _forget(
        self,
        names: Sequence[str],
        states: dict[str, rules.RuleState],
        severities: dict[str, str],
        now: dt.datetime,
    ) -> list[delivering.AlertEvent]:
        """Rules no longer loaded (their file deleted): a firing one resolves, since nothing
        else ever would, and its gauge goes; the caller deletes their stored state."""
        events = []
        for name in names:
            severity = _severity(severities.get(name) or self._gauged.get(name))
            self._ungauge(name)
            state = states[name]
            if state.state != "firing" or state.fired_at is None:
                continue
            transition = rules.resolution(name, state.fired_at, now)
            events.append(
                delivering.AlertEvent(
                    rule=name,
                    kind="operational",
                    severity=severity,
                    state="resolved",
                    fingerprint=transition.fingerprint,
                    summary=f"{name} — resolved (rule removed)",
                    details={"removed": True},
                )
            )
        return events

    async def evaluate_operational(self, now: dt.datetime) -> list[dict[str, Any]]:
        if self.rules_dir is None or not self.rules_dir.is_dir():
            return []
        loaded, problems = rules.load_dir(self.rules_dir)
        for problem in problems:
            log.warning("alerts.rule_invalid", problem=problem)
        states, severities = await self._load_state()
        cache: dict[str, Any] = {}
        events = []
        rows = []
        for rule in loaded:
            try:
                value = await self.measure(rule, now, cache)
                seen = rules.observe(rule, value)
                current = states.get(rule.name, rules.RuleState("ok", now))
                new, transition = rules.step(rule, current, seen, now)
            except Exception as exc:  # noqa: BLE001 - one bad rule must not silence the others
                # It keeps its stored state until its data can be read again.
                log.error("alerts.rule_failed", rule=rule.name, error=_describe(exc))
                continue
            self._gauge(rule.name, rule.severity, new.state == "firing")
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
                            "severity": rule.severity,
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
        loaded_names = {rule.name for rule in loaded}
        # An unreadable file may be a rule we still have: forget nothing until all load.
        gone = [] if problems else sorted(set(states) - loaded_names)
        events += self._forget(gone, states, severities, now)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                """INSERT INTO alert_rule_state (rule, state, since, value, updated_at)
                   VALUES ($1, $2, $3, $4, now())
                   ON CONFLICT (rule) DO UPDATE SET state = EXCLUDED.state,
                       since = EXCLUDED.since, value = EXCLUDED.value, updated_at = now()""",
                rows,
            )
            if gone:
                await conn.execute(
                    "DELETE FROM alert_rule_state WHERE rule = ANY($1::text[])", gone
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
        last = {
            symbol: self._last_price(symbol, raw, now)
            for symbol, raw in zip(symbols, quotes, strict=True)
        }
        indicators = await latest_indicators(
            self.pool, symbols, since=now - self.freshness.bar_max_age
        )
        updates: list[tuple[Any, bool, bool]] = []
        events: list[tuple[Any, delivering.AlertEvent]] = []
        for row in rows:
            rule = pricing.PriceRule(
                str(row["id"]), str(row["user_id"]), row["symbol"], row["condition"],
                row["threshold"], row["indicator"], row["comparison"], row["reference_price"],
                row["condition_held"],
            )  # fmt: skip
            price = last.get(rule.symbol)
            try:
                held, fire = pricing.triggers(rule, price, indicators.get(rule.symbol, {}))
                summary = pricing.describe(rule, price) if fire else ""
            except Exception as exc:  # noqa: BLE001 - one bad alert must not stop the others
                log.error("alerts.price_alert_failed", alert=rule.id, error=_describe(exc))
                continue
            if held != rule.condition_held or fire:
                updates.append((row["id"], held, fire))
            if fire:
                events.append((row["id"], _price_event(rule, price, summary)))
        if not updates:
            return []
        ids, held_now, fired = zip(*updates, strict=True)
        async with self.pool.acquire() as conn, conn.transaction():
            # Only the alerts still there and active notify: one deleted (or whose user was)
            # since the SELECT above must neither notify nor fail the batch on its foreign key.
            updated = await conn.fetch(
                """UPDATE alert_rules r SET condition_held = u.held,
                          active = r.active AND NOT u.fire,
                          triggered_at = CASE WHEN u.fire THEN now() ELSE r.triggered_at END
                   FROM unnest($1::uuid[], $2::bool[], $3::bool[]) AS u(id, held, fire)
                   WHERE r.id = u.id AND r.active
                   RETURNING r.id""",
                list(ids), list(held_now), list(fired),
            )  # fmt: skip
            kept = {row["id"] for row in updated}
            stored = await delivering.store(conn, [e for rid, e in events if rid in kept])
        return await delivering.publish(self.redis, stored)


def _price_event(
    rule: pricing.PriceRule, price: decimal.Decimal | None, summary: str
) -> delivering.AlertEvent:
    return delivering.AlertEvent(
        rule=f"price:{rule.id}",
        kind="price",
        severity="info",
        state="triggered",
        fingerprint=f"price:{rule.id}",
        summary=summary,
        user_id=rule.user_id,
        details={
            "rule_id": rule.id,
            "symbol": rule.symbol,
            "condition": rule.condition,
            "threshold": str(rule.threshold),
            "price": None if price is None else str(price),
        },
    )


def _describe(exc: BaseException) -> str:
    # Whole: the log processor cuts it after masking; cut here, a secret cut in two would
    # no longer be recognised.
    return f"{type(exc).__name__}: {exc}"


async def latest_indicators(
    pool: asyncpg.Pool | asyncpg.Connection[Any],
    symbols: list[str],
    *,
    since: dt.datetime | None = None,
) -> dict[str, dict[str, decimal.Decimal]]:
    """The newest 1m bar's indicators per symbol; only a bar that began at ``since`` or
    later, when given (an old bar's indicators describe a market that has moved on)."""
    if not await pool.fetchval("SELECT to_regclass('market_bars') IS NOT NULL"):
        return {}
    rows = await pool.fetch(
        """SELECT s.sym AS symbol, b.indicators FROM unnest($1::text[]) s(sym),
           LATERAL (SELECT indicators FROM market_bars WHERE symbol = s.sym AND interval = '1m'
                      AND ($2::timestamptz IS NULL OR ts >= $2)
                    ORDER BY ts DESC LIMIT 1) b""",
        symbols,
        since,
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
    """Evaluate every ``interval_s`` until ``stop``. A failed cycle is logged and the loop
    goes on, waiting twice as long after each failure in a row (at most MAX_BACKOFF_S): a
    crash would restart the pod into the same failure, and stop every other alert."""
    stop = stop or asyncio.Event()
    failures = 0
    while not stop.is_set():
        try:
            await evaluator.evaluate_once()
            failures = 0
        except Exception as exc:  # noqa: BLE001 - log, back off and go on, never crash-loop
            failures += 1
            log.error("alerts.evaluation_failed", error=_describe(exc), failures=failures)
        delay = interval_s
        if failures:
            delay = min(interval_s * 2**failures, max(MAX_BACKOFF_S, interval_s))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()


async def main() -> int:
    """``starkmatter alerts``: rules from ``STARKMATTER_ALERT_RULES_DIR``."""
    import os
    import signal as signals

    from starkmatter.core import db, migrating, probes, redis_client, settings

    cfg = settings.get_settings()
    pool = await db.create_pool(cfg)
    redis_conn = redis_client.create_redis(cfg)
    rules_dir = os.environ.get("STARKMATTER_ALERT_RULES_DIR")
    evaluator = Evaluator(
        pool,
        redis_conn,
        rules_dir=Path(rules_dir) if rules_dir else None,
        metrics_url=os.environ.get(
            "STARKMATTER_ALERTS_METRICS_URL", f"http://{cfg.api_host}:{cfg.metrics_port}/metrics"
        ),
        freshness=Freshness.from_env(dict(os.environ)),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signals.SIGTERM, signals.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with pool.acquire() as conn:
            await migrating.apply(conn)
        # The Deployment's probes, Prometheus and the operator (which rules fire, from
        # starkmatter_alerts_firing) all read this listener.
        async with probes.listening(
            cfg.api_host, cfg.metrics_port, probes.storage_check(pool, redis_conn)
        ):
            await run(evaluator, stop=stop)
        return 0
    finally:
        await evaluator.aclose()
        await redis_conn.aclose()
        await pool.close()
