"""The analysis flow of the seed: cache check, context, model (or offline analyst), checks,
cache, history. Identical requests in flight share one upstream call.

Coalescing works at two levels: inside a process, requests with the same cache key join
one in-flight task (each request id still gets the stream and the result); across
processes, a Redis lock makes the others wait for the winner's cached answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
import uuid
from typing import Any

import asyncpg
import prometheus_client
import redis.asyncio as aioredis

from starkmatter.ai import checking, config, contexting, models, offline, upstream
from starkmatter.core import errors, logs, metrics

log = logs.get_logger(__name__)

ANALYSES = prometheus_client.Counter(
    "starkmatter_ai_analyses_total",
    "Analyses completed, by who answered (anthropic, offline) and whether from cache.",
    ["source", "cached"],
)
OFFLINE_CACHE_TTL_S = 60
"""A fallback answer is cached briefly only, so a recovered upstream is used again soon."""


def channel(request_id: str) -> str:
    return f"ai:analysis:{request_id}"


def owner_key(request_id: str) -> str:
    """Who asked for an analysis; the gateway lets only that user subscribe (contracts.md)."""
    return f"ai:owner:{request_id}"


OWNER_TTL_S = 24 * 3600


def cache_redis_key(request_key: str) -> str:
    """One entry per normalized request; it records the data version (as the full cache
    key) its answer was made from, and only a request over the same data may use it."""
    return f"ai:cache:{request_key}"


def cached_outcome(raw: bytes | str | None, key: str) -> Outcome | None:
    if raw is None:
        return None
    entry = json.loads(raw)
    if entry.get("key") != key:
        return None
    return Outcome.from_json(entry)


@dataclasses.dataclass(frozen=True)
class Outcome:
    source: models.Source
    model: str
    analysis: models.Analysis
    checks: dict[str, Any]
    fallback_reason: str | None
    usage: dict[str, int] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "model": self.model,
            "result": self.analysis.model_dump(mode="json"),
            "checks": self.checks,
            "fallback_reason": self.fallback_reason,
            "usage": self.usage,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            data["source"],
            data["model"],
            models.Analysis.model_validate(data["result"]),
            data["checks"],
            data.get("fallback_reason"),
            data.get("usage"),
        )


@dataclasses.dataclass
class Flight:
    key: str
    request_key: str
    normalized: models.NormalizedRequest
    user_id: str
    request_ids: list[str]
    task: asyncio.Task[None] | None = None


@dataclasses.dataclass(frozen=True)
class Submitted:
    id: str
    status: str
    cached: bool
    outcome: Outcome | None


class AnalysisService:
    def __init__(
        self, pool: asyncpg.Pool, redis: aioredis.Redis, settings: config.AISettings
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.settings = settings
        self.upstream = upstream.Upstream(settings)
        self._flights: dict[str, Flight] = {}
        self._tables: frozenset[str] | None = None

    async def aclose(self) -> None:
        tasks = [f.task for f in self._flights.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.upstream.aclose()

    async def _available_tables(self) -> frozenset[str]:
        if self._tables is None:
            self._tables = await contexting.available_tables(self.pool)
        return self._tables

    async def submit(self, user_id: str, request: models.AnalyzeRequest) -> Submitted:
        normalized = models.normalize(request, user_id)
        tables = await self._available_tables()
        request_key = models.request_key(normalized, self.settings.model)
        # The data version (PostgreSQL) and the cached entry (Redis) are read at the same
        # time; the entry counts only if it was made from this version of the data.
        version, raw = await asyncio.gather(
            contexting.data_version(self.pool, normalized, tables),
            self.redis.get(cache_redis_key(request_key)),
        )
        key = models.cache_key(normalized, version, self.settings.model)
        request_id = str(uuid.uuid4())
        await self.redis.set(owner_key(request_id), user_id, ex=OWNER_TTL_S)
        outcome = cached_outcome(raw, key)
        if outcome is not None:
            metrics.cache_result("ai", hit=True)
            await self._insert_done(request_id, user_id, normalized, key, version, outcome)
            ANALYSES.labels(source=outcome.source, cached="true").inc()
            return Submitted(request_id, "done", True, outcome)
        metrics.cache_result("ai", hit=False)
        await self._take_quota(user_id)
        await self._insert_pending(request_id, user_id, normalized, key, version)
        flight = self._flights.get(key)
        if flight is not None:
            flight.request_ids.append(request_id)
        else:
            flight = Flight(key, request_key, normalized, user_id, [request_id])
            self._flights[key] = flight
            flight.task = asyncio.create_task(self._fly(flight), name=f"ai-analysis-{key[:12]}")
        return Submitted(request_id, "pending", False, None)

    async def wait(self, request_id: str, timeout_s: float = 30) -> None:
        """Wait until the flight carrying ``request_id`` has landed (tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            flight = next((f for f in self._flights.values() if request_id in f.request_ids), None)
            if flight is None or flight.task is None:
                return
            await asyncio.wait({flight.task}, timeout=deadline - time.monotonic())
        raise TimeoutError(f"analysis {request_id} still running after {timeout_s}s")

    async def _take_quota(self, user_id: str) -> None:
        hour = int(time.time() // 3600)
        quota_key = f"ai:quota:{user_id}:{hour}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(quota_key)
            pipe.expire(quota_key, 3700)
            count, _ = await pipe.execute()
        if count > self.settings.quota_per_hour:
            raise errors.TooManyRequests(
                f"AI analysis quota of {self.settings.quota_per_hour} per hour used up",
                code="ai_quota_exceeded",
                retry_after_s=3600 - int(time.time() % 3600),
            )

    async def _insert_pending(
        self,
        request_id: str,
        user_id: str,
        normalized: models.NormalizedRequest,
        key: str,
        version: str,
    ) -> None:
        await self.pool.execute(
            """INSERT INTO ai_analyses (id, user_id, kind, symbols, question, horizon, cache_key,
                                        data_version, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')""",
            uuid.UUID(request_id),
            uuid.UUID(user_id),
            normalized.kind,
            list(normalized.symbols),
            normalized.question,
            normalized.horizon,
            key,
            version,
        )

    async def _insert_done(
        self,
        request_id: str,
        user_id: str,
        normalized: models.NormalizedRequest,
        key: str,
        version: str,
        outcome: Outcome,
    ) -> None:
        # A cache hit's history row is not worth a WAL flush on the request path:
        # synchronous_commit is switched off for this one statement's transaction.
        await self.pool.execute(
            """INSERT INTO ai_analyses (id, user_id, kind, symbols, question, horizon, cache_key,
                   data_version, status, source, cached, model, result, checks, fallback_reason,
                   completed_at)
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'done', $9, true, $10, $11, $12, $13, now()
               FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit""",
            uuid.UUID(request_id),
            uuid.UUID(user_id),
            normalized.kind,
            list(normalized.symbols),
            normalized.question,
            normalized.horizon,
            key,
            version,
            outcome.source,
            outcome.model,
            outcome.analysis.model_dump(mode="json"),
            outcome.checks,
            outcome.fallback_reason,
        )

    async def _publish(self, flight: Flight, event: dict[str, Any]) -> None:
        data = json.dumps(event, default=str)
        async with self.redis.pipeline(transaction=False) as pipe:
            for rid in list(flight.request_ids):
                pipe.publish(channel(rid), data)
            await pipe.execute()

    async def _fly(self, flight: Flight) -> None:
        try:
            outcome = await self._coalesced(flight)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure must be recorded, not lost
            log.error("ai.analysis_failed", error=str(exc)[:300])
            self._flights.pop(flight.key, None)
            await self.pool.execute(
                """UPDATE ai_analyses SET status = 'failed', error_code = 'internal',
                          error_message = $2, completed_at = now() WHERE id = ANY($1::uuid[])""",
                flight.request_ids,
                str(exc)[:300],
            )
            await self._publish(flight, {"type": "error", "code": "internal"})
            return
        # Leave the flight first: a request arriving now finds the cache instead.
        self._flights.pop(flight.key, None)
        await self.pool.execute(
            """UPDATE ai_analyses SET status = 'done', source = $2, model = $3, result = $4,
                      checks = $5, fallback_reason = $6, usage = $7, completed_at = now()
               WHERE id = ANY($1::uuid[])""",
            flight.request_ids,
            outcome.source,
            outcome.model,
            outcome.analysis.model_dump(mode="json"),
            outcome.checks,
            outcome.fallback_reason,
            outcome.usage,
        )
        ANALYSES.labels(source=outcome.source, cached="false").inc()
        # The same label as GET /ai/analyses/{id}: a streamed answer says who answered too.
        label = offline.LABEL if outcome.source == "offline" else None
        await self._publish(flight, {"type": "result", **outcome.as_json(), "label": label})

    async def _coalesced(self, flight: Flight) -> Outcome:
        """Across processes: one holder of the lock computes, the others read its answer."""
        lock_key = f"ai:inflight:{flight.key}"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.settings.coalesce_wait_s
        while not await self.redis.set(
            lock_key, token, nx=True, px=int(self.settings.coalesce_wait_s * 1000)
        ):
            ready = cached_outcome(
                await self.redis.get(cache_redis_key(flight.request_key)), flight.key
            )
            if ready is not None:
                return ready
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        try:
            outcome = await self._produce(flight)
            ttl = (
                self.settings.cache_ttl_s
                if outcome.source == "anthropic" or outcome.fallback_reason == "no_api_key"
                else min(OFFLINE_CACHE_TTL_S, self.settings.cache_ttl_s)
            )
            await self.redis.set(
                cache_redis_key(flight.request_key),
                json.dumps({"key": flight.key, **outcome.as_json()}, default=str),
                ex=ttl,
            )
            return outcome
        finally:
            # Release only our own lock (compare-and-delete).
            await self.redis.eval(
                "if redis.call('get', KEYS[1]) == ARGV[1] then "
                "return redis.call('del', KEYS[1]) else return 0 end",
                1,
                lock_key,
                token,
            )

    async def _produce(self, flight: Flight) -> Outcome:
        normalized = flight.normalized
        context = await contexting.gather(
            self.pool,
            self.redis,
            normalized,
            flight.user_id,
            await self._available_tables(),
            now=dt.datetime.now(dt.UTC),
        )
        packed = contexting.pack(context, normalized, self.settings.context_token_budget)
        reason = "no_api_key"
        if self.upstream.configured:

            async def on_delta(event: dict[str, Any]) -> None:
                await self._publish(flight, event)

            try:
                answer = await self.upstream.analyse(prompt(normalized, packed), on_delta)
            except upstream.UpstreamError as exc:
                reason = exc.code
            else:
                report = checking.check(
                    answer.raw,
                    symbols=normalized.symbols,
                    kind=normalized.kind,
                    question=normalized.question,
                    min_relevance=self.settings.min_relevance,
                )
                if report.passed and report.analysis is not None:
                    return Outcome(
                        "anthropic",
                        answer.model,
                        report.analysis,
                        report.as_json(),
                        None,
                        answer.usage,
                    )
                reason = "checks_failed:" + ",".join(sorted({p.code for p in report.problems}))
                log.warning("ai.answer_rejected", reason=reason)
        fallback = offline.analyse(context, normalized)
        report = checking.check(
            fallback.model_dump(mode="json"),
            symbols=normalized.symbols,
            kind=normalized.kind,
            question=normalized.question,
            min_relevance=0.0,
        )
        return Outcome(
            "offline",
            "offline-analyst",
            report.analysis or fallback,
            report.as_json(),
            reason,
            None,
        )


def prompt(normalized: models.NormalizedRequest, packed: contexting.Packed) -> str:
    ask = (
        normalized.question
        or {
            "technical": "Give a technical analysis of the price action and indicators.",
            "news": "Analyse how the recent news affects these symbols.",
            "portfolio_risk": "Assess the risk of my portfolio: concentration, losses, exposure.",
        }[normalized.kind]
    )
    omitted = ", ".join(f"{n} {k}" for k, n in packed.omitted.items())
    return (
        f"Symbols: {', '.join(normalized.symbols)}\n"
        f"Analysis type: {normalized.kind.replace('_', ' ')}\n"
        f"Horizon: {normalized.horizon}\n"
        f"Request: {ask}\n"
        + (f"(context shortened for length: {omitted} left out)\n" if omitted else "")
        + "\n<context>\n"
        + packed.text
        + "\n</context>"
    )
