"""The gateway server (``starkmatter gateway``): ``/ws``, ``/sse`` and health.

One asyncio protocol per TCP connection reads the HTTP request with the ``websockets``
sans-I/O parser, then either upgrades to WebSocket (``/ws``), streams Server-Sent Events
(``/sse``) or answers a plain request (``/healthz``, ``/readyz``). Owning the transport
lets fan-out write one pre-encoded frame to every socket without a task switch per client,
and see backpressure (``pause_writing``) to conflate for slow clients. ``/metrics`` is
served only on the probe listener (``core.probes``, ``STARKMATTER_METRICS_PORT``), never
on the port clients reach.

WebSocket protocol (JSON text frames):

* client: ``{"op": "auth", "token": JWT}`` (unless ``?token=`` was given),
  ``{"op": "subscribe", "topics": [...]}``, ``{"op": "unsubscribe", "topics": [...]}``,
  ``{"op": "ping"}``; ``auth`` again on an open connection, with a fresh token of the
  same user, extends the connection to that token's expiry;
* server: ``{"type": "snapshot" | "update", "topic", "data"}``,
  ``{"type": "error", "code", "message", "topic"?}``, ``{"type": "heartbeat", "ts"}``.
  On shutdown the server closes with 1012 (service restart): reconnect and resubscribe.
  When the login ends (logout, session revoked, token expired: :mod:`.revoking`) the
  server sends an error ``session_revoked`` or ``token_expired`` and closes with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions
from websockets import frames as ws_frames
from websockets import http11
from websockets import server as ws_server

from starkmatter.core import errors, heap, logs, loops, probes
from starkmatter.core.auth import tokens
from starkmatter.gateway import connections, fanout, metrics, revoking, topics

log = logs.get_logger(__name__)

SSE_RETRY_MS = 1_000
"""Reconnect delay an SSE client is told to use (``retry:``)."""

Authenticate = Callable[[str], Awaitable[tokens.Principal]]
"""Verifies a JWT (signature, claims, open session); raises ``errors.Unauthenticated``."""


BEAT_SLICES = 50
"""Heartbeat ticks per ``heartbeat_s``: each tick beats one slice of the clients."""

WS_PING = b"\x89\x00"
"""A server ping frame with no payload (unmasked, final)."""

INBOX_HIGH = 64
"""Client frames read but not yet handled at which the gateway stops reading the socket."""
INBOX_LOW = 16
"""... and at which it reads again."""


def ws_text_frame(body: bytes) -> bytes:
    """An unmasked, unfragmented server text frame (identical for every client)."""
    size = len(body)
    if size < 126:
        return bytes((0x81, size)) + body
    if size < 65_536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + body
    return b"\x81\x7f" + size.to_bytes(8, "big") + body


def _json(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class WebSocketClient(connections.Client):
    transport_name = "ws"

    def __init__(self, transport: asyncio.Transport, limits: connections.Limits,
                 protocol: ws_server.ServerProtocol) -> None:  # fmt: skip
        super().__init__(transport, limits)
        self.protocol = protocol
        self.last_pong = time.monotonic()

    def encode(self, body: bytes, event_id: str | None = None) -> bytes:
        return ws_text_frame(body)

    def flush_protocol(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            else:
                self.transport.close()

    def close(self, code: int, reason: str) -> None:
        if self.state in (connections.ConnectionState.CLOSING, connections.ConnectionState.CLOSED):
            return
        self.transition(connections.ConnectionState.CLOSING)
        with contextlib.suppress(Exception):
            self.protocol.send_close(code, reason)
        self.flush_protocol()
        # A client that does not read will not answer the close: cut it after a grace period.
        asyncio.get_running_loop().call_later(2.0, self.transport.abort)


_SSE_CLOSE_CODES = {1012: "restarting", 1011: "unavailable"}


class SseClient(connections.Client):
    transport_name = "sse"

    def encode(self, body: bytes, event_id: str | None = None) -> bytes:
        kind = body[9 : body.index(b'"', 9)] if body.startswith(b'{"type":"') else b"message"
        head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
        return head + b"event: " + kind + b"\ndata: " + body + b"\n\n"

    def close(self, close_code: int, reason: str) -> None:
        if self.state in (connections.ConnectionState.CLOSING, connections.ConnectionState.CLOSED):
            return
        self.transition(connections.ConnectionState.CLOSING)
        # The WebSocket close code, as the stable error code an SSE client can switch on.
        code = _SSE_CLOSE_CODES.get(close_code, reason)
        self.transport.write(self.encode(_json({"type": "error", "code": code, "message": reason})))
        self.transport.close()
        asyncio.get_running_loop().call_later(2.0, self.transport.abort)


class _Connection(asyncio.Protocol):
    """One TCP connection: HTTP request -> WebSocket, SSE, or a plain response."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.Transport | None = None
        self.protocol = ws_server.ServerProtocol(max_size=gateway.limits.max_message_bytes)
        self.client: connections.Client | None = None
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.lost = False
        """The socket has closed: a set-up still awaiting something must not go on."""
        self.reading_paused = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.gateway.sockets.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.gateway.sockets.discard(self)
        client = self.client
        if client is not None:
            if client.state is not connections.ConnectionState.CLOSED:
                client.state = connections.ConnectionState.CLOSED
                metrics.CONNECTIONS.labels(transport=client.transport_name).dec()
            self.gateway.clients.discard(client)
            self.gateway.logins.discard(client)
            self.gateway.spawn(self.gateway.hub.drop(client))
        self.inbox.put_nowait(None)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_writing()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_writing()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if isinstance(self.client, SseClient):
            return  # an SSE client has nothing more to say
        self.protocol.receive_data(data)
        events = self.protocol.events_received()
        if self.client is None:
            if self.protocol.handshake_exc is not None:
                self._respond(400, b"bad request\n")
                return
            for event in events:
                if isinstance(event, http11.Request):
                    self._route(event)
                    return
            return
        client = self.client
        assert isinstance(client, WebSocketClient)
        for event in events:
            if not isinstance(event, ws_frames.Frame):
                continue
            if event.opcode is ws_frames.Opcode.TEXT:
                self.inbox.put_nowait(bytes(event.data).decode("utf-8", "replace"))
                if self.inbox.qsize() >= INBOX_HIGH and not self.reading_paused:
                    # A client that sends faster than its frames are handled is slowed by
                    # TCP, instead of filling the gateway's memory.
                    self.transport.pause_reading()
                    self.reading_paused = True
            elif event.opcode is ws_frames.Opcode.BINARY:
                self.gateway.refuse(client, "bad_request", "binary frames are not supported")
            elif event.opcode is ws_frames.Opcode.PONG:
                client.last_pong = time.monotonic()
        client.flush_protocol()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        if isinstance(self.client, WebSocketClient):
            self.client.flush_protocol()
        return None

    # routing
    def _respond(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        assert self.transport is not None
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  503: "Service Unavailable"}.get(status, "Error")  # fmt: skip
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()

    def _route(self, request: http11.Request) -> None:
        url = urllib.parse.urlsplit(request.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/healthz":
            self._respond(200, b"ok\n")
        elif url.path == "/readyz":
            ready = self.gateway.hub.ready and not self.gateway.closing
            self._respond(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        elif url.path == "/ws":
            self._upgrade(request, query)
        elif url.path == "/sse":
            self.gateway.spawn(self._sse(request, query))
        else:
            self._respond(404, b"not found\n")

    def _token(self, request: http11.Request, query: dict[str, list[str]]) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        values = query.get("token")
        return values[0] if values else None

    def _upgrade(self, request: http11.Request, query: dict[str, list[str]]) -> None:
        assert self.transport is not None
        if self.gateway.closing:
            self._respond(503, b"shutting down\n")
            return
        response = self.protocol.accept(request)
        if response.status_code != 101:
            self.protocol.send_response(response)
            for data in self.protocol.data_to_send():
                if data:
                    self.transport.write(data)
            self.transport.close()
            return
        client = WebSocketClient(self.transport, self.gateway.limits, self.protocol)
        token = self._token(request, query)
        self.worker = self.gateway.spawn(self._serve_ws(client, response, token))

    async def _serve_ws(
        self, client: WebSocketClient, response: http11.Response, token: str | None
    ) -> None:
        gateway = self.gateway
        if token is not None:
            try:
                client.principal = await gateway.authenticate(token)
            except errors.Unauthenticated as exc:
                metrics.REFUSALS.labels(code=exc.code).inc()
                self._respond(401, exc.code.encode() + b"\n")
                return
        self.protocol.send_response(response)
        client.flush_protocol()
        self.client = client
        gateway.clients.add(client)
        metrics.CONNECTIONS.labels(transport="ws").inc()
        client.transition(
            connections.ConnectionState.OPEN
            if client.principal is not None
            else connections.ConnectionState.UNAUTHENTICATED
        )
        if client.principal is not None:
            gateway.logins.add(client)
        if client.principal is None:
            deadline = asyncio.get_running_loop().call_later(
                gateway.limits.auth_timeout_s, client.close, 1008, "authentication required"
            )
        else:
            deadline = None
        while True:
            message = await self.inbox.get()
            if message is None or client.state in (
                connections.ConnectionState.CLOSING, connections.ConnectionState.CLOSED
            ):  # fmt: skip
                break
            if self.reading_paused and self.inbox.qsize() <= INBOX_LOW and not self.lost:
                assert self.transport is not None
                self.transport.resume_reading()
                self.reading_paused = False
            try:
                await gateway.handle(client, message)
            except (OSError, ConnectionError, redis_exceptions.RedisError) as exc:
                log.warning("gateway.backend_error", error=str(exc))
                gateway.refuse(client, "unavailable", "temporarily unavailable, retry")
            except Exception as exc:
                # A fault of ours: the connection ends with it, rather than staying open
                # and subscribed with nothing reading its frames any more.
                log.exception("gateway.client_failed", error=repr(exc))
                client.close(1011, "internal error")
                break
            if deadline is not None and client.principal is not None:
                deadline.cancel()
                deadline = None

    async def _sse(self, request: http11.Request, query: dict[str, list[str]]) -> None:
        assert self.transport is not None
        gateway = self.gateway
        if gateway.closing:
            self._respond(503, b"shutting down\n")
            return
        token = self._token(request, query)
        if token is None:
            self._respond(401, b"unauthenticated\n")
            return
        try:
            principal = await gateway.authenticate(token)
        except errors.Unauthenticated as exc:
            self._respond(401, exc.code.encode() + b"\n")
            return
        if self.lost:
            return  # closed while its token was checked: nothing to set up
        wanted = [t for raw in query.get("topics", []) for t in raw.split(",") if t]
        # EventSource sends the header on its own reconnects; the query parameter is for
        # clients that open a new EventSource themselves and cannot set headers.
        last_id = request.headers.get("Last-Event-ID") or query.get("lastEventId", [""])[0]
        resume_after = replay_after = None
        if last_id:
            # Another process's id (or garbage) asks to resume too: it gets replays from
            # Redis where its replay clock allows, snapshots otherwise.
            resume_after = fanout.parse_event_id(last_id, gateway.hub.epoch)
            if resume_after is None:
                resume_after = -1
            replay_after = fanout.parse_clock(last_id)
        client = SseClient(self.transport, gateway.limits)
        client.principal = principal
        self.client = client
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
            b"retry: %d\n\n" % SSE_RETRY_MS
        )
        client.transition(connections.ConnectionState.OPEN)
        gateway.clients.add(client)
        metrics.CONNECTIONS.labels(transport="sse").inc()
        if not gateway.logins.add(client):
            return  # revoked while its token was checked: ended already
        # No update goes out before every topic has its snapshot or replay, and what does
        # go out meanwhile names the position the client came with (or now, when new): a
        # client cut off halfway resumes from there, so that the topics it has not got
        # yet do not start from a later update of another topic.
        client.hold()
        if last_id:
            position = (max(resume_after or 0, 0), replay_after or 0)
        else:
            position = (gateway.hub.seq, gateway.hub.clock)
        try:
            await gateway.subscribe(
                client,
                wanted,
                resume_after=resume_after,
                replay_after=replay_after,
                position=position,
            )
        except (OSError, ConnectionError, redis_exceptions.RedisError) as exc:
            log.warning("gateway.backend_error", error=str(exc))
            client.close(1011, "unavailable")
        finally:
            client.release()
        if client.flowing:
            # Everything dispatched so far has reached the socket: an event with only an id
            # moves the client's Last-Event-ID there (EventSource fires no event for it).
            client.send_now(b"id: " + gateway.hub.event_id().encode() + b"\n\n")


class Gateway:
    def __init__(
        self,
        hub: fanout.Hub,
        authenticate: Authenticate,
        *,
        redis: aioredis.Redis,
        limits: connections.Limits | None = None,
    ) -> None:
        self.hub = hub
        self.authenticate = authenticate
        self.redis = redis
        self.limits = limits or connections.Limits()
        self.clients: set[connections.Client] = set()
        self.logins = revoking.Logins(
            redis, self.end, leeway_s=self.limits.token_leeway_s, recheck_s=self.limits.heartbeat_s
        )
        self.sockets: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway.task_failed", error=repr(task.exception()))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 8001) -> None:
        await self.hub.start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=2048)
        self._heartbeat = asyncio.create_task(self._beat(), name="gateway-heartbeat")
        await self.hub.follow(revoking.CHANNEL, self.logins.revoked, self.logins.missed)
        self.spawn(self.logins.recheck_periodically())

    async def stop(self) -> None:
        """Graceful shutdown: refuse new clients, tell connected ones to reconnect, close."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            client.close(1012, "server restarting: reconnect")
        metrics.DISCONNECTS.labels(reason="shutdown").inc(len(self.clients))
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        try:
            async with asyncio.timeout(3):
                while self.sockets:  # noqa: ASYNC110 - sockets close in their own callbacks
                    await asyncio.sleep(0.02)
        except TimeoutError:
            for connection in list(self.sockets):
                if connection.transport is not None:
                    connection.transport.abort()
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()
            await self.hub.stop()

    async def _beat(self) -> None:
        """Heartbeats (and WebSocket pings), each client every ``heartbeat_s``, spread over
        ``BEAT_SLICES`` ticks: beating a thousand clients at once would hold the event loop,
        and with it every market update, for tens of milliseconds. Each tick also
        disconnects clients congested for longer than ``max_lag_s``."""
        tick_s = self.limits.heartbeat_s / BEAT_SLICES
        tick = 0
        while True:
            await asyncio.sleep(tick_s)
            tick += 1
            slot = tick % BEAT_SLICES
            now = time.monotonic()
            frames: dict[type, bytes] = {}
            for client in list(self.clients):
                if client.lagging(now):
                    client.disconnect_slow()
                    continue
                if client.serial % BEAT_SLICES != slot:
                    continue
                if client.state is not connections.ConnectionState.OPEN:
                    continue
                kind = type(client)
                frame = frames.get(kind)
                if frame is None:
                    body = _json({"type": "heartbeat", "ts": _now_iso()})
                    frame = frames[kind] = client.encode(body)
                if isinstance(client, WebSocketClient):
                    if now - client.last_pong > 3 * self.limits.heartbeat_s:
                        metrics.DISCONNECTS.labels(reason="ping_timeout").inc()
                        client.close(1011, "ping timeout")
                        continue
                    # An unsolicited server ping (empty payload), written with the heartbeat.
                    if client.congested_since is None:
                        client.send_now(frame + WS_PING)
                    else:
                        client.transport.write(WS_PING)
                elif client.congested_since is None:
                    client.send_now(frame)

    # ------------------------------------------------------------------ client messages

    def refuse(self, client: connections.Client, code: str, message: str,
               topic: str | None = None) -> None:  # fmt: skip
        metrics.REFUSALS.labels(code=code).inc()
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if topic is not None:
            frame["topic"] = topic
        client.send_now(client.encode(_json(frame)))

    async def handle(self, client: connections.Client, text: str) -> None:
        """One client frame; a bad frame gets an error frame, never an exception."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
            self.refuse(client, "bad_request", "frame is not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            self.refuse(client, "bad_request", 'expected an object with an "op"')
            return
        op = message["op"]
        if op == "auth":
            await self._auth(client, message.get("token"))
        elif op in ("subscribe", "unsubscribe"):
            wanted = message.get("topics")
            if not isinstance(wanted, list) or not all(isinstance(t, str) for t in wanted):
                self.refuse(client, "bad_request", '"topics" must be a list of strings')
            elif client.principal is None:
                self.refuse(client, "unauthenticated", "authenticate first")
            elif op == "subscribe":
                await self.subscribe(client, wanted)
            else:
                for topic in wanted:
                    await self.hub.unsubscribe(client, topic)
        elif op == "ping":
            client.send_now(client.encode(_json({"type": "heartbeat", "ts": _now_iso()})))
        else:
            self.refuse(client, "bad_request", f"unknown op {op[:32]!r}")

    def end(self, client: connections.Client, code: str, message: str) -> None:
        """The client's login has ended (``code``: ``session_revoked``, ``token_expired``):
        tell it why and close (WebSocket 1008; SSE an ``error`` event, then the stream ends)."""
        if client.ended is not None or client.state in (
            connections.ConnectionState.CLOSING, connections.ConnectionState.CLOSED
        ):  # fmt: skip
            return
        client.ended = code
        metrics.DISCONNECTS.labels(reason=code).inc()
        if isinstance(client, WebSocketClient):
            client.send_now(
                client.encode(_json({"type": "error", "code": code, "message": message}))
            )
        client.close(1008, code)

    async def _auth(self, client: connections.Client, token: Any) -> None:
        if not isinstance(token, str):
            self.refuse(client, "unauthenticated", '"token" is required')
            return
        if client.principal is not None:
            await self._reauth(client, token)
            return
        try:
            client.principal = await self.authenticate(token)
        except errors.Unauthenticated as exc:
            self.refuse(client, exc.code, exc.message)
            metrics.DISCONNECTS.labels(reason="unauthenticated").inc()
            client.close(1008, "authentication failed")
            return
        client.transition(connections.ConnectionState.OPEN)
        self.logins.add(client)

    async def _reauth(self, client: connections.Client, token: str) -> None:
        """A fresh token on an open connection (a page that refreshed its token): the
        connection then lasts until that token expires, or its session ends. Only a token
        of the same user: its subscriptions were granted to that user."""
        try:
            principal = await self.authenticate(token)
        except errors.Unauthenticated as exc:
            self.refuse(client, exc.code, exc.message)  # the current token still holds
            return
        current = client.principal
        if client.ended is not None or current is None:
            return
        if principal.user_id != current.user_id:
            self.refuse(client, "forbidden", "a token of another user: open a new connection")
            return
        client.principal = principal
        self.logins.add(client)

    async def subscribe(
        self,
        client: connections.Client,
        wanted: list[str],
        *,
        resume_after: int | None = None,
        replay_after: int | None = None,
        position: tuple[int, int] | None = None,
    ) -> None:
        """Subscribe to each allowed topic: its snapshot, then updates; refusals as errors.

        With ``resume_after`` (the seq of an SSE ``Last-Event-ID`` of this process, else
        -1), a topic whose missed updates this process still keeps replays them; failing
        that, with ``replay_after`` (the id's replay clock, from any process), a topic
        published for replay (``core.replaying``) replays them from Redis. Otherwise, a
        snapshot. ``position`` (seq, clock): the id of every frame sent here (see
        :meth:`fanout.Hub.subscribe`).
        """
        principal = client.principal
        assert principal is not None
        # The session may have ended since the connection's token was checked, its
        # revocation not handled yet: private topics are granted only once Redis confirms.
        if any(map(topics.private, wanted)) and not await self.logins.still_open(principal):
            return
        for topic in dict.fromkeys(wanted):
            if client.login_ended():
                return  # ended meanwhile (it was told why): nothing more is granted
            if topic in client.topics:
                continue
            if len(client.topics) >= self.limits.max_subscriptions:
                self.refuse(client, "too_many_subscriptions",
                            f"at most {self.limits.max_subscriptions} topics", topic)  # fmt: skip
                continue
            try:
                owner = None
                if topic.startswith("ai:analysis:"):
                    raw = await self.redis.get(topics.ai_owner_key(topic[len("ai:analysis:") :]))
                    owner = raw.decode() if isinstance(raw, bytes) else raw
                    if client.login_ended():
                        return
                topics.authorize(topic, principal, owner)
            except topics.Refused as refused:
                self.refuse(client, refused.code, refused.message, topic)
                continue
            if resume_after is None:
                await self.hub.subscribe(client, topic, position=position)
                continue
            resumed = self.hub.resume(
                client, topic, resume_after, position=position
            ) or await self.hub.subscribe(
                client, topic, replay_after=replay_after, position=position
            )
            metrics.SSE_RESUMES.labels(outcome="replay" if resumed else "snapshot").inc()


def token_verifier(config: Any, redis: aioredis.Redis) -> Authenticate:
    """The platform's verification: RS256 JWT with the configured public key, open session."""
    from starkmatter.core.auth import keys, sessions

    public_pem = keys.load(config).public_pem
    token_config = tokens.TokenConfig(
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        ttl_s=config.access_token_ttl_s,
        leeway_s=config.jwt_leeway_s,
    )

    async def authenticate(token: str) -> tokens.Principal:
        return await sessions.authenticate(redis, token, public_pem, token_config)

    return authenticate


async def run(
    config: Any,
    *,
    host: str | None = None,
    port: int | None = None,
    started: asyncio.Event | None = None,
    probes_port: int | None = None,
    settle: bool = False,
) -> None:
    """Serve until cancelled or SIGTERM, then shut down gracefully (``starkmatter gateway``;
    ``probes_port``: serve ``/healthz``, ``/readyz`` and ``/metrics`` there too, as the CLI
    does; dev mode gives none, its API serves the process's one registry; ``settle``: freeze
    the heap once started, :func:`starkmatter.core.heap.settle`)."""
    import signal

    from starkmatter.core import redis_client

    redis = redis_client.create_redis(config)
    limits = connections.Limits(token_leeway_s=config.jwt_leeway_s)
    gateway = Gateway(fanout.Hub(redis), token_verifier(config, redis), redis=redis, limits=limits)
    bind = host or config.api_host

    async def ready() -> dict[str, str]:
        return {
            "fanout": "ok" if gateway.hub.ready else "not ready",
            "gateway": "stopping" if gateway.closing else "ok",
        }

    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(probes.listening_on(bind, probes_port, ready))
            await gateway.start(bind, config.gateway_port if port is None else port)
            stack.push_async_callback(gateway.stop)
            if settle:
                heap.settle()
            loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
            log.info("gateway.started", port=gateway.port, loop=loop_kind)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGTERM, stop.set)
            if started is not None:
                started.set()
            await stop.wait()
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> None:
    """``starkmatter gateway [--host H] [--port P]``."""
    import argparse

    from starkmatter.core import settings

    parser = argparse.ArgumentParser(prog="starkmatter gateway")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    config = settings.get_settings()
    logs.configure(config.log_level, json=config.log_json)
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loops.new_event_loop) as runner,
    ):
        runner.run(
            run(
                config,
                host=args.host,
                port=args.port,
                probes_port=config.metrics_port,
                settle=True,
            )
        )
