"""File replay (CSV) for backfills: ``starkmatter ingest --feed NAME`` with ``provider: csv``.

Header row with canonical column names (``type,symbol,ts,price,size,trade_id,bid,ask,
bid_size,ask_size,...``); empty cells are absent fields. ``speed`` 0 replays as fast as the
pipeline takes it; ``speed`` N replays N times faster than the timestamps' own pace.
Replaying the same file twice stores nothing twice: storage de-duplicates ticks on identity
and rejections on their origin (file, line, line hash).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import time
from pathlib import Path
from typing import Any

from starkmatter.ingest.providers import base
from starkmatter.market import normalizing


class CsvReplay(base.Provider):
    finite = True

    def __init__(
        self, feed: str, path: Path, *, speed: float = 0.0, chunk: int = 1_000, **kwargs: Any
    ) -> None:
        super().__init__(feed, **kwargs)
        self.path = path
        self.speed = speed
        self.chunk = chunk

    async def session(self, sink: base.Sink) -> None:
        with self.path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                return
            columns = [name.strip() for name in header]
            self.mark_connected()
            batch: list[base.Incoming] = []
            first_ts: int | None = None
            started = time.monotonic()
            for row in reader:
                now = time.time_ns()
                line = _line(row)
                origin = _origin(self.path.name, reader.line_num, line)
                if len(row) != len(columns):
                    batch.append(base.Incoming(None, line, "wrong number of columns", now, origin))
                    continue
                fields: dict[str, Any] = {
                    k: v for k, v in zip(columns, row, strict=True) if v != ""
                }
                ts = fields.get("ts")
                if isinstance(ts, str) and ts.isdigit():
                    fields["ts"] = int(ts)
                if isinstance(fields.get("seq"), str) and fields["seq"].isdigit():
                    fields["seq"] = int(fields["seq"])
                if self.speed > 0:
                    first_ts, wait = self._pace(fields.get("ts"), first_ts, started)
                    if wait > 0:
                        # What is due goes out now; this row waits for its own time.
                        await self._emit(sink, batch)
                        batch = []
                        await asyncio.sleep(wait)
                        now = time.time_ns()
                batch.append(base.Incoming(fields, line, "", now, origin))
                if len(batch) >= self.chunk:
                    await self._emit(sink, batch)
                    batch = []
            if batch:
                await self._emit(sink, batch)

    async def _emit(self, sink: base.Sink, batch: list[base.Incoming]) -> None:
        self.delivered += len(batch)
        await sink(batch)

    def _pace(self, raw_ts: Any, first_ts: int | None, started: float) -> tuple[int | None, float]:
        try:
            ts = normalizing.parse_timestamp(raw_ts)
        except normalizing.Malformed:
            return first_ts, 0.0
        if first_ts is None:
            return ts, 0.0
        due = (ts - first_ts) / 1e9 / self.speed
        return first_ts, due - (time.monotonic() - started)


def _origin(name: str, line_number: int, line: str) -> str:
    """File, line and a hash of the line: a rejection found again on a replay of the same
    file is stored once, and an edited line counts as a new message."""
    digest = hashlib.blake2b(line.encode(), digest_size=6).hexdigest()
    return f"{name}:{line_number}:{digest}"


def _line(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()
