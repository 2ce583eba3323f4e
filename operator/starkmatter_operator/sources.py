"""A csv MarketFeed's replay source, and the SourceReady condition, computed without I/O.

The kubelet mounts ``spec.source`` (a ConfigMap key or a claim) into the ingest pod; when
the object is missing it only records a ``FailedMount`` event on the pod, which a feed
owner looking at the MarketFeed never sees. So the operator looks the object up itself
(reconciling does the I/O) and these functions decide what the feed's status says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

SOURCE_READY = "SourceReady"

CONFIG_MAP = "ConfigMap"
CLAIM = "PersistentVolumeClaim"

# Stable reasons (a client may switch on them).
FOUND = "SourceFound"
CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
CONFIG_MAP_KEY_NOT_FOUND = "ConfigMapKeyNotFound"
CLAIM_NOT_FOUND = "ClaimNotFound"
CLAIM_LOST = "ClaimLost"
CLAIM_PENDING = "ClaimPending"
# Reasons that keep the ingest pod from ever starting: the operator withholds the children
# (as for a missing Secret), the feed is Degraded, and it looks again until they are fixed.
BLOCKING = frozenset({CONFIG_MAP_NOT_FOUND, CONFIG_MAP_KEY_NOT_FOUND, CLAIM_NOT_FOUND, CLAIM_LOST})


@dataclasses.dataclass(frozen=True)
class Reference:
    """The object a feed's spec.source names, in the feed's namespace."""

    kind: str  # CONFIG_MAP or CLAIM
    name: str
    key: str | None = None  # the ConfigMap key holding the CSV text
    sub_path: str | None = None  # the file's path on the claim (not checkable here)

    @property
    def field(self) -> str:
        if self.kind == CONFIG_MAP:
            return "spec.source.configMapRef"
        return "spec.source.persistentVolumeClaim"


@dataclasses.dataclass(frozen=True)
class Found:
    """What the apiserver holds under a reference's name (None when nothing): only what
    the verdict needs, so a ConfigMap's contents are never kept."""

    keys: frozenset[str] = frozenset()  # a ConfigMap's data and binaryData keys
    phase: str = ""  # a claim's status.phase


@dataclasses.dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str
    message: str

    @property
    def blocking(self) -> bool:
        return self.reason in BLOCKING


def reference(spec: Mapping[str, Any]) -> Reference | None:
    """The object a csv feed's spec.source names (None for any other feed)."""
    source = spec.get("source")
    if not source or spec.get("provider") != "csv":
        return None
    if "configMapRef" in source:
        ref = source["configMapRef"]
        return Reference(CONFIG_MAP, str(ref["name"]), key=str(ref["key"]))
    claim = source["persistentVolumeClaim"]
    return Reference(CLAIM, str(claim["claimName"]), sub_path=str(claim["subPath"]))


def found(kind: str, obj: Mapping[str, Any] | None) -> Found | None:
    """The part of a GET answer that matters (None: the object does not exist)."""
    if obj is None:
        return None
    if kind == CONFIG_MAP:
        keys = {*(obj.get("data") or {}), *(obj.get("binaryData") or {})}
        return Found(keys=frozenset(str(k) for k in keys))
    return Found(phase=str((obj.get("status") or {}).get("phase") or ""))


def judge(namespace: str, ref: Reference, seen: Found | None) -> Verdict:
    """Whether the kubelet can mount the source, and if not, what the owner must fix."""
    what = f"{ref.kind} {namespace}/{ref.name}"
    if ref.kind == CONFIG_MAP:
        if seen is None:
            return Verdict(
                False,
                CONFIG_MAP_NOT_FOUND,
                f"{what} ({ref.field}) not found: create it with the CSV text under key "
                f"{ref.key!r}; the ingest pod cannot start without it",
            )
        if ref.key not in seen.keys:
            has = ", ".join(repr(k) for k in sorted(seen.keys)[:10]) or "none"
            return Verdict(
                False,
                CONFIG_MAP_KEY_NOT_FOUND,
                f"{what} ({ref.field}) has no key {ref.key!r} (keys: {has}): add it or "
                "name an existing key",
            )
        return Verdict(True, FOUND, f"{what} has key {ref.key!r}")
    if seen is None:
        return Verdict(
            False,
            CLAIM_NOT_FOUND,
            f"{what} ({ref.field}) not found: create it, with the file at "
            f"{ref.sub_path!r} from its root; the ingest pod cannot start without it",
        )
    if seen.phase == "Lost":
        return Verdict(
            False,
            CLAIM_LOST,
            f"{what} ({ref.field}) is Lost (its PersistentVolume is gone): restore the "
            "volume or point the feed at another claim",
        )
    if seen.phase == "Pending":
        # Not blocking: a WaitForFirstConsumer claim binds only once the pod is scheduled.
        return Verdict(
            False,
            CLAIM_PENDING,
            f"{what} is Pending: it binds when the ingest pod is scheduled or a volume "
            "becomes available",
        )
    # The file itself (subPath) is on the volume, which only the pod can see.
    return Verdict(True, FOUND, f"{what} is {seen.phase or 'present'}")


def condition(verdict: Verdict, generation: int) -> dict[str, Any]:
    """The SourceReady condition (without lastTransitionTime: see conditions.merge)."""
    return {
        "type": SOURCE_READY,
        "status": "True" if verdict.ready else "False",
        "reason": verdict.reason,
        "message": verdict.message,
        "observedGeneration": generation,
    }
