"""The analysis flow of the seed: cache check, context, model (or offline analyst), checks,
cache, history. Identical requests in flight share one upstream call.

Coalescing works at two levels: inside a process, requests with the same cache key join
one in-flight task (each request id still gets the stream and the result); across
processes, a Redis lock makes the others wait for the winner's cached answer.

Every event of a stream also updates the stream's snapshot (:mod:`.streaming`), so a client
that subscribes after the first events still gets everything so far.
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

from starkmatter.ai import checking, config, contexting, models, offline, streaming, upstream
from starkmatter.core import errors, logs, loops, metrics
from starkmatter.core.auth import sessions, tokens

log = logs.get_logger(__name__)

ANALYSES = prometheus_client.Counter(
    "starkmatter_ai_analyses_total",
    "Analyses completed, by who answered (anthropic, offline) and whether from cache.",
    ["source", "cached"],
)
RELAY_STOP_S = 2.0
OFFLINE_CACHE_TTL_S = 60
"""A fallback answer is cached briefly only, so a recovered upstream is used again soon."""


def channel(request_id: str) -> str:
    return streaming.channel(request_id)


def owner_key(request_id: str) -> str:
    """Who asked for an analysis; the gateway lets only that user subscribe (contracts.md)."""
    return f"ai:owner:{request_id}"


OWNER_TTL_S = 24 * 3600


def answer_key(request_key: str) -> str:
    """One hash per normalized request: ``version`` (the data version its answer was made
    from; only a request over the same data may use it) and ``outcome`` (JSON)."""
    return f"ai:answer:{request_key}"


def inflight_key(key: str) -> str:
    """The cross-process lock of one computation (cache key = request + data version)."""
    return f"ai:inflight:{key}"


# The Redis half of every request, in one round trip: check that the caller's session is
# still open (the bearer token's signature was checked by the route; revocation lives
# here), record who asked (the gateway's subscription check needs it whatever happens
# next), read the cached answer and, when there is one, write the stream's final snapshot
# so a subscriber gets it at once. If the answer turns out to be from older data, the miss
# path overwrites that snapshot before anyone has learnt the request id.
_HIT_SCRIPT = """
if redis.call('HGET', KEYS[4], 'user_id') ~= ARGV[1] then
  return {0, false, false}
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
local entry = redis.call('HMGET', KEYS[1], 'version', 'outcome')
if entry[1] and entry[2] then
  redis.call('SET', KEYS[3], ARGV[3] .. string.sub(entry[2], 2) .. '}', 'EX', ARGV[4])
end
return {1, entry[1], entry[2]}
"""

_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True)
class Outcome:
    source: models.Source
    model: str
    analysis: models.Analysis
    checks: dict[str, Any]
    fallback_reason: str | None
    usage: dict[str, int] | None

    def as_json(self) -> dict[str, Any]:
        """The answer as stored in the cache and sent on the stream (the same label as
        ``GET /ai/analyses/{id}``: a streamed answer says who answered too)."""
        return {
            "source": self.source,
            "model": self.model,
            "result": self.analysis.model_dump(mode="json"),
            "checks": self.checks,
            "fallback_reason": self.fallback_reason,
            "usage": self.usage,
            "label": offline.LABEL if self.source == "offline" else None,
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
    version: str
    normalized: models.NormalizedRequest
    user_id: str
    request_ids: list[str]
    task: asyncio.Task[None] | None = None
    state: streaming.StreamState = dataclasses.field(default_factory=streaming.StreamState)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    """Orders every write of this stream's events and snapshots (one writer at a time)."""


