"""Status conditions in the Kubernetes API convention, computed without I/O.

Every CR reports three conditions: Ready (the workloads serve), Progressing (a change is
rolling out) and Degraded (something needs a human, with the message saying what).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


@dataclasses.dataclass(frozen=True)
class Health:
    """What the children say, boiled down to what the conditions need."""

    desired: int = 0
    ready: int = 0
    rolling: bool = False
    failure_reason: str | None = None
    failure_message: str = ""


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why the operator could not act on a CR: a stable reason and what to fix."""

    reason: str
    message: str


def now_iso() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


def deployment_health(deployments: Iterable[Mapping[str, Any]]) -> Health:
    desired = ready = 0
    rolling = False
    failure_reason: str | None = None
    failure_message = ""
    for d in deployments:
        want = int((d.get("spec") or {}).get("replicas", 1))
        status = d.get("status") or {}
        have = int(status.get("readyReplicas") or 0)
        desired += want
        ready += min(have, want)
        current = int(status.get("observedGeneration") or 0) >= int(
            d["metadata"].get("generation") or 0
        )
        if (
            not current
            or int(status.get("updatedReplicas") or 0) < want
            or int(status.get("replicas") or 0) > want
            or have < want
        ):
            rolling = True
        for c in status.get("conditions") or []:
            failed = (c.get("type") == "ReplicaFailure" and c.get("status") == "True") or (
                c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
            )
            if failed and failure_reason is None:
                failure_reason = str(c.get("reason") or c["type"])
                failure_message = f"Deployment {d['metadata']['name']}: {c.get('message', '')}"
    return Health(desired, ready, rolling, failure_reason, failure_message)


def _condition(
    kind: str, status: bool, reason: str, message: str, generation: int
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def compute(
    generation: int, health: Health, problem: Problem | None, *, ready_message: str = ""
) -> list[dict[str, Any]]:
    """The three conditions, without lastTransitionTime (see merge)."""
    if problem is not None:
        return [
            _condition(READY, False, problem.reason, problem.message, generation),
            _condition(
                PROGRESSING,
                False,
                problem.reason,
                "waiting for the problem to be fixed",
                generation,
            ),
            _condition(DEGRADED, True, problem.reason, problem.message, generation),
        ]
    pods = f"{health.ready}/{health.desired} pods ready"
    if health.failure_reason is not None:
        return [
            _condition(READY, False, health.failure_reason, health.failure_message, generation),
            _condition(
                PROGRESSING, False, health.failure_reason, health.failure_message, generation
            ),
            _condition(DEGRADED, True, health.failure_reason, health.failure_message, generation),
        ]
    if health.rolling or health.ready < health.desired:
        return [
            _condition(READY, False, "RollingOut", pods, generation),
            _condition(PROGRESSING, True, "RollingOut", pods, generation),
            _condition(DEGRADED, False, "AsExpected", "no problem found", generation),
        ]
    message = ready_message or pods
    return [
        _condition(READY, True, "Ready", message, generation),
        _condition(PROGRESSING, False, "Complete", "every child is up to date", generation),
        _condition(DEGRADED, False, "AsExpected", "no problem found", generation),
    ]


def merge(
    old: Sequence[Mapping[str, Any]] | None, new: Sequence[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Keep each condition's lastTransitionTime unless its status actually changed."""
    previous = {str(c.get("type")): c for c in old or []}
    out = []
    for c in new:
        before = previous.get(str(c["type"]))
        if before is not None and before.get("status") == c["status"]:
            since = str(before.get("lastTransitionTime") or now)
        else:
            since = now
        out.append({**c, "lastTransitionTime": since})
    return out


def find(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == kind), None)


def same_status(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything (so unchanged status is never written)."""
    return dict(old or {}) == dict(new)
