"""The four custom resources: a spec change (or the operator starting) reconciles them."""

from __future__ import annotations

from typing import Any

import kopf

from starkmatter_operator import config, reconciling

STATUS_INTERVAL_S = config.OperatorConfig.from_env().status_interval_s


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion", config.API_VERSION),
        "kind": body["kind"],
        "metadata": dict(body["metadata"]),
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


async def _on_spec(body: kopf.Body, reason: str, memo: Any, **_: Any) -> None:
    await reconciling.reconcile(
        memo.runtime,
        _plain(body),
        trigger=str(reason),
        # A new object has nothing stale to prune; an update or a restart may have.
        prune=reason != kopf.Reason.CREATE.value,
    )


async def _remember(body: kopf.Body, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    runtime: reconciling.Runtime | None = getattr(memo, "runtime", None)
    if runtime is None:
        return
    plain = _plain(body)
    key = reconciling.key_of(plain)
    if event.get("type") == "DELETED":
        runtime.owners.pop(key, None)
    else:
        runtime.owners[key] = plain


async def _on_timer(body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime: reconciling.Runtime = memo.runtime
    if body["kind"] == "AlertRule":
        # The shared rules ConfigMap is not watched: re-applying it corrects drift cheaply.
        await reconciling.reconcile(runtime, _plain(body), trigger="timer", apply=True)
    elif runtime.heartbeats is not None:
        await reconciling.reconcile(runtime, _plain(body), trigger="timer", apply=False)


for _kind, _info in reconciling.KINDS.items():
    _resource = (config.GROUP, config.VERSION, _info.plural)
    kopf.on.create(*_resource, id=f"{_info.plural}-create")(_on_spec)
    kopf.on.update(*_resource, id=f"{_info.plural}-update")(_on_spec)
    kopf.on.resume(*_resource, id=f"{_info.plural}-resume")(_on_spec)
    kopf.on.event(*_resource, id=f"{_info.plural}-remember")(_remember)
    if _kind in ("MarketFeed", "AlertRule"):
        kopf.timer(
            *_resource,
            id=f"{_info.plural}-status",
            interval=STATUS_INTERVAL_S,
            initial_delay=STATUS_INTERVAL_S,
        )(_on_timer)


@kopf.on.delete(config.GROUP, config.VERSION, "alertrules", id="alertrules-delete")
async def alert_rule_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Children in the rule's namespace go by garbage collection; the shared ConfigMap key
    # lives in another namespace and has to be removed by hand.
    await reconciling.remove_alert_rule(memo.runtime, _plain(body))
