"""The periodic refresh of status that no watch event announces."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import kopf

from starkmatter_operator import conditions, peering, pods, reconciling, reporting, sources
from starkmatter_operator.state import Runtime, key_of

log = logging.getLogger(__name__)


async def refresh_periodically(rt: Runtime) -> None:
    """Refresh what no watch event announces: feed heartbeats, alert states, the
    shared alert-rules ConfigMap (not watched, so re-applied to correct drift), whether
    a csv feed's ConfigMap or claim exists (not watched either: the operator would have to
    watch every ConfigMap in the cluster), and why a CR's pods do not start (the kubelet
    says so in pod status, and pods are not watched either).

    One loop for all objects rather than a Kopf timer per object: timers would also make
    Kopf put a finalizer on every resource.
    """
    limit = asyncio.Semaphore(8)

    async def one(body: dict[str, Any]) -> None:
        async with limit:
            try:
                await reconciling.reconcile(
                    rt, body, trigger="timer", apply=body["kind"] == "AlertRule"
                )
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
            # An object being deleted is left alone: re-applying a deleted AlertRule would
            # put its key back into the evaluator's ConfigMap.
            if not b["metadata"].get("deletionTimestamp")
            and (
                b["kind"] == "AlertRule"
                or (b["kind"] == "MarketFeed" and _refreshed(rt, b))
                or _waiting(rt, b)
            )
        ]
        await asyncio.gather(*(one(b) for b in bodies))


def _refreshed(rt: Runtime, feed: dict[str, Any]) -> bool:
    return rt.heartbeats is not None or sources.reference(feed.get("spec") or {}) is not None


# Ready=False reasons that the pods may explain (or stop explaining): not the problems a
# status-only pass cannot see again, such as a child the apiserver refused.
_POD_REASONS = frozenset({"RollingOut", pods.SECRET_MISSING, pods.CONFIG_ERROR})


def _waiting(rt: Runtime, body: dict[str, Any]) -> bool:
    """Rolling out, or running a Job: its pods may wait on something only they tell."""
    status = body.get("status") or {}
    ready = conditions.find(status.get("conditions"), conditions.READY)
    if ready is not None and ready.get("status") != "True":
        return ready.get("reason") in _POD_REASONS
    return any((job.get("status") or {}).get("active") for job in reporting.owner_jobs(rt, body))
