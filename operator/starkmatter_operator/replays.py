"""What a MarketFeed's status says about its data plane, from the feed heartbeat, without I/O.

``heartbeat.Reader`` reads ``feed:heartbeat:{feed}`` (docs/contracts.md); these functions
decide the status fields and, for a csv feed, the ReplayFinished condition. A csv replay
ends: once the file is stored the ingest worker writes ``replay_finished_ts`` and stays up
idle, so ticks/s drops to 0 and lastTickTime stops moving. The condition says so, so that a
finished backfill reads as finished, not as a feed that stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starkmatter_operator import conditions, heartbeat

REPLAY_FINISHED = "ReplayFinished"

# Stable reasons (a client may switch on them).
FINISHED = "ReplayFinished"
REPLAYING = "Replaying"
NO_HEARTBEAT = "NoHeartbeat"

# Status fields that come from the heartbeat; each keeps its last known value when the
# heartbeat cannot be read (Redis down must not blank the status) or lacks it, except
# replayFinishedTime: a heartbeat without it is a replay running again (the worker deletes
# it when a replay starts), so the old finish time is removed (null in the merge patch).
FIELDS = ("lastTickTime", "ticksPerSecond", "rejectedPerSecond", "replayFinishedTime")


def status_fields(beat: heartbeat.FeedHeartbeat | None, old: Mapping[str, Any]) -> dict[str, Any]:
    """The heartbeat's part of a MarketFeed's status."""
    out = {field: old[field] for field in FIELDS if field in old}
    if beat is None:
        return out
    for field, value in (
        ("lastTickTime", beat.last_tick_time),
        ("ticksPerSecond", beat.ticks_per_second),
        ("rejectedPerSecond", beat.rejected_per_second),
        ("replayFinishedTime", beat.replay_finished_time),
    ):
        if value is not None:
            out[field] = value
    if beat.replay_finished_time is None and "replayFinishedTime" in out:
        out["replayFinishedTime"] = None
    return out


def condition(
    feed: str,
    beat: heartbeat.FeedHeartbeat | None,
    old_conditions: Sequence[Mapping[str, Any]] | None,
    generation: int,
) -> dict[str, Any]:
    """The ReplayFinished condition of a csv feed (without lastTransitionTime: see
    conditions.merge). Only a csv feed replays, so only a csv feed has it."""
    if beat is None:
        before = conditions.find(old_conditions, REPLAY_FINISHED)
        if before is not None:
            # An unreadable heartbeat says nothing new: keep what was known.
            return {
                key: before[key]
                for key in ("type", "status", "reason", "message", "observedGeneration")
                if key in before
            }
        return _condition(
            "Unknown",
            NO_HEARTBEAT,
            f"no heartbeat from the ingest worker in Redis (feed:heartbeat:{feed}) yet",
            generation,
        )
    if beat.replay_finished_time is not None:
        return _condition(
            "True",
            FINISHED,
            f"the file was replayed and stored at {beat.replay_finished_time}; the ingest "
            "worker stays up idle (no restart, no second replay), so no new ticks are "
            "expected and lastTickTime stays where the replay ended",
            generation,
        )
    return _condition(
        "False",
        REPLAYING,
        "replaying the file: ticksPerSecond and lastTickTime show its progress",
        generation,
    )


def _condition(status: str, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": REPLAY_FINISHED,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }
