"""Process-wide state shared by the handlers, and the kinds the operator serves."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from starkmatter_operator import config, evaluator, heartbeat, kube
from starkmatter_operator.builders import alertrule, marketfeed, newssource, retentionpolicy

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclasses.dataclass(frozen=True)
class KindInfo:
    plural: str
    builder: ModuleType
    # Child kinds that a spec change can make unnecessary, so they are pruned.
    optional_children: tuple[tuple[str, str], ...]


KINDS: dict[str, KindInfo] = {
    "MarketFeed": KindInfo(
        "marketfeeds", marketfeed, (("autoscaling/v2", "HorizontalPodAutoscaler"),)
    ),
    "NewsSource": KindInfo(
        "newssources", newssource, (("batch/v1", "CronJob"), ("apps/v1", "Deployment"))
    ),
    "RetentionPolicy": KindInfo("retentionpolicies", retentionpolicy, ()),
    "AlertRule": KindInfo(
        "alertrules", alertrule, (("monitoring.coreos.com/v1", "PrometheusRule"),)
    ),
}
# Kinds whose spec changes bump metadata.generation; others are compared by resourceVersion.
GENERATION_KINDS = frozenset({"Deployment", "CronJob", "HorizontalPodAutoscaler"})


@dataclasses.dataclass
class Runtime:
    """Process-wide state shared by every handler."""

    cfg: config.OperatorConfig
    kube: kube.Kube
    heartbeats: heartbeat.Reader | None = None
    alerts: evaluator.Scraper | None = None
    # The latest version of every child seen (from watch events and apply answers).
    observed: dict[Key, dict[str, Any]] = dataclasses.field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = dataclasses.field(default_factory=dict)
    post_event: Callable[[Mapping[str, Any], str, str, str], None] | None = None
    # The latest body of every custom resource, from Kopf's own watch (no extra requests).
    owners: dict[Key, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # The generation each CR was last handed to a reconcile (so one spec goes once).
    seen: dict[Key, Any] = dataclasses.field(default_factory=dict)
    # The generation whose children this process last applied, per CR: a status-only pass
    # reports it, whatever an older cached body's status says.
    applied: dict[Key, int] = dataclasses.field(default_factory=dict)
    # Secret look-ups, briefly cached: hundreds of CRs in one namespace share a few Secrets.
    secrets: dict[tuple[str, str], tuple[float, Any]] = dataclasses.field(default_factory=dict)
    secret_ttl_s: float = 5.0

    def lock(self, key: Key) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    async def secret(self, namespace: str, name: str) -> Any:
        now = time.monotonic()
        cached = self.secrets.get((namespace, name))
        if cached is not None and now - cached[0] < self.secret_ttl_s:
            return cached[1]
        found = await self.kube.get("v1", "Secret", namespace, name)
        # Only the key names are kept: values never stay in the operator's memory.
        keys = None if found is None else {"data": dict.fromkeys(found.get("data") or {}, "")}
        self.secrets[(namespace, name)] = (now, keys)
        return keys


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (str(obj["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))


def trimmed(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What status and drift detection need from a child; the rest is not kept in memory."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "generation": meta.get("generation"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "owner": (meta.get("labels") or {}).get("starkmatter.io/owner-name"),
        },
        "spec": {"replicas": spec["replicas"]} if "replicas" in spec else {},
        "status": obj.get("status") or {},
    }


def _revision(obj: Mapping[str, Any]) -> int:
    text = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
    return int(text) if text.isdigit() else 0


def remember(rt: Runtime, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Keep the newest version of a child; returns the one it replaced.

    An apply answer and a watch event can arrive in either order: the older one must not
    overwrite the newer (a stale "not rolled out yet" would then stick forever).
    """
    key = key_of(obj)
    before = rt.observed.get(key)
    after = trimmed(obj)
    if before is None or _revision(after) >= _revision(before):
        rt.observed[key] = after
    return before


def spec_drifted(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    if after.get("kind") in GENERATION_KINDS:
        return bool(before["metadata"].get("generation") != after["metadata"].get("generation"))
    return bool(
        before["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion")
    )
