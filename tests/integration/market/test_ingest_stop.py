"""`starkmatter ingest` as a process: SIGTERM (a pod being stopped) stores what it took in."""

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
import pytest

from starkmatter.core import embedded, settings
from starkmatter.ingest import simulator

pytestmark = pytest.mark.timeout(90)
SYMBOLS = {"AAPL": "227.50", "MSFT": "415.20"}


async def test_sigterm_stores_buffered_ticks_and_the_open_bars_then_exits_cleanly(
    config: settings.Settings, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    port = embedded.free_port()
    sim = asyncio.create_task(
        simulator.serve(port=port, rate=400.0, bad_share=0.0, seed=7, symbols=SYMBOLS)
    )
    spec = tmp_path / "feed.json"
    spec.write_text(json.dumps({"provider": "simulator", "url": f"ws://127.0.0.1:{port}/",
                                "symbols": list(SYMBOLS)}))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}
    env.update(
        STARKMATTER_ENV="dev",
        STARKMATTER_DATABASE_URL=config.database_url or "",
        STARKMATTER_REDIS_URL=config.redis_url or "",
        STARKMATTER_DATA_DIR=str(tmp_path / "data"),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starkmatter.cli", "ingest", "--feed", "stop", "--config",
        str(spec), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(45):
            while not await db.fetchval("SELECT count(*) > 200 FROM market_ticks"):  # noqa: ASYNC110 - rows written by another process
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sim
    # Every stored trade is inside a stored bar: the bars still open at SIGTERM were
    # stored as partial bars (a restarted worker's part merges with them).
    for interval in ("1s", "1m"):
        uncovered = await db.fetchval(
            """SELECT count(*) FROM market_ticks t WHERE NOT EXISTS (
                   SELECT 1 FROM market_bars b WHERE b.symbol = t.symbol AND b.interval = $1
                   AND t.ts BETWEEN b.first_trade_at AND b.last_trade_at)""",
            interval,
        )
        assert uncovered == 0, interval
    traded = await db.fetchval("SELECT count(*) FROM market_ticks")
    in_bars = await db.fetchval("SELECT sum(trades) FROM market_bars WHERE interval = '1m'")
    assert in_bars == traded
