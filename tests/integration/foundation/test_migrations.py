"""Migrations: applied once each, in order, and refused on a database made by other code."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from starkmatter.core import migrating


async def test_applying_twice_changes_nothing(db: asyncpg.Connection[Any]) -> None:
    assert await migrating.apply(db) == []
    versions = [r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")]
    assert versions == sorted(m.version for m in migrating.discover())


async def test_new_migration_is_applied_in_its_own_transaction(
    db: asyncpg.Connection[Any],
) -> None:
    extra = [
        *migrating.discover(),
        migrating.Migration(9990, "good", "CREATE TABLE t_good (id int)"),
        migrating.Migration(9991, "bad", "CREATE TABLE t_bad (id int); SELECT 1/0"),
    ]
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrating.apply(db, extra)
    tables = {r["relname"] for r in await db.fetch("SELECT relname FROM pg_class")}
    assert "t_good" in tables
    assert "t_bad" not in tables
    assert await db.fetchval("SELECT max(version) FROM schema_migrations") == 9990


async def test_edited_migration_is_refused(db: asyncpg.Connection[Any]) -> None:
    edited = [
        migrating.Migration(m.version, m.name, m.sql + "\n-- edited") if m.version == 1 else m
        for m in migrating.discover()
    ]
    with pytest.raises(migrating.MigrationMismatch, match="changed after it was applied"):
        await migrating.apply(db, edited)


async def test_database_with_an_unknown_migration_is_refused(db: asyncpg.Connection[Any]) -> None:
    await db.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
    )
    with pytest.raises(migrating.MigrationMismatch, match=r"does not\s+know"):
        await migrating.apply(db)
