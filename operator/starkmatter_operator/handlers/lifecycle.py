"""Start-up, login, probes and clean-up of the operator process."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from starkmatter_operator import (
    config,
    debouncing,
    evaluator,
    heartbeat,
    kube,
    metrics,
    reconciling,
    state,
)
from starkmatter_operator.handlers import children

log = logging.getLogger(__name__)
_login: list[kopf.ConnectionInfo] = []


def _credentials() -> kube.Credentials:
    if not _login:
        raise RuntimeError("not logged in to the Kubernetes API yet")
    info = _login[-1]
    context: Any = False if info.insecure else info.as_ssl_context()
    return kube.Credentials(server=info.server.rstrip("/"), token=info.token, ssl_context=context)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # In a pod: the service account; elsewhere (tests, a laptop): the kubeconfig.
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        _login.append(info)
    return info


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # The CRDs' status schemas are strict, so Kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=config.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=config.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{config.GROUP}/operator"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # Kopf keeps one worker (task, queue, last body) per object until it has been idle this
    # long. Our event handlers return at once, so a short idle time keeps the number of
    # live workers, and so peak memory, low when hundreds of objects change together.
    settings.queueing.idle_timeout = 0.5
    # Children are watched with the label as a server-side selector, so the apiserver sends
    # only the operator's own objects (not every ConfigMap, Deployment and Job in the
    # cluster) and the operator neither parses nor keeps the rest.
    for api_version, plural in children.CHILD_RESOURCES:
        group, _sep, version = api_version.rpartition("/")
        settings.watching.label_selectors[(group, version, plural)] = children.SELECTOR
    cfg = config.OperatorConfig.from_env()
    settings.peering.lifetime = cfg.peering_lifetime_s
    client = kube.Kube(
        _credentials, connections=cfg.api_connections, discovery_ttl_s=cfg.discovery_ttl_s
    )
    reader = heartbeat.Reader(cfg.redis_url) if cfg.redis_url else None

    def post_event(body: Any, kind: str, reason: str, message: str) -> None:
        try:
            kopf.event(body, type=kind, reason=reason, message=message[:1000])
            metrics.EVENTS.labels(kind, reason).inc()
        except LookupError:
            # Only tasks started inside Kopf's handlers can post; never fail a reconcile.
            log.warning("event=event.unposted reason=%s", reason)

    scraper = evaluator.Scraper(cfg.alerts_metrics_url) if cfg.alerts_metrics_url else None
    runtime = state.Runtime(cfg, client, reader, scraper, post_event=post_event)
    memo.runtime = runtime
    memo.debouncer = debouncing.Debouncer(
        cfg.debounce_s, _reconcile_owner(runtime), concurrency=cfg.reconcile_concurrency
    )
    memo.refresher = None  # started by the first resource event, see resources.py
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    log.info("event=operator.started image=%s", cfg.image)


def _reconcile_owner(rt: state.Runtime) -> Any:
    async def run(owner: state.Key, work: debouncing.Pass) -> None:
        kind, namespace, name = owner
        body = rt.owners.get(owner)
        if body is None:
            body = await rt.kube.get(config.API_VERSION, kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return  # being deleted: garbage collection removes the children
        await reconciling.reconcile(
            rt,
            body,
            trigger="spec" if work.spec else "child",
            apply=work.apply,
            prune=work.prune,
        )

    return run


@kopf.on.probe(id="children")
def children_seen(memo: kopf.Memo, **_: Any) -> int:
    runtime = getattr(memo, "runtime", None)
    return len(runtime.observed) if runtime is not None else 0


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    runtime: state.Runtime | None = getattr(memo, "runtime", None)
    if runtime is None:
        return
    if memo.refresher is not None:
        memo.refresher.cancel()
    await memo.debouncer.drain()
    await runtime.kube.close()
    if runtime.heartbeats is not None:
        await runtime.heartbeats.close()
