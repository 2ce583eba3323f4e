"""Why a child's pods cannot start, from the pod status the kubelet writes; without I/O.

The operator cannot read Secrets (least privilege: a cluster-wide `get secrets` would let
it read every Secret in the cluster), so it does not check a CR's Secret references
itself. The kubelet does: a container whose Secret or key is missing waits with reason
``CreateContainerConfigError`` and a message naming it, and the kubelet starts it by
itself once the Secret is there. These functions turn that into the CR's condition, with
the CR field the Secret comes from.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from starkmatter_operator.builders import common

CONFIG_ERROR = "CreateContainerConfigError"
# Stable reasons (a client may switch on them).
SECRET_MISSING = "SecretMissing"  # noqa: S105 (a condition reason, not a secret)
# Distinct messages quoted in a condition: a Deployment's replicas all say the same thing,
# and a condition message is meant to be read, not to grow with the replica count.
MAX_MESSAGES = 3

# The kubelet's own wording (pkg/kubelet/kubelet_pods.go): a missing Secret is the
# apiserver's NotFound for resource "secret", a missing key its own sentence.
_SECRET_NOT_FOUND = re.compile(r'\bsecrets? "(?P<name>[^"]+)" not found')
_KEY_NOT_FOUND = re.compile(r"couldn't find key (?P<key>\S+) in Secret [^/\s]+/(?P<name>\S+)")


@dataclasses.dataclass(frozen=True)
class Waiting:
    """A container the kubelet cannot create because of its configuration."""

    pod: str
    container: str
    message: str


@dataclasses.dataclass(frozen=True)
class Blocked:
    """What the CR's Ready and Degraded conditions say while its pods cannot start."""

    reason: str
    message: str


def config_errors(pods: Iterable[Mapping[str, Any]]) -> list[Waiting]:
    """Every container (init ones too) that waits with CreateContainerConfigError."""
    out = []
    for pod in pods:
        status = pod.get("status") or {}
        statuses = [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        for container in statuses:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == CONFIG_ERROR:
                pod_name = str((pod.get("metadata") or {}).get("name", ""))
                message = str(waiting.get("message", ""))
                out.append(Waiting(pod_name, str(container.get("name", "")), message))
    return out


def _about_secret(namespace: str, refs: Sequence[common.SecretKeyRef], message: str) -> str | None:
    """The fix for a missing Secret or key, naming the CR field it comes from."""
    missing_key = _KEY_NOT_FOUND.search(message)
    missing = missing_key or _SECRET_NOT_FOUND.search(message)
    if missing is None:
        return None
    name = missing["name"]
    field = next((r.field for r in refs if r.name == name), None)
    where = f"Secret {namespace}/{name}" + (f" ({field})" if field else "")
    if missing_key is not None:
        return f"{where} has no key {missing_key['key']!r}: add it"
    keys = sorted({r.key for r in refs if r.name == name and r.key})
    with_keys = f" with key {', '.join(repr(k) for k in keys)}" if keys else ""
    return f"{where} not found: create it{with_keys} or point the reference at an existing Secret"


def blocked(
    namespace: str, refs: Sequence[common.SecretKeyRef], errors: Sequence[Waiting]
) -> Blocked | None:
    """SecretMissing when a Secret or key is what the containers wait for; otherwise the
    kubelet's own reason and message (a missing ConfigMap key, say)."""
    if not errors:
        return None
    fixes = (_about_secret(namespace, refs, e.message) for e in errors)
    secrets = list(dict.fromkeys(fix for fix in fixes if fix is not None))
    if secrets:
        return Blocked(SECRET_MISSING, "; ".join(secrets[:MAX_MESSAGES]))
    # By container, not pod: every replica of a Deployment says the same.
    others = list(dict.fromkeys(f"container {e.container}: {e.message}" for e in errors))
    return Blocked(CONFIG_ERROR, f"pod {errors[0].pod}: " + "; ".join(others[:MAX_MESSAGES]))
