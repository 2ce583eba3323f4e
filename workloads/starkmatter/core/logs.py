"""Structured JSON logs with request ids; secrets and personal data are masked in every line."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

MASK = "***"
_SENSITIVE_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|cookie|api[_-]?key|private|credential|email",
    re.IGNORECASE,
)
# Values that look like secrets wherever they appear, even inside free text.
_SENSITIVE_VALUES = (
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*"), MASK),  # JWTs
    (re.compile(r"(?i)bearer\s+\S+"), "Bearer " + MASK),
    (re.compile(r"sk-ant-[\w-]+"), MASK),
    (re.compile(r"(?i)(\w+://[^:/\s]*:)[^@\s]+@"), r"\1" + MASK + "@"),  # URL passwords
    (re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"), MASK),  # e-mail addresses
    # Credentials in a URL's query (a news API's apiKey=..., token=...): feeds that take no
    # header carry them there, and a failed fetch logs its URL.
    (
        re.compile(
            r"(?i)([?&](?:api[_-]?key|apikey|key|token|access[_-]?token|secret|sig|signature"
            r"|auth|password|pass)=)[^&\s#]+"
        ),
        r"\1" + MASK,
    ),
)


def mask_text(text: str) -> str:
    for pattern, replacement in _SENSITIVE_VALUES:
        text = pattern.sub(replacement, text)
    return text


def mask(value: Any, key: str = "") -> Any:
    if key and _SENSITIVE_KEYS.search(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def _mask_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return {key: mask(value, key) for key, value in event_dict.items()}


def _add_request_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    rid = request_id.get()
    if rid is not None:
        event_dict.setdefault("request_id", rid)
    return event_dict


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure(level: str = "INFO", *, json: bool = True) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # Looked up on every call: whoever swapped sys.stderr (pytest, a daemon) is honoured.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through the standard library; keep them quiet and masked.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_StdlibMaskFilter())


class _StdlibMaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_text(record.getMessage())
        record.args = ()
        return True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
