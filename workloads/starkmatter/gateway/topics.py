"""Topic names, who may subscribe to them, and where their snapshot lives."""

from __future__ import annotations

import re

from starkmatter.core.auth import tokens

_SYMBOL = r"[A-Z0-9][A-Z0-9.\-/]{0,23}"
_ID = r"[A-Za-z0-9_\-]{1,64}"
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("market", re.compile(rf"market:(quotes|depth):{_SYMBOL}")),
    ("own", re.compile(rf"(portfolio|alerts|orders):{_ID}")),
    ("news", re.compile(rf"news:{_ID}")),
    ("ai", re.compile(rf"ai:analysis:{_ID}")),
]


class Refused(Exception):
    """A subscription the principal may not have; ``code`` is the error frame's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def kind(topic: str) -> str:
    """``market`` | ``own`` | ``news`` | ``ai``; raises :class:`Refused` for unknown topics."""
    if len(topic) > 128:
        raise Refused("unknown_topic", "topic name too long")
    for name, pattern in _PATTERNS:
        if pattern.fullmatch(topic):
            return name
    raise Refused("unknown_topic", f"no such topic: {topic[:64]}")


def ai_owner_key(request_id: str) -> str:
    """Redis string holding the id of the user who asked for an AI analysis.

    Written by the AI service when it accepts a request; without it nobody may subscribe.
    """
    return f"ai:owner:{request_id}"


def authorize(topic: str, principal: tokens.Principal, ai_owner: str | None = None) -> str:
    """The topic's kind if ``principal`` may subscribe; :class:`Refused` otherwise.

    Market data and news are open to every signed-in user; portfolio, alerts and orders
    only to their owner; an AI analysis only to the user who requested it (``ai_owner``).
    """
    topic_kind = kind(topic)
    if topic_kind == "own" and topic.split(":", 1)[1] != principal.user_id:
        raise Refused("forbidden", f"{topic.split(':', 1)[0]} of another user")
    if topic_kind == "ai" and ai_owner != principal.user_id:
        raise Refused("forbidden", "analysis requested by another user")
    return topic_kind


def private(topic: str) -> bool:
    """Whether the topic may be granted only to one user (own data, an AI analysis)."""
    return topic.startswith(("portfolio:", "alerts:", "orders:", "ai:"))


def snapshot_key(topic: str) -> str:
    """Redis key of the topic's latest state.

    ``quote:{S}`` and ``depth:{S}`` for market data; ``snapshot:{topic}`` for the others, a
    key their publisher may keep (the snapshot is ``null`` when it does not).
    """
    if topic.startswith("market:quotes:"):
        return "quote:" + topic[len("market:quotes:") :]
    if topic.startswith("market:depth:"):
        return "depth:" + topic[len("market:depth:") :]
    return "snapshot:" + topic


def conflatable(topic: str) -> bool:
    """Market data may be conflated to the latest value for a slow client; nothing else may."""
    return topic.startswith("market:")
