"""Logging: structlog to stderr, readable on a terminal and JSON lines everywhere else.

Every line of a cycle carries `run_id`; lines about one invoice carry `kantata_invoice_id` and,
once it exists, `noko_invoice_id` (bound with `structlog.contextvars`). A last processor removes
anything that looks like a credential, whatever a caller passed in.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

_SECRET_KEYS = re.compile(r"(token|secret|password|authorization|x-nokotoken)", re.IGNORECASE)
_redact_values: set[str] = set()


def register_secret(value: str) -> None:
    """Make sure this exact value never reaches a log line."""
    if value and len(value) >= 4:
        _redact_values.add(value)


def _redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    for key in list(event_dict):
        if _SECRET_KEYS.search(key):
            event_dict[key] = "[redacted]"
            continue
        value = event_dict[key]
        if isinstance(value, str) and _redact_values:
            for secret in _redact_values:
                if secret in value:
                    value = value.replace(secret, "[redacted]")
            event_dict[key] = value
    return event_dict


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
) -> None:
    """Configure structlog once per process; logs go to stderr so stdout stays for output."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    if not use_console:
        processors.append(structlog.processors.dict_tracebacks)
    processors.append(renderer)
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