@dataclasses.dataclass(frozen=True)
class Submitted:
    id: str
    status: str
    cached: bool
    outcome: dict[str, Any] | None
    """For a cache hit: the stored answer (``Outcome.as_json`` form), as it was cached."""
    normalized: models.NormalizedRequest
    created_at: dt.datetime
    completed_at: dt.datetime | None


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
        self._statements: dict[tuple[frozenset[str], bool], str] = {}
        self._hit = redis.register_script(_HIT_SCRIPT)
        self._release = redis.register_script(_RELEASE_SCRIPT)
        self._renew = redis.register_script(_RENEW_SCRIPT)

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

    def _hit_statement(self, tables: frozenset[str], user_scoped: bool) -> str:
        """Reads the data version and, only if the cached answer was made from that version,
        records the cache hit's history row: one round trip, one commit (durable unless
        ``hit_history_commit`` says otherwise).
        """
        statement = self._statements.get((tables, user_scoped))
        if statement is None:
            version = contexting.version_sql(tables, user_scoped=user_scoped)
            # set_config(..., true) lasts until this statement's own transaction commits.
            commit = (
                "SELECT set_config('synchronous_commit', 'off', true)"
                if self.settings.hit_history_commit == "async"
                else "SELECT NULL"
            )
            statement = f"""
                WITH v AS (SELECT {version} AS version),
                c AS ({commit} AS setting),
                o AS (SELECT $9::text::jsonb AS j),
                ins AS (
                    INSERT INTO ai_analyses (id, user_id, kind, symbols, question, horizon,
                        cache_key, data_version, status, source, cached, model, result, checks,
                        fallback_reason, completed_at)
                    SELECT $3::uuid, $2::uuid, $4::text, $1::text[], $5::text, $6::text,
                        $7::text, v.version, 'done', o.j->>'source', true, o.j->>'model',
                        o.j->'result', o.j->'checks', o.j->>'fallback_reason', now()
                    FROM v, o, c WHERE v.version = $8::text
                    RETURNING created_at, completed_at)
                SELECT v.version, ins.created_at, ins.completed_at FROM v LEFT JOIN ins ON true"""
            self._statements[(tables, user_scoped)] = statement
        return statement

    async def submit(
        self, principal: tokens.Principal, request: models.AnalyzeRequest
    ) -> Submitted:
        """A cache hit costs one Redis round trip (session check included) and one
        PostgreSQL statement. ``principal`` comes from a verified token whose session has
        not been checked yet: this method checks it and raises ``Unauthenticated``."""
        user_id = principal.user_id
        normalized = models.normalize(request, user_id)
        tables = await self._available_tables()
        request_key = models.request_key(normalized, self.settings.model)
        request_uuid = uuid.uuid4()
        request_id = str(request_uuid)
        session_open, cached_version, cached = await self._hit(
            keys=[
                answer_key(request_key),
                owner_key(request_id),
                streaming.snapshot_key(request_id),
                sessions.key(principal.session_id),
            ],
            args=[
                user_id,
                OWNER_TTL_S,
                streaming.CACHED_SNAPSHOT_PREFIX,
                self.settings.snapshot_ttl_s,
            ],
        )
        if not session_open:
            raise errors.Unauthenticated("session has ended", code="session_revoked")
        outcome_json = _text(cached)
        expected = _text(cached_version) if outcome_json is not None else None
        row = await self.pool.fetchrow(
            self._hit_statement(tables, normalized.user_scope is not None),
            list(normalized.symbols),
            uuid.UUID(user_id),
            request_uuid,
            normalized.kind,
            normalized.question,
            normalized.horizon,
            models.cache_key(normalized, expected or "", self.settings.model),
            expected,
            outcome_json,
        )
        assert row is not None
        if row["created_at"] is not None and outcome_json is not None:
            # The answer was made from the data as it is now: served, and recorded above.
            metrics.cache_result("ai", hit=True)
            outcome: dict[str, Any] = json.loads(outcome_json)
            ANALYSES.labels(source=outcome["source"], cached="true").inc()
            return Submitted(
                request_id,
                "done",
                True,
                outcome,
                normalized,
                row["created_at"],
                row["completed_at"],
            )
        metrics.cache_result("ai", hit=False)
        version: str = row["version"]
        key = models.cache_key(normalized, version, self.settings.model)
        await self._take_quota(user_id)
        created_at = await self._insert_pending(request_uuid, user_id, normalized, key, version)
        flight = self._flights.get(key)
        new = flight is None
        if flight is None:
            flight = Flight(key, request_key, version, normalized, user_id, [])
            self._flights[key] = flight
        # Joined synchronously, so the flight's final update and events include this id.
        flight.request_ids.append(request_id)
        async with flight.lock:
            if new:
                flight.task = asyncio.create_task(self._fly(flight), name=f"ai-analysis-{key[:12]}")
            # Whatever streamed before this request joined is its snapshot; the events
            # after it (under the same lock) update the snapshot and reach its channel.
            await self.redis.set(
                streaming.snapshot_key(request_id),
                streaming.dumps(flight.state.snapshot()),
                ex=self.settings.snapshot_ttl_s,
            )
        return Submitted(request_id, "pending", False, None, normalized, created_at, None)

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
        request_id: uuid.UUID,
        user_id: str,
        normalized: models.NormalizedRequest,
        key: str,
        version: str,
    ) -> dt.datetime:
        created_at: dt.datetime = await self.pool.fetchval(
            """INSERT INTO ai_analyses (id, user_id, kind, symbols, question, horizon, cache_key,
                                        data_version, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending') RETURNING created_at""",
            request_id,
            uuid.UUID(user_id),
            normalized.kind,
            list(normalized.symbols),
            normalized.question,
            normalized.horizon,
            key,
            version,
        )
        return created_at

    async def _publish(self, flight: Flight, event: dict[str, Any]) -> None:
        """Send ``event`` to every request of the flight and fold it into their snapshots,
        in one transaction: a subscriber's snapshot never misses an event it was not sent."""
        async with flight.lock:
            data = streaming.dumps(flight.state.add(event))
            snapshot = streaming.dumps(flight.state.snapshot())
            async with self.redis.pipeline(transaction=True) as pipe:
                for rid in flight.request_ids:
                    pipe.set(streaming.snapshot_key(rid), snapshot, ex=self.settings.snapshot_ttl_s)
                    pipe.publish(channel(rid), data)
                await pipe.execute()

    async def _fly(self, flight: Flight) -> None:
        try:
            outcome = await self._coalesced(flight)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure must be recorded, not lost
            log.error("ai.analysis_failed", error=str(exc))
            self._flights.pop(flight.key, None)
            await self._failed(flight, exc)
            return
        # Leave the flight first: a request arriving now finds the cache instead.
        self._flights.pop(flight.key, None)
        try:
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
        except Exception as exc:  # noqa: BLE001 - recorded as failed, never left pending
            log.error("ai.analysis_not_stored", error=str(exc))
            await self._failed(flight, exc)
            return
        ANALYSES.labels(source=outcome.source, cached="false").inc()
        await self._publish(flight, streaming.result_event(outcome.as_json(), cached=False))

    async def _failed(self, flight: Flight, exc: Exception) -> None:
        await self.pool.execute(
            """UPDATE ai_analyses SET status = 'failed', error_code = 'internal',
                      error_message = $2, completed_at = now() WHERE id = ANY($1::uuid[])""",
            flight.request_ids,
            logs.mask_text(str(exc))[:300],  # read back by operators: masked before the cut
        )
        await self._publish(flight, {"type": "error", "code": "internal"})

    async def _ready(self, flight: Flight) -> Outcome | None:
        """The answer another process cached for this flight's request and data, if any."""
        version, raw = await self.redis.hmget(answer_key(flight.request_key), "version", "outcome")
        if _text(version) != flight.version or raw is None:
            return None
        return Outcome.from_json(json.loads(raw))

    async def _coalesced(self, flight: Flight) -> Outcome:
        """Across processes: one holder of the lock computes, the others read its answer.

        The lock lives ``coalesce_lock_ttl_s`` and its holder renews it while it works, so
        a long upstream call keeps it, and a holder that dies frees it within that time:
        a waiter then takes over instead of waiting out ``coalesce_wait_s``.
        """
        lock_key = inflight_key(flight.key)
        # The lock names one request of its holder, whose stream a waiter relays.
        token = f"{uuid.uuid4().hex} {flight.request_ids[0]}"
        ttl_ms = int(self.settings.coalesce_lock_ttl_s * 1000)
        deadline = time.monotonic() + self.settings.coalesce_wait_s
        relay: asyncio.Task[None] | None = None
        relayed: str | None = None
        try:
            while not await self.redis.set(lock_key, token, nx=True, px=ttl_ms):
                ready = await self._ready(flight)
                if ready is not None:
                    return ready
                if time.monotonic() > deadline:
                    break
                holder = _text(await self.redis.get(lock_key))
                if holder is not None and holder != relayed and " " in holder:
                    await _cancelled(relay)
                    relayed = holder
                    relay = asyncio.create_task(self._relay(flight, holder.split(" ", 1)[1]))
                await asyncio.sleep(self.settings.coalesce_poll_s)
        finally:
            await _cancelled(relay)
        holding = asyncio.create_task(self._hold(lock_key, token, ttl_ms))
        try:
            # The lock may have been free because the holder just finished: its answer is
            # then in the cache, and computing it again is exactly what must not happen.
            ready = await self._ready(flight)
            if ready is not None:
                return ready
            if flight.state.partial_json or flight.state.text:
                # Taking over from a holder that died: what it streamed is void.
                await self._publish(
                    flight, {"type": "retry", "attempt": flight.state.attempt + 1, "wait_s": 0}
                )
            outcome = await self._produce(flight)
            ttl = (
                self.settings.cache_ttl_s
                if outcome.source == "anthropic" or outcome.fallback_reason == "no_api_key"
                else min(OFFLINE_CACHE_TTL_S, self.settings.cache_ttl_s)
            )
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    answer_key(flight.request_key),
                    mapping={
                        "version": flight.version,
                        "outcome": streaming.dumps(outcome.as_json()),
                    },
                )
                pipe.expire(answer_key(flight.request_key), ttl)
                await pipe.execute()
            return outcome
        finally:
            await loops.stopped(holding)
            # Release only our own lock (compare-and-delete).
            await self._release(keys=[lock_key], args=[token])

    async def _relay(self, flight: Flight, holder_request_id: str) -> None:
        """While another process computes this flight's answer, pass its stream on to this
        flight's requests: what it has streamed so far (as one delta), then each of its
        deltas and retries. The result is not relayed: :meth:`_fly` publishes it once the
        answer is in the cache and the history rows say so."""
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(channel(holder_request_id))
            # Subscribed first, then read: nothing falls between the two (dropped by seq).
            raw = await self.redis.get(streaming.snapshot_key(holder_request_id))
            held = json.loads(raw) if raw is not None else {"seq": 0}
            seen = int(held["seq"])
            if flight.state.partial_json or flight.state.text:
                # A new holder streams from the start: what the previous one sent is void.
                await self._publish(
                    flight, {"type": "retry", "attempt": flight.state.attempt + 1, "wait_s": 0}
                )
            if held.get("partial_json") or held.get("text"):
                await self._publish(
                    flight,
                    {
                        "type": "delta",
                        "partial_json": held.get("partial_json", ""),
                        "text": held.get("text", ""),
                    },
                )
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                event = json.loads(message["data"])
                if event.get("seq", 0) <= seen or event["type"] not in ("delta", "retry"):
                    continue
                seen = event.pop("seq")
                await self._publish(flight, event)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _hold(self, lock_key: str, token: str, ttl_ms: int) -> None:
        """Renew our lock every third of its lifetime until cancelled."""
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                await self._renew(keys=[lock_key], args=[token, ttl_ms])
            except Exception as exc:  # noqa: BLE001 - a missed renewal only risks a duplicate call
                log.warning("ai.inflight_renew_failed", error=str(exc))

    async def _produce(self, flight: Flight) -> Outcome:
        normalized = flight.normalized
        context = await contexting.gather(
            self.pool,
            self.redis,
            normalized,
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


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """Stop a relay; its failure only cost the waiting requests their deltas, and its
    clean-up is given a bounded time (the flight must go on whatever the relay does)."""
    if task is None:
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=RELAY_STOP_S)
    if not done:
        log.warning("ai.relay_stop_timeout")
    elif not task.cancelled() and task.exception() is not None:
        log.warning("ai.relay_failed", error=str(task.exception()))


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
