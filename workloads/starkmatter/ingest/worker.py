"""The ingestion worker (``starkmatter ingest --feed NAME``): one feed, one provider.

The feed spec is the MarketFeed custom resource's ``spec`` as JSON (the operator writes it
to the file named by ``STARKMATTER_FEED_CONFIG``); keys beyond the CRD's are optional:
``referencePrices`` ({symbol: price}), ``fieldMapping`` (REST poller), ``path`` and
``speed`` (CSV replay). The provider's credential, when it needs one, comes from
``STARKMATTER_FEED_TOKEN`` (``KEY:SECRET`` for Alpaca), never from the spec file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from starkmatter.core import db, heap, logs, loops, migrating, probes, redis_client, settings
from starkmatter.ingest import metrics, pipeline
from starkmatter.ingest.providers import base
from starkmatter.market import models, validation

log = logs.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class FeedSpec:
    name: str
    provider: str = "simulator"
    """simulator | websocket (Alpaca market-data v2 wire format) | rest | csv."""
    url: str | None = None
    symbols: tuple[str, ...] = ()
    poll_interval_s: float = 5.0
    max_daily_move_percent: int = 20
    max_tick_age_s: float | None = 30.0
    reference_prices: dict[str, str] = dataclasses.field(default_factory=dict)
    field_mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    path: str | None = None
    speed: float = 0.0
    token: str | None = None

    @classmethod
    def from_spec(cls, name: str, spec: dict[str, Any], *, token: str | None = None) -> FeedSpec:
        checks = spec.get("validation") or {}
        provider = spec.get("provider", "simulator")
        age = checks.get("maxTickAgeSeconds", 30)
        return cls(
            name=name,
            provider=provider,
            url=spec.get("url"),
            symbols=tuple(spec.get("symbols") or ()),
            poll_interval_s=float(spec.get("pollIntervalSeconds", 5)),
            max_daily_move_percent=int(checks.get("maxDailyMovePercent", 20)),
            # A backfill replays old data on purpose: age is not a fault there.
            max_tick_age_s=None if provider == "csv" else float(age),
            reference_prices=dict(spec.get("referencePrices") or {}),
            field_mapping=dict(spec.get("fieldMapping") or {}),
            path=spec.get("path"),
            speed=float(spec.get("speed", 0.0)),
            token=token,
        )

    def rules(self) -> validation.Rules:
        return validation.Rules(
            symbols=frozenset(self.symbols) if self.symbols else None,
            band_bps=self.max_daily_move_percent * 100,
            max_staleness_s=self.max_tick_age_s,
        )

    def references(self) -> dict[str, int]:
        return {symbol: models.to_fixed(price) for symbol, price in self.reference_prices.items()}


def load_spec(name: str, path: str | os.PathLike[str] | None = None) -> FeedSpec:
    source = path or os.environ.get("STARKMATTER_FEED_CONFIG")
    spec: dict[str, Any] = {}
    if source:
        document = json.loads(Path(source).read_text())
        spec = document.get("spec", document) if isinstance(document, dict) else {}
    return FeedSpec.from_spec(name, spec, token=os.environ.get("STARKMATTER_FEED_TOKEN"))


def build_provider(spec: FeedSpec) -> base.Provider:
    if spec.provider == "simulator":
        from starkmatter.ingest.providers import simulated

        return simulated.SimulatorProvider(
            spec.name, spec.url or "ws://127.0.0.1:8765/", symbols=list(spec.symbols) or None
        )
    if spec.provider == "websocket":
        from starkmatter.ingest.providers import alpaca

        if not spec.url:
            raise base.FatalProviderError("a websocket feed needs a url")
        return alpaca.AlpacaProvider(spec.name, spec.url, list(spec.symbols), token=spec.token)
    if spec.provider == "rest":
        from starkmatter.ingest.providers import polling

        if not spec.url:
            raise base.FatalProviderError("a rest feed needs a url")
        return polling.RestPoller(
            spec.name,
            spec.url,
            polling.FieldMapping.from_spec(spec.field_mapping),
            interval_s=spec.poll_interval_s,
            token=spec.token,
        )
    if spec.provider == "csv":
        from starkmatter.ingest.providers import replay

        if not spec.path:
            raise base.FatalProviderError("a csv feed needs a path")
        return replay.CsvReplay(spec.name, Path(spec.path), speed=spec.speed)
    raise base.FatalProviderError(f"unknown provider {spec.provider!r}")


async def load_references(pool: asyncpg.Pool, symbols: tuple[str, ...]) -> dict[str, int]:
    """Previous closes from stored 1-minute bars: the centre of each symbol's daily band."""
    rows = await pool.fetch(
        """
        SELECT DISTINCT ON (symbol) symbol, close FROM market_bars
        WHERE interval = '1m'
          AND ts < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
          AND ($1::text[] IS NULL OR symbol = ANY($1))
        ORDER BY symbol, ts DESC
        """,
        list(symbols) or None,
    )
    return {row["symbol"]: models.from_decimal(row["close"]) for row in rows}


DRAIN_ON_STOP_S = 10.0
"""How long a stopping worker spends storing what it already took in (Kubernetes gives a
pod 30 s between SIGTERM and SIGKILL)."""


