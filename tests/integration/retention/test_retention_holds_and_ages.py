"""Retention against real PostgreSQL and a local archive folder: legal holds placed while a
run is under way, rows that belong to no user, what a dry run counts, what a hold may name,
and year-based ages in calendar years."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from starkmatter.retention import archiving, objectstore, policies
from tests.integration.retention import rows

pytestmark = pytest.mark.timeout(90)
NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=200)
PURGE_ALERTS = {"dataset": "alert_events", "olderThanDays": 90, "action": "archiveThenDelete"}


def _policy(url: str, *rules: dict[str, Any], part_rows: int = 1000) -> policies.Policy:
    return policies.Policy.model_validate(
        {"name": "test", "rules": list(rules), "partRows": part_rows, "archive": {"url": url}}
    )


async def _events(
    db: asyncpg.Connection[Any], user: uuid.UUID | None, n: int, when: dt.datetime, tag: str
) -> None:
    await db.executemany(
        """INSERT INTO alert_events (user_id, rule, kind, severity, state, fingerprint,
                                     summary, created_at)
           VALUES ($1, 'r', 'news', 'info', 'triggered', $2, 's', $3)""",
        [(user, f"{tag}-{i}", when) for i in range(n)],
    )


async def _hold(db: asyncpg.Connection[Any], user: uuid.UUID) -> None:
    await db.execute(
        """INSERT INTO retention_legal_holds (user_id, reason, created_by)
           VALUES ($1, 'lit', 'legal')""",
        user,
    )


class HoldDuringRun(objectstore.LocalStore):
    """Legal places a hold on a user, from a connection of its own, while the run uploads
    its second part: after the first part was purged, before the second part is."""

    def __init__(self, root: Path, database_url: str, user: uuid.UUID) -> None:
        super().__init__(root)
        self.database_url, self.user, self.puts = database_url, user, 0

    async def put(self, key: str, data: bytes) -> None:
        await super().put(key, data)
        self.puts += 1
        if self.puts == 2:
            legal = await asyncpg.connect(self.database_url)
            try:
                await _hold(legal, self.user)
            finally:
                await legal.close()


async def test_a_hold_placed_during_a_run_keeps_the_users_rows_even_those_already_archived(
    db: asyncpg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    held, other = await rows.new_user(db), await rows.new_user(db)
    await _events(db, held, 6, OLD, "held")  # parts 1 to 3
    await _events(db, other, 2, OLD, "other")  # part 4
    policy = _policy(tmp_path.as_uri(), PURGE_ALERTS, part_rows=2)
    store = HoldDuringRun(tmp_path, database_url, held)
    (report,) = await archiving.run_policy(db, policy, store, now=NOW)
    left = await db.fetch("SELECT user_id FROM alert_events")
    # Part 1 was purged before the hold; part 2 was archived, then kept; part 3 was no
    # longer selected; the other user's part 4 was purged.
    assert [r["user_id"] for r in left] == [held] * 4
    assert (report.archived, report.purged, report.kept) == (6, 4, 2)
    trail = await db.fetchval("SELECT after FROM audit_log WHERE action = 'retention.archived'")
    assert trail["kept_under_hold"] == 2


async def test_operational_alert_events_are_purged_while_an_unrelated_user_is_on_hold(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    await _hold(db, await rows.new_user(db))
    await _events(db, None, 5, OLD, "ops")  # operational: no user
    policy = _policy(tmp_path.as_uri(), PURGE_ALERTS)
    store = objectstore.LocalStore(tmp_path)
    (dry,) = await archiving.run_policy(db, policy, store, now=NOW, dry_run=True)
    assert (dry.eligible, dry.held) == (5, 0)
    (report,) = await archiving.run_policy(db, policy, store, now=NOW)
    assert report.purged == 5
    assert await db.fetchval("SELECT count(*) FROM alert_events") == 0


async def test_dry_run_of_an_archive_only_rule_counts_only_rows_aged_since_the_last_run(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    await _events(db, None, 5, OLD, "archived")
    await _events(db, None, 2, NOW - dt.timedelta(days=80), "aging")  # 90 days old in 10
    policy = _policy(tmp_path.as_uri(), {"dataset": "alert_events", "olderThanDays": 90})
    store = objectstore.LocalStore(tmp_path)
    (first,) = await archiving.run_policy(db, policy, store, now=NOW)
    assert first.archived == 5
    later = NOW + dt.timedelta(days=15)
    (dry,) = await archiving.run_policy(db, policy, store, now=later, dry_run=True)
    (real,) = await archiving.run_policy(db, policy, store, now=later)
    assert dry.eligible == real.archived == 2


async def test_a_hold_on_a_data_set_that_does_not_exist_is_refused(
    db: asyncpg.Connection[Any],
) -> None:
    user = await rows.new_user(db)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            """INSERT INTO retention_legal_holds (dataset, user_id, reason, created_by)
               VALUES ('alert_event', $1, 'lit', 'legal')""",
            user,
        )
    for dataset in ("alert_events", None):
        await db.execute(
            """INSERT INTO retention_legal_holds (dataset, user_id, reason, created_by)
               VALUES ($1, $2, 'lit', 'legal')""",
            dataset,
            user,
        )


async def test_a_hold_on_a_symbol_is_stored_upper_case_like_the_rows_it_holds(
    db: asyncpg.Connection[Any],
) -> None:
    await db.execute(
        """INSERT INTO retention_legal_holds (dataset, symbol, reason, created_by)
           VALUES ('ticks', 'aapl', 'lit', 'legal')"""
    )
    assert await db.fetchval("SELECT symbol FROM retention_legal_holds") == "AAPL"


async def _story(db: asyncpg.Connection[Any], url: str, when: dt.datetime) -> None:
    await db.execute(
        """INSERT INTO news_articles (source, url, content_hash, title, published_at, category,
                                      sentiment, sentiment_label)
           VALUES ('t', $1, $2, 's', $3, 'other', 0, 'neutral')""",
        url,
        url.encode(),
        when,
    )


async def test_seed_rules_in_years_take_only_rows_past_their_calendar_anniversary(
    db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    # Two calendar years before 1 June 2025 holds 29 February 2024: 731 days, not 730.
    now = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
    await _story(db, "http://x/two-years-old", dt.datetime(2023, 6, 1, 11, tzinfo=dt.UTC))
    await _story(db, "http://x/730-days-old", dt.datetime(2023, 6, 2, 0, tzinfo=dt.UTC))
    seed = policies.default(tmp_path.as_uri())
    policy = seed.model_copy(update={"rules": [r for r in seed.rules if r.dataset == "news"]})
    (report,) = await archiving.run_policy(db, policy, objectstore.LocalStore(tmp_path), now=now)
    assert report.cutoff == dt.datetime(2023, 6, 1, 12, tzinfo=dt.UTC)
    assert report.purged == 1
    assert await db.fetchval("SELECT url FROM news_articles") == "http://x/730-days-old"
    trail = await db.fetchval("SELECT reason FROM audit_log WHERE action = 'retention.archived'")
    assert trail.endswith("older than 2 years")
