"""The ingest pipeline: validate -> normalize -> enrich -> store -> cache -> publish.

:meth:`Pipeline.process` is the synchronous hot path (no I/O): it normalizes and validates
each message, folds trades into bars and bars into indicators, updates the per-symbol
snapshot, and appends rows, rejections and Redis commands to buffers. :meth:`Pipeline.run`
drives it: one Redis pipeline per drained queue (publishes in order; the latest snapshot
per symbol set once), and a writer task that COPYs buffered rows to PostgreSQL on size or
time while processing goes on. Nothing is dropped: every message is stored, rejected to the
dead-letter table with its reason, or (references, heartbeats) consumed as control data. A row
that passed validation but that PostgreSQL refuses is found by bisecting its batch and
dead-lettered as ``storage_refused`` (:mod:`.refusals`); only failures a retry can cure are
retried, so one bad row never stops storage for the feed. A failure of every row alike (the
table refuses, not the rows: a DBA's CHECK, a day partition retention dropped) is retried too.

Stored bars agree with stored ticks: :meth:`Pipeline.reseed` rebuilds, at start-up, the bars
a killed predecessor had not stored from the ticks it had; a trade that arrives after its bar
closed is stored and its bar rebuilt from storage (``_rebuild``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis

from starkmatter.core import events, logs, loops
from starkmatter.ingest import metrics, publishing, refusals
from starkmatter.ingest.providers import base
from starkmatter.market import bars as bars_mod
from starkmatter.market import indicators, models, normalizing, seeding, storing, validation

log = logs.get_logger(__name__)
_to_text = models.to_text
_Row = TypeVar("_Row", models.Trade, models.Quote)
_BarKey = tuple[str, str, int]
"""(symbol, interval, start) of a bar."""
_KIND_NAMES: dict[type, str] = {
    models.Trade: "trade", models.Quote: "quote", models.Depth: "depth", models.Bar: "bar"
}  # fmt: skip


def heartbeat_key(feed: str) -> str:
    """The feed's heartbeat hash in Redis (docs/contracts.md), read by the operator and alerts."""
    return f"feed:heartbeat:{feed}"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    flush_rows: int = 5_000
    """Rows (ticks + quotes) buffered before a COPY."""
    flush_interval_s: float = 0.25
    """Longest a row waits in the buffer."""
    writers: int = 2
    """Concurrent COPY connections: encoding of one batch overlaps the server's work on another."""
    max_pending_batches: int = 8
    """Store queue bound; when full, processing waits (backpressure up to the provider)."""
    incoming_batches: int = 1_000
    """Provider -> pipeline queue bound (batches, typically one per WebSocket frame)."""
    bar_grace_s: float = 1.0
    """A bar closes this long after its interval ends even if no later trade arrives."""
    heartbeat_interval_s: float = 1.0
    update_event_interval_s: float = 1.0
    """At most one ``MarketDataUpdate`` event (the seed trigger that runs price alerts) per
    interval, naming the symbols stored since the last one; 0 turns the event off."""
    reseed_horizon_s: float = 900.0
    """At start-up, stored ticks are re-read into bars from each symbol's latest stored bar
    on, but never from further back than this before its newest tick (bounds the start-up
    cost when no bar was ever stored for a symbol)."""
    indicator_history: int = 500
    """Stored closes per symbol and interval the indicators are warmed with at start-up:
    the EMA-based ones forget their start as (1 - alpha)**n, far below 1e-8 at 500."""


class _Snapshot:
    __slots__ = ("ask", "ask_size", "bid", "bid_size", "last", "last_size", "ts_ns")

    def __init__(self) -> None:
        self.bid: int | None = None
        self.ask: int | None = None
        self.bid_size: int | None = None
        self.ask_size: int | None = None
        self.last: int | None = None
        self.last_size: int | None = None
        self.ts_ns = 0


def _opt(value: int | None) -> str:
    return "null" if value is None else f'"{_to_text(value)}"'


