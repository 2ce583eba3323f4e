"""What an archival Job reports: `starkmatter archive` ends by writing a one-line JSON
summary (``{"archived": N, "purged": M, ...}``) as its container's termination message,
which the kubelet puts into the pod's status; the operator reads it with the pod list it
already has. (Reading the job's log instead would take `get pods/log`, and that grant
cannot be limited to our pods: it would let the operator read every pod's log.)"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from starkmatter_operator import kube

# The container of an archival Job's pod that runs `starkmatter archive` (builders).
ARCHIVE_CONTAINER = "archive"


def rows_archived(text: str) -> int | None:
    """The rows a report counts: the sum of the ``archived`` of its JSON lines."""
    total, seen = 0, False
    for line in text.splitlines():
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


def termination_message(pod: Mapping[str, Any], container: str) -> str:
    """What a container that has ended left in the pod's status ("" if nothing)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            terminated = (status.get("state") or {}).get("terminated") or {}
            return str(terminated.get("message") or "")
    return ""


def pods_rows_archived(pods: Sequence[Mapping[str, Any]]) -> int | None:
    """The rows the Job's successful pod reports; None when none says (its pods are gone,
    or an image from before the summary ran it). Only a successful pod counts: a failed
    one's message is the tail of its log (terminationMessagePolicy FallbackToLogsOnError)."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Succeeded":
            continue
        found = rows_archived(termination_message(pod, ARCHIVE_CONTAINER))
        if found is not None:
            return found
    return None


async def job_rows_archived(client: kube.Kube, namespace: str, job: str) -> int | None:
    """Raises kube.ApiError when the pods cannot be listed (the caller tries again later)."""
    return pods_rows_archived(await client.list("v1", "Pod", namespace, f"job-name={job}"))
