"""One reconcile of one custom resource: build its children, apply them, report status.

Everything here is idempotent: running it twice, or after a crash half-way, converges to
the same children and the same status. Handlers (Kopf registrations) call into it; it
does not know about Kopf except to raise TemporaryError for retryable failures and to post
Kubernetes Events.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from starkmatter_operator import conditions, config, kube, metrics, reporting, sources, state
from starkmatter_operator.builders import alertrule, common

log = logging.getLogger(__name__)

# Problems that go away without a spec change, so a spec-triggered reconcile retries. (A
# missing Secret is not one: the operator cannot read Secrets, so it applies the children
# and reports what the kubelet says about their pods; see pods.py.)
RETRYABLE = frozenset({"Forbidden"}) | sources.BLOCKING
RETRY_DELAY_S = 10


def _recent(timestamp: str | None, seconds: float = 15) -> bool:
    if not timestamp:
        return False
    created = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.UTC) - created).total_seconds() < seconds


def _change(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str | None:
    if before is None:
        return "Created" if _recent(after["metadata"].get("creationTimestamp")) else None
    return "Updated" if state.spec_drifted(before, after) else None


async def _source_verdict(rt: state.Runtime, body: Mapping[str, Any]) -> sources.Verdict | None:
    """Whether a csv feed's spec.source exists (the kubelet would only tell the pod)."""
    if body["kind"] != "MarketFeed":
        return None
    ref = sources.reference(common.spec_of(body))
    if ref is None:
        return None
    namespace = common.namespace_of(body)
    obj = await rt.kube.get("v1", ref.kind, namespace, ref.name)
    return sources.judge(namespace, ref, sources.found(ref.kind, obj))


def _build(rt: state.Runtime, body: Mapping[str, Any], prometheus: bool) -> list[common.Manifest]:
    if body["kind"] == "AlertRule":
        return alertrule.build(
            body, rt.cfg, prometheus_rules=prometheus and reporting.alert_enabled(body)
        )
    return list(state.KINDS[body["kind"]].builder.build(body, rt.cfg))


async def _apply_all(
    rt: state.Runtime, body: Mapping[str, Any], manifests: list[common.Manifest], trigger: str
) -> list[str]:
    manager = alertrule.field_manager(body) if body["kind"] == "AlertRule" else config.FIELD_MANAGER

    async def one(manifest: common.Manifest) -> str | None:
        key = state.key_of(manifest)
        before = rt.observed.get(key)
        after = state.trimmed(await rt.kube.apply(manifest, manager=manager))
        state.remember(rt, after)
        change = _change(before, after)
        if change is None:
            return None
        if trigger == "child":
            change = "Restored"  # someone edited or deleted it: drift corrected
        metrics.CHILD_WRITES.labels(manifest["kind"], change).inc()
        return f"{change} {manifest['kind']} {manifest['metadata']['name']}"

    results = await asyncio.gather(*(one(m) for m in manifests))
    return [r for r in results if r]


async def _prune(
    rt: state.Runtime,
    body: Mapping[str, Any],
    info: state.KindInfo,
    manifests: list[common.Manifest],
) -> list[str]:
    wanted = {state.key_of(m) for m in manifests}
    namespace = common.namespace_of(body)
    selector = (
        f"starkmatter.io/owner-kind={str(body['kind']).lower()},"
        f"starkmatter.io/owner-name={common.name_of(body)}"
    )
    removed = []
    for api_version, kind in info.optional_children:
        if api_version == "monitoring.coreos.com/v1" and not await rt.kube.serves(
            api_version, "prometheusrules"
        ):
            continue
        for child in await rt.kube.list(api_version, kind, namespace, selector):
            owners = child["metadata"].get("ownerReferences") or []
            ours = any(o.get("uid") == body["metadata"]["uid"] for o in owners)
            child["kind"], child["apiVersion"] = kind, api_version
            if ours and state.key_of(child) not in wanted:
                await rt.kube.delete(api_version, kind, namespace, child["metadata"]["name"])
                rt.observed.pop(state.key_of(child), None)
                removed.append(f"Deleted {kind} {child['metadata']['name']} (no longer in spec)")
    return removed


