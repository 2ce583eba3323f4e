"""One reconcile of one custom resource: build its children, apply them, report status.

Everything here is idempotent: running it twice, or after a crash half-way, converges to
the same children and the same status. Handlers (Kopf registrations) call into it; it
does not know about Kopf except to raise TemporaryError for retryable failures and to post
Kubernetes Events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

import aiohttp
import kopf

from starkmatter_operator import (
    conditions,
    config,
    evaluator,
    heartbeat,
    kube,
    metrics,
    peering,
    reports,
)
from starkmatter_operator.builders import alertrule, common, marketfeed, newssource, retentionpolicy

log = logging.getLogger(__name__)

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
# Problems that go away without a spec change, so a spec-triggered reconcile retries.
RETRYABLE = frozenset({"SecretMissing", "Forbidden"})
RETRY_DELAY_S = 10
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


def _recent(timestamp: str | None, seconds: float = 15) -> bool:
    if not timestamp:
        return False
    created = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.UTC) - created).total_seconds() < seconds


def _change(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str | None:
    if before is None:
        return "Created" if _recent(after["metadata"].get("creationTimestamp")) else None
    return "Updated" if spec_drifted(before, after) else None


async def _missing_secrets(rt: Runtime, body: Mapping[str, Any], info: KindInfo) -> list[str]:
    namespace = common.namespace_of(body)
    problems = []
    for ref in info.builder.required_secrets(body, rt.cfg):
        secret = await rt.secret(namespace, ref.name)
        if secret is None:
            problems.append(
                f"Secret {namespace}/{ref.name} ({ref.field}) not found: create it"
                + (f" with key {ref.key!r}" if ref.key else "")
                + " or point the reference at an existing Secret"
            )
        elif ref.key and ref.key not in (secret.get("data") or {}):
            problems.append(
                f"Secret {namespace}/{ref.name} ({ref.field}) has no key {ref.key!r}: add it"
            )
    return problems


def _build(rt: Runtime, body: Mapping[str, Any], prometheus: bool) -> list[common.Manifest]:
    if body["kind"] == "AlertRule":
        return alertrule.build(body, rt.cfg, prometheus_rules=prometheus and _alert_enabled(body))
    return list(KINDS[body["kind"]].builder.build(body, rt.cfg))


def _alert_enabled(body: Mapping[str, Any]) -> bool:
    return bool(common.spec_of(body).get("enabled", True))


async def _apply_all(
    rt: Runtime, body: Mapping[str, Any], manifests: list[common.Manifest], trigger: str
) -> list[str]:
    manager = alertrule.field_manager(body) if body["kind"] == "AlertRule" else config.FIELD_MANAGER

    async def one(manifest: common.Manifest) -> str | None:
        key = key_of(manifest)
        before = rt.observed.get(key)
        after = trimmed(await rt.kube.apply(manifest, manager=manager))
        remember(rt, after)
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
    rt: Runtime, body: Mapping[str, Any], info: KindInfo, manifests: list[common.Manifest]
) -> list[str]:
    wanted = {key_of(m) for m in manifests}
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
            if ours and key_of(child) not in wanted:
                await rt.kube.delete(api_version, kind, namespace, child["metadata"]["name"])
                rt.observed.pop(key_of(child), None)
                removed.append(f"Deleted {kind} {child['metadata']['name']} (no longer in spec)")
    return removed


def _children(rt: Runtime, manifests: list[common.Manifest], kind: str) -> list[dict[str, Any]]:
    out = []
    for m in manifests:
        if m["kind"] == kind:
            seen = rt.observed.get(key_of(m))
            out.append(seen if seen is not None else {**m, "status": {}})
    return out


async def _status(
    rt: Runtime,
    body: Mapping[str, Any],
    manifests: list[common.Manifest],
    problem: conditions.Problem | None,
) -> dict[str, Any]:
    kind = body["kind"]
    spec = common.spec_of(body)
    generation = int(body["metadata"].get("generation") or 0)
    deployments = _children(rt, manifests, "Deployment")
    health = conditions.deployment_health(deployments)
    extra: dict[str, Any] = {}
    ready_message = ""
    old = dict(body.get("status") or {})
    if kind == "MarketFeed":
        extra["symbolCount"] = len(spec.get("symbols") or [])
        extra["replicas"] = health.desired
        extra["readyReplicas"] = health.ready
        for field in ("lastTickTime", "ticksPerSecond", "rejectedPerSecond"):
            if field in old:
                extra[field] = old[field]
        if rt.heartbeats is not None:
            beat = await rt.heartbeats.feed(common.name_of(body))
            if beat is not None:
                for field, value in (
                    ("lastTickTime", beat.last_tick_time),
                    ("ticksPerSecond", beat.ticks_per_second),
                    ("rejectedPerSecond", beat.rejected_per_second),
                ):
                    if value is not None:
                        extra[field] = value
    elif kind in ("NewsSource", "RetentionPolicy"):
        cronjobs = _children(rt, manifests, "CronJob")
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
            extra, health = await _archive_outcome(rt, body, old, extra, health)
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
            firing = states.get(alertrule.rule_name(body), False) and _alert_enabled(body)
            if firing and not old.get("firing"):
                extra["lastFiredTime"] = conditions.now_iso()
            extra["firing"] = firing
    new_conditions = conditions.compute(generation, health, problem, ready_message=ready_message)
    return {
        "observedGeneration": generation,
        "conditions": conditions.merge(old.get("conditions"), new_conditions, conditions.now_iso()),
        **extra,
    }


async def _archive_outcome(
    rt: Runtime,
    body: Mapping[str, Any],
    old: Mapping[str, Any],
    extra: dict[str, Any],
    health: conditions.Health,
) -> tuple[dict[str, Any], conditions.Health]:
    """Last run, rows archived and failures, from the policy's Jobs (manual runs too)."""
    namespace, name = common.namespace_of(body), common.name_of(body)
    jobs = [
        job
        for (kind, ns, _), job in list(rt.observed.items())
        if kind == "Job" and ns == namespace and job["metadata"].get("owner") == name
    ]
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
        extra["lastJob"] = job_name
        rows = await reports.job_rows_archived(rt.kube, namespace, job_name)
        if rows is not None:
            extra["rowsArchived"] = rows
    return extra, health


