"""`starkmatter ingest` run as a real process on a simulator feed, then stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg

from starkmatter.core import embedded, settings
from starkmatter.ingest import simulator


def ingest_env(config: settings.Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``starkmatter ingest`` process on the test's PostgreSQL and Redis
    (dev mode, its data under ``tmp_path``); the test run's STARKMATTER_ variables left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}
    env.update(
        STARKMATTER_ENV="dev",
        STARKMATTER_DATABASE_URL=config.database_url or "",
        STARKMATTER_REDIS_URL=config.redis_url or "",
        STARKMATTER_DATA_DIR=str(tmp_path / "data"),
        **extra,
    )
    return env


async def run_until_sigterm(
    config: settings.Settings,
    db: asyncpg.Connection[Any],
    tmp_path: Path,
    feed: str,
    symbols: dict[str, str],
    *,
    seed: int,
    stored_ticks: int = 200,
) -> tuple[int | None, str]:
    """Ingest a simulator feed in a ``starkmatter ingest`` process until more than
    ``stored_ticks`` ticks are stored, then SIGTERM it (a pod being stopped); returns its
    exit code and what it logged."""
    port = embedded.free_port()
    sim = asyncio.create_task(
        simulator.serve(port=port, rate=400.0, bad_share=0.0, seed=seed, symbols=symbols)
    )
    spec = tmp_path / "feed.json"
    spec.write_text(json.dumps({"provider": "simulator", "url": f"ws://127.0.0.1:{port}/",
                                "symbols": list(symbols)}))  # fmt: skip
    env = ingest_env(config, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starkmatter.cli", "ingest", "--feed", feed, "--config",
        str(spec), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(45):
            while not await db.fetchval(  # noqa: ASYNC110 - rows written by another process
                "SELECT count(*) > $1 FROM market_ticks", stored_ticks
            ):
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
        return proc.returncode, stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sim