async def run_feed(
    spec: FeedSpec,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    *,
    provider: base.Provider | None = None,
    config: pipeline.PipelineConfig | None = None,
    idle_when_finished: bool = False,
) -> None:
    """Run one feed until cancelled (or, for a finite source, until it is stored; with
    ``idle_when_finished``, a stored replay is reported and the worker then waits, still
    sending heartbeats, until cancelled)."""
    references = await load_references(pool, spec.symbols)
    references.update(spec.references())
    validator = validation.Validator(spec.rules(), references)
    pipe = pipeline.Pipeline(spec.name, validator, pool, redis, config)
    source = provider or build_provider(spec)
    if not source.finite:
        # A predecessor killed without draining left stored ticks that no stored bar holds:
        # rebuild those bars from them before the live stream adds to them. A finite source
        # (a file) is replayed from its start instead, so its bars come back whole anyway.
        await pipe.reseed(spec.symbols)
    else:
        # A new replay (a restarted pod, a new spec) reads the file from its start: the
        # previous run's finish time would tell the operator and the alerts that this one
        # is done. Cleared before any tick; a failure here stops the worker (restarted).
        await redis.hdel(pipeline.heartbeat_key(spec.name), "replay_finished_ts")
        with contextlib.suppress(KeyError):
            metrics.REPLAY_FINISHED.remove(spec.name)
    consumer = asyncio.create_task(pipe.run(), name=f"ingest-{spec.name}")
    producer = asyncio.create_task(source.run(pipe.submit), name=f"provider-{spec.name}")
    log.info("ingest.started", feed=spec.name, provider=spec.provider, symbols=len(spec.symbols))
    try:
        # Whichever ends first decides: a failed pipeline must not leave the provider
        # blocked on a full queue, silently.
        await asyncio.wait({consumer, producer}, return_when=asyncio.FIRST_COMPLETED)
        if consumer.done():
            consumer.result()
            raise RuntimeError("the ingest pipeline stopped")
        producer.result()
        await pipe.drain(close_bars=source.finite)
        if source.finite:
            await _replay_finished(pipe, redis, source.delivered)
            if idle_when_finished:
                # A Deployment restarts a process that exits, and the restart would replay
                # the whole file again (stored nothing twice, but read and sent all of it).
                # The pipeline keeps its heartbeat and the probes stay served; it ends only
                # when it fails (raised below) or the worker is stopped.
                await asyncio.wait({consumer})
                consumer.result()
                raise RuntimeError("the ingest pipeline stopped")
    except asyncio.CancelledError:
        # A stop (SIGTERM, Ctrl-C): stop reading, then store what was taken in, open bars
        # included as partial bars (the restarted worker's part of each merges with them).
        # A second cancel (the owner gives up waiting) is not held back here.
        log.info("ingest.stopping", feed=spec.name)
        producer.cancel()
        try:
            async with asyncio.timeout(DRAIN_ON_STOP_S):
                await asyncio.wait({producer})
                if not consumer.done():
                    await pipe.drain(close_bars=True)
            log.info("ingest.drained", feed=spec.name)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log.warning("ingest.drain_on_stop_failed", feed=spec.name, error=repr(exc))
        raise
    finally:
        await loops.stopped(producer, consumer)


async def _replay_finished(pipe: pipeline.Pipeline, redis: aioredis.Redis, delivered: int) -> None:
    """Say that a finite source is stored: a log line, a metric, the feed's heartbeat."""
    now = time.time_ns()
    pipe.replay_finished_ns = now
    metrics.REPLAY_FINISHED.labels(feed=pipe.feed).set(now / 1e9)
    try:
        await redis.hset(
            pipeline.heartbeat_key(pipe.feed), mapping={"replay_finished_ts": models.iso(now)}
        )
    except OSError as exc:
        log.warning("ingest.heartbeat_failed", feed=pipe.feed, error=str(exc))
    log.info(
        "ingest.replay_finished",
        feed=pipe.feed,
        delivered=delivered,
        accepted=pipe.accepted,
        rejected=pipe.rejected,
    )


def probes_port(config: settings.Settings) -> int | None:
    """``STARKMATTER_METRICS_PORT`` when it is set (the operator's ingest pod sets it), else
    none: ingest processes started by hand beside other services would otherwise all want
    the same default port."""
    return config.metrics_port if settings.ENV_PREFIX + "METRICS_PORT" in os.environ else None


async def run(
    config: settings.Settings,
    feed: str,
    *,
    spec_path: str | None = None,
    probes_port: int | None = None,
    settle: bool = False,
) -> None:
    """Entry point used by the CLI and dev mode: connect, migrate, ingest until cancelled.

    A finished replay does not end the process (see run_feed). The probes (/healthz,
    /readyz, /metrics) are served on ``probes_port`` when given (the CLI gives
    :func:`probes_port`); dev mode gives none: its API serves the process's one registry.
    """
    spec = load_spec(feed, spec_path)
    pool = await db.create_pool(config)
    redis = redis_client.create_redis(config)
    try:
        ready = probes.storage_check(pool, redis)
        async with probes.listening_on(config.api_host, probes_port, ready):
            async with pool.acquire() as conn:
                await migrating.apply(conn)
            if settle:
                heap.settle()
            await run_feed(spec, pool, redis, idle_when_finished=True)
    finally:
        await redis.aclose()
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    """``starkmatter ingest --feed NAME [--config FILE]``."""
    parser = argparse.ArgumentParser(prog="starkmatter ingest")
    parser.add_argument("--feed", required=True)
    parser.add_argument(
        "--config", default=None, help="feed spec JSON (else $STARKMATTER_FEED_CONFIG)"
    )
    args = parser.parse_args(argv)
    config = settings.get_settings()
    logs.configure(config.log_level, json=config.log_json)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run(
                config,
                args.feed,
                spec_path=args.config,
                probes_port=probes_port(config),
                settle=True,
            )
        )
