"""Uvicorn servers that leave signal handling to their owner.

Dev mode runs several servers in one event loop, and tests run servers inside pytest; a
uvicorn server that captured SIGINT itself would steal Ctrl-C from its neighbours. The
owner handles signals once and sets ``should_exit`` on each server.
"""

from __future__ import annotations

import contextlib
from typing import Any

import uvicorn


def server(app: Any, host: str, port: int, **options: Any) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, **options)
    instance = uvicorn.Server(config)
    instance.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return instance
