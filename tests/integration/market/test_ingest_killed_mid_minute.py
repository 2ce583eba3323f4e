"""`starkmatter ingest` SIGKILLed mid-minute (an OOM kill, a lost node) and restarted: the
bars it stores agree with the ticks stored before and after the kill."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from starkmatter.core import embedded, settings
from starkmatter.ingest import simulator
from tests.integration.market import bar_checks, ingest_process

pytestmark = pytest.mark.timeout(300)
SYMBOLS = {"AAPL": "227.50", "MSFT": "415.20"}


async def _start_worker(spec: Path, config: settings.Settings, tmp_path: Path) -> Any:
    env = ingest_process.ingest_env(config, tmp_path)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starkmatter.cli", "ingest", "--feed", "killed", "--config",
        str(spec), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _stop(proc: Any) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.communicate()


async def test_a_worker_killed_mid_minute_and_restarted_stores_bars_that_hold_every_stored_trade(
    config: settings.Settings, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    port = embedded.free_port()
    sim = asyncio.create_task(
        simulator.serve(port=port, rate=400.0, bad_share=0.0, seed=11, symbols=SYMBOLS)
    )
    spec = tmp_path / "feed.json"
    spec.write_text(json.dumps({"provider": "simulator", "url": f"ws://127.0.0.1:{port}/",
                                "symbols": list(SYMBOLS)}))  # fmt: skip
    first = await _start_worker(spec, config, tmp_path)
    second = None
    try:
        # Kill the first worker once it has stored trades of the current minute (and 1-second
        # bars), early enough in the minute that the second one starts before it ends: its
        # first 1-minute bar then holds trades of both.
        async with asyncio.timeout(120):
            while True:
                second_of_minute = time.time() % 60
                ready = await db.fetchval(
                    """SELECT (SELECT count(*) FROM market_ticks
                               WHERE ts >= date_trunc('minute', now())) > 100
                          AND (SELECT count(*) FROM market_bars WHERE interval = '1s') > 10"""
                )
                if ready and 5 <= second_of_minute <= 35:
                    break
                await asyncio.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        await first.communicate()
        assert first.returncode == -signal.SIGKILL
        killed_minute = await db.fetchval("SELECT date_trunc('minute', max(ts)) FROM market_ticks")
        # The gap this test is about: stored trades of the kill minute that no bar holds.
        orphans = await db.fetchval(
            """SELECT count(*) FROM market_ticks t WHERE NOT EXISTS (
                   SELECT 1 FROM market_bars b WHERE b.symbol = t.symbol AND b.interval = '1m'
                   AND b.ts = date_trunc('minute', t.ts))"""
        )
        assert orphans > 0

        second = await _start_worker(spec, config, tmp_path)
        # The restarted worker stores the kill minute's bar when that minute closes.
        async with asyncio.timeout(120):
            while not await db.fetchval(  # noqa: ASYNC110 - rows written by another process
                """SELECT count(*) = 2 FROM market_bars WHERE interval = '1m' AND ts = $1""",
                killed_minute,
            ):
                await asyncio.sleep(0.2)
        # A clean stop stores the rest (open bars as parts), so that everything stored can
        # be checked below.
        second.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await second.communicate()
        assert second.returncode == 0, stderr.decode()[-2000:]
    finally:
        await _stop(first)
        if second is not None:
            await _stop(second)
        sim.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sim

    await bar_checks.assert_bars_agree_with_ticks(db)
    assert await bar_checks.assert_indicators_follow_the_stored_closes(db) > 0
