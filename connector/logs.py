"""Logging: structlog to stderr, readable on a terminal and JSON lines everywhere else.

Every line of a cycle carries `run_id`; lines about one invoice carry `kantata_invoice_id` and,
once it exists, `noko_invoice_id` (bound with `structlog.contextvars`). A last processor removes
anything that looks like a credential, whatever a caller passed in (every fragment of a
registered secret, `connector.text`), and writes control characters out visibly.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import msgspec
import structlog

from connector import text

_SECRET_KEYS = re.compile(r"(token|secret|password|authorization|x-nokotoken)", re.IGNORECASE)


def register_secret(value: str) -> None:
    """Make sure this value, and any fragment of it, never reaches a log line."""
    text.register_secret(value)


def _redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Runs last before rendering: the exception, already text or a dict, is scrubbed too."""
    for key in list(event_dict):
        event_dict[key] = _scrub(key, event_dict[key])
    return event_dict


def _scrub(key: Any, value: Any) -> Any:
    """`value` with every registered secret replaced; anything under a key that names a
    credential replaced whole. Into nested dicts and lists (a traceback's frames)."""
    if isinstance(key, str) and _SECRET_KEYS.search(key):
        return "[redacted]"
    if isinstance(value, bytes | bytearray):
        value = repr(value)  # as text, so that a secret in it is found (JSON has no bytes)
    if isinstance(value, str):
        # Every fragment of a secret removed; control characters (terminal escapes from an
        # API's answer) written out visibly. Newlines stay: a traceback on a console.
        return text.neutralise(text.redact(value), newlines=True)
    if isinstance(value, dict):
        return {k: _scrub(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(None, v) for v in value]
    return value


def _log_value(value: Any) -> Any:
    """A value JSON has no form for, as structlog's own fallback writes it."""
    describe = getattr(value, "__structlog__", None)
    return describe() if callable(describe) else repr(value)


_LOG_ENCODER = msgspec.json.Encoder(enc_hook=_log_value)


def _dumps(event_dict: Any, **kwargs: Any) -> str:
    """One JSON line, by msgspec (in C); what it cannot write (keys that are not text, say)
    goes through the standard library as before."""
    try:
        return _LOG_ENCODER.encode(event_dict).decode()
    except (TypeError, ValueError, msgspec.EncodeError):
        return json.dumps(event_dict, **kwargs)


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
) -> None:
    """Configure structlog once per process; logs go to stderr so stdout stays for output."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Exceptions become data (JSON) or text (console) before the secrets are scrubbed,
        # and without the frames' local variables: a frame holding request headers would
        # otherwise print a token.
        structlog.processors.format_exc_info
        if use_console
        else structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        ),
        _redact,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module: warnings only, on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
