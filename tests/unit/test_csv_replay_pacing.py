"""A paced csv replay sends each row at its own time, never before."""

from __future__ import annotations

import time
from pathlib import Path

from starkmatter.ingest.providers import base, replay

CSV = """type,symbol,ts,price,size,trade_id
trade,AAPL,2024-01-02T14:30:00.000Z,187.15,100,p1
trade,AAPL,2024-01-02T14:30:01.000Z,187.18,250,p2
trade,AAPL,2024-01-02T14:30:02.000Z,187.10,50,p3
"""


async def test_each_row_goes_out_no_earlier_than_its_timestamp_divided_by_the_speed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "paced.csv"
    path.write_text(CSV)
    speed = 5.0  # one second of the file every 0.2 s
    sent: dict[str, float] = {}
    started = time.monotonic()

    async def sink(batch: list[base.Incoming]) -> None:
        for incoming in batch:
            assert incoming.fields is not None
            sent[incoming.fields["trade_id"]] = time.monotonic() - started

    await replay.CsvReplay("paced", path, speed=speed).session(sink)
    assert sorted(sent) == ["p1", "p2", "p3"]
    assert sent["p2"] >= 1.0 / speed
    assert sent["p3"] >= 2.0 / speed
