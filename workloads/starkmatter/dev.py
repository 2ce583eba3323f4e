"""``starkmatter dev``: the whole platform in one process tree on this machine.

Embedded PostgreSQL and Redis start unless ``STARKMATTER_DATABASE_URL`` /
``STARKMATTER_REDIS_URL`` point elsewhere; their data lives in ``STARKMATTER_DATA_DIR``
and survives restarts. A JWT signing key is generated there on first start.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import uvicorn

from starkmatter.api import app as api_app
from starkmatter.core import embedded, logs, settings
from starkmatter.core.auth import keys

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


async def serve(config: settings.Settings) -> None:
    server = uvicorn.Server(
        uvicorn.Config(
            api_app.create_app(config),
            host=config.api_host,
            port=config.api_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.05)
    if server.started:
        _say(f"\nStarkMatter is running: http://{config.api_host}:{config.api_port}/")
        _say(f"  API docs  http://{config.api_host}:{config.api_port}/docs")
        _say("  Ctrl-C stops everything; data is kept for the next run.\n")
    await task


def run(config: settings.Settings) -> None:
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
