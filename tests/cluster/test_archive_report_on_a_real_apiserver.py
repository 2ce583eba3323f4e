"""A RetentionPolicy's rows archived, end to end on the real apiserver.

The real `starkmatter archive --policy` runs as a local process (kwok pods run no code)
with the configuration the operator wrote into the policy's ConfigMap, against the real
PostgreSQL; the summary it writes to its termination-message file becomes the termination
message of the archive Job's pod (kwok reports it as the kubelet would), and the operator,
listing pods as its own ServiceAccount (no `pods/log`: it cannot read logs), puts the rows
archived into the policy's status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from starkmatter.core import embedded, migrating
from starkmatter_operator import testing
from tests.cluster.conftest import OperatorProcess, platform_secrets, wait_for

# Generous: waits are on conditions, and a loaded machine only makes them longer.
pytestmark = pytest.mark.timeout(300)

NAME = "news-retention"
OLD_ARTICLES = 7


async def _database_with_old_news(pg_server: embedded.EmbeddedPostgres) -> str:
    url = await pg_server.ensure_database("cluster_archive_report")
    conn = await asyncpg.connect(url)
    try:
        await migrating.apply(conn)
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
        await conn.executemany(
            """INSERT INTO news_articles (source, url, content_hash, title, published_at,
                                          category, sentiment, sentiment_label)
               VALUES ('t', $1, $2, $3, $4, 'other', 0, 'neutral')""",
            [(f"http://x/old/{i}", f"old{i}".encode(), f"story {i}", old)
             for i in range(OLD_ARTICLES)],
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO news_articles (source, url, content_hash, title, published_at,
                                          category, sentiment, sentiment_label)
               VALUES ('t', 'http://x/new', 'new', 'fresh story', now(), 'other', 0, 'neutral')"""
        )
    finally:
        await conn.close()
    return url


def test_rows_archived_by_the_archive_job_reach_the_policy_status(
    cluster: testing.ControlPlane,
    operator: OperatorProcess,
    pg_server: embedded.EmbeddedPostgres,
    redis_server: embedded.EmbeddedRedis,
    tmp_path: Path,
) -> None:
    namespace = testing.POD_LOGS_NAMESPACE
    cluster.kubectl(
        "apply", "-f", "-",
        input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace,
                         "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }),
    )  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=platform_secrets(namespace))
    archive = tmp_path / "archive"
    archive.mkdir()
    policy: dict[str, Any] = {
        "apiVersion": "starkmatter.io/v1alpha1",
        "kind": "RetentionPolicy",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "schedule": "0 3 * * *",
            # Archive only: a file:// archive cannot back a rule that deletes (the operator
            # refuses it; in a cluster the directory dies with the job's pod).
            "rules": [{"dataset": "news", "olderThanDays": 365, "action": "archive"}],
            "archive": {"url": archive.as_uri()},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(policy))

    def config_written() -> Any:
        found = cluster.kubectl("get", "cm", f"{NAME}-retention", "-n", namespace, "-o", "json",
                                check=False)  # fmt: skip
        return found.returncode == 0 and yaml.safe_load(found.stdout)["data"]["retention.json"]

    config = tmp_path / "retention.json"
    config.write_text(wait_for(config_written, 60, "the policy's ConfigMap"))

    # The real archive run, with the Job's own command and environment: its literal values
    # as they are, its Secret references pointed at this machine's servers.
    cron = cluster.get_json("cronjob", f"{NAME}-archive", "-n", namespace)
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    local = {
        "STARKMATTER_DATABASE_URL": asyncio.run(_database_with_old_news(pg_server)),
        "STARKMATTER_REDIS_URL": str(redis_server.url),
        "STARKMATTER_RETENTION_CONFIG": str(config),
    }
    env = {e["name"]: local.get(e["name"], e.get("value")) for e in container["env"]}
    assert None not in env.values(), f"a Secret-sourced variable has no local stand-in: {env}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STARKMATTER_")}
    # The kubelet makes the container's terminationMessagePath file, empty, before it starts.
    termination_log = tmp_path / "termination-log"
    termination_log.touch()
    run = subprocess.run(
        [str(Path(sys.executable).parent / "starkmatter"), *container["args"]],
        env={**clean, **env, "STARKMATTER_TERMINATION_MESSAGE_PATH": str(termination_log)},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert list(archive.rglob("*")), "the archive run wrote nothing"
    summary = termination_log.read_text()
    assert json.loads(summary)["archived"] == OLD_ARTICLES
    # Its log too, so that the operator's refusal below is RBAC's, not a missing log's.
    cluster.write_pod_log(run.stdout)

    # The Job the CronJob would start; kwok completes its pod with the run's summary as the
    # termination message, as the kubelet would from the file the container wrote.
    job = json.loads(cluster.kubectl(
        "create", "job", "report-run", f"--from=cronjob/{NAME}-archive", "-n", namespace,
        "--dry-run=client", "-o", "json",
    ).stdout)  # fmt: skip
    template = job["spec"]["template"]["metadata"]
    template.setdefault("annotations", {})[testing.TERMINATION_MESSAGE_ANNOTATION] = summary
    cluster.kubectl("create", "-f", "-", input=json.dumps(job))

    def reported() -> Any:
        found = cluster.get_json("rtp", NAME, "-n", namespace)
        status = found.get("status") or {}
        return status.get("lastJob") == "report-run" and "rowsArchived" in status and status

    status = wait_for(reported, 120, f"rows archived in status; operator:\n{operator.log_tail()}")
    assert status["rowsArchived"] == OLD_ARTICLES
    (pod,) = cluster.get_json("pods", "-n", namespace, "-l", "job-name=report-run")["items"]
    (archive_status,) = pod["status"]["containerStatuses"]
    assert archive_status["state"]["terminated"]["message"] == summary
    # The operator never asked for the log, and could not have had it.
    assert 'resource="pods/log"' not in operator.metrics()
    assert (
        '"archived": 7' in cluster.kubectl("logs", pod["metadata"]["name"], "-n", namespace).stdout
    )
    refused = cluster.kubectl(
        "logs", pod["metadata"]["name"], "-n", namespace,
        kubeconfig=operator.kubeconfig, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "Forbidden" in refused.stderr

    # A later run that leaves no summary (an image from before it): its count is unknown,
    # and the previous run's must not pass for it.
    cluster.kubectl(
        "create", "job", "silent-run", f"--from=cronjob/{NAME}-archive", "-n", namespace
    )

    def unknown() -> Any:
        status = cluster.get_json("rtp", NAME, "-n", namespace).get("status") or {}
        return status.get("lastJob") == "silent-run" and status

    status = wait_for(unknown, 120, f"the silent run in status; operator:\n{operator.log_tail()}")
    assert "rowsArchived" not in status
    assert operator.healthy()
