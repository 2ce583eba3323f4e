"""Status of a custom resource, computed from what its children and the data plane say."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from starkmatter_operator import conditions, kube, pods, replays, reports, sources, state
from starkmatter_operator.builders import alertrule, common
from starkmatter_operator.state import Runtime, key_of

log = logging.getLogger(__name__)


def alert_enabled(body: Mapping[str, Any]) -> bool:
    return bool(common.spec_of(body).get("enabled", True))


def children(rt: Runtime, manifests: list[common.Manifest], kind: str) -> list[dict[str, Any]]:
    out = []
    for m in manifests:
        if m["kind"] == kind:
            seen = rt.observed.get(key_of(m))
            out.append(seen if seen is not None else {**m, "status": {}})
    return out


async def status_for(
    rt: Runtime,
    body: Mapping[str, Any],
    manifests: list[common.Manifest],
    problem: conditions.Problem | None,
    source: sources.Verdict | None = None,
) -> dict[str, Any]:
    kind = body["kind"]
    spec = common.spec_of(body)
    generation = int(body["metadata"].get("generation") or 0)
    deployments = children(rt, manifests, "Deployment")
    health = conditions.deployment_health(deployments)
    extra: dict[str, Any] = {}
    replay: dict[str, Any] | None = None  # a csv feed's ReplayFinished condition
    ready_message = ""
    old = dict(body.get("status") or {})
    if kind == "MarketFeed":
        extra["symbolCount"] = len(spec.get("symbols") or [])
        extra["replicas"] = health.desired
        extra["readyReplicas"] = health.ready
        beat = None
        if rt.heartbeats is not None:
            beat = await rt.heartbeats.feed(common.name_of(body))
            if spec.get("provider") == "csv":
                replay = replays.condition(
                    common.name_of(body), beat, old.get("conditions"), generation
                )
        extra |= replays.status_fields(beat, old)
    elif kind in ("NewsSource", "RetentionPolicy"):
        cronjobs = children(rt, manifests, "CronJob")
        for cj in cronjobs:
            st = cj.get("status") or {}
            last, ok = st.get("lastScheduleTime"), st.get("lastSuccessfulTime")
            if kind == "NewsSource":
                extra |= {"lastFetchTime": last} if last else {}
                extra |= {"lastSuccessfulFetchTime": ok} if ok else {}
            else:
                extra |= {"lastRunTime": last} if last else {}
                extra |= {"lastSuccessfulRunTime": ok} if ok else {}
                extra["activeJobs"] = len(st.get("active") or [])
            suspended = bool(spec.get("suspend", False))
            ready_message = (
                "suspended" if suspended else f"scheduled {spec.get('schedule', '')}".strip()
            )
        if kind == "RetentionPolicy":
            extra, health = await archive_outcome(rt, body, old, extra, health)
        if kind == "NewsSource" and deployments:
            extra["readyReplicas"] = health.ready
    elif kind == "AlertRule":
        extra["prometheusRule"] = any(m["kind"] == "PrometheusRule" for m in manifests)
        ready_message = (
            f"delivered to the alert evaluator (ConfigMap {rt.cfg.alerts_namespace}/"
            f"{rt.cfg.alerts_configmap}, key {alertrule.rule_key(body)})"
        )
        for field in ("firing", "lastFiredTime"):
            if field in old:
                extra[field] = old[field]
        states = await rt.alerts.firing() if rt.alerts is not None else None
        if states is not None:
            firing = states.get(alertrule.rule_name(body), False) and alert_enabled(body)
            if firing and not old.get("firing"):
                extra["lastFiredTime"] = conditions.now_iso()
            extra["firing"] = firing
    if problem is None and waits_on_pods(rt, body, health):
        stuck = await pods_blocked(rt, body)
        if stuck is not None:
            # The cause, more precise than "not ready" or a progress deadline.
            health = dataclasses.replace(
                health, failure_reason=stuck.reason, failure_message=stuck.message
            )
    new_conditions = conditions.compute(generation, health, problem, ready_message=ready_message)
    if source is not None:
        new_conditions.append(sources.condition(source, generation))
    if replay is not None:
        new_conditions.append(replay)
    return {
        "observedGeneration": generation,
        "conditions": conditions.merge(old.get("conditions"), new_conditions, conditions.now_iso()),
        **extra,
    }


def owner_jobs(rt: Runtime, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The CR's Jobs (made by its CronJob, or by hand from it), as last seen by the watch."""
    namespace, name = common.namespace_of(body), common.name_of(body)
    return [
        job
        for (kind, ns, _), job in list(rt.observed.items())
        if kind == "Job" and ns == namespace and job["metadata"].get("owner") == name
    ]


def waits_on_pods(rt: Runtime, body: Mapping[str, Any], health: conditions.Health) -> bool:
    """Whether some of the CR's pods are not running yet, so the kubelet may be saying why.

    Only then are its pods listed: a healthy CR costs no extra request.
    """
    if body["kind"] not in state.KINDS or body["kind"] == "AlertRule":
        return False
    if health.ready < health.desired:
        return True
    return any((job.get("status") or {}).get("active") for job in owner_jobs(rt, body))


