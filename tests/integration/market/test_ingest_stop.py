"""`starkmatter ingest` as a process: SIGTERM (a pod being stopped) stores what it took in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from starkmatter.core import settings
from tests.integration.market import ingest_process

pytestmark = pytest.mark.timeout(90)
SYMBOLS = {"AAPL": "227.50", "MSFT": "415.20"}


async def test_sigterm_stores_buffered_ticks_and_the_open_bars_then_exits_cleanly(
    config: settings.Settings, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    code, log = await ingest_process.run_until_sigterm(
        config, db, tmp_path, "stop", SYMBOLS, seed=7
    )
    assert code == 0, log[-2000:]
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
