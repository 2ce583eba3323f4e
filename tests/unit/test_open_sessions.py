"""What an API process remembers of open sessions, and when it stops trusting it."""

from __future__ import annotations

import time

from starkmatter.core.auth import sessions


def _following(ttl_s: float) -> sessions.OpenSessions:
    remembered = sessions.OpenSessions(ttl_s)
    remembered.on_message({"type": "subscribe", "channel": b"sessions:revoked", "data": 1})
    return remembered


def test_nothing_is_trusted_while_revocations_cannot_be_heard():
    remembered = sessions.OpenSessions(30.0)
    remembered.remember("s1", "u1", remembered.generation())
    assert remembered.owner("s1") is None


def test_a_remembered_session_names_its_user_until_the_bound():
    remembered = _following(0.05)
    remembered.remember("s1", "u1", remembered.generation())
    assert remembered.owner("s1") == "u1"
    time.sleep(0.06)
    assert remembered.owner("s1") is None


def test_a_revocation_is_forgotten_at_once():
    remembered = _following(30.0)
    remembered.remember("s1", "u1", remembered.generation())
    remembered.remember("s2", "u2", remembered.generation())
    remembered.forget("s1")
    assert remembered.owner("s1") is None
    assert remembered.owner("s2") == "u2"


def test_an_answer_read_before_a_revocation_is_not_remembered():
    # Redis said "open", then the revocation arrived before the answer was stored.
    remembered = _following(30.0)
    asked_at = remembered.generation()
    remembered.forget("s1")
    remembered.remember("s1", "u1", asked_at)
    assert remembered.owner("s1") is None


def test_a_revocation_message_forgets_every_session_it_names():
    remembered = _following(30.0)
    for sid in ("s1", "s2", "s3"):
        remembered.remember(sid, "u", remembered.generation())
    remembered.on_message({"type": "message", "channel": b"sessions:revoked", "data": b"s1 s3"})
    assert [remembered.owner(s) for s in ("s1", "s2", "s3")] == [None, "u", None]


def test_a_health_check_pong_keeps_what_is_remembered():
    remembered = _following(30.0)
    remembered.remember("s1", "u1", remembered.generation())
    remembered.on_message({"type": "pong", "channel": None, "data": b"redis-py-health-check"})
    assert remembered.owner("s1") == "u1"


def test_a_new_subscription_confirmation_forgets_everything():
    # The client reconnected on its own: revocations sent meanwhile were not heard.
    remembered = _following(30.0)
    remembered.remember("s1", "u1", remembered.generation())
    remembered.on_message({"type": "subscribe", "channel": b"sessions:revoked", "data": 1})
    assert remembered.owner("s1") is None
    remembered.remember("s1", "u1", remembered.generation())
    assert remembered.owner("s1") == "u1"


def test_unsubscribed_nothing_is_trusted():
    remembered = _following(30.0)
    remembered.remember("s1", "u1", remembered.generation())
    remembered.on_message({"type": "unsubscribe", "channel": b"sessions:revoked", "data": 0})
    remembered.remember("s2", "u2", remembered.generation())
    assert remembered.owner("s1") is None
    assert remembered.owner("s2") is None


def test_a_zero_bound_never_remembers():
    remembered = _following(0.0)
    remembered.remember("s1", "u1", remembered.generation())
    assert remembered.owner("s1") is None
