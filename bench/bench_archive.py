"""Archive throughput: rows/s of ``archive`` (select in key order, JSON lines, gzip, write,
purge, record the part) against a raw COPY-out of the same rows, measured in the same run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from starkmatter.core import db, embedded, migrating
from starkmatter.retention import archiving, objectstore, policies

ROWS = 200_000


async def main(work: Path) -> None:
    pg = embedded.EmbeddedPostgres(work / "pg", durable=False).start()
    try:
        url = await pg.ensure_database("bench_archive")
        conn = await asyncpg.connect(url)
        await db.init_connection(conn)
        await migrating.apply(conn)
        await conn.execute(
            """INSERT INTO alert_events (rule, kind, severity, state, fingerprint, summary,
                                         details, created_at)
               SELECT 'bench', 'operational', 'warning', 'firing', 'f' || g,
                      'summary of event ' || g, jsonb_build_object('value', g::text),
                      now() - interval '200 days' + g * interval '1 second'
               FROM generate_series(1, $1) g""",
            ROWS,
        )
        await conn.execute("VACUUM ANALYZE alert_events")
        now = dt.datetime.now(dt.UTC)
        cutoff = now - dt.timedelta(days=90)

        sink = io.BytesIO()
        t0 = time.perf_counter()
        await conn.copy_from_query(
            "SELECT * FROM alert_events WHERE created_at < $1 ORDER BY id", cutoff, output=sink
        )
        copy_s = time.perf_counter() - t0

        policy = policies.Policy.model_validate(
            {"name": "bench", "partRows": 50_000, "archive": {"url": (work / "a").as_uri()},
             "rules": [{"dataset": "alert_events", "olderThanDays": 90,
                        "action": "archiveThenDelete"}]}
        )  # fmt: skip
        store = objectstore.LocalStore(work / "a")
        t0 = time.perf_counter()
        (report,) = await archiving.run_policy(conn, policy, store, now=now)
        archive_s = time.perf_counter() - t0
        assert report.archived == ROWS and report.purged == ROWS
        assert report.manifest_key is not None
        assert await archiving.verify(store, report.manifest_key) == ROWS
        size = sum(p.stat().st_size for p in (work / "a").rglob("*.gz"))
        common.report(
            f"archive {ROWS} alert_events rows (archiveThenDelete, local folder, parts of 50k)",
            [
                ("COPY-out of the same rows", ROWS / copy_s, "rows/s"),
                ("archive: select + gzip + write + purge", ROWS / archive_s, "rows/s"),
                ("compressed size", size / ROWS, "bytes/row"),
            ],
            baseline="COPY-out of the same rows",
        )
        common.ratio("archive / COPY-out", ROWS / archive_s, ROWS / copy_s)
        await conn.close()
    finally:
        pg.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        asyncio.run(main(Path(tmp)))
