"""A MarketFeed's status from its heartbeat hash: the fields, and a csv feed's ReplayFinished
condition, decided without Redis or an API server."""

from __future__ import annotations

from starkmatter_operator import conditions, heartbeat, replays

REPLAYING = {
    b"last_tick_ts": b"2026-12-03T06:00:00.250000Z",
    b"ticks_per_s": b"812.0",
    b"rejected_per_s": b"0.0",
    b"updated_ts": b"2026-12-03T06:00:01.000000Z",
    b"accepted_total": b"4000",
    b"rejected_total": b"0",
}
# What the worker writes once the file is stored: it stays up idle, ticks/s drops to 0.
FINISHED = {
    **REPLAYING,
    b"ticks_per_s": b"0.0",
    b"updated_ts": b"2026-12-03T06:05:00.000000Z",
    b"replay_finished_ts": b"2026-12-03T06:00:02.731904Z",
}


def beat(raw):
    parsed = heartbeat.parse(raw)
    assert parsed is not None
    return parsed


def test_a_finished_replay_sets_replay_finished_time_in_rfc3339():
    fields = replays.status_fields(beat(FINISHED), {})
    assert fields == {
        "lastTickTime": "2026-12-03T06:00:00Z",
        "ticksPerSecond": 0.0,
        "rejectedPerSecond": 0.0,
        "replayFinishedTime": "2026-12-03T06:00:02Z",
    }


def test_a_finished_replay_is_reported_as_finished_not_as_a_stopped_feed():
    cond = replays.condition("aapl-backfill", beat(FINISHED), None, 3)
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "ReplayFinished",
        "True",
        "ReplayFinished",
    )
    assert cond["observedGeneration"] == 3
    assert "replayed and stored at 2026-12-03T06:00:02Z" in cond["message"]
    assert "no new ticks are expected" in cond["message"]


def test_a_replay_in_progress_is_not_finished():
    assert "replayFinishedTime" not in replays.status_fields(beat(REPLAYING), {})
    cond = replays.condition("aapl-backfill", beat(REPLAYING), None, 1)
    assert (cond["status"], cond["reason"]) == ("False", "Replaying")


def test_no_heartbeat_yet_is_unknown_and_names_the_redis_key():
    cond = replays.condition("aapl-backfill", None, None, 1)
    assert (cond["status"], cond["reason"]) == ("Unknown", "NoHeartbeat")
    assert "feed:heartbeat:aapl-backfill" in cond["message"]
    assert heartbeat.parse({}) is None


def test_an_unreadable_heartbeat_keeps_what_was_known():
    old_conditions = conditions.merge(
        None,
        [replays.condition("aapl-backfill", beat(FINISHED), None, 2)],
        "2026-12-03T06:00:03Z",
    )
    old_status = {"replayFinishedTime": "2026-12-03T06:00:02Z", "ticksPerSecond": 0.0}
    assert replays.status_fields(None, old_status) == old_status
    cond = replays.condition("aapl-backfill", None, old_conditions, 2)
    assert (cond["status"], cond["reason"]) == ("True", "ReplayFinished")
    # Merged again, the condition has not transitioned.
    (merged,) = conditions.merge(old_conditions, [cond], "2026-12-03T06:10:00Z")
    assert merged["lastTransitionTime"] == "2026-12-03T06:00:03Z"


def test_a_heartbeat_field_that_is_missing_keeps_its_last_value():
    old_status = {"lastTickTime": "2026-12-03T05:59:00Z", "ticksPerSecond": 2.0}
    fields = replays.status_fields(beat({b"rejected_per_s": b"0.5"}), old_status)
    assert fields == {
        "lastTickTime": "2026-12-03T05:59:00Z",
        "ticksPerSecond": 2.0,
        "rejectedPerSecond": 0.5,
    }


def test_a_replay_running_again_removes_the_previous_finish_time():
    old_status = {"lastTickTime": "2026-12-03T05:59:00Z", "replayFinishedTime": "x"}
    fields = replays.status_fields(beat({b"ticks_per_s": b"1.5"}), old_status)
    # null in the status merge patch deletes the field
    assert fields["replayFinishedTime"] is None
    assert fields["lastTickTime"] == "2026-12-03T05:59:00Z"
    # An unreadable heartbeat still keeps it.
    assert replays.status_fields(None, old_status)["replayFinishedTime"] == "x"
    # Nothing to remove: the field stays absent (no status write for nothing).
    assert "replayFinishedTime" not in replays.status_fields(beat({b"ticks_per_s": b"1"}), {})


def test_text_and_offset_timestamps_parse_like_the_workers_bytes():
    parsed = beat({"replay_finished_ts": "2026-12-03T07:00:02.9+01:00"})
    assert parsed.replay_finished_time == "2026-12-03T06:00:02Z"
    assert beat({"replay_finished_ts": "not a time"}).replay_finished_time is None
