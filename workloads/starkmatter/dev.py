"""``starkmatter dev``: the whole platform in one process tree on this machine.

Embedded PostgreSQL and Redis start unless ``STARKMATTER_DATABASE_URL`` /
``STARKMATTER_REDIS_URL`` point elsewhere; their data lives in ``STARKMATTER_DATA_DIR``
and survives restarts. A JWT signing key is generated there on first start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvicorn

from starkmatter.alerts import evaluating
from starkmatter.api import app as api_app
from starkmatter.core import db, embedded, logs, migrating, redis_client, serving, settings
from starkmatter.core.auth import keys
from starkmatter.gateway import server as gateway_server
from starkmatter.ingest import simulation, simulator
from starkmatter.ingest import worker as ingest_worker
from starkmatter.news import worker as news_worker
from starkmatter.orders import service as order_service
from starkmatter.tasks import relaying

DEV_FEED = "dev"
SHUTDOWN_GRACE_S = 10.0
"""How long services get to stop on their own before they are cancelled again."""

_log = logs.get_logger("starkmatter.dev")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(config: settings.Settings, stack: contextlib.ExitStack) -> settings.Settings:
    """Start what is missing (embedded servers, dev keys); returns the completed settings."""
    data_dir = config.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    updates: dict[str, object] = {"data_dir": data_dir}
    if config.database_url is None:
        pg = embedded.EmbeddedPostgres(data_dir / "postgres").start()
        stack.callback(pg.stop)
        updates["database_url"] = asyncio.run(pg.ensure_database("starkmatter"))
        _say(f"  postgres  embedded, data in {pg.root}")
    if config.redis_url is None:
        rd = embedded.EmbeddedRedis(data_dir / "redis").start()
        stack.callback(rd.stop)
        updates["redis_url"] = rd.url
        _say(f"  redis     embedded, data in {rd.root}")
    if config.private_key_pem() is None and config.public_key_pem() is None:
        updates["jwt_private_key_file"] = keys.dev_key_file(data_dir)
        _say(f"  jwt key   generated for dev mode only: {updates['jwt_private_key_file']}")
    return config.model_copy(update=updates)


Service = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


def _write_dev_feed(config: settings.Settings, simulator_port: int) -> Path:
    """The MarketFeed spec dev mode ingests: every simulated symbol, from the local simulator."""
    path = config.data_dir / "feeds" / f"{DEV_FEED}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "provider": "simulator",
        "url": f"ws://127.0.0.1:{simulator_port}/",
        "symbols": sorted(simulation.DEFAULT_SYMBOLS),
        "referencePrices": simulation.DEFAULT_SYMBOLS,
    }
    path.write_text(json.dumps({"spec": spec}, indent=2))
    return path


async def _alerts(config: settings.Settings) -> None:
    pool = await db.create_pool(config)
    redis = redis_client.create_redis(config)
    evaluator = evaluating.Evaluator(
        pool,
        redis,
        rules_dir=None,
        metrics_url=f"http://{config.api_host}:{config.metrics_port}/metrics",
    )
    try:
        await evaluating.run(evaluator)
    finally:
        await evaluator.aclose()
        await redis.aclose()
        await pool.close()


def _services(config: settings.Settings) -> tuple[list[uvicorn.Server], list[Service]]:
    """Every component of the platform, as HTTP servers and background loops."""
    # The API's probe listener serves the metrics of every service here: they share one
    # process and so one registry (the gateway and the workers run none of their own).
    api = serving.server(
        api_app.create_app(config, probes_port=config.metrics_port),
        config.api_host,
        config.api_port,
        lifespan="on",
    )
    simulator_port = embedded.free_port()
    feed_path = _write_dev_feed(config, simulator_port)
    loops: list[Service] = [
        ("simulator", lambda: simulator.serve(port=simulator_port, rate=100.0, bad_share=0.01)),
        ("ingest", lambda: ingest_worker.run(config, DEV_FEED, spec_path=str(feed_path))),
        ("gateway", lambda: gateway_server.run(config, port=config.gateway_port)),
        ("orders", lambda: order_service.run(config)),
        ("news", lambda: news_worker.run_dev(config, port=embedded.free_port())),
        ("alerts", lambda: _alerts(config)),
        ("events", lambda: relaying.run_dev(config)),
    ]
    return [api], loops


async def _supervised(name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Restart a background service that fails, with backoff, as Kubernetes would."""
    delay = 1.0
    while True:
        started = time.monotonic()
        try:
            await factory()
            return
        except Exception:  # noqa: BLE001 - logged; the service is restarted
            _log.exception("dev.service_failed", service=name, restart_in_s=delay)
        delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
        await asyncio.sleep(delay)


async def _migrate(config: settings.Settings) -> None:
    pool = await db.create_pool(config)
    try:
        async with pool.acquire() as conn:
            await migrating.apply(conn)
    finally:
        await pool.close()


async def serve(config: settings.Settings) -> None:
    """Run every service until Ctrl-C/SIGTERM or until the API server stops."""
    await _migrate(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int, _frame: object) -> None:
        # A plain handler that wakes the loop itself (as asyncio.Runner does for Ctrl-C),
        # rather than loop.add_signal_handler, whose wake-up fd another library may reset.
        loop.call_soon_threadsafe(stop.set)
        loop.call_soon_threadsafe(
            lambda: _log.info("dev.stopping", signal=signal.Signals(signum).name)
        )

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    servers, loops = _services(config)
    tasks = {asyncio.create_task(s.serve(), name="http") for s in servers}
    tasks |= {asyncio.create_task(_supervised(name, factory), name=name) for name, factory in loops}
    stopper = asyncio.create_task(stop.wait(), name="stop")
    while not all(s.started for s in servers) and not any(t.done() for t in tasks):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if all(s.started for s in servers):
        _say(f"\nStarkMatter is running: http://{config.api_host}:{config.api_port}/")
        if config.api_docs:
            _say(f"  API docs  http://{config.api_host}:{config.api_port}/docs")
        _say(f"  metrics   http://{config.api_host}:{config.metrics_port}/metrics")
        _say(f"  stream    ws://{config.api_host}:{config.gateway_port}/ws (and /sse)")
        _say(f"  services  api, {', '.join(name for name, _ in loops)}")
        _say("  Ctrl-C stops everything; data is kept for the next run.\n")
    done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in done - {stopper}:
        if not task.cancelled() and task.exception() is not None:
            _log.error("dev.service_failed", service=task.get_name(), exc_info=task.exception())
    for server in servers:
        server.should_exit = True
    for task in tasks:
        if task.get_name() != "http":
            task.cancel()
    stopper.cancel()
    pending = {*tasks, stopper}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S)
        if pending:
            names = sorted(t.get_name() for t in pending)
            _log.warning("dev.shutdown_waiting", services=names)
            for task in pending:
                task.cancel()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(config: settings.Settings) -> None:
    # A shell that starts us in the background hands us SIGINT ignored; Ctrl-C and SIGTERM
    # must stop start-up too (the event loop takes them over once services run).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    _say("Starting StarkMatter in dev mode...")
    with contextlib.ExitStack() as stack:
        try:
            ready = prepare(config, stack)
            _log.info("dev.prepared", seconds=round(time.monotonic() - started, 2))
            asyncio.run(serve(ready))
        except KeyboardInterrupt:
            pass
        finally:
            _say("Stopping...")
    _say("Stopped.")
