from __future__ import annotations

import datetime

from starkmatter_operator import peering

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


def peer(priority: int, seconds_ago: int, lifetime: int = 60) -> dict[str, object]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_a_live_peer_with_a_higher_priority_outranks_this_replica():
    assert peering.outranked({"a": peer(10, 5), "b": peer(99, 5)}, 10, NOW)


def test_a_lower_priority_or_expired_peer_does_not():
    status = {"a": peer(10, 5), "b": peer(5, 5), "c": peer(99, 120)}
    assert not peering.outranked(status, 10, NOW)


def test_malformed_peer_records_are_ignored():
    assert not peering.outranked({"a": "junk", "b": {"priority": 50}}, 10, NOW)
