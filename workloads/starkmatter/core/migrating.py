"""Versioned SQL migrations, applied at start.

Files are ``migrations/NNNN_name.sql``. Each runs in its own transaction and is recorded
with its checksum. Start-up refuses to continue when the database has a migration the
code does not know, or one whose text changed since it was applied: that database was
made by other code, and guessing would risk the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import re
from typing import Any

import asyncpg

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every process that migrates.
_LOCK_KEY = 0x5354_4B4D


class MigrationMismatch(Exception):
    """The database's applied migrations differ from the code's."""


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover() -> list[Migration]:
    folder = importlib.resources.files("starkmatter.core") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationMismatch(f"two migration files share a version number: {versions}")
    return found


async def apply(
    conn: asyncpg.Connection[Any], migrations: list[Migration] | None = None
) -> list[int]:
    """Apply what is missing; returns the versions applied now."""
    known = {m.version: m for m in (migrations if migrations is not None else discover())}
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            row["version"]: row for row in await conn.fetch("SELECT * FROM schema_migrations")
        }
        for version, row in sorted(applied.items()):
            migration = known.get(version)
            if migration is None:
                raise MigrationMismatch(
                    f"database has migration {version:04d}_{row['name']} that this code does not"
                    " know: it was migrated by newer or different code; refusing to start"
                )
            if migration.checksum != row["checksum"]:
                raise MigrationMismatch(
                    f"migration {version:04d}_{migration.name} changed after it was applied"
                    " (checksum differs); write a new migration instead of editing an old one"
                )
        done = []
        for version, migration in sorted(known.items()):
            if version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    version,
                    migration.name,
                    migration.checksum,
                )
            done.append(version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
