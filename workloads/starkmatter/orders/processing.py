"""The order worker: drains the outbox and works orders at the broker.

Each outbox batch is one transaction: lock the orders (ids ascending), then their accounts
and positions; hand new orders to the broker; cancel what was asked to be cancelled or has
expired; apply fills to orders, cash, positions and snapshots; queue notifications; delete
the handled outbox rows. A crash anywhere before the commit leaves every row in place and
the next run does the same work once; after the commit nothing is left to redo. Broker
submission is idempotent (our order id is the broker's client order id), so the one
effect outside the database is safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from starkmatter.core import audit, logs
from starkmatter.core import events as triggers
from starkmatter.orders import events, fills, lifecycle, observing, risk, storage
from starkmatter.orders.brokers import base
from starkmatter.orders.config import OrdersConfig
from starkmatter.orders.model import OrderId, OrderStatus
from starkmatter.portfolio import ledger as ledgers
from starkmatter.portfolio import valuation

S = OrderStatus
ZERO = Decimal(0)
ACTOR = audit.Actor(id="service:orders", service="orders", endpoint="worker")
_log = logs.get_logger("starkmatter.orders.worker")


def failpoint(config: OrdersConfig, name: str) -> None:
    """Die at once, as a killed process would, when tests ask for it at this step."""
    if config.failpoint == name:
        _log.warning("orders.failpoint", step=name)
        os._exit(70)


@dataclasses.dataclass
class Working:
    """An order being changed in this transaction."""

    record: storage.OrderRecord
    status: S
    filled: Decimal
    avg_price: Decimal | None
    reserved_cash: Decimal
    reserved_quantity: Decimal
    triggered: bool
    broker_order_id: str | None
    reject: tuple[str, str] | None = None
    steps: list[tuple[S, list[S], list[str], dict[str, Any] | None]] = dataclasses.field(
        default_factory=list
    )

    @classmethod
    def of(cls, r: storage.OrderRecord) -> Working:
        return cls(
            r,
            r.status,
            r.filled_quantity,
            r.avg_fill_price,
            r.reserved_cash,
            r.reserved_quantity,
            r.triggered,
            r.broker_order_id,
        )

    def move(
        self, targets: list[S], reasons: list[str], details: dict[str, Any] | None = None
    ) -> None:
        cur = self.status
        for t in targets:
            lifecycle.check_transition(cur, t)
            cur = t
        self.steps.append((self.status, targets, reasons, details))
        self.status = cur

    @property
    def changed(self) -> bool:
        r = self.record
        return bool(self.steps) or self.triggered != r.triggered

    def current(self) -> storage.OrderRecord:
        return dataclasses.replace(
            self.record,
            status=self.status,
            filled_quantity=self.filled,
            avg_fill_price=self.avg_price,
            reserved_cash=self.reserved_cash,
            reserved_quantity=self.reserved_quantity,
            triggered=self.triggered,
            broker_order_id=self.broker_order_id,
            reject_code=self.reject[0] if self.reject else self.record.reject_code,
            reject_message=self.reject[1] if self.reject else self.record.reject_message,
        )


@dataclasses.dataclass
class LedgerOps:
    """Cash and position changes decided while orders are worked, applied afterwards.

    Deciding fills needs no account data, so accounts and positions are locked only for
    the short write at the end of the transaction, not while the broker is consulted; an
    order submission for the same user waits that much less.
    """

    ops: list[tuple[str, tuple[Any, ...]]] = dataclasses.field(default_factory=list)

    def execute(self, *args: Any) -> None:
        self.ops.append(("execute", args))

    def release(self, *args: Any) -> None:
        self.ops.append(("release", args))

    def users(self) -> set[uuid.UUID]:
        return {args[0] for _, args in self.ops}

    def symbols(self) -> set[str]:
        return {args[1] for _, args in self.ops}

    def apply_to(self, book: ledgers.Ledger) -> None:
        for name, args in self.ops:
            getattr(book, name)(*args)


def order_placed(order: storage.OrderRecord) -> triggers.Event:
    """The seed's OrderPlaced trigger for an order that passed risk and holds its
    reservation; keyed by order id, so a batch redone after a crash adds it once."""
    return triggers.Event(
        "OrderPlaced",
        str(order.id),
        {
            "order_id": str(order.id),
            "user_id": str(order.user_id),
            **order.request_view(),
            "ts_event": order.created_at.isoformat(),
        },
    )


def pause_after(handled: int, config: OrdersConfig, empty_in_a_row: int = 0) -> float:
    """Seconds the worker waits before its next batch, after one of ``handled`` events.

    Nothing found: the idle poll, ``outbox_poll_ms``, doubled for each further empty poll in
    a row up to ``outbox_gather_ms`` (an idle worker costs little, and an event still waits
    no longer than it would to be gathered). A batch that was not full: the gather window,
    so the next batch takes what arrived meanwhile (the per-batch round trips and commit,
    shared by more orders). A full batch: none, there is more waiting."""
    if not handled:
        first = config.outbox_poll_ms
        longest = max(first, config.outbox_gather_ms)
        doublings = min(max(empty_in_a_row - 1, 0), 16)
        return float(min(first << doublings, longest)) / 1000
    if handled < config.batch_size:
        return config.outbox_gather_ms / 1000
    return 0.0


_REFUSALS = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)
"""what the database says when a change breaks a constraint (a CHECK) or a column's type"""

