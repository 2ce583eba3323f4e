"""The four custom resources: a spec change (or the operator starting) reconciles them."""

from __future__ import annotations

from typing import Any

import kopf

from starkmatter_operator import config, reconciling


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


for _info in reconciling.KINDS.values():
    _resource = (config.GROUP, config.VERSION, _info.plural)
    kopf.on.create(*_resource, id=f"{_info.plural}-create")(_on_spec)
    kopf.on.update(*_resource, id=f"{_info.plural}-update")(_on_spec)
    kopf.on.resume(*_resource, id=f"{_info.plural}-resume")(_on_spec)
    kopf.on.event(*_resource, id=f"{_info.plural}-remember")(_remember)


@kopf.on.delete(config.GROUP, config.VERSION, "alertrules", id="alertrules-delete")
async def alert_rule_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Children in the rule's namespace go by garbage collection; the shared ConfigMap key
    # lives in another namespace and has to be removed by hand.
    await reconciling.remove_alert_rule(memo.runtime, _plain(body))
