"""Retention against real PostgreSQL, a local archive folder and a local S3 server (moto's
server mode, through real boto3 HTTP calls)."""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pytest

from starkmatter.core import audit, embedded
from starkmatter.retention import archiving, objectstore, policies

pytestmark = pytest.mark.timeout(90)
NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=400)


async def _news(db: asyncpg.Connection[Any], n: int, when: dt.datetime, tag: str) -> None:
    await db.executemany(
        """INSERT INTO news_articles (source, url, content_hash, title, published_at, category,
                                      sentiment, sentiment_label)
           VALUES ('t', $1, $2, $3, $4, 'other', 0, 'neutral')""",
        [(f"http://x/{tag}/{i}", f"{tag}{i}".encode(), f"story {tag} {i}", when)
         for i in range(n)],
    )  # fmt: skip


def _policy(
    archive_url: str | None, *rules: dict[str, Any], part_rows: int = 1000
) -> policies.Policy:
    return policies.Policy.model_validate(
        {"name": "test", "rules": list(rules), "partRows": part_rows,
         **({"archive": {"url": archive_url}} if archive_url else {})}
    )  # fmt: skip


def _lines(store_dir: Path, manifest_key: str) -> list[dict[str, Any]]:
    manifest = json.loads((store_dir / manifest_key).read_text())
    rows = []
    for part in manifest["parts"]:
        content = gzip.decompress((store_dir / part["object_key"]).read_bytes())
        rows += [json.loads(line) for line in content.decode().splitlines()]
    return rows