def quote_json(symbol: str, s: _Snapshot) -> bytes:
    """The ``quote:{SYMBOL}`` document of docs/contracts.md."""
    return (
        f'{{"symbol":"{symbol}","bid":{_opt(s.bid)},"ask":{_opt(s.ask)},'
        f'"bid_size":{_opt(s.bid_size)},"ask_size":{_opt(s.ask_size)},'
        f'"last":{_opt(s.last)},"last_size":{_opt(s.last_size)},"ts":"{models.iso(s.ts_ns)}"}}'
    ).encode()


def depth_json(depth: models.Depth) -> bytes:
    bids = ",".join(f'["{_to_text(p)}","{_to_text(q)}"]' for p, q in depth.bids)
    asks = ",".join(f'["{_to_text(p)}","{_to_text(q)}"]' for p, q in depth.asks)
    return (
        f'{{"symbol":"{depth.symbol}","bids":[{bids}],"asks":[{asks}],'
        f'"ts":"{models.iso(depth.ts_ns)}"}}'
    ).encode()


class _Seen:
    """Identities of one symbol's stored trades read back at start-up: the provider may send
    some again, and a bar must not count a trade twice."""

    __slots__ = ("ids", "until_ns")

    def __init__(self, ids: set[tuple[int, int]], until_ns: int) -> None:
        self.ids = ids
        self.until_ns = until_ns
        """End of the last re-read minute: a trade from then on closed every re-read bar,
        so an older one sent again is late for the bars anyway (and storage dedupes it)."""


@dataclasses.dataclass
class _Batch:
    trades: list[models.Trade] = dataclasses.field(default_factory=list)
    quotes: list[models.Quote] = dataclasses.field(default_factory=list)
    bars: list[models.Bar] = dataclasses.field(default_factory=list)
    rejections: list[storing.Rejection] = dataclasses.field(default_factory=list)
    late: set[_BarKey] = dataclasses.field(default_factory=set)
    """(symbol, interval, start) of closed bars that a trade in this batch arrived too late
    for, or that hold a trade storage refused: rebuilt from storage once this batch's trades
    are stored."""
    carried: dict[_BarKey, dict[str, str]] = dataclasses.field(default_factory=dict)
    """Indicators of the bars of ``late`` never stored yet (computed at their close)."""
    number: int = 0
    """Position in flush order: bars are stored in this order (see ``Pipeline._write``)."""

    def __len__(self) -> int:
        return len(self.trades) + len(self.quotes)

    def empty(self) -> bool:
        return not (self.trades or self.quotes or self.bars or self.rejections)


def _transient_or_partition_missing(exc: BaseException) -> bool:
    return refusals.transient(exc) or refusals.partition_missing(exc)


