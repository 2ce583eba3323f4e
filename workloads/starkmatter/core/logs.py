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
# A key whose name ends in one of these carries a secret when it heads a ``key=value`` or
# ``key: value`` pair in free text (libpq DSNs, headers, dict and JSON dumps in exception
# messages). Only the name's end counts, so ``token_expired`` or ``input_tokens`` stay readable.
# ``secret-key`` is a broker's header (Alpaca's ``APCA-API-SECRET-KEY``), echoed in its errors.
_CREDENTIAL_NAME_ENDS = (
    r"password|passwd|passphrase|secret|secret[_-]?key|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|authorization|credentials?"
)
_KEY_VALUE = re.compile(
    r"(?i)(?<![\w.?&-])(?P<q>[\"']?)[\w.-]*?(?:"
    + _CREDENTIAL_NAME_ENDS
    + r")(?P=q)[ \t]*[:=][ \t]*"
    # Authorization's scheme stays readable: "Authorization: Basic ***".
    r"(?:(?:basic|bearer|digest|negotiate)[ \t]+)?"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s'\"]+)"
)
# A URL's password may hold an unencoded '@': everything up to the last '@' that a host
# follows is the password, so no tail of it is left readable as the "host". One without a
# '/' is tried first, so a later '@' (an e-mail in the query) does not pull the path in; one
# with a '/' is bounded, or every URL in a long line would be read to the line's end.
_URL_PASSWORD = re.compile(
    r"(?i)((?<!\w)\w+://[^:/\s]*:)(?:[^\s'\"<>/?#]+|[^\s'\"<>]{1,512})@"
    r"(?=[\w.-]*(?::\d*)?(?:[/?#'\",;)\]\s]|$)|\[)"
)
# A URL cut inside its password (a message sliced before it reached the log) ends before
# the '@': mask what follows the user's ':' unless it is a port.
_CUT_URL_PASSWORD = re.compile(r"(?i)((?<!\w)\w+://[^:/\s@'\"\[]*:)(?!\d*$)[^\s@/'\"]+$")


def _masked_pair(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[0] in "'\"" else ""
    start = match.start("value") - match.start()
    return match.group()[:start] + quote + MASK + quote


# Values that look like secrets wherever they appear, even inside free text.
_SENSITIVE_VALUES: tuple[tuple[re.Pattern[str], Any], ...] = (
    # JWTs, also one cut before its signature (its claims may name a person).
    (re.compile(r"eyJ[\w-]+\.eyJ[\w-]*(?:\.[\w-]*)?|eyJ[\w-]+\.[\w-]+\.[\w-]*"), MASK),
    (re.compile(r"(?i)bearer\s+[^\s'\"]+"), "Bearer " + MASK),
    (re.compile(r"sk-ant-[\w-]+"), MASK),
    (_URL_PASSWORD, r"\1" + MASK + "@"),
    (_CUT_URL_PASSWORD, r"\1" + MASK),
    (re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+\.[\w.-]+"), MASK),  # e-mail addresses
    # Credentials in a URL's query (a news API's apiKey=..., token=...): feeds that take no
    # header carry them there, and a failed fetch logs its URL.
    (
        re.compile(
            r"(?i)([?&](?:api[_-]?key|apikey|key|token|access[_-]?token|secret|sig|signature"
            r"|auth|password|pass|[\w.-]*?(?:" + _CREDENTIAL_NAME_ENDS + r"))=)[^&\s#]+"
        ),
        r"\1" + MASK,
    ),
    (_KEY_VALUE, _masked_pair),
    # Redis echoes the arguments of a command it does not know: an AUTH (or HELLO ... AUTH)
    # sent to a server or proxy that renamed it carries the password as a bare argument.
    (
        re.compile(r"(?i)(unknown command\W+(?:auth|hello)\W+with args beginning with:).*"),
        r"\1 " + MASK,
    ),
)
# A log line's string values are cut here, after masking: a call site that cut them itself
# could cut a secret in two and leave a half the patterns no longer recognise.
MAX_VALUE_CHARS = 1000
# How much of a longer value is masked past the cut: far past it, so a secret straddling the
# cut is still whole, but bounded, since masking a huge value costs more than its length.
_MASKED_BEYOND_CUT = 7 * MAX_VALUE_CHARS
# Tracebacks are kept whole (masked all the same): the frames are what an operator needs.
_UNCUT_KEYS = frozenset({"exception", "stack"})


# Every pattern above needs one of these to match (a JWT's "eyJ", a key's ':' or '=', a URL's
# "://", an e-mail's '@', the space after "Bearer", an Anthropic key's prefix): text without
# any is returned as it is. Most values of a log line are such (methods, routes, ids, event
# names), and running every pattern over each cost ~20 us per access-log line.
_MAYBE_SECRET = re.compile(r"[:=@\s]|eyJ|sk-ant-")


def mask_text(text: str) -> str:
    if not _MAYBE_SECRET.search(text):
        return text
    for pattern, replacement in _SENSITIVE_VALUES:
        text = pattern.sub(replacement, text)
    return text


def masked(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` masked, then cut to ``limit`` characters (and a note of its length).

    For text kept or shown where no log processor masks it (a database column, a reply):
    the cut comes after masking, as in a log line, so no half of a secret is left behind."""
    if len(text) <= limit:
        return mask_text(text)
    shown = mask_text(text[: limit + _MASKED_BEYOND_CUT])
    return shown[:limit] + f"...[cut, {len(text)} chars]"


def mask(value: Any, key: str = "", *, cut: bool = False) -> Any:
    """``value`` masked; with ``cut``, its strings then cut to MAX_VALUE_CHARS."""
    if key and _SENSITIVE_KEYS.search(key):
        return MASK
    if isinstance(value, str):
        return masked(value) if cut else mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask(v, str(k), cut=cut) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, cut=cut) for v in value]
    return value


def _mask_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return {key: mask(value, key, cut=key not in _UNCUT_KEYS) for key, value in event_dict.items()}


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
