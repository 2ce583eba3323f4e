from __future__ import annotations

import json
from typing import Any

import pytest

from starkmatter.ai import streaming


def test_events_are_numbered_and_folded_into_the_snapshot() -> None:
    state = streaming.StreamState()
    sent = [
        state.add({"type": "delta", "partial_json": '{"summ'}),
        state.add({"type": "delta", "partial_json": 'ary": "x"}'}),
    ]
    assert [e["seq"] for e in sent] == [1, 2]
    snap = state.snapshot()
    assert snap["seq"] == 2 and snap["status"] == "streaming"
    assert snap["partial_json"] == '{"summary": "x"}'
    assert snap["final"] is None


def test_a_retry_voids_what_the_failed_attempt_streamed() -> None:
    state = streaming.StreamState()
    state.add({"type": "delta", "partial_json": '{"half'})
    state.add({"type": "retry", "attempt": 2, "wait_s": 0.1})
    snap = state.snapshot()
    assert snap["status"] == "retrying" and snap["attempt"] == 2
    assert snap["partial_json"] == "" and snap["seq"] == 2


def test_the_final_result_is_kept_exactly_as_it_was_sent() -> None:
    state = streaming.StreamState()
    state.add({"type": "delta", "partial_json": "{}"})
    result = state.add(streaming.result_event({"source": "offline", "result": {}}, cached=False))
    assert state.snapshot()["final"] == result
    assert state.snapshot()["status"] == "done"
    failed = streaming.StreamState()
    error = failed.add({"type": "error", "code": "internal"})
    assert failed.snapshot()["status"] == "failed" and failed.snapshot()["final"] == error


def test_unknown_event_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown stream event"):
        streaming.StreamState().add({"type": "surprise"})


def test_a_cached_answers_snapshot_is_valid_json_with_the_stored_outcome_as_final() -> None:
    outcome: dict[str, Any] = {"source": "anthropic", "model": "m", "result": {}, "label": None}
    snap = json.loads(streaming.cached_snapshot(streaming.dumps(outcome)))
    assert snap["status"] == "done" and snap["seq"] == 1
    assert snap["final"] == streaming.result_event(outcome, cached=True) | {"seq": 1}


def test_the_snapshot_key_is_the_one_the_gateway_reads_for_the_topic() -> None:
    from starkmatter.gateway import topics

    assert streaming.snapshot_key("abc") == topics.snapshot_key(streaming.channel("abc"))
