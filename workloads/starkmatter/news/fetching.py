"""Step 1: fetch a feed with a conditional GET (ETag / Last-Modified), remembering the
validators in PostgreSQL only after the articles were stored."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import asyncpg
import httpx

from starkmatter.core import errors


class FetchFailed(errors.ServiceUnavailable):
    code = "news_fetch_failed"


@dataclasses.dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


async def fetch(
    pool: asyncpg.Pool | asyncpg.Connection[Any],
    client: httpx.AsyncClient,
    source: str,
    url: str,
    *,
    user_agent: str,
) -> Fetched:
    state = await pool.fetchrow(
        "SELECT etag, last_modified FROM news_fetch_state WHERE source = $1 AND url = $2",
        source,
        url,
    )
    headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"}
    if state is not None:
        if state["etag"]:
            headers["If-None-Match"] = state["etag"]
        if state["last_modified"]:
            headers["If-Modified-Since"] = state["last_modified"]
    try:
        resp = await client.get(url, headers=headers, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise FetchFailed(f"fetching {url}: {type(exc).__name__}") from exc
    if resp.status_code == 304:
        await remember(pool, source, url, 304, None, None, keep=True)
        return Fetched(304, b"", None, None)
    if resp.status_code != 200:
        raise FetchFailed(f"fetching {url}: HTTP {resp.status_code}")
    return Fetched(200, resp.content, resp.headers.get("etag"), resp.headers.get("last-modified"))


async def remember(
    pool: asyncpg.Pool | asyncpg.Connection[Any],
    source: str,
    url: str,
    status: int,
    etag: str | None,
    last_modified: str | None,
    *,
    keep: bool = False,
) -> None:
    """Record the validators; ``keep`` leaves the stored ones as they are (after a 304)."""
    await pool.execute(
        """INSERT INTO news_fetch_state (source, url, etag, last_modified, last_status,
                                         last_fetched_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (source, url) DO UPDATE SET
               etag = CASE WHEN $7 THEN news_fetch_state.etag ELSE EXCLUDED.etag END,
               last_modified = CASE WHEN $7 THEN news_fetch_state.last_modified
                                    ELSE EXCLUDED.last_modified END,
               last_status = EXCLUDED.last_status,
               last_fetched_at = EXCLUDED.last_fetched_at""",
        source,
        url,
        etag,
        last_modified,
        status,
        dt.datetime.now(dt.UTC),
        keep,
    )
