"""What an archival Job reports: `starkmatter archive` logs one JSON line per data set
(``{"dataset": ..., "archived": N, "purged": M, ...}``); the operator sums them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from starkmatter_operator import kube

log = logging.getLogger(__name__)


def rows_archived(log_text: str) -> int | None:
    total, seen = 0, False
    for line in log_text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and isinstance(report.get("archived"), int):
            total += report["archived"]
            seen = True
    return total if seen else None


def latest_finished(jobs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    def finished_at(job: Mapping[str, Any]) -> str:
        status = job.get("status") or {}
        if status.get("completionTime"):
            return str(status["completionTime"])
        failed = [c for c in status.get("conditions") or [] if c.get("type") == "Failed"]
        return str(failed[0].get("lastTransitionTime") or "") if failed else ""

    done = [j for j in jobs if finished_at(j)]
    return max(done, key=finished_at) if done else None


def failed(job: Mapping[str, Any]) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return f"{c.get('reason', 'Failed')}: {c.get('message', '')}".strip()
    return None


async def job_rows_archived(client: kube.Kube, namespace: str, job: str) -> int | None:
    """Best effort: a Job whose pods are gone, or whose logs cannot be read, reports None."""
    try:
        pods = await client.list("v1", "Pod", namespace, f"job-name={job}")
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if phase != "Succeeded":
                continue
            text = await client.request(
                "GET",
                f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/log",
                params={"container": "archive", "tailLines": "500"},
                text=True,
            )
            found = rows_archived(str(text))
            if found is not None:
                return found
    except kube.ApiError as e:
        log.info("event=archive_report.unreadable job=%s status=%s", job, e.status)
    return None
