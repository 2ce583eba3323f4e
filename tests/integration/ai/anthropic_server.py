"""A loopback server that speaks the Anthropic Messages API, scripted per test.

Only the internet is replaced: the real SDK makes real HTTP calls to this server, which
answers with the wire format of the API (server-sent events for streams, JSON errors with
429/529 and ``retry-after``). Each call takes the next scripted reply; when the script
runs out, it answers with a valid analysis of whatever symbols the prompt names.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import fastapi
import uvicorn
from starlette import responses

from starkmatter.core import embedded


@dataclasses.dataclass
class Reply:
    kind: str = "ok"
    """ok | status | malformed | broken_json"""
    status: int = 200
    error_type: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    analysis: dict[str, Any] | None = None


def rate_limited(retry_after: str = "0") -> Reply:
    return Reply("status", 429, "rate_limit_error", {"retry-after": retry_after})


def overloaded() -> Reply:
    return Reply("status", 529, "overloaded_error")


def good_analysis(symbols: list[str]) -> dict[str, Any]:
    names = ", ".join(symbols)
    return {
        "summary": f"{names} shows positive momentum: RSI is rising and the trend is up.",
        "outlook": "bullish",
        "confidence": 0.7,
        "symbols": symbols,
        "key_points": [f"{s} trades above its moving average" for s in symbols],
        "risks": ["momentum can fade quickly"],
    }


@dataclasses.dataclass
class FakeAnthropic:
    url: str
    script: list[Reply] = dataclasses.field(default_factory=list)
    calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    headers: list[dict[str, str]] = dataclasses.field(default_factory=list)
    gate: asyncio.Event | None = None
    """While set to an unset event, every reply waits for it (to hold calls in flight)."""
    arrived: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    call_times: list[float] = dataclasses.field(default_factory=list)
    """``time.monotonic()`` when each call arrived."""
    pause_after_deltas: int | None = None
    """Stop each stream after this many ``content_block_delta`` events until ``resume``."""
    resume: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    paused: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set once a stream has sent its first ``pause_after_deltas`` deltas and is waiting."""


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _stream(model: str, tool_input_json: str) -> list[bytes]:
    chunks = [tool_input_json[i : i + 40] for i in range(0, len(tool_input_json), 40)]
    return [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_test",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 120,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 80,
                        "cache_creation_input_tokens": 0,
                    },
                },
            },
        ),
        _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_test",
                    "name": "submit_analysis",
                    "input": {},
                },
            },
        ),
        _sse("ping", {"type": "ping"}),
        *(
            _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": chunk},
                },
            )
            for chunk in chunks
        ),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 64},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]


def _symbols_in(body: dict[str, Any]) -> list[str]:
    text = body["messages"][0]["content"]
    if not isinstance(text, str):
        text = " ".join(part.get("text", "") for part in text)
    match = re.search(r"^Symbols: (.+)$", text, re.MULTILINE)
    return [s.strip() for s in match.group(1).split(",")] if match else ["UNKNOWN"]


def build_app(fake: FakeAnthropic) -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.post("/v1/messages")
    async def messages(request: fastapi.Request) -> responses.Response:
        body = await request.json()
        fake.calls.append(body)
        fake.call_times.append(time.monotonic())
        fake.headers.append(dict(request.headers))
        fake.arrived.set()
        if fake.gate is not None:
            await fake.gate.wait()
        reply = fake.script.pop(0) if fake.script else Reply()
        if reply.kind == "status":
            return responses.JSONResponse(
                {"type": "error", "error": {"type": reply.error_type, "message": "try later"}},
                status_code=reply.status,
                headers=reply.headers,
            )
        if reply.kind == "malformed":
            tool_input = json.dumps({"summary": "short", "confidence": 7})
        elif reply.kind == "broken_json":
            tool_input = '{"summary": "unterminated'
        else:
            tool_input = json.dumps(reply.analysis or good_analysis(_symbols_in(body)))
        events = _stream(body["model"], tool_input)
        if not body.get("stream"):
            raise AssertionError("the analyst must stream")

        async def emit() -> AsyncIterator[bytes]:
            deltas = 0
            for event in events:
                if event.startswith(b"event: content_block_delta"):
                    if deltas == fake.pause_after_deltas:
                        fake.paused.set()
                        await fake.resume.wait()
                    deltas += 1
                yield event

        return responses.StreamingResponse(emit(), media_type="text/event-stream")

    return app


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[FakeAnthropic]:
    port = embedded.free_port()
    fake = FakeAnthropic(url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(fake),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield fake
    finally:
        # Let held replies finish, or the server's shutdown waits for them forever.
        if fake.gate is not None:
            fake.gate.set()
        fake.resume.set()
        server.should_exit = True
        await task
