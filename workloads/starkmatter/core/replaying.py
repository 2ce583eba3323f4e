"""Replay across gateway replicas: updates numbered by Redis, kept in a stream per topic.

Pub/sub gives a message no identity, so one replica cannot tell where another replica's
client stood. A publisher that wants SSE clients to resume on *any* replica publishes
through :func:`publish` (one ``EVALSHA`` instead of ``PUBLISH``). The script, atomically
in Redis:

* takes the next value of a clock global to the Redis server: microseconds since the
  epoch, strictly increasing (one past the last value when two publishes share a
  microsecond, and still increasing if the clock key is lost);
* appends the payload to the topic's stream ``replay:{topic}`` with that number as its id,
  trimming what is older than ``WINDOW_US`` (``MINID ~``: never less than the window);
* publishes ``RS number RS payload`` (RS = 0x1E) on the topic's channel.

Because the number and the publish are one atomic step, every replica's subscriber sees
the numbers in increasing order, in the same order as everything else it receives. A
gateway tags each SSE event with the highest number it has seen so far (its *clock*): a
client holding that event has every numbered update, of each of its topics, up to it.
Reconnecting anywhere with ``Last-Event-ID``, it gets, per topic, the stream's entries
after that clock (:data:`RESUME_LUA`, which also checks atomically that none of them can
have been trimmed), or a fresh snapshot when they cannot all be given.

A topic is replayable only while *every* publisher of it uses :func:`publish`: an update
sent with a plain ``PUBLISH`` is delivered live but is not in the stream, so a replay
would skip it. Market data is not published this way (it is state, a snapshot loses
nothing, and the fan-out hot path stays one ``PUBLISH`` per tick).

Needs Redis 6.2 (``XADD ... MINID``, exclusive ``XRANGE``). The clock is one key for the
whole server: on Redis Cluster the scripts would need the clock and the streams in one
slot (hash tags), which only one shard could then carry.
"""

from __future__ import annotations

import redis.asyncio as aioredis

WINDOW_US = 120_000_000
"""How long updates stay replayable (2 minutes): far longer than an EventSource takes to
reconnect (``retry: 1000``), short enough that the streams stay small."""

MAX_REPLAY = 1_000
"""More missed updates than this on one topic get a snapshot instead of a replay."""

CLOCK_KEY = "replay:clock"

MARK = b"\x1e"
"""Record separator in front of a numbered payload: ``RS number RS payload``."""

PUBLISH_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') + 1, now)
local id = string.format('%d', n)
redis.call('SET', KEYS[1], id)
redis.call('XADD', KEYS[2], 'MINID', '~', string.format('%d', n - tonumber(ARGV[3])),
           id .. '-0', 'd', ARGV[2])
return redis.call('PUBLISH', ARGV[1], '\\030' .. id .. '\\030' .. ARGV[2])
"""
"""KEYS: clock, stream; ARGV: channel, payload, window (us). Returns PUBLISH's count."""

RESUME_LUA = """
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
local after = tonumber(ARGV[1])
local clock = tonumber(redis.call('GET', KEYS[1]) or '0')
if after > clock or after < clock - tonumber(ARGV[2]) then return false end
return redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[3])
"""
"""KEYS: clock, stream; ARGV: after, window (us), count. The entries after ``after``,
or false: the topic is not published through :func:`publish` (no stream), or ``after``
is not a number this Redis issued within the window (trimmed, or another data set)."""


def stream_key(topic: str) -> str:
    return "replay:" + topic


async def publish(redis: aioredis.Redis, topic: str, payload: bytes | str) -> int:
    """``PUBLISH topic payload``, numbered and kept for replay; returns the receiver count.

    For publishers of event-like topics (alerts, orders, portfolio, news, AI analyses).
    Their subscribers other than the gateway receive ``RS number RS payload`` and get the
    payload back with :func:`split`.
    """
    script = redis.register_script(PUBLISH_LUA)
    count = await script(keys=[CLOCK_KEY, stream_key(topic)], args=[topic, payload, WINDOW_US])
    return int(count)


async def queue_publish(pipe: aioredis.client.Pipeline, topic: str, payload: bytes | str) -> None:
    """:func:`publish` as one more command of ``pipe`` (sent when the pipeline executes)."""
    script = pipe.register_script(PUBLISH_LUA)
    await script(keys=[CLOCK_KEY, stream_key(topic)], args=[topic, payload, WINDOW_US], client=pipe)


def split(payload: bytes) -> tuple[int | None, bytes]:
    """(number, payload) of a message published by :func:`publish`; (None, it) otherwise."""
    if payload[:1] != MARK:
        return None, payload
    end = payload.find(MARK, 1)
    number = payload[1:end]
    if end < 0 or not number.isdigit():
        return None, payload
    return int(number), payload[end + 1 :]


async def missed(redis: aioredis.Redis, topic: str, after: int) -> list[tuple[int, bytes]] | None:
    """The updates of ``topic`` numbered after ``after``, oldest first; None when they
    cannot all be given (not a replayable topic, out of the window, or too many)."""
    script = redis.register_script(RESUME_LUA)
    reply = await script(
        keys=[CLOCK_KEY, stream_key(topic)], args=[after, WINDOW_US, MAX_REPLAY + 1]
    )
    if reply is None or len(reply) > MAX_REPLAY:
        return None
    entries = []
    for entry_id, fields in reply:
        number = _text(entry_id).split("-", 1)[0]
        values = {_text(k): v for k, v in zip(fields[::2], fields[1::2], strict=True)}
        data = values.get("d", b"")
        entries.append((int(number), data.encode() if isinstance(data, str) else data))
    return entries


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