def _announce(
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


async def reconcile(
    rt: Runtime, body: Mapping[str, Any], *, trigger: str, apply: bool = True, prune: bool = False
) -> dict[str, Any]:
    """Bring one CR's children and status in line with its spec; returns the status."""
    kind = str(body["kind"])
    info = KINDS[kind]
    owner = key_of(body)
    started = time.monotonic()
    outcome = "ok"
    try:
        async with rt.lock(owner):
            problem: conditions.Problem | None = None
            manifests: list[common.Manifest] = []
            changes: list[str] = []
            try:
                prometheus = kind == "AlertRule" and await rt.kube.serves(
                    "monitoring.coreos.com/v1", "prometheusrules"
                )
                manifests = _build(rt, body, prometheus)
                missing = await _missing_secrets(rt, body, info)
                if missing:
                    problem = conditions.Problem("SecretMissing", "; ".join(missing))
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
            status = await _status(rt, body, manifests, problem)
            old = dict(body.get("status") or {})
            if not conditions.same_status(old, status):
                try:
                    await rt.kube.patch_status(
                        str(body["apiVersion"]), kind, owner[1], owner[2], status
                    )
                except kube.ApiError as e:
                    if e.status != 404:
                        raise
                    return status  # deleted meanwhile: nothing left to report on
                if owner in rt.owners:
                    rt.owners[owner] = {**rt.owners[owner], "status": status}
            if rt.post_event is not None and changes:
                # One Event per reconcile, saying what changed and why.
                reason = {"child": "DriftCorrected", "spec": "Applied"}.get(trigger, "Applied")
                why = (
                    "a child was edited or deleted"
                    if trigger == "child"
                    else (f"spec generation {body['metadata'].get('generation')}")
                )
                rt.post_event(body, "Normal", reason, f"{'; '.join(changes)} ({why})")
            _announce(rt, body, old, status)
            if (
                problem is not None
                and problem.reason in RETRYABLE
                and trigger not in ("child", "timer")
            ):
                # Fixable outside the CR (create the Secret, grant the role): look again
                # later without a spec change. Kopf backs off; the operator never crashes.
                raise kopf.TemporaryError(problem.message, delay=RETRY_DELAY_S)
            return status
    except (kube.ApiError, aiohttp.ClientError, TimeoutError) as e:
        outcome = "retry"
        metrics.ERRORS.labels(kind, type(e).__name__).inc()
        raise kopf.TemporaryError(f"will retry: {type(e).__name__}: {e}", delay=5) from e
    finally:
        metrics.RECONCILES.labels(kind, trigger, outcome).inc()
        metrics.DURATION.labels(kind).observe(time.monotonic() - started)


async def remove_alert_rule(rt: Runtime, body: Mapping[str, Any]) -> None:
    """Take a deleted AlertRule's key out of the shared rules ConfigMap."""
    try:
        await rt.kube.apply(
            alertrule.rules_config_map(rt.cfg, {}), manager=alertrule.field_manager(body)
        )
    except kube.ApiError as e:
        if e.status != 404:
            raise kopf.TemporaryError(f"will retry: {e}", delay=5) from e


@dataclasses.dataclass(frozen=True)
class Pass:
    """What a pending reconcile must do; two requests for one owner merge into one."""

    apply: bool = False
    prune: bool = False
    spec: bool = False  # a new spec (or first look after start), rather than a child event

    def __or__(self, other: Pass) -> Pass:
        return Pass(self.apply or other.apply, self.prune or other.prune, self.spec or other.spec)


class Debouncer:
    """Collapses a burst of events into one reconcile per owner, and retries failures."""

    def __init__(self, delay: float, run: Callable[[Key, Pass], Awaitable[None]]) -> None:
        self._delay = delay
        self._run = run
        self._pending: dict[Key, Pass] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def poke(self, owner: Key, work: Pass, *, delay: float | None = None) -> None:
        if owner in self._pending:
            self._pending[owner] = self._pending[owner] | work
            return
        self._pending[owner] = work
        task = asyncio.get_running_loop().create_task(
            self._later(owner, self._delay if delay is None else delay)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, owner: Key, delay: float) -> None:
        await asyncio.sleep(delay)
        work = self._pending.pop(owner)
        try:
            await self._run(owner, work)
        except kopf.TemporaryError as e:
            # The apiserver is busy, or the fix lies outside the CR (a Secret): look again.
            log.info("event=reconcile.retry owner=%s reason=%s", "/".join(owner), e)
            self.poke(owner, work, delay=e.delay or RETRY_DELAY_S)
        except Exception:
            log.exception("event=reconcile.failed owner=%s", "/".join(owner))

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def refresh_periodically(rt: Runtime) -> None:
    """Refresh what no watch event announces: feed heartbeats, alert states, and the
    shared alert-rules ConfigMap (not watched, so re-applied to correct drift).

    One loop for all objects rather than a Kopf timer per object: timers would also make
    Kopf put a finalizer on every resource.
    """
    limit = asyncio.Semaphore(8)

    async def one(body: dict[str, Any]) -> None:
        async with limit:
            try:
                await reconcile(rt, body, trigger="timer", apply=body["kind"] == "AlertRule")
            except kopf.TemporaryError as e:
                log.warning("event=refresh.failed owner=%s error=%s", "/".join(key_of(body)), e)
            except Exception:
                # One bad object must not stop the refresh of all the others.
                log.exception("event=refresh.failed owner=%s", "/".join(key_of(body)))

    while True:
        await asyncio.sleep(rt.cfg.status_interval_s)
        try:
            if not await peering.active(rt.kube, rt.cfg.peering, rt.cfg.priority):
                continue  # a peer with a higher priority does the work
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("event=refresh.skipped error=%s", type(e).__name__)
            continue
        bodies = [
            b
            for b in list(rt.owners.values())
            if b["kind"] == "AlertRule" or (b["kind"] == "MarketFeed" and rt.heartbeats)
        ]
        await asyncio.gather(*(one(b) for b in bodies))
