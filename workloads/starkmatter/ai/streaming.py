"""What an analysis stream carries, and its snapshot: everything sent so far, in one value.

Each event published on ``ai:analysis:{requestId}`` is numbered (``seq``, from 1). Beside
the channel the service keeps the stream's accumulated state in ``snapshot:{channel}``,
the key the gateway sends as a topic's first frame, written in the same Redis transaction
as each event. A client that subscribes late therefore gets the text so far, the status
and, once there is one, the final result; an update may also be in that snapshot (it can
arrive between the gateway's SUBSCRIBE and its read), and the client drops any update
whose ``seq`` is not above the snapshot's. Pure: no I/O here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

Status = Literal["pending", "streaming", "retrying", "done", "failed"]


def channel(request_id: str) -> str:
    return f"ai:analysis:{request_id}"


def snapshot_key(request_id: str) -> str:
    """Where the gateway looks for the topic's snapshot (``gateway.topics.snapshot_key``)."""
    return "snapshot:" + channel(request_id)


@dataclasses.dataclass
class StreamState:
    """The fold of every event published so far on one analysis stream."""

    seq: int = 0
    status: Status = "pending"
    attempt: int = 1
    partial_json: str = ""
    """The forced tool's input as streamed so far (JSON, possibly incomplete)."""
    text: str = ""
    """Free text the model streamed (none with a forced tool, kept for completeness)."""
    final: dict[str, Any] | None = None
    """The ``result`` or ``error`` event that ended the stream, exactly as it was sent."""

    def add(self, event: dict[str, Any]) -> dict[str, Any]:
        """Number ``event``, fold it into the state, and return it as it must be sent."""
        self.seq += 1
        numbered = {**event, "seq": self.seq}
        kind = event["type"]
        if kind == "delta":
            self.status = "streaming"
            self.partial_json += event.get("partial_json", "")
            self.text += event.get("text", "")
        elif kind == "retry":
            # A new attempt streams its answer from the start: what came before is void.
            self.status = "retrying"
            self.attempt = int(event["attempt"])
            self.partial_json = ""
            self.text = ""
        elif kind == "result":
            self.status = "done"
            self.final = numbered
        elif kind == "error":
            self.status = "failed"
            self.final = numbered
        else:
            raise ValueError(f"unknown stream event type {kind!r}")
        return numbered

    def snapshot(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "status": self.status,
            "attempt": self.attempt,
            "partial_json": self.partial_json,
            "text": self.text,
            "final": self.final,
        }


CACHED_SNAPSHOT_PREFIX = (
    '{"seq":1,"status":"done","attempt":1,"partial_json":"","text":"",'
    '"final":{"type":"result","seq":1,"cached":true,'
)
"""A cached answer's snapshot up to its outcome's fields: Redis appends the stored outcome
(an object, without its opening brace) and one closing brace, so the hit path never has to
decode and re-encode the answer to keep the snapshot."""


def cached_snapshot(outcome_json: str) -> str:
    """What the cache-hit script writes, in Python (the same concatenation)."""
    if not outcome_json.startswith("{"):
        raise ValueError("a stored outcome is a JSON object")
    return CACHED_SNAPSHOT_PREFIX + outcome_json[1:] + "}"


def result_event(outcome: dict[str, Any], *, cached: bool) -> dict[str, Any]:
    return {"type": "result", "cached": cached, **outcome}


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))