async def reconcile(
    rt: state.Runtime,
    body: Mapping[str, Any],
    *,
    trigger: str,
    apply: bool = True,
    prune: bool = False,
) -> dict[str, Any]:
    """Bring one CR's children and status in line with its spec; returns the status."""
    kind = str(body["kind"])
    info = state.KINDS[kind]
    owner = state.key_of(body)
    started = time.monotonic()
    outcome = "ok"
    try:
        async with rt.lock(owner):
            # A pass that waited for the lock may hold a body from before the previous pass
            # wrote its status: start from the newest one known.
            latest = rt.owners.get(owner)
            if latest is not None and state.newer_or_same(latest, body):
                body = latest
            problem: conditions.Problem | None = None
            source: sources.Verdict | None = None
            manifests: list[common.Manifest] = []
            changes: list[str] = []
            try:
                prometheus = kind == "AlertRule" and await rt.kube.serves(
                    "monitoring.coreos.com/v1", "prometheusrules"
                )
                manifests = _build(rt, body, prometheus)
                source = await _source_verdict(rt, body)
                if source is not None and source.blocking:
                    problem = conditions.Problem(source.reason, source.message)
                elif apply:
                    changes = await _apply_all(rt, body, manifests, trigger)
                    if prune:
                        changes += await _prune(rt, body, info, manifests)
            except common.InvalidSpec as e:
                problem = conditions.Problem("InvalidSpec", f"fix the spec: {e}")
            except kube.ApiError as e:
                if e.status in (400, 403, 409, 422):
                    # The apiserver refused a child; retrying the same input cannot help.
                    reason = "Forbidden" if e.status == 403 else "ChildRejected"
                    problem = conditions.Problem(reason, e.message)
                else:
                    raise
            if problem is not None:
                outcome = problem.reason
                metrics.ERRORS.labels(kind, problem.reason).inc()
            old = dict(body.get("status") or {})
            generation = int(body["metadata"].get("generation") or 0)
            if apply:
                rt.applied[owner] = generation
            else:
                # A status-only pass has not applied this generation's spec, so it must not
                # report it as observed (a refresh can see a new spec before its apply runs);
                # nor may it report less than was applied (its cached body can predate the
                # status the apply pass wrote).
                seen = max(int(old.get("observedGeneration") or 0), rt.applied.get(owner, 0))
                seen = min(seen, generation)
                body = {**body, "metadata": {**body["metadata"], "generation": seen}}
            status = await reporting.status_for(rt, body, manifests, problem, source)
            if not conditions.same_status(old, status):
                try:
                    answer = await rt.kube.patch_status(
                        str(body["apiVersion"]), kind, owner[1], owner[2], status
                    )
                except kube.ApiError as e:
                    if e.status != 404:
                        raise
                    return status  # deleted meanwhile: nothing left to report on
                if owner in rt.owners and isinstance(answer, dict) and "metadata" in answer:
                    state.remember_owner(rt, state.owner_body(answer))
            if rt.post_event is not None and changes:
                # One Event per reconcile, saying what changed and why.
                reason = {"child": "DriftCorrected", "spec": "Applied"}.get(trigger, "Applied")
                why = (
                    "a child was edited or deleted"
                    if trigger == "child"
                    else (f"spec generation {body['metadata'].get('generation')}")
                )
                rt.post_event(body, "Normal", reason, f"{'; '.join(changes)} ({why})")
            reporting.announce(rt, body, old, status)
            if (
                problem is not None
                and problem.reason in RETRYABLE
                and trigger not in ("child", "timer")
            ):
                # Fixable outside the CR (create the ConfigMap or the claim, grant the
                # role): look again later without a spec change. The operator never crashes.
                raise kopf.TemporaryError(problem.message, delay=RETRY_DELAY_S)
            return status
    except (kube.ApiError, aiohttp.ClientError, TimeoutError) as e:
        outcome = "retry"
        metrics.ERRORS.labels(kind, type(e).__name__).inc()
        raise kopf.TemporaryError(f"will retry: {type(e).__name__}: {e}", delay=5) from e
    finally:
        metrics.RECONCILES.labels(kind, trigger, outcome).inc()
        metrics.DURATION.labels(kind).observe(time.monotonic() - started)


async def remove_alert_rule(rt: state.Runtime, body: Mapping[str, Any]) -> None:
    """Take a deleted AlertRule's key out of the shared rules ConfigMap."""
    # Under the rule's lock: a reconcile in flight cannot put the key back afterwards.
    async with rt.lock(state.key_of(body)):
        await _remove_key(rt, body)


async def _remove_key(rt: state.Runtime, body: Mapping[str, Any]) -> None:
    try:
        await rt.kube.apply(
            alertrule.rules_config_map(rt.cfg, {}), manager=alertrule.field_manager(body)
        )
    except kube.ApiError as e:
        if e.status != 404:
            raise kopf.TemporaryError(f"will retry: {e}", delay=5) from e