async def pods_blocked(rt: Runtime, body: Mapping[str, Any]) -> pods.Blocked | None:
    """What the kubelet says keeps the CR's containers from being created, if anything."""
    kind, namespace = str(body["kind"]), common.namespace_of(body)
    selector = (
        f"starkmatter.io/owner-kind={kind.lower()},starkmatter.io/owner-name={common.name_of(body)}"
    )
    try:
        found = await rt.kube.list("v1", "Pod", namespace, selector)
    except kube.ApiError as e:
        # Best effort: without the pods the conditions still say what the workloads say.
        log.info("event=pods.unreadable namespace=%s status=%s", namespace, e.status)
        return None
    live = [p for p in found if not (p.get("metadata") or {}).get("deletionTimestamp")]
    refs = state.KINDS[kind].builder.required_secrets(body, rt.cfg)
    return pods.blocked(namespace, refs, pods.config_errors(live))


async def archive_outcome(
    rt: Runtime,
    body: Mapping[str, Any],
    old: Mapping[str, Any],
    extra: dict[str, Any],
    health: conditions.Health,
) -> tuple[dict[str, Any], conditions.Health]:
    """Last run, rows archived and failures, from the policy's Jobs (manual runs too)."""
    namespace = common.namespace_of(body)
    jobs = owner_jobs(rt, body)
    for field in ("rowsArchived", "lastJob"):
        if field in old:
            extra[field] = old[field]
    latest = reports.latest_finished(jobs)
    if latest is None:
        return extra, health
    job_name = str(latest["metadata"]["name"])
    status = latest.get("status") or {}
    started = status.get("startTime")
    if started and started > str(extra.get("lastRunTime", "")):
        extra["lastRunTime"] = started
    why = reports.failed(latest)
    if why is not None:
        message = f"archival Job {job_name} failed ({why}); see kubectl logs job/{job_name}"
        return extra, dataclasses.replace(
            health, failure_reason="ArchiveFailed", failure_message=message
        )
    done = status.get("completionTime")
    if done and done > str(extra.get("lastSuccessfulRunTime", "")):
        extra["lastSuccessfulRunTime"] = done
    if old.get("lastJob") != job_name:
        try:
            rows = await reports.job_rows_archived(rt.kube, namespace, job_name)
        except kube.ApiError as e:
            # Left for the next pass (lastJob unchanged), which reads the pods again.
            log.info("event=archive_report.unreadable job=%s status=%s", job_name, e.status)
            return extra, health
        extra["lastJob"] = job_name
        if rows is not None:
            extra["rowsArchived"] = rows
        elif "rowsArchived" in extra:
            # A count from an earlier run must not pass for this one's (this run's pod is
            # gone, or an image from before the termination-message summary ran it): null
            # removes it in the merge patch.
            extra["rowsArchived"] = None
    return extra, health


def announce(
    rt: Runtime, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]
) -> None:
    if rt.post_event is None:
        return
    was_ready = conditions.find(old.get("conditions"), conditions.READY)
    is_ready = conditions.find(new.get("conditions"), conditions.READY)
    degraded = conditions.find(new.get("conditions"), conditions.DEGRADED)
    was_degraded = conditions.find(old.get("conditions"), conditions.DEGRADED)
    if (
        degraded
        and degraded["status"] == "True"
        and (
            not was_degraded
            or was_degraded.get("status") != "True"
            or was_degraded.get("message") != degraded.get("message")
        )
    ):
        rt.post_event(body, "Warning", str(degraded["reason"]), str(degraded["message"]))
    elif (
        is_ready
        and is_ready["status"] == "True"
        and (not was_ready or was_ready.get("status") != "True")
    ):
        rt.post_event(body, "Normal", "Ready", str(is_ready["message"]))
    replay = conditions.find(new.get("conditions"), replays.REPLAY_FINISHED)
    was_replay = conditions.find(old.get("conditions"), replays.REPLAY_FINISHED)
    if (
        replay is not None
        and replay["status"] == "True"
        and (was_replay is None or was_replay.get("status") != "True")
    ):
        rt.post_event(body, "Normal", str(replay["reason"]), str(replay["message"]))
    source = conditions.find(new.get("conditions"), sources.SOURCE_READY)
    was_source = conditions.find(old.get("conditions"), sources.SOURCE_READY)
    if source is None or (
        was_source is not None
        and (was_source.get("status"), was_source.get("message"))
        == (source["status"], source["message"])
    ):
        return
    if source["status"] == "False" and not (
        degraded and degraded["status"] == "True" and degraded["reason"] == source["reason"]
    ):
        # Not already said by the Degraded event above (a claim still Pending, say).
        rt.post_event(body, "Warning", str(source["reason"]), str(source["message"]))
    elif source["status"] == "True" and was_source is not None:
        rt.post_event(body, "Normal", str(source["reason"]), str(source["message"]))
