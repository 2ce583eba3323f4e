"""Process-wide state shared by the handlers, and the kinds the operator serves."""

from __future__ import annotations

import asyncio
import dataclasses
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

    def lock(self, key: Key) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())


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


# Bulky metadata the operator never reads; dropped so that hundreds of cached bodies stay small.
_UNUSED_METADATA = ("managedFields",)
_UNUSED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def owner_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A custom resource as the operator keeps it: plain dicts, without bulky metadata."""
    metadata = {k: v for k, v in body["metadata"].items() if k not in _UNUSED_METADATA}
    if metadata.get("annotations"):
        metadata["annotations"] = {
            k: v for k, v in metadata["annotations"].items() if k not in _UNUSED_ANNOTATIONS
        }
    return {
        "apiVersion": body.get("apiVersion", config.API_VERSION),
        "kind": body["kind"],
        "metadata": metadata,
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def remember_owner(rt: Runtime, body: dict[str, Any]) -> dict[str, Any]:
    """Keep the newest version of a custom resource; returns the one kept.

    The answer to our own status write can be newer than watch events still on their way:
    an older event must not bring back an older status (the next pass would then write the
    same status again and announce the same change twice).
    """
    key = key_of(body)
    before = rt.owners.get(key)
    if before is None or _revision(body) >= _revision(before):
        rt.owners[key] = body
        return body
    return before


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


def newer_or_same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return _revision(a) >= _revision(b)


def spec_drifted(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    if after.get("kind") in GENERATION_KINDS:
        return bool(before["metadata"].get("generation") != after["metadata"].get("generation"))
    return bool(
        before["metadata"].get("resourceVersion") != after["metadata"].get("resourceVersion")
    )
