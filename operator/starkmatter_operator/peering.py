"""Whether this replica is the active one among its Kopf peers.

Kopf pauses its own watches when a peer with a higher priority is alive; work the
operator starts by itself (the periodic status refresh) must pause the same way, so it
reads the same peering record with the same rule.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from starkmatter_operator import kube


def outranked(status: Mapping[str, Any], priority: int, now: datetime.datetime) -> bool:
    """A live peer with a higher priority exists (Kopf's own rule for pausing)."""
    for peer in status.values():
        if not isinstance(peer, Mapping):
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(peer["lastseen"]))
            lifetime = datetime.timedelta(seconds=int(peer.get("lifetime", 60)))
            rank = int(peer.get("priority", 0))
        except (KeyError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if seen + lifetime > now and rank > priority:
            return True
    return False


async def active(client: kube.Kube, name: str | None, priority: int) -> bool:
    if not name:
        return True  # standalone
    try:
        record = await client.request("GET", f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}")
    except kube.ApiError:
        return True  # no record: Kopf itself then runs as if alone
    return not outranked(record.get("status") or {}, priority, datetime.datetime.now(datetime.UTC))
