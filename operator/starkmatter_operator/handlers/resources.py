"""The four custom resources: a new spec (or the operator starting) reconciles them."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from starkmatter_operator import config, debouncing, reconciling, refreshing, state


async def _on_event(body: kopf.Body, event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """Every event of a custom resource: keep its latest body, and reconcile when its
    spec is one the status has not caught up with.

    The spec's generation against status.observedGeneration is the whole bookkeeping, so
    Kopf keeps no annotations on the objects: a spec change costs no extra writes, and
    after a restart (or a crash mid-reconcile) every object is simply looked at again.
    """
    runtime: state.Runtime | None = getattr(memo, "runtime", None)
    if runtime is None:
        return
    plain = state.owner_body(body)
    key = state.key_of(plain)
    if event.get("type") == "DELETED":
        runtime.owners.pop(key, None)
        runtime.seen.pop(key, None)
        runtime.applied.pop(key, None)
        return
    state.remember_owner(runtime, plain)
    if memo.refresher is None:
        # Started from inside a handler so that it inherits Kopf's context (Event posting).
        memo.refresher = asyncio.get_running_loop().create_task(
            refreshing.refresh_periodically(runtime)
        )
    if plain["metadata"].get("deletionTimestamp"):
        return
    generation = plain["metadata"].get("generation")
    observed = plain["status"].get("observedGeneration")
    first_sight = key not in runtime.seen
    if first_sight or (generation != observed and runtime.seen.get(key) != generation):
        runtime.seen[key] = generation
        # A brand-new object has nothing stale to prune; anything else may have.
        brand_new = generation == 1 and observed is None
        memo.debouncer.poke(key, debouncing.Pass(apply=True, prune=not brand_new, spec=True))


for _info in state.KINDS.values():
    _resource = (config.GROUP, config.VERSION, _info.plural)
    kopf.on.event(*_resource, id=f"{_info.plural}-events")(_on_event)


@kopf.on.delete(config.GROUP, config.VERSION, "alertrules", id="alertrules-delete")
async def alert_rule_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # Children in the rule's namespace go by garbage collection; the shared ConfigMap key
    # lives in another namespace and has to be removed by hand.
    plain = state.owner_body(body)
    memo.runtime.owners.pop(state.key_of(plain), None)  # nothing may re-apply it now
    await reconciling.remove_alert_rule(memo.runtime, plain)
