"""Watches the children the operator made: a change or deletion by anyone else is put
back (drift correction), and their status (ready pods, last run) flows into the owner's."""

from __future__ import annotations

from typing import Any

import kopf

from starkmatter_operator import config, debouncing, state

CHILD_RESOURCES = [
    ("v1", "configmaps"),
    ("v1", "services"),
    ("apps/v1", "deployments"),
    ("batch/v1", "cronjobs"),
    # Jobs are made by the CronJob controller from our template (labels included): their
    # outcome is the RetentionPolicy's last run.
    ("batch/v1", "jobs"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
    ("monitoring.coreos.com/v1", "prometheusrules"),
]
OWNER_KINDS = {kind.lower(): kind for kind in state.KINDS}
MANAGED = {"app.kubernetes.io/managed-by": config.MANAGED_BY}
SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED.items())


async def on_child(event: kopf.RawEvent, resource: kopf.Resource, memo: Any, **_: Any) -> None:
    raw: Any = event["object"]
    obj = dict(raw)
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner_kind = OWNER_KINDS.get(str(labels.get("starkmatter.io/owner-kind", "")))
    owner_name = labels.get("starkmatter.io/owner-name")
    if owner_kind is None or not owner_name:
        return
    runtime: state.Runtime = memo.runtime
    obj["kind"] = resource.kind
    obj["apiVersion"] = f"{resource.group}/{resource.version}" if resource.group else "v1"
    child = state.key_of(obj)
    if event.get("type") == "DELETED":
        runtime.observed.pop(child, None)
        # A deleted child is put back; a Job is not ours to restore (history clean-up).
        apply = resource.plural != "jobs"
    else:
        before = state.remember(runtime, obj)
        after = runtime.observed[child]
        apply = before is not None and state.spec_drifted(before, after)
    memo.debouncer.poke((owner_kind, child[1], str(owner_name)), debouncing.Pass(apply=apply))


for _api_version, _plural in CHILD_RESOURCES:
    _group, _, _version = _api_version.rpartition("/")
    kopf.on.event(
        _group,
        _version,
        _plural,
        labels=MANAGED,
        id=f"child-{_plural}",
    )(on_child)