MATCH_PAGE = 5_000
"""working orders one re-matching pass reads; the passes page through all of them in turn"""
_FIRST = (dt.datetime.min.replace(tzinfo=dt.UTC), uuid.UUID(int=0))
_WORKING = "status IN ('Pending', 'PartiallyFilled')"
_MATCH_READ = f"""
    (SELECT true AS paged, o.* FROM trading_orders o
     WHERE {_WORKING} AND (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3)
    UNION ALL
    (SELECT false, o.* FROM trading_orders o
     WHERE {_WORKING} AND (cancel_requested OR expires_at <= $4)
     ORDER BY created_at, id LIMIT $3)"""


@dataclasses.dataclass
class Worker:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    config: OrdersConfig
    broker: base.Broker
    match_after: tuple[dt.datetime, uuid.UUID] = dataclasses.field(default=_FIRST, init=False)
    """(created_at, id) of the last working order the previous re-matching pass read"""

    # -- one transaction's worth of order work ------------------------------------------

    def _release(self, book: LedgerOps, w: Working, quantity: Decimal, ends: bool) -> None:
        r = w.record
        assert r.price_cap is not None
        freed = risk.released(r.request.side, r.price_cap, quantity)
        if ends:  # the last release frees exactly what is left, whatever rounding did
            freed = risk.Reservation(w.reserved_cash, w.reserved_quantity)
        w.reserved_cash -= freed.cash
        w.reserved_quantity -= freed.quantity
        book.release(r.user_id, r.request.symbol, freed.cash, freed.quantity, ends)

    def _cancel(self, book: LedgerOps, w: Working, reason: str) -> None:
        self._release(book, w, w.record.request.quantity - w.filled, ends=True)
        w.move([S.CANCELLED], [reason])

    def _apply_update(
        self,
        book: LedgerOps,
        w: Working,
        update: base.Update,
        now: dt.datetime,
        executions: list[tuple[Any, ...]],
    ) -> None:
        r = w.record
        w.triggered = w.triggered or update.triggered
        for ex in update.executions:
            qty = min(ex.quantity, r.request.quantity - w.filled)
            if qty <= 0:
                continue
            signed = qty * r.request.side.sign
            book.execute(r.user_id, r.request.symbol, signed, ex.price)
            w.avg_price = ((w.avg_price or ZERO) * w.filled + ex.price * qty) / (w.filled + qty)
            w.filled += qty
            done = w.filled == r.request.quantity
            self._release(book, w, qty, ends=done)
            target = S.FILLED if done else S.PARTIALLY_FILLED
            w.move([target], ["fill"], {"quantity": str(qty), "price": str(ex.price)})
            executions.append(
                (
                    uuid.uuid4(),
                    r.id,
                    r.user_id,
                    r.request.symbol,
                    r.request.side.value,
                    qty,
                    ex.price,
                    ex.execution_id,
                    now,
                    events.utcnow(),
                )
            )
        if update.rejected and w.status is S.PENDING:
            self._release(book, w, r.request.quantity, ends=True)
            w.move([S.REJECTED], ["broker_rejected"], {"message": update.rejected})
            w.reject = (risk.Reason.BROKER_REJECTED.value, update.rejected)
        if update.cancelled and w.status in lifecycle.OPEN:
            self._cancel(book, w, update.cancelled)

    async def process(
        self,
        conn: Any,
        order_ids: Sequence[uuid.UUID],
        now: dt.datetime,
        *,
        seen: dict[OrderId, dt.datetime] | None = None,
        updates: dict[OrderId, base.Update] | None = None,
        placed: dict[uuid.UUID, dict[str, Any]] | None = None,
        audits: list[storage.AuditRow] | None = None,
    ) -> None:
        """Advance these orders as far as they can go now, in the caller's transaction,
        and queue the notifications that tell of it.

        With ``updates`` (from a poll done before locking), only orders unchanged since
        ``seen`` take them; others wait for the next pass. ``audits`` (rows the caller
        brings) are appended with this batch's own.
        """
        audits = [] if audits is None else audits
        records = await storage.lock_orders(conn, order_ids)
        if not records:
            await storage.audit_many(conn, audits)
            return
        book = LedgerOps()
        work = [Working.of(r) for r in records]
        announce: list[triggers.Event] = []
        for r in records:
            if placed and r.id in placed and r.status is S.RISK_CHECKED:
                info = placed[r.id]
                announce.append(order_placed(r))
                audits.append(
                    storage.AuditRow(
                        audit.Actor(**info["actor"]),
                        info["action"],
                        info["reason"],
                        "order",
                        str(r.id),
                        after=r.audit_view(),
                    )
                )
        executions: list[tuple[Any, ...]] = []
        for w in work:
            if w.status is S.RISK_CHECKED:
                ack = await self.broker.submit(w.record)
                failpoint(self.config, "after_broker_submit")
                if isinstance(ack, base.Refused):
                    # The broker's words are stored and shown to the trader: a proxy in
                    # front of it may echo the request's credentials.
                    message = logs.masked(ack.message)
                    w.move(
                        [S.SUBMITTED, S.REJECTED],
                        ["sent to broker", "broker_rejected"],
                        {"message": message},
                    )
                    w.reject = (risk.Reason.BROKER_REJECTED.value, message)
                    self._release(book, w, w.record.request.quantity, ends=True)
                    continue
                w.broker_order_id = ack.broker_order_id
                w.move([S.SUBMITTED, S.PENDING], ["sent to broker", "broker accepted"])
            if w.status not in lifecycle.OPEN:
                continue
            expired = w.record.expires_at is not None and w.record.expires_at <= now
            # A cancel asked for (by the user, cancel-all or the kill switch) names the
            # reason even when the expiry has passed since: it was asked first, and the
            # Alpaca adapter reads its own cancels the same way.
            reason = w.record.requested_cancel_reason or (
                fills.CancelReason.EXPIRED if expired else None
            )
            if reason is not None and await self.broker.cancel(w.record):
                self._cancel(book, w, reason)
        live = [w for w in work if w.status in lifecycle.OPEN]
        if updates is None:
            updates = await self.broker.poll([w.current() for w in live], now)
        for w in live:
            update = updates.get(w.record.id)
            if update is None:
                continue
            if seen is not None and seen.get(w.record.id) != w.record.updated_at:
                continue
            self._apply_update(book, w, update, now, executions)
        await self._write(conn, book, work, executions, now, audits, announce)

    async def _write(
        self,
        conn: Any,
        ops: LedgerOps,
        work: list[Working],
        executions: list[tuple[Any, ...]],
        now: dt.datetime,
        audits: list[storage.AuditRow],
        announce: list[triggers.Event],
    ) -> None:
        """Write the batch's changes, with their audit rows, seed events (``announce``, and
        a PortfolioChange per changed portfolio) and notifications.

        Everything is written first; the accounts are locked last, for the ledger write
        alone (:func:`ledgers.write`): placements of these users queue on those locks until
        commit, so they are held as briefly as possible."""
        changed = [w for w in work if w.changed]
        # Order rows (locked by the caller) are written first and accounts locked last,
        # for the short ledger write before commit: placements queue on the account lock,
        # so it is held as briefly as possible. This is safe because placement, which
        # takes the account first, never waits on an order row (migration 0214).
        steps: list[storage.Step] = []
        for w in changed:
            for source, targets, reasons, details in w.steps:
                cur = source
                for i, (target, reason) in enumerate(zip(targets, reasons, strict=True)):
                    last = i == len(targets) - 1
                    steps.append((w.record.id, cur, target, reason, details if last else None))
                    cur = target
        # One statement for the whole batch (arrays, not executemany): PostgreSQL plans and
        # runs it once instead of once per order. Each row moves to its final status in one
        # version, its steps named in status_path for the guard to check (migration 0215);
        # it matches only in the status it was locked in, and the worker holds those locks,
        # so a row that does not match is a bug, not a race.
        rows = [
            (
                w.record.id,
                w.record.status.value,
                w.status.value,
                ",".join(t.value for _, targets, _, _ in w.steps for t in targets) or None,
                w.filled,
                w.avg_price,
                w.reserved_cash,
                w.reserved_quantity,
                w.triggered,
                w.broker_order_id,
                *(w.reject or (w.record.reject_code, w.record.reject_message)),
            )
            for w in changed
        ]
        if rows:
            written = await conn.execute(
                """UPDATE trading_orders o SET status = x.status,
                       status_path = string_to_array(x.path, ','), updated_at = clock_timestamp(),
                       filled_quantity = x.filled, avg_fill_price = x.avg_price,
                       reserved_cash = x.reserved_cash, reserved_quantity = x.reserved_quantity,
                       triggered = x.triggered, broker_order_id = x.broker_order_id,
                       reject_code = x.reject_code, reject_message = x.reject_message
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::numeric[],
                               $6::numeric[], $7::numeric[], $8::numeric[], $9::boolean[],
                               $10::text[], $11::text[], $12::text[])
                        AS x (id, source, status, path, filled, avg_price, reserved_cash,
                              reserved_quantity, triggered, broker_order_id, reject_code,
                              reject_message)
                   WHERE o.id = x.id AND o.status = x.source""",
                *(list(column) for column in zip(*rows, strict=True)),
            )
            if written != f"UPDATE {len(rows)}":
                raise RuntimeError(f"order rows moved under the worker's locks: {written}")
        await storage.record_steps(conn, steps, now)
        if executions:
            observing.EXECUTIONS.inc(len(executions))
            await conn.execute(
                """INSERT INTO trading_executions (id, order_id, user_id, symbol, side,
                       quantity, price, broker_execution_id, ts_event, ts_init)
                   SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[],
                       $5::text[], $6::numeric[], $7::numeric[], $8::text[],
                       $9::timestamptz[], $10::timestamptz[])""",
                *(list(column) for column in zip(*executions, strict=True)),
            )
        messages: list[tuple[str, dict[str, Any]]] = []
        for w in changed:
            after = w.current()
            audits.append(
                storage.AuditRow(
                    ACTOR,
                    f"order.{after.status.value}",
                    w.steps[-1][2][-1] if w.steps else "triggered",
                    "order",
                    str(after.id),
                    before=w.record.audit_view(),
                    after=after.audit_view(),
                )
            )
            messages.append(
                (f"orders:{after.user_id}", storage.order_message(after, after.status.value))
            )
        if ops.ops:
            book = await ledgers.load(conn, sorted(ops.users()))
            # Marks for every holding of these users, and for what this batch traded.
            symbols = {symbol for _, symbol in book.holdings} | ops.symbols()
            marks = ledgers.marks_from_quotes(await self._quotes(sorted(symbols)))
            ops.apply_to(book)
            snapshots = await ledgers.record(conn, book, marks, now)
            # PortfolioChange follows fills (not freed reservations), keyed by the user's
            # first execution in this batch: unique per change. A batch redone after a
            # crash was never committed, so neither were its events.
            filled: dict[uuid.UUID, uuid.UUID] = {}
            for ex in executions:
                filled.setdefault(ex[2], ex[0])
            for user, snap in snapshots.items():
                view = {k: (str(v) if v is not None else None) for k, v in snap.items()}
                audits.append(
                    storage.AuditRow(
                        ACTOR, "portfolio.changed", "executions", "portfolio", str(user), after=view
                    )
                )
                # The holder sees it as the REST API shows it; the audit row and the event
                # keep the exact values, which reconciliation reads.
                shown = valuation.shown_snapshot(snap)
                messages.append((f"portfolio:{user}", {"event": "portfolio", "snapshot": shown}))
                if user in filled:
                    announce.append(
                        triggers.Event(
                            "PortfolioChange",
                            str(filled[user]),
                            {"user_id": str(user), "reason": "executions", "snapshot": view},
                        )
                    )
        # Audit rows (the chain head is held from here to commit; placements never take
        # it), seed events and notifications, each in one statement for the whole batch.
        await storage.audit_many(conn, audits)
        await triggers.append_many(conn, announce)
        await self._queue_notifications(conn, messages)
        if ops.ops:
            # Last: the accounts are locked from here to commit, only for this write.
            await ledgers.write(conn, book, now)
        failpoint(self.config, "before_commit")

    async def _quotes(self, symbols: Sequence[str]) -> dict[str, bytes | str | None]:
        if not symbols:
            return {}
        raw = await self.redis.mget([f"quote:{s}" for s in symbols])
        found: dict[str, bytes | str | None] = dict(zip(symbols, raw, strict=True))
        return found

    # -- the outbox ---------------------------------------------------------------------

    async def drain_once(self, *, look_first: bool = False) -> int:
        """Handle one batch of outbox events in one transaction; returns how many.
        ``look_first`` (after an empty batch): one statement checks for events before the
        claim, so an idle worker's poll is one round trip, not three (BEGIN, claim, COMMIT)."""
        with observing.BATCH_SECONDS.time():
            handled = await self._drain(look_first)
        return handled

    _CLAIM = """SELECT id, topic, payload, attempts, created_at FROM trading_outbox
                WHERE NOT parked AND available_at <= now() AND ($2::bigint IS NULL OR id = $2)
                ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"""
    _ANY_READY = """SELECT EXISTS (SELECT 1 FROM trading_outbox
                                   WHERE NOT parked AND available_at <= now())"""

    async def _drain(self, look_first: bool) -> int:
        # One transaction per batch, no savepoint (two round trips fewer, which a batch of
        # one order under light load feels): a batch that fails is rolled back whole and
        # its events are then handled one by one, each claimed again in its own
        # transaction, so one bad event cannot hold back the others.
        async with self.pool.acquire() as conn:
            rows: list[asyncpg.Record] = []
            if look_first and not await conn.fetchval(self._ANY_READY):
                observing.OUTBOX_LAG_SECONDS.set(0)
                return 0
            try:
                async with conn.transaction():
                    rows = await conn.fetch(self._CLAIM, self.config.batch_size, None)
                    if not rows:
                        observing.OUTBOX_LAG_SECONDS.set(0)
                        return 0
                    oldest = min(r["created_at"] for r in rows)
                    observing.OUTBOX_LAG_SECONDS.set((events.utcnow() - oldest).total_seconds())
                    await self._handle(conn, rows)
                done = [r["id"] for r in rows]
            except Exception as exc:
                if not rows:
                    raise  # the claim itself failed: the run loop's error handling
                _log.warning("orders.batch_failed", error=repr(exc), size=len(rows))
                done = [r["id"] for r in rows if await self._handle_alone(conn, r["id"])]
        failpoint(self.config, "after_commit")
        for row in rows:
            result = "ok" if row["id"] in done else "failed"
            observing.OUTBOX_EVENTS.labels(topic=row["topic"], result=result).inc()
        return len(rows)

    async def _handle_alone(self, conn: Any, outbox_id: int) -> bool:
        """Handle one event of a failed batch in its own transaction; on failure, record
        the attempt on the event. True when handled (or already handled elsewhere)."""
        try:
            async with conn.transaction():
                rows = await conn.fetch(self._CLAIM, 1, outbox_id)
                if rows:
                    await self._handle(conn, rows)
            return True
        except Exception as one:  # noqa: BLE001 - recorded on the event
            # An unreachable broker or Redis is retried for ever with backoff; only an
            # event that fails on its own is parked after max_attempts.
            # A ledger conflict (another writer changed the account meanwhile) is redone too.
            transient = isinstance(
                one, OSError | httpx.HTTPError | aioredis.RedisError | ledgers.LedgerConflict
            )
            await conn.execute(
                """UPDATE trading_outbox SET attempts = attempts + 1,
                       last_error = $2, parked = NOT $4 AND attempts + 1 >= $3,
                       available_at = now() + least(attempts + 1, 30) * interval '1 second'
                   WHERE id = $1""",
                outbox_id,
                # Operators read it: a broker's error may echo a key or an Authorization header.
                logs.masked(repr(one), 2000),
                self.config.max_attempts,
                transient,
            )
            _log.error("orders.event_failed", outbox_id=outbox_id, error=repr(one))
            return False

    async def _handle(self, conn: Any, rows: Sequence[asyncpg.Record]) -> None:
        now = events.utcnow()
        order_ids: list[uuid.UUID] = []
        placed: dict[uuid.UUID, dict[str, Any]] = {}
        publish: list[tuple[str, dict[str, Any]]] = []
        invalidate: list[str] = []
        audits: list[storage.AuditRow] = []
        for row in rows:
            payload = row["payload"]
            if row["topic"] in (events.OrderPlaced.topic, events.CancelRequested.topic):
                order_ids.append(uuid.UUID(payload["order_id"]))
                if "audit" in payload:
                    placed[order_ids[-1]] = payload["audit"]
            elif row["topic"] == events.AuditDue.topic:
                audits.append(
                    storage.AuditRow(
                        audit.Actor(**payload["actor"]),
                        payload["action"],
                        payload["reason"],
                        payload["entity_type"],
                        payload["entity_id"],
                        payload["before"],
                        payload["after"],
                    )
                )
            elif row["topic"] == events.NotificationsDue.topic:
                publish.extend((c, m) for c, m in payload["messages"])
                invalidate.extend(payload["invalidate"])
            else:
                raise ValueError(f"unknown outbox topic {row['topic']!r}")
        # Handled rows go in the batch's transaction: first, as nothing waits on them.
        await conn.execute(
            "DELETE FROM trading_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        # Earlier batches' notifications go out before this batch locks any account: if it
        # fails, they go out again with the retry (at least once, never not at all).
        if publish or invalidate:
            await self._publish(publish, invalidate)
        if order_ids:
            await self.process(conn, order_ids, now, placed=placed, audits=audits)
        else:
            await storage.audit_many(conn, audits)

    async def _queue_notifications(
        self, conn: Any, messages: list[tuple[str, dict[str, Any]]]
    ) -> None:
        if not messages:
            return
        # Any change to a user's orders drops their cached portfolio: its reserved cash
        # changed when the order was placed or cancelled, not only when it filled.
        users = {c.split(":", 1)[1] for c, _ in messages if c.startswith(("portfolio:", "orders:"))}
        due = events.NotificationsDue(
            tuple(messages), tuple(sorted(f"cache:portfolio:{u}" for u in users))
        )
        await storage.enqueue(conn, due.topic, due.payload())

    async def _publish(self, messages: list[tuple[str, dict[str, Any]]], keys: list[str]) -> None:
        """Drop stale caches, then broadcast; runs before the event is deleted, so a crash
        means the same messages go out again (at least once), never not at all."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if keys:
                pipe.delete(*keys)
            for channel, message in messages:
                pipe.publish(channel, json.dumps(message, default=str))
            await pipe.execute()

    # -- resting orders ----------------------------------------------------------------

    async def match_once(self) -> int:
        """Re-match working orders against the latest market; returns orders changed."""
        now = events.utcnow()
        async with self.pool.acquire() as conn:
            # One round trip: the next page of working orders, and (waiting for no page) the
            # orders that must end now, expired or asked to cancel.
            rows = await conn.fetch(_MATCH_READ, *self.match_after, MATCH_PAGE, now)
            page = [r for r in rows if r["paged"]]
            # The next pass reads the next page; after the last one, the first again.
            if len(page) < MATCH_PAGE:
                self.match_after = _FIRST
            else:  # a UNION's rows come in no promised order: the page's last is its largest
                self.match_after = max((r["created_at"], r["id"]) for r in page)
            unique = {r["id"]: r for r in rows}
            records = [storage.OrderRecord.from_row(r) for r in unique.values()]
            due = {
                r.id
                for r in records
                if r.cancel_requested or (r.expires_at is not None and r.expires_at <= now)
            }
            updates = await self.broker.poll(records, now)
            ids = sorted(due | set(updates))
            if not ids:
                return 0
            seen = {r.id: r.updated_at for r in records}
            try:
                async with conn.transaction():
                    await self.process(conn, ids, now, seen=seen, updates=updates)
            except _REFUSALS as exc:
                if len(ids) == 1:
                    raise
                # One order's change the database refuses must not hold back every other
                # order's, pass after pass: each goes alone, and only that one stays behind.
                _log.error("orders.batch_refused", orders=len(ids), error=repr(exc))
                for one in ids:
                    try:
                        async with conn.transaction():
                            await self.process(conn, [one], now, seen=seen, updates=updates)
                    except _REFUSALS as refused:
                        observing.ORDERS_REFUSED_BY_DATABASE.inc()
                        _log.error("orders.order_refused", order_id=str(one), error=repr(refused))
        return len(ids)

    async def run(self, stop: asyncio.Event) -> None:
        """Drain the outbox (waiting between batches as :func:`pause_after` says) and
        re-match working orders every ``poll_interval_ms``, until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        match_every = self.config.poll_interval_ms / 1000
        next_match = loop.time()
        _log.info("orders.worker_started", broker=self.broker.name)
        empty_in_a_row = 0
        while not stop.is_set():
            try:
                handled = await self.drain_once(look_first=empty_in_a_row > 0)
                if loop.time() >= next_match:
                    await self.match_once()
                    next_match = loop.time() + match_every
            except (
                OSError,
                asyncpg.PostgresError,
                aioredis.RedisError,
                ledgers.LedgerConflict,  # re-matching raced another ledger writer: next round
            ) as exc:
                _log.error("orders.worker_error", error=repr(exc))
                handled = 0
                await asyncio.sleep(match_every)
            empty_in_a_row = 0 if handled else empty_in_a_row + 1
            pause = pause_after(handled, self.config, empty_in_a_row)
            if pause:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await stop.wait()