async def test_dry_run_reports_what_would_move_and_changes_nothing(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    await _news(db, 5, OLD, "old")
    await _news(db, 3, NOW, "new")
    policy = _policy(tmp_path.as_uri(), {"dataset": "news", "olderThanDays": 365,
                                         "action": "archiveThenDelete"})  # fmt: skip
    store = objectstore.LocalStore(tmp_path)
    (report,) = await archiving.run_policy(db, policy, store, now=NOW, dry_run=True)
    assert (report.eligible, report.held, report.archived) == (5, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM news_articles") == 8
    assert await store.list("") == []


async def test_archive_then_delete_moves_old_rows_with_a_verified_manifest(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    await _news(db, 7, OLD, "old")
    await _news(db, 2, NOW, "new")
    policy = _policy(tmp_path.as_uri(), {"dataset": "news", "olderThanDays": 365,
                                         "action": "archiveThenDelete"}, part_rows=3)  # fmt: skip
    store = objectstore.LocalStore(tmp_path)
    (report,) = await archiving.run_policy(db, policy, store, now=NOW)
    assert (report.archived, report.purged, report.parts) == (7, 7, 3)
    assert report.manifest_key is not None
    assert await archiving.verify(store, report.manifest_key) == 7
    archived = _lines(tmp_path, report.manifest_key)
    assert sorted(r["url"] for r in archived) == sorted(f"http://x/old/{i}" for i in range(7))
    remaining = await db.fetch("SELECT url FROM news_articles ORDER BY url")
    assert [r["url"] for r in remaining] == ["http://x/new/0", "http://x/new/1"]
    trail = await db.fetchrow(
        "SELECT actor, after FROM audit_log WHERE action = 'retention.archived'"
    )
    assert trail is not None and trail["actor"] == "retention"
    assert trail["after"]["purged"] == 7


async def test_legal_hold_exempts_a_users_rows(db: asyncpg.Connection[Any], tmp_path: Path) -> None:
    users = []
    for i in range(2):
        users.append(
            await db.fetchval(
                "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
                f"u{i}@example.com",
            )
        )
    for n, user in enumerate(users):
        await db.executemany(
            """INSERT INTO alert_events (user_id, rule, kind, severity, state, fingerprint,
                                         summary, created_at)
               VALUES ($1, 'news', 'news', 'info', 'triggered', $2, 's', $3)""",
            [(user, f"f{n}-{i}", OLD) for i in range(4)],
        )
    await db.execute(
        "INSERT INTO retention_legal_holds (user_id, reason, created_by) VALUES ($1, $2, 'legal')",
        users[0],
        "litigation 2026-17",
    )
    policy = _policy(tmp_path.as_uri(), {"dataset": "alert_events", "olderThanDays": 90,
                                         "action": "archiveThenDelete"})  # fmt: skip
    store = objectstore.LocalStore(tmp_path)
    (dry,) = await archiving.run_policy(db, policy, store, now=NOW, dry_run=True)
    assert (dry.eligible, dry.held) == (8, 4)
    (report,) = await archiving.run_policy(db, policy, store, now=NOW)
    assert report.purged == 4
    left = await db.fetch("SELECT DISTINCT user_id FROM alert_events")
    assert [r["user_id"] for r in left] == [users[0]]


class FlakyStore(objectstore.LocalStore):
    """Fails one put: before writing (upload lost) or after writing (ack lost)."""

    def __init__(self, root: Path, fail_on: int, *, after_write: bool) -> None:
        super().__init__(root)
        self.puts = 0
        self.fail_on = fail_on
        self.after_write = after_write

    async def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        if self.puts == self.fail_on and not self.after_write:
            raise OSError("connection reset while uploading")
        await super().put(key, data)
        if self.puts == self.fail_on:
            raise OSError("connection reset before the response")


@pytest.mark.parametrize("after_write", [False, True])
async def test_interrupted_run_resumes_without_losing_or_duplicating_rows(
    db: asyncpg.Connection[Any], tmp_path: Path, after_write: bool
) -> None:
    await _news(db, 10, OLD, "old")
    policy = _policy(tmp_path.as_uri(), {"dataset": "news", "olderThanDays": 365,
                                         "action": "archiveThenDelete"}, part_rows=3)  # fmt: skip
    with pytest.raises(OSError, match="connection reset"):
        await archiving.run_policy(
            db, policy, FlakyStore(tmp_path, 2, after_write=after_write), now=NOW
        )
    assert await db.fetchval("SELECT count(*) FROM news_articles") == 7
    (report,) = await archiving.run_policy(db, policy, objectstore.LocalStore(tmp_path), now=NOW)
    assert report.resumed and report.archived == 10 and report.purged == 10
    assert report.manifest_key is not None
    urls = [r["url"] for r in _lines(tmp_path, report.manifest_key)]
    assert sorted(urls) == sorted(f"http://x/old/{i}" for i in range(10))
    assert await db.fetchval("SELECT count(*) FROM news_articles") == 0
    objects = await objectstore.LocalStore(tmp_path).list("news")
    assert len([o for o in objects if o.endswith(".jsonl.gz")]) == 4


async def test_audit_rows_are_archived_never_deleted_and_never_twice(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    actor = audit.Actor("tests", "tests", "tests")
    for i in range(5):
        async with db.transaction():
            await audit.record(db, actor, action="x", reason="r", entity_type="t",
                               entity_id=str(i))  # fmt: skip
    with pytest.raises(ValueError, match="append-only"):
        _policy(tmp_path.as_uri(), {"dataset": "audit", "olderThanDays": 1,
                                    "action": "archiveThenDelete"})  # fmt: skip
    policy = _policy(tmp_path.as_uri(), {"dataset": "audit", "olderThanDays": 1})
    written = dt.datetime.now(dt.UTC)  # after the five rows, before the run's own row
    store = objectstore.LocalStore(tmp_path)
    (first,) = await archiving.run_policy(db, policy, store, now=written + dt.timedelta(days=1))
    assert first.archived == 5 and first.purged == 0
    # The first run appended its own audit row; the next run archives just that one.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    (second,) = await archiving.run_policy(db, policy, store, now=later)
    assert second.archived == 1
    assert await db.fetchval("SELECT count(*) FROM audit_log") == 7
    assert first.manifest_key is not None
    assert [r["seq"] for r in _lines(tmp_path, first.manifest_key)] == [1, 2, 3, 4, 5]


async def test_archive_only_runs_take_every_row_that_aged_since_whatever_its_key(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    # News ids grow with insertion, not with publication time: an archive-only run used to
    # resume after the previous run's last key, so a story that aged after a run but had a
    # smaller id than that run's last one was never archived (random ids: most rows).
    await _news(db, 2, NOW - dt.timedelta(days=20), "aging")  # smaller ids, old in 10 days
    await _news(db, 3, OLD, "early")
    policy = _policy(tmp_path.as_uri(), {"dataset": "news", "olderThanDays": 30})
    store = objectstore.LocalStore(tmp_path)
    (first,) = await archiving.run_policy(db, policy, store, now=NOW)
    assert first.archived == 3
    later = NOW + dt.timedelta(days=15)
    (second,) = await archiving.run_policy(db, policy, store, now=later)
    assert second.archived == 2 and second.manifest_key is not None
    assert {r["url"] for r in _lines(tmp_path, second.manifest_key)} == {
        "http://x/aging/0",
        "http://x/aging/1",
    }
    (third,) = await archiving.run_policy(db, policy, store, now=later)
    assert third.archived == 0  # nothing twice


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = embedded.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


async def test_archive_to_s3_through_boto3_with_checksums(
    db: asyncpg.Connection[Any], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"archive-{uuid.uuid4().hex[:8]}"
    boto3.session.Session().client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    await _news(db, 6, OLD, "s3")
    policy = policies.Policy.model_validate(
        {"name": "s3", "partRows": 4,
         "archive": {"url": f"s3://{bucket}/starkmatter", "endpoint": s3_endpoint},
         "rules": [{"dataset": "news", "olderThanDays": 365, "action": "archiveThenDelete"}]}
    )  # fmt: skip
    assert policy.archive is not None
    store = objectstore.open_store(policy.archive.url, endpoint=s3_endpoint)
    (report,) = await archiving.run_policy(db, policy, store, now=NOW)
    assert report.archived == 6 and report.manifest_key is not None
    assert await archiving.verify(store, report.manifest_key) == 6
    listed = await store.list("news/")
    assert sorted(listed) == sorted(
        [report.manifest_key]
        + [f"news/{report.manifest_key.split('/')[1]}/part-0000{i}.jsonl.gz" for i in (1, 2)]
    )
    head = (
        boto3.session.Session()
        .client("s3", endpoint_url=s3_endpoint)
        .head_object(Bucket=bucket, Key=f"starkmatter/{listed[0]}", ChecksumMode="ENABLED")
    )
    assert head["ContentLength"] > 0


async def _filled_order(
    db: asyncpg.Connection[Any], user: uuid.UUID, created: dt.datetime, executed: dt.datetime
) -> uuid.UUID:
    order = uuid.uuid4()
    await db.execute(
        """INSERT INTO trading_orders (id, user_id, client_order_id, symbol, side, type,
               time_in_force, quantity, status, created_at, updated_at)
           VALUES ($1, $2, $3, 'AAPL', 'buy', 'market', 'day', 10, 'OrderCreated', $4, $4)""",
        order, user, str(order), created,
    )  # fmt: skip
    path = ["OrderCreated", "Validated", "RiskChecked", "Submitted", "Pending", "Filled"]
    for source, target in itertools.pairwise(path):
        await db.execute("UPDATE trading_orders SET status = $2 WHERE id = $1", order, target)
        await db.execute(
            """INSERT INTO trading_order_events (order_id, source, target, reason, ts_event,
                                                 ts_init) VALUES ($1, $2, $3, 'test', $4, $4)""",
            order, source, target, created,
        )  # fmt: skip
    await db.execute(
        """INSERT INTO trading_executions (id, order_id, user_id, symbol, side, quantity, price,
                                           ts_event, ts_init)
           VALUES ($1, $2, $3, 'AAPL', 'buy', 10, 187.5, $4, $4)""",
        uuid.uuid4(), order, user, executed,
    )  # fmt: skip
    return order


async def test_orders_are_archived_with_their_events_and_wait_for_their_executions(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    user = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ('o@example.com', 'x') RETURNING id"
    )
    old = NOW - dt.timedelta(days=8 * 365)
    done = await _filled_order(db, user, old, old)
    # Placed long ago, executed recently (a GTC order): purging it would cascade to an
    # execution that is not archived yet.
    recent_fill = await _filled_order(db, user, old, NOW - dt.timedelta(days=30))
    policy = _policy(
        tmp_path.as_uri(),
        {"dataset": "executions", "olderThanDays": 7 * 365, "action": "archiveThenDelete"},
        {"dataset": "orders", "olderThanDays": 7 * 365, "action": "archiveThenDelete"},
    )
    reports = await archiving.run_policy(db, policy, objectstore.LocalStore(tmp_path), now=NOW)
    by_name = {r.dataset: r for r in reports}
    assert (by_name["executions"].archived, by_name["orders"].archived) == (1, 1)
    (order_doc,) = _lines(tmp_path, by_name["orders"].manifest_key or "")
    assert order_doc["id"] == str(done) and order_doc["status"] == "Filled"
    assert [e["target"] for e in order_doc["events"]] == [
        "Validated", "RiskChecked", "Submitted", "Pending", "Filled"
    ]  # fmt: skip
    left = await db.fetch("SELECT DISTINCT order_id FROM trading_order_events")
    assert [r["order_id"] for r in left] == [recent_fill]
    assert await db.fetchval("SELECT count(*) FROM trading_executions") == 1