class Pipeline:
    def __init__(
        self,
        feed: str,
        validator: validation.Validator,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        config: PipelineConfig | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.feed = feed
        self.validator = validator
        self.pool = pool
        self.redis = redis
        self.config = config or PipelineConfig()
        self.clock = clock
        self.publisher = publishing.RedisWriter(redis)
        self.incoming: asyncio.Queue[list[base.Incoming]] = asyncio.Queue(
            self.config.incoming_batches
        )
        self._store: asyncio.Queue[_Batch] = asyncio.Queue(self.config.max_pending_batches)
        self._batch = _Batch()
        self._batch_started = time.monotonic()
        self._builders = [bars_mod.BarBuilder(i) for i in models.INTERVALS_NS]
        self._indicators: dict[tuple[str, str], indicators.IndicatorSet] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._publish: list[tuple[bytes, bytes, int]] = []
        self._dirty_quotes: set[str] = set()
        self._dirty_depth: dict[str, bytes] = {}
        self._dirty_indicators: dict[str, bytes] = {}
        self._announced: set[str] = set()
        self._depth_symbols: set[str] = set()
        self._partitions = storing.PartitionKeeper()
        self._rejected_children: dict[str, Any] = {}
        self._latency = metrics.LATENCY.labels(feed=feed)
        self._accepted = {
            kind: metrics.TICKS.labels(feed=feed, kind=kind)
            for kind in ("trade", "quote", "depth", "bar")
        }
        self.accepted = 0
        self.rejected = 0
        self.last_tick_ns = 0
        # When a finite source (a file) was fully stored; reported in every heartbeat since.
        self.replay_finished_ns: int | None = None
        self._updated: set[str] = set()
        self._announced_window = 0
        self._seen: dict[str, _Seen] = {}
        self.resent = 0
        """Trades the provider sent again that were stored before a restart: skipped."""
        self._flushed = 0
        self._bars_stored = 0
        self._bar_turn = asyncio.Condition()
        self._tainted: set[_BarKey] = set()
        """Bars, closed or still open, that hold a trade storage refused: when stored, they
        are rebuilt from the stored trades instead (see ``_untaint``)."""

    # ---------------------------------------------------------------- the hot path (sync)

    def process(self, batch: list[base.Incoming]) -> None:
        now = self.clock()
        normalize = normalizing.normalize
        check = self.validator.check
        Trade, Quote, Depth = models.Trade, models.Quote, models.Depth
        trades, quotes = self._batch.trades, self._batch.quotes
        publish = self._publish.append
        snapshots = self._snapshots
        seen = self._seen
        accepted = 0
        kinds = {Trade: 0, Quote: 0, Depth: 0, models.Bar: 0}
        for incoming in batch:
            fields = incoming.fields
            if fields is None:
                self._reject(incoming, validation.Reason.MALFORMED, None, incoming.error, now)
                continue
            if fields.get("type") == "reference":
                self._reference(incoming, now)
                continue
            try:
                event = normalize(fields)
            except (ValueError, ArithmeticError, TypeError) as exc:
                # Malformed is a ValueError; the others would be a reader's fault no rule
                # foresaw, and one message must never stop the feed: it is dead-lettered.
                symbol = fields.get("symbol")
                self._reject(
                    incoming,
                    validation.Reason.MALFORMED,
                    symbol if type(symbol) is str else None,
                    exc.detail
                    if isinstance(exc, normalizing.Malformed)
                    else f"unreadable ({type(exc).__name__})",
                    now,
                )
                continue
            reason = check(event, now)
            if reason is not None:
                self._reject(incoming, reason, event.symbol, "", now)
                continue
            kind = type(event)
            if seen and kind is Trade and self._stored_before(event):  # type: ignore[arg-type]
                continue
            accepted += 1
            kinds[kind] += 1
            symbol = event.symbol
            if kind is Trade:
                trades.append(event)  # type: ignore[arg-type]
                snap = snapshots.get(symbol)
                if snap is None:
                    snap = snapshots[symbol] = _Snapshot()
                snap.last = event.price  # type: ignore[union-attr]
                snap.last_size = event.size  # type: ignore[union-attr]
                snap.ts_ns = event.ts_ns  # type: ignore[union-attr]
                for builder in self._builders:
                    closed = builder.add(symbol, snap.ts_ns, snap.last, snap.last_size)
                    if closed is not None:
                        self._bar_closed(closed)
                publish((b"market:quotes:" + symbol.encode(), quote_json(symbol, snap), snap.ts_ns))
                self._dirty_quotes.add(symbol)
            elif kind is Quote:
                quotes.append(event)  # type: ignore[arg-type]
                snap = snapshots.get(symbol)
                if snap is None:
                    snap = snapshots[symbol] = _Snapshot()
                q: models.Quote = event  # type: ignore[assignment]
                snap.bid, snap.ask, snap.bid_size, snap.ask_size = (
                    q.bid,
                    q.ask,
                    q.bid_size,
                    q.ask_size,
                )
                snap.ts_ns = q.ts_ns
                publish((b"market:quotes:" + symbol.encode(), quote_json(symbol, snap), snap.ts_ns))
                self._dirty_quotes.add(symbol)
            elif kind is Depth:
                d: models.Depth = event  # type: ignore[assignment]
                self._depth_symbols.add(symbol)
                document = depth_json(d)
                publish((b"market:depth:" + symbol.encode(), document, d.ts_ns))
                self._dirty_depth[symbol] = document
            else:
                self._bar_closed(event)  # type: ignore[arg-type]
            self.last_tick_ns = now
        for builder in self._builders:
            if builder.late:
                self._batch.late.update((s, builder.interval, start) for s, start in builder.late)
                builder.late.clear()
        self.accepted += accepted
        for kind, count in kinds.items():
            if count:
                self._accepted[_KIND_NAMES[kind]].inc(count)

    def _stored_before(self, trade: models.Trade) -> bool:
        """Whether ``trade`` was read back from storage at start-up (sent again)."""
        entry = self._seen.get(trade.symbol)
        if entry is None:
            return False
        if trade.ts_ns >= entry.until_ns:
            del self._seen[trade.symbol]
            return False
        if (trade.ts_ns // 1000, storing.trade_uid(trade)) in entry.ids:
            self.resent += 1
            metrics.RESENT.labels(feed=self.feed).inc()
            return True
        return False

    def _reference(self, incoming: base.Incoming, now: int) -> None:
        fields = incoming.fields or {}
        try:
            symbol = normalizing.normalize_symbol(fields.get("symbol"))
            self.validator.set_reference(symbol, models.to_fixed(fields.get("price")))
        except (normalizing.Malformed, ValueError) as exc:
            self._reject(incoming, validation.Reason.MALFORMED, None, f"bad reference: {exc}", now)

    def _reject(
        self,
        incoming: base.Incoming,
        reason: validation.Reason,
        symbol: str | None,
        detail: str,
        now: int,
    ) -> None:
        self.rejected += 1
        self._batch.rejections.append(
            storing.Rejection(
                self.feed, reason.value, incoming.raw_text(), symbol, detail, now, incoming.origin
            )
        )
        child = self._rejected_children.get(reason)
        if child is None:
            child = self._rejected_children[reason] = metrics.REJECTED.labels(
                feed=self.feed, reason=reason.value
            )
        child.inc()

    def _bar_closed(self, bar: models.Bar) -> None:
        key = (bar.symbol, bar.interval)
        indicator_set = self._indicators.get(key)
        if indicator_set is None:
            indicator_set = self._indicators[key] = indicators.IndicatorSet()
        bar.indicators = indicator_set.update(bar.close)
        self._batch.bars.append(bar)
        self._dirty_indicators[f"{bar.symbol}:{bar.interval}"] = json.dumps(
            {"ts": models.iso(bar.start_ns), "close": _to_text(bar.close), **bar.indicators}
        ).encode()

    async def reseed(self, symbols: Sequence[str]) -> None:
        """Rebuild the bars a killed predecessor had not stored from the ticks it had, and
        warm the indicators with the stored closes; call before the provider starts.

        With no symbol list, every symbol with stored ticks. See :mod:`..market.seeding`.
        """
        intervals = {b.interval: b.step for b in self._builders}
        async with self.pool.acquire() as conn:
            if not symbols:
                symbols = await seeding.symbols_with_ticks(conn)
            seeds = await seeding.read_seeds(
                conn,
                symbols,
                intervals,
                horizon_ns=int(self.config.reseed_horizon_s * 1e9),
                history=self.config.indicator_history,
            )
        widest = max(intervals.values())
        read_back = 0
        for seed in seeds:
            symbol = seed.symbol
            for interval, closes in seed.closes.items():
                if closes:
                    indicator_set = self._indicators[(symbol, interval)] = indicators.IndicatorSet()
                    for close in closes:
                        indicator_set.update(close)
            if not seed.trades:
                continue
            for trade in seed.trades:
                for builder in self._builders:
                    if trade.ts_ns >= seed.starts[builder.interval]:
                        closed = builder.seed(symbol, trade.ts_ns, trade.price, trade.size)
                        if closed is not None:
                            self._bar_closed(closed)
            last = seed.trades[-1].ts_ns
            self._seen[symbol] = _Seen(
                {(t.ts_ns // 1000, t.uid) for t in seed.trades}, last - last % widest + widest
            )
            read_back += len(seed.trades)
        metrics.READ_BACK.labels(feed=self.feed).inc(read_back)
        log.info("ingest.reseeded", feed=self.feed, symbols=len(seeds), trades=read_back)

    def close_due_bars(self, now_ns: int) -> None:
        grace = int(self.config.bar_grace_s * 1e9)
        for builder in self._builders:
            for bar in builder.close_due(now_ns, grace):
                self._bar_closed(bar)

    # ------------------------------------------------------------------ the I/O edges

    async def submit(self, batch: list[base.Incoming]) -> None:
        """The providers' sink: waits when the pipeline is behind (backpressure)."""
        await self.incoming.put(batch)

    async def run(self) -> None:
        writers = [
            asyncio.create_task(self._writer(), name=f"ingest-writer-{i}")
            for i in range(self.config.writers)
        ]
        heartbeat = asyncio.create_task(self._heartbeat(), name="ingest-heartbeat")
        consume = asyncio.create_task(self._consume(), name="ingest-consume")
        tasks = (consume, heartbeat, *writers)
        try:
            # None of these ends on its own: the first to end has failed, and takes the
            # pipeline down with it rather than leaving the others waiting forever.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise RuntimeError("an ingest pipeline task ended unexpectedly")
        finally:
            try:
                await loops.stopped(*tasks)
            finally:
                await self.publisher.close()

    async def _consume(self) -> None:
        queue = self.incoming
        interval = self.config.flush_interval_s
        while True:
            try:
                # Not asyncio.wait_for: on Python 3.11 it returns a batch that arrives as the
                # task is cancelled and drops the cancel, and this loop never ends by itself.
                async with asyncio.timeout(interval):
                    first = await queue.get()
            except TimeoutError:
                await self._flush_if_due()
                continue
            self.process(first)
            drained = 1
            while drained < 200 and not queue.empty():
                self.process(queue.get_nowait())
                drained += 1
            metrics.QUEUE_DEPTH.labels(feed=self.feed, stage="incoming").set(queue.qsize())
            await self.send_redis()
            for _ in range(drained):
                queue.task_done()
            await self._flush_if_due()

    async def _flush_if_due(self) -> None:
        if len(self._batch) >= self.config.flush_rows or (
            time.monotonic() - self._batch_started >= self.config.flush_interval_s
        ):
            await self.flush()

    async def flush(self) -> None:
        """Hand the buffered rows to a writer (waits if the store queue is full)."""
        self._batch_started = time.monotonic()
        if self._batch.empty():
            return
        batch, self._batch = self._batch, _Batch()
        self._flushed += 1
        batch.number = self._flushed
        await self._store.put(batch)
        metrics.QUEUE_DEPTH.labels(feed=self.feed, stage="store").set(self._store.qsize())

    async def send_redis(self) -> None:
        """Publish every update in order, then set the latest snapshots, in one round trip."""
        if not (self._publish or self._dirty_quotes or self._dirty_depth or self._dirty_indicators):
            return
        published, self._publish = self._publish, []
        encode_publish = publishing.encode_publish
        commands = [encode_publish(channel, payload) for channel, payload, _ts in published]
        snapshots: dict[bytes, bytes] = {}
        for symbol in self._dirty_quotes:
            snapshots[b"quote:" + symbol.encode()] = quote_json(symbol, self._snapshots[symbol])
        for symbol, document in self._dirty_depth.items():
            snapshots[b"depth:" + symbol.encode()] = document
        for key, document in self._dirty_indicators.items():
            snapshots[b"indicators:" + key.encode()] = document
        self._dirty_quotes.clear()
        self._dirty_depth.clear()
        self._dirty_indicators.clear()
        if snapshots:
            commands.append(
                publishing.encode(b"MSET", *(part for item in snapshots.items() for part in item))
            )
        new_symbols = (self._snapshots.keys() | self._depth_symbols) - self._announced
        if new_symbols:
            commands.append(
                publishing.encode(
                    b"SADD", b"market:symbols", *(s.encode() for s in sorted(new_symbols))
                )
            )
            self._announced.update(new_symbols)
        try:
            await self.publisher.write(commands)
        except (OSError, ConnectionError) as exc:
            # Pub/sub is lossy by design; the snapshots are rewritten by the next update.
            log.warning("ingest.publish_failed", feed=self.feed, error=str(exc), lost=len(commands))
            self._announced.difference_update(new_symbols)
            return
        now = time.time_ns()
        observe = self._latency.observe
        for _channel, _payload, ts in published:
            observe((now - ts) / 1e9)

    async def _writer(self) -> None:
        while True:
            batch = await self._store.get()
            try:
                delay = 0.1
                while True:
                    try:
                        await self._write(batch)
                        break
                    except (
                        asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                        refusals.TableRefused,
                    ) as exc:  # fmt: skip
                        # A failure of the connection, the server or the table (rows the
                        # server refuses were dead-lettered in ``_write``). Retried in place
                        # (never re-queued: a full queue would deadlock the writers);
                        # rewriting is idempotent, so nothing is lost or doubled.
                        metrics.STORE_RETRIES.labels(feed=self.feed).inc()
                        event = (
                            "ingest.table_refuses_every_row"
                            if isinstance(exc, refusals.TableRefused)
                            else "ingest.store_failed"
                        )
                        log.error(event, feed=self.feed, error=repr(exc), rows=len(batch),
                                  retry_s=delay)  # fmt: skip
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
            finally:
                self._store.task_done()

    async def _write(self, batch: _Batch) -> None:
        # Each step leaves the batch as a retry after a later step's failure must see it:
        # refused rows out of it (into its rejections), dead letters out once stored.
        async with self.pool.acquire() as conn:
            if batch.trades:
                batch.trades = await self._copy(conn, "market_ticks", batch.trades, batch)
            if batch.quotes:
                batch.quotes = await self._copy(conn, "market_quotes", batch.quotes, batch)
            # Bars are stored in the order they closed, after every earlier batch's rows,
            # though writers finish out of order: then when a bar is stored, so are the
            # symbol's earlier bars and all of the bar's trades, which is what a successor's
            # re-read after a kill relies on (see ``reseed``). Only this short step waits;
            # the COPYs still overlap.
            async with self._bar_turn:
                await self._bar_turn.wait_for(lambda: self._bars_stored >= batch.number - 1)
            if self._tainted:
                self._untaint(batch)
            if batch.bars:
                batch.bars = await self._upsert_bars(conn, batch.bars, batch)
            if batch.late:
                await self._rebuild(conn, batch)
            async with self._bar_turn:
                self._bars_stored = max(self._bars_stored, batch.number)
                self._bar_turn.notify_all()
            if batch.rejections:
                await self._dead_letter(conn, batch.rejections)
                batch.rejections = []
            await self._announce(conn, batch)
        batch.trades = []
        batch.quotes = []
        batch.bars = []
        batch.late = set()
        batch.carried = {}

    def _untaint(self, batch: _Batch) -> None:
        """Take the bars that hold a trade storage refused out of ``batch.bars``: they are
        rebuilt from the stored trades instead (``_rebuild``), so stored bars still agree
        with stored ticks. Their indicators, computed at their close, are kept."""
        kept = []
        for bar in batch.bars:
            key = (bar.symbol, bar.interval, bar.start_ns)
            if key in self._tainted:
                self._tainted.discard(key)
                batch.late.add(key)
                batch.carried[key] = bar.indicators
            else:
                kept.append(bar)
        batch.bars = kept

    async def _rebuild(self, conn: asyncpg.Connection[Any], batch: _Batch) -> None:
        """Rebuild from storage the closed bars that late trades belong to, and those holding
        a refused trade. Run in this batch's turn: every earlier batch's trades and bars are
        stored, and so are this batch's trades, so each bar is rebuilt from all of its trades
        (each once, as stored: a late trade that is a duplicate does not count twice). A bar
        none of whose trades is stored is not stored."""
        rebuilt = []
        for symbol, interval, start in sorted(batch.late):
            bar = await seeding.rebuild_bar(conn, symbol, interval, start)
            if bar is not None:
                if not bar.indicators:
                    bar.indicators = batch.carried.get((symbol, interval, start), {})
                rebuilt.append(bar)
        if rebuilt:
            await self._upsert_bars(conn, rebuilt, batch)
        late = sum((b.symbol, b.interval, b.start_ns) not in batch.carried for b in rebuilt)
        metrics.LATE_BARS_REBUILT.labels(feed=self.feed).inc(late)
        log.info("ingest.late_trades_rebuilt", feed=self.feed, bars=late,
                 without_refused_trades=len(rebuilt) - late)  # fmt: skip

    async def _announce(self, conn: asyncpg.Connection[Any], batch: _Batch) -> None:
        """Queue ``MarketDataUpdate`` for the symbols stored since the last one, at most once
        per interval. Its own statement after the rows, not their transaction: an event lost
        to a crash right here is superseded by the next interval's, which names them too."""
        interval = self.config.update_event_interval_s
        if interval <= 0:
            return
        self._updated.update(t.symbol for t in batch.trades)
        self._updated.update(q.symbol for q in batch.quotes)
        window = int(time.time() / interval)
        if not self._updated or window == self._announced_window:
            return
        symbols, self._updated = sorted(self._updated), set()
        payload = {"feed": self.feed, "symbols": symbols, "window_s": interval}
        await events.append(conn, "MarketDataUpdate", payload, f"{self.feed}:{window}")
        self._announced_window = window

    async def _copy(
        self,
        conn: asyncpg.Connection[Any],
        table: str,
        rows: list[_Row],
        batch: _Batch,
    ) -> list[_Row]:
        """COPY ``rows`` into ``table``; returns those stored (the refused are dead-lettered
        in ``batch``)."""
        checked = await self._partitions.ensure(conn, table, storing.days_of(rows))
        write = functools.partial(self._copy_part, conn, table)
        # A row that finds no partition is retried, its day created again, unless every
        # partition of the batch was just checked: then it is not retention's doing, and is
        # judged as any other refusal (so a retry is not repeated for ever).
        retried = refusals.transient if checked else _transient_or_partition_missing
        try:
            refused = await refusals.store_all(rows, write, retried)
        except asyncpg.CheckViolationError as exc:
            if refusals.partition_missing(exc):
                self._partitions.forget(table)
                log.warning("ingest.partition_missing", feed=self.feed, table=table,
                            error=str(exc))  # fmt: skip
            raise
        if not refused:
            return rows
        self._refused(batch, table, refused)
        for r in refused:
            if isinstance(r.row, models.Trade):
                self._taint(r.row, batch)
        gone = {id(r.row) for r in refused}
        return [row for row in rows if id(row) not in gone]

    async def _copy_part(
        self, conn: asyncpg.Connection[Any], table: str, rows: Sequence[_Row]
    ) -> None:
        if table == "market_ticks":
            data = storing.encode_trades(rows)  # type: ignore[arg-type]
            columns: tuple[str, ...] = storing.TICK_COLUMNS
        else:
            data = storing.encode_quotes(rows)  # type: ignore[arg-type]
            columns = storing.QUOTE_COLUMNS
        result = await storing.copy_rows(conn, table, columns, data, len(rows))
        metrics.ROWS_STORED.labels(feed=self.feed, table=table).inc(len(rows))
        if result.fallback:
            metrics.DEDUPLICATED_BATCHES.labels(feed=self.feed, table=table).inc()

    def _taint(self, trade: models.Trade, batch: _Batch) -> None:
        """Mark the bars of a refused trade, which the bar builders counted it in."""
        for builder in self._builders:
            key = (trade.symbol, builder.interval, trade.ts_ns - trade.ts_ns % builder.step)
            if key not in batch.late:  # a late trade's bar is rebuilt with this batch anyway
                self._tainted.add(key)

    async def _upsert_bars(
        self, conn: asyncpg.Connection[Any], bars: list[models.Bar], batch: _Batch
    ) -> list[models.Bar]:
        refused = await refusals.store_all(bars, functools.partial(storing.upsert_bars, conn))
        if not refused:
            return bars
        self._refused(batch, "market_bars", refused)
        gone = {id(r.row) for r in refused}
        return [bar for bar in bars if id(bar) not in gone]

    def _refused(
        self,
        batch: _Batch,
        table: str,
        refused: Sequence[refusals.Refused[models.Trade | models.Quote | models.Bar]],
    ) -> None:
        """Dead-letter rows PostgreSQL refused, with this batch's rejections."""
        reason = validation.Reason.STORAGE_REFUSED
        now = self.clock()
        for r in refused:
            raw = refusals.payload(r.row)
            origin = f"storage:{table}:{hashlib.sha256(raw.encode()).hexdigest()[:24]}"
            batch.rejections.append(storing.Rejection(
                self.feed, reason.value, raw, r.row.symbol, r.detail(table), now, origin
            ))  # fmt: skip
        self.rejected += len(refused)
        metrics.REJECTED.labels(feed=self.feed, reason=reason.value).inc(len(refused))
        log.error("ingest.storage_refused", feed=self.feed, table=table, rows=len(refused),
                  detail=refused[0].detail(table))  # fmt: skip

    async def _dead_letter(
        self, conn: asyncpg.Connection[Any], rejections: list[storing.Rejection]
    ) -> None:
        insert = functools.partial(storing.insert_rejections, conn)
        for r in await refusals.store_all(rejections, insert):
            # Text is made storable first (storing.insert_rejections): nothing known is left
            # that the table refuses. Should something be, it is logged whole, not retried
            # for ever with the rows of its batch.
            log.error("ingest.dead_letter_refused", feed=self.feed, reason=r.row.reason,
                      raw=r.row.raw, detail=r.detail("market_rejections"))  # fmt: skip

    async def drain(self, *, close_bars: bool = False) -> None:
        """Wait until everything submitted so far is processed, published and stored.

        ``close_bars`` closes the open bars too: the source has ended (a file replay).
        """
        await self.incoming.join()
        if close_bars:
            self.close_due_bars(2**62)
        await self.send_redis()
        await self.publisher.settle()
        await self.flush()
        await self._store.join()

    async def _heartbeat(self) -> None:
        key = heartbeat_key(self.feed).encode()
        last_accepted, last_rejected = self.accepted, self.rejected
        last_time = time.monotonic()
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            self.close_due_bars(time.time_ns())
            now = time.monotonic()
            elapsed = max(now - last_time, 1e-6)
            mapping = {
                "ticks_per_s": f"{(self.accepted - last_accepted) / elapsed:.1f}",
                "rejected_per_s": f"{(self.rejected - last_rejected) / elapsed:.1f}",
                "updated_ts": models.iso(time.time_ns()),
                "accepted_total": str(self.accepted),
                "rejected_total": str(self.rejected),
            }
            if self.last_tick_ns:
                mapping["last_tick_ts"] = models.iso(self.last_tick_ns)
            if self.replay_finished_ns is not None:
                mapping["replay_finished_ts"] = models.iso(self.replay_finished_ns)
            last_accepted, last_rejected, last_time = self.accepted, self.rejected, now
            fields = [part.encode() for item in mapping.items() for part in item]
            # Through the pipeline's own writer, as its other updates are: a client made
            # elsewhere (redis-py's own send) could drop a cancel landing as it wrote, and this
            # loop never ends by itself.
            try:
                await self.publisher.write([publishing.encode(b"HSET", key, *fields)])
                await self.send_redis()
            except OSError as exc:  # ConnectionError included
                log.warning("ingest.heartbeat_failed", feed=self.feed, error=str(exc))
